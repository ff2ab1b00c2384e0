"""The training loop's checkpointer: asynchronous Orbax saves of a run's full state, and resume from them.

Each step folder holds ``state = {encoder, probe, objective, opt_state}``, ``metadata = {step, family,
objective, metrics, train_config}`` and ``config`` (the ViT config), in the layout of
:mod:`birdassets.checkpoints.orbax_io`, so a checkpoint is self-describing and the benchmark can restore
``state.encoder`` alone. Orbax finalizes a step atomically (``commit_success.txt`` + rename), so a save
interrupted by a crash is never listed by :func:`birdassets.checkpoints.refs.finalized_steps`. Once Orbax has
finalized a step, its checksum manifest is written (:mod:`birdassets.checkpoints.integrity`, announced in the
step's ``_CHECKPOINT_METADATA`` so discovery waits for it); a resume verifies it and the saved shapes first.

It lives with training (not in :mod:`birdassets.checkpoints`) because it saves and restores a *training* state
(optimizer included, in the structure of the live pytrees); the benchmark only reads. Each run folder holds one
family's steps (the ViT's by default, ``"resnet18"`` for the detector); its parameter groups are the top-level
keys of the saved ``params`` (ViT: ``encoder, probe, objective``; ResNet18: ``encoder``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from birdassets.checkpoints.integrity import check_finite, missing_manifest, write_manifest
from birdassets.checkpoints.orbax_io import (
    ANNOUNCE_MANIFEST,
    STATE_ITEM,
    first_shape_mismatch,
    flatten_shapes,
    item_handlers,
    save_args,
    stamp_items,
    string_keys,
    verified_step_dir,
)
from birdassets.checkpoints.refs import STEP_NAME, CheckpointError, finalized_steps, latest_step
from birdassets.models.vit.family import FAMILY_NAME

OPT_STATE = "opt_state"
"""The ``state`` subtree holding the optimizer's state."""

__all__ = ["RunCheckpointer", "complete_manifests", "discard_unfinished_steps", "like_template", "string_keys"]


def like_template(template: Any, restored: Any) -> Any:
    """Rebuild ``restored`` (string keys, as Orbax returns it) in the structure of ``template``."""
    if isinstance(template, Mapping):
        return {key: like_template(value, restored[str(key)]) for key, value in template.items()}
    if isinstance(template, tuple) and hasattr(template, "_fields"):
        if isinstance(restored, Mapping):
            return type(template)(*(like_template(t, restored[name]) for name, t in zip(template._fields, template)))
        return type(template)(*(like_template(t, r) for t, r in zip(template, restored)))
    if isinstance(template, (tuple, list)):
        items = [restored[str(i)] for i in range(len(template))] if isinstance(restored, Mapping) else restored
        return type(template)(like_template(t, r) for t, r in zip(template, items))
    if template is None:
        return None
    return jnp.asarray(restored, dtype=getattr(template, "dtype", None))


def discard_unfinished_steps(run_dir: Path) -> list[Path]:
    """Delete step folders newer than the latest finalized step (crash leftovers); return them.

    A save that crashed before finalize can leave ``<step>/`` without ``commit_success.txt`` (Orbax's
    commit-file mode): :func:`finalized_steps` ignores it, but Orbax still lists it as saved and would refuse
    to save that step again when the run resumes. In-flight ``<step>.orbax-checkpoint-tmp`` folders need
    nothing: Orbax replaces them.
    """
    finalized = finalized_steps(run_dir)
    latest = finalized[-1] if finalized else -1
    removed = []
    for entry in sorted(run_dir.iterdir()):
        if entry.is_dir() and STEP_NAME.fullmatch(entry.name) and int(entry.name) > latest:
            shutil.rmtree(entry)
            removed.append(entry)
    return removed


def step_folder(run_dir: Path, step: int) -> Path | None:
    """Where ``step`` is being (or was) written: its newest ``<step>.orbax-checkpoint-tmp*`` folder, else
    ``<run_dir>/<step>``; ``None`` when neither exists."""
    in_flight = sorted(run_dir.glob(f"{step}.orbax-checkpoint-tmp*"), key=lambda path: path.stat().st_mtime_ns)
    if in_flight:
        return in_flight[-1]
    final = run_dir / str(step)
    return final if final.is_dir() else None


def complete_manifests(run_dir: Path) -> list[int]:
    """Write the checksum manifest of every finalized step that announced one but lacks it (the process stopped
    between Orbax's finalize and the manifest); return those steps."""
    completed = [step for step in finalized_steps(run_dir) if missing_manifest(run_dir / str(step))]
    for step in completed:
        write_manifest(run_dir / str(step))
    return completed


class RunCheckpointer:
    """An Orbax ``CheckpointManager`` for one training run directory.

    Saves are asynchronous (the device-to-host copy blocks, the write happens in a background thread);
    :meth:`close` waits for the last one. ``blocking_seconds`` accumulates the time saves held up training.
    """

    def __init__(self, run_dir: str | Path, max_to_keep: int | None = None, family: str = FAMILY_NAME):
        self.run_dir = Path(run_dir)
        self.family = family
        self.run_dir.mkdir(parents=True, exist_ok=True)
        discard_unfinished_steps(self.run_dir)
        complete_manifests(self.run_dir)
        self.unhashed: list[int] = []
        """Steps saved whose checksum manifest is not written yet."""
        self.manager = ocp.CheckpointManager(
            self.run_dir,
            options=ocp.CheckpointManagerOptions(
                enable_async_checkpointing=True, max_to_keep=max_to_keep, create=True,
                async_options=ocp.AsyncOptions(post_finalization_callback=self.write_manifests),
            ),
            item_handlers=item_handlers(),
        )
        self.blocking_seconds = 0.0
        self.saves = 0

    def latest_step(self) -> int | None:
        """The run's latest finalized step, or ``None``."""
        return latest_step(self.run_dir)

    def save(self, step: int, params: Mapping[str, Any], opt_state: Any, config: Any, metadata: dict) -> None:
        """Start saving ``step``: ``params``' groups (ViT: ``encoder``, ``objective``, ``probe``) and ``opt_state``
        as the ``state`` item, ``config.to_dict()`` as the ``config`` item."""
        started = time.perf_counter()
        state = {**{group: string_keys(tree) for group, tree in params.items()}, OPT_STATE: string_keys(opt_state)}
        metadata_json, config_json = stamp_items(step, self.family, metadata, config.to_dict())
        self.unhashed.append(step)
        saved = self.manager.save(step, args=save_args(state, metadata_json, config_json),
                                  custom_metadata=ANNOUNCE_MANIFEST)
        self.blocking_seconds += time.perf_counter() - started
        self.saves += 1
        if not saved:
            raise CheckpointError(f"orbax declined to save step {step} in {self.run_dir}")

    def write_manifests(self) -> None:
        """Orbax's post-finalization callback: every item of the step is written in its temporary folder and the
        commit (rename + ``commit_success.txt``) comes next, so the manifest written now is part of the committed
        step ("finalized" means "has its manifest"). A step already committed gets it in place."""
        for step in list(self.unhashed):
            folder = step_folder(self.run_dir, step)
            if folder is not None:
                write_manifest(folder)
                self.unhashed.remove(step)

    def restore(self, step: int, params_template: Any, opt_state_template: Any) -> tuple[Any, Any]:
        """The full training state of ``step``, in the structures (and dtypes) of the templates.

        Raises:
            CheckpointError: the step's files fail their checksums, its saved shapes differ from the templates'
                (another model size: the first differing parameter named with both shapes), or it holds NaN/inf.
        """
        self.manager.wait_until_finished()
        step_dir = verified_step_dir(self.run_dir, step)[1]
        target = string_keys({**params_template, OPT_STATE: opt_state_template})
        self.check_saved_shapes(step, target)
        args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
        restored = self.manager.restore(
            step, args=ocp.args.Composite(**{STATE_ITEM: ocp.args.PyTreeRestore(item=target, restore_args=args)})
        )[STATE_ITEM]
        check_finite(restored, where=str(step_dir))
        params = like_template(dict(params_template), {k: restored[k] for k in params_template})
        return params, like_template(opt_state_template, restored[OPT_STATE])

    def check_saved_shapes(self, step: int, target: Any) -> None:
        """Refuse to resume into a model whose parameter shapes differ from the ones saved at ``step``."""
        def model(tree: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:  # the optimizer state follows the model
            return flatten_shapes({group: value for group, value in tree.items() if group != OPT_STATE})

        saved, wanted = model(self.manager.item_metadata(step)[STATE_ITEM].tree), model(target)
        mismatch = first_shape_mismatch(saved, wanted)
        if mismatch is not None:
            name, saved_shape, wanted_shape = mismatch
            raise CheckpointError(
                f"cannot resume run {self.run_dir} from step {step}: parameter {name} was saved with shape "
                f"{saved_shape} but this run asks for {wanted_shape} (another model size or objective?); train "
                "into a new run folder, or use the run's own settings")

    def close(self) -> None:
        started = time.perf_counter()
        self.manager.wait_until_finished()
        self.write_manifests()  # a step Orbax committed without calling back (none expected): hashed in place
        self.blocking_seconds += time.perf_counter() - started
        self.manager.close()
