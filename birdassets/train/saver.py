"""The training loop's checkpointer: asynchronous Orbax saves of a run's full state, and resume from them.

Each step folder holds ``state = {encoder, probe, objective, opt_state}``, ``metadata = {step, family,
objective, metrics, train_config}`` and ``config`` (the ViT config), in the layout of
:mod:`birdassets.checkpoints.orbax_io`, so a checkpoint is self-describing and the benchmark can restore
``state.encoder`` alone. Orbax finalizes a step atomically (``commit_success.txt`` + rename), so a save
interrupted by a crash is never listed by :func:`birdassets.checkpoints.refs.finalized_steps`.

It lives with training (not in :mod:`birdassets.checkpoints`) because it saves and restores a *training* state
(optimizer included, in the structure of the live pytrees) of the ViT family; the benchmark only reads.
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

from birdassets.checkpoints.orbax_io import STATE_ITEM, item_handlers, save_args, stamp_items, string_keys
from birdassets.checkpoints.refs import STEP_NAME, CheckpointError, finalized_steps, latest_step
from birdassets.models.vit import ViTConfig
from birdassets.models.vit.family import FAMILY_NAME

__all__ = ["RunCheckpointer", "discard_unfinished_steps", "like_template", "string_keys"]


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


class RunCheckpointer:
    """An Orbax ``CheckpointManager`` for one training run directory.

    Saves are asynchronous (the device-to-host copy blocks, the write happens in a background thread);
    :meth:`close` waits for the last one. ``blocking_seconds`` accumulates the time saves held up training.
    """

    def __init__(self, run_dir: str | Path, max_to_keep: int | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        discard_unfinished_steps(self.run_dir)
        self.manager = ocp.CheckpointManager(
            self.run_dir,
            options=ocp.CheckpointManagerOptions(
                enable_async_checkpointing=True, max_to_keep=max_to_keep, create=True
            ),
            item_handlers=item_handlers(),
        )
        self.blocking_seconds = 0.0
        self.saves = 0

    def latest_step(self) -> int | None:
        """The run's latest finalized step, or ``None``."""
        return latest_step(self.run_dir)

    def save(self, step: int, params: Mapping[str, Any], opt_state: Any, config: ViTConfig, metadata: dict) -> None:
        """Start saving ``step``: ``params`` has the keys ``encoder``, ``objective`` and ``probe``."""
        started = time.perf_counter()
        state = {
            "encoder": string_keys(params["encoder"]),
            "probe": string_keys(params["probe"]),
            "objective": string_keys(params["objective"]),
            "opt_state": string_keys(opt_state),
        }
        metadata_json, config_json = stamp_items(step, FAMILY_NAME, metadata, config.to_dict())
        saved = self.manager.save(step, args=save_args(state, metadata_json, config_json))
        self.blocking_seconds += time.perf_counter() - started
        self.saves += 1
        if not saved:
            raise CheckpointError(f"orbax declined to save step {step} in {self.run_dir}")

    def restore(self, step: int, params_template: Any, opt_state_template: Any) -> tuple[Any, Any]:
        """The full training state of ``step``, in the structures (and dtypes) of the templates."""
        self.manager.wait_until_finished()
        target = string_keys({**params_template, "opt_state": opt_state_template})
        args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
        restored = self.manager.restore(
            step, args=ocp.args.Composite(**{STATE_ITEM: ocp.args.PyTreeRestore(item=target, restore_args=args)})
        )[STATE_ITEM]
        params = like_template(dict(params_template), {k: restored[k] for k in params_template})
        return params, like_template(opt_state_template, restored["opt_state"])

    def close(self) -> None:
        started = time.perf_counter()
        self.manager.wait_until_finished()
        self.blocking_seconds += time.perf_counter() - started
        self.manager.close()
