"""TiDHy written out from the paper's equations, for the tests: parameters by name and the forward pieces."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from birdassets.models.tidhy.network import TiDHy, TiDHyConfig

SMALL = TiDHyConfig(input_dim=6, r_dim=4, r2_dim=3, mix_dim=5, hyper_hidden=7)


def parameters(model: TiDHy) -> dict[str, np.ndarray]:
    """The model's parameters as float64 arrays, by the names of the equations (kernels are [in, out])."""
    h = model.hypernet
    take = lambda p: np.asarray(p[...], np.float64)  # noqa: E731
    return {"D": take(model.decoder.layers[0].kernel), "d": take(model.decoder.layers[0].bias),
            "T": take(model.temporal), "W1": take(h.first.kernel), "b1": take(h.first.bias),
            "g": take(h.norm.scale), "beta": take(h.norm.bias), "W2": take(h.middle.kernel),
            "b2": take(h.middle.bias), "W3": take(h.last.kernel), "b3": take(h.last.bias)}


def hypernet(p: dict, r2, squash: bool = True):
    """w = ReLU(L3 L2 ELU(LN(L1 tanh(r2)))) (no tanh unless squash), LayerNorm epsilon 1e-6;
    r2 [..., r2_dim] -> [..., mix_dim]."""
    h = (jnp.tanh(r2) if squash else r2) @ p["W1"] + p["b1"]
    mean, var = h.mean(axis=-1, keepdims=True), h.var(axis=-1, keepdims=True)
    h = (h - mean) / jnp.sqrt(var + 1e-6) * p["g"] + p["beta"]
    h = jnp.where(h > 0, h, jnp.expm1(h))
    return jnp.maximum((h @ p["W2"] + p["b2"]) @ p["W3"] + p["b3"], 0.0)


def predict(p: dict, r_prev, r2):
    """r̄ = (Σ_m w_m T_m) r_prev for one step: r_prev [r_dim], r2 [r2_dim] -> [r_dim]."""
    return jnp.tensordot(hypernet(p, r2), p["T"], axes=1) @ r_prev
