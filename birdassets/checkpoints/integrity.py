"""Weight integrity: a sha256 manifest of a step's array files, and a count of non-finite weights per parameter.

A step the project writes carries ``<step>/checksums.json``::

    {"algorithm": "sha256", "files": {"state/d/3f0c...": "<hex digest>", "state/_METADATA": "...", ...}}

covering every file under ``state/`` (the OCDBT array chunks, index and tree metadata). It is written (atomically)
once Orbax has finalized the step, and the step's ``_CHECKPOINT_METADATA`` announces it
(``custom_metadata[MANIFEST_FLAG]``), so discovery can tell a step whose manifest is still missing from a foreign
checkpoint that never had one. :func:`verify_manifest` re-hashes the files on restore (streamed, one pass);
a foreign step has no manifest, and its restored arrays are checked for NaN/inf instead (:func:`check_finite`).
No Orbax here: files and numpy arrays only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from birdassets.atomic import write_json
from birdassets.checkpoints.refs import STEP_METADATA_FILE, CheckpointError
from birdassets.sources.manifest import file_sha256

MANIFEST_FILE = "checksums.json"
"""The checksum manifest in a step folder."""
MANIFEST_FLAG = "birdassets_checksums"
"""Key of ``_CHECKPOINT_METADATA``'s ``custom_metadata`` set (to :data:`MANIFEST_FILE`) when a step gets one."""
HASHED_ITEM = "state"
"""The item whose files the manifest covers (the arrays)."""
ALGORITHM = "sha256"
MAX_NAMED = 5
"""Parameters named in a non-finite refusal (the rest are counted)."""


def hashed_files(step_dir: Path) -> list[str]:
    """Paths (relative to ``step_dir``, ``/``-separated, sorted) of every regular file under ``state/``."""
    root = step_dir / HASHED_ITEM
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            if path.is_file() and not path.is_symlink():
                found.append(path.relative_to(step_dir).as_posix())
    return sorted(found)


def write_manifest(step_dir: str | os.PathLike) -> Path:
    """Hash every array file of a finalized step and publish ``<step_dir>/checksums.json`` atomically."""
    step_dir = Path(step_dir)
    files = {name: file_sha256(step_dir / name) for name in hashed_files(step_dir)}
    return write_json(step_dir / MANIFEST_FILE, {"algorithm": ALGORITHM, "files": files}, indent=1, sort_keys=True)


def missing_manifest(step_dir: str | os.PathLike) -> bool:
    """The step's ``_CHECKPOINT_METADATA`` announces a checksum manifest that is not there (yet)."""
    step_dir = Path(step_dir)
    if (step_dir / MANIFEST_FILE).is_file():
        return False
    try:
        announced = json.loads((step_dir / STEP_METADATA_FILE).read_text()).get("custom_metadata") or {}
    except (OSError, ValueError, AttributeError):
        return False  # discovery reports broken Orbax metadata
    return isinstance(announced, dict) and bool(announced.get(MANIFEST_FLAG))


def read_manifest(step_dir: Path) -> dict[str, str] | None:
    """``{relative path: digest}`` of a step's manifest, or ``None`` when it has none (a foreign checkpoint).

    Raises:
        CheckpointError: a manifest that is not the JSON written by :func:`write_manifest`.
    """
    path = step_dir / MANIFEST_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise CheckpointError(f"checksum manifest {path} is unreadable: {err}") from None
    files = data.get("files") if isinstance(data, dict) else None
    if data.get("algorithm") != ALGORITHM or not isinstance(files, dict) or not files:
        raise CheckpointError(f"checksum manifest {path} is malformed (expected {ALGORITHM} digests of the state files)")
    return files


def verify_manifest(step_dir: str | os.PathLike) -> bool:
    """Re-hash the files a step's manifest lists; ``False`` when the step has no manifest (foreign checkpoint).

    Raises:
        CheckpointError: a listed file is missing or its digest differs (named), or a state file is unlisted.
    """
    step_dir = Path(step_dir)
    expected = read_manifest(step_dir)
    if expected is None:
        return False
    unlisted = sorted(set(hashed_files(step_dir)) - set(expected))
    if unlisted:
        raise CheckpointError(f"checkpoint {step_dir}: {unlisted[0]} is not in its checksum manifest "
                              f"({len(unlisted)} unlisted file(s)); refusing to restore")
    for name, digest in sorted(expected.items()):
        path = step_dir / name
        try:
            found = file_sha256(path)
        except OSError as err:
            raise CheckpointError(f"checkpoint {step_dir}: {path} listed in its checksum manifest cannot be read "
                                  f"({err.strerror or err}); refusing to restore") from None
        if found != digest:
            raise CheckpointError(f"checkpoint {step_dir}: {path} does not match its checksum "
                                  f"({ALGORITHM} {found[:12]}… != {digest[:12]}…): the file is corrupted; "
                                  "refusing to restore")
    return True


def non_finite_counts(tree: Any, prefix: tuple[str, ...] = ()) -> dict[str, int]:
    """``{"blocks.0.attn.query.kernel": n}`` for every floating-point leaf holding ``n > 0`` NaN/inf values."""
    if isinstance(tree, Mapping):
        out: dict[str, int] = {}
        for key, value in tree.items():
            out.update(non_finite_counts(value, (*prefix, str(key))))
        return out
    if isinstance(tree, (list, tuple)):
        return {k: v for i, value in enumerate(tree) for k, v in non_finite_counts(value, (*prefix, str(i))).items()}
    values = np.asarray(tree) if tree is not None else None
    if values is None or not np.issubdtype(values.dtype, np.floating):
        return {}
    count = int(values.size - np.count_nonzero(np.isfinite(values)))
    return {".".join(prefix): count} if count else {}


def check_finite(tree: Any, *, where: str) -> None:
    """Refuse restored weights holding NaN or inf, naming the parameters and counts.

    Raises:
        CheckpointError: e.g. ``"checkpoint runs/x/3: 2532 non-finite weights (NaN/inf) in 2 parameters:
            blocks.0.mlp.fc1.kernel (2500), norm.scale (32); refusing to restore"``.
    """
    counts = non_finite_counts(tree)
    if not counts:
        return
    worst = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    named = ", ".join(f"{name} ({count})" for name, count in worst[:MAX_NAMED])
    more = f" and {len(worst) - MAX_NAMED} more" if len(worst) > MAX_NAMED else ""
    raise CheckpointError(f"checkpoint {where}: {sum(counts.values())} non-finite weights (NaN/inf) in "
                          f"{len(counts)} parameter(s): {named}{more}; refusing to restore")
