"""TiDHy's inference (E-step) against a plain-Python loop written from the equations, and its stopping rules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from birdassets.models.tidhy.inference import InferenceConfig, infer_batch, soft_threshold
from birdassets.models.tidhy.network import TiDHy
from birdassets_tests.tidhy_reference import SMALL, hypernet, parameters

def reference_energy(p, r, r2, x, r_prev, c: InferenceConfig):
    """E(r, r2) written out: MSE decoder D r + d, w = ReLU(L3 L2 ELU(LN(L1 r2))), r̄ = (Σ w_m T_m) r_prev."""
    w = hypernet(p, r2)
    r_bar = jnp.tensordot(w, p["T"], axes=1) @ r_prev
    return (jnp.sum((r @ p["D"] + p["d"] - x) ** 2) + c.temp_weight * jnp.sum((r - r_bar) ** 2)
            + c.l1_w * jnp.sum(jnp.abs(w)) + c.l1_r2 * jnp.sum(jnp.abs(r2)) + c.l1_r * jnp.sum(jnp.abs(r)))


def reference_inference(p, x: np.ndarray, c: InferenceConfig):
    """One sequence [T, input_dim], one Python iteration at a time: Nesterov SGD, lr_r (at most 1.3 / L, L = 2
    (largest singular value of D squared + temp_weight)) halved every max_iter//10, lr_r2 divided by 1 + ‖r_prev‖²."""
    grad = jax.grad(reference_energy, argnums=(1, 2))
    shrink = lambda v, lam: np.sign(v) * np.maximum(np.abs(v) - lam, 0.0)  # noqa: E731
    change = lambda new, old: np.linalg.norm(new - old) / (np.linalg.norm(old) + 1e-16)  # noqa: E731
    r_prev, r2 = np.zeros(SMALL.r_dim), np.zeros(SMALL.r2_dim)
    lr_r0 = min(c.lr_r, 1.3 / (2.0 * (np.linalg.svd(p["D"], compute_uv=False)[0] ** 2 + c.temp_weight)))
    rs, r2s, counts = [], [], []
    for x_t in x:
        r, v_r, v_r2 = np.zeros(SMALL.r_dim), np.zeros(SMALL.r_dim), np.zeros(SMALL.r2_dim)
        for i in range(c.max_iter):
            g_r, g_r2 = (np.asarray(g) for g in grad(p, r, r2, x_t, r_prev, c))
            v_r, v_r2 = 0.9 * v_r + g_r, 0.9 * v_r2 + g_r2
            lr_r = lr_r0 * 0.5 ** (i // (c.max_iter // 10))
            new_r = shrink(r - lr_r * (g_r + 0.9 * v_r), c.shrink_r)
            new_r2 = shrink(r2 - c.lr_r2 / (1 + r_prev @ r_prev) * (g_r2 + 0.9 * v_r2), c.shrink_r2)
            done = change(new_r, r) < c.tol and change(new_r2, r2) < c.tol
            r, r2 = new_r, new_r2
            if done:
                break
        rs.append(r), r2s.append(r2), counts.append(i + 1)
        r_prev = r
    return np.array(rs), np.array(r2s), np.array(counts)


@pytest.mark.parametrize("lr_r", [0.05, 1.0], ids=["rate-as-set", "rate-capped-by-curvature"])
def test_inference_equals_a_plain_python_loop_written_from_the_equations(lr_r: float) -> None:
    jax.config.update("jax_enable_x64", True)
    try:
        model = TiDHy(SMALL, rngs=nnx.Rngs(3))
        x = np.random.default_rng(0).normal(size=(2, 5, SMALL.input_dim)) * 0.5
        config = InferenceConfig(lr_r=lr_r, lr_r2=0.1, max_iter=40, tol=5e-3, l1_w=0.01, l1_r2=0.02, l1_r=0.01,
                                 shrink_r=1e-3, shrink_r2=1e-3)
        model64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), model)
        got = infer_batch(model64, jnp.asarray(x), config)
        p = parameters(model)
        for b in range(2):
            r, r2, counts = reference_inference(p, x[b], config)
            np.testing.assert_array_equal(np.asarray(got.iterations[b]), counts)
            np.testing.assert_allclose(np.asarray(got.r[b]), r, atol=1e-5)
            np.testing.assert_allclose(np.asarray(got.r2[b]), r2, atol=1e-5)
        counts = np.asarray(got.iterations)
        assert counts.min() < config.max_iter  # the tolerance stopped some steps
        if lr_r == 0.05:
            assert counts.max() == config.max_iter  # and the cap others
    finally:
        jax.config.update("jax_enable_x64", False)


def test_soft_threshold_shrinks_towards_zero_by_the_level_and_zeroes_what_is_within_it() -> None:
    got = soft_threshold(jnp.array([-2.0, -0.3, 0.0, 0.2, 0.5, 3.0]), 0.5)
    np.testing.assert_allclose(np.asarray(got), [-1.5, 0.0, 0.0, 0.0, 0.0, 2.5])


@pytest.mark.parametrize("tol,at_cap", [(1e-9, True), (0.2, False)])
def test_a_step_stops_at_the_tolerance_or_else_at_max_iter(tol: float, at_cap: bool) -> None:
    model = TiDHy(SMALL, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 4, SMALL.input_dim)), jnp.float32)
    iterations = np.asarray(infer_batch(model, x, InferenceConfig(max_iter=25, tol=tol)).iterations)
    assert iterations.shape == (3, 4)
    if at_cap:
        assert (iterations == 25).all()
    else:
        assert (iterations < 25).all() and (iterations >= 2).all()


def test_inferred_latents_explain_the_observation_better_than_zero() -> None:
    """Inference lowers the reconstruction error of every step below that of r = 0 (the starting point)."""
    model = TiDHy(SMALL, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 6, SMALL.input_dim)), jnp.float32)
    latents = infer_batch(model, x, InferenceConfig(max_iter=100, tol=1e-4))
    error = np.sum((np.asarray(model.decode(latents.r)) - np.asarray(x)) ** 2, axis=-1)
    at_zero = np.sum((np.asarray(model.decode(jnp.zeros_like(latents.r))) - np.asarray(x)) ** 2, axis=-1)
    assert (error < at_zero).all()
