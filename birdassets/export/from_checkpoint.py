"""Exporting a ResNet18 detector checkpoint: weights, config, preset, card and TFLite into one folder."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdassets import __version__
from birdassets.detection.rule import DetectionConfig
from birdassets.export.bundle import TFLITE_FILE, write_bundle
from birdassets.export.model_card import model_card
from birdassets.frontends.presets import MelPreset
from birdassets.models.base import EncoderRef

PROBE_WINDOWS = 8
"""Windows of the fixed input on which the TFLite file is compared with the JAX forward at export."""


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote.

    Attributes:
        directory: the folder.
        config: its ``config.json``.
        files: ``{name: {"sha256", "bytes"}}`` of every file.
        tflite_max_abs_diff: largest |TFLite - JAX| of the class probabilities on the probe input (``None`` when no TFLite file was written: ``config["tflite"]["reason"]`` says why).
    """

    directory: Path
    config: dict[str, Any]
    files: dict[str, dict[str, Any]]
    tflite_max_abs_diff: float | None

    @property
    def size_bytes(self) -> int:
        return sum(entry["bytes"] for entry in self.files.values())


def export_detector(ref: EncoderRef, out: str | Path, *, preset: MelPreset, rule: DetectionConfig,
                    lineage: dict[str, Any], validation: dict[str, float], metrics: pd.DataFrame,
                    licence: str) -> ExportSummary:
    """Write the exported folder of a ResNet18 checkpoint ``ref``.

    Args:
        preset: the checkpoint's frontend preset (its input names it).
        rule: the decision rule stated in ``config.json`` and used by ``detect --encoder DIR``.
        lineage: JSON-safe facts of where the model came from (task, manifest and preset hashes, code version,
            training config); its sha256 is the ``lineage_hash``.
        validation: the training run's held-out figures at this step (``val_ap``, ``val_accuracy``).
        metrics: DuckDB leaderboard rows of this checkpoint for the card.
    """
    from birdassets.models.resnet.family import build_model, exported_weights
    from birdassets.models.resnet.network import ResNetConfig

    architecture, weights = exported_weights(ref)
    config = ResNetConfig.from_dict(architecture)
    if preset.name != config.preset:
        raise ValueError(f"{ref.path}: the model reads {config.preset!r} windows, not {preset.name!r}")
    tflite, tflite_info = convert_and_compare(build_model(config, weights), preset)
    document = {
        "name": f"{ref.family}-{ref.key.replace('@', '-')}", "family": ref.family, "architecture": architecture,
        "classes": list(config.classes), "output": "softmax", "input_shape": [config.frames, config.mels],
        "decision_rule": dataclasses.asdict(rule),
        "source": {"checkpoint": ref.key, "run": ref.run, "step": ref.step, "path": str(ref.path)},
        "lineage": lineage, "lineage_hash": lineage_hash(lineage), "validation": validation,
        "birdassets_version": __version__, "tflite": tflite_info,
    }
    card = model_card(document, preset.to_dict(), metrics, licence)
    directory = write_bundle(out, weights, document, preset, card, tflite)
    return ExportSummary(directory, document, file_digests(directory), tflite_info.get("max_abs_diff"))


def lineage_hash(lineage: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``lineage``."""
    return hashlib.sha256(json.dumps(lineage, sort_keys=True).encode()).hexdigest()


def probe_input(preset: MelPreset) -> np.ndarray:
    """``[PROBE_WINDOWS, frames, mels]`` float32: the stage C of ``preset`` on consecutive windows of a fixed test
    signal (a repeated chirp in noise, :func:`birdassets.speed.bench_signal`), as real windows look."""
    from birdassets.frontends.tf_mel import TFMelFrontend
    from birdassets.speed import bench_signal

    samples = preset.clip_samples
    audio = bench_signal(PROBE_WINDOWS * preset.clip_s, preset.sample_rate)[: PROBE_WINDOWS * samples]
    return TFMelFrontend(preset).model_input(audio.reshape(PROBE_WINDOWS, samples)).numpy()


def convert_and_compare(model, preset: MelPreset) -> tuple[bytes | None, dict[str, Any]]:
    """``(flatbuffer, info)``: the TFLite conversion of ``model`` and its largest differences from the JAX forward
    (probabilities, features) on :func:`probe_input`; ``(None, {"file": None, "reason": ...})`` when conversion fails."""
    import tempfile

    from birdassets.export.tflite import TFLiteDetector, convert_detector
    from birdassets.models.resnet.runtime import ResNetDetector

    try:
        flatbuffer = convert_detector(model)
    except Exception as error:  # the converter raises many kinds; the export goes on without TFLite
        return None, {"file": None, "reason": f"TFLite conversion failed: {type(error).__name__}: {error}"}
    reference = ResNetDetector(model, name="jax")
    mel = probe_input(preset)
    with tempfile.NamedTemporaryFile(suffix=".tflite") as handle:
        handle.write(flatbuffer)
        handle.flush()
        runtime = TFLiteDetector(handle.name, name="tflite", classes=reference.classes,
                                 input_spec=reference.input_spec, dim=reference.dim)
        probabilities, features = runtime.run(mel)
    return flatbuffer, {
        "file": TFLITE_FILE, "converted_with": "jax2tf (StableHLO) + TFLiteConverter, builtin ops",
        "input": "[batch, frames, mels, 1] (batch 1 in the file; resize_tensor_input for more)",
        "outputs": "probabilities [batch, classes], features [batch, 8 width]",
        "max_abs_diff": float(np.abs(probabilities - reference.probabilities(mel)).max()),
        "max_abs_diff_features": float(np.abs(features - reference.embed(mel)).max()),
        "compared_on": f"{PROBE_WINDOWS} stage-C windows of a test signal (a chirp in noise)",
    }


def file_digests(directory: Path) -> dict[str, dict[str, Any]]:
    """``{name: {"sha256", "bytes"}}`` of the files directly in ``directory``."""
    return {path.name: {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "bytes": path.stat().st_size}
            for path in sorted(directory.iterdir()) if path.is_file()}
