"""TiDHy (Timescale Demixing via Hypernetworks; Abe et al., bioRxiv 2025) as a Flax NNX module: the generative model.

Notation (per time step t, one sequence): observation ``x_t [input_dim]``, first-order latent ``r_t [r_dim]``,
higher-order latent ``r2_t [r2_dim]``, ``M = mix_dim`` dynamics matrices.

* spatial decoder: ``x̂_t = D r_t + d`` (``sigmoid`` of it for the BCE loss; with ``nonlinear_decoder``,
  ``Linear → LayerNorm → ELU → Linear → Linear``);
* temporal dictionary: ``T [M, r_dim, r_dim]``, orthogonally initialised (the M flattened matrices are
  orthonormal rows of ``[M, r_dim²]``);
* hypernetwork: ``w_t = ReLU(L3 L2 ELU(LN(L1 tanh(r2_t)))) [M]``, non-negative mixture weights (``tanh``
  optional: ``squash_r2``);
* dynamics: ``V_t = Σ_m w_{t,m} T_m`` and the prediction ``r̄_t = V_t r_{t−1}``.

The module holds parameters only; inference of ``r`` and ``r2`` (:mod:`birdassets.models.tidhy.inference`) and
learning (:mod:`birdassets.models.tidhy.mstep`) are functions of it. Attribute names ``decoder``,
``temporal`` and ``hypernet`` are part of the checkpoint format and name the learning-rate groups.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from birdassets.field_checks import check_fields

LOSS_TYPES = ("mse", "bce")
"""Spatial losses: squared error, or binary cross-entropy of a sigmoid decoder (observations in [0, 1])."""


@dataclass(frozen=True)
class TiDHyConfig:
    """Architecture of a :class:`TiDHy` model (defaults: the PyTorch reference's SLDS configuration).

    Attributes:
        input_dim: observation channels per time step.
        r_dim: first-order latent width.
        r2_dim: higher-order latent width (the hypernetwork's input).
        mix_dim: number of dynamics matrices ``M``.
        hyper_hidden: hypernetwork hidden width ``H``.
        loss_type: ``"mse"`` or ``"bce"`` (:data:`LOSS_TYPES`).
        nonlinear_decoder: decode through an MLP of width ``decoder_hidden`` instead of ``D r + d``.
        decoder_hidden: hidden width of the nonlinear decoder.
        squash_r2: feed ``tanh(r2)`` to the hypernetwork (the public JAX rewrite's choice). Without it the
            LayerNorm makes ``w`` blind to the scale of ``r2``, so inference can let ``r2`` drift without bound
            (seen on the SLDS task: ``|r2|`` reached 1e8, then NaN).
    """

    input_dim: int
    r_dim: int = 10
    r2_dim: int = 5
    mix_dim: int = 15
    hyper_hidden: int = 50
    loss_type: str = "mse"
    nonlinear_decoder: bool = False
    decoder_hidden: int = 64
    squash_r2: bool = True

    def __post_init__(self) -> None:
        check_fields(self, positive_ints=("input_dim", "r_dim", "r2_dim", "mix_dim", "hyper_hidden", "decoder_hidden"))
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"TiDHyConfig.loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if self.mix_dim > self.r_dim * self.r_dim:
            raise ValueError(f"TiDHyConfig.mix_dim ({self.mix_dim}) cannot exceed r_dim² ({self.r_dim ** 2}): "
                             f"the dynamics matrices are initialised orthonormal")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TiDHyConfig:
        """Inverse of :meth:`to_dict`; unknown keys are named in the ValueError."""
        unknown = sorted(set(data) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown TiDHyConfig keys {unknown}")
        return cls(**data)


def linear(fan_in: int, fan_out: int, rngs: nnx.Rngs) -> nnx.Linear:
    """``nnx.Linear`` initialised as the reference's: Xavier-normal weights, biases ``U(±1/√fan_in)``.

    The nonzero biases matter: with zero biases the hypernetwork maps ``r2 = 0`` to ``w = ReLU(0) = 0``, where
    the energy's gradient with respect to ``r2`` vanishes, and inference could never move ``r2``.
    """
    bound = 1.0 / fan_in ** 0.5

    def bias_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return nnx.Linear(fan_in, fan_out, kernel_init=nnx.initializers.xavier_normal(), bias_init=bias_init, rngs=rngs)


class Hypernet(nnx.Module):
    """``r2 [..., r2_dim] -> w [..., mix_dim]``: ``ReLU(L3 L2 ELU(LN(L1 u)))``, ``u = tanh(r2)`` (``squash_r2``)
    or ``r2`` (L2 has no activation)."""

    def __init__(self, config: TiDHyConfig, rngs: nnx.Rngs) -> None:
        hidden = config.hyper_hidden
        self.squash = config.squash_r2
        self.first = linear(config.r2_dim, hidden, rngs)
        self.norm = nnx.LayerNorm(hidden, rngs=rngs)
        self.middle = linear(hidden, hidden, rngs)
        self.last = linear(hidden, config.mix_dim, rngs)

    def __call__(self, r2: jax.Array) -> jax.Array:
        u = jnp.tanh(r2) if self.squash else r2
        return jax.nn.relu(self.last(self.middle(jax.nn.elu(self.norm(self.first(u))))))


class Decoder(nnx.Module):
    """``r [..., r_dim] -> x̂ [..., input_dim]``: ``D r + d`` or the nonlinear MLP; sigmoid for the BCE loss."""

    def __init__(self, config: TiDHyConfig, rngs: nnx.Rngs) -> None:
        self.sigmoid = config.loss_type == "bce"
        if config.nonlinear_decoder:
            hidden = config.decoder_hidden
            self.layers = nnx.List([linear(config.r_dim, hidden, rngs), nnx.LayerNorm(hidden, rngs=rngs),
                                    linear(hidden, hidden, rngs), linear(hidden, config.input_dim, rngs)])
        else:
            self.layers = nnx.List([linear(config.r_dim, config.input_dim, rngs)])

    def __call__(self, r: jax.Array) -> jax.Array:
        if len(self.layers) == 1:
            x = self.layers[0](r)
        else:
            first, norm, middle, last = self.layers
            x = last(middle(jax.nn.elu(norm(first(r)))))
        return jax.nn.sigmoid(x) if self.sigmoid else x


class TiDHy(nnx.Module):
    """The TiDHy generative model: decoder, temporal dictionary ``T [mix_dim, r_dim, r_dim]`` and hypernetwork."""

    def __init__(self, config: TiDHyConfig, *, rngs: nnx.Rngs) -> None:
        self.config = config
        self.decoder = Decoder(config, rngs)
        flat = nnx.initializers.orthogonal()(rngs.params(), (config.mix_dim, config.r_dim * config.r_dim))
        self.temporal = nnx.Param(flat.reshape(config.mix_dim, config.r_dim, config.r_dim))
        self.hypernet = Hypernet(config, rngs)

    def decode(self, r: jax.Array) -> jax.Array:
        """``r [..., r_dim] -> x̂ [..., input_dim]``."""
        return self.decoder(r)

    def mixture(self, r2: jax.Array) -> jax.Array:
        """``r2 [..., r2_dim] -> w [..., mix_dim]``, ``w >= 0``."""
        return self.hypernet(r2)

    def dynamics(self, w: jax.Array) -> jax.Array:
        """``w [..., mix_dim] -> V [..., r_dim, r_dim] = Σ_m w_m T_m``."""
        return jnp.einsum("...m,mij->...ij", w, self.temporal[...])

    def predict(self, r_prev: jax.Array, r2: jax.Array) -> jax.Array:
        """``r̄ = V(w(r2)) r_prev``: ``r_prev [..., r_dim]``, ``r2 [..., r2_dim]`` -> ``[..., r_dim]``."""
        return jnp.einsum("...ij,...j->...i", self.dynamics(self.mixture(r2)), r_prev)


def spatial_loss(x_hat: jax.Array, x: jax.Array, loss_type: str) -> jax.Array:
    """Per-step spatial loss summed over features: ``[..., input_dim]`` twice -> ``[...]``.

    ``"mse"``: ``Σ (x̂ − x)²``; ``"bce"``: ``−Σ x log x̂ + (1 − x) log(1 − x̂)`` (``x̂`` clipped to [1e-7, 1 − 1e-7]).
    """
    if loss_type == "mse":
        return jnp.sum((x_hat - x) ** 2, axis=-1)
    p = jnp.clip(x_hat, 1e-7, 1.0 - 1e-7)
    return -jnp.sum(x * jnp.log(p) + (1.0 - x) * jnp.log1p(-p), axis=-1)
