"""Discovery: every finalized checkpoint under the checkpoint roots, and the folders skipped with a reason.

One bad folder never stops the scan: a folder that cannot be read (a symlink loop, no permission), a step whose
metadata is broken or names another step, a step whose checksum manifest is announced but missing, a run or step
whose path resolves outside its root -- each becomes a :class:`SkippedFolder` with a named reason, and the others
are found. A run name found under two roots is ambiguous (keys are ``"<run>@<step>"``): both copies are skipped,
the reason naming both paths. Roots that are the same folder (``/a`` and ``/a/../a``, a symlink) count once.

Only small JSON files are read (``_CHECKPOINT_METADATA``, ``metadata/metadata``, ``state/_METADATA``), once per
commit of a step; no Orbax import, so a sensor can call it every tick.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from birdassets.checkpoints.integrity import MANIFEST_FILE, missing_manifest
from birdassets.checkpoints.refs import (
    COMMIT_MARKER,
    STEP_METADATA_FILE,
    CheckpointError,
    CheckpointRef,
    finalized_steps,
    is_finalized,
    parse_checkpoint_key,
    step_entries,
)

STEP_ITEM_METADATA = Path("metadata") / "metadata"
"""The ``metadata`` item's JSON (``{"step", "family", ...}``), as Orbax's ``JsonCheckpointHandler`` writes it."""
STEP_ITEM_CONFIG = Path("config") / "metadata"
"""The ``config`` item's JSON: the model's architecture and, for a model of mel windows, their ``"preset"``."""
STATE_TREE_METADATA = Path("state") / "_METADATA"
"""The ``state`` item's tree metadata (a JSON object with ``tree_metadata``)."""


@dataclass(frozen=True)
class SkippedFolder:
    """A folder under a checkpoint root that discovery left out, and why (e.g. ``"cannot be read: Too many
    levels of symbolic links"``)."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class Discovery:
    """What a scan of the roots found: the finalized checkpoints, sorted by (run, step), and the skipped folders."""

    checkpoints: tuple[CheckpointRef, ...]
    skipped: tuple[SkippedFolder, ...]

    @property
    def keys(self) -> list[str]:
        """``["<run>@<step>", ...]`` of :attr:`checkpoints`."""
        return [ref.key for ref in self.checkpoints]


def unique_roots(roots: Iterable[str | os.PathLike]) -> list[Path]:
    """``roots`` in order, each folder once (compared by its resolved path)."""
    seen, out = set(), []
    for root in roots:
        real = os.path.realpath(root)
        if real not in seen:
            seen.add(real)
            out.append(Path(root))
    return out


def inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """``path`` resolves (symlinks followed) to ``root`` or below it."""
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


# --------------------------------------------------------------------------- one step


def _json_object(path: Path) -> dict:
    """The JSON object in ``path``; ``ValueError`` with the reason when it is unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except OSError as err:
        raise ValueError(f"{path} cannot be read: {err.strerror or err}") from None
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds a JSON {type(value).__name__}, not an object")
    return value


def step_problem(step_dir: Path, step: int) -> str | None:
    """Why a finalized step folder cannot be registered, or ``None`` when it can (the JSON files are read again
    only when one of them changed: their inode, size and mtime key a cache)."""
    try:
        (step_dir / COMMIT_MARKER).stat()
    except OSError as err:
        return f"cannot be read: {err.strerror or err}"
    stamps = tuple(_stamp(step_dir / name) for name in (STEP_METADATA_FILE, STEP_ITEM_METADATA, STATE_TREE_METADATA,
                                                        MANIFEST_FILE))
    return _step_problem(str(step_dir), step, stamps)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


@functools.lru_cache(maxsize=65536)  # 10,000s of steps: a listing of one run never re-reads the others
def _step_problem(step_dir: str, step: int, stamps: tuple) -> str | None:
    folder = Path(step_dir)
    try:
        _json_object(folder / STEP_METADATA_FILE)
        if (folder / STEP_ITEM_METADATA).exists():
            saved = _json_object(folder / STEP_ITEM_METADATA).get("step", step)
            if saved != step:
                return f"its metadata says step {saved!r} but the folder is named {step} (a renamed or copied step)"
        if (folder / "state").exists() and not isinstance(
                _json_object(folder / STATE_TREE_METADATA).get("tree_metadata"), dict):
            return f"broken metadata: {folder / STATE_TREE_METADATA} has no tree_metadata object"
    except ValueError as err:
        return f"broken metadata: {err}"
    if missing_manifest(folder):
        return f"its checksum manifest {MANIFEST_FILE} is missing (the save was interrupted, or is still finishing)"
    return None


AUDIO = "audio"
"""What a checkpoint observes unless its metadata says otherwise (``"observes"``)."""


def observed_data(ref: CheckpointRef) -> str:
    """What the checkpoint's model observes: its ``metadata`` item's ``"observes"`` (``"slds"`` for TiDHy trained
    on the synthetic benchmark), else :data:`AUDIO` (unreadable metadata too: loading reports the problem)."""
    try:
        observes = _json_object(ref.step_dir / STEP_ITEM_METADATA).get("observes", AUDIO)
    except ValueError:
        return AUDIO
    return observes if isinstance(observes, str) else AUDIO


def input_preset(ref: CheckpointRef) -> str | None:
    """The frontend preset of the mel windows the checkpoint's model reads (its ``config`` item's ``"preset"``);
    ``None`` when it names none (a model that reads any task) or the config cannot be read (loading reports it)."""
    try:
        preset = _json_object(ref.step_dir / STEP_ITEM_CONFIG).get("preset")
    except ValueError:
        return None
    return preset if isinstance(preset, str) else None


# --------------------------------------------------------------------------- runs and roots


def run_dirs(root: Path, skipped: list[SkippedFolder]) -> list[Path]:
    """The run folders directly under ``root`` (sorted); unreadable entries and names that cannot be runs skipped."""
    try:
        entries = sorted(os.scandir(root), key=lambda entry: entry.name)
    except OSError as err:
        skipped.append(SkippedFolder(root, f"checkpoint root cannot be listed: {err.strerror or err}"))
        return []
    runs = []
    for entry in entries:
        try:
            if not entry.is_dir():
                if entry.is_symlink() and not os.path.exists(entry.path):
                    os.stat(entry.path)  # a loop or a dangling link: the OSError says which
                continue
        except OSError as err:
            skipped.append(SkippedFolder(Path(entry.path), f"cannot be read: {err.strerror or err}"))
            continue
        runs.append(Path(entry.path))
    return runs


def named_as_run(run_dir: Path, skipped: list[SkippedFolder]) -> bool:
    """``run_dir``'s name can be a run name (``a,b`` cannot); otherwise it is appended to ``skipped``."""
    try:
        CheckpointRef(run=run_dir.name, step=0, run_dir=run_dir)
    except ValueError as err:
        skipped.append(SkippedFolder(run_dir, f"not a run folder: {err}"))
        return False
    return True


def run_checkpoints(root: Path, run_dir: Path, skipped: list[SkippedFolder],
                     pending: list[int] | None = None) -> list[CheckpointRef]:
    """The registrable finalized steps of one run folder; every other step folder skipped with its reason, and
    (when ``pending`` is given) the steps not registrable yet appended to it (in flight, still finishing, broken)."""
    if not inside(run_dir, root):
        skipped.append(SkippedFolder(run_dir, f"resolves to {os.path.realpath(run_dir)}, outside the checkpoint "
                                              f"root {root}; refused"))
        return []
    unreadable: list[tuple[Path, str]] = []
    try:
        entries = step_entries(run_dir, unreadable)
    except CheckpointError as err:
        skipped.append(SkippedFolder(run_dir, str(err)))
        return []
    skipped.extend(SkippedFolder(path, reason) for path, reason in unreadable)
    refs = []
    for step in sorted(int(entry.name) for entry in entries):
        ref = step_ref(run_dir, step, skipped)
        if ref is not None:
            refs.append(ref)
        elif pending is not None:
            pending.append(step)
    return refs


def step_ref(run_dir: Path, step: int, skipped: list[SkippedFolder]) -> CheckpointRef | None:
    """The checkpoint of ``<run_dir>/<step>`` when it is finalized and registrable; ``None`` when it is not
    finalized (in flight, or crashed before finalize: not a checkpoint yet) or has a problem (appended to
    ``skipped`` with its reason)."""
    step_dir = run_dir / str(step)
    if not is_finalized(step_dir):
        return None
    problem = (None if inside(step_dir, run_dir) else f"resolves to {os.path.realpath(step_dir)}, outside "
               f"its run folder; refused") or step_problem(step_dir, step)
    if problem:
        skipped.append(SkippedFolder(step_dir, problem))
        return None
    return CheckpointRef(run=run_dir.name, step=step, run_dir=run_dir)


def _drop_ambiguous(found: dict[str, list[tuple[Path, list[CheckpointRef]]]],
                    skipped: list[SkippedFolder]) -> list[CheckpointRef]:
    """The checkpoints of runs found under one root only; a run name under several roots skipped, naming each."""
    refs = []
    for run, copies in found.items():
        if len(copies) == 1:
            refs.extend(copies[0][1])
            continue
        paths = " and ".join(str(run_dir) for run_dir, _ in copies)
        for run_dir, _ in copies:
            skipped.append(SkippedFolder(run_dir, f"run name {run!r} is in several checkpoint roots ({paths}); "
                                                  "run names must be unique across roots: rename one"))
    return refs


def scan_checkpoints(roots: Iterable[str | os.PathLike]) -> Discovery:
    """Every registrable finalized step under ``roots`` and every folder skipped, with its reason.

    A root that does not exist has nothing; a folder name that cannot be a run name (``a,b``) is skipped.
    """
    skipped: list[SkippedFolder] = []
    found: dict[str, list[tuple[Path, list[CheckpointRef]]]] = {}
    for root in unique_roots(roots):
        if not root.exists():
            continue
        for run_dir in run_dirs(root, skipped):
            if not named_as_run(run_dir, skipped):
                continue
            refs = run_checkpoints(root, run_dir, skipped)
            if refs:
                found.setdefault(run_dir.name, []).append((run_dir, refs))
    refs = sorted(_drop_ambiguous(found, skipped), key=lambda ref: (ref.run, ref.step))
    return Discovery(tuple(refs), tuple(skipped))


def discover_checkpoints(roots: Iterable[str | os.PathLike]) -> list[CheckpointRef]:
    """The checkpoints of :func:`scan_checkpoints` (skipped folders left out), sorted by (run, step)."""
    return list(scan_checkpoints(roots).checkpoints)


def resolve_checkpoint(roots: Iterable[str | os.PathLike], key: str) -> CheckpointRef:
    """The finalized checkpoint named ``key`` (``"<run>@<step>"``) under ``roots``; never a path outside them.

    Raises:
        CheckpointError: a key that is not a plain run name and step (``/abs@0``, ``..@0``), several roots
            holding the run (both named), no root holding that finalized step, a step resolving outside its root,
            or one discovery would skip (the reason named).
    """
    try:
        run, step = parse_checkpoint_key(key)
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    roots = unique_roots(roots)
    holding = [(root, root / run) for root in roots if finalized_steps(root / run)]
    if len(holding) > 1:
        raise CheckpointError(f"checkpoint {key!r}: run {run!r} is in several checkpoint roots: "
                              f"{' and '.join(str(run_dir) for _, run_dir in holding)}; run names must be unique "
                              "across roots: rename one")
    if not holding or step not in finalized_steps(holding[0][1]):
        raise CheckpointError(
            f"checkpoint {key!r}: no finalized step {step} of run {run!r} under {[str(r) for r in roots]}"
        )
    (root, run_dir), = holding
    ref = CheckpointRef(run=run, step=step, run_dir=run_dir)
    if not inside(ref.step_dir, root):
        raise CheckpointError(f"checkpoint {key!r}: {ref.step_dir} resolves to {os.path.realpath(ref.step_dir)}, "
                              f"outside the checkpoint root {root}; refused")
    problem = step_problem(ref.step_dir, step)
    if problem:
        raise CheckpointError(f"checkpoint {key!r} ({ref.step_dir}): {problem}")
    return ref

