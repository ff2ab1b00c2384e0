"""TiDHy as an encoder family: pooled mel frames in, pooled latents out, through the registry like any family."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from birdassets.checkpoints import CheckpointError
from birdassets.models.base import InputSpec
from birdassets.models.registry import load_encoder, validate_encoder
from birdassets.models.tidhy.saved_model import SavedTiDHy, Scaler, save_tidhy
from birdassets.models.tidhy.family import NotAnAudioEncoder
from birdassets.models.tidhy.frames import FramePooling
from birdassets.models.tidhy.inference import InferenceConfig, infer_batch
from birdassets.models.tidhy.mel_encoder import MelEncoderConfig
from birdassets.models.tidhy.mstep import LearningConfig
from birdassets.models.tidhy.network import TiDHy, TiDHyConfig
from birdassets.sources.demo import DemoTaskSpec, generate

SPEC = InputSpec(preset="birdclef2025", sample_rate=32_000, clip_s=5.0, frames=16, mels=8)
POOL = FramePooling(frames=4, mels=4)  # [16, 8] -> [4, 2]
CONFIG = TiDHyConfig(input_dim=2, r_dim=3, r2_dim=2, mix_dim=2, hyper_hidden=6)
INFERENCE = InferenceConfig(max_iter=25)


def test_pooling_averages_blocks_of_frames_and_bins_and_drops_the_remainder() -> None:
    mel = np.arange(9 * 6, dtype=np.float32).reshape(1, 9, 6)  # value = 6 * frame + bin
    pooled = FramePooling(frames=4, mels=3).apply(mel)
    # frames 0-3 x bins 0-2: mean frame 1.5, mean bin 1 -> 10; bins 3-5 -> 13; frames 4-7 -> +24; frame 8 dropped
    np.testing.assert_allclose(pooled, [[[10.0, 13.0], [34.0, 37.0]]])


def test_the_demo_preset_becomes_64_steps_of_64_bands() -> None:
    spec = InputSpec("birdclef2025", 32_000, 5.0, 256, 256)  # its stored 5 s window: resized to 256 x 256
    assert FramePooling().sequence_shape(spec) == (64, 64)
    assert MelEncoderConfig().saved(spec, "demo-clear").model.input_dim == 64
    with pytest.raises(ValueError, match="leaves nothing"):
        FramePooling(frames=400).sequence_shape(spec)


def save_encoder(run_dir, kind: str = "mel") -> tuple[TiDHy, Scaler]:
    model = TiDHy(CONFIG, rngs=nnx.Rngs(1))
    scaler = Scaler(np.array([0.5, -0.25], np.float32), np.array([2.0, 0.5], np.float32))
    data = ({"kind": "mel", "preset": SPEC.preset, "sample_rate": SPEC.sample_rate, "clip_s": SPEC.clip_s,
             "frames": SPEC.frames, "mels": SPEC.mels, "pool_frames": 4, "pool_mels": 4, "task": "t"}
            if kind == "mel" else {"kind": "slds", "seed": 0})
    save_tidhy(run_dir, 3, model, scaler, SavedTiDHy(CONFIG, INFERENCE, LearningConfig(), data))
    return model, scaler


def test_the_registry_loads_a_mel_checkpoint_whose_embedding_is_the_pooled_latents(tmp_path) -> None:
    model, scaler = save_encoder(tmp_path / "tidhy-t")
    assert validate_encoder([tmp_path], "tidhy-t@3")["dim"] == 10
    loaded = load_encoder([tmp_path], "tidhy-t@3", batch_size=4)
    assert loaded.family == "tidhy" and loaded.encoder.dim == 2 * (3 + 2)
    mel = np.random.default_rng(0).normal(size=(6, 16, 8)).astype(np.float32)
    got = loaded.encoder.embed(mel)
    # by hand: 4x4 block means, standardised, inferred, then [mean r, std r, mean r2, std r2] over the 4 steps
    x = (mel.reshape(6, 4, 4, 2, 4).mean(axis=(2, 4)) - scaler.mean) / scaler.std
    latents = infer_batch(model, jnp.asarray(x), INFERENCE)
    r, r2 = np.asarray(latents.r), np.asarray(latents.r2)
    expected = np.concatenate([r.mean(1), r.std(1), r2.mean(1), r2.std(1)], axis=-1)
    assert got.shape == (6, 10) and np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.encoder.embed(mel[:1]), expected[:1], rtol=1e-5, atol=1e-6)  # padded batch
    assert np.abs(got[:, :3]).sum() > 0  # the latents moved off their zero start


def test_an_slds_checkpoint_validates_but_encodes_no_audio(tmp_path) -> None:
    save_encoder(tmp_path / "tidhy-slds", kind="slds")
    assert validate_encoder([tmp_path], "tidhy-slds@3")["input"] == "slds"
    with pytest.raises(NotAnAudioEncoder, match="encodes no audio"):
        load_encoder([tmp_path], "tidhy-slds@3")
    assert issubclass(NotAnAudioEncoder, CheckpointError)  # one clear line at the CLI, like every checkpoint error


def test_train_model_tidhy_trains_checkpoints_and_resumes(cli, tmp_path) -> None:
    """``birdassets train --model tidhy`` on a small BirdCLEF-layout task: two steps, then one more by resuming."""
    home = tmp_path / "home"
    generate(DemoTaskSpec(name="mini", seed=3, n_species=3, train_per_species=2, train_length_s=(5.0, 6.0),
                          n_test_windows=4, windows_per_soundscape=2), tmp_path / "mini-data")
    home.mkdir()
    (home / "birdassets.toml").write_text(f'include_demo = false\npretrained = []\n[[datasets]]\nname = "mini"\n'
                                          f'source = "birdclef"\nroot = "{tmp_path / "mini-data"}"\n')
    done = cli("train", "--model", "tidhy", "--task", "mini", "--num-steps", "2", "--batch-size", "4",
               "--checkpoint-every", "1", "--no-progress")
    assert done.returncode == 0, done.stderr
    run_dir = home / "checkpoints" / "tidhy-mini"
    assert "steps 0 -> 2" in done.stdout and str(run_dir) in done.stdout
    assert sorted(p.name for p in run_dir.iterdir() if p.name.isdigit()) == ["1", "2"]
    again = cli("train", "--model", "tidhy", "--task", "mini", "--num-steps", "3", "--batch-size", "4",
                "--no-progress")
    assert again.returncode == 0 and "steps 2 -> 3" in again.stdout
    encoder = load_encoder([home / "checkpoints"], "tidhy-mini@3").encoder
    assert encoder.input_spec.shape == (256, 256) and encoder.dim == 2 * (16 + 8)
