"""Orbax checkpoints in birdassets' layout: save one step, read its JSON items and shapes, restore one subtree.

Layout (orbax v0 ``CheckpointManager``, one directory per training run)::

    <run_dir>/<step>/
        _CHECKPOINT_METADATA     written by Orbax when the step directory is created
        commit_success.txt       written by Orbax at finalize (orbax-checkpoint >= 0.12.3)
        state/                   PyTreeCheckpointHandler (OCDBT): {"encoder", "probe", "objective", "opt_state"}
        metadata/                JsonCheckpointHandler: {"step": int, "family": "<family>", ...extra}
        config/                  JsonCheckpointHandler: the family's config dict | {"family": "<family>"}

Nothing here knows an encoder family: ``state`` is any nested dict with string keys, ``config`` any JSON
object. The family name in ``metadata`` (and ``config``) is what :mod:`birdassets.models.registry` routes by.
Empty subtrees (``{}``) are stored by Orbax as metadata-only leaves (no array data).

The ``state`` item is saved with ``ocp.PyTreeCheckpointHandler`` (``ocp.args.PyTreeSave``), so it can be
restored partially with ``ocp.args.PyTreeRestore(partial_restore=True)`` (a manager that saved with
``StandardSave`` would reject that). Orbax restore does not validate shapes (unsharded targets silently come
back in the stored shape): a family reads shapes first with :func:`read_state_shapes` (the zarr ``.zarray``
entries in the OCDBT index, no chunk data) and validates them before :func:`restore_subtree`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from birdassets.checkpoints.discovery import step_problem
from birdassets.checkpoints.integrity import MANIFEST_FILE, MANIFEST_FLAG, check_finite, verify_manifest, write_manifest
from birdassets.checkpoints.refs import CheckpointError, check_step, finalized_step_dir, latest_step

STATE_ITEM = "state"
METADATA_ITEM = "metadata"
CONFIG_ITEM = "config"
RESERVED_METADATA = ("step", "family")
"""Keys of the ``metadata`` item that :func:`stamp_items` sets; callers' extra metadata may not."""
ANNOUNCE_MANIFEST = {MANIFEST_FLAG: MANIFEST_FILE}
"""``custom_metadata`` of every step saved here: its ``_CHECKPOINT_METADATA`` says a checksum manifest follows."""


def item_handlers() -> dict[str, ocp.CheckpointHandler]:
    """The handlers of this layout's items (``state`` as a PyTree so it can be partially restored)."""
    return {
        STATE_ITEM: ocp.PyTreeCheckpointHandler(),
        METADATA_ITEM: ocp.JsonCheckpointHandler(),
        CONFIG_ITEM: ocp.JsonCheckpointHandler(),
    }


def open_manager(run_dir: Path, *, create: bool) -> ocp.CheckpointManager:
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


def string_keys(tree: Any) -> Any:
    """Every dict key as a string (Orbax stores string paths), descending into tuples and namedtuples."""
    if isinstance(tree, Mapping):
        return {str(key): string_keys(value) for key, value in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(string_keys(value) for value in tree))
    if isinstance(tree, (tuple, list)):
        return type(tree)(string_keys(value) for value in tree)
    return tree


def stamp_items(step: int, family: str, metadata: Mapping[str, Any] | None,
                config: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``metadata`` and ``config`` items of a step: ``{"step", "family", **metadata}``, ``{**config, "family"}``.

    Raises:
        ValueError: an empty family name, or ``metadata`` setting ``step``/``family``.
    """
    if not isinstance(family, str) or not family:
        raise ValueError(f"encoder family must be a non-empty string, got {family!r}")
    extra = dict(metadata or {})
    reserved = sorted(set(RESERVED_METADATA) & set(extra))
    if reserved:
        raise ValueError(f"extra metadata may not set the reserved keys {reserved} (the step and family are set here)")
    return {"step": step, "family": family, **extra}, {**dict(config or {}), "family": family}


def save_args(state: Mapping[str, Any], metadata: dict[str, Any], config: dict[str, Any]) -> ocp.args.Composite:
    """Orbax save arguments of one step's three items (``metadata``/``config`` from :func:`stamp_items`)."""
    return ocp.args.Composite(
        **{
            STATE_ITEM: ocp.args.PyTreeSave(state),
            METADATA_ITEM: ocp.args.JsonSave(metadata),
            CONFIG_ITEM: ocp.args.JsonSave(config),
        }
    )


def save_step(
    run_dir: str | os.PathLike,
    step: int,
    family: str,
    state: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
) -> Path:
    """Save one step synchronously and return its finalized step directory ``<run_dir>/<step>``.

    Args:
        run_dir: the training run's checkpoint directory (created if missing).
        step: a non-negative integer larger than every step already saved.
        family: encoder family name (e.g. ``"vit"``), stored in ``metadata`` and ``config``.
        state: nested dict with string keys, e.g. ``{"encoder": {...}, "probe": {}, ...}`` (arrays as leaves).
        metadata: JSON-serialisable extra entries of the ``metadata`` item (not ``step``/``family``).
        config: the family's JSON config.

    The step's array files get a checksum manifest (:mod:`birdassets.checkpoints.integrity`) once Orbax has
    finalized it.

    Raises:
        ValueError: bad step or family, reserved keys in ``metadata``, or items that are not JSON
            (NaN included).
        CheckpointError: the step already exists or is not newer than the latest saved step.
    """
    run_dir = Path(run_dir)
    step = check_step(step)
    metadata_json, config_json = stamp_items(step, family, metadata, config)
    step_dir = run_dir / str(step)
    for name, item in ((METADATA_ITEM, metadata_json), (CONFIG_ITEM, config_json)):
        try:
            json.dumps(item, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ValueError(f"the {name} item for {step_dir} is not JSON-serialisable: {err}") from None
    if step_dir.exists():
        raise CheckpointError(f"checkpoint {step_dir} already exists")
    run_dir.mkdir(parents=True, exist_ok=True)
    with open_manager(run_dir, create=True) as manager:
        saved = manager.save(step, args=save_args(state, metadata_json, config_json),
                             custom_metadata=ANNOUNCE_MANIFEST)
        manager.wait_until_finished()
    if not saved:
        raise CheckpointError(
            f"orbax declined to save {step_dir}: step {step} is not newer than the latest step "
            f"{latest_step(run_dir)} in {run_dir}"
        )
    write_manifest(step_dir)
    return step_dir


# --------------------------------------------------------------------------- metadata reads


def _finalized_item(run_dir: str | os.PathLike, step: int | None, item: str) -> tuple[Path, int, Path]:
    """``(run_dir, step, step_dir)`` of a finalized step that holds ``item``, or a CheckpointError naming it."""
    run_dir = Path(run_dir)
    step, step_dir = finalized_step_dir(run_dir, step)
    if not (step_dir / item).is_dir():
        raise CheckpointError(f"checkpoint {step_dir} has no {item!r} item")
    return run_dir, step, step_dir


def read_json_item(run_dir: str | os.PathLike, step: int | None, item: str) -> dict[str, Any]:
    """A JSON item (``"metadata"`` or ``"config"``) of a finalized step (``None``: the latest).

    Raises:
        CheckpointError: step not finalized, item missing or unreadable, or not a JSON object.
    """
    run_dir, step, step_dir = _finalized_item(run_dir, step, item)
    try:
        with open_manager(run_dir, create=False) as manager:
            restored = manager.restore(step, args=ocp.args.Composite(**{item: ocp.args.JsonRestore()}))
    except Exception as err:  # orbax/tensorstore raise assorted types
        raise CheckpointError(f"cannot read the {item!r} item of checkpoint {step_dir}: {err}") from err
    value = restored[item]
    if not isinstance(value, dict):
        raise CheckpointError(f"the {item!r} item of checkpoint {step_dir} is not a JSON object")
    return value


def read_family_config(run_dir: str | os.PathLike, step: int | None, family: str) -> tuple[dict[str, Any], Path]:
    """``(config, step_dir)``: the ``config`` item of a finalized step that ``family`` saved, without its
    ``family`` key (for the family to parse), and the step's folder.

    Raises:
        CheckpointError: step not finalized, config missing or unreadable, or saved by another family.
    """
    step, step_dir = finalized_step_dir(Path(run_dir), step)
    data = dict(read_json_item(run_dir, step, CONFIG_ITEM))
    saved = data.pop("family", None)
    if saved != family:
        raise CheckpointError(f"checkpoint {step_dir} holds family {saved!r}, expected {family!r}")
    return data, step_dir


def read_metadata(run_dir: str | os.PathLike, step: int) -> dict[str, Any]:
    """The ``metadata`` item of a finalized step (``{"step": int, "family": "vit", ...}``)."""
    return read_json_item(run_dir, step, METADATA_ITEM)


def read_family(run_dir: str | os.PathLike, step: int) -> str:
    """The encoder family a finalized step was saved by: ``metadata["family"]``, else ``config["family"]``.

    Raises:
        CheckpointError: neither item names a family.
    """
    family = read_metadata(run_dir, step).get("family")
    if family is None:  # a checkpoint written by hand with metadata {step, ...}: its config names the family
        family = read_json_item(run_dir, step, CONFIG_ITEM).get("family")
    if not isinstance(family, str) or not family:
        raise CheckpointError(f"checkpoint {Path(run_dir) / str(step)} names no encoder family in its metadata "
                              "or config")
    return family


def flatten_shapes(tree: Any, prefix: tuple[str, ...] = ()) -> dict[str, tuple[int, ...]]:
    """``{"a.b.0.kernel": shape}`` for every leaf with a ``shape`` (arrays or Orbax array metadata)."""
    out: dict[str, tuple[int, ...]] = {}
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            out.update(flatten_shapes(value, (*prefix, str(key))))
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            out.update(flatten_shapes(value, (*prefix, str(index))))
    elif tree is not None and hasattr(tree, "shape"):
        out[".".join(prefix)] = tuple(int(n) for n in tree.shape)
    return out


def first_shape_mismatch(saved: Mapping[str, tuple[int, ...]], wanted: Mapping[str, tuple[int, ...]]
                         ) -> tuple[str, Any, Any] | None:
    """``(name, saved shape, wanted shape)`` of the first parameter (by name) whose shapes differ, ``"absent"``
    standing for a parameter on one side only; ``None`` when all agree. Inputs as :func:`flatten_shapes` gives."""
    for name in sorted(set(saved) | set(wanted)):
        if saved.get(name) != wanted.get(name):
            return name, saved.get(name, "absent"), wanted.get(name, "absent")
    return None


def read_state_shapes(run_dir: str | os.PathLike, step: int, subtree: str) -> dict[str, tuple[int, ...]]:
    """Shapes of ``state[subtree]``'s arrays, from checkpoint metadata only (no array data read).

    Returns:
        e.g. for ``subtree="encoder"``: ``{"patch_embed.kernel": (256, 192), ...}``.

    Raises:
        CheckpointError: step not finalized, unreadable metadata, or no (or an empty) subtree.
    """
    run_dir, step, step_dir = _finalized_item(run_dir, step, STATE_ITEM)
    try:
        with open_manager(run_dir, create=False) as manager:
            tree = manager.metadata(step).item_metadata[STATE_ITEM].tree
    except Exception as err:
        raise CheckpointError(f"cannot read the state metadata of checkpoint {step_dir}: {err}") from err
    if not isinstance(tree, Mapping) or subtree not in tree:
        raise CheckpointError(f"checkpoint {step_dir} has no state[{subtree!r}] subtree")
    shapes = flatten_shapes(tree[subtree])
    if not shapes:
        raise CheckpointError(f"checkpoint {step_dir} has an empty state[{subtree!r}] subtree")
    return shapes


# --------------------------------------------------------------------------- restore


def restore_subtree(run_dir: str | os.PathLike, step: int, subtree: str, target: Mapping[str, Any]) -> dict[str, Any]:
    """Read only ``state[subtree]`` of a finalized step, as numpy arrays in the structure of ``target``.

    Args:
        target: nested dict with string keys whose leaves have ``shape``/``dtype`` (e.g. ``jax.ShapeDtypeStruct``);
            the other subtrees of ``state`` are never read.

    Returns:
        the subtree as a nested dict of ``np.ndarray``, checked to have ``target``'s shapes and finite values.

    Raises:
        CheckpointError: a step discovery would skip, a file that fails its checksum (named), unreadable
            data, stored shapes that differ from ``target``'s, or NaN/inf weights (parameter and count named).
    """
    run_dir = Path(run_dir)
    step, step_dir = verified_step_dir(run_dir, step)
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
    args = ocp.args.PyTreeRestore(item={subtree: target}, restore_args={subtree: restore_args}, partial_restore=True)
    try:
        with open_manager(run_dir, create=False) as manager:
            restored = manager.restore(step, args=ocp.args.Composite(**{STATE_ITEM: args}))
    except Exception as err:
        raise CheckpointError(f"cannot restore the {subtree} of checkpoint {step_dir}: {err}") from err
    values = restored[STATE_ITEM][subtree]
    if flatten_shapes(values) != flatten_shapes(target):  # callers validate first; never return a silent reshape
        raise CheckpointError(f"restored {subtree} shapes in {step_dir} differ from the expected ones")
    check_finite(values, where=str(step_dir))
    return values


def verified_step_dir(run_dir: str | os.PathLike, step: int | None) -> tuple[int, Path]:
    """``(step, step_dir)`` of a finalized step that discovery accepts and whose files match its checksum
    manifest (hashed once here; a foreign step without a manifest passes, its weights are checked for NaN/inf
    after the restore).

    Raises:
        CheckpointError: the reason discovery would skip it, or the first file that fails its checksum.
    """
    step, step_dir = finalized_step_dir(run_dir, step)
    problem = step_problem(step_dir, step)
    if problem:
        raise CheckpointError(f"checkpoint {step_dir}: {problem}")
    verify_manifest(step_dir)
    return step, step_dir
