"""TiDHy learning (the M-step): the loss of a batch of sequences given its inferred latents, and its optimizer.

With ``r_t``, ``r2_t`` from inference (constants: no gradient flows into the E-step) and ``r̄_t = V(w(r2_t)) r_{t−1}``,
per sequence (then averaged over the batch):

* ``spatial_rhat = Σ_{t≥0} ℓ(dec(r_t), x_t)``, ``spatial_rbar = Σ_{t≥1} ℓ(dec(r̄_t), x_t)``;
* ``temporal = λ_temp Σ_{t≥1} ‖r_t − r̄_t‖²``;
* ``cos_reg = (1/M) Σ_{m<n} |cos(vec T_m, vec T_n)|``: similarity *between* the M dynamics matrices (the public
  JAX rewrite measures rows inside each matrix instead), weighted by ``cos_eta``;
* ``orth_r2 = (1/r2_dim) Σ_{i<j} |cos(W1[i], W1[j])|`` over the hypernetwork's first-layer input directions
  (rows of the NNX kernel ``[r2_dim, hidden]``), weighted by ``orth_weight``.

The optimizer is AdamW with one learning rate per parameter group (``decoder``, ``dynamics`` = ``temporal``,
``hypernet``) through ``optax.partition``, each halved every ``decay_every`` steps, after global-norm clipping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax

from birdassets.field_checks import check_fields
from birdassets.models.tidhy.inference import Latents
from birdassets.models.tidhy.network import TiDHy, spatial_loss

GROUPS = {"decoder": "decoder", "temporal": "dynamics", "hypernet": "hypernet"}
"""Top-level attribute of :class:`TiDHy` -> its learning-rate group."""


@dataclass(frozen=True)
class LearningConfig:
    """How TiDHy's parameters learn (defaults: the PyTorch reference's).

    Attributes:
        lr_decoder, lr_dynamics, lr_hypernet: AdamW learning rates of the three groups.
        weight_decay: AdamW decoupled weight decay (all groups).
        clip_norm: global gradient-norm clip.
        decay_every: every this many steps each learning rate halves (0: never).
        temp_weight: ``λ_temp`` of the temporal term (the inference energy's too).
        cos_eta: weight of ``cos_reg``.
        orth_weight: weight of ``orth_r2``.
        orth_decoder: weight of ``orth_decoder``, ``mean((DᵀD − I)²)`` of the linear decoder (the reference's
            ``Orth_alpha_spat``). With it every latent direction stays readable from the observations; without it
            a direction the decoder barely reads is held by the temporal term alone, ``V`` can grow along it,
            and ``r`` explodes over a window (SLDS task: loss 37 -> 7e22 within five steps on 4 of 5 seeds).
        normalize_decoder: after each update, rescale every column of the linear decoder ``D`` (one per latent
            of ``r``) to unit norm (the reference's ``normalize_spatial``; no effect on a nonlinear decoder).
        normalize_temporal: after each update, rescale every dynamics matrix ``T_m`` to unit Frobenius norm
            (the reference's ``normalize_temporal``; the orthogonal initialisation starts them there).
    """

    lr_decoder: float = 0.01
    lr_dynamics: float = 0.01
    lr_hypernet: float = 0.001
    weight_decay: float = 1e-5
    clip_norm: float = 500.0
    decay_every: int = 0
    temp_weight: float = 2.0
    cos_eta: float = 5.0
    orth_weight: float = 5.0
    orth_decoder: float = 0.0
    normalize_decoder: bool = False
    normalize_temporal: bool = False

    def __post_init__(self) -> None:
        check_fields(self, positive=("lr_decoder", "lr_dynamics", "lr_hypernet", "clip_norm"),
                     non_negative=("weight_decay", "temp_weight", "cos_eta", "orth_weight", "orth_decoder"))
        if isinstance(self.decay_every, bool) or not isinstance(self.decay_every, int) or self.decay_every < 0:
            raise ValueError(f"LearningConfig.decay_every must be an integer >= 0, got {self.decay_every!r}")


def mean_abs_pairwise_cosine(vectors: jax.Array) -> jax.Array:
    """``Σ_{i<j} |cos(v_i, v_j)| / n`` of ``vectors [n, d]``."""
    unit = vectors / jnp.maximum(jnp.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
    cosines = jnp.abs(unit @ unit.T)
    n = vectors.shape[0]
    return jnp.sum(jnp.triu(cosines, k=1)) / n


def cos_reg(model: TiDHy) -> jax.Array:
    """Similarity between the M dynamics matrices: ``mean_abs_pairwise_cosine(T.reshape(M, r_dim²))``."""
    temporal = model.temporal[...]
    return mean_abs_pairwise_cosine(temporal.reshape(temporal.shape[0], -1))


def orth_r2(model: TiDHy) -> jax.Array:
    """Non-orthogonality of the hypernetwork's input directions: over the rows of its first kernel."""
    return mean_abs_pairwise_cosine(model.hypernet.first.kernel[...])


def orth_decoder(model: TiDHy) -> jax.Array:
    """``mean((DᵀD − I)²)`` of the linear decoder ``D [input_dim, r_dim]`` (0 for a nonlinear decoder)."""
    layers = model.decoder.layers
    if len(layers) != 1:
        return jnp.zeros(())
    kernel = layers[0].kernel[...]  # [r_dim, input_dim] = Dᵀ
    return jnp.mean((kernel @ kernel.T - jnp.eye(kernel.shape[0])) ** 2)


def loss_terms(model: TiDHy, x: jax.Array, latents: Latents, config: LearningConfig) -> dict[str, jax.Array]:
    """The M-step terms of ``x [batch, T, input_dim]`` given its :class:`Latents` (``[batch, T, ...]``) and
    their weighted sum ``"total"``; every term a scalar (per-sequence sums averaged over the batch)."""
    r, r2 = jax.lax.stop_gradient(latents.r), jax.lax.stop_gradient(latents.r2)
    loss_type = model.config.loss_type
    r_bar = model.predict(r[:, :-1], r2[:, 1:])
    terms = {
        "spatial_rhat": jnp.mean(jnp.sum(spatial_loss(model.decode(r), x, loss_type), axis=1)),
        "spatial_rbar": jnp.mean(jnp.sum(spatial_loss(model.decode(r_bar), x[:, 1:], loss_type), axis=1)),
        "temporal": config.temp_weight * jnp.mean(jnp.sum((r[:, 1:] - r_bar) ** 2, axis=(1, 2))),
        "cos_reg": cos_reg(model),
        "orth_r2": orth_r2(model),
        "orth_decoder": orth_decoder(model),
    }
    terms["total"] = (terms["spatial_rhat"] + terms["spatial_rbar"] + terms["temporal"]
                      + config.cos_eta * terms["cos_reg"] + config.orth_weight * terms["orth_r2"]
                      + config.orth_decoder * terms["orth_decoder"])
    return terms


def group_labels(params: Any) -> Any:
    """The learning-rate group (:data:`GROUPS`) of every leaf of ``params`` (a :class:`TiDHy`'s parameter state,
    as a tree of the same structure): the group of its top-level attribute."""
    return jax.tree_util.tree_map_with_path(lambda path, _: GROUPS[str(path[0].key)], params)


def optimizer(config: LearningConfig) -> optax.GradientTransformation:
    """Clip by global norm, then AdamW per group (``optax.partition`` by :func:`group_labels`)."""
    rates = {"decoder": config.lr_decoder, "dynamics": config.lr_dynamics, "hypernet": config.lr_hypernet}

    def adamw(rate: float) -> optax.GradientTransformation:
        schedule = (optax.exponential_decay(rate, config.decay_every, 0.5, staircase=True)
                    if config.decay_every else rate)
        return optax.adamw(schedule, weight_decay=config.weight_decay)

    per_group = optax.partition({group: adamw(rate) for group, rate in rates.items()}, group_labels)
    return optax.chain(optax.clip_by_global_norm(config.clip_norm), per_group)


def unit_rows(matrix: jax.Array, axes: tuple[int, ...] = (-1,)) -> jax.Array:
    """``matrix`` with every slice over ``axes`` divided by its Euclidean norm (norms below 1e-12 left as they are)."""
    norm = jnp.sqrt(jnp.sum(matrix ** 2, axis=axes, keepdims=True))
    return matrix / jnp.maximum(norm, 1e-12)


def project(model: TiDHy, config: LearningConfig) -> None:
    """Apply the post-update normalisations that ``config`` asks for, in place."""
    layers = model.decoder.layers
    if config.normalize_decoder and len(layers) == 1:  # NNX kernel [r_dim, input_dim]: row i is D's column i
        layers[0].kernel[...] = unit_rows(layers[0].kernel[...])
    if config.normalize_temporal:
        model.temporal[...] = unit_rows(model.temporal[...], axes=(-2, -1))
