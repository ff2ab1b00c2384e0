"""Tests that kill mutants of ``probes.py`` that survived the mutation run (issue #10).

Each test names the mutant it kills; expected values are written out by hand.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from birdassets.probes import ProbeConfig, _check_inputs, _loss_function, _standardisation, asymmetric_loss


def test_asymmetric_loss_defaults_are_the_papers():
    """Kills ``asymmetric_loss``: default ``gamma_neg`` 4 -> 5 (Ridnik et al. 2021: gamma_neg 4, gamma_pos 0, clip 0.05).

    Two cells with logit 0 (p = 0.5): a positive, -ln 0.5; a negative, shifted p_m = 0.45, -(0.45^4) ln(0.55).
    """
    loss = asymmetric_loss(jnp.zeros((1, 2)), jnp.array([[1.0, 0.0]]), jnp.ones(1))
    expected = (math.log(2.0) + 0.45**4 * -math.log(0.55)) / 2  # = 0.35883...
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_loss_named_in_the_config_is_the_loss_used():
    """Kills ``_loss_function``: ``!=`` for ``==`` (ASL for ``loss="bce"`` and BCE for ``"asl"``).

    Logits 0 for a positive and a negative cell: BCE = ln 2 = 0.693..., ASL = 0.358... (previous test).
    """
    logits, labels, weights = jnp.zeros((1, 2)), jnp.array([[1.0, 0.0]]), jnp.ones(1)
    bce = _loss_function(ProbeConfig(name="b", kind="linear", loss="bce"))(logits, labels, weights)
    asl = _loss_function(ProbeConfig(name="a", kind="linear", loss="asl"))(logits, labels, weights)
    assert float(bce) == pytest.approx(math.log(2.0), rel=1e-5)
    assert float(asl) == pytest.approx((math.log(2.0) + 0.45**4 * -math.log(0.55)) / 2, rel=1e-5)


def test_standardisation_keeps_small_but_real_spread():
    """Kills ``_standardisation``: the constant-feature cut-off 1e-6 raised to 1.000001 (a std of 0.5 became 1).

    Feature 0 takes 1 and 2 (mean 1.5, std 0.5); feature 1 is constant 3 (std 0 -> 1, no division by zero); the
    zero-weight third window (feature 0 = 100) is ignored.
    """
    x = jnp.array([[1.0, 3.0], [2.0, 3.0], [100.0, 3.0]])
    stats = _standardisation(x, jnp.array([1.0, 1.0, 0.0]))
    assert stats["input_mean"].tolist() == pytest.approx([1.5, 3.0])
    assert stats["input_std"].tolist() == pytest.approx([0.5, 1.0])


def test_seeds_up_to_int32_max_are_accepted():
    """Kills ``ProbeConfig.__post_init__``: bound ``2 * 31`` (62) for ``2**31``."""
    assert ProbeConfig(name="p", kind="linear", seed=2**31 - 1).seed == 2_147_483_647
    with pytest.raises(ValueError, match=r"^ProbeConfig 'p': seed must fit in int32, got 2147483648$"):
        ProbeConfig(name="p", kind="linear", seed=2**31)


def test_config_errors_name_the_probe():
    """Kills ``ProbeConfig.__post_init__``: ``where`` (the probe's name in every message) replaced by None."""
    with pytest.raises(ValueError, match=r"^ProbeConfig 'p': hidden must be >= 1, got 0$"):
        ProbeConfig(name="p", kind="mlp", hidden=0)


def test_one_dimensional_embeddings_are_accepted():
    """Kills ``_check_inputs``: ``x.shape[1] == 1`` refused as empty input."""
    x, y = np.array([[0.5], [1.5], [2.5]], np.float32), np.array([[1.0], [0.0], [1.0]], np.float32)
    checked_x, _, folds, x_test, n_folds = _check_inputs(ProbeConfig(name="p", kind="linear"), x, y, [0, 1, 1], None, None)
    assert checked_x.shape == (3, 1) and x_test.shape == (0, 1)
    assert folds.tolist() == [0, 1, 1] and n_folds == 2


def test_input_errors_name_the_probe():
    """Kills ``_check_inputs``: ``where`` (``fit_probe('p')`` in every message) replaced by None."""
    x, y = np.zeros((2, 3), np.float32), np.array([[2.0], [0.0]], np.float32)
    with pytest.raises(ValueError, match=r"^fit_probe\('p'\): y must lie in \[0, 1\], got 2.0 at \[0, 0\]$"):
        _check_inputs(ProbeConfig(name="p", kind="linear"), x, y, [0, 1], None, None)
