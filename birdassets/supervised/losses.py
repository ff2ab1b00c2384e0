"""Multi-label losses on logits for the supervised models: BCE and sigmoid focal loss, with class weights.

Per window and class, with logit ``x``, target ``t`` in [0, 1] (mixup makes it soft) and ``p = sigmoid(x)``:

- BCE: ``bce = max(x, 0) - x * t + log(1 + exp(-|x|))`` (the stable form of ``-t log p - (1 - t) log(1 - p)``),
  equal to ``keras.losses.BinaryCrossentropy(from_logits=True)``.
- sigmoid focal loss (Lin et al. 2017, "Focal Loss for Dense Object Detection"; torchvision's
  ``sigmoid_focal_loss``): ``alpha_t * (1 - p_t) ** gamma * bce`` with ``p_t = p t + (1 - p)(1 - t)`` and
  ``alpha_t = alpha t + (1 - alpha)(1 - t)``; for a 0/1 target that is ``-alpha_t (1 - p_t)^gamma log(p_t)``.
  ``1 - p_t = t sigmoid(-x) + (1 - t) sigmoid(x)`` is computed from the logit so it does not round to 0.

Each class column is multiplied by its weight, averaged over classes (one loss per window), then averaged over
the batch (``sum_over_batch_size``). Everything is computed in float32 whatever the dtype policy (mixed
precision casts the inputs up).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from birdassets.supervised.config import LOSSES, SupervisedConfig

LOSS_DTYPE = "float32"


def _checked_weights(class_weights: object) -> list[float] | None:
    """Class weights as a list of positive finite floats (None stays None)."""
    if class_weights is None:
        return None
    weights = np.asarray(class_weights, dtype=np.float64)
    if weights.ndim != 1 or weights.size == 0 or not np.all(np.isfinite(weights)) or np.any(weights <= 0):
        raise ValueError(f"class_weights must be a non-empty 1-D array of positive finite numbers, got {weights!r}")
    return [float(w) for w in weights]


def binary_crossentropy_from_logits(targets, logits):
    """Elementwise BCE ``[batch, classes]`` of float32 ``targets`` in [0, 1] and ``logits`` (stable form)."""
    return ops.relu(logits) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits)))


def sigmoid_focal_loss(targets, logits, gamma: float, alpha: float):
    """Elementwise sigmoid focal loss ``[batch, classes]`` (module docstring)."""
    alpha_t = alpha * targets + (1.0 - alpha) * (1.0 - targets)
    loss = alpha_t * binary_crossentropy_from_logits(targets, logits)
    if gamma == 0:
        return loss
    one_minus_p_t = targets * ops.sigmoid(-logits) + (1.0 - targets) * ops.sigmoid(logits)
    # Floor at the smallest normal float32 so gamma < 1 cannot produce an infinite gradient at 0.
    one_minus_p_t = ops.maximum(one_minus_p_t, np.finfo(np.float32).tiny)
    return loss * ops.power(one_minus_p_t, gamma)


@keras.saving.register_keras_serializable(package="birdassets")
class MultiLabelLoss(keras.losses.Loss):
    """BCE (``kind="bce"``) or sigmoid focal loss (``kind="focal"``) on logits, optionally class-weighted.

    ``call(y_true [batch, classes], y_pred logits [batch, classes]) -> [batch]``: the mean over classes of the
    (weighted) elementwise loss; Keras then averages over the batch.
    """

    def __init__(self, kind: str = "bce", gamma: float = 2.0, alpha: float = 0.25,
                 class_weights: list[float] | None = None, name: str | None = None,
                 reduction: str = "sum_over_batch_size"):
        if kind not in LOSSES:
            raise ValueError(f"loss kind must be one of {LOSSES}, got {kind!r}")
        super().__init__(name=name or kind, reduction=reduction, dtype=LOSS_DTYPE)
        self.kind = kind
        self.gamma = float(gamma)
        self.alpha = float(alpha)
        self.class_weights = _checked_weights(class_weights)

    def call(self, y_true, y_pred):
        targets = ops.cast(y_true, LOSS_DTYPE)
        logits = ops.cast(y_pred, LOSS_DTYPE)
        if self.kind == "focal":
            per_class = sigmoid_focal_loss(targets, logits, self.gamma, self.alpha)
        else:
            per_class = binary_crossentropy_from_logits(targets, logits)
        if self.class_weights is not None:
            if len(self.class_weights) != per_class.shape[-1]:
                raise ValueError(f"{len(self.class_weights)} class weights for {per_class.shape[-1]} classes")
            per_class = per_class * ops.convert_to_tensor(self.class_weights, dtype=LOSS_DTYPE)
        return ops.mean(per_class, axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "kind": self.kind, "gamma": self.gamma, "alpha": self.alpha,
                "class_weights": self.class_weights}


def make_loss(config: SupervisedConfig, class_weights: np.ndarray | None) -> MultiLabelLoss:
    """The training loss of ``config`` (``loss``, ``focal_gamma``, ``focal_alpha``) on logits.

    ``class_weights`` ``[classes]`` (e.g. :func:`class_weights_from_counts`) multiply each class column; None:
    unweighted. The caller decides whether to pass them (``config.class_weights``).
    """
    return MultiLabelLoss(kind=config.loss, gamma=config.focal_gamma, alpha=config.focal_alpha,
                          class_weights=class_weights)


def class_weights_from_counts(labels: np.ndarray) -> np.ndarray:
    """Per-class weights ``[classes]`` float64 from training labels ``[windows, classes]`` (0/1).

    ``w_c = n / (C * n_c)`` (``n`` windows, ``C`` classes, ``n_c`` positives of class c), rescaled so the
    classes with ``n_c > 0`` have mean weight 1; classes with no positive get 1.0.
    """
    truth = np.asarray(labels)
    if truth.ndim != 2:
        raise ValueError(f"labels must be 2-D [windows, classes], got shape {truth.shape}")
    if not np.isin(truth, (0, 1)).all():
        raise ValueError("labels must contain only 0 and 1")
    n_windows, n_classes = truth.shape
    counts = truth.sum(axis=0, dtype=np.float64)
    present = counts > 0
    weights = np.ones(n_classes, dtype=np.float64)
    if present.any():
        raw = n_windows / (n_classes * counts[present])
        weights[present] = raw / raw.mean()
    return weights
