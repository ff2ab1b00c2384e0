"""Checkpoints: what they are called and where they are (:mod:`.refs`); how they are read and written
(:mod:`.orbax_io`).

The names re-exported here are :mod:`.refs`' (references, keys, finalized steps, the error type) and
:mod:`.discovery`'s (the scan of the roots, skipped folders with reasons): a filesystem scan, cheap to import.
Weight integrity (checksum manifests, non-finite weights) is :mod:`.integrity`. The Orbax layout, saves and partial restores live in :mod:`.orbax_io`,
imported only where a step is read or written. Neither knows an encoder family: those are in
:mod:`birdassets.models`.
"""

from birdassets.checkpoints.discovery import (
    Discovery,
    SkippedFolder,
    discover_checkpoints,
    resolve_checkpoint,
    scan_checkpoints,
)
from birdassets.checkpoints.refs import (
    COMMIT_MARKER,
    STEP_METADATA_FILE,
    CheckpointError,
    CheckpointRef,
    checkpoint_key,
    finalized_step_dir,
    finalized_steps,
    latest_step,
    parse_checkpoint_key,
)

__all__ = [
    "COMMIT_MARKER",
    "STEP_METADATA_FILE",
    "CheckpointError",
    "CheckpointRef",
    "Discovery",
    "SkippedFolder",
    "checkpoint_key",
    "discover_checkpoints",
    "finalized_step_dir",
    "finalized_steps",
    "latest_step",
    "parse_checkpoint_key",
    "resolve_checkpoint",
    "scan_checkpoints",
]
