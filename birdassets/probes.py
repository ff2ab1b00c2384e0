"""Probes on frozen embeddings: small classifiers trained per fold, all folds in one compiled call.

Inputs of :func:`fit_probe`:

* ``x`` ``[n, dim]`` embeddings (finite floats; computed in float32),
* ``y`` ``[n, classes]`` multi-hot labels (0/1; soft labels in [0, 1] are accepted),
* ``fold_of`` ``[n]`` int, the validation fold of each window: ``0 .. n_folds - 1``, or ``-1`` for
  a window that is never validated (it trains in every fold). Fold ``f`` trains on the windows
  with ``fold_of != f`` and validates on the windows with ``fold_of == f``.
* ``x_test`` ``[n_test, dim]`` held-out windows scored by every fold's model (may be absent).

How all folds train at once
---------------------------
Fold membership is a 0/1 sample weight ``weights[f, i] = (fold_of[i] != f)``. One training
function (init -> ``lax.scan`` over optimisation steps) is written for one fold and ``jax.vmap``-ed
over the leading fold axis of (PRNG key, weights); ``x`` and ``y`` are shared, not copied per
fold. The whole thing is ``jax.jit``-ed, so one compiled call trains every fold; there are no
Python loops over samples, steps or folds.

Models (pure functions over flat param dicts, no flax)
------------------------------------------------------
Every trained probe first standardises its input per feature with the mean / standard deviation
of *that fold's training windows* (``input_mean``, ``input_std``; a feature constant over the
training windows gets std 1), so no statistic leaks from validation windows. Then:

* ``linear``: LayerNorm (learned scale/bias) -> Dense(classes).
* ``mlp``: LayerNorm -> Dense(hidden) -> GELU -> Dense(classes).
* ``centroid``: no training and no standardisation. Each embedding is L2-normalised; the class
  centroid is the (re-normalised) mean of the normalised embeddings of the class's positive
  training windows; score = cosine similarity mapped to [0, 1] as ``(1 + cos) / 2``. A class
  without positive training windows in a fold gets score 0 for every window in that fold.

Scores are probabilities (sigmoid of the logits) in [0, 1].

Optimisation
------------
``optax.adamw`` (weight decay on Dense kernels only, not on biases or LayerNorm), ``steps`` steps.
``batch_size=None`` is full-batch gradient descent over the fold's training windows; with a
``batch_size`` each step draws a fresh uniformly random subset of ``batch_size`` training windows
without replacement (independently per step, there are no epochs). The loss recorded in
``train_loss[f, t]`` is the (batch) loss at step ``t`` before that step's update.

Losses
------
Both losses are the weighted mean over samples and classes,
``-sum_i w_i sum_c L_ic / (classes * sum_i w_i)``:

* :func:`bce_loss`: ``L = y log p + (1 - y) log(1 - p)``.
* :func:`asymmetric_loss` (ASL, Ridnik et al., ICCV 2021, arXiv 2009.14119): with
  ``p_m = max(p - clip, 0)`` (probability shifting for negatives),
  ``L = y (1 - p)^gamma_pos log p + (1 - y) p_m^gamma_neg log(1 - p_m)``. The reference
  implementation returns the *sum* over samples and classes; we return the weighted mean so that
  with ``gamma_neg = gamma_pos = clip = 0`` ASL equals :func:`bce_loss` exactly.

Reproducibility
---------------
Fold ``f``'s PRNG key is ``jax.random.fold_in(jax.random.PRNGKey(seed), f)``: it depends only on
the seed and the fold index, not on how many folds are trained together. It is split into an
init key and a minibatch key. Same inputs and seed -> bit-identical results on CPU.

Memory: full-batch training holds about ``folds * n * max(dim, hidden)`` float32 activations;
set ``batch_size`` for large ``n``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "DEFAULT_PROBES",
    "PROBES",
    "ProbeConfig",
    "ProbeResult",
    "asymmetric_loss",
    "bce_loss",
    "fit_probe",
]

_KINDS = ("linear", "mlp", "centroid")
_LOSSES = ("bce", "asl")
_LAYER_NORM_EPS = 1e-6
_L2_EPS = 1e-12


@dataclass(frozen=True)
class ProbeConfig:
    """One probe recipe.

    name: the name stored in the DB (e.g. ``"linear"``, ``"linear-asl"``).
    kind: ``"linear"`` | ``"mlp"`` | ``"centroid"`` (see the module docstring).
    loss: ``"bce"`` | ``"asl"`` (ignored by ``centroid``).
    hidden: mlp hidden width.
    learning_rate, weight_decay: ``optax.adamw`` parameters (decay on kernels only).
    steps: optimisation steps (full-batch or minibatch); must be >= 1 for trained probes,
        ignored by ``centroid``.
    batch_size: None = full batch; otherwise windows per step, drawn without replacement.
    asl_gamma_neg, asl_gamma_pos, asl_clip: ASL focusing parameters and probability margin.
    seed: PRNG seed for init and minibatch sampling.
    """

    name: str
    kind: Literal["linear", "mlp", "centroid"]
    loss: Literal["bce", "asl"] = "bce"
    hidden: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    steps: int = 300
    batch_size: int | None = None
    asl_gamma_neg: float = 4.0
    asl_gamma_pos: float = 0.0
    asl_clip: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        where = f"ProbeConfig {self.name!r}"
        if not self.name:
            raise ValueError("ProbeConfig.name must be a non-empty string")
        if self.kind not in _KINDS:
            raise ValueError(f"{where}: kind must be one of {_KINDS}, got {self.kind!r}")
        if self.loss not in _LOSSES:
            raise ValueError(f"{where}: loss must be one of {_LOSSES}, got {self.loss!r}")
        if self.hidden < 1:
            raise ValueError(f"{where}: hidden must be >= 1, got {self.hidden}")
        if not self.learning_rate > 0:
            raise ValueError(f"{where}: learning_rate must be > 0, got {self.learning_rate}")
        if not self.weight_decay >= 0:
            raise ValueError(f"{where}: weight_decay must be >= 0, got {self.weight_decay}")
        if self.kind != "centroid" and self.steps < 1:
            raise ValueError(f"{where}: steps must be >= 1 for a trained probe, got {self.steps}")
        if self.steps < 0:
            raise ValueError(f"{where}: steps must be >= 0, got {self.steps}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"{where}: batch_size must be None or >= 1, got {self.batch_size}")
        if not (self.asl_gamma_neg >= 0 and self.asl_gamma_pos >= 0):
            raise ValueError(
                f"{where}: ASL gammas must be >= 0, got gamma_neg={self.asl_gamma_neg}, "
                f"gamma_pos={self.asl_gamma_pos}"
            )
        if not 0 <= self.asl_clip < 1:
            raise ValueError(f"{where}: asl_clip must be in [0, 1), got {self.asl_clip}")
        if not -(2**31) <= self.seed < 2**31:
            raise ValueError(f"{where}: seed must fit in int32, got {self.seed}")


# The linear probes use learning rate 1e-2: at the ProbeConfig default 1e-3, 300 full-batch steps
# leave a linear head visibly under-trained (Adam moves each weight by at most ~lr per step),
# while the mlp (more parameters per logit) trains well at 1e-3.
PROBES: dict[str, ProbeConfig] = {
    "linear": ProbeConfig(name="linear", kind="linear", learning_rate=1e-2),
    "mlp": ProbeConfig(name="mlp", kind="mlp"),
    "centroid": ProbeConfig(name="centroid", kind="centroid", steps=0),
    "linear-asl": ProbeConfig(name="linear-asl", kind="linear", loss="asl", learning_rate=1e-2),
}
DEFAULT_PROBES: tuple[str, ...] = ("linear", "mlp", "centroid")


@dataclass(frozen=True)
class ProbeResult:
    """What :func:`fit_probe` returns.

    valid_scores: ``[n, classes]`` float32 out-of-fold probabilities: row ``i`` comes from the
        model of fold ``fold_of[i]`` (which never trained on it); NaN rows where ``fold_of == -1``.
    test_scores: ``[folds, n_test, classes]`` float32 probabilities of each fold's model on the
        test windows (``n_test`` may be 0).
    train_loss: ``[folds, steps]`` float32 loss curve (``[folds, 0]`` for ``centroid``).
    params: flat ``{name: np.ndarray}`` with a leading fold axis (``np.savez(path, **params)``):
        trained probes: ``input_mean``/``input_std`` ``[folds, dim]``, ``ln_scale``/``ln_bias``
        ``[folds, dim]``, (mlp: ``hidden_kernel`` ``[folds, dim, hidden]``, ``hidden_bias``
        ``[folds, hidden]``), ``out_kernel`` ``[folds, in, classes]``, ``out_bias``
        ``[folds, classes]``; centroid: ``centroids`` ``[folds, classes, dim]`` (unit or zero
        rows), ``positive_weight`` ``[folds, classes]`` (summed labels of training windows).
    """

    config: ProbeConfig
    valid_scores: np.ndarray
    test_scores: np.ndarray
    train_loss: np.ndarray
    params: dict


# --------------------------------------------------------------------------- losses


def _weighted_mean(per_cell: jax.Array, weights: jax.Array) -> jax.Array:
    """Weighted mean of ``[n, classes]`` cells with per-sample ``weights [n]`` -> scalar."""
    n_classes = per_cell.shape[-1]
    return jnp.sum(per_cell * weights[:, None]) / (jnp.sum(weights) * n_classes)


def bce_loss(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
    """Binary cross-entropy, weighted mean over samples and classes -> scalar.

    logits, labels: ``[n, classes]``; weights: ``[n]`` non-negative with a positive sum.
    Computed from ``log_sigmoid`` so it is finite for any finite logit.
    """
    log_p = jax.nn.log_sigmoid(logits)
    log_not_p = jax.nn.log_sigmoid(-logits)
    per_cell = labels * log_p + (1.0 - labels) * log_not_p
    return -_weighted_mean(per_cell, weights)


def asymmetric_loss(
    logits: jax.Array,
    labels: jax.Array,
    weights: jax.Array,
    gamma_neg: float = 4.0,
    gamma_pos: float = 0.0,
    clip: float = 0.05,
) -> jax.Array:
    """Asymmetric loss (Ridnik et al. 2021), weighted mean over samples and classes -> scalar.

    logits, labels: ``[n, classes]``; weights: ``[n]``. ``gamma_neg``, ``gamma_pos``, ``clip`` are
    Python floats (static). Negatives use the shifted probability ``p_m = max(p - clip, 0)``:
    ``L = y (1 - p)^gamma_pos log p + (1 - y) p_m^gamma_neg log(1 - p_m)``, loss = -weighted mean
    of ``L``. The focusing weights are differentiated through (as in the reference
    ``AsymmetricLoss`` with its default ``disable_torch_grad_focal_loss=False``).
    """
    p = jax.nn.sigmoid(logits)
    log_p = jax.nn.log_sigmoid(logits)
    if clip > 0:
        # 1 - p_m = min(1 - p + clip, 1) >= clip: the log cannot underflow.
        not_p_shifted = jnp.minimum(jax.nn.sigmoid(-logits) + clip, 1.0)
        log_not_p_shifted = jnp.log(not_p_shifted)
        p_shifted = 1.0 - not_p_shifted
    else:
        log_not_p_shifted = jax.nn.log_sigmoid(-logits)
        p_shifted = p
    positive_term = log_p
    if gamma_pos > 0:  # skipped at 0: x**0 has a NaN gradient where x == 0
        positive_term = jax.nn.sigmoid(-logits) ** gamma_pos * positive_term
    negative_term = log_not_p_shifted
    if gamma_neg > 0:
        negative_term = p_shifted**gamma_neg * negative_term
    per_cell = labels * positive_term + (1.0 - labels) * negative_term
    return -_weighted_mean(per_cell, weights)


# --------------------------------------------------------------------------- models


def _layer_norm(h: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
    """LayerNorm over the last axis of ``[n, dim]`` with learned ``scale, bias [dim]``."""
    mean = jnp.mean(h, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(h - mean), axis=-1, keepdims=True)
    return (h - mean) * jax.lax.rsqrt(var + _LAYER_NORM_EPS) * scale + bias


def _init_params(kind: str, key: jax.Array, dim: int, n_classes: int, hidden: int) -> dict:
    """Trainable params of one fold: LayerNorm at identity, lecun-normal kernels, zero biases."""
    kernel_init = jax.nn.initializers.lecun_normal()
    params = {"ln_scale": jnp.ones((dim,)), "ln_bias": jnp.zeros((dim,))}
    if kind == "mlp":
        hidden_key, out_key = jax.random.split(key)
        params["hidden_kernel"] = kernel_init(hidden_key, (dim, hidden), jnp.float32)
        params["hidden_bias"] = jnp.zeros((hidden,))
        out_in = hidden
    else:
        out_key, out_in = key, dim
    params["out_kernel"] = kernel_init(out_key, (out_in, n_classes), jnp.float32)
    params["out_bias"] = jnp.zeros((n_classes,))
    return params


def _logits(params: dict, stats: dict, x: jax.Array) -> jax.Array:
    """Logits ``[n, classes]`` of a linear or mlp probe on raw embeddings ``x [n, dim]``."""
    h = (x - stats["input_mean"]) / stats["input_std"]
    h = _layer_norm(h, params["ln_scale"], params["ln_bias"])
    if "hidden_kernel" in params:
        h = jax.nn.gelu(h @ params["hidden_kernel"] + params["hidden_bias"])
    return h @ params["out_kernel"] + params["out_bias"]


def _standardisation(x: jax.Array, weights: jax.Array) -> dict:
    """Per-feature mean/std of ``x [n, dim]`` over the windows with weight > 0 (weighted)."""
    total = jnp.sum(weights)
    mean = weights @ x / total
    var = weights @ jnp.square(x - mean) / total
    std = jnp.sqrt(var)
    return {"input_mean": mean, "input_std": jnp.where(std > 1e-6, std, 1.0)}


def _l2_normalise(x: jax.Array) -> jax.Array:
    """Rows of ``[n, dim]`` scaled to unit L2 norm (all-zero rows stay zero)."""
    norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
    return x / jnp.maximum(norm, _L2_EPS)


# --------------------------------------------------------------------------- compiled programs


def _static_part(config: ProbeConfig) -> ProbeConfig:
    """The config with the fields that do not change the compiled program neutralised."""
    hidden = config.hidden if config.kind == "mlp" else 0
    return dataclasses.replace(config, name="_", seed=0, hidden=max(hidden, 1))


def _loss_function(config: ProbeConfig) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
    if config.loss == "asl":
        return functools.partial(
            asymmetric_loss,
            gamma_neg=config.asl_gamma_neg,
            gamma_pos=config.asl_gamma_pos,
            clip=config.asl_clip,
        )
    return bce_loss


@functools.partial(jax.jit, static_argnums=1)
def _fold_keys(seed: jax.Array, n_folds: int) -> tuple[jax.Array, jax.Array]:
    """``(init_keys [F], batch_keys [F])``: fold f's key is ``fold_in(PRNGKey(seed), f)``, split."""
    root = jax.random.PRNGKey(seed)
    pairs = jax.vmap(lambda f: jax.random.split(jax.random.fold_in(root, f)))(jnp.arange(n_folds))
    return pairs[:, 0], pairs[:, 1]


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _initial_params(init_keys: jax.Array, kind: str, dim: int, n_classes: int, hidden: int):
    """Trainable params stacked over folds, ``[F, ...]`` per leaf, from ``init_keys [F]``.

    Kept out of the training program so that configs sharing kind and shapes share its compile.
    """
    return jax.vmap(lambda key: _init_params(kind, key, dim, n_classes, hidden))(init_keys)


@functools.lru_cache(maxsize=32)
def _compiled_trainer(config: ProbeConfig) -> Callable:
    """jit(vmap(train one fold)).

    ``(params [F, ...], batch_keys [F], weights [F, n], x [n, dim], y [n, classes])`` ->
    ``(trained params [F, ...], standardisation stats [F, dim], loss [F, steps])``.
    """
    loss_of = _loss_function(config)
    decay_mask = lambda params: {name: name.endswith("kernel") for name in params}  # noqa: E731
    optimizer = optax.adamw(
        config.learning_rate, weight_decay=config.weight_decay, mask=decay_mask
    )

    def train_one_fold(params, batch_key, weights, x, y):
        n = x.shape[0]
        stats = _standardisation(x, weights)
        opt_state = optimizer.init(params)

        def objective(params, xb, yb, wb):
            return loss_of(_logits(params, stats, xb), yb, wb)

        def step(carry, step_key):
            params, opt_state = carry
            if config.batch_size is None:
                xb, yb, wb = x, y, weights
            else:
                # A uniformly random subset of training windows: top-k of uniform keys, with
                # non-training windows pushed below every training window (weight 0 if chosen).
                priority = jnp.where(weights > 0, jax.random.uniform(step_key, (n,)), -1.0)
                _, idx = jax.lax.top_k(priority, min(config.batch_size, n))
                xb, yb, wb = x[idx], y[idx], weights[idx]
            loss, grads = jax.value_and_grad(objective)(params, xb, yb, wb)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        if config.batch_size is None:  # full batch: no per-step randomness to compile
            step_keys = None
        else:
            step_keys = jax.random.split(batch_key, config.steps)
        carry = (params, opt_state)
        (params, _), losses = jax.lax.scan(step, carry, step_keys, length=config.steps)
        return params, stats, losses

    return jax.jit(jax.vmap(train_one_fold, in_axes=(0, 0, 0, None, None)))


@jax.jit
def _trained_scores(params, stats, x, fold_of, x_test):
    """Out-of-fold ``[n, classes]`` (NaN where fold_of == -1) and test ``[F, n_test, classes]``.

    The out-of-fold pass loops over folds inside the program (``fori_loop``) so that it never
    holds more than one fold's ``[n, classes]`` scores besides the result.
    """
    n_folds, n_classes = params["out_bias"].shape

    def one_fold(f, valid):
        fold_params = jax.tree_util.tree_map(lambda leaf: leaf[f], params)
        fold_stats = jax.tree_util.tree_map(lambda leaf: leaf[f], stats)
        probs = jax.nn.sigmoid(_logits(fold_params, fold_stats, x))
        return jnp.where((fold_of == f)[:, None], probs, valid)

    valid = jnp.full((x.shape[0], n_classes), jnp.nan, dtype=jnp.float32)
    valid = jax.lax.fori_loop(0, n_folds, one_fold, valid)
    test = jax.vmap(lambda p, s: jax.nn.sigmoid(_logits(p, s, x_test)))(params, stats)
    return valid, test


def _centroid_scores(centroids, has_positive, x):
    """``(1 + cos) / 2`` of ``x [n, dim]`` to ``centroids [classes, dim]``; 0 without positives."""
    cosine = _l2_normalise(x) @ centroids.T
    return jnp.where(has_positive, (1.0 + cosine) / 2.0, 0.0)


@jax.jit
def _fit_centroids(weights, x, y, fold_of, x_test):
    """All folds' centroids ``[F, classes, dim]``, positive weights, valid and test scores."""
    x_unit = _l2_normalise(x)

    def one_fold(w):
        positive_weight = w @ y  # [classes]
        sums = (y * w[:, None]).T @ x_unit  # [classes, dim]
        return _l2_normalise(sums), positive_weight

    centroids, positive_weight = jax.vmap(one_fold)(weights)
    has_positive = positive_weight > 0

    def valid_one_fold(f, valid):
        probs = _centroid_scores(centroids[f], has_positive[f], x)
        return jnp.where((fold_of == f)[:, None], probs, valid)

    valid = jnp.full((x.shape[0], y.shape[1]), jnp.nan, dtype=jnp.float32)
    valid = jax.lax.fori_loop(0, weights.shape[0], valid_one_fold, valid)
    test = jax.vmap(_centroid_scores, in_axes=(0, 0, None))(centroids, has_positive, x_test)
    return centroids, positive_weight, valid, test


def predict_probe(params: dict, x: np.ndarray) -> np.ndarray:
    """Probabilities of every fold's probe on new embeddings: ``[folds, n, classes]`` float32.

    ``params`` as :attr:`ProbeResult.params` (leading fold axis): linear/mlp probes (``out_kernel`` ...) or
    centroid probes (``centroids``, ``positive_weight``). ``x``: ``[n, dim]`` raw embeddings.
    """
    params = {name: jnp.asarray(value) for name, value in params.items()}
    return np.asarray(probe_probabilities(params, jnp.asarray(x, jnp.float32)), dtype=np.float32)


def probe_probabilities(params: dict, x: jax.Array) -> jax.Array:
    """:func:`predict_probe` as a traceable JAX function (jit, jax2tf): ``[folds, n, classes]``."""
    if "centroids" in params:
        return jax.vmap(_centroid_scores, in_axes=(0, 0, None))(params["centroids"], params["positive_weight"] > 0, x)
    stats = {name: params[name] for name in ("input_mean", "input_std")}
    trained = {name: value for name, value in params.items() if name not in stats}
    return jax.vmap(lambda p, s: jax.nn.sigmoid(_logits(p, s, x)))(trained, stats)


# --------------------------------------------------------------------------- validation


def _check_finite_matrix(array: object, name: str) -> np.ndarray:
    """``array`` as 2-D float32; ValueError naming ``name`` unless 2-D, numeric and finite."""
    matrix = np.asarray(array)
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {matrix.shape}")
    if not (np.issubdtype(matrix.dtype, np.floating) or np.issubdtype(matrix.dtype, np.integer)):
        raise ValueError(f"{name} must hold real numbers, got dtype {matrix.dtype}")
    matrix = matrix.astype(np.float32)
    bad = ~np.isfinite(matrix)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        kind = "NaN" if np.isnan(matrix[row, col]) else "infinite"
        raise ValueError(
            f"{name} contains {int(bad.sum())} NaN/infinite value(s), first ({kind}) at "
            f"[row {row}, column {col}]"
        )
    return matrix


def _check_inputs(
    config: ProbeConfig,
    x: object,
    y: object,
    fold_of: object,
    x_test: object | None,
    n_folds: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Checked ``(x, y, fold_of, x_test, n_folds)``; raises ValueError naming the problem."""
    where = f"fit_probe({config.name!r})"
    x = _check_finite_matrix(x, f"{where}: x [n, dim]")
    y = _check_finite_matrix(y, f"{where}: y [n, classes]")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{where}: x and y disagree on the number of windows: x {x.shape} vs y {y.shape}"
        )
    if x.shape[0] == 0 or x.shape[1] == 0 or y.shape[1] == 0:
        raise ValueError(f"{where}: empty input: x {x.shape}, y {y.shape}")
    if ((y < 0) | (y > 1)).any():
        row, col = np.argwhere((y < 0) | (y > 1))[0]
        raise ValueError(f"{where}: y must lie in [0, 1], got {y[row, col]} at [{row}, {col}]")
    folds = np.asarray(fold_of)
    if folds.ndim != 1 or folds.shape[0] != x.shape[0]:
        raise ValueError(
            f"{where}: fold_of must be 1-D with one entry per window ({x.shape[0]}), "
            f"got shape {folds.shape}"
        )
    if not np.issubdtype(folds.dtype, np.integer):
        raise ValueError(f"{where}: fold_of must hold integers, got dtype {folds.dtype}")
    if (folds < -1).any():
        raise ValueError(f"{where}: fold_of values must be >= -1, got {folds.min()}")
    largest = int(folds.max())
    if n_folds is None:
        if largest < 0:
            raise ValueError(f"{where}: fold_of is all -1 (no validation fold); pass n_folds")
        n_folds = largest + 1
    elif n_folds < 1 or largest >= n_folds:
        raise ValueError(
            f"{where}: n_folds={n_folds} must be >= 1 and > every fold_of value (max {largest})"
        )
    train_count = np.array([(folds != f).sum() for f in range(n_folds)])
    if (train_count == 0).any():
        empty = np.flatnonzero(train_count == 0).tolist()
        raise ValueError(
            f"{where}: fold(s) {empty} have no training windows (every window validates there)"
        )
    if x_test is None:
        x_test = np.zeros((0, x.shape[1]), dtype=np.float32)
    else:
        x_test = _check_finite_matrix(x_test, f"{where}: x_test [n_test, dim]")
        if x_test.shape[1] != x.shape[1]:
            raise ValueError(
                f"{where}: x_test has dim {x_test.shape[1]} but x has dim {x.shape[1]}"
            )
    return x, y, folds.astype(np.int32), x_test, n_folds


# --------------------------------------------------------------------------- entry point


def fit_probe(
    config: ProbeConfig,
    x: np.ndarray,
    y: np.ndarray,
    fold_of: np.ndarray,
    x_test: np.ndarray | None = None,
    n_folds: int | None = None,
) -> ProbeResult:
    """Train ``config`` on every fold at once; out-of-fold and test scores.

    x: ``[n, dim]`` embeddings; y: ``[n, classes]`` multi-hot; fold_of: ``[n]`` int, the
    validation fold of each window (``-1``: never validated, trains in every fold);
    x_test: ``[n_test, dim]`` or None; n_folds: defaults to ``max(fold_of) + 1`` (a larger value
    adds folds without validation windows, which train on everything).
    Raises ValueError on shape mismatches, non-finite inputs, labels outside [0, 1], bad
    ``fold_of`` values, or a fold without training windows.
    """
    x, y, folds, x_test, n_folds = _check_inputs(config, x, y, fold_of, x_test, n_folds)
    weights = (folds[None, :] != np.arange(n_folds)[:, None]).astype(np.float32)  # [F, n]

    if config.kind == "centroid":
        centroids, positive_weight, valid, test = _fit_centroids(weights, x, y, folds, x_test)
        params = {"centroids": centroids, "positive_weight": positive_weight}
        train_loss = np.zeros((n_folds, 0), dtype=np.float32)
    else:
        init_keys, batch_keys = _fold_keys(config.seed, n_folds)
        hidden = config.hidden if config.kind == "mlp" else 0
        initial = _initial_params(init_keys, config.kind, x.shape[1], y.shape[1], hidden)
        trainer = _compiled_trainer(_static_part(config))
        trained, stats, train_loss = trainer(initial, batch_keys, weights, x, y)
        valid, test = _trained_scores(trained, stats, x, folds, x_test)
        params = {**stats, **trained}

    return ProbeResult(
        config=config,
        valid_scores=np.asarray(valid, dtype=np.float32),
        test_scores=np.asarray(test, dtype=np.float32),
        train_loss=np.asarray(train_loss, dtype=np.float32),
        params={name: np.asarray(value) for name, value in params.items()},
    )
