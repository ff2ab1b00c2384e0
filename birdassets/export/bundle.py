"""An exported model folder: everything needed to run a trained model, and nothing of the platform's state.

::

    model.safetensors          the weights (:mod:`birdassets.export.weights`; Flax layouts; Keras variables by index)
    config.json                format, family, architecture, classes, output, decision rule, source and lineage
    preprocessor_config.json   the full frontend preset (stages A, B, C) and its content hash
    README.md                  the model card (:mod:`birdassets.export.model_card`)
    model.tflite               the forward pass as TFLite, where it could be converted (``config["tflite"]``)

:func:`read_bundle` needs the folder alone (no ``BIRDASSETS_HOME``, no checkpoint roots): it rebuilds the preset
from ``preprocessor_config.json`` (checking its hash) and the model from ``config.json`` + the weights. The folder
is published whole or not at all (:func:`birdassets.atomic.atomic_dir`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from birdassets.atomic import atomic_dir, write_bytes, write_json, write_text
from birdassets.detection.rule import DetectionConfig
from birdassets.export.weights import WEIGHTS_FILE, load_weights, save_weights
from birdassets.frontends.presets import MelPreset, PresetError

FORMAT = "birdassets-export/1"
CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
CARD_FILE = "README.md"
TFLITE_FILE = "model.tflite"
REQUIRED_FILES = (WEIGHTS_FILE, CONFIG_FILE, PREPROCESSOR_FILE, CARD_FILE)


class ExportError(ValueError):
    """A folder that is not a readable export; the message names the folder and the problem."""


@dataclass(frozen=True)
class ExportedModel:
    """A model read back from its folder.

    Attributes:
        directory: the folder.
        config: ``config.json``.
        preset: the frontend preset of ``preprocessor_config.json``.
        rule: the decision rule of ``config.json``.
        model: the family's runtime: the ResNet18's :class:`~birdassets.models.resnet.runtime.ResNetDetector`, a
            ViT's :class:`~birdassets.models.vit.classifier.ViTProbeClassifier`, a supervised model's
            :class:`~birdassets.models.keras.ensemble.KerasFoldEnsemble`.
    """

    directory: Path
    config: dict[str, Any]
    preset: MelPreset
    rule: DetectionConfig
    model: Any

    @property
    def tflite_path(self) -> Path | None:
        path = self.directory / TFLITE_FILE
        return path if self.config.get("tflite", {}).get("file") == TFLITE_FILE and path.is_file() else None


def preprocessor_config(preset: MelPreset) -> dict[str, Any]:
    """``preprocessor_config.json``: the preset's every field, its hash, and notes a re-implementer needs."""
    notes = []
    if preset.filterbank_rate is not None and preset.filterbank_rate != preset.sample_rate:
        notes.append(f"the mel filterbank is built for {preset.filterbank_rate} Hz although the audio is "
                     f"{preset.sample_rate} Hz (fastai_audio/torchaudio's default, kept for parity): its filters "
                     "are placed as if the FFT bins spanned the wrong rate")
    if preset.model_input.frames is not None:
        notes.append(f"stage C crops or pads each window to {preset.model_input.frames} frames with "
                     f"{preset.model_input.pad_value} (dB values: 0 is full scale, not silence)")
    return {"format": FORMAT, "preset": preset.to_dict(), "preset_hash": preset.content_hash(),
            "input_shape": list(preset.input_shape), "notes": notes}


def write_bundle(out: str | Path, weights: dict[str, Any], config: dict[str, Any], preset: MelPreset,
                 card: str, tflite: bytes | None = None) -> Path:
    """Publish the folder ``out`` (replacing an older export there); ``config`` is completed with ``format``."""
    out = Path(out)
    config = {"format": FORMAT, **config}
    with atomic_dir(out) as staging:
        save_weights(staging / WEIGHTS_FILE, weights, {"format": FORMAT, "family": config["family"]})
        write_json(staging / CONFIG_FILE, config, indent=1)
        write_json(staging / PREPROCESSOR_FILE, preprocessor_config(preset), indent=1)
        write_text(staging / CARD_FILE, card)
        if tflite is not None:
            write_bytes(staging / TFLITE_FILE, tflite)
    return out


def read_bundle(directory: str | Path, batch_size: int = 64) -> ExportedModel:
    """The model of an exported folder, from the folder alone.

    Raises:
        ExportError: missing files, another format, a preset whose hash differs from the recorded one, or
            weights that do not fit the architecture (each message names the folder).
    """
    directory = Path(directory)
    missing = [name for name in REQUIRED_FILES if not (directory / name).is_file()]
    if missing:
        raise ExportError(f"{directory}: not an exported model folder (missing {', '.join(missing)})")
    config = _json(directory / CONFIG_FILE)
    if config.get("format") != FORMAT:
        raise ExportError(f"{directory / CONFIG_FILE}: format {config.get('format')!r}, expected {FORMAT!r}")
    preset = read_preset(directory / PREPROCESSOR_FILE)
    rule = read_rule(directory)
    try:
        weights, _ = load_weights(directory / WEIGHTS_FILE)
        model = runtime(config, weights, directory, batch_size)
    except (KeyError, TypeError, ValueError) as error:
        raise ExportError(f"{directory}: {error}") from None
    return ExportedModel(directory, config, preset, rule, model)


def read_rule(directory: str | Path) -> DetectionConfig:
    """The decision rule of an exported folder's ``config.json`` (no weights read)."""
    config = _json(Path(directory) / CONFIG_FILE)
    try:
        return DetectionConfig(**config["decision_rule"])
    except (KeyError, TypeError, ValueError) as error:
        raise ExportError(f"{Path(directory) / CONFIG_FILE}: no valid decision_rule ({error})") from None


def read_preset(path: Path) -> MelPreset:
    """The preset of a ``preprocessor_config.json``, checked against its recorded hash."""
    document = _json(path)
    try:
        preset = MelPreset.from_dict(document["preset"])
    except (KeyError, PresetError) as error:
        raise ExportError(f"{path}: invalid preset ({error})") from None
    if preset.content_hash() != document.get("preset_hash"):
        raise ExportError(f"{path}: the preset's parameters do not give its recorded preset_hash (edited by hand?)")
    return preset


def runtime(config: dict[str, Any], weights: dict[str, Any], directory: Path, batch_size: int) -> Any:
    """The family's runtime of an exported model: the ResNet18's ``ResNetDetector``, a ViT's
    ``ViTProbeClassifier`` or a supervised model's ``KerasFoldEnsemble``."""
    from birdassets.models.registry import SUPERVISED_FAMILY
    from birdassets.models.resnet.family import FAMILY_NAME as RESNET
    from birdassets.models.vit.family import FAMILY_NAME as VIT

    name, where = f"export:{directory.name}", str(directory / WEIGHTS_FILE)
    if config.get("family") == RESNET:
        from birdassets.models.resnet.family import detector_from_weights

        return detector_from_weights(config["architecture"], weights, name=name, where=where, batch_size=batch_size)
    if config.get("family") == VIT:
        from birdassets.models.vit.family import classifier_from_weights

        return classifier_from_weights(config["architecture"], weights["encoder"], weights["probe"],
                                       config["classes"], name=name, where=where, batch_size=batch_size)
    if config.get("family") == SUPERVISED_FAMILY:
        from birdassets.models.keras.ensemble import ensemble_from_weights

        return ensemble_from_weights(config["architecture"], weights, config["classes"], name=name, where=where,
                                     batch_size=batch_size)
    raise ValueError(f"exported family {config.get('family')!r} cannot be run here "
                     f"(known: {RESNET!r}, {VIT!r}, {SUPERVISED_FAMILY!r})")


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ExportError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(value, dict):
        raise ExportError(f"{path}: not a JSON object")
    return value
