"""Exporting a ViT with a benchmark probe: the folder scores windows as the checkpoint + probe folder do."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from flax import nnx

from birdassets.detection import DetectionConfig
from birdassets.export.bundle import read_bundle
from birdassets.export.from_checkpoint import ProbeChoice, export_checkpoint
from birdassets.export.tflite import TFLiteDetector
from birdassets.frontends.presets import get_preset
from birdassets.models.registry import resolve_encoder
from birdassets.models.vit import ViTEmbedder, ViTEncoder, save_checkpoint, vit_config
from birdassets.probes import PROBES, fit_probe, predict_probe

PRESET = get_preset("birdclef2025")
CLASSES = ("amerob", "woothr", "norcar")


@pytest.fixture(scope="module")
def vit_and_probe(tmp_path_factory):
    """A tiny ViT checkpoint and a linear probe fitted (3 folds) on its embeddings of random windows."""
    frames, mels = PRESET.input_shape
    config = vit_config("tiny", frames=frames, mels=mels, preset=PRESET.name, sample_rate=PRESET.sample_rate,
                        clip_s=PRESET.clip_s, patch_frames=32, patch_mels=32)
    encoder = ViTEncoder(config, rngs=nnx.Rngs(0))
    root = tmp_path_factory.mktemp("runs")
    save_checkpoint(root / "vit", 5, encoder, config)
    rng = np.random.default_rng(0)
    mel = rng.uniform(-4, 4, (30, frames, mels)).astype(np.float32)
    x = ViTEmbedder(encoder).embed(mel)
    y = (rng.uniform(size=(30, 3)) < 0.4).astype(np.uint8)
    result = fit_probe(PROBES["linear"], x, y, np.arange(30) % 3)
    return root, ProbeChoice("demo-clear", "linear", result.params, CLASSES), encoder, mel


def test_vit_with_probe_exports_and_reloads_with_the_same_probabilities(vit_and_probe, tmp_path):
    root, probe, encoder, mel = vit_and_probe
    ref = resolve_encoder([root], "vit@5")
    summary = export_checkpoint(ref, tmp_path / "vit", preset=PRESET, rule=DetectionConfig(), lineage={"task": "t",
                                "manifest_hash": "", "preset_hash": PRESET.content_hash(), "code_version": "x"},
                                validation={}, metrics=pd.DataFrame(), licence="CC0", probe=probe)
    config = json.loads((tmp_path / "vit" / "config.json").read_text())
    assert config["family"] == "vit" and config["classes"] == list(CLASSES)
    assert config["probe"] == {"task": "demo-clear", "name": "linear", "folds": 3}
    assert (config["decision_rule"]["clip_s"], config["decision_rule"]["hop_s"]) == (5.0, 2.5)  # birdclef2025's 5 s
    bundle = read_bundle(tmp_path / "vit")
    expected = predict_probe(probe.params, ViTEmbedder(encoder).embed(mel)).mean(axis=0)  # ProbeScorer's numbers
    np.testing.assert_allclose(bundle.model.probabilities(mel), expected, atol=1e-6, rtol=0)
    if summary.config["tflite"]["file"] is None:
        pytest.fail(f"no TFLite file: {summary.config['tflite']['reason']}")
    tflite = TFLiteDetector(bundle.tflite_path, name="t", classes=CLASSES, input_spec=bundle.model.input_spec,
                            dim=bundle.model.dim)
    probabilities, features = tflite.run(mel[:4])
    assert np.abs(probabilities - expected[:4]).max() < 1e-5
    assert np.abs(features - bundle.model.embed(mel[:4])).max() < 1e-4


def test_a_vit_without_a_probe_is_refused(vit_and_probe, tmp_path):
    root, *_ = vit_and_probe
    with pytest.raises(ValueError, match="vit@5: family 'vit' cannot be exported without a probe"):
        export_checkpoint(resolve_encoder([root], "vit@5"), tmp_path / "x", preset=PRESET, rule=DetectionConfig(),
                          lineage={}, validation={}, metrics=pd.DataFrame(), licence="")
