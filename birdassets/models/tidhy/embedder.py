"""A TiDHy checkpoint as an :class:`~birdassets.models.base.Encoder` of mel windows.

Each window is pooled into a sequence (:class:`~birdassets.models.tidhy.frames.FramePooling`), standardised by the
checkpoint's scaler, and its latents inferred (:func:`~birdassets.models.tidhy.inference.infer_batch`, with the
checkpoint's inference settings); the embedding is ``[mean_t r, std_t r, mean_t r2, std_t r2]``
(``2 (r_dim + r2_dim)`` values): the fast state's level and spread, and the slow, dynamics-selecting state's.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from birdassets.models.base import InputSpec, check_mel_batch, in_fixed_batches
from birdassets.models.tidhy.saved_model import Scaler
from birdassets.models.tidhy.frames import FramePooling
from birdassets.models.tidhy.inference import InferenceConfig, infer_batch
from birdassets.models.tidhy.network import TiDHy


def embedding_dim(model: TiDHy) -> int:
    """``2 (r_dim + r2_dim)``."""
    return 2 * (model.config.r_dim + model.config.r2_dim)


@functools.partial(jax.jit, static_argnames="config")
def latent_summary(model: TiDHy, x: jax.Array, config: InferenceConfig) -> jax.Array:
    """``x [batch, T, input_dim]`` (standardised) -> ``[batch, 2 (r_dim + r2_dim)]``: time means and stds of the
    inferred ``r`` and ``r2``."""
    latents = infer_batch(model, x, config)
    return jnp.concatenate([latents.r.mean(1), latents.r.std(1), latents.r2.mean(1), latents.r2.std(1)], axis=-1)


class TiDHyEmbedder:
    """Mel windows ``[batch, frames, mels]`` -> embeddings ``[batch, 2 (r_dim + r2_dim)]``, in fixed-size batches
    (the last one padded) so the jitted inference compiles once."""

    def __init__(self, model: TiDHy, scaler: Scaler, inference: InferenceConfig, spec: InputSpec,
                 pooling: FramePooling, *, name: str, batch_size: int = 64) -> None:
        pooling.sequence_shape(spec)
        self.model, self.scaler, self.inference, self.pooling = model, scaler, inference, pooling
        self.input_spec, self.name, self.batch_size = spec, name, batch_size
        self.dim = embedding_dim(model)

    def sequences(self, mel: np.ndarray) -> np.ndarray:
        """Checked mel ``[batch, frames, mels]`` -> standardised sequences ``[batch, T, input_dim]``."""
        mel = check_mel_batch(mel, self.input_spec, encoder_name=self.name)
        return np.asarray(self.scaler.apply(self.pooling.apply(mel)), np.float32)

    def embed(self, mel: np.ndarray) -> np.ndarray:
        apply = lambda batch: latent_summary(self.model, jnp.asarray(batch), self.inference)  # noqa: E731
        return in_fixed_batches(apply, self.sequences(mel), self.batch_size, self.dim)
