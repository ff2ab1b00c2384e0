"""Checkpoints: what they are called and where they are (:mod:`.refs`); how they are read and written
(:mod:`.orbax_io`).

The names re-exported here are :mod:`.refs`' (references, keys, finalized steps, discovery, the error type):
a filesystem scan, cheap to import. The Orbax layout, saves and partial restores live in :mod:`.orbax_io`,
imported only where a step is read or written. Neither knows an encoder family: those are in
:mod:`birdassets.models`.
"""

from birdassets.checkpoints.refs import (
    COMMIT_MARKER,
    STEP_METADATA_FILE,
    CheckpointError,
    CheckpointRef,
    checkpoint_key,
    discover_checkpoints,
    finalized_step_dir,
    finalized_steps,
    latest_step,
    parse_checkpoint_key,
    resolve_checkpoint,
)

__all__ = [
    "COMMIT_MARKER",
    "STEP_METADATA_FILE",
    "CheckpointError",
    "CheckpointRef",
    "checkpoint_key",
    "discover_checkpoints",
    "finalized_step_dir",
    "finalized_steps",
    "latest_step",
    "parse_checkpoint_key",
    "resolve_checkpoint",
]
