"""The training loop: step-based, jitted, data-parallel over a device mesh, checkpointed and resumable.

One call of :func:`train` runs (or resumes) a run in ``config.output_dir``:

* step 0 (the initialisation) is saved first, then every ``checkpoint_every`` steps and the last step;
* a folder that already holds finalized steps resumes from the latest one and continues exactly as an
  uninterrupted run would (same batches, same masks, same parameters on CPU);
* the batch is sharded over a 1-D ``("data",)`` mesh of ``config.devices`` devices with
  ``NamedSharding``; parameters and optimizer state are replicated (GSPMD inserts the gradient all-reduce);
* ``precision="bfloat16"`` runs the forward and backward pass in bfloat16 from float32 master weights.

Randomness is a pure function of ``(seed, step)``: masks use ``fold_in(PRNGKey(seed), step)``, the data order
is tf.data's seeded shuffle, so nothing random needs saving.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
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

from birdassets.checkpoints import finalized_steps
from birdassets.datasets.mel_tfds import MelDataset
from birdassets.folds import FoldConfig, assign_folds
from birdassets.metrics import cmap
from birdassets.models.vit import vit_config
from birdassets.train.checkpointing import RunCheckpointer, string_keys
from birdassets.train.config import TrainConfig
from birdassets.train.data import load_windows, training_stream
from birdassets.train.objectives import TrainModel, losses
from birdassets.train.optim import learning_rate_schedule, make_optimizer

HISTORY = "history.jsonl"
VALIDATION_FOLD = 0


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


def device_mesh(devices: int | None) -> Mesh:
    """A 1-D ``("data",)`` mesh over the first ``devices`` devices (all when ``None``)."""
    available = jax.devices()
    count = len(available) if devices is None else devices
    if not 1 <= count <= len(available):
        raise ValueError(f"asked for {count} devices but {len(available)} are visible ({available})")
    return Mesh(np.array(available[:count]), ("data",))


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


def _probe_labels(params: dict) -> dict:
    return {group: jax.tree.map(lambda _: "probe" if group == "probe" else "main", tree) for group, tree in params.items()}


def train(
    config: TrainConfig,
    dataset: MelDataset,
    run_dir: str | Path,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train (or resume) a ViT encoder on ``dataset``'s training windows, checkpointing into ``run_dir``."""
    run_dir = Path(run_dir)
    classes = dataset.classes()
    mel_shape = tuple(dataset.builder().info.features["mel"].shape)
    preset = dataset.builder().info.metadata["preset"]
    vit = vit_config(config.model, frames=mel_shape[0], mels=mel_shape[1], preset=preset["name"],
                     sample_rate=preset["sample_rate"], clip_s=preset["clip_s"],
                     patch_frames=config.patch_frames, patch_mels=config.patch_mels)
    model = TrainModel(vit, config.objective, len(classes), rngs=nnx.Rngs(config.seed))
    graphdef, state = nnx.split(model)
    params = string_keys(nnx.to_pure_dict(state))  # {"encoder", "objective", "probe"} -> string-keyed dicts
    tx = optax.multi_transform(
        {
            "main": make_optimizer(config.lr, config.warmup_steps, config.num_steps, config.weight_decay, config.grad_clip),
            "probe": optax.adam(config.probe_lr),
        },
        _probe_labels(params),
    )
    opt_state = tx.init(params)
    schedule = learning_rate_schedule(config.lr, config.warmup_steps, config.num_steps)

    mesh = device_mesh(config.devices)
    n_devices = mesh.devices.size
    if config.batch_size % n_devices:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by the {n_devices} devices of the mesh")
    replicated = NamedSharding(mesh, PartitionSpec())
    by_data = NamedSharding(mesh, PartitionSpec("data"))

    checkpointer = RunCheckpointer(run_dir, config.max_checkpoints)
    start = checkpointer.latest_step() or 0
    if finalized_steps(run_dir):
        params, opt_state = checkpointer.restore(start, params, opt_state)
    params = jax.device_put(params, replicated)
    opt_state = jax.device_put(opt_state, replicated)

    compute_dtype = jnp.bfloat16 if config.precision == "bfloat16" else jnp.float32

    def merged(p: dict) -> TrainModel:
        if compute_dtype != jnp.float32:
            p = jax.tree.map(lambda x: x.astype(compute_dtype) if x.dtype == jnp.float32 else x, p)
        return nnx.merge(graphdef, nnx.State(nnx.restore_int_paths(p)))

    def train_step(p, o, batch, step):
        key = jax.random.fold_in(jax.random.PRNGKey(config.seed), step)

        def loss_fn(p):
            obj, probe_loss, _ = losses(merged(p), config.objective, batch["mel"].astype(compute_dtype),
                                        batch["labels"], key, config.mask_ratio)
            return obj + probe_loss, (obj, probe_loss)

        grads, (obj, probe_loss) = jax.grad(loss_fn, has_aux=True)(p)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o, {
            "loss": obj, "probe_loss": probe_loss, "grad_norm": optax.global_norm(grads)
        }

    step_fn = jax.jit(train_step, donate_argnums=(0, 1))

    @jax.jit
    def probe_scores(p, mel):
        model = merged(p)
        return jax.nn.sigmoid(model.probe(model.encoder.embed(mel.astype(compute_dtype))).astype(jnp.float32))

    holdout = holdout_mask(dataset)
    val_mel, val_labels = load_windows(dataset, holdout)

    def probe_cmap(p) -> float:
        scores = np.concatenate([np.asarray(probe_scores(p, val_mel[i : i + 64])) for i in range(0, len(val_mel), 64)])
        return cmap(val_labels.astype(np.uint8), scores).value

    history_path = run_dir / HISTORY
    history = [h for h in _read_history(history_path) if h["step"] <= start]

    def checkpoint(step: int, record: dict | None) -> None:
        _write_history(history_path, history)  # so a crash after this save keeps the history up to it
        checkpointer.save(step, params, opt_state, vit, {
            "objective": config.objective, "train_config": config.to_dict(), "metrics": record or {}
        })

    result = TrainResult(run_dir=run_dir, start_step=start, final_step=start)
    if not finalized_steps(run_dir):
        record = {"step": 0, "probe_cmap": probe_cmap(params)}
        history.append(record)
        checkpoint(0, record)
    stream = training_stream(dataset, ~holdout, config.batch_size, config.seed, start, config.shuffle_buffer)
    bar = tqdm(range(start, config.num_steps), initial=start, total=config.num_steps, disable=not progress,
               desc=f"train {config.objective} {config.model}", unit="step")
    timer = None
    try:  # an exception mid-run still waits for (and finalizes) the save in flight
        for step in bar:
            batch = jax.device_put(next(stream), by_data)
            params, opt_state, metrics = step_fn(params, opt_state, batch, step)
            done = step + 1
            if timer is None:  # the first step compiles; time the rest
                jax.block_until_ready(params)
                timer = time.perf_counter()
                timed_from, blocked_before = done, checkpointer.blocking_seconds
            if done % config.log_every == 0 or done == config.num_steps:
                record = {"step": done, **{k: float(v) for k, v in metrics.items()},
                          "lr": float(schedule(step)), "probe_cmap": probe_cmap(params)}
                history.append(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}", probe_cmap=f"{record['probe_cmap']:.3f}")
                if log is not None:
                    log(json.dumps(record))
            if done % config.checkpoint_every == 0 or done == config.num_steps:
                checkpoint(done, history[-1] if history[-1]["step"] == done else None)
            result.final_step = done
        jax.block_until_ready(params)
        if timer is not None:
            loop_seconds = time.perf_counter() - timer
            result.checkpoint_seconds = checkpointer.blocking_seconds - blocked_before
            result.step_seconds = loop_seconds - result.checkpoint_seconds
            result.steps_timed = result.final_step - timed_from
    finally:
        bar.close()
        checkpointer.close()
    result.history = history
    result.params = params
    _write_history(history_path, history)
    return result


def _read_history(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_history(path: Path, history: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(record) + "\n" for record in history))
    tmp.replace(path)
