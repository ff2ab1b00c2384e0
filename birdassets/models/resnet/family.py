"""The ResNet18 detector family: ResNet18 checkpoints as encoders (pooled features) and window classifiers.

A checkpoint is a step of :mod:`birdassets.checkpoints.orbax_io`'s layout with family ``"resnet18"``:
``state["encoder"]`` holds every array of the model (:func:`~birdassets.models.resnet.network.model_state`:
parameters and BatchNorm running statistics), ``state["opt_state"]`` the optimizer's, and ``config`` is
:meth:`ResNetConfig.to_dict`. Orbax does not check shapes on restore, so :func:`validate_resnet` compares the
saved shapes (metadata only) with those of a ``ResNet18(config)`` first, naming the first parameter that differs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from birdassets.checkpoints.orbax_io import (
    first_shape_mismatch,
    flatten_shapes,
    read_family_config,
    read_state_shapes,
    restore_subtree,
)
from birdassets.checkpoints.refs import CheckpointError, finalized_step_dir
from birdassets.models.base import Encoder, EncoderFamily, EncoderRef, no_pretrained
from birdassets.models.resnet.runtime import ResNetDetector
from birdassets.models.resnet.network import ResNet18, ResNetConfig, model_state

FAMILY_NAME = "resnet18"
ENCODER = "encoder"
"""The ``state`` subtree holding the model's arrays."""
RUNNING_STATISTICS = ("mean", "var")
"""Leaf names of BatchNorm running statistics (arrays of the model that are not trained parameters)."""


def read_config(run_dir: str | os.PathLike, step: int | None) -> ResNetConfig:
    """The model config of a finalized step.

    Raises:
        CheckpointError: no such step, another family, or an invalid config (the step named).
    """
    data, step_dir = read_family_config(run_dir, step, FAMILY_NAME)
    try:
        return ResNetConfig.from_dict(data)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"invalid ResNet18 config in checkpoint {step_dir}: {error}") from None


def abstract_state(config: ResNetConfig) -> dict[str, Any]:
    """``{name: ShapeDtypeStruct}`` tree of a ``ResNet18(config)`` (nothing allocated)."""
    return nnx.eval_shape(lambda: model_state(ResNet18(config, rngs=nnx.Rngs(0))))


def n_params(config: ResNetConfig) -> int:
    """Trained parameters of ``ResNet18(config)`` (running statistics excluded)."""
    shapes = flatten_shapes(abstract_state(config))
    return int(sum(np.prod(s) for name, s in shapes.items() if name.rsplit(".", 1)[-1] not in RUNNING_STATISTICS))


def validate_resnet(run_dir: str | os.PathLike, step: int | None) -> tuple[ResNetConfig, int, Path]:
    """Config and saved shapes of a step agree (metadata only); ``(config, step, step_dir)``.

    Raises:
        CheckpointError: e.g. ``"checkpoint runs/x/3: parameter layer1.0.conv1.kernel was saved with shape
            (3, 3, 64, 64) but its config (width 32) gives (3, 3, 32, 32)"``.
    """
    step, step_dir = finalized_step_dir(Path(run_dir), step)
    config = read_config(run_dir, step)
    saved = read_state_shapes(run_dir, step, ENCODER)
    mismatch = first_shape_mismatch(saved, flatten_shapes(abstract_state(config)))
    if mismatch is not None:
        name, saved_shape, wanted = mismatch
        raise CheckpointError(f"checkpoint {step_dir}: parameter {name} was saved with shape {saved_shape} but its "
                              f"config (width {config.width}, {len(config.classes)} classes) gives {wanted}")
    return config, step, step_dir


def restore_resnet(run_dir: str | os.PathLike, step: int | None = None) -> tuple[ResNet18, ResNetConfig, int]:
    """Validate, then restore ``state["encoder"]`` alone into a ``ResNet18`` in eval mode; ``(model, config, step)``."""
    config, step, _ = validate_resnet(run_dir, step)
    values = restore_subtree(run_dir, step, ENCODER, abstract_state(config))
    return build_model(config, values), config, step


def build_model(config: ResNetConfig, values: dict[str, Any]) -> ResNet18:
    """A ``ResNet18(config)`` in eval mode holding ``values`` (a :func:`model_state` tree of arrays)."""
    model = nnx.eval_shape(lambda: ResNet18(config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, nnx.restore_int_paths(values)))
    model = nnx.merge(graphdef, state)
    model.eval()
    return model


# --------------------------------------------------------------------------- the family


def validate(ref: EncoderRef) -> dict[str, Any]:
    """``{"checkpoint", "dim", "classes", "n_params"}`` from metadata only."""
    config, _, _ = validate_resnet(ref.path.parent, ref.step)
    return {"checkpoint": str(ref.path), "dim": config.dim, "classes": list(config.classes),
            "n_params": n_params(config)}


def load(ref: EncoderRef, batch_size: int) -> Encoder:
    """The checkpoint's model behind a :class:`ResNetDetector` (features and class probabilities)."""
    model, _, _ = restore_resnet(ref.path.parent, ref.step)
    return ResNetDetector(model, name=f"{FAMILY_NAME}@{ref.key}", batch_size=batch_size)


def describe(ref: EncoderRef) -> dict[str, Any]:
    """``{"config": ResNetConfig.to_dict(), "n_params": int}`` from metadata only."""
    config = read_config(ref.path.parent, ref.step)
    return {"config": config.to_dict(), "n_params": n_params(config)}


FAMILY = EncoderFamily(name=FAMILY_NAME, pretrained=(), locate=no_pretrained, validate=validate, load=load,
                       describe=describe)


# --------------------------------------------------------------------------- export


def exported_weights(ref: EncoderRef) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(architecture, weights)`` of a checkpoint for an exported folder: :meth:`ResNetConfig.to_dict` and the
    validated :func:`model_state` tree (numpy arrays)."""
    config, step, _ = validate_resnet(ref.path.parent, ref.step)
    return config.to_dict(), restore_subtree(ref.path.parent, step, ENCODER, abstract_state(config))


def detector_from_weights(architecture: dict[str, Any], weights: dict[str, Any], *, name: str, where: str,
                          batch_size: int = 64) -> ResNetDetector:
    """The :class:`ResNetDetector` of an exported folder's architecture and weights.

    Raises:
        ValueError: an invalid architecture, or weights whose names or shapes differ from it (the first named).
    """
    try:
        config = ResNetConfig.from_dict(architecture)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: invalid ResNet18 architecture ({error})") from None
    mismatch = first_shape_mismatch(flatten_shapes(weights), flatten_shapes(abstract_state(config)))
    if mismatch is not None:
        raise ValueError(f"{where}: weight {mismatch[0]} has shape {mismatch[1]} but the architecture "
                         f"(width {config.width}) gives {mismatch[2]}")
    return ResNetDetector(build_model(config, weights), name=name, batch_size=batch_size)
