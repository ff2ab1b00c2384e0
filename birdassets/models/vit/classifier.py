"""A ViT encoder and a probe the benchmark trained on its embeddings, as one window classifier.

``probabilities(mel) = mean over the probe's fold models of its sigmoid outputs`` on the encoder's embedding (what
:class:`~birdassets.detection.scorers.ProbeScorer` computes from a checkpoint and the benchmark's probe folder), so
an exported ViT + probe scores windows with the folder alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from birdassets.models.base import check_mel_batch, in_fixed_batches
from birdassets.models.vit.network import ViTEmbedder, ViTEncoder
from birdassets.probes import probe_probabilities


class ViTProbeClassifier:
    """Mel windows ``[batch, frames, mels]`` -> embeddings ``[batch, dim]`` (:meth:`embed`) or class probabilities
    ``[batch, classes]`` (:meth:`probabilities`).

    Attributes:
        name, dim, input_spec: as the :class:`ViTEmbedder` of ``encoder``.
        classes: the probe's class names, one per output.
        probe: the probe's parameters, leading fold axis (:func:`birdassets.artifacts.load_probe`).
        reshapes_batch: its patch reshapes carry the batch size, so a TFLite conversion takes a polymorphic batch.
    """

    reshapes_batch = True

    def __init__(self, encoder: ViTEncoder, probe: dict, classes: Sequence[str], *, name: str,
                 batch_size: int = 64) -> None:
        self.embedder = ViTEmbedder(encoder, name=name, batch_size=batch_size)
        self.name, self.dim, self.input_spec = name, self.embedder.dim, self.embedder.input_spec
        self.classes, self.batch_size = tuple(classes), int(batch_size)
        self.probe = {key: jnp.asarray(value) for key, value in probe.items()}
        graphdef, state = nnx.split(encoder)
        self._graphdef, self._state = graphdef, state
        self._probabilities = jax.jit(lambda state, probe, mel: self._outputs(state, probe, mel)[0])

    def _outputs(self, state, probe, mel):
        embedding = nnx.merge(self._graphdef, state).embed(mel)
        return probe_probabilities(probe, embedding).mean(axis=0), embedding

    def forward(self, mel: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``mel [batch, frames, mels] -> (probabilities, embeddings)``, traceable (for the TFLite conversion)."""
        return self._outputs(self._state, self.probe, mel)

    def embed(self, mel: np.ndarray) -> np.ndarray:
        return self.embedder.embed(mel)

    def probabilities(self, mel: np.ndarray) -> np.ndarray:
        mel = check_mel_batch(mel, self.input_spec, encoder_name=self.name)
        apply = lambda batch: self._probabilities(self._state, self.probe, batch)  # noqa: E731
        return in_fixed_batches(apply, mel, self.batch_size, len(self.classes))
