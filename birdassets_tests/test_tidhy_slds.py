"""The SLDS benchmark's generator: dynamics eigenvalues, discrete-state statistics, the mixing, determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from birdassets.models.tidhy.slds_data import SLDSConfig, draw_systems, generate

SMALL = SLDSConfig(train_steps=20_000, test_steps=2_000)


@pytest.fixture(scope="module")
def splits():
    return generate(SMALL, seed=7)


@pytest.mark.parametrize("system,state,modulus,angle", [
    (0, 0, 0.9753099120, 0.0471238898),   # τ = -0.025, f = 0.0075
    (0, 1, 0.7788007831, 0.3141592654),   # τ = -0.25,  f = 0.05
    (1, 0, 0.9048374180, 0.1570796327),   # τ = -0.1,   f = 0.025
    (1, 1, 0.6065306597, 0.4712388980),   # τ = -0.5,   f = 0.075
    (2, 0, 0.9851119396, 0.0628318531),   # τ = -0.015, f = 0.01
    (2, 1, 0.4723665527, 0.4712388980),   # τ = -0.75,  f = 0.075
])
def test_dynamics_matrices_have_the_reference_eigenvalues(system, state, modulus, angle) -> None:
    matrix = draw_systems(SMALL, np.random.default_rng(0)).matrices[system, state]
    eigenvalues = np.linalg.eigvals(matrix)
    np.testing.assert_allclose(np.sort(np.abs(eigenvalues)), [modulus, modulus], rtol=1e-9)
    np.testing.assert_allclose(np.sort(np.angle(eigenvalues)), [-angle, angle], rtol=1e-9)


def test_discrete_states_are_sticky_and_each_holds_at_least_45_percent(splits) -> None:
    train, test = splits
    for split in (train, test):
        occupancy = split.z.mean(axis=0)
        assert ((occupancy >= 0.45) & (occupancy <= 0.55)).all(), occupancy
    stay = (train.z[1:] == train.z[:-1]).mean(axis=0)
    np.testing.assert_allclose(stay, 0.975, atol=0.004)
    assert set(np.unique(train.state)) == set(range(8))
    np.testing.assert_array_equal(train.state, train.z[:, 0] + 2 * train.z[:, 1] + 4 * train.z[:, 2])


def test_observations_span_the_five_mixed_channels_and_are_scaled_by_the_training_split(splits) -> None:
    """2 shared + 3 private channels (noise included) projected to 20: rank 5; per channel max |x| = 1 (train)."""
    train, test = splits
    assert train.x.shape == (20_000, 20) and test.x.shape == (2_000, 20) and train.x.dtype == np.float32
    singular = np.linalg.svd(train.x.astype(np.float64), compute_uv=False)
    assert (singular > 1e-4 * singular[0]).sum() == 5
    np.testing.assert_allclose(np.abs(train.x).max(axis=0), 1.0, rtol=1e-6)
    assert np.abs(test.x).max() <= 1.5


def test_without_noise_each_state_follows_its_own_affine_map() -> None:
    """s_t − A_z s_{t−1} (A written from τ, f by hand) is one constant bias per discrete state."""
    quiet = dataclasses.replace(SMALL, n_systems=1, process_noise=0.0, obs_noise=0.0, train_steps=3_000)
    train, _ = generate(quiet, seed=1)
    s, z = train.s[:, 0].astype(np.float64), train.z[:, 0]
    rotation = lambda f: np.array([[np.cos(2 * np.pi * f), -np.sin(2 * np.pi * f)],  # noqa: E731
                                   [np.sin(2 * np.pi * f), np.cos(2 * np.pi * f)]])
    matrices = [np.exp(-0.025) * rotation(0.0075), np.exp(-0.25) * rotation(0.05)]
    for state in (0, 1):
        t = np.flatnonzero(z[1:] == state) + 1
        residual = s[t] - s[t - 1] @ matrices[state].T
        np.testing.assert_allclose(residual, np.broadcast_to(residual[0], residual.shape), atol=1e-4)


def test_the_same_seed_gives_the_same_data_and_another_seed_other_data(splits) -> None:
    again, _ = generate(SMALL, seed=7)
    other, _ = generate(SMALL, seed=8)
    np.testing.assert_array_equal(again.x, splits[0].x)
    assert not np.allclose(other.x, splits[0].x)


@pytest.mark.parametrize("change,message", [({"train_steps": 0}, "SLDSConfig.train_steps must be a positive integer"),
                                            ({"obs_noise": -0.1}, "SLDSConfig.obs_noise must be >= 0"),
                                            ({"project_dim": True}, "SLDSConfig.project_dim must be a positive")])
def test_bad_settings_name_the_field(change, message) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(SMALL, **change)
