from __future__ import annotations

import gc
import shutil
import time
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from birdassets.checkpoints import (
    COMMIT_MARKER,
    CheckpointError,
    CheckpointRef,
    checkpoint_key,
    finalized_steps,
    latest_step,
    parse_checkpoint_key,
)
from birdassets.checkpoints.orbax_io import read_metadata
from birdassets.models.vit import ViTConfig, ViTEmbedder, ViTEncoder, encoder_params
from birdassets.models.vit.family import (
    read_config,
    read_encoder_shapes,
    restore_encoder,
    save_checkpoint,
    validate_encoder_shapes,
)

CONFIG = ViTConfig(frames=40, mels=32, dim=32, depth=1, heads=4)  # grid (3, 2), 6 patches

# A restore that fails inside tensorstore (test_read_encoder_shapes_reads_metadata_only deletes the
# array data on purpose) can leave an orbax/tensorstore callback that fires on an already closed
# asyncio loop; pytest reports it, at garbage-collection time, as an unraisable exception in
# the test running at the time. It is noise from the deliberate failure, not a bug in the code here.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _model(seed: int, config: ViTConfig = CONFIG) -> ViTEncoder:
    return ViTEncoder(config, rngs=nnx.Rngs(seed))


def _assert_same_params(a: ViTEncoder, b: ViTEncoder) -> None:
    pa, pb = encoder_params(a), encoder_params(b)
    assert jax.tree.structure(pa) == jax.tree.structure(pb)
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _mel(batch: int = 3) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(batch, CONFIG.frames, CONFIG.mels)).astype(np.float32)


def test_save_then_restore_gives_identical_params_and_embeddings(tmp_path: Path) -> None:
    model = _model(0)
    step_dir = save_checkpoint(tmp_path / "run", 0, model, CONFIG, extra_metadata={"seed": 0, "loss": 1.5})
    assert step_dir == tmp_path / "run" / "0"
    assert finalized_steps(tmp_path / "run") == [0]
    assert read_config(tmp_path / "run", 0) == CONFIG
    assert read_metadata(tmp_path / "run", 0) == {"step": 0, "family": "vit", "seed": 0, "loss": 1.5}

    restored, config, step = restore_encoder(tmp_path / "run", 0)
    assert (config, step) == (CONFIG, 0)
    _assert_same_params(model, restored)
    mel = _mel()
    np.testing.assert_array_equal(ViTEmbedder(restored).embed(mel), ViTEmbedder(model).embed(mel))


def test_restore_defaults_to_latest_step_and_can_pick_older(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first, second = _model(0), _model(1)
    save_checkpoint(run, 0, first, CONFIG)
    save_checkpoint(run, 5, second, CONFIG)
    assert finalized_steps(run) == [0, 5] and latest_step(run) == 5

    latest, _, step = restore_encoder(run)
    assert step == 5
    _assert_same_params(second, latest)
    older, _, step = restore_encoder(run, 0)
    assert step == 0
    _assert_same_params(first, older)
    with pytest.raises(CheckpointError, match=r"run/3 is not a finalized checkpoint.*\[0, 5\]"):
        restore_encoder(run, 3)
    # orbax silently skips steps not newer than the latest; we refuse loudly
    with pytest.raises(CheckpointError, match="already exists"):
        save_checkpoint(run, 5, second, CONFIG)
    with pytest.raises(CheckpointError, match="not newer than the latest step 5"):
        save_checkpoint(run, 2, second, CONFIG)
    assert finalized_steps(run) == [0, 5]


def test_encoder_only_restore_with_probe_objective_and_opt_state_present(tmp_path: Path) -> None:
    model = _model(2)
    params = encoder_params(model)
    probe = {"kernel": np.full((32, 7), 0.5, np.float32), "bias": np.arange(7, dtype=np.float32)}
    opt_state = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3)).init((params, probe))
    save_checkpoint(
        tmp_path / "run", 3, model, CONFIG,
        probe=probe, objective={"temperature": np.float32(0.07)}, opt_state=opt_state,
    )
    shapes = read_encoder_shapes(tmp_path / "run", 3)
    assert not any(name.startswith(("probe", "opt_state", "kernel")) for name in shapes)
    assert shapes["patch_embed.kernel"] == (256, 32)

    restored, _, step = restore_encoder(tmp_path / "run")
    assert step == 3
    _assert_same_params(model, restored)


def test_finalized_steps_ignores_unfinished_saves(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert finalized_steps(run) == [] and latest_step(run) is None  # run dir not created yet
    model = _model(0)
    save_checkpoint(run, 2, model, CONFIG)

    # an in-flight orbax save: "<step>.orbax-checkpoint-tmp-<timestamp>"
    (run / "7.orbax-checkpoint-tmp-123" / "state").mkdir(parents=True)
    # a crash between creating the step directory and finalize: metadata written, no marker
    crashed = run / "9"
    crashed.mkdir()
    (crashed / "_CHECKPOINT_METADATA").write_text('{"init_timestamp_nsecs": 1}')
    # a real step directory whose commit marker is gone
    shutil.copytree(run / "2", run / "11")
    (run / "11" / COMMIT_MARKER).unlink()
    # the same copy with its marker kept is finalized, but its metadata names step 2: restore refuses it
    shutil.copytree(run / "2", run / "12")
    # not a step at all
    (run / "notes").mkdir()
    (run / "013").mkdir()

    assert finalized_steps(run) == [2, 12]
    assert latest_step(run) == 12
    with pytest.raises(CheckpointError, match="run/12: its metadata says step 2 but the folder is named 12"):
        restore_encoder(run)
    restored, _, step = restore_encoder(run, 2)
    assert step == 2
    _assert_same_params(model, restored)
    assert (run / "7.orbax-checkpoint-tmp-123" / "state").is_dir()  # readers never clean up a live save
    for unfinished in (7, 9, 11):
        with pytest.raises(CheckpointError, match=f"{unfinished} is not a finalized checkpoint"):
            restore_encoder(run, unfinished)
        with pytest.raises(CheckpointError, match="not a finalized checkpoint"):
            read_encoder_shapes(run, unfinished)


def _mixed_width_encoder_tree() -> dict:
    """The known bug: patch_embed, cls_token and norm 192 wide; pos_embed and blocks 384 wide."""
    narrow = ViTConfig(frames=40, mels=32, dim=192, depth=1, heads=4)
    wide = ViTConfig(frames=40, mels=32, dim=384, depth=1, heads=4)

    def zeros(config: ViTConfig) -> dict:
        abstract = nnx.eval_shape(lambda: ViTEncoder(config, rngs=nnx.Rngs(0)))
        pure = nnx.to_pure_dict(nnx.state(abstract, nnx.Param))
        return jax.tree.map(lambda s: np.zeros(s.shape, np.float32), pure)

    narrow_tree, wide_tree = zeros(narrow), zeros(wide)
    return {
        "patch_embed": narrow_tree["patch_embed"],
        "cls_token": narrow_tree["cls_token"],
        "norm": narrow_tree["norm"],
        "pos_embed": wide_tree["pos_embed"],
        "blocks": wide_tree["blocks"],
    }


@pytest.mark.parametrize("claimed_dim", [192, 384])
def test_mixed_embedding_width_checkpoint_is_rejected(tmp_path: Path, claimed_dim: int) -> None:
    config = ViTConfig(frames=40, mels=32, dim=claimed_dim, depth=1, heads=4)
    run = tmp_path / "bad"
    save_checkpoint(run, 0, _mixed_width_encoder_tree(), config, probe={"w": np.ones((4, 4), np.float32)})
    shapes = read_encoder_shapes(run, 0)
    assert shapes["patch_embed.kernel"] == (256, 192) and shapes["pos_embed"] == (1, 7, 384)
    assert shapes["blocks.0.attn.query.kernel"] == (384, 4, 96)

    with pytest.raises(CheckpointError) as info:
        restore_encoder(run)
    message = str(info.value)
    assert str(run / "0") in message
    assert "192 in patch_embed, cls_token, norm; 384 in pos_embed, blocks.0" in message
    assert f"config dim {claimed_dim}" in message


def test_config_disagreement_is_rejected(tmp_path: Path) -> None:
    params = encoder_params(_model(0))  # 32 wide, depth 1
    wider = ViTConfig(frames=40, mels=32, dim=64, depth=1, heads=4)
    save_checkpoint(tmp_path / "a", 0, params, wider)
    with pytest.raises(CheckpointError, match=r"config dim is 64 but every layer \(patch_embed, cls_token, "
                                              r"pos_embed, blocks.0, norm\) is 32 wide"):
        restore_encoder(tmp_path / "a")

    deeper = ViTConfig(frames=40, mels=32, dim=32, depth=2, heads=4)
    save_checkpoint(tmp_path / "b", 0, params, deeper)
    with pytest.raises(CheckpointError, match=r"do not match its config.*missing \['blocks.1.attn.key.bias'"):
        restore_encoder(tmp_path / "b")

    longer = ViTConfig(frames=80, mels=32, dim=32, depth=1, heads=4)
    save_checkpoint(tmp_path / "c", 0, params, longer)
    with pytest.raises(CheckpointError, match=r"shape mismatch \['pos_embed \(1, 7, 32\) != \(1, 11, 32\)'\]"):
        restore_encoder(tmp_path / "c")


def test_width_mismatch_inside_one_block_names_the_sub_layer() -> None:
    shapes = {
        "patch_embed.kernel": (256, 32),
        "cls_token": (1, 1, 32),
        "pos_embed": (1, 7, 32),
        "blocks.0.norm1.scale": (32,),
        "blocks.0.mlp.fc1.kernel": (32, 128),
        "blocks.0.mlp.fc2.kernel": (128, 48),
        "blocks.1.norm1.scale": (32,),
        "blocks.2.norm1.scale": (32,),
        "norm.scale": (32,),
    }
    with pytest.raises(CheckpointError, match=r"in runs/x/4: 32 in patch_embed, cls_token, pos_embed, "
                                              r"blocks.0.norm1, blocks.0.mlp.fc1, blocks.1..2, norm; "
                                              r"48 in blocks.0.mlp.fc2$"):
        validate_encoder_shapes(shapes, where="runs/x/4")
    shapes["blocks.0.mlp.fc2.kernel"] = (128, 32)
    validate_encoder_shapes(shapes)  # consistent widths and no config: fine


def test_read_encoder_shapes_reads_metadata_only(tmp_path: Path) -> None:
    run = tmp_path / "run"
    step_dir = save_checkpoint(run, 1, _model(0), CONFIG, probe={"w": np.ones((32, 3), np.float32)})
    before = read_encoder_shapes(run, 1)
    assert before["patch_embed.kernel"] == (256, 32) and before["pos_embed"] == (1, 7, 32)

    # delete the array chunk data (per-process OCDBT data files); the merged index with the
    # zarr array metadata stays in state/d and state/manifest.ocdbt
    data_dirs = list((step_dir / "state").glob("ocdbt.process_*/d"))
    assert data_dirs and any(any(d.iterdir()) for d in data_dirs)
    for data_dir in data_dirs:
        shutil.rmtree(data_dir)

    assert read_encoder_shapes(run, 1) == before
    assert read_config(run, 1) == CONFIG
    with pytest.raises(CheckpointError, match=f"{step_dir}/state/ocdbt.process_0/d/.* listed in its checksum "
                       "manifest cannot be read"):  # the manifest names the first missing file before Orbax reads
        restore_encoder(run, 1)
    # let the aborted tensorstore reads finish while this test's warning filter is active (see pytestmark)
    time.sleep(0.5)
    gc.collect()


def test_checkpoint_keys_round_trip_and_reject_bad_names(tmp_path: Path) -> None:
    assert checkpoint_key("demo-vit", 0) == "demo-vit@0"
    assert parse_checkpoint_key("demo-vit@0") == ("demo-vit", 0)
    for run, step in [("demo-vit", 0), ("a.b_c", 123456), ("x@y", 4)]:
        assert parse_checkpoint_key(checkpoint_key(run, step)) == (run, step)
    for bad_run in ["", "a|b", "a[1]", "a,b", "a]", " lead", "tab\there"]:
        with pytest.raises(ValueError):
            checkpoint_key(bad_run, 1)
    for bad_step in [-1, 1.5, True]:
        with pytest.raises(ValueError):
            checkpoint_key("run", bad_step)
    for bad_key in ["demo", "demo@", "@3", "demo@-1", "demo@01", "demo@x", "a|b@3"]:
        with pytest.raises(ValueError):
            parse_checkpoint_key(bad_key)

    ref = CheckpointRef.from_key("demo-vit@4", tmp_path / "runs")
    assert ref == CheckpointRef(run="demo-vit", step=4, run_dir=tmp_path / "runs" / "demo-vit")
    assert ref.key == "demo-vit@4" and ref.step_dir == tmp_path / "runs" / "demo-vit" / "4"
    with pytest.raises(ValueError):
        CheckpointRef(run="a,b", step=0, run_dir=tmp_path)
