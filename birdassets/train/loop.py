"""The training loop: step-based, jitted, data-parallel over a device mesh, checkpointed and resumable.

One call of :func:`train` runs (or resumes) a run in ``run_dir``:

* step 0 (the initialisation) is saved first, then every ``checkpoint_every`` steps and the last step;
* a folder that already holds finalized steps resumes from the latest one and continues exactly as an
  uninterrupted run would (same batches, same masks, same parameters on CPU);
* the batch is sharded over a 1-D ``("data",)`` mesh of ``config.devices`` devices with
  ``NamedSharding``; parameters and optimizer state are replicated (GSPMD inserts the gradient all-reduce);
* ``precision="bfloat16"`` runs the forward and backward pass in bfloat16 from float32 master weights.

Randomness is a pure function of ``(seed, step)``: masks use ``fold_in(PRNGKey(seed), step)``, the data order
is tf.data's seeded shuffle, so nothing random needs saving.

Read as Flax's examples: :func:`train` builds the pieces (:func:`create_train_state`, :class:`RunFolder`,
:func:`make_train_step`, :func:`make_evaluate`) and hands them to :func:`fit` (resume or step 0, the data
stream) and :func:`train_steps`, the loop itself. The ResNet18 detector's trainer
(:mod:`birdassets.train.detector_loop`) builds its own pieces and shares :func:`fit`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from birdassets.atomic import write_text
from birdassets.checkpoints import finalized_steps
from birdassets.datasets.mel_tfds import MelDataset
from birdassets.folds import FoldConfig, assign_folds
from birdassets.metrics import cmap
from birdassets.models.vit import ViTConfig, vit_config
from birdassets.models.vit.family import FAMILY_NAME
from birdassets.train.config import TrainConfig
from birdassets.train.stream import training_stream
from birdassets.train.objectives import TrainModel, losses
from birdassets.train.optim import learning_rate_schedule, make_optimizer
from birdassets.train.saver import RunCheckpointer, string_keys

HISTORY = "history.jsonl"
VALIDATION_FOLD = 0
EVAL_BATCH = 64
"""Windows per forward pass when the online probe is evaluated."""


@dataclass
class TrainResult:
    """What a call of :func:`train` did.

    Attributes:
        run_dir: the checkpoint folder.
        start_step, final_step: the steps the call started from and reached.
        history: one dict per logged step (``step, loss, probe_loss, grad_norm, lr, probe_cmap``); the whole
            run's history, including steps logged before a resume.
        step_seconds: wall time of the training steps of this call (compilation excluded).
        checkpoint_seconds: time saves blocked training.
        steps_timed: how many steps ``step_seconds`` covers.
        params: the final parameters (as :attr:`TrainState.params`).
    """

    run_dir: Path
    start_step: int
    final_step: int
    history: list[dict] = field(default_factory=list)
    step_seconds: float = 0.0
    checkpoint_seconds: float = 0.0
    steps_timed: int = 0
    params: Any = None

    @property
    def steps_per_s(self) -> float | None:
        return self.steps_timed / self.step_seconds if self.step_seconds else None


@dataclass
class TrainState:
    """The model's structure and what the steps change.

    Attributes:
        graphdef: the NNX graph of the :class:`TrainModel` (no arrays).
        params: ``{"encoder", "objective", "probe"}`` -> string-keyed dicts of float32 arrays (master weights).
        opt_state: the state of ``tx``.
        tx: clipped AdamW on the warm-up + cosine schedule for encoder and objective head, Adam for the probe.
    """

    graphdef: Any
    params: dict
    opt_state: Any
    tx: optax.GradientTransformation


def train(
    config: TrainConfig,
    dataset: MelDataset,
    run_dir: str | Path,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train (or resume) a ViT encoder on ``dataset``'s training windows, checkpointing into ``run_dir``.

    ``log`` receives each logged step's record as a JSON line.
    """
    vit = model_config(config, dataset)
    state = create_train_state(config, vit, len(dataset.classes()))
    shardings = data_shardings(config)
    run = RunFolder.open(Path(run_dir), config, vit, FAMILY_NAME, config.objective)
    holdout = holdout_mask(dataset)
    evaluate = make_evaluate(state.graphdef, config, *dataset.arrays("train", holdout))
    return fit(state, run, dataset, holdout, make_train_step(state, config), evaluate, shardings,
               desc=f"train {config.objective} {config.model}", progress=progress, log=log)


def fit(
    state: TrainState,
    run: RunFolder,
    dataset: MelDataset,
    holdout: np.ndarray,
    train_step: Callable,
    evaluate: Callable[[dict], dict[str, float]],
    shardings: tuple[NamedSharding, NamedSharding],
    *,
    desc: str,
    progress: bool,
    log: Callable[[str], None] | None,
) -> TrainResult:
    """Resume ``state`` from ``run``'s latest step (or evaluate and save step 0 of a new run), then train on the
    training windows outside ``holdout`` up to ``run.config.num_steps``; ``shardings`` as :func:`data_shardings`."""
    config, (replicated, by_data) = run.config, shardings
    if run.resuming:
        state.params, state.opt_state = run.checkpointer.restore(run.start, state.params, state.opt_state)
    state.params = jax.device_put(state.params, replicated)
    state.opt_state = jax.device_put(state.opt_state, replicated)
    if not run.resuming:
        run.history.append({"step": 0, **evaluate(state.params)})
        run.save(0, state)
    stream = training_stream(dataset, ~holdout, config.batch_size, config.seed, run.start, config.shuffle_buffer)
    batches = (jax.device_put(batch, by_data) for batch in stream)
    bar = tqdm(range(run.start, config.num_steps), initial=run.start, total=config.num_steps,
               disable=not progress, desc=desc, unit="step")
    try:  # an exception mid-run still waits for (and finalizes) the save in flight
        timer = train_steps(state, run, train_step, evaluate, batches, bar, log)
    finally:
        bar.close()
        run.checkpointer.close()
    run.write_history()
    return TrainResult(run.path, run.start, timer.final_step, run.history, timer.step_seconds,
                       timer.checkpoint_seconds, timer.steps_timed, state.params)


def train_steps(
    state: TrainState,
    run: RunFolder,
    train_step: Callable,
    evaluate: Callable[[dict], dict[str, float]],
    batches: Iterator[dict],
    steps: tqdm,
    log: Callable[[str], None] | None,
) -> StepTimer:
    """Run the steps ``steps`` yields (0-based), updating ``state`` in place; log and checkpoint as configured.

    Step ``s`` produces parameters of step ``s + 1``; that number is what is logged and saved. ``train_step``
    returns ``(params, opt_state, metrics)`` with a scalar ``loss`` among the metrics; ``evaluate(params)`` gives
    the held-out metrics logged beside them (the ViT's ``probe_cmap``).
    """
    config = run.config
    schedule = learning_rate_schedule(config.lr, config.warmup_steps, config.num_steps)
    timer = StepTimer(run.checkpointer, final_step=run.start)
    for step in steps:
        state.params, state.opt_state, metrics = train_step(state.params, state.opt_state, next(batches), step)
        done = step + 1
        timer.step_done(done, state.params)
        if done % config.log_every == 0 or done == config.num_steps:
            evaluated = evaluate(state.params)
            record = {"step": done, **{k: float(v) for k, v in metrics.items()}, "lr": float(schedule(step)),
                      **evaluated}
            run.history.append(record)
            steps.set_postfix(loss=f"{record['loss']:.4f}", **{k: f"{v:.3f}" for k, v in evaluated.items()})
            if log is not None:
                log(json.dumps(record))
        if done % config.checkpoint_every == 0 or done == config.num_steps:
            run.save(done, state)
    timer.stop(state.params)
    return timer


# --------------------------------------------------------------------------- the pieces


def model_config(config: TrainConfig, dataset: MelDataset) -> ViTConfig:
    """The ViT of ``config.model`` sized for ``dataset``'s mel windows and stamped with its preset."""
    spec = dataset.input_spec()
    return vit_config(config.model, frames=spec.frames, mels=spec.mels, preset=spec.preset,
                      sample_rate=spec.sample_rate, clip_s=spec.clip_s,
                      patch_frames=config.patch_frames, patch_mels=config.patch_mels)


def create_train_state(config: TrainConfig, vit: ViTConfig, n_classes: int) -> TrainState:
    """Encoder, objective head and ``n_classes`` probe initialised from ``config.seed``, with their optimizer."""
    model = TrainModel(vit, config.objective, n_classes, rngs=nnx.Rngs(config.seed))
    graphdef, variables = nnx.split(model)
    params = string_keys(nnx.to_pure_dict(variables))  # {"encoder", "objective", "probe"} -> string-keyed dicts
    tx = optax.multi_transform(
        {
            "main": make_optimizer(config.lr, config.warmup_steps, config.num_steps, config.weight_decay,
                                   config.grad_clip),
            "probe": optax.adam(config.probe_lr),
        },
        _probe_labels(params),
    )
    return TrainState(graphdef, params, tx.init(params), tx)


def _probe_labels(params: dict) -> dict:
    """``"probe"`` for every leaf of ``params["probe"]``, ``"main"`` elsewhere (``optax.multi_transform`` labels)."""
    return {group: jax.tree.map(lambda _: "probe" if group == "probe" else "main", tree)
            for group, tree in params.items()}


def device_mesh(devices: int | None) -> Mesh:
    """A 1-D ``("data",)`` mesh over the first ``devices`` devices (all when ``None``)."""
    available = jax.devices()
    count = len(available) if devices is None else devices
    if not 1 <= count <= len(available):
        raise ValueError(f"asked for {count} devices but {len(available)} are visible ({available})")
    return Mesh(np.array(available[:count]), ("data",))


def data_shardings(config: TrainConfig) -> tuple[NamedSharding, NamedSharding]:
    """``(replicated, by_data)`` over :func:`device_mesh`: for the state, and for batches split on axis 0."""
    mesh = device_mesh(config.devices)
    n_devices = mesh.devices.size
    if config.batch_size % n_devices:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by the {n_devices} devices of the mesh")
    return NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))


def compute_dtype(precision: str) -> jnp.dtype:
    """The dtype of the forward and backward pass: bfloat16 or float32."""
    return jnp.bfloat16 if precision == "bfloat16" else jnp.float32


def _model_of(graphdef: Any, dtype: jnp.dtype) -> Callable[[dict], TrainModel]:
    """``params -> TrainModel`` with float32 parameters cast to ``dtype``."""

    def merged(p: dict) -> TrainModel:
        if dtype != jnp.float32:
            p = jax.tree.map(lambda x: x.astype(dtype) if x.dtype == jnp.float32 else x, p)
        return nnx.merge(graphdef, nnx.State(nnx.restore_int_paths(p)))

    return merged


def make_train_step(state: TrainState, config: TrainConfig) -> Callable:
    """The jitted step ``(params, opt_state, batch, step) -> (params, opt_state, metrics)``; params and
    opt_state buffers are donated.

    ``batch``: ``{"mel": [batch, frames, mels] float32, "labels": [batch, classes] float32}``; ``metrics``:
    scalar ``loss`` (objective), ``probe_loss`` and ``grad_norm``. The mask key is ``fold_in(PRNGKey(seed), step)``.
    """
    dtype = compute_dtype(config.precision)
    merged, tx = _model_of(state.graphdef, dtype), state.tx

    def train_step(p, o, batch, step):
        key = jax.random.fold_in(jax.random.PRNGKey(config.seed), step)

        def loss_fn(p):
            obj, probe_loss, _ = losses(merged(p), config.objective, batch["mel"].astype(dtype),
                                        batch["labels"], key, config.mask_ratio)
            return obj + probe_loss, (obj, probe_loss)

        grads, (obj, probe_loss) = jax.grad(loss_fn, has_aux=True)(p)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o, {
            "loss": obj, "probe_loss": probe_loss, "grad_norm": optax.global_norm(grads)
        }

    return jax.jit(train_step, donate_argnums=(0, 1))


def make_evaluate(graphdef: Any, config: TrainConfig, mel: np.ndarray, labels: np.ndarray
                  ) -> Callable[[dict], dict[str, float]]:
    """``params -> {"probe_cmap": cmAP}`` of the online probe on held-out windows ``mel [n, frames, mels]``, ``labels [n, classes]``."""
    dtype = compute_dtype(config.precision)
    merged = _model_of(graphdef, dtype)

    @jax.jit
    def probe_scores(p, batch):
        model = merged(p)
        return jax.nn.sigmoid(model.probe(model.encoder.embed(batch.astype(dtype))).astype(jnp.float32))

    def evaluate(params: dict) -> dict[str, float]:
        scores = np.concatenate([np.asarray(probe_scores(params, mel[i : i + EVAL_BATCH]))
                                 for i in range(0, len(mel), EVAL_BATCH)])
        return {"probe_cmap": cmap(labels.astype(np.uint8), scores).value}

    return evaluate


def holdout_mask(dataset: MelDataset, n_folds: int = 5, seed: int = 42) -> np.ndarray:
    """Bool ``[train_windows]``: the online probe's validation windows (fold 0 of the benchmark's folds)."""
    windows = dataset.windows()
    train = windows[windows["split"] == "train"].reset_index(drop=True)
    classes = dataset.classes()
    index = {name: i for i, name in enumerate(classes)}
    labels = np.zeros((len(train), len(classes)), np.uint8)
    for row, names in enumerate(train["labels"]):
        labels[row, [index[n] for n in names]] = 1
    fold_of = assign_folds(train["recording_id"].to_numpy(), labels, None, FoldConfig(n_folds=n_folds, seed=seed))
    return fold_of == VALIDATION_FOLD


# --------------------------------------------------------------------------- the run folder


@dataclass
class RunFolder:
    """A run's folder: its Orbax checkpoints and ``history.jsonl``, saved together.

    Attributes:
        path: the folder.
        config: the run's training config.
        model: the model's config (``to_dict()`` is the ``config`` item of every checkpoint).
        objective: what the model is trained for (stamped into every checkpoint's metadata).
        checkpointer: asynchronous Orbax saves.
        resuming: the folder held finalized steps when the call began.
        start: the latest finalized step (0 for a new run): where this call starts.
        history: one record per logged step up to ``start`` (read back), then this call's.
    """

    path: Path
    config: TrainConfig
    model: Any
    objective: str
    checkpointer: RunCheckpointer
    resuming: bool
    start: int
    history: list[dict]

    @classmethod
    def open(cls, path: Path, config: TrainConfig, model: Any, family: str, objective: str) -> RunFolder:
        """Open (or create) ``path`` for a run of ``family``; a crashed save past the latest finalized step is
        discarded."""
        checkpointer = RunCheckpointer(path, config.max_checkpoints, family)
        start = checkpointer.latest_step() or 0
        history = [h for h in read_history(path / HISTORY) if h["step"] <= start]
        return cls(path, config, model, objective, checkpointer, bool(finalized_steps(path)), start, history)

    def save(self, step: int, state: TrainState) -> None:
        """Start saving ``step``; its metrics are the last history record when that is ``step``'s."""
        record = self.history[-1] if self.history[-1]["step"] == step else None
        self.write_history()  # so a crash after this save keeps the history up to it
        self.checkpointer.save(step, state.params, state.opt_state, self.model, {
            "objective": self.objective, "train_config": self.config.to_dict(), "metrics": record or {}
        })

    def write_history(self) -> None:
        """Publish ``history.jsonl`` (one JSON record a line) atomically."""
        write_text(self.path / HISTORY, "".join(json.dumps(record) + "\n" for record in self.history))


def read_history(path: Path) -> list[dict]:
    """The records of a run's ``history.jsonl`` (none when it is missing)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class StepTimer:
    """Wall time of a call's training steps: the first (which compiles) and the time saves blocked excluded.

    Attributes:
        checkpointer: whose ``blocking_seconds`` is subtracted.
        final_step: the last step reached.
        step_seconds, checkpoint_seconds, steps_timed: as in :class:`TrainResult`, once :meth:`stop` ran.
    """

    checkpointer: RunCheckpointer
    final_step: int
    step_seconds: float = 0.0
    checkpoint_seconds: float = 0.0
    steps_timed: int = 0
    _started: float | None = None
    _first_timed: int = 0
    _blocked_before: float = 0.0

    def step_done(self, done: int, params: Any) -> None:
        """Called after each step; the clock starts once the first step has run."""
        if self._started is None:
            jax.block_until_ready(params)
            self._started = time.perf_counter()
            self._first_timed, self._blocked_before = done, self.checkpointer.blocking_seconds
        self.final_step = done

    def stop(self, params: Any) -> None:
        """Wait for the last step and take the times (before the checkpointer's close adds its wait)."""
        jax.block_until_ready(params)
        if self._started is None:
            return
        loop_seconds = time.perf_counter() - self._started
        self.checkpoint_seconds = self.checkpointer.blocking_seconds - self._blocked_before
        self.step_seconds = loop_seconds - self.checkpoint_seconds
        self.steps_timed = self.final_step - self._first_timed
