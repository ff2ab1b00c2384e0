"""Exporting a trained model (a ResNet18 detector checkpoint, a ViT checkpoint with a benchmark probe, or the fold
models of a supervised Keras model): weights, config, preset, card and TFLite into one folder."""

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


@dataclass(frozen=True)
class ProbeChoice:
    """The benchmark probe exported with a ViT: ``task`` and ``name`` (``"demo-clear"``, ``"linear"``), its
    parameters (leading fold axis) and classes."""

    task: str
    name: str
    params: dict[str, Any]
    classes: tuple[str, ...]


def export_checkpoint(ref: EncoderRef, out: str | Path, *, preset: MelPreset, rule: DetectionConfig,
                      lineage: dict[str, Any], validation: dict[str, float], metrics: pd.DataFrame, licence: str,
                      probe: ProbeChoice | None = None) -> ExportSummary:
    """Write the exported folder of checkpoint ``ref``: a ResNet18 detector, or a ViT with ``probe``.

    Args:
        preset: the checkpoint's frontend preset (its input names it).
        rule: the decision rule stated in ``config.json`` and used by ``detect --encoder DIR``.
        lineage: JSON-safe facts of where the model came from (task, manifest and preset hashes, code version,
            training config); its sha256 is the ``lineage_hash``.
        validation: held-out figures of the model (the detector's ``val_ap``; the probe's benchmark cmAP).
        metrics: DuckDB leaderboard rows of this checkpoint for the card.
    """
    weights, model_config, runtime = family_export(ref, probe)
    source = {"checkpoint": ref.key, "run": ref.run, "step": ref.step, "path": str(ref.path)}
    return write_export(out, name=f"{ref.family}-{ref.key.replace('@', '-')}", family=ref.family, weights=weights,
                        model_config=model_config, runtime=runtime, preset=preset, rule=rule, source=source,
                        lineage=lineage, validation=validation, metrics=metrics, licence=licence)


def write_export(out: str | Path, *, name: str, family: str, weights: dict[str, Any], model_config: dict[str, Any],
                 runtime: Any, preset: MelPreset, rule: DetectionConfig, source: dict[str, Any],
                 lineage: dict[str, Any], validation: dict[str, float], metrics: pd.DataFrame,
                 licence: str) -> ExportSummary:
    """Convert ``runtime`` to TFLite, compare, and publish the folder: ``config.json`` = identity, the family's
    ``model_config`` (architecture, classes, output), input shape, decision rule, ``source``, lineage and its
    hash, ``validation`` figures and the TFLite facts.

    The rule's windows are the model's: ``clip_s`` = the preset's window, ``hop_s`` = half of it (OrcaHello's
    2 s every 1 s); ``detect --encoder DIR`` uses them unless ``--clip``/``--hop`` say otherwise.
    """
    if preset.name != runtime.input_spec.preset:
        raise ValueError(f"{source['path']}: the model reads {runtime.input_spec.preset!r} windows, not {preset.name!r}")
    rule = dataclasses.replace(rule, clip_s=preset.clip_s, hop_s=preset.clip_s / 2)
    tflite, tflite_info = convert_and_compare(runtime, preset)
    document = {
        "name": name, "family": family, **model_config,
        "input_shape": list(runtime.input_spec.shape), "decision_rule": dataclasses.asdict(rule),
        "source": source, "lineage": lineage, "lineage_hash": lineage_hash(lineage), "validation": validation,
        "birdassets_version": __version__, "tflite": tflite_info,
    }
    card = model_card(document, preset.to_dict(), metrics, licence)
    directory = write_bundle(out, weights, document, preset, card, tflite)
    return ExportSummary(directory, document, file_digests(directory), tflite_info.get("max_abs_diff"))


def export_model_folder(folder: str | Path, out: str | Path, *, preset: MelPreset, rule: DetectionConfig,
                        lineage: dict[str, Any], validation: dict[str, float], metrics: pd.DataFrame,
                        licence: str) -> ExportSummary:
    """Write the exported folder of a supervised model (``birdassets birdclef train``'s model folder): its fold
    models as one :class:`~birdassets.models.keras.ensemble.KerasFoldEnsemble` (``validation``: its out-of-fold
    figures)."""
    from birdassets.models.keras.ensemble import ensemble_from_weights, exported_weights
    from birdassets.models.keras.family import input_spec
    from birdassets.models.registry import SUPERVISED_FAMILY
    from birdassets.supervised.model_folder import load_fold_models, read_model_record

    record = read_model_record(folder)
    architecture, weights = exported_weights(load_fold_models(folder), record["model"], input_spec(record))
    runtime = ensemble_from_weights(architecture, weights, record["classes"], name=record["key"], where=str(folder))
    model_config = {"architecture": architecture, "classes": list(record["classes"]),
                    "output": "sigmoid, mean over the fold models", "validation_from": "out-of-fold predictions"}
    source = {"model": record["key"], "run": record.get("run_id"), "path": str(Path(folder).resolve())}
    return write_export(out, name=record["key"], family=SUPERVISED_FAMILY, weights=weights, model_config=model_config,
                        runtime=runtime, preset=preset, rule=rule, source=source, lineage=lineage,
                        validation=validation, metrics=metrics, licence=licence)


def family_export(ref: EncoderRef, probe: ProbeChoice | None) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """``(weights, config entries, runtime)`` of a checkpoint: what ``model.safetensors`` holds, the family's part
    of ``config.json`` (architecture, classes, output, probe) and the model as the folder will run it."""
    from birdassets.models.resnet.family import FAMILY_NAME as RESNET
    from birdassets.models.vit.family import FAMILY_NAME as VIT

    if ref.family == RESNET:
        from birdassets.models.resnet.family import detector_from_weights, exported_weights

        architecture, weights = exported_weights(ref)
        runtime = detector_from_weights(architecture, weights, name=ref.key, where=str(ref.path))
        return weights, {"architecture": architecture, "classes": list(runtime.classes), "output": "softmax"}, runtime
    if ref.family == VIT and probe is not None:
        from birdassets.models.vit.family import classifier_from_weights, exported_weights

        architecture, encoder = exported_weights(ref)
        runtime = classifier_from_weights(architecture, encoder, probe.params, list(probe.classes), name=ref.key,
                                          where=str(ref.path))
        entries = {"architecture": architecture, "classes": list(probe.classes),
                   "output": "sigmoid, mean over the probe's fold models",
                   "probe": {"task": probe.task, "name": probe.name, "folds": int(next(iter(probe.params.values())).shape[0])}}
        return {"encoder": encoder, "probe": probe.params}, entries, runtime
    raise ValueError(f"{ref.key}: family {ref.family!r} cannot be exported"
                     + (" without a probe (--probe TASK:PROBE)" if ref.family == VIT else ""))


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


def convert_and_compare(runtime, preset: MelPreset) -> tuple[bytes | None, dict[str, Any]]:
    """``(flatbuffer, info)``: the TFLite conversion of ``runtime.forward`` and its largest differences from the JAX
    forward (probabilities, features) on :func:`probe_input`; ``(None, {"file": None, "reason": ...})`` when the
    conversion fails."""
    import tempfile

    from birdassets.export.tflite import TFLiteDetector, convert_forward

    try:
        flatbuffer = convert_forward(runtime.forward, runtime.input_spec,
                                     dynamic_batch=getattr(runtime, "reshapes_batch", False))
    except Exception as error:  # the converter raises many kinds; the export goes on without TFLite
        return None, {"file": None, "reason": f"TFLite conversion failed: {type(error).__name__}: {error}"}
    mel = probe_input(preset)
    with tempfile.NamedTemporaryFile(suffix=".tflite") as handle:
        handle.write(flatbuffer)
        handle.flush()
        converted = TFLiteDetector(handle.name, name="tflite", classes=runtime.classes,
                                   input_spec=runtime.input_spec, dim=runtime.dim)
        probabilities, features = converted.run(mel)
    return flatbuffer, {
        "file": TFLITE_FILE, "converted_with": "jax2tf (StableHLO) + TFLiteConverter, builtin ops",
        "input": "[batch, frames, mels, 1] (batch 1 in the file; resize_tensor_input for more)",
        "outputs": "probabilities [batch, classes], features [batch, dim]",
        "max_abs_diff": float(np.abs(probabilities - runtime.probabilities(mel)).max()),
        "max_abs_diff_features": float(np.abs(features - runtime.embed(mel)).max()),
        "compared_on": f"{PROBE_WINDOWS} stage-C windows of a test signal (a chirp in noise)",
    }


def file_digests(directory: Path) -> dict[str, dict[str, Any]]:
    """``{name: {"sha256", "bytes"}}`` of the files directly in ``directory``."""
    return {path.name: {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "bytes": path.stat().st_size}
            for path in sorted(directory.iterdir()) if path.is_file()}
