"""Orbax checkpoints for encoders: layout, step discovery, metadata-only validation, partial restore.

Layout (orbax v0 ``CheckpointManager``, one directory per training run)::

    <run_dir>/<step>/
        _CHECKPOINT_METADATA     written by Orbax when the step directory is created
        commit_success.txt       written by Orbax at finalize (orbax-checkpoint >= 0.12.3)
        state/                   PyTreeCheckpointHandler (OCDBT): {"encoder", "probe", "objective", "opt_state"}
        metadata/                JsonCheckpointHandler: {"step": int, "family": "vit", ...extra}
        config/                  JsonCheckpointHandler: ViTConfig.to_dict() | {"family": "vit"}

``state["encoder"]`` is the encoder's ``nnx.Param`` values as a pure nested dict with string keys
(see :func:`birdassets.models.vit.encoder_params`), e.g. ``state["encoder"]["patch_embed"]["kernel"]``.
``probe``/``objective``/``opt_state`` default to empty dicts ``{}``: Orbax stores an empty dict as a
metadata-only leaf (no array data), and encoder-only restores never touch these subtrees anyway.

The ``state`` item is saved with ``ocp.PyTreeCheckpointHandler`` (``ocp.args.PyTreeSave``), so it can
be restored partially with ``ocp.args.PyTreeRestore(partial_restore=True)`` (a manager that saved with
``StandardSave`` would reject that).

Orbax restore does not validate shapes (unsharded targets silently come back in the stored shape), so
:func:`restore_encoder` first reads array shapes from checkpoint metadata (the zarr ``.zarray`` entries
in the OCDBT index, no chunk data) and validates them against each other and the stored config.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from birdassets.models.vit import ViTConfig, ViTEncoder, encoder_params

FAMILY = "vit"
STATE_ITEM = "state"
METADATA_ITEM = "metadata"
CONFIG_ITEM = "config"
STATE_KEYS = ("encoder", "probe", "objective", "opt_state")
COMMIT_MARKER = "commit_success.txt"
"""Written by Orbax when a step is finalized (both atomic-rename and commit-file modes)."""
STEP_METADATA_FILE = "_CHECKPOINT_METADATA"
"""Written by Orbax into every step directory."""

_FORBIDDEN_RUN_CHARS = "|[],"
_LAYER_ORDER = ("patch_embed", "cls_token", "pos_embed", "blocks", "norm")
_BLOCK_ORDER = ("norm1", "attn", "norm2", "mlp")


class CheckpointError(ValueError):
    """A checkpoint is missing, unfinished, malformed or inconsistent; the message names its path."""


# --------------------------------------------------------------------------- keys and refs


def _check_run_name(run: str) -> None:
    if not isinstance(run, str) or not run or run.strip() != run:
        raise ValueError(f"run name must be a non-empty string without surrounding spaces, got {run!r}")
    bad = sorted({ch for ch in run if ch in _FORBIDDEN_RUN_CHARS or not ch.isprintable()})
    if bad:
        raise ValueError(f"run name {run!r} contains forbidden characters {bad} (not allowed: '|', '[', ']', ',')")


def checkpoint_key(run: str, step: int) -> str:
    """Partition key of a checkpoint, ``"<run>@<step>"`` (e.g. ``"demo-vit@0"``).

    Raises:
        ValueError: empty run name, forbidden characters (``| [ ] ,``), or negative / non-int step.
    """
    _check_run_name(run)
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"checkpoint step must be a non-negative integer, got {step!r}")
    return f"{run}@{int(step)}"


def parse_checkpoint_key(key: str) -> tuple[str, int]:
    """Inverse of :func:`checkpoint_key`: ``"demo-vit@0" -> ("demo-vit", 0)``.

    Raises:
        ValueError: the key is not ``<run>@<step>`` with a valid run name and canonical step integer.
    """
    run, sep, step_text = str(key).rpartition("@")
    if not sep or not re.fullmatch(r"0|[1-9][0-9]*", step_text):
        raise ValueError(f"checkpoint key {key!r} is not of the form '<run>@<step>' (e.g. 'demo-vit@0')")
    try:
        _check_run_name(run)
    except ValueError as err:
        raise ValueError(f"checkpoint key {key!r}: {err}") from None
    return run, int(step_text)


@dataclass(frozen=True)
class CheckpointRef:
    """One checkpoint: training run name, step and the run's checkpoint directory."""

    run: str
    step: int
    run_dir: Path

    def __post_init__(self) -> None:
        checkpoint_key(self.run, self.step)  # validates run and step
        object.__setattr__(self, "run_dir", Path(self.run_dir))

    @property
    def key(self) -> str:
        """``"<run>@<step>"``."""
        return checkpoint_key(self.run, self.step)

    @property
    def step_dir(self) -> Path:
        """``<run_dir>/<step>``."""
        return self.run_dir / str(self.step)

    @classmethod
    def from_key(cls, key: str, runs_root: str | os.PathLike) -> CheckpointRef:
        """Ref for key ``"<run>@<step>"`` whose run directory is ``<runs_root>/<run>``."""
        run, step = parse_checkpoint_key(key)
        return cls(run=run, step=step, run_dir=Path(runs_root) / run)


# --------------------------------------------------------------------------- discovery


def finalized_steps(run_dir: str | os.PathLike) -> list[int]:
    """Sorted steps whose Orbax save has been finalized.

    Pure filesystem scan (no Orbax manager): a step counts only if its directory is named by a
    canonical non-negative integer and holds both ``_CHECKPOINT_METADATA`` and Orbax's
    ``commit_success.txt`` commit marker. In-flight saves (``<step>.orbax-checkpoint-tmp-*``) and
    step directories without the marker (a crash before finalize) are ignored. A missing
    ``run_dir`` has no steps.
    """
    try:
        entries = list(os.scandir(run_dir))
    except (FileNotFoundError, NotADirectoryError):
        return []
    steps = []
    for entry in entries:
        name = entry.name
        if not re.fullmatch(r"0|[1-9][0-9]*", name) or not entry.is_dir():
            continue
        if os.path.isfile(os.path.join(entry.path, COMMIT_MARKER)) and os.path.isfile(
            os.path.join(entry.path, STEP_METADATA_FILE)
        ):
            steps.append(int(name))
    return sorted(steps)


def latest_step(run_dir: str | os.PathLike) -> int | None:
    """Largest finalized step in ``run_dir``, or ``None`` if there is none."""
    steps = finalized_steps(run_dir)
    return steps[-1] if steps else None


def _finalized_step_dir(run_dir: Path, step: int | None) -> tuple[int, Path]:
    steps = finalized_steps(run_dir)
    if step is None:
        if not steps:
            raise CheckpointError(f"no finalized checkpoint in {run_dir}")
        step = steps[-1]
    if step not in steps:
        raise CheckpointError(
            f"checkpoint {run_dir / str(step)} is not a finalized checkpoint "
            f"(finalized steps in {run_dir}: {steps})"
        )
    return int(step), run_dir / str(step)


def item_handlers() -> dict[str, ocp.CheckpointHandler]:
    """The handlers of this layout's items (``state`` as a PyTree so it can be partially restored)."""
    return {
        STATE_ITEM: ocp.PyTreeCheckpointHandler(),
        METADATA_ITEM: ocp.JsonCheckpointHandler(),
        CONFIG_ITEM: ocp.JsonCheckpointHandler(),
    }


def _manager(run_dir: Path, *, create: bool) -> ocp.CheckpointManager:
    """A synchronous manager with this layout's item handlers.

    Readers pass ``create=False``: nothing is written, temporary directories of an in-flight save
    are left alone (``cleanup_tmp_directories`` stays off), and the step scan skips per-step
    metadata reads (``lightweight_initialize``).
    """
    return ocp.CheckpointManager(
        run_dir,
        options=ocp.CheckpointManagerOptions(
            enable_async_checkpointing=False,
            create=create,
            max_to_keep=None,
            cleanup_tmp_directories=False,
            lightweight_initialize=not create,
        ),
        item_handlers=item_handlers(),
    )


# --------------------------------------------------------------------------- save


def _to_pure_tree(tree: Any) -> Any:
    if tree is None:
        return {}
    if isinstance(tree, nnx.State):
        tree = nnx.to_pure_dict(tree)
    if isinstance(tree, Mapping):
        return {str(key): _to_pure_tree(value) for key, value in tree.items()}
    return tree


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
    """Save one step synchronously and return its finalized step directory ``<run_dir>/<step>``.

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
    run_dir = Path(run_dir)
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"checkpoint step must be a non-negative integer, got {step!r}")
    step = int(step)
    if not isinstance(config, ViTConfig):
        raise ValueError(f"config must be a ViTConfig, got {type(config).__name__}")
    if isinstance(encoder, ViTEncoder):
        if encoder.config != config:
            raise ValueError(f"encoder config {encoder.config} differs from the config to save {config}")
        encoder_tree = encoder_params(encoder)
    else:
        encoder_tree = _to_pure_tree(encoder)
    extra = dict(extra_metadata or {})
    reserved = sorted({"step", "family"} & set(extra))
    if reserved:
        raise ValueError(f"extra_metadata may not set reserved keys {reserved}")
    metadata = {"step": step, "family": FAMILY, **extra}
    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"extra_metadata for {run_dir / str(step)} is not JSON-serialisable: {err}") from None
    state = {
        "encoder": encoder_tree,
        "probe": _to_pure_tree(probe),
        "objective": _to_pure_tree(objective),
        "opt_state": opt_state if opt_state is not None else {},
    }
    config_json = {**config.to_dict(), "family": FAMILY}
    step_dir = run_dir / str(step)
    if step_dir.exists():
        raise CheckpointError(f"checkpoint {step_dir} already exists")
    run_dir.mkdir(parents=True, exist_ok=True)
    with _manager(run_dir, create=True) as manager:
        saved = manager.save(
            step,
            args=ocp.args.Composite(
                **{
                    STATE_ITEM: ocp.args.PyTreeSave(state),
                    METADATA_ITEM: ocp.args.JsonSave(metadata),
                    CONFIG_ITEM: ocp.args.JsonSave(config_json),
                }
            ),
        )
        manager.wait_until_finished()
    if not saved:
        raise CheckpointError(
            f"orbax declined to save {step_dir}: step {step} is not newer than the latest step "
            f"{latest_step(run_dir)} in {run_dir}"
        )
    return step_dir


# --------------------------------------------------------------------------- metadata reads


def read_metadata(run_dir: str | os.PathLike, step: int) -> dict[str, Any]:
    """The ``metadata`` item of a finalized step (``{"step": int, "family": "vit", ...}``)."""
    run_dir = Path(run_dir)
    step, step_dir = _finalized_step_dir(run_dir, step)
    return _restore_json(run_dir, step, step_dir, METADATA_ITEM)


def _restore_json(run_dir: Path, step: int, step_dir: Path, item: str) -> dict[str, Any]:
    if not (step_dir / item).is_dir():
        raise CheckpointError(f"checkpoint {step_dir} has no {item!r} item")
    try:
        with _manager(run_dir, create=False) as manager:
            restored = manager.restore(step, args=ocp.args.Composite(**{item: ocp.args.JsonRestore()}))
    except Exception as err:  # orbax/tensorstore raise assorted types
        raise CheckpointError(f"cannot read the {item!r} item of checkpoint {step_dir}: {err}") from err
    value = restored[item]
    if not isinstance(value, dict):
        raise CheckpointError(f"the {item!r} item of checkpoint {step_dir} is not a JSON object")
    return value


def read_config(run_dir: str | os.PathLike, step: int) -> ViTConfig:
    """The encoder config stored with a finalized step.

    Raises:
        CheckpointError: step not finalized, missing config item, wrong family or invalid config.
    """
    run_dir = Path(run_dir)
    step, step_dir = _finalized_step_dir(run_dir, step)
    data = dict(_restore_json(run_dir, step, step_dir, CONFIG_ITEM))
    family = data.pop("family", None)
    if family != FAMILY:
        raise CheckpointError(f"checkpoint {step_dir} holds family {family!r}, expected {FAMILY!r}")
    try:
        return ViTConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"invalid ViT config in checkpoint {step_dir}: {err}") from None


def _flatten_shapes(tree: Any, prefix: tuple[str, ...] = ()) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            out.update(_flatten_shapes(value, (*prefix, str(key))))
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            out.update(_flatten_shapes(value, (*prefix, str(index))))
    elif tree is not None and hasattr(tree, "shape"):
        out[".".join(prefix)] = tuple(int(n) for n in tree.shape)
    return out


def read_encoder_shapes(run_dir: str | os.PathLike, step: int) -> dict[str, tuple[int, ...]]:
    """Shapes of the stored encoder parameters, from checkpoint metadata only (no array data read).

    Returns:
        ``{"patch_embed.kernel": (256, 192), "blocks.0.attn.query.kernel": (192, 3, 64), ...}``.

    Raises:
        CheckpointError: step not finalized, unreadable metadata, or no encoder subtree.
    """
    run_dir = Path(run_dir)
    step, step_dir = _finalized_step_dir(run_dir, step)
    if not (step_dir / STATE_ITEM).is_dir():
        raise CheckpointError(f"checkpoint {step_dir} has no {STATE_ITEM!r} item")
    try:
        with _manager(run_dir, create=False) as manager:
            item_metadata = manager.metadata(step).item_metadata
            tree = item_metadata[STATE_ITEM].tree
    except Exception as err:
        raise CheckpointError(f"cannot read the state metadata of checkpoint {step_dir}: {err}") from err
    if not isinstance(tree, Mapping) or "encoder" not in tree:
        raise CheckpointError(f"checkpoint {step_dir} has no state['encoder'] subtree")
    shapes = _flatten_shapes(tree["encoder"])
    if not shapes:
        raise CheckpointError(f"checkpoint {step_dir} has an empty state['encoder'] subtree")
    return shapes


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


def _widths_by_layer(shapes: Mapping[str, tuple[int, ...]]) -> dict[int, list[str]]:
    """Group layers by embedding width; a layer is a top-level module or ``blocks.<i>``, split
    into sub-modules when its own parameters disagree."""
    per_param: dict[tuple[str, ...], int] = {}
    for name, shape in shapes.items():
        path = tuple(name.split("."))
        axis = _width_axis(path)
        if axis is None or len(shape) == 0:
            continue
        per_param[path] = int(shape[axis])
    units: dict[str, dict[tuple[str, ...], int]] = {}
    for path, width in per_param.items():
        unit = ".".join(path[:2]) if path[0] == "blocks" else path[0]
        units.setdefault(unit, {})[path] = width
    labelled: list[tuple[str, int]] = []
    for unit, params in units.items():
        widths = set(params.values())
        if len(widths) == 1:
            labelled.append((unit, widths.pop()))
        else:
            seen = set()
            for path, width in params.items():
                module = ".".join(path[:-1]) if len(path) > 1 else path[0]
                if (module, width) not in seen:
                    seen.add((module, width))
                    labelled.append((module, width))
    labelled.sort(key=lambda item: _unit_sort_key(item[0]))
    groups: dict[int, list[str]] = {}
    for name, width in labelled:
        groups.setdefault(width, []).append(name)
    return groups


def _expected_encoder_shapes(config: ViTConfig) -> dict[str, tuple[int, ...]]:
    abstract = nnx.eval_shape(lambda: ViTEncoder(config, rngs=nnx.Rngs(0)))
    return _flatten_shapes(nnx.to_pure_dict(nnx.state(abstract, nnx.Param)))


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
    groups = _widths_by_layer(shapes)
    if not groups:
        raise CheckpointError(f"no ViT encoder layers (patch_embed, cls_token, ...) found in {where}")
    if len(groups) > 1:
        described = "; ".join(f"{width} in {', '.join(_collapse_blocks(names))}" for width, names in groups.items())
        claim = f" (config dim {config.dim})" if config is not None else ""
        raise CheckpointError(f"embedding width mismatch in {where}: {described}{claim}")
    if config is None:
        return
    (width, names), = groups.items()
    if width != config.dim:
        raise CheckpointError(
            f"embedding width mismatch in {where}: config dim is {config.dim} but every layer "
            f"({', '.join(_collapse_blocks(names))}) is {width} wide"
        )
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
    step, step_dir = _finalized_step_dir(run_dir, step)
    config = read_config(run_dir, step)
    validate_encoder_shapes(read_encoder_shapes(run_dir, step), config, where=str(step_dir))

    abstract = nnx.eval_shape(lambda: ViTEncoder(config, rngs=nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(abstract)
    target = _to_pure_tree(nnx.to_pure_dict(abstract_state))
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
    try:
        with _manager(run_dir, create=False) as manager:
            restored = manager.restore(
                step,
                args=ocp.args.Composite(
                    **{
                        STATE_ITEM: ocp.args.PyTreeRestore(
                            item={"encoder": target},
                            restore_args={"encoder": restore_args},
                            partial_restore=True,
                        )
                    }
                ),
            )
    except Exception as err:
        raise CheckpointError(f"cannot restore the encoder of checkpoint {step_dir}: {err}") from err
    params = restored[STATE_ITEM]["encoder"]
    restored_shapes = _flatten_shapes(params)
    expected_shapes = _flatten_shapes(target)
    if restored_shapes != expected_shapes:  # cannot happen after validation; never merge silently
        raise CheckpointError(f"restored encoder shapes in {step_dir} differ from the config's")
    params = jax.tree.map(jnp.asarray, nnx.restore_int_paths(params))
    nnx.replace_by_pure_dict(abstract_state, params)
    return nnx.merge(graphdef, abstract_state), config, step
