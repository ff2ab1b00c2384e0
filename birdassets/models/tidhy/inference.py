"""TiDHy inference (the E-step): the latents ``r_t`` and ``r2_t`` of every time step, by proximal Nesterov SGD.

For each time step t of one sequence ``x [T, input_dim]`` (the model's parameters held fixed) minimise

    E(r, r2) = ℓ(dec(r), x_t) + λ_temp ‖r − V(w(r2)) r_{t−1}‖² + α_w ‖w(r2)‖₁ + α_r2 ‖r2‖₁ + α_r ‖r‖₁

starting from ``r = 0`` and ``r2 = r2_{t−1}`` (warm start; ``r_{−1} = 0``, ``r2_{−1} = 0``), with SGD, momentum
0.9, Nesterov (PyTorch's update: ``v ← μ v + g``, ``p ← p − lr (g + μ v)``).

* The learning rate of ``r`` is ``min(lr_r, 1.3 / L)`` with ``L = 2 (‖D‖₂² + λ_temp)`` the curvature of the
  energy in ``r`` (linear decoder, MSE; other decoders use ``lr_r``): Nesterov with μ = 0.9 diverges past
  ``lr L = 2 (1 + μ) / (1 + 2μ) ≈ 1.36``, and the decoder grows in training. It halves every ``max_iter // 10``
  iterations.
* That of ``r2`` is ``lr_r2 / (1 + ‖r_{t−1}‖²)`` for the whole step: the temporal term's curvature in ``r2``
  grows with ``‖r_{t−1}‖²`` (``r̄`` is linear in ``r_{t−1}``), and with a fixed rate ``r2`` overshoots once ``r``
  is large (on the SLDS task it ran to 1e5 and training to NaN).
* After each update both are soft-thresholded (``sign(p) max(|p| − λ, 0)``). A step stops when the relative
  change ``‖p − p_old‖ / (‖p_old‖ + 1e-16)`` of ``r`` and of ``r2`` are both below ``tol``, or after
  ``max_iter`` iterations.

Shapes: :func:`infer_sequence` maps ``[T, input_dim]`` to ``r [T, r_dim]``, ``r2 [T, r2_dim]`` and the
iterations used ``[T]``; :func:`infer_batch` is the same over ``[batch, T, input_dim]`` (``vmap``: each sequence
stops on its own, as if alone), jitted. Time runs in ``lax.scan``, the iterations in ``lax.while_loop``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from birdassets.field_checks import check_fields
from birdassets.models.tidhy.network import TiDHy, spatial_loss

MOMENTUM = 0.9
"""Nesterov momentum of the inference SGD."""
LR_HALVINGS = 10
"""The learning rate of ``r`` halves every ``max_iter // LR_HALVINGS`` iterations."""
STABLE_STEP = 1.3
"""``lr_r · L`` at most this: inside Nesterov's stability limit ``2 (1 + μ) / (1 + 2μ) ≈ 1.357`` (μ = 0.9). A
smaller cap (1.0) brought back the divergence that ``lr_r = 0.1`` cured: the smaller steps stop on the
relative-change test short of the minimum."""
NORM_FLOOR = 1e-16
"""Added to ``‖p_old‖`` in the relative-change test."""


@dataclass(frozen=True)
class InferenceConfig:
    """How the latents of each time step are inferred.

    Attributes:
        lr_r, lr_r2: SGD learning rates of ``r`` and ``r2`` (per sequence: the energy is not averaged over a batch;
            ``lr_r`` is capped by the curvature, see the module docstring). Too small a rate stops on the
            relative-change test short of the minimum; the shrunken ``r`` then teaches the dynamics to amplify
            (on the SLDS task: ``lr_r`` 0.01 ran ``r`` to 1e15 within 60 training steps; 0.05 diverged on 4 of 5
            seeds of the small run, the spectral radius of ``V`` reaching 3).
        max_iter: iteration cap per time step.
        tol: relative-change tolerance (both ``r`` and ``r2``).
        temp_weight: ``λ_temp``, weight of the temporal prediction error ``‖r − r̄‖²``.
        l1_w, l1_r2, l1_r: L1 weights of the energy (``α_w``, ``α_r2``, ``α_r``).
        shrink_r, shrink_r2: soft-threshold levels applied after each update (``λ_r``, ``λ_r2``).
        r_bound: after each update ``r`` is clipped to ``[−r_bound, r_bound]`` (0: never). A latent direction
            the decoder barely reads is held only by the temporal term, so once training lets ``V`` expand
            along it ``r`` grows geometrically over a window (on the SLDS task: loss 37 -> 7e22 in five steps,
            then NaN, on 4 of 5 seeds with ``lr_r`` 0.05). The box is a proximal step like the soft threshold.
            At 5 it kept that loss finite but reconstruction R² fell to −5.3 on seed 2; off by default.
    """

    lr_r: float = 0.1
    lr_r2: float = 0.05
    max_iter: int = 200
    tol: float = 1e-2
    temp_weight: float = 2.0
    l1_w: float = 0.0
    l1_r2: float = 0.0
    l1_r: float = 0.0
    shrink_r: float = 0.0
    shrink_r2: float = 0.0
    r_bound: float = 0.0

    def __post_init__(self) -> None:
        check_fields(self, positive_ints=("max_iter",), positive=("lr_r", "lr_r2", "tol"),
                     non_negative=("temp_weight", "l1_w", "l1_r2", "l1_r", "shrink_r", "shrink_r2", "r_bound"))


class Latents(NamedTuple):
    """Inferred latents of one sequence (or a batch: a leading ``batch`` axis on each)."""

    r: jax.Array
    """``[T, r_dim]``"""
    r2: jax.Array
    """``[T, r2_dim]``"""
    iterations: jax.Array
    """``[T]`` int32: SGD iterations each step used (≤ ``max_iter``)."""


def step_energy(model: TiDHy, r: jax.Array, r2: jax.Array, x: jax.Array, r_prev: jax.Array,
                config: InferenceConfig) -> jax.Array:
    """``E(r, r2)`` of one time step: ``r [r_dim]``, ``r2 [r2_dim]``, ``x [input_dim]``, ``r_prev [r_dim]``
    -> scalar."""
    w = model.mixture(r2)
    r_bar = jnp.einsum("ij,j->i", model.dynamics(w), r_prev)
    return (spatial_loss(model.decode(r), x, model.config.loss_type)
            + config.temp_weight * jnp.sum((r - r_bar) ** 2)
            + config.l1_w * jnp.sum(jnp.abs(w)) + config.l1_r2 * jnp.sum(jnp.abs(r2))
            + config.l1_r * jnp.sum(jnp.abs(r)))


def soft_threshold(p: jax.Array, level: float) -> jax.Array:
    """``sign(p) max(|p| − level, 0)`` elementwise."""
    return jnp.sign(p) * jnp.maximum(jnp.abs(p) - level, 0.0)


def relative_change(new: jax.Array, old: jax.Array) -> jax.Array:
    """``‖new − old‖ / (‖old‖ + 1e-16)``."""
    return jnp.linalg.norm(new - old) / (jnp.linalg.norm(old) + NORM_FLOOR)


def rate_r(model: TiDHy, config: InferenceConfig) -> jax.Array:
    """The starting learning rate of ``r``: ``min(lr_r, STABLE_STEP / (2 (‖D‖₂² + λ_temp)))`` for the linear MSE
    decoder (``‖D‖₂``: its largest singular value), else ``lr_r``."""
    layers = model.decoder.layers
    if model.config.loss_type != "mse" or len(layers) != 1:
        return jnp.asarray(config.lr_r)
    sigma = jnp.linalg.norm(layers[0].kernel[...], ord=2)
    return jnp.minimum(config.lr_r, STABLE_STEP / (2.0 * (sigma ** 2 + config.temp_weight)))


def infer_step(model: TiDHy, x: jax.Array, r_prev: jax.Array, r2_start: jax.Array, config: InferenceConfig,
               lr_r0: jax.Array | float | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(r [r_dim], r2 [r2_dim], iterations)`` of one time step ``x [input_dim]`` (see the module docstring);
    ``lr_r0``: the starting rate of ``r`` (default :func:`rate_r`)."""
    grad = jax.grad(step_energy, argnums=(1, 2))
    period = max(1, config.max_iter // LR_HALVINGS)

    def not_done(carry):
        i, converged = carry[0], carry[-1]
        return (i < config.max_iter) & ~converged

    lr_r2 = config.lr_r2 / (1.0 + jnp.sum(r_prev ** 2))
    lr_r0 = rate_r(model, config) if lr_r0 is None else lr_r0

    def iterate(carry):
        i, r, r2, v_r, v_r2, _ = carry
        g_r, g_r2 = grad(model, r, r2, x, r_prev, config)
        v_r, v_r2 = MOMENTUM * v_r + g_r, MOMENTUM * v_r2 + g_r2
        lr_r = lr_r0 * 0.5 ** (i // period)
        new_r = soft_threshold(r - lr_r * (g_r + MOMENTUM * v_r), config.shrink_r)
        if config.r_bound:
            new_r = jnp.clip(new_r, -config.r_bound, config.r_bound)
        new_r2 = soft_threshold(r2 - lr_r2 * (g_r2 + MOMENTUM * v_r2), config.shrink_r2)
        converged = (relative_change(new_r, r) < config.tol) & (relative_change(new_r2, r2) < config.tol)
        return i + 1, new_r, new_r2, v_r, v_r2, converged

    r0 = jnp.zeros_like(r_prev)
    start = (jnp.int32(0), r0, r2_start, jnp.zeros_like(r0), jnp.zeros_like(r2_start), jnp.bool_(False))
    iterations, r, r2, *_ = jax.lax.while_loop(not_done, iterate, start)
    return r, r2, iterations


def infer_sequence(model: TiDHy, x: jax.Array, config: InferenceConfig) -> Latents:
    """The latents of every step of ``x [T, input_dim]``: :class:`Latents` with ``[T, ...]`` fields."""
    r_dim, r2_dim = model.config.r_dim, model.config.r2_dim
    lr_r0 = rate_r(model, config)  # the parameters are fixed: once per sequence

    def one_step(carry, x_t):
        r_prev, r2_prev = carry
        r, r2, iterations = infer_step(model, x_t, r_prev, r2_prev, config, lr_r0)
        return (r, r2), (r, r2, iterations)

    start = (jnp.zeros(r_dim, x.dtype), jnp.zeros(r2_dim, x.dtype))
    _, (r, r2, iterations) = jax.lax.scan(one_step, start, x)
    return Latents(r, r2, iterations)


@functools.partial(jax.jit, static_argnames="config")
def infer_batch(model: TiDHy, x: jax.Array, config: InferenceConfig) -> Latents:
    """:func:`infer_sequence` over ``x [batch, T, input_dim]`` (jitted, ``vmap``); fields ``[batch, T, ...]``."""
    return jax.vmap(infer_sequence, in_axes=(None, 0, None))(model, x, config)
