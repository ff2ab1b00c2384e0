"""Streaming BirdCLEF 2024/25 class-wise ROC-AUC as a Keras 3 metric, exactly the core metric.

``ClassWiseAUC`` keeps every row it is shown (truth and score) in two fixed-size Keras variables of
``capacity`` rows, written at a running row count with ``keras.ops.slice_update``, so ``update_state`` runs
inside Keras's jit-compiled train and test steps. ``result()`` hands the filled rows to
:func:`birdassets.metrics.class_wise_auc` in float64: one definition of the metric, so the two agree exactly
(macro ROC-AUC over the classes with >= 1 positive and >= 1 negative, midranks for ties).

Where Keras calls ``result()`` (Keras 3.15, JAX backend, ``keras/src/backend/jax/trainer.py``):

- inside the compiled step (``compute_metrics`` -> ``get_metrics_result``) for the per-batch logs: the
  variables are JAX tracers there, and ``result()`` returns NaN ("not computed here"; sorting the whole
  buffer every step would cost more than the step). ``train_on_batch`` / ``test_on_batch`` return these logs.
- eagerly after ``jax_state_sync()`` at the end of each ``fit`` epoch, of ``evaluate`` and of ``fit``'s
  validation (``_get_metrics_result_or_logs``): the exact value. The History, callbacks and the dict that
  ``evaluate(return_dict=True)`` returns therefore hold exact values.
"""

from __future__ import annotations

import jax
import keras
import numpy as np
from keras import ops

from birdassets.metrics import class_wise_auc

SCORE_DTYPE = "float32"
"""Dtype of the truth and score buffers (model outputs are float32 logits or probabilities)."""


def _is_traced(value: object) -> bool:
    """True inside a JAX transformation (jit / grad), where a value has no concrete content."""
    return isinstance(value, jax.core.Tracer)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"ClassWiseAUC {name} must be a positive integer, got {value!r}")
    return int(value)


@keras.saving.register_keras_serializable(package="birdassets")
class ClassWiseAUC(keras.metrics.Metric):
    """Macro ROC-AUC over classes with >= 1 positive and >= 1 negative, streamed over batches.

    Args:
        num_classes: columns of ``y_true`` / ``y_pred``.
        capacity: most rows it can hold (memory: ``2 * capacity * num_classes`` float32). More rows than that
            make ``result()`` raise a ValueError naming the capacity, never return a wrong number.
        from_logits: ``y_pred`` are logits. The logits themselves are stored: the sigmoid is strictly
            increasing, so the AUC of the logits is the AUC of their exact sigmoid (a float32 sigmoid would
            round large logits to 1.0 and create false ties).
        name, dtype: as for any Keras metric.

    ``update_state(y_true [batch, num_classes] 0/1, y_pred [batch, num_classes])``; ``sample_weight`` is
    refused (the BirdCLEF metric weights every row equally). ``result()`` is a Python float (NaN when no class
    has both a positive and a negative) when called eagerly, NaN float32 while traced (module docstring).
    """

    def __init__(self, num_classes: int, capacity: int, from_logits: bool = False,
                 name: str = "class_wise_auc", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.num_classes = _positive_int("num_classes", num_classes)
        self.capacity = _positive_int("capacity", capacity)
        self.from_logits = bool(from_logits)
        shape = (self.capacity, self.num_classes)
        self.truth = self.add_variable(shape=shape, initializer="zeros", dtype=SCORE_DTYPE, name="truth")
        self.scores = self.add_variable(shape=shape, initializer="zeros", dtype=SCORE_DTYPE, name="scores")
        # Rows passed to update_state since the last reset; rows_seen > capacity is the overflow flag.
        self.rows_seen = self.add_variable(shape=(), initializer="zeros", dtype="int32", name="rows_seen")

    def _checked_batch(self, y_true, y_pred):
        """``(truth, scores)`` float32 ``[batch, num_classes]``; a shape mismatch raises at trace time."""
        truth = ops.cast(ops.convert_to_tensor(y_true), SCORE_DTYPE)
        scores = ops.cast(ops.convert_to_tensor(y_pred), SCORE_DTYPE)
        expected = (scores.shape[0], self.num_classes)
        if len(scores.shape) != 2 or tuple(scores.shape) != expected or tuple(truth.shape) != expected:
            raise ValueError(
                f"ClassWiseAUC expects y_true and y_pred of shape [batch, {self.num_classes}], "
                f"got {tuple(truth.shape)} and {tuple(scores.shape)}"
            )
        return truth, scores

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Append a batch at row ``rows_seen``; past the capacity only the count grows (result() then raises)."""
        if sample_weight is not None:
            raise ValueError("ClassWiseAUC takes no sample_weight: every row counts once in the BirdCLEF AUC")
        truth, scores = self._checked_batch(y_true, y_pred)
        batch = truth.shape[0]
        if batch <= self.capacity:  # static shapes: a batch larger than the buffer only counts rows
            # Past the capacity the start is clamped and the write lands on old rows; harmless, result() raises.
            start = ops.minimum(self.rows_seen.value, self.capacity - batch)
            self.truth.assign(ops.slice_update(self.truth.value, (start, 0), truth))
            self.scores.assign(ops.slice_update(self.scores.value, (start, 0), scores))
        self.rows_seen.assign(self.rows_seen.value + batch)

    def filled_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """``(y_true, y_score)`` numpy ``[rows_seen, num_classes]`` of the rows held (eager only).

        Raises ValueError when more rows than ``capacity`` were seen.
        """
        rows = int(ops.convert_to_numpy(self.rows_seen.value))
        if rows > self.capacity:
            raise ValueError(
                f"ClassWiseAUC overflow: {rows} rows were seen but its capacity is {self.capacity} rows; "
                f"construct it with capacity >= {rows}"
            )
        truth = ops.convert_to_numpy(self.truth.value[:rows])
        scores = ops.convert_to_numpy(self.scores.value[:rows])
        return truth, scores

    def result(self):
        """Exact class-wise AUC of the rows held (float, eager), NaN float32 while traced."""
        if _is_traced(self.rows_seen.value):
            return ops.convert_to_tensor(np.nan, dtype=SCORE_DTYPE)
        truth, scores = self.filled_rows()
        return class_wise_auc(truth, scores).value

    def reset_state(self):
        for variable in (self.truth, self.scores, self.rows_seen):
            variable.assign(ops.zeros(variable.shape, dtype=variable.dtype))

    def get_config(self) -> dict:
        return {**super().get_config(), "num_classes": self.num_classes, "capacity": self.capacity,
                "from_logits": self.from_logits}
