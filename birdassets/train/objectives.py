"""What the encoder is trained for, plus the online linear probe that watches it learn.

* ``mae`` — masked-patch reconstruction (SimMIM-style): a random ``mask_ratio`` of patches per window have
  their embedding replaced by a learned ``mask_token``; a linear decoder predicts the masked patches' mel
  values (each patch standardised, MAE's ``norm_pix_loss``) from the encoder's output tokens; loss = mean
  squared error over masked patches only.
* ``supervised`` — a linear head on the window embedding, BCE on the multi-hot labels.
* the **online probe** (LayerNorm + Dense) sees the embedding through ``stop_gradient`` and is trained with BCE on
  the labels alongside either objective; it never changes the encoder.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from birdassets.models.vit import ViTConfig, ViTEncoder, patchify


class MAEHead(nnx.Module):
    """``mask_token`` ``[dim]`` and a linear decoder ``[dim] -> [patch_frames * patch_mels]``."""

    def __init__(self, config: ViTConfig, *, rngs: nnx.Rngs) -> None:
        self.mask_token = nnx.Param(0.02 * jax.random.normal(rngs.params(), (config.dim,)))
        self.decoder = nnx.Linear(config.dim, config.patch_size, rngs=rngs)


class SupervisedHead(nnx.Module):
    """Classifier ``[dim] -> [classes]`` on the window embedding: LayerNorm (the mean-pooled tokens vary little
    in scale across windows; normalising them makes the head trainable at the encoder's learning rate) + Dense."""

    def __init__(self, config: ViTConfig, n_classes: int, *, rngs: nnx.Rngs) -> None:
        self.norm = nnx.LayerNorm(config.dim, rngs=rngs)
        self.classifier = nnx.Linear(config.dim, n_classes, rngs=rngs)


class LinearProbe(nnx.Module):
    """LayerNorm + Dense ``[dim] -> [classes]``."""

    def __init__(self, dim: int, n_classes: int, *, rngs: nnx.Rngs) -> None:
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.dense = nnx.Linear(dim, n_classes, rngs=rngs)

    def __call__(self, embedding: jax.Array) -> jax.Array:
        return self.dense(self.norm(embedding))


class TrainModel(nnx.Module):
    """Encoder + objective head + online probe: the three parameter groups of a checkpoint's ``state``."""

    def __init__(self, config: ViTConfig, objective: str, n_classes: int, *, rngs: nnx.Rngs) -> None:
        self.encoder = ViTEncoder(config, rngs=rngs)
        self.objective = MAEHead(config, rngs=rngs) if objective == "mae" else SupervisedHead(config, n_classes, rngs=rngs)
        self.probe = LinearProbe(config.dim, n_classes, rngs=rngs)


def random_patch_mask(key: jax.Array, batch: int, n_patches: int, ratio: float) -> jax.Array:
    """Bool ``[batch, n_patches]`` with exactly ``round(ratio * n_patches)`` ``True`` per row."""
    k = max(1, int(round(ratio * n_patches)))
    ranks = jnp.argsort(jax.random.uniform(key, (batch, n_patches)), axis=1).argsort(axis=1)
    return ranks < k


def losses(model: TrainModel, objective: str, mel: jax.Array, labels: jax.Array, key: jax.Array, mask_ratio: float):
    """``(objective_loss, probe_loss, probe_logits)`` for one batch.

    Args:
        mel: ``[batch, frames, mels]`` in the compute dtype.
        labels: ``[batch, classes]`` float32 multi-hot.
        key: PRNG key for the mask.
    """
    config = model.encoder.config
    if objective == "mae":
        mask = random_patch_mask(key, mel.shape[0], config.n_patches, mask_ratio)
        tokens = model.encoder(mel, mask=mask, mask_token=model.objective.mask_token[...])
        prediction = model.objective.decoder(tokens[:, 1:, :]).astype(jnp.float32)
        target = patchify(mel, config).astype(jnp.float32)
        target = (target - target.mean(-1, keepdims=True)) / (target.std(-1, keepdims=True) + 1e-6)  # norm_pix_loss
        per_patch = jnp.mean(jnp.square(prediction - target), axis=-1)  # [batch, n_patches]
        objective_loss = jnp.sum(per_patch * mask) / jnp.sum(mask)
        embedding = jnp.mean(model.encoder(mel)[:, 1:, :], axis=1)
    else:
        embedding = model.encoder.embed(mel)
        logits = model.objective.classifier(model.objective.norm(embedding)).astype(jnp.float32)
        objective_loss = optax.sigmoid_binary_cross_entropy(logits, labels).mean()
    probe_logits = model.probe(jax.lax.stop_gradient(embedding)).astype(jnp.float32)
    probe_loss = optax.sigmoid_binary_cross_entropy(probe_logits, labels).mean()
    return objective_loss, probe_loss, probe_logits
