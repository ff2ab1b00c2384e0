"""Checkpoint references: names and finalized steps (no Orbax, no models); discovery under the roots is in
:mod:`birdassets.checkpoints.discovery`.

A checkpoint root holds one folder per training run, each an Orbax ``CheckpointManager`` directory::

    <root>/<run>/<step>/      (finalized steps only; in-flight and crashed saves are skipped)

A checkpoint is named ``"<run>@<step>"`` (its partition key, e.g. ``"demo-vit@0"``); run names must be unique
across roots. Everything here is a filesystem scan, so it is cheap to import and to call from sensors.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COMMIT_MARKER = "commit_success.txt"
"""Written by Orbax when a step is finalized (both atomic-rename and commit-file modes)."""
STEP_METADATA_FILE = "_CHECKPOINT_METADATA"
"""Written by Orbax into every step directory."""
STEP_NAME = re.compile(r"0|[1-9][0-9]*")
"""A step folder's name: a canonical non-negative integer."""

_FORBIDDEN_RUN_CHARS = "|[],/\\"
"""Not allowed in a run name: partition-key separators, and path separators (a run is one folder under a root)."""


class CheckpointError(ValueError):
    """A checkpoint is missing, unfinished, malformed or inconsistent; the message names its path."""


# --------------------------------------------------------------------------- keys and refs


def _check_run_name(run: str) -> None:
    if not isinstance(run, str) or not run or run.strip() != run:
        raise ValueError(f"run name must be a non-empty string without surrounding spaces, got {run!r}")
    bad = sorted({ch for ch in run if ch in _FORBIDDEN_RUN_CHARS or not ch.isprintable()})
    if bad:
        raise ValueError(f"run name {run!r} contains forbidden characters {bad} "
                         "(not allowed: '|', '[', ']', ',', '/', '\\')")
    if run in (".", ".."):
        raise ValueError(f"run name {run!r} is not a folder name under a checkpoint root")


def check_step(step: int) -> int:
    """``step`` as an ``int``.

    Raises:
        ValueError: a negative, non-integer or boolean step.
    """
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"checkpoint step must be a non-negative integer, got {step!r}")
    return int(step)


def checkpoint_key(run: str, step: int) -> str:
    """Partition key of a checkpoint, ``"<run>@<step>"`` (e.g. ``"demo-vit@0"``).

    Raises:
        ValueError: empty run name, ``.``/``..``, forbidden characters (``| [ ] , / \\``), or negative / non-int step.
    """
    _check_run_name(run)
    return f"{run}@{check_step(step)}"


def parse_checkpoint_key(key: str) -> tuple[str, int]:
    """Inverse of :func:`checkpoint_key`: ``"demo-vit@0" -> ("demo-vit", 0)``.

    Raises:
        ValueError: the key is not ``<run>@<step>`` with a valid run name and canonical step integer.
    """
    run, sep, step_text = str(key).rpartition("@")
    if not sep or not STEP_NAME.fullmatch(step_text):
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


# --------------------------------------------------------------------------- finalized steps


def finalized_steps(run_dir: str | os.PathLike) -> list[int]:
    """Sorted steps whose Orbax save has been finalized.

    Pure filesystem scan (no Orbax manager): a step counts only if its directory is named by a
    canonical non-negative integer and holds both ``_CHECKPOINT_METADATA`` and Orbax's
    ``commit_success.txt`` commit marker. In-flight saves (``<step>.orbax-checkpoint-tmp-*``) and
    step directories without the marker (a crash before finalize) are ignored, and so is a step entry that
    cannot be inspected (a symlink loop). A missing ``run_dir`` has no steps.

    Raises:
        CheckpointError: ``run_dir`` exists but cannot be listed.
    """
    return sorted(int(entry.name) for entry in step_entries(run_dir) if is_finalized(entry.path))


def step_entries(run_dir: str | os.PathLike, unreadable: list[tuple[Path, str]] | None = None) -> list[os.DirEntry]:
    """Entries of ``run_dir`` named as steps (canonical integers) that are folders; a missing ``run_dir`` has none.

    An entry that cannot be inspected (a symlink loop, no permission) is left out, and appended to
    ``unreadable`` as ``(path, reason)`` when given (discovery reports it).

    Raises:
        CheckpointError: ``run_dir`` itself cannot be listed (a symlink loop, no permission), naming it.
    """
    try:
        entries = list(os.scandir(run_dir))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as err:
        raise CheckpointError(f"checkpoint folder {run_dir} cannot be listed: {err.strerror or err}") from None
    found = []
    for entry in entries:
        if not STEP_NAME.fullmatch(entry.name):
            continue
        try:
            if entry.is_dir():
                found.append(entry)
        except OSError as err:  # a symlink loop (ELOOP) or an unreadable target
            if unreadable is not None:
                unreadable.append((Path(entry.path), f"cannot be read: {err.strerror or err}"))
    return found


def is_finalized(step_dir: str | os.PathLike) -> bool:
    """The step folder holds Orbax's ``_CHECKPOINT_METADATA`` and ``commit_success.txt`` commit marker."""
    return os.path.isfile(os.path.join(step_dir, COMMIT_MARKER)) and os.path.isfile(
        os.path.join(step_dir, STEP_METADATA_FILE))


def latest_step(run_dir: str | os.PathLike) -> int | None:
    """Largest finalized step in ``run_dir``, or ``None`` if there is none."""
    steps = finalized_steps(run_dir)
    return steps[-1] if steps else None


def finalized_step_dir(run_dir: str | os.PathLike, step: int | None) -> tuple[int, Path]:
    """``(step, <run_dir>/<step>)`` of a finalized step; ``step=None`` picks the latest one.

    Raises:
        CheckpointError: no finalized step at all, or ``step`` is not one of them.
    """
    run_dir = Path(run_dir)
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
