"""Train one supervised model family on every fold of a task: one model, one compile, reused across folds.

:func:`train_folds` seeds everything (``keras.utils.set_random_seed``: numpy, TensorFlow, Python ``random``,
Keras; TensorFlow's global seed is put back when it returns, see :func:`seeded`), builds the model once under
the precision policy and compiles it once (AdamW, cosine decay, the loss of
:func:`birdassets.supervised.losses.make_loss`). Every fold then starts from the same state: the model's
variables (weights and dropout seed states) and the optimizer's variables are reset to the values they had
after the build, so the jit-compiled train and predict functions are reused (no re-trace: ``FoldsResult.compiles``
counts the XLA compilations of each fold). The next call in the process that would build the very same model
(another task with the same window shape and class count, the same configs) reuses the compiled session too
(:func:`compiled_session`). Per epoch: Keras's training loss, then the fold's validation windows are predicted
(batches padded to ``batch_size``) for the validation BCE and :class:`ClassWiseAUC`. Each fold keeps the weights
of its epoch with the best validation AUC (ties: the earlier epoch); its out-of-fold and test predictions come
from them, and a copy of the model with those weights is kept.

Per-fold class weights (``SupervisedConfig.class_weights``) ride on the labels (``y = [labels | weights]``, see
:class:`PackedClassWeightLoss`), so changing them between folds changes data, never the compiled function.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from keras import ops

from birdassets.datasets.mel_tfds import MelDataset
from birdassets.supervised.config import AugmentConfig, ModelConfig, SupervisedConfig
from birdassets.supervised.fold_data import (
    FoldData,
    SplitArrays,
    SplitWindows,
    SupervisedDataError,
    fold_datasets,
    held_out_windows,
    require_fold_table,
    select_training_rows,
)

HISTORY_COLUMNS = ["fold", "epoch", "train_loss", "val_loss", "val_auc", "seconds"]
"""One row per fold and epoch (``epoch`` counts from 1; ``seconds``: training + validation of that epoch)."""
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
"""The JAX monitoring event recorded once per XLA compilation (``jax._src.dispatch.BACKEND_COMPILE_EVENT``)."""


class NonFiniteLossError(FloatingPointError):
    """Training diverged: a loss or a prediction is NaN or infinite (the message names task, fold and epoch)."""


@dataclass(frozen=True)
class FoldsResult:
    """Everything one :func:`train_folds` call produced.

    Attributes:
        fold_of: ``[rows]`` validation fold of each training window used (``rows``: all of the train split, or
            the debug cap), in example order.
        y_train: ``[rows, classes]`` float32 0/1 truth of those windows.
        valid_scores: ``[rows, classes]`` float32 out-of-fold probabilities: row ``i`` predicted by the model of
            fold ``fold_of[i]``, which never trained on it.
        y_test: ``[test, classes]`` float32 0/1 truth of the test split.
        test_scores: ``[folds, test, classes]`` float32 probabilities of each fold's model.
        train_window_ids: ``[rows]`` window ids, the order of every ``[rows]`` array.
        history: :data:`HISTORY_COLUMNS`, one row per fold and epoch.
        models: each fold's selected model (uncompiled copies).
        n_params: parameters of the model (trainable and not).
        precision: the resolved Keras dtype policy.
        seconds: wall time of the whole call.
        classes: class names, the column order of every ``classes`` axis.
        input_shape: ``(frames, mels)`` of one window.
        best_epochs: ``[folds]`` the epoch (from 1) each fold's model comes from.
        fold_seconds: ``[folds]`` wall time of each fold (training, validation, test predictions, copy).
        compiles: ``[folds]`` compilations of the model's jitted step functions during each fold: 0, the
            session compiled ``train_step`` and ``predict_step`` before the first (:func:`prime`).
        session_compiles: those compilations while the session was built: 2, or 0 when it was reused.
        compile_seconds: XLA compile time of the whole call (step functions and eager ops).
    """

    fold_of: np.ndarray
    y_train: np.ndarray
    valid_scores: np.ndarray
    y_test: np.ndarray
    test_scores: np.ndarray
    train_window_ids: np.ndarray
    history: pd.DataFrame
    models: list
    n_params: int
    precision: str
    seconds: float
    classes: tuple[str, ...] = ()
    input_shape: tuple[int, int] = (0, 0)
    best_epochs: tuple[int, ...] = ()
    fold_seconds: tuple[float, ...] = ()
    compiles: tuple[int, ...] = ()
    session_compiles: int = 0
    compile_seconds: float = 0.0

    @property
    def n_folds(self) -> int:
        return int(self.test_scores.shape[0])


@keras.saving.register_keras_serializable(package="birdassets")
class PackedClassWeightLoss(keras.losses.Loss):
    """A per-element loss weighted per class, the weights carried in ``y_true = [labels | weights]``.

    ``base`` must average an elementwise loss over its last axis (as
    :class:`birdassets.supervised.losses.MultiLabelLoss` without class weights does): it is evaluated on
    ``[batch * classes, 1]`` columns to get the elementwise values, which are multiplied by the weights and
    averaged over classes, giving exactly ``make_loss(config, weights)``.
    """

    def __init__(self, base: keras.losses.Loss, name: str = "class_weighted", **kwargs):
        super().__init__(name=name, **kwargs)
        self.base = base

    def call(self, y_true, y_pred):
        batch, classes = y_pred.shape
        labels, weights = y_true[:, :classes], y_true[:, classes:]
        flat = self.base.call(ops.reshape(labels, (-1, 1)), ops.reshape(y_pred, (-1, 1)))
        return ops.mean(ops.reshape(flat, (-1, classes)) * ops.cast(weights, flat.dtype), axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "base": keras.saving.serialize_keras_object(self.base)}

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        config["base"] = keras.saving.deserialize_keras_object(config["base"])
        return cls(**config)


@dataclass
class CompileCounter:
    """XLA compilations seen while it listens (:func:`counting_compiles`): all of them (``count``,
    ``seconds``) and those of Keras's jitted step functions (``steps``: ``train_step``, ``predict_step``, ...;
    the eager ops Keras runs outside them compile once per shape too)."""

    count: int = 0
    seconds: float = 0.0
    steps: int = 0
    names: list[str] = field(default_factory=list)

    def __call__(self, event: str, duration: float, **kwargs) -> None:
        if event == BACKEND_COMPILE_EVENT:
            name = str(kwargs.get("fun_name", ""))
            self.count += 1
            self.seconds += duration
            self.steps += int(name.endswith("_step)") or name.endswith("_step"))
            self.names.append(name)


@contextlib.contextmanager
def counting_compiles() -> Iterator[CompileCounter]:
    """Count the XLA compilations of this process inside the block."""
    import jax.monitoring

    counter = CompileCounter()
    jax.monitoring.register_event_duration_secs_listener(counter)
    try:
        yield counter
    finally:
        jax.monitoring.unregister_event_duration_listener(counter)


@dataclass(frozen=True)
class FoldPlan:
    """What every fold shares: the rows in use, their folds and labels, the test truth, the task's name, and the
    windows themselves when they fit in memory (``in_memory``, else None: streamed)."""

    dataset: MelDataset
    task: str
    rows: np.ndarray
    fold_of: np.ndarray
    train: SplitWindows
    y_test: np.ndarray
    n_folds: int
    steps: tuple[int, ...]
    in_memory: SplitArrays | None = None

    @classmethod
    def make(cls, dataset: MelDataset, fold_of: np.ndarray, config: SupervisedConfig) -> FoldPlan:
        train = SplitWindows.read(dataset, "train")
        classes = dataset.classes()
        y_test = SplitWindows.read(dataset, "test", classes).labels
        fold_of = np.asarray(fold_of, dtype=np.int64)
        require_fold_table(dataset, fold_of, len(train))
        rows = select_training_rows(len(train), config.max_samples, config.seed)
        n_folds = int(fold_of.max()) + 1
        missing = sorted(set(range(n_folds)) - set(fold_of[rows].tolist()))
        if missing:
            raise SupervisedDataError(f"{dataset.root}: no training window of fold(s) {missing} among the "
                                      f"{len(rows)} in use; use more samples")
        steps = tuple(int((fold_of[rows] != k).sum()) // config.batch_size for k in range(n_folds))
        if min(steps) == 0:
            raise SupervisedDataError(f"{dataset.root}: fold {steps.index(0)} trains on fewer windows than one "
                                      f"batch ({config.batch_size}); lower --batch-size")
        return cls(dataset, dataset.root.parent.name, rows, fold_of, train, y_test, n_folds, steps,
                   SplitArrays.read_if_small(dataset))

    @property
    def classes(self) -> int:
        return self.train.labels.shape[1]


@dataclass
class TrainingSession:
    """The compiled model and the state every fold starts from (variables and optimizer variables)."""

    model: keras.Model
    precision: str
    initial_variables: list[np.ndarray]
    initial_optimizer: list[np.ndarray]
    weighted: bool
    test: tf.data.Dataset | np.ndarray | None = None
    """The test split's padded windows (:func:`birdassets.supervised.fold_data.held_out_windows`), made once."""

    def reset(self) -> None:
        """Back to the state right after the build: weights, seed states and optimizer variables."""
        for variable, value in zip(self.model.variables, self.initial_variables, strict=True):
            variable.assign(value)
        for variable, value in zip(self.model.optimizer.variables, self.initial_optimizer, strict=True):
            variable.assign(value)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """``keras.utils.set_random_seed(seed)`` inside the block; TensorFlow's global seed is put back on exit.

    A seeded ``tf.data`` shuffle combines its own seed with TensorFlow's global one, so a global seed left behind
    would change the data order of every later pipeline in the process (the Flax training stream, another task).
    """
    from tensorflow.python.eager import context  # the global seed has no public getter

    previous = context.global_seed()
    keras.utils.set_random_seed(seed)
    try:
        yield
    finally:
        tf.random.set_seed(previous)


def train_folds(dataset: MelDataset, fold_of: np.ndarray, model_config: ModelConfig, train_config: SupervisedConfig,
                augment: AugmentConfig, checkpoint_roots: Iterable[str | Path] = (),
                log: Callable[[str], None] = print) -> FoldsResult:
    """Train ``model_config``'s family on every fold of ``dataset`` (module docstring).

    Args:
        dataset: the task's mel dataset (``mel/<task>/<preset>-<hash>``; the task is named after its folder).
        fold_of: ``[train windows]`` validation fold (0..K-1) of every window of the train split, example order.
        model_config / train_config / augment: what to build, how to train, which augmentations.
        checkpoint_roots: where a ViT ``init_checkpoint`` is looked up.
        log: receives one line per epoch.

    Raises:
        SupervisedDataError: folds out of step with the dataset, a fold too small for a batch.
        NonFiniteLossError: the training loss or a prediction became NaN or infinite.
    """
    started = time.perf_counter()
    plan = FoldPlan.make(dataset, fold_of, train_config)
    input_shape = tuple(int(n) for n in dataset.builder().info.features["mel"].shape)
    with seeded(train_config.seed), counting_compiles() as counter, \
            compiled_session(model_config, train_config, input_shape, plan, checkpoint_roots) as session:
        session_compiles, outcomes = counter.steps, []
        for fold in range(plan.n_folds):
            before = counter.steps
            outcomes.append(train_one_fold(session, plan, fold, train_config, augment, log))
            outcomes[-1].compiles = counter.steps - before
    return assemble(plan, outcomes, session, dataset.classes(), input_shape, session_compiles, counter.seconds,
                    time.perf_counter() - started)


_REUSABLE_SESSION: dict[tuple, TrainingSession] = {}
"""The last session built in this process (at most one), keyed by :func:`session_key`."""
_SESSION_LOCK = threading.Lock()


def session_key(model_config: ModelConfig, config: SupervisedConfig, input_shape: tuple[int, int],
                plan: FoldPlan) -> tuple | None:
    """Everything a built session depends on (its initial weights come from ``config.seed``), or None when it
    must not be reused: a ViT initialised from a checkpoint, whose files may have changed since."""
    if model_config.init_checkpoint:
        return None
    return model_config, config, tuple(input_shape), plan.classes, max(plan.steps)


@contextlib.contextmanager
def compiled_session(model_config: ModelConfig, config: SupervisedConfig, input_shape: tuple[int, int],
                     plan: FoldPlan, checkpoint_roots: Iterable[str | Path]) -> Iterator[TrainingSession]:
    """The session of one :func:`train_folds` call, with ``plan``'s test windows.

    It is the last session of this process when that was built under the same :func:`session_key`: reset to
    its initial variables it is the session a fresh build would give, without the build and the compile.
    Otherwise a new one, kept for the next call. A call running while another holds the kept session (threads)
    builds its own.
    """
    test = held_out_windows(plan.dataset, config.batch_size, plan.in_memory)
    if not _SESSION_LOCK.acquire(blocking=False):
        yield dataclasses.replace(build_session(model_config, config, input_shape, plan, checkpoint_roots), test=test)
        return
    try:
        key = session_key(model_config, config, input_shape, plan)
        session = _REUSABLE_SESSION.get(key) if key is not None else None
        if session is None:
            _REUSABLE_SESSION.clear()
            session = build_session(model_config, config, input_shape, plan, checkpoint_roots)
            if key is not None:
                _REUSABLE_SESSION[key] = session
        yield dataclasses.replace(session, test=test)
    finally:
        _SESSION_LOCK.release()


def release_sessions() -> None:
    """Forget the kept session (its model, optimizer state and compiled functions)."""
    with _SESSION_LOCK:
        _REUSABLE_SESSION.clear()


def build_session(model_config: ModelConfig, config: SupervisedConfig, input_shape: tuple[int, int],
                  plan: FoldPlan, checkpoint_roots: Iterable[str | Path]) -> TrainingSession:
    """Build and compile the model once; record the state each fold starts from."""
    from birdassets.supervised.losses import make_loss
    from birdassets.supervised.architectures import build_model
    from birdassets.supervised.precision import precision_policy

    with precision_policy(config.precision) as precision:
        model = build_model(model_config, input_shape, plan.classes, checkpoint_roots)
        schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, config.epochs * max(plan.steps))
        optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=config.weight_decay)
        loss = make_loss(config, None)
        model.compile(optimizer=optimizer, loss=PackedClassWeightLoss(loss) if config.class_weights else loss,
                      jit_compile=True)
        model.optimizer.build(model.trainable_variables)
    session = TrainingSession(model, precision, [ops.convert_to_numpy(v.value) for v in model.variables],
                              [ops.convert_to_numpy(v.value) for v in model.optimizer.variables], config.class_weights)
    prime(model, config.batch_size, input_shape, plan.classes * (2 if config.class_weights else 1))
    return session


def prime(model: keras.Model, batch_size: int, input_shape: tuple[int, int], label_width: int) -> None:
    """One train and one predict step on zero windows, so Keras compiles its step functions and builds its loss
    state here. Left to fold 0's ``fit``, the build would draw a first batch from the fold's pipeline and advance
    its reshuffle state: fold 0 of a fresh session would differ from fold 0 of a reused one. Every fold resets
    the variables this step changed. (Predictions from arrays and from tf.data share one compiled function.)"""
    windows = np.zeros((batch_size, *input_shape), np.float32)
    batch = tf.data.Dataset.from_tensors((windows, np.zeros((batch_size, label_width), np.float32)))
    model.fit(batch, epochs=1, verbose=0, shuffle=False)  # as a fold passes its (mel, labels): tf.data
    model.predict(windows, batch_size=batch_size, verbose=0)


@dataclass
class FoldOutcome:
    """One fold's selected epoch, its predictions and model copy, its history rows."""

    fold: int
    valid_rows: np.ndarray
    valid_scores: np.ndarray
    test_scores: np.ndarray
    best_epoch: int
    model: keras.Model
    history: list[dict]
    seconds: float
    compiles: int = 0


def train_one_fold(session: TrainingSession, plan: FoldPlan, fold: int, config: SupervisedConfig,
                   augment: AugmentConfig, log: Callable[[str], None]) -> FoldOutcome:
    """Reset the session, train ``config.epochs`` epochs on the other folds, keep the best epoch's weights."""
    started = time.perf_counter()
    session.reset()
    data = fold_datasets(plan.dataset, plan.rows, plan.fold_of, fold, config.batch_size, augment,
                         config.seed, config.epochs, with_test=False, in_memory=plan.in_memory)
    train = with_class_weights(data, plan) if session.weighted else data.train
    monitor = EpochValidation(plan, data, log)
    session.model.fit(train, epochs=config.epochs, steps_per_epoch=data.steps_per_epoch, verbose=0,
                      shuffle=False, callbacks=[monitor])  # the pipeline shuffles
    session.model.set_weights(monitor.best_weights)
    test_scores = predict_probabilities(session.model, session.test, len(plan.y_test), plan.classes,
                                        f"{plan.task}: fold {fold} test", config.batch_size)
    copy = keras.models.clone_model(session.model)
    copy.set_weights(monitor.best_weights)
    return FoldOutcome(fold, data.valid_rows, monitor.best_scores, test_scores, monitor.best_epoch, copy,
                       monitor.rows, time.perf_counter() - started)


def with_class_weights(data: FoldData, plan: FoldPlan) -> tf.data.Dataset:
    """The fold's training batches with ``y = [labels | class weights]`` (weights from the fold's training labels)."""
    from birdassets.supervised.losses import class_weights_from_counts

    weights = tf.constant(class_weights_from_counts(plan.train.labels[data.train_rows]), tf.float32)

    def packed(mel: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return mel, tf.concat([labels, tf.broadcast_to(weights, tf.shape(labels))], axis=-1)

    return data.train.map(packed, num_parallel_calls=tf.data.AUTOTUNE)


class EpochValidation(keras.callbacks.Callback):
    """After each epoch: validation BCE and class-wise AUC, the history row, the best epoch so far.

    Attributes (after ``fit``): ``rows`` (history rows), ``best_epoch`` (from 1), ``best_weights``,
    ``best_scores`` ``[valid, classes]`` float32 probabilities of the best epoch.
    """

    def __init__(self, plan: FoldPlan, data: FoldData, log: Callable[[str], None]):
        super().__init__()
        self.plan, self.data, self.log = plan, data, log
        self.truth = plan.train.labels[data.valid_rows]
        self.rows: list[dict] = []
        self.best_auc, self.best_epoch = -np.inf, 0
        self.best_weights: list[np.ndarray] | None = None
        self.best_scores: np.ndarray | None = None
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        number, where = epoch + 1, f"{self.plan.task}: fold {self.data.fold} epoch {epoch + 1}"
        train_loss = float((logs or {}).get("loss", np.nan))
        if not np.isfinite(train_loss):
            raise NonFiniteLossError(f"{where}: the training loss is {train_loss}; training diverged "
                                     "(lower the learning rate or switch mixed precision off)")
        scores = predict_probabilities(self.model, self.data.valid, len(self.data.valid_rows), self.plan.classes,
                                       where, self.data.batch_size)
        auc = validation_auc(self.truth, scores)
        row = {"fold": self.data.fold, "epoch": number, "train_loss": train_loss,
               "val_loss": binary_crossentropy(self.truth, scores), "val_auc": auc,
               "seconds": time.perf_counter() - self.started}
        self.rows.append(row)
        if self.best_weights is None or auc > self.best_auc:  # ties keep the earlier epoch
            self.best_auc, self.best_epoch = auc, number
            self.best_weights, self.best_scores = self.model.get_weights(), scores
        self.log(f"{where}/{self.params.get('epochs', '?')}: train_loss {train_loss:.4f} "
                 f"val_loss {row['val_loss']:.4f} val_auc {auc:.4f} ({row['seconds']:.1f} s)")


def predict_probabilities(model: keras.Model, batches: tf.data.Dataset | np.ndarray | None, rows: int, classes: int,
                          where: str = "test", batch_size: int | None = None) -> np.ndarray:
    """``[rows, classes]`` float32 sigmoid of the model's logits on padded ``batches`` (the first ``rows``):
    a pipeline of padded batches, or windows padded to whole batches of ``batch_size``.

    Raises:
        NonFiniteLossError: a logit is NaN or infinite.
    """
    from scipy.special import expit

    if batches is None or rows == 0:
        return np.zeros((0, classes), np.float32)
    size = {"batch_size": batch_size} if isinstance(batches, np.ndarray) else {}
    logits = np.asarray(model.predict(batches, verbose=0, **size), dtype=np.float32)[:rows]
    if logits.shape != (rows, classes) or not np.isfinite(logits).all():
        raise NonFiniteLossError(f"{where}: the model predicted {int((~np.isfinite(logits)).sum())} non-finite "
                                 f"logits (shape {logits.shape}, expected {(rows, classes)})")
    return expit(logits)


def validation_auc(truth: np.ndarray, scores: np.ndarray) -> float:
    """:class:`ClassWiseAUC` of ``scores`` (NaN when no class has both a positive and a negative)."""
    from birdassets.supervised.auc_metric import ClassWiseAUC

    metric = ClassWiseAUC(num_classes=truth.shape[1], capacity=len(truth))
    metric.update_state(truth, scores)
    return float(metric.result())


def binary_crossentropy(truth: np.ndarray, scores: np.ndarray) -> float:
    """Mean BCE over windows and classes of float32 probabilities (clipped to Keras's epsilon, as Keras does)."""
    epsilon = keras.config.epsilon()
    p = np.clip(scores.astype(np.float64), epsilon, 1 - epsilon)
    return float(-np.mean(truth * np.log(p) + (1 - truth) * np.log1p(-p)))


def assemble(plan: FoldPlan, outcomes: list[FoldOutcome], session: TrainingSession, classes: list[str],
             input_shape: tuple[int, int], session_compiles: int, compile_seconds: float,
             seconds: float) -> FoldsResult:
    """Gather the folds' outcomes into one :class:`FoldsResult` (out-of-fold rows in example order)."""
    valid_scores = np.full((len(plan.rows), plan.classes), np.nan, np.float32)
    for outcome in outcomes:
        valid_scores[np.searchsorted(plan.rows, outcome.valid_rows)] = outcome.valid_scores
    if not np.isfinite(valid_scores).all():
        raise AssertionError(f"{plan.task}: some training windows got no out-of-fold prediction")
    history = pd.DataFrame([row for outcome in outcomes for row in outcome.history], columns=HISTORY_COLUMNS)
    return FoldsResult(
        fold_of=plan.fold_of[plan.rows], y_train=plan.train.labels[plan.rows], valid_scores=valid_scores,
        y_test=plan.y_test, test_scores=np.stack([outcome.test_scores for outcome in outcomes]),
        train_window_ids=plan.train.windows["window_id"].to_numpy(dtype=str)[plan.rows], history=history,
        models=[outcome.model for outcome in outcomes], n_params=int(session.model.count_params()),
        precision=session.precision, seconds=seconds, classes=tuple(classes), input_shape=input_shape,
        best_epochs=tuple(outcome.best_epoch for outcome in outcomes),
        fold_seconds=tuple(outcome.seconds for outcome in outcomes),
        compiles=tuple(outcome.compiles for outcome in outcomes), session_compiles=session_compiles,
        compile_seconds=compile_seconds,
    )
