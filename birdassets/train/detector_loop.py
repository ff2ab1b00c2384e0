"""Training the ResNet18 call detector: softmax cross-entropy over ``(no_call, call)`` on a one-class task.

The task (e.g. ``demo-orca``, or any folder of ``positive/`` and ``negative/`` clips) labels each window with its
one class (``call``) or nothing; the detector's target is that column. The run shares the ViT loop's machinery
(:func:`birdassets.train.loop.fit`): Orbax checkpoints of family ``"resnet18"`` with the optimizer state, exact
resume, warm-up + cosine AdamW (:func:`~birdassets.train.optim.make_optimizer`), the batch sharded over devices,
validation on the benchmark's fold-0 windows (``val_ap``: average precision of ``call``, ``val_accuracy`` at 0.5).

The parameter tree ``{"encoder": model_state}`` holds the BatchNorm running statistics beside the trained
parameters: their gradient is zero (train-mode BatchNorm normalises with the batch's statistics), so AdamW leaves
them alone (no weight decay on 1-D leaves), and each step writes the updated statistics back.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from birdassets.checkpoints.orbax_io import string_keys
from birdassets.datasets.mel_tfds import MelDataset
from birdassets.metrics import cmap
from birdassets.models.resnet.family import FAMILY_NAME, RUNNING_STATISTICS
from birdassets.models.resnet.network import DETECTOR_CLASSES, ResNet18, ResNetConfig, model_state
from birdassets.train.config import TrainConfig
from birdassets.train.loop import (
    EVAL_BATCH,
    RunFolder,
    TrainResult,
    TrainState,
    compute_dtype,
    data_shardings,
    fit,
    holdout_mask,
)
from birdassets.train.optim import make_optimizer

OBJECTIVE = "softmax-ce"
"""Stamped into the metadata of every detector checkpoint."""


def train_detector(config: TrainConfig, dataset: MelDataset, run_dir: str | Path, *, progress: bool = True,
                   log: Callable[[str], None] | None = None) -> TrainResult:
    """Train (or resume) a ResNet18 of width ``config.width`` on ``dataset``'s training windows into ``run_dir``.

    Raises:
        ValueError: the task does not have exactly one class (the detector's ``call``).
    """
    resnet = detector_config(config, dataset)
    state = create_detector_state(config, resnet)
    shardings = data_shardings(config)
    run = RunFolder.open(Path(run_dir), config, resnet, FAMILY_NAME, OBJECTIVE)
    holdout = holdout_mask(dataset)
    mel, labels = dataset.arrays("train", holdout)
    evaluate = make_detector_evaluate(state.graphdef, config, mel, labels[:, 0])
    return fit(state, run, dataset, holdout, make_detector_step(state, config), evaluate, shardings,
               desc=f"train resnet18 w{config.width}", progress=progress, log=log)


def detector_config(config: TrainConfig, dataset: MelDataset) -> ResNetConfig:
    """The detector sized for ``dataset``'s windows; the task must have one class (the positive one)."""
    classes = dataset.classes()
    if len(classes) != 1:
        raise ValueError(f"{dataset.root}: a call detector trains on a task with one class (positive windows "
                         f"labelled, negative ones not); this task has {len(classes)}: {list(classes)[:5]}")
    spec = dataset.input_spec()
    return ResNetConfig(width=config.width, preset=spec.preset, sample_rate=spec.sample_rate, clip_s=spec.clip_s,
                        frames=spec.frames, mels=spec.mels, classes=DETECTOR_CLASSES)


def create_detector_state(config: TrainConfig, resnet: ResNetConfig) -> TrainState:
    """A ResNet18 initialised from ``config.seed`` and its AdamW state."""
    model = ResNet18(resnet, rngs=nnx.Rngs(config.seed))
    graphdef, _ = nnx.split(model)
    params = {"encoder": model_state(model)}
    tx = make_optimizer(config.lr, config.warmup_steps, config.num_steps, config.weight_decay, config.grad_clip)
    return TrainState(graphdef, params, tx.init(params), tx)


def merge(graphdef: Any, encoder: dict, dtype: jnp.dtype) -> ResNet18:
    """The model holding ``encoder`` (a :func:`model_state` tree), float32 arrays cast to ``dtype``."""
    if dtype != jnp.float32:
        encoder = jax.tree.map(lambda x: x.astype(dtype) if x.dtype == jnp.float32 else x, encoder)
    return nnx.merge(graphdef, nnx.State(nnx.restore_int_paths(encoder)))


def with_statistics(params: dict, statistics: dict) -> dict:
    """``params`` with its BatchNorm running statistics replaced by those of ``statistics`` (same tree)."""

    def pick(path, old, new):
        return new.astype(old.dtype) if str(getattr(path[-1], "key", "")) in RUNNING_STATISTICS else old

    return jax.tree_util.tree_map_with_path(pick, params, statistics)


def make_detector_step(state: TrainState, config: TrainConfig) -> Callable:
    """The jitted step ``(params, opt_state, batch, step) -> (params, opt_state, {"loss", "grad_norm"})``.

    ``batch``: ``{"mel": [batch, frames, mels], "labels": [batch, 1]}``; the label is the ``call`` class index.
    """
    dtype, graphdef, tx = compute_dtype(config.precision), state.graphdef, state.tx

    def train_step(p, o, batch, step):
        def loss_fn(p):
            model = merge(graphdef, p["encoder"], dtype)
            model.train()
            logits = model(batch["mel"].astype(dtype)).astype(jnp.float32)
            target = batch["labels"][:, 0].astype(jnp.int32)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, target).mean()
            return loss, string_keys(nnx.to_pure_dict(nnx.state(model)))

        (loss, updated), grads = jax.value_and_grad(loss_fn, has_aux=True)(p)
        updates, o = tx.update(grads, o, p)
        p = optax.apply_updates(p, updates)
        p = {"encoder": with_statistics(p["encoder"], updated)}
        return p, o, {"loss": loss, "grad_norm": optax.global_norm(grads)}

    return jax.jit(train_step, donate_argnums=(0, 1))


def make_detector_evaluate(graphdef: Any, config: TrainConfig, mel: np.ndarray, call: np.ndarray
                           ) -> Callable[[dict], dict[str, float]]:
    """``params -> {"val_ap", "val_accuracy"}`` of P(call) on held-out windows ``mel [n, frames, mels]`` with
    0/1 truth ``call [n]`` (eval-mode BatchNorm)."""
    dtype = compute_dtype(config.precision)

    @jax.jit
    def call_probability(p, batch):
        model = merge(graphdef, p["encoder"], dtype)
        model.eval()
        return jax.nn.softmax(model(batch.astype(dtype)).astype(jnp.float32), axis=-1)[:, 1]

    def evaluate(params: dict) -> dict[str, float]:
        scores = np.concatenate([np.asarray(call_probability(params, mel[i : i + EVAL_BATCH]))
                                 for i in range(0, len(mel), EVAL_BATCH)])
        truth = call.astype(np.uint8)
        return {"val_ap": cmap(truth[:, None], scores[:, None]).value,
                "val_accuracy": float(np.mean((scores > 0.5) == truth))}

    return evaluate
