"""The ``keras`` encoder family: the penultimate layer of a supervised model trained on one task.

Key ``"birdclef-<model>.<task>:embedding"`` (:func:`~birdassets.models.keras.keys.encoder_key`) names the folder
``<models root>/<task>/<model>/`` (``fold_<k>.keras`` per fold + ``model.json``). The encoder is the fold-0
model's ``"embedding"`` layer: trained on the other folds of its own task. Scored by probes on that same task,
its features have seen the labels of every fold but fold 0, so only transfer to other tasks (or fold 0) is a
clean comparison; scored on another task it is as clean as any pretrained encoder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from birdassets.checkpoints.refs import CheckpointError
from birdassets.models.base import Encoder, EncoderFamily, EncoderRef, InputSpec, check_mel_batch, no_pretrained
from birdassets.models.registry import SUPERVISED_FAMILY
from birdassets.models.keras.keys import MODEL_RECORD, parse_encoder_key

EMBEDDING_LAYER = "embedding"
"""The layer of every supervised network whose output is the window embedding ``[batch, dim]``."""
ENCODER_FOLD = 0
"""The fold whose model serves as the encoder."""


def find(models_root: Path | None, key: str) -> EncoderRef:
    """The model folder of ``key`` under ``models_root``.

    Raises:
        CheckpointError: no models root given, or the model was never trained (names the folder and the command).
    """
    model, task = parse_encoder_key(key)
    if models_root is None:
        raise CheckpointError(f"supervised model {key!r}: no models root to look in")
    folder = Path(models_root) / task / model
    if not (folder / MODEL_RECORD).is_file():
        raise CheckpointError(f"supervised model {key!r} not found: {folder} has no {MODEL_RECORD} "
                              f"(train it with: birdassets birdclef train --task {task} --model {model})")
    return EncoderRef(key=key, family=SUPERVISED_FAMILY, run=key, step=None, path=folder)


def read_record(ref: EncoderRef) -> dict[str, Any]:
    """The folder's ``model.json``."""
    return json.loads((ref.path / MODEL_RECORD).read_text())


def input_spec(record: dict[str, Any]) -> InputSpec:
    """The mel windows the model was trained on, from its ``model.json``."""
    frames, mels = record["input_shape"]
    return InputSpec(preset=record["preset"], sample_rate=int(record["sample_rate"]), clip_s=float(record["clip_s"]),
                     frames=int(frames), mels=int(mels))


def validate(ref: EncoderRef) -> dict[str, Any]:
    """The record is complete and names the encoder's fold file; ``{"model", "task", "dim", "n_params"}``.

    Raises:
        CheckpointError: the fold-0 model file is missing or the record lacks its input description.
    """
    record = read_record(ref)
    model_file = ref.path / f"fold_{ENCODER_FOLD}.keras"
    if not model_file.is_file():
        raise CheckpointError(f"{ref.path}: supervised model has no {model_file.name}")
    try:
        spec = input_spec(record)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{ref.path / MODEL_RECORD}: cannot read the model's input: {error!r}") from error
    return {"model": record.get("model"), "task": record.get("task"), "input": list(spec.shape),
            "n_params": record.get("n_params")}


def register_layers() -> None:
    """Register the supervised models' custom layers with Keras (importing their modules does it), so
    ``keras.saving.load_model`` reads any trained model in a fresh process."""
    import birdassets.models.keras.depthwise  # noqa: F401
    import birdassets.models.keras.vit_backbone  # noqa: F401


class KerasEmbedder:
    """:class:`~birdassets.models.base.Encoder` over a Keras model's ``"embedding"`` layer (batched predict)."""

    def __init__(self, model_file: Path, spec: InputSpec, *, name: str, batch_size: int) -> None:
        import keras

        register_layers()
        model = keras.saving.load_model(model_file)
        self._embed = keras.Model(model.inputs, model.get_layer(EMBEDDING_LAYER).output)
        self.name, self.input_spec, self.batch_size = name, spec, batch_size
        self.dim = int(self._embed.output.shape[-1])

    def embed(self, mel: np.ndarray) -> np.ndarray:
        """``[batch, frames, mels]`` -> float32 ``[batch, dim]``."""
        mel = check_mel_batch(mel, self.input_spec, encoder_name=self.name)
        out = self._embed.predict(mel, batch_size=self.batch_size, verbose=0)
        return np.asarray(out, dtype=np.float32)


def load(ref: EncoderRef, batch_size: int) -> Encoder:
    """The fold-0 model's embedding layer (validated first)."""
    validate(ref)
    spec = input_spec(read_record(ref))
    return KerasEmbedder(ref.path / f"fold_{ENCODER_FOLD}.keras", spec, name=ref.key, batch_size=batch_size)


def describe(ref: EncoderRef) -> dict[str, Any]:
    """What the model is: family, task, configs and hashes from ``model.json``."""
    record = read_record(ref)
    keep = ("model", "task", "model_config", "train_config", "augment", "model_config_hash", "augment_hash",
            "train_config_hash", "precision", "n_params", "folds_hash")
    return {key: record[key] for key in keep if key in record} | {"encoder_fold": ENCODER_FOLD}


FAMILY = EncoderFamily(name=SUPERVISED_FAMILY, pretrained=(), locate=no_pretrained, validate=validate, load=load,
                       describe=describe, find=find)
