"""Incremental discovery for the checkpoint sensor: the checkpoints that are new since the last tick, in batches.

A full :func:`~birdassets.checkpoints.discovery.scan_checkpoints` lists every step folder of every run and reads
its JSON stamps (10,000 steps: about 3 s). Between two ticks almost nothing changes, so the watcher remembers for
each run folder its inode and mtime and the step folders that were not registrable yet (in flight, crashed, still
finishing, broken). Adding, renaming or removing a step folder changes its run folder's mtime, so a run folder
whose stamp is unchanged is not listed again: only its pending steps are looked at again (Orbax's commit-file
mode finalizes a step inside a folder that already exists). A stamp younger than :data:`RACY_NS` is not trusted
(filesystems with coarse mtimes): that run folder is listed again at the next tick.

New checkpoints are handed out at most ``limit`` per tick, by run folder and step; the rest wait in the backlog. The
whole state is one JSON string, the sensor's cursor: ``{"runs": {run_dir: [ino, mtime_ns, registrable,
[pending steps]]}, "backlog": {run_dir: [steps]}}``, so its size grows with the runs and the waiting steps,
not with every checkpoint ever seen. A cursor it cannot read (an older format) starts from a full listing; steps
already registered are told apart by ``known``, so nothing is registered twice.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from birdassets.checkpoints.discovery import (
    SkippedFolder,
    named_as_run,
    run_checkpoints,
    run_dirs,
    step_ref,
    unique_roots,
)
from birdassets.checkpoints.refs import CheckpointRef, checkpoint_key

RACY_NS = 2_000_000_000
"""A run folder modified less than this long (ns) before the tick is listed again at the next tick."""


@dataclass(frozen=True)
class RunStamp:
    """What the watcher remembers of one run folder: its inode and mtime (``-1``: not trusted), how many
    registrable steps it holds, and its step folders that are not registrable yet."""

    inode: int
    mtime_ns: int
    registrable: int
    pending: tuple[int, ...] = ()


@dataclass(frozen=True)
class WatchState:
    """The sensor's cursor: run stamps by run folder, and the checkpoints found but not handed out yet
    (``{run_dir: (step, ...)}``)."""

    runs: Mapping[str, RunStamp] = field(default_factory=dict)
    backlog: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def to_json(self) -> str:
        runs = {run: [s.inode, s.mtime_ns, s.registrable, list(s.pending)] for run, s in self.runs.items()}
        return json.dumps({"runs": runs, "backlog": {run: list(steps) for run, steps in self.backlog.items()}},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> WatchState:
        """The state in ``text``; an empty state (list everything) for ``None`` or a cursor of another format."""
        try:
            data = json.loads(text or "")
            runs = {run: RunStamp(int(i), int(m), int(n), tuple(map(int, p))) for run, (i, m, n, p)
                    in data["runs"].items()}
            return cls(runs, {run: tuple(map(int, steps)) for run, steps in data["backlog"].items()})
        except (ValueError, TypeError, KeyError, AttributeError):
            return cls()

    @property
    def waiting(self) -> int:
        """Checkpoints found and not handed out yet."""
        return sum(len(steps) for steps in self.backlog.values())


@dataclass(frozen=True)
class Tick:
    """One tick of the watcher: the checkpoints to register now (at most the limit, sorted by run and step),
    the folders skipped by the listings of this tick, the state for the next tick, and how many run folders
    were listed (the others were unchanged)."""

    new: tuple[CheckpointRef, ...]
    skipped: tuple[SkippedFolder, ...]
    state: WatchState
    listed: int


def watch_checkpoints(roots: Iterable[str | os.PathLike], state: WatchState, known: Container[str],
                      limit: int) -> Tick:
    """The checkpoints under ``roots`` that are neither in ``known`` (registered keys) nor handed out before,
    at most ``limit`` of them; the rest stay in the returned state's backlog."""
    skipped: list[SkippedFolder] = []
    copies: dict[str, list[tuple[Path, RunStamp, list[CheckpointRef]]]] = {}
    listed = 0
    now = time.time_ns()
    for root in unique_roots(roots):
        for run_dir in run_dirs(root, skipped) if root.exists() else []:
            stamp, refs, was_listed = _watch_run(root, run_dir, state.runs.get(str(run_dir)), now, skipped)
            listed += was_listed
            if stamp is not None:
                copies.setdefault(run_dir.name, []).append((run_dir, stamp, refs))
    runs, found = _unambiguous(copies, skipped)
    backlog = _merge_backlog(state.backlog, found, runs, known)
    new, rest = _take(backlog, limit)
    return Tick(tuple(new), tuple(skipped), WatchState(runs, rest), listed)


def _watch_run(root: Path, run_dir: Path, stamp: RunStamp | None, now: int,
               skipped: list[SkippedFolder]) -> tuple[RunStamp | None, list[CheckpointRef], bool]:
    """``(stamp, checkpoints found, listed?)`` of one run folder: listed when its stamp changed, else only its
    pending steps looked at again; ``(None, [], True)`` when it is not a usable run folder (reason in ``skipped``)."""
    if not named_as_run(run_dir, skipped):
        return None, [], True
    try:
        info = os.stat(run_dir)
    except OSError as err:
        skipped.append(SkippedFolder(run_dir, f"cannot be read: {err.strerror or err}"))
        return None, [], True
    pending: list[int] = []
    if stamp is not None and (stamp.inode, stamp.mtime_ns) == (info.st_ino, info.st_mtime_ns):
        refs = []
        for step in stamp.pending:
            if not (run_dir / str(step)).is_dir():
                continue  # removed since
            ref = step_ref(run_dir, step, skipped)
            if ref is None:
                pending.append(step)
            else:
                refs.append(ref)
        registrable, listed = stamp.registrable + len(refs), False
    else:
        refs = run_checkpoints(root, run_dir, skipped, pending)
        registrable, listed = len(refs), True
    mtime = info.st_mtime_ns if now - info.st_mtime_ns > RACY_NS else -1
    return RunStamp(info.st_ino, mtime, registrable, tuple(pending)), refs, listed


def _unambiguous(copies: Mapping[str, list[tuple[Path, RunStamp, list[CheckpointRef]]]],
                 skipped: list[SkippedFolder]) -> tuple[dict[str, RunStamp], list[CheckpointRef]]:
    """Stamps and found checkpoints of the run names held by one root; a name whose checkpoints are in several
    roots is skipped in every root (naming all) and forgotten, so it is listed again once it is unique."""
    runs, found = {}, []
    for name, held in copies.items():
        holding = [copy for copy in held if copy[1].registrable]
        if len(holding) > 1:
            paths = " and ".join(str(run_dir) for run_dir, _, _ in holding)
            skipped.extend(SkippedFolder(run_dir, f"run name {name!r} is in several checkpoint roots ({paths}); "
                                                  "run names must be unique across roots: rename one")
                           for run_dir, _, _ in holding)
            continue
        for run_dir, stamp, refs in held:
            runs[str(run_dir)] = stamp
            found.extend(refs)
    return runs, found


def _merge_backlog(backlog: Mapping[str, tuple[int, ...]], found: list[CheckpointRef],
                   runs: Mapping[str, RunStamp], known: Container[str]) -> dict[str, list[int]]:
    """The waiting steps and the found ones, less the registered keys and the runs that are gone or ambiguous."""
    merged = {run: set(steps) for run, steps in backlog.items() if run in runs}
    for ref in found:
        merged.setdefault(str(ref.run_dir), set()).add(ref.step)
    return {run: sorted(step for step in steps if checkpoint_key(Path(run).name, step) not in known)
            for run, steps in sorted(merged.items())}


def _take(backlog: Mapping[str, list[int]], limit: int) -> tuple[list[CheckpointRef], dict[str, tuple[int, ...]]]:
    """The first ``limit`` waiting checkpoints (by run folder, then step) and what is left waiting."""
    taken, rest = [], {}
    for run, steps in backlog.items():
        room = max(limit - len(taken), 0)
        taken.extend(CheckpointRef(run=Path(run).name, step=step, run_dir=Path(run)) for step in steps[:room])
        if steps[room:]:
            rest[run] = tuple(steps[room:])
    return taken, rest
