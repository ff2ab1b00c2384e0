"""The ViT family: Flax ViT encoders in Orbax checkpoints -- save, read, validate from metadata, restore.

A ViT checkpoint is a step of :mod:`birdassets.checkpoints.orbax_io`'s layout with family ``"vit"``:
``state["encoder"]`` is the encoder's ``nnx.Param`` values as a pure nested dict with string keys
(:func:`~birdassets.models.vit.network.encoder_params`, e.g. ``state["encoder"]["patch_embed"]["kernel"]``),
``config`` is :meth:`ViTConfig.to_dict` and ``probe``/``objective``/``opt_state`` default to ``{}``.

Orbax restore does not validate shapes, so :func:`restore_encoder` first reads the stored parameter shapes
from checkpoint metadata (no array data) and checks them against each other and the stored config
(:func:`validate_encoder_shapes`: a checkpoint whose layers disagree on the embedding width -- the known
192/384 bug -- is refused with a message naming the layers), then restores ``state["encoder"]`` alone.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from birdassets.checkpoints.orbax_io import (
    flatten_shapes,
    read_family_config,
    read_state_shapes,
    restore_subtree,
    save_step,
)
from birdassets.checkpoints.refs import CheckpointError, check_step, finalized_step_dir
from birdassets.models.base import Encoder, EncoderFamily, EncoderRef, no_pretrained
from birdassets.models.vit.network import ViTConfig, ViTEmbedder, ViTEncoder, encoder_params

FAMILY_NAME = "vit"
ENCODER = "encoder"
"""The ``state`` subtree holding the encoder parameters."""

_LAYER_ORDER = ("patch_embed", "cls_token", "pos_embed", "blocks", "norm")
_BLOCK_ORDER = ("norm1", "attn", "norm2", "mlp")


# --------------------------------------------------------------------------- save


def _to_pure_tree(tree: Any) -> Any:
    """``None -> {}``; ``nnx.State`` -> its pure dict; every mapping key as a string."""
    if tree is None:
        return {}
    if isinstance(tree, nnx.State):
        tree = nnx.to_pure_dict(tree)
    if isinstance(tree, Mapping):
        return {str(key): _to_pure_tree(value) for key, value in tree.items()}
    return tree


def _encoder_tree(encoder: ViTEncoder | Mapping[str, Any], config: ViTConfig) -> dict[str, Any]:
    if not isinstance(config, ViTConfig):
        raise ValueError(f"config must be a ViTConfig, got {type(config).__name__}")
    if isinstance(encoder, ViTEncoder):
        if encoder.config != config:
            raise ValueError(f"encoder config {encoder.config} differs from the config to save {config}")
        return encoder_params(encoder)
    return _to_pure_tree(encoder)


def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    encoder: ViTEncoder | Mapping[str, Any],
    config: ViTConfig,
    *,
    probe: Any = None,
    objective: Any = None,
    opt_state: Any = None,
    extra_metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Save one ViT step synchronously and return its finalized step directory ``<run_dir>/<step>``.

    Args:
        run_dir: the training run's checkpoint directory (created if missing).
        step: training step, a non-negative integer larger than every step already saved.
        encoder: a :class:`ViTEncoder`, or its parameters as a nested dict / ``nnx.State``
            (saved as given, string keys; no shape checks -- restore validates).
        config: the encoder's config, stored as the ``config`` item with ``"family": "vit"``.
        probe, objective, opt_state: optional pytrees (``None`` -> ``{}``).
        extra_metadata: JSON-serialisable entries merged into the ``metadata`` item.

    Raises:
        ValueError: bad step, ``extra_metadata`` not JSON-safe or trying to set ``step``/``family``,
            or a ``ViTEncoder`` whose config differs from ``config``.
        CheckpointError: the step already exists or is not newer than the latest saved step.
    """
    step = check_step(step)
    state = {
        ENCODER: _encoder_tree(encoder, config),
        "probe": _to_pure_tree(probe),
        "objective": _to_pure_tree(objective),
        "opt_state": opt_state if opt_state is not None else {},
    }
    return save_step(run_dir, step, FAMILY_NAME, state, extra_metadata, config.to_dict())


# --------------------------------------------------------------------------- metadata reads


def read_config(run_dir: str | os.PathLike, step: int) -> ViTConfig:
    """The encoder config stored with a finalized step.

    Raises:
        CheckpointError: step not finalized, missing config item, wrong family or invalid config.
    """
    data, step_dir = read_family_config(run_dir, step, FAMILY_NAME)
    try:
        return ViTConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"invalid ViT config in checkpoint {step_dir}: {err}") from None


def read_encoder_shapes(run_dir: str | os.PathLike, step: int) -> dict[str, tuple[int, ...]]:
    """Shapes of the stored encoder parameters, from checkpoint metadata only (no array data read).

    Returns:
        ``{"patch_embed.kernel": (256, 192), "blocks.0.attn.query.kernel": (192, 3, 64), ...}``.

    Raises:
        CheckpointError: step not finalized, unreadable metadata, or no encoder subtree.
    """
    return read_state_shapes(run_dir, step, ENCODER)


# --------------------------------------------------------------------------- validation


def _width_axis(path: tuple[str, ...]) -> int | None:
    """Axis of a ViT parameter that holds the embedding width, or None if it has none."""
    top, leaf = path[0], path[-1]
    if top in ("patch_embed", "cls_token", "pos_embed", "norm"):
        return -1
    if top != "blocks" or len(path) < 4:
        return None
    sub = path[2]
    if sub in ("norm1", "norm2"):
        return -1
    if sub == "attn" and len(path) == 5:
        projection = path[3]
        if projection in ("query", "key", "value"):
            return 0 if leaf == "kernel" else None
        if projection == "out":
            return -1
    if sub == "mlp" and len(path) == 5:
        if path[3] == "fc1":
            return 0 if leaf == "kernel" else None
        if path[3] == "fc2":
            return -1
    return None


def _unit_sort_key(name: str) -> tuple[int, int, int, str]:
    """Model order: patch_embed, cls_token, pos_embed, blocks.<i>.{norm1, attn, norm2, mlp}, norm."""
    parts = name.split(".")
    rank = _LAYER_ORDER.index(parts[0]) if parts[0] in _LAYER_ORDER else len(_LAYER_ORDER)
    index = int(parts[1]) if parts[0] == "blocks" and len(parts) > 1 and parts[1].isdigit() else -1
    sub = parts[2] if parts[0] == "blocks" and len(parts) > 2 else ""
    sub_rank = _BLOCK_ORDER.index(sub) if sub in _BLOCK_ORDER else (-1 if not sub else len(_BLOCK_ORDER))
    return (rank, index, sub_rank, name)


def _collapse_blocks(names: list[str]) -> list[str]:
    """``["blocks.0", "blocks.1", "blocks.2", "norm"] -> ["blocks.0..2", "norm"]``."""
    out: list[str] = []
    run: list[int] = []

    def flush() -> None:
        if run:
            out.append(f"blocks.{run[0]}" if len(run) == 1 else f"blocks.{run[0]}..{run[-1]}")
            run.clear()

    for name in names:
        match = re.fullmatch(r"blocks\.(\d+)", name)
        if match and (not run or int(match.group(1)) == run[-1] + 1):
            run.append(int(match.group(1)))
            continue
        flush()
        if match:
            run.append(int(match.group(1)))
        else:
            out.append(name)
    flush()
    return out


def _widths_by_unit(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, dict[tuple[str, ...], int]]:
    """``{unit: {parameter path: width}}``; a unit is a top-level module or ``blocks.<i>``."""
    units: dict[str, dict[tuple[str, ...], int]] = {}
    for name, shape in shapes.items():
        path = tuple(name.split("."))
        axis = _width_axis(path)
        if axis is None or len(shape) == 0:
            continue
        unit = ".".join(path[:2]) if path[0] == "blocks" else path[0]
        units.setdefault(unit, {})[path] = int(shape[axis])
    return units


def _labelled_widths(units: Mapping[str, Mapping[tuple[str, ...], int]]) -> list[tuple[str, int]]:
    """``(layer, width)`` per unit, or per sub-module when a unit's own parameters disagree."""
    labelled: list[tuple[str, int]] = []
    for unit, params in units.items():
        widths = set(params.values())
        if len(widths) == 1:
            labelled.append((unit, widths.pop()))
            continue
        seen = set()
        for path, width in params.items():
            module = ".".join(path[:-1]) if len(path) > 1 else path[0]
            if (module, width) not in seen:
                seen.add((module, width))
                labelled.append((module, width))
    return labelled


def _widths_by_layer(shapes: Mapping[str, tuple[int, ...]]) -> dict[int, list[str]]:
    """Group layers by embedding width (``{192: ["patch_embed", ...], 384: [...]}``), in model order."""
    labelled = sorted(_labelled_widths(_widths_by_unit(shapes)), key=lambda item: _unit_sort_key(item[0]))
    groups: dict[int, list[str]] = {}
    for name, width in labelled:
        groups.setdefault(width, []).append(name)
    return groups


def _expected_encoder_shapes(config: ViTConfig) -> dict[str, tuple[int, ...]]:
    abstract = nnx.eval_shape(lambda: ViTEncoder(config, rngs=nnx.Rngs(0)))
    return flatten_shapes(nnx.to_pure_dict(nnx.state(abstract, nnx.Param)))


def _check_one_width(groups: dict[int, list[str]], config: ViTConfig | None, where: str) -> None:
    """Every layer has the same width, and it is ``config.dim``."""
    if not groups:
        raise CheckpointError(f"no ViT encoder layers (patch_embed, cls_token, ...) found in {where}")
    if len(groups) > 1:
        described = "; ".join(f"{width} in {', '.join(_collapse_blocks(names))}" for width, names in groups.items())
        claim = f" (config dim {config.dim})" if config is not None else ""
        raise CheckpointError(f"embedding width mismatch in {where}: {described}{claim}")
    (width, names), = groups.items()
    if config is not None and width != config.dim:
        raise CheckpointError(
            f"embedding width mismatch in {where}: config dim is {config.dim} but every layer "
            f"({', '.join(_collapse_blocks(names))}) is {width} wide"
        )


def _config_problems(shapes: Mapping[str, tuple[int, ...]], config: ViTConfig) -> list[str]:
    """Parameters missing, unexpected or reshaped against a ``ViTEncoder(config)``."""
    expected = _expected_encoder_shapes(config)
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    reshaped = sorted(
        f"{name} {tuple(shapes[name])} != {expected[name]}"
        for name in set(expected) & set(shapes)
        if tuple(shapes[name]) != tuple(expected[name])
    )
    problems = []
    if missing:
        problems.append(f"missing {missing}")
    if unexpected:
        problems.append(f"unexpected {unexpected}")
    if reshaped:
        problems.append(f"shape mismatch {reshaped}")
    return problems


def validate_encoder_shapes(
    shapes: Mapping[str, tuple[int, ...]],
    config: ViTConfig | None = None,
    *,
    where: str = "checkpoint",
) -> None:
    """Check that stored ViT encoder parameters agree on the embedding width (and with ``config``).

    Each layer's width is its ``dim`` axis: ``patch_embed`` kernel output, ``cls_token`` and
    ``pos_embed`` last axis, LayerNorm scales/biases, attention input (q/k/v kernels) and output,
    MLP input/output. With ``config``, the width must equal ``config.dim`` and every parameter must
    have exactly the shape a ``ViTEncoder(config)`` has (no missing, extra or reshaped parameters).

    Args:
        shapes: ``{"patch_embed.kernel": (256, 192), ...}`` as from :func:`read_encoder_shapes`.
        config: optional config the checkpoint claims.
        where: checkpoint path, named in error messages.

    Raises:
        CheckpointError: e.g. ``"embedding width mismatch in runs/x/3: 192 in patch_embed,
            cls_token, norm; 384 in pos_embed, blocks.0..5"``.
    """
    _check_one_width(_widths_by_layer(shapes), config, where)
    if config is None:
        return
    problems = _config_problems(shapes, config)
    if problems:
        raise CheckpointError(
            f"encoder parameters in {where} do not match its config "
            f"(dim {config.dim}, depth {config.depth}, heads {config.heads}, grid {config.grid}): "
            + "; ".join(problems)
        )


# --------------------------------------------------------------------------- restore


def restore_encoder(
    run_dir: str | os.PathLike, step: int | None = None
) -> tuple[ViTEncoder, ViTConfig, int]:
    """Restore only ``state["encoder"]`` of a finalized step into a fresh :class:`ViTEncoder`.

    Reads the config item, validates parameter shapes from metadata (no array data), then
    partially restores the encoder subtree (``probe``/``objective``/``opt_state`` arrays are never
    read) and merges it into an abstract model built with ``nnx.eval_shape``.

    Args:
        run_dir: the training run's checkpoint directory.
        step: step to restore; ``None`` = latest finalized step.

    Returns:
        ``(model, config, step)``.

    Raises:
        CheckpointError: no such finalized step, bad config, inconsistent shapes, unreadable data.
    """
    run_dir = Path(run_dir)
    step, step_dir = finalized_step_dir(run_dir, step)
    config = read_config(run_dir, step)
    validate_encoder_shapes(read_encoder_shapes(run_dir, step), config, where=str(step_dir))
    abstract = nnx.eval_shape(lambda: ViTEncoder(config, rngs=nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(abstract)
    target = _to_pure_tree(nnx.to_pure_dict(abstract_state))
    params = restore_subtree(run_dir, step, ENCODER, target)
    nnx.replace_by_pure_dict(abstract_state, jax.tree.map(jnp.asarray, nnx.restore_int_paths(params)))
    return nnx.merge(graphdef, abstract_state), config, step


# --------------------------------------------------------------------------- the family


def _n_params(shapes: Mapping[str, tuple[int, ...]]) -> int:
    return int(sum(np.prod(shape) for shape in shapes.values()))


def validate(ref: EncoderRef) -> dict[str, Any]:
    """Config and parameter shapes of a ViT checkpoint agree (metadata only); ``{"checkpoint", "dim", "n_params"}``."""
    config = read_config(ref.path.parent, ref.step)
    shapes = read_encoder_shapes(ref.path.parent, ref.step)
    validate_encoder_shapes(shapes, config, where=str(ref.path))
    return {"checkpoint": str(ref.path), "dim": config.dim, "n_params": _n_params(shapes)}


def load(ref: EncoderRef, batch_size: int) -> Encoder:
    """The checkpoint's encoder (validated, then ``state.encoder`` restored) behind a jitted embedder."""
    model, config, _ = restore_encoder(ref.path.parent, ref.step)
    return ViTEmbedder(model, config, name=f"vit@{ref.key}", batch_size=batch_size)


def describe(ref: EncoderRef) -> dict[str, Any]:
    """``{"config": ViTConfig.to_dict(), "n_params": int}`` from metadata only."""
    shapes = read_encoder_shapes(ref.path.parent, ref.step)
    return {"config": read_config(ref.path.parent, ref.step).to_dict(), "n_params": _n_params(shapes)}


FAMILY = EncoderFamily(
    name=FAMILY_NAME, pretrained=(), locate=no_pretrained, validate=validate, load=load, describe=describe
)


# --------------------------------------------------------------------------- export


def exported_weights(ref: EncoderRef) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(architecture, encoder parameters)`` of a checkpoint for an exported folder (validated, restored)."""
    model, config, _ = restore_encoder(ref.path.parent, ref.step)
    return config.to_dict(), jax.tree.map(np.asarray, encoder_params(model))


def classifier_from_weights(architecture: dict[str, Any], encoder: dict[str, Any], probe: dict[str, Any],
                            classes: list[str], *, name: str, where: str, batch_size: int = 64):
    """The :class:`~birdassets.models.vit.classifier.ViTProbeClassifier` of an exported folder.

    Raises:
        ValueError: an invalid architecture, or encoder weights that do not fit it (the first named).
    """
    from birdassets.models.vit.classifier import ViTProbeClassifier

    try:
        config = ViTConfig.from_dict(architecture)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: invalid ViT architecture ({error})") from None
    problems = _config_problems(flatten_shapes(encoder), config)
    if problems:
        raise ValueError(f"{where}: encoder weights do not fit the architecture: " + "; ".join(problems))
    abstract = nnx.eval_shape(lambda: ViTEncoder(config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, nnx.restore_int_paths(encoder)))
    return ViTProbeClassifier(nnx.merge(graphdef, state), probe, classes, name=name, batch_size=batch_size)
