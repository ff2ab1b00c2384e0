"""TiDHy checkpoints: save -> restore gives identical inference; resume is exact; bad steps are refused by name."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from birdassets.checkpoints.orbax_io import save_step
from birdassets.checkpoints.refs import CheckpointError, finalized_steps
from birdassets.models.tidhy.saved_model import (SavedTiDHy, Scaler, model_params, restore_tidhy, save_tidhy,
                                                validate_tidhy)
from birdassets.models.tidhy.inference import InferenceConfig, infer_batch
from birdassets.models.tidhy.mstep import LearningConfig
from birdassets.models.tidhy.network import TiDHy, TiDHyConfig
from birdassets.models.tidhy.fitting import Schedule, batch_indices, train_tidhy

CONFIG = TiDHyConfig(input_dim=6, r_dim=4, r2_dim=2, mix_dim=3, hyper_hidden=8)
SAVED = SavedTiDHy(CONFIG, InferenceConfig(max_iter=30), LearningConfig(), {"kind": "slds", "seed": 0})


def windows(n: int = 12, steps: int = 15) -> np.ndarray:
    """Smooth random sequences ``[n, steps, 6]``."""
    rng = np.random.default_rng(0)
    return np.cumsum(rng.normal(scale=0.3, size=(n, steps, 6)), axis=1).astype(np.float32)


def flat(model: TiDHy) -> dict[str, np.ndarray]:
    leaves = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {"/".join(map(str, path)): np.asarray(value[...]) for path, value in leaves}


def test_save_restore_gives_identical_inference_and_scaler(tmp_path) -> None:
    model = TiDHy(CONFIG, rngs=nnx.Rngs(3))
    scaler = Scaler(np.arange(6, dtype=np.float32), np.full(6, 2.0, np.float32))
    save_tidhy(tmp_path / "run", 7, model, scaler, SAVED)
    restored, restored_scaler, saved, step = restore_tidhy(tmp_path / "run")
    assert step == 7 and saved == SAVED
    np.testing.assert_array_equal(restored_scaler.mean, scaler.mean)
    np.testing.assert_array_equal(restored_scaler.std, scaler.std)
    x = jnp.asarray(windows(3))
    before, after = infer_batch(model, x, SAVED.inference), infer_batch(restored, x, SAVED.inference)
    for name in ("r", "r2", "iterations"):
        np.testing.assert_array_equal(np.asarray(getattr(before, name)), np.asarray(getattr(after, name)), name)


def test_resumed_training_ends_where_an_uninterrupted_run_ends(tmp_path) -> None:
    data = windows()
    straight = TiDHy(CONFIG, rngs=nnx.Rngs(0))
    train_tidhy(straight, data, SAVED, Scaler.identity(6), Schedule(num_steps=4, batch_size=5, checkpoint_every=2),
                tmp_path / "straight")
    interrupted = TiDHy(CONFIG, rngs=nnx.Rngs(0))
    first = train_tidhy(interrupted, data, SAVED, Scaler.identity(6),
                        Schedule(num_steps=2, batch_size=5, checkpoint_every=2), tmp_path / "resumed")
    fresh = TiDHy(CONFIG, rngs=nnx.Rngs(99))  # a new process: other initial weights, overwritten by the resume
    second = train_tidhy(fresh, data, SAVED, Scaler.identity(6),
                         Schedule(num_steps=4, batch_size=5, checkpoint_every=2), tmp_path / "resumed")
    assert (first.start_step, first.final_step, second.start_step, second.final_step) == (0, 2, 2, 4)
    assert finalized_steps(tmp_path / "resumed") == [2, 4] == finalized_steps(tmp_path / "straight")
    expected, got = flat(straight), flat(fresh)
    assert expected.keys() == got.keys()
    for name in expected:  # the optimizer's moments and step count came back too, or AdamW's update would differ
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-6, err_msg=name)
    assert not np.allclose(expected["temporal"], np.asarray(TiDHy(CONFIG, rngs=nnx.Rngs(0)).temporal[...]))


def test_batches_depend_on_seed_and_step_only() -> None:
    assert batch_indices(100, 8, seed=1, step=5).tolist() == batch_indices(100, 8, seed=1, step=5).tolist()
    assert batch_indices(100, 8, seed=1, step=5).tolist() != batch_indices(100, 8, seed=1, step=6).tolist()
    assert sorted(batch_indices(4, 8, seed=0, step=0).tolist()) == [0, 1, 2, 3]  # capped at the windows there are


def test_resume_refuses_other_settings_and_names_them(tmp_path) -> None:
    model = TiDHy(CONFIG, rngs=nnx.Rngs(0))
    train_tidhy(model, windows(), SAVED, Scaler.identity(6), Schedule(num_steps=1, batch_size=4), tmp_path)
    other = dataclasses.replace(SAVED, inference=InferenceConfig(max_iter=31))
    with pytest.raises(CheckpointError, match="inference settings"):
        train_tidhy(model, windows(), other, Scaler.identity(6), Schedule(num_steps=2, batch_size=4), tmp_path)
    moved = Scaler(np.full(6, 0.1, np.float32), np.ones(6, np.float32))
    with pytest.raises(CheckpointError, match="the data changed"):
        train_tidhy(model, windows(), SAVED, moved, Schedule(num_steps=2, batch_size=4), tmp_path)


def test_saved_shapes_that_disagree_with_the_config_are_refused_by_parameter(tmp_path) -> None:
    wider = TiDHy(dataclasses.replace(CONFIG, r_dim=5), rngs=nnx.Rngs(0))
    state = {"encoder": model_params(wider), "scaler": {"mean": np.zeros(6, np.float32),
                                                         "std": np.ones(6, np.float32)}, "opt_state": {}}
    save_step(tmp_path, 1, "tidhy", state, None, SAVED.to_dict())  # claims r_dim 4, holds r_dim 5
    with pytest.raises(CheckpointError, match=r"decoder\.layers\.0\.kernel was saved with shape \(5, 6\) but its "
                                              r"config asks for \(4, 6\)"):
        validate_tidhy(tmp_path, 1)


def test_scaler_standardises_each_channel() -> None:
    x = np.stack([np.arange(10.0), 5.0 + 2.0 * np.arange(10.0)], axis=-1)[None]  # [1, 10, 2]
    scaler = Scaler.fit(x)
    np.testing.assert_allclose(scaler.mean, [4.5, 14.0], rtol=1e-6)
    np.testing.assert_allclose(scaler.std, [2.8722813, 5.7445626], rtol=1e-6)  # population std of 0..9, twice it
    np.testing.assert_allclose(np.asarray(scaler.apply(x)).std(axis=1), [[1.0, 1.0]], rtol=1e-5)
