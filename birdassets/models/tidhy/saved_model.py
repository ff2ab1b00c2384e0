"""TiDHy checkpoints: one Orbax step in the layout of :mod:`birdassets.checkpoints.orbax_io`, family ``"tidhy"``.

* ``state["encoder"]``: the model's ``nnx.Param`` values as a nested dict with string keys
  (``decoder.layers.0.kernel [r_dim, input_dim]``, ``temporal [mix_dim, r_dim, r_dim]``, ``hypernet.first...``);
* ``state["scaler"]``: ``{"mean", "std"}`` ``[input_dim]``: observations are ``(x − mean) / std`` before inference;
* ``state["opt_state"]``: the optimizer's array leaves, flat (``{"00000": leaf, ...}`` in ``jax.tree.leaves``
  order of ``nnx.state(optimizer)``; restored into a fresh optimizer's structure, shapes checked);
* ``config``: ``{"model": TiDHyConfig, "inference": InferenceConfig, "learning": LearningConfig, "input": {...}}``
  where ``input`` says what the model observes: ``{"kind": "mel", "preset", "sample_rate", "clip_s", "frames",
  "mels", "pool"}`` (an encoder of audio) or ``{"kind": "slds", ...}`` (the synthetic benchmark).

Orbax does not check shapes on restore, so every restore first compares the saved shapes (metadata only) with
those of a model built from the saved config, and names the first parameter that differs.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from birdassets.checkpoints.discovery import AUDIO
from birdassets.checkpoints.orbax_io import (
    first_shape_mismatch,
    flatten_shapes,
    read_family_config,
    read_state_shapes,
    restore_subtree,
    save_step,
    string_keys,
)
from birdassets.checkpoints.refs import CheckpointError, finalized_step_dir
from birdassets.models.tidhy.inference import InferenceConfig
from birdassets.models.tidhy.mstep import LearningConfig
from birdassets.models.tidhy.network import TiDHy, TiDHyConfig

FAMILY_NAME = "tidhy"
MODEL, SCALER, OPT_STATE = "encoder", "scaler", "opt_state"
"""The ``state`` subtrees."""
INPUT_KINDS = ("mel", "slds")


@dataclass(frozen=True)
class Scaler:
    """Per-channel standardisation of the observations: ``(x − mean) / std``, both ``[input_dim]`` float32."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def identity(cls, dim: int) -> Scaler:
        return cls(np.zeros(dim, np.float32), np.ones(dim, np.float32))

    @classmethod
    def fit(cls, x: np.ndarray, floor: float = 1e-3) -> Scaler:
        """Mean and std over every axis but the last of ``x [..., input_dim]`` (std floored at ``floor``)."""
        flat = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
        return cls(flat.mean(axis=0).astype(np.float32), np.maximum(flat.std(axis=0), floor).astype(np.float32))

    def apply(self, x: jax.Array) -> jax.Array:
        return (x - self.mean) / self.std


@dataclass(frozen=True)
class SavedTiDHy:
    """A TiDHy checkpoint's config item, parsed."""

    model: TiDHyConfig
    inference: InferenceConfig
    learning: LearningConfig
    input: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "inference": dataclasses.asdict(self.inference),
                "learning": dataclasses.asdict(self.learning), "input": dict(self.input)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> SavedTiDHy:
        """Raises CheckpointError naming ``where`` and the problem."""
        try:
            saved = cls(TiDHyConfig.from_dict(data["model"]), InferenceConfig(**data["inference"]),
                        LearningConfig(**data["learning"]), dict(data["input"]))
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"invalid TiDHy config in checkpoint {where}: {error}") from None
        if saved.input.get("kind") not in INPUT_KINDS:
            raise CheckpointError(f"checkpoint {where}: input kind {saved.input.get('kind')!r} is not one of "
                                  f"{INPUT_KINDS}")
        return saved


def model_params(model: TiDHy) -> dict[str, Any]:
    """The model's parameters as a nested dict with string keys."""
    return string_keys(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def optimizer_leaves(opt: nnx.Optimizer) -> dict[str, Any]:
    """``{"00000": leaf, ...}``: every array of ``nnx.state(opt)`` (step count included), in leaf order."""
    return {f"{i:05d}": leaf for i, leaf in enumerate(jax.tree.leaves(nnx.state(opt)))}


def save_tidhy(run_dir: str | os.PathLike, step: int, model: TiDHy, scaler: Scaler, saved: SavedTiDHy,
               opt: nnx.Optimizer | None = None, metadata: dict[str, Any] | None = None) -> Path:
    """Save one step synchronously; returns ``<run_dir>/<step>`` (see the module docstring for the layout)."""
    if saved.model != model.config:
        raise ValueError(f"the model's config {model.config} differs from the config to save {saved.model}")
    state = {MODEL: model_params(model), SCALER: {"mean": scaler.mean, "std": scaler.std},
             OPT_STATE: optimizer_leaves(opt) if opt is not None else {}}
    observes = AUDIO if saved.input["kind"] == "mel" else saved.input["kind"]  # read by discovery.observed_data
    return save_step(run_dir, step, FAMILY_NAME, state, {"observes": observes, **(metadata or {})}, saved.to_dict())


def read_saved(run_dir: str | os.PathLike, step: int | None) -> SavedTiDHy:
    """The parsed config item of a finalized step (``None``: the latest)."""
    data, step_dir = read_family_config(run_dir, step, FAMILY_NAME)
    return SavedTiDHy.from_dict(data, str(step_dir))


def abstract_params(config: TiDHyConfig) -> dict[str, Any]:
    """``jax.ShapeDtypeStruct`` leaves of a ``TiDHy(config)``'s parameters (nothing allocated)."""
    return model_params(nnx.eval_shape(lambda: TiDHy(config, rngs=nnx.Rngs(0))))


def check_shapes(saved: dict[str, tuple[int, ...]], wanted: dict[str, tuple[int, ...]], where: str,
                 what: str) -> None:
    """Raise CheckpointError naming the first parameter whose saved shape differs from the wanted one."""
    mismatch = first_shape_mismatch(saved, wanted)
    if mismatch is not None:
        name, saved_shape, wanted_shape = mismatch
        raise CheckpointError(f"checkpoint {where}: {what} parameter {name} was saved with shape {saved_shape} but "
                              f"its config asks for {wanted_shape}")


def validate_tidhy(run_dir: str | os.PathLike, step: int) -> SavedTiDHy:
    """The config, after checking the saved parameter and scaler shapes against it (metadata only)."""
    saved = read_saved(run_dir, step)
    where = str(Path(run_dir) / str(step))
    check_shapes(read_state_shapes(run_dir, step, MODEL), flatten_shapes(abstract_params(saved.model)), where, "model")
    dim = (saved.model.input_dim,)
    check_shapes(read_state_shapes(run_dir, step, SCALER), {"mean": dim, "std": dim}, where, "scaler")
    return saved


def restore_tidhy(run_dir: str | os.PathLike, step: int | None = None) -> tuple[TiDHy, Scaler, SavedTiDHy, int]:
    """``(model, scaler, saved config, step)`` of a finalized step (``None``: the latest), validated first."""
    step, _ = finalized_step_dir(Path(run_dir), step)
    saved = validate_tidhy(run_dir, step)
    model = TiDHy(saved.model, rngs=nnx.Rngs(0))
    load_params(model, restore_subtree(run_dir, step, MODEL, abstract_params(saved.model)))
    dim = saved.model.input_dim
    target = {name: jax.ShapeDtypeStruct((dim,), jnp.float32) for name in ("mean", "std")}
    scaler = restore_subtree(run_dir, step, SCALER, target)
    return model, Scaler(np.asarray(scaler["mean"]), np.asarray(scaler["std"])), saved, step


def load_params(model: TiDHy, params: dict[str, Any]) -> None:
    """Write restored parameters (string keys) into ``model`` in place."""
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, nnx.restore_int_paths(params)))
    nnx.update(model, state)


def restore_optimizer(run_dir: str | os.PathLike, step: int, opt: nnx.Optimizer) -> None:
    """Load the saved optimizer leaves of ``step`` into ``opt`` (same structure: a fresh optimizer of the same
    model and learning config).

    Raises:
        CheckpointError: the step saved no optimizer state, or a leaf's shape differs.
    """
    state = nnx.state(opt)
    leaves, treedef = jax.tree.flatten(state)
    target = {f"{i:05d}": jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype) for i, leaf in enumerate(leaves)}
    where = str(Path(run_dir) / str(step))
    try:
        saved = read_state_shapes(run_dir, step, OPT_STATE)
    except CheckpointError:
        raise CheckpointError(f"checkpoint {where} holds no optimizer state: it cannot be resumed") from None
    check_shapes(saved, flatten_shapes(target), where, "optimizer")
    restored = restore_subtree(run_dir, step, OPT_STATE, target)
    nnx.update(opt, jax.tree.unflatten(treedef, [jnp.asarray(restored[key]) for key in sorted(restored)]))
