"""A restored ResNet18 as an :class:`~birdassets.models.base.Encoder` (pooled features) and a window classifier
(class probabilities), both jitted and run in fixed-size batches."""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from birdassets.models.base import check_mel_batch, in_fixed_batches
from birdassets.models.resnet.network import ResNet18


class ResNetDetector:
    """Mel windows ``[batch, frames, mels]`` -> features ``[batch, 8 width]`` (:meth:`embed`) or class
    probabilities ``[batch, classes]`` (:meth:`probabilities`, softmax of the logits).

    Attributes:
        name: encoder name (``"resnet18@<run>@<step>"``).
        dim: feature width.
        input_spec: the mel windows it takes.
        classes: output names (``("no_call", "call")``).
        config: the model's :class:`~birdassets.models.resnet.network.ResNetConfig`.
        model: the restored network (eval mode).
    """

    def __init__(self, model: ResNet18, *, name: str, batch_size: int = 64) -> None:
        model.eval()
        self.model = model
        self.name, self.batch_size = name, int(batch_size)
        self.config = model.config
        self.dim, self.input_spec, self.classes = model.config.dim, model.config.input_spec, model.config.classes
        graphdef, state = nnx.split(model)
        self._graphdef, self._state = graphdef, state
        self._features = jax.jit(lambda state, mel: nnx.merge(graphdef, state).features(mel))
        self._probabilities = jax.jit(lambda state, mel: jax.nn.softmax(nnx.merge(graphdef, state)(mel), axis=-1))

    def forward(self, mel: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``mel [batch, frames, mels] -> (probabilities, features)``, traceable (for the TFLite conversion)."""
        network = nnx.merge(self._graphdef, self._state)
        features = network.features(mel)
        return jax.nn.softmax(network.fc(features), axis=-1), features

    def embed(self, mel: np.ndarray) -> np.ndarray:
        """float32 ``[batch, frames, mels]`` -> ``[batch, dim]`` pooled features."""
        mel = check_mel_batch(mel, self.input_spec, encoder_name=self.name)
        return in_fixed_batches(lambda batch: self._features(self._state, batch), mel, self.batch_size, self.dim)

    def probabilities(self, mel: np.ndarray) -> np.ndarray:
        """float32 ``[batch, frames, mels]`` -> ``[batch, classes]`` softmax probabilities."""
        mel = check_mel_batch(mel, self.input_spec, encoder_name=self.name)
        apply = lambda batch: self._probabilities(self._state, batch)  # noqa: E731
        return in_fixed_batches(apply, mel, self.batch_size, len(self.classes))
