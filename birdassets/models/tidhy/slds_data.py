"""The SLDS benchmark's data (TiDHy's main synthetic task): independent switching linear dynamical systems seen
through partially superimposed, randomly projected observations, generated deterministically from a seed.

Each of ``n_systems`` systems has ``n_states = 2`` discrete states and a ``latent_dim = 2`` continuous state:

* discrete state ``z_t``: a sticky Markov chain, ``P(z_t = z_{t−1}) = p_stay`` (0.975); the chain is redrawn until
  each state holds at least ``min_occupancy`` (45 %) of the time steps;
* continuous state ``s_t = A_{z_t} s_{t−1} + b_{z_t} + ε_t``, ``ε_t ~ N(0, process_noise² I)``; each ``A`` has the
  eigenvalues ``exp(τ ± 2πi f)`` (a rotation by ``2π f`` radians per step scaled by ``e^τ``), the six
  ``(τ, f)`` pairs of the reference (system k uses pairs 2k and 2k+1); biases ``b ~ U(−1, 1)``;
* observations ``y_t = C s_t + d + η_t`` with ``C ~ N(0, 1) [obs_dim = 3, 2]``, ``d ~ N(0, 1)`` per system and
  ``η_t ~ N(0, obs_noise² I)``. The first ``overlap = 2`` channels are summed over the systems, the others kept
  apart (``overlap + n_systems (obs_dim − overlap)`` = 5 channels), then projected by a random ``N(0, 1)``
  matrix to ``project_dim = 20`` channels, and each channel is divided by its largest absolute value in the
  training split: ``x [steps, 20]``, in [−1, 1] on the training split.

The noise levels follow what the reference generator gets from ``ssm``'s defaults: a random dynamics covariance
per state with mean ``2 I`` (here a fixed ``process_noise² I``, std 1) and emission variances ``exp(−1 + N(0, 1))``,
median 0.37 (here ``obs_noise = 0.6``, variance 0.36).

The label of a time step is the joint discrete state ``Σ_k z_k 2^k`` (8 classes for 3 systems).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from birdassets.field_checks import check_fields

DECAYS = (-0.025, -0.25, -0.1, -0.5, -0.015, -0.75)
"""``τ`` of the six dynamics matrices (log of their eigenvalues' modulus)."""
FREQUENCIES = (0.0075, 0.05, 0.025, 0.075, 0.01, 0.075)
"""``f`` of the six dynamics matrices, cycles per time step."""
MAX_REDRAWS = 1000
"""How many times a discrete chain is redrawn to meet ``min_occupancy`` before giving up."""


@dataclass(frozen=True)
class SLDSConfig:
    """The generator's settings (defaults: the reference benchmark's, but 20 000 / 5 000 steps).

    Attributes:
        train_steps, test_steps: time steps of the two splits (one long recording each).
        n_systems, n_states, latent_dim, obs_dim: the systems' shape (``n_states`` must be 2).
        overlap: observation channels summed across systems.
        project_dim: channels after the random projection.
        p_stay: probability of keeping the discrete state.
        min_occupancy: least fraction of steps each discrete state must hold.
        process_noise: standard deviation of the continuous state's noise.
        obs_noise: standard deviation of each system's observation noise (before mixing).
    """

    train_steps: int = 20_000
    test_steps: int = 5_000
    n_systems: int = 3
    n_states: int = 2
    latent_dim: int = 2
    obs_dim: int = 3
    overlap: int = 2
    project_dim: int = 20
    p_stay: float = 0.975
    min_occupancy: float = 0.45
    process_noise: float = 1.0
    obs_noise: float = 0.6

    def __post_init__(self) -> None:
        if self.n_states != 2 or self.latent_dim != 2:
            raise ValueError("SLDSConfig: only 2 discrete states and 2-D continuous states are built")
        if not 1 <= self.n_systems <= len(DECAYS) // 2:
            raise ValueError(f"SLDSConfig.n_systems must be 1..{len(DECAYS) // 2}, got {self.n_systems!r}")
        if not 0 <= self.overlap <= self.obs_dim:
            raise ValueError(f"SLDSConfig.overlap must be 0..obs_dim ({self.obs_dim}), got {self.overlap!r}")
        if not 0 < self.p_stay < 1 or not 0 <= self.min_occupancy < 0.5:
            raise ValueError("SLDSConfig: p_stay must be in (0, 1) and min_occupancy in [0, 0.5)")
        check_fields(self, positive_ints=("train_steps", "test_steps", "project_dim"),
                     non_negative=("process_noise", "obs_noise"))


class SLDSData(NamedTuple):
    """One split: observations, joint discrete state, and the ground truth behind them."""

    x: np.ndarray
    """float32 ``[steps, project_dim]`` observations in [−1, 1]."""
    state: np.ndarray
    """int64 ``[steps]`` joint discrete state ``Σ_k z_k 2^k``."""
    z: np.ndarray
    """int64 ``[steps, n_systems]`` discrete states."""
    s: np.ndarray
    """float32 ``[steps, n_systems, latent_dim]`` continuous states."""


def dynamics_matrix(decay: float, frequency: float) -> np.ndarray:
    """``e^τ [[cos θ, −sin θ], [sin θ, cos θ]]``, ``θ = 2π f``: eigenvalues ``exp(τ ± iθ)``. float64 ``[2, 2]``."""
    theta = 2.0 * np.pi * frequency
    return np.exp(decay) * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


def sticky_chain(rng: np.random.Generator, steps: int, config: SLDSConfig) -> np.ndarray:
    """A 2-state chain ``[steps]`` of ints in {0, 1}: the state flips with probability ``1 − p_stay`` per step.

    Raises:
        RuntimeError: no draw met ``min_occupancy`` in :data:`MAX_REDRAWS` tries (too few steps).
    """
    for _ in range(MAX_REDRAWS):
        flips = rng.random(steps) >= config.p_stay
        flips[0] = rng.random() < 0.5  # the first state is 0 or 1 with equal chance
        chain = np.cumsum(flips) % 2
        if min(chain.mean(), 1.0 - chain.mean()) >= config.min_occupancy:
            return chain.astype(np.int64)
    raise RuntimeError(f"no {steps}-step chain met min_occupancy {config.min_occupancy} in {MAX_REDRAWS} draws")


@jax.jit
def simulate(matrices: jax.Array, biases: jax.Array, z: jax.Array, noise: jax.Array) -> jax.Array:
    """``s_t = A[z_t] s_{t−1} + b[z_t] + noise_t`` from ``s_{−1} = 0``, all systems at once.

    Args:
        matrices: ``[n_systems, 2, latent, latent]``; biases: ``[n_systems, 2, latent]``;
        z: ``[steps, n_systems]`` discrete states; noise: ``[steps, n_systems, latent]``.

    Returns:
        ``[steps, n_systems, latent]``.
    """
    systems = jnp.arange(matrices.shape[0])

    def step(s_prev, inputs):
        z_t, noise_t = inputs
        s = jnp.einsum("kij,kj->ki", matrices[systems, z_t], s_prev) + biases[systems, z_t] + noise_t
        return s, s

    _, s = jax.lax.scan(step, jnp.zeros((matrices.shape[0], matrices.shape[-1])), (z, noise))
    return s


class SLDSSystems(NamedTuple):
    """The fixed parts of a benchmark: dynamics, biases, emissions and the projection."""

    matrices: np.ndarray
    """``[n_systems, 2, latent, latent]``: system k, state j uses ``(DECAYS, FREQUENCIES)[2k + j]``."""
    biases: np.ndarray
    """``[n_systems, 2, latent]`` ~ U(−1, 1)."""
    emissions: np.ndarray
    """``[n_systems, obs_dim, latent]`` ~ N(0, 1)."""
    offsets: np.ndarray
    """``[n_systems, obs_dim]`` ~ N(0, 1)."""
    projection: np.ndarray
    """``[overlap + n_systems (obs_dim − overlap), project_dim]`` ~ N(0, 1)."""


def draw_systems(config: SLDSConfig, rng: np.random.Generator) -> SLDSSystems:
    """The systems of one benchmark, drawn from ``rng``."""
    k = config.n_systems
    matrices = np.stack([[dynamics_matrix(DECAYS[2 * i + j], FREQUENCIES[2 * i + j]) for j in range(2)]
                         for i in range(k)])
    biases = rng.uniform(-1.0, 1.0, size=(k, 2, config.latent_dim))
    emissions = rng.normal(size=(k, config.obs_dim, config.latent_dim))
    offsets = rng.normal(size=(k, config.obs_dim))
    channels = config.overlap + k * (config.obs_dim - config.overlap)
    return SLDSSystems(matrices, biases, emissions, offsets, rng.normal(size=(channels, config.project_dim)))


def mixed_observations(systems: SLDSSystems, s: np.ndarray, noise: np.ndarray, overlap: int) -> np.ndarray:
    """``s [steps, n_systems, latent]`` and ``noise [steps, n_systems, obs_dim]`` -> projected observations
    ``[steps, project_dim]`` (not yet scaled): each system's ``C s + d + noise``; the first ``overlap`` channels
    summed over systems, the rest side by side."""
    y = np.einsum("koj,tkj->tko", systems.emissions, s) + systems.offsets + noise
    shared = y[:, :, :overlap].sum(axis=1)
    private = y[:, :, overlap:].reshape(len(y), -1)
    return np.concatenate([shared, private], axis=1) @ systems.projection


def simulate_split(systems: SLDSSystems, steps: int, config: SLDSConfig, rng: np.random.Generator):
    """``(z [steps, n_systems], s [steps, n_systems, latent], y [steps, project_dim])`` of one split."""
    z = np.stack([sticky_chain(rng, steps, config) for _ in range(config.n_systems)], axis=1)
    noise = rng.normal(scale=config.process_noise, size=(steps, config.n_systems, config.latent_dim))
    s = np.asarray(simulate(jnp.asarray(systems.matrices, jnp.float32), jnp.asarray(systems.biases, jnp.float32),
                            jnp.asarray(z), jnp.asarray(noise, jnp.float32)), np.float64)
    observation_noise = rng.normal(scale=config.obs_noise, size=(steps, config.n_systems, config.obs_dim))
    return z, s, mixed_observations(systems, s, observation_noise, config.overlap)


def generate(config: SLDSConfig, seed: int) -> tuple[SLDSData, SLDSData]:
    """``(train, test)`` of the benchmark: a pure function of ``(config, seed)``. Both splits share the systems
    and are scaled per channel by the training split's largest absolute value."""
    rng = np.random.default_rng(seed)
    systems = draw_systems(config, rng)
    splits = [simulate_split(systems, steps, config, rng) for steps in (config.train_steps, config.test_steps)]
    scale = np.abs(splits[0][2]).max(axis=0)
    weights = 2 ** np.arange(config.n_systems)
    return tuple(SLDSData(x=(y / scale).astype(np.float32), state=z @ weights, z=z, s=s.astype(np.float32))
                 for z, s, y in splits)
