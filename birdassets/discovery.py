"""Checkpoint discovery: which finalized Orbax steps exist under the configured checkpoint roots.

A checkpoint root holds one folder per training run, each an Orbax ``CheckpointManager`` directory::

    <root>/<run>/<step>/      (finalized steps only; in-flight and crashed saves are skipped)

A checkpoint is named ``"<run>@<step>"``; run names must be unique across roots.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from birdassets.checkpoints import CheckpointError, CheckpointRef, finalized_steps, parse_checkpoint_key


def discover_checkpoints(roots: Iterable[str | Path]) -> list[CheckpointRef]:
    """Every finalized step of every run under ``roots``, sorted by (run, step)."""
    refs = []
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for run_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for step in finalized_steps(run_dir):
                try:
                    refs.append(CheckpointRef(run=run_dir.name, step=step, run_dir=run_dir))
                except ValueError:  # a folder whose name cannot be a run name: not ours
                    break
    return sorted(refs, key=lambda ref: (ref.run, ref.step))


def resolve_checkpoint(roots: Iterable[str | Path], key: str) -> CheckpointRef:
    """The finalized checkpoint named ``key`` (``"<run>@<step>"``) under ``roots``.

    Raises:
        CheckpointError: no root holds that finalized step, or more than one does.
    """
    run, step = parse_checkpoint_key(key)
    roots = [Path(root) for root in roots]
    matches = [root / run for root in roots if step in finalized_steps(root / run)]
    if not matches:
        raise CheckpointError(
            f"checkpoint {key!r}: no finalized step {step} of run {run!r} under {[str(r) for r in roots]}"
        )
    if len(matches) > 1:
        raise CheckpointError(f"checkpoint {key!r}: run {run!r} exists in several roots: {[str(m) for m in matches]}")
    return CheckpointRef(run=run, step=step, run_dir=matches[0])
