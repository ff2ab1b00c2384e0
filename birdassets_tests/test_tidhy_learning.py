"""TiDHy's M-step: the loss terms against the equations, the regularisers by hand, per-group learning rates."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from birdassets.models.tidhy.inference import InferenceConfig, Latents
from birdassets.models.tidhy.learning import new_optimizer, train_step
from birdassets.models.tidhy.mstep import LearningConfig, cos_reg, loss_terms, orth_r2
from birdassets.models.tidhy.network import TiDHy, TiDHyConfig
from birdassets_tests.tidhy_reference import SMALL, parameters, predict


def test_cos_reg_is_the_similarity_between_the_dynamics_matrices_by_hand() -> None:
    """vec T = (1,0,0,0), (1,1,0,0), (-1,0,0,1): |cos| = 1/√2, 1/√2, 1/2 between pairs; sum / M (= 3)."""
    model = TiDHy(TiDHyConfig(input_dim=2, r_dim=2, r2_dim=2, mix_dim=3, hyper_hidden=4), rngs=nnx.Rngs(0))
    model.temporal[...] = jnp.array([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]], [[-1.0, 0.0], [0.0, 1.0]]])
    assert float(cos_reg(model)) == pytest.approx((2 / math.sqrt(2) + 0.5) / 3, abs=1e-6)


def test_orth_r2_is_over_the_hypernetworks_input_directions_by_hand() -> None:
    """First kernel rows (one per r2 input) (1,0), (1,1), (0,2): |cos| = 1/√2, 0, 1/√2; sum / r2_dim (= 3)."""
    model = TiDHy(TiDHyConfig(input_dim=2, r_dim=2, r2_dim=3, mix_dim=2, hyper_hidden=2), rngs=nnx.Rngs(0))
    model.hypernet.first.kernel[...] = jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    assert float(orth_r2(model)) == pytest.approx((2 / math.sqrt(2)) / 3, abs=1e-6)


def test_loss_terms_equal_the_equations_on_given_latents() -> None:
    model = TiDHy(SMALL, rngs=nnx.Rngs(1))
    rng = np.random.default_rng(0)
    x, r, r2 = (rng.normal(size=(2, 5, n)) for n in (SMALL.input_dim, SMALL.r_dim, SMALL.r2_dim))
    config = LearningConfig(temp_weight=1.5)
    got = loss_terms(model, jnp.asarray(x, jnp.float32), Latents(jnp.asarray(r, jnp.float32),
                                                                  jnp.asarray(r2, jnp.float32), None), config)
    p = parameters(model)
    decode = lambda z: z @ p["D"] + p["d"]  # noqa: E731
    rhat = rbar = temporal = 0.0
    for b in range(2):
        rhat += sum(np.sum((decode(r[b, t]) - x[b, t]) ** 2) for t in range(5)) / 2
        for t in range(1, 5):
            r_bar = np.asarray(predict(p, r[b, t - 1], r2[b, t]))
            rbar += np.sum((decode(r_bar) - x[b, t]) ** 2) / 2
            temporal += 1.5 * np.sum((r[b, t] - r_bar) ** 2) / 2
    assert float(got["spatial_rhat"]) == pytest.approx(rhat, rel=1e-5)
    assert float(got["spatial_rbar"]) == pytest.approx(rbar, rel=1e-5)
    assert float(got["temporal"]) == pytest.approx(temporal, rel=1e-5)
    expected = rhat + rbar + temporal + 5.0 * float(got["cos_reg"]) + 5.0 * float(got["orth_r2"])
    assert float(got["total"]) == pytest.approx(expected, rel=1e-5)


def test_each_parameter_group_moves_at_its_own_learning_rate() -> None:
    """Adam's first step moves every parameter with a nonzero gradient by exactly its group's rate."""
    model = TiDHy(SMALL, rngs=nnx.Rngs(2))
    before = parameters(model)
    rates = {"decoder": 0.03, "dynamics": 0.02, "hypernet": 0.001}
    config = LearningConfig(lr_decoder=rates["decoder"], lr_dynamics=rates["dynamics"],
                            lr_hypernet=rates["hypernet"], weight_decay=0.0)
    x = jnp.asarray(np.random.default_rng(3).normal(size=(4, 6, SMALL.input_dim)), jnp.float32)
    train_step(model, new_optimizer(model, config), x, InferenceConfig(max_iter=20), config)
    after = parameters(model)
    groups = {"D": "decoder", "d": "decoder", "T": "dynamics", "W1": "hypernet", "W3": "hypernet"}
    for name, group in groups.items():
        moved = np.abs(after[name] - before[name])
        assert np.median(moved) == pytest.approx(rates[group], rel=1e-3), name


def test_training_steps_lower_the_loss_of_a_sequence_batch() -> None:
    model = TiDHy(SMALL, rngs=nnx.Rngs(4))
    t = np.arange(30)
    x = np.stack([np.sin(0.3 * t + k) for k in range(SMALL.input_dim)], -1)[None].repeat(3, 0) * 0.5
    config = LearningConfig()
    opt = new_optimizer(model, config)
    losses = [float(train_step(model, opt, jnp.asarray(x, jnp.float32), InferenceConfig(max_iter=50), config)
                    [0]["total"]) for _ in range(30)]
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0]


def test_nonlinear_decoder_is_linear_layernorm_elu_linear_linear() -> None:
    model = TiDHy(TiDHyConfig(input_dim=3, r_dim=2, r2_dim=2, mix_dim=2, hyper_hidden=4, nonlinear_decoder=True,
                              decoder_hidden=5), rngs=nnx.Rngs(0))
    first, norm, middle, last = ({k: np.asarray(v[...], np.float64) for k, v in vars(layer).items()
                                  if hasattr(v, "value")} for layer in model.decoder.layers)
    r = np.array([0.3, -1.2])
    h = r @ first["kernel"] + first["bias"]
    h = (h - h.mean()) / np.sqrt(h.var() + 1e-6) * norm["scale"] + norm["bias"]
    h = np.where(h > 0, h, np.expm1(h))
    expected = (h @ middle["kernel"] + middle["bias"]) @ last["kernel"] + last["bias"]
    np.testing.assert_allclose(np.asarray(model.decode(jnp.asarray(r, jnp.float32))), expected, rtol=1e-5, atol=1e-6)
