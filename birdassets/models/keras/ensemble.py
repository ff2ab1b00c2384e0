"""A supervised model's fold models as one window classifier, for an exported folder.

``probabilities(mel) = mean over the folds of sigmoid(logits)`` (the models of ``birdassets birdclef train``, one
per fold, as the submission averages them); ``embed(mel)`` is the fold-0 model's ``"embedding"`` layer, the
``keras`` encoder family's features. The forward pass is Keras's ``stateless_call`` on the JAX backend, so it
jits, and converts to TFLite like the Flax families' (:func:`birdassets.export.tflite.convert_forward`).

In ``model.safetensors`` the weights are ``fold_<k>.<i>`` (``fold_0.0004``: variable ``i`` of ``model.weights``,
zero-padded); ``config.json``'s architecture lists the variables' paths in that order (``gru_0/gru_cell/kernel``;
paths may hold dots, which safetensors names cannot) and the functional model's Keras JSON, the same for every fold.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from birdassets.models.base import InputSpec, check_mel_batch, in_fixed_batches
from birdassets.models.keras.family import EMBEDDING_LAYER, register_layers

if TYPE_CHECKING:
    import keras

STATIC_BATCH_MODELS = ("cnn",)
"""Models whose TFLite graph is traced at batch 1 and resized at run time: the CNN's shifted depthwise slices do
not convert with a polymorphic batch (a dynamic gather), while the RNN's and ViT's reshapes bake batch 1 in
otherwise."""


class KerasFoldEnsemble:
    """Mel windows ``[batch, frames, mels]`` -> class probabilities ``[batch, classes]`` (:meth:`probabilities`)
    or fold-0 embeddings ``[batch, dim]`` (:meth:`embed`).

    Attributes:
        name, classes, input_spec, dim, batch_size: as the other exported runtimes.
        reshapes_batch: whether a TFLite conversion takes a polymorphic batch (not for :data:`STATIC_BATCH_MODELS`).
    """

    def __init__(self, models: Sequence[keras.Model], classes: Sequence[str], spec: InputSpec, *, model: str,
                 name: str, batch_size: int = 64) -> None:
        import keras

        self._heads = [keras.Model(m.inputs, [m.output, m.get_layer(EMBEDDING_LAYER).output]) for m in models]
        self._variables = [([jnp.array(np.array(v.value)) for v in head.trainable_variables],
                            [jnp.array(np.array(v.value)) for v in head.non_trainable_variables])
                           for head in self._heads]  # copies: Keras's own predict may donate its buffers
        self.name, self.classes, self.input_spec = name, tuple(classes), spec
        self.dim, self.batch_size = int(self._heads[0].outputs[1].shape[-1]), int(batch_size)
        self.reshapes_batch = model not in STATIC_BATCH_MODELS
        self._outputs_jit = jax.jit(self._outputs)

    def _outputs(self, variables, mel):
        outputs = [head.stateless_call(trainable, fixed, mel, training=False)[0]
                   for head, (trainable, fixed) in zip(self._heads, variables)]
        probabilities = jnp.stack([jax.nn.sigmoid(logits.astype(jnp.float32)) for logits, _ in outputs])
        return probabilities.mean(axis=0), outputs[0][1].astype(jnp.float32)

    def forward(self, mel: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``mel [batch, frames, mels] -> (probabilities, embeddings)``, traceable (for the TFLite conversion)."""
        return self._outputs(self._variables, mel)

    def probabilities(self, mel: np.ndarray) -> np.ndarray:
        mel = check_mel_batch(mel, self.input_spec, encoder_name=self.name)
        return in_fixed_batches(lambda b: self._outputs_jit(self._variables, b)[0], mel, self.batch_size,
                                len(self.classes))

    def embed(self, mel: np.ndarray) -> np.ndarray:
        mel = check_mel_batch(mel, self.input_spec, encoder_name=self.name)
        return in_fixed_batches(lambda b: self._outputs_jit(self._variables, b)[1], mel, self.batch_size, self.dim)


def exported_weights(models: Sequence[keras.Model], model: str, spec: InputSpec) -> tuple[dict, dict]:
    """``(architecture, weights)`` of a supervised model's folds: the Keras JSON (one for all folds), the variable
    paths in order, the model family and input; ``{"fold_<k>": {"<i>": array}}``.

    Raises:
        ValueError: folds of different architectures.
    """
    configs = {model_.to_json() for model_ in models}
    if len(configs) != 1:
        raise ValueError(f"the {len(models)} fold models do not share one architecture")
    weights = {f"fold_{fold}": {variable_name(i): np.array(v.value) for i, v in enumerate(model_.weights)}
               for fold, model_ in enumerate(models)}
    return {"model": model, "folds": len(models), "input": dataclasses.asdict(spec),
            "variables": [v.path for v in models[0].weights], "keras": json.loads(configs.pop())}, weights


def variable_name(index: int) -> str:
    """The safetensors name of variable ``index`` within its fold: ``"0004"``."""
    return f"{index:04d}"


def ensemble_from_weights(architecture: dict[str, Any], weights: dict[str, Any], classes: Sequence[str], *,
                          name: str, where: str, batch_size: int = 64) -> KerasFoldEnsemble:
    """The :class:`KerasFoldEnsemble` of an exported folder: each fold rebuilt from the Keras JSON, its variables
    assigned in order, each checked against the recorded path and shape.

    Raises:
        ValueError: a fold or variable missing from the weights, or one of another shape or path (the first named).
    """
    import keras

    register_layers()
    models = [keras.models.model_from_json(json.dumps(architecture["keras"]))
              for _ in range(int(architecture["folds"]))]
    for fold, model in enumerate(models):
        saved = weights.get(f"fold_{fold}", {})
        for index, (variable, path) in enumerate(zip(model.weights, architecture["variables"], strict=True)):
            value = saved.get(variable_name(index))
            if variable.path != path or value is None or tuple(value.shape) != tuple(variable.shape):
                found = ("missing" if value is None else f"shape {tuple(value.shape)}") if variable.path == path \
                    else f"recorded as {path!r}"
                raise ValueError(f"{where}: fold_{fold} weight {variable.path!r} is {found}, the architecture "
                                 f"needs {tuple(variable.shape)}")
            variable.assign(value)
    spec = InputSpec(**architecture["input"])
    return KerasFoldEnsemble(models, classes, spec, model=architecture["model"], name=name, batch_size=batch_size)
