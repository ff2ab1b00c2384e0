"""Cheap synthetic checkpoints for scale benchmarks: finalized step folders that hold only Orbax's small JSON
files (``_CHECKPOINT_METADATA``, ``metadata/metadata``, the commit marker) and no weights.

Discovery and the checkpoint sensor read nothing else, so 10,000 of them measure the sensor at a lab's scale in
seconds of disk time; loading one as an encoder fails (family ``"synthetic"`` is not registered), by design.
"""

from __future__ import annotations

import json
from pathlib import Path

from birdassets.checkpoints.discovery import STEP_ITEM_METADATA
from birdassets.checkpoints.refs import COMMIT_MARKER, STEP_METADATA_FILE, checkpoint_key

SYNTHETIC_FAMILY = "synthetic"
"""The family a synthetic step's metadata names (no encoder family of that name exists)."""


def write_synthetic_step(run_dir: Path, step: int) -> Path:
    """Write ``<run_dir>/<step>`` as a finalized step (the commit marker last) and return its folder."""
    step_dir = Path(run_dir) / str(step)
    (step_dir / STEP_ITEM_METADATA).parent.mkdir(parents=True, exist_ok=True)
    (step_dir / STEP_METADATA_FILE).write_text(json.dumps({"item_handlers": {}, "custom_metadata": {}}))
    (step_dir / STEP_ITEM_METADATA).write_text(json.dumps({"step": step, "family": SYNTHETIC_FAMILY}))
    (step_dir / COMMIT_MARKER).write_text("")
    return step_dir


def write_synthetic_runs(root: Path, runs: int, steps: int, every: int = 100) -> list[str]:
    """``runs`` run folders ``run-0000 ...`` under ``root``, each with ``steps`` finalized steps ``0, every,
    2 every, ...``; returns their keys (``"run-0000@0", ...``)."""
    keys = []
    for run in range(runs):
        name = f"run-{run:04d}"
        for step in range(0, steps * every, every):
            write_synthetic_step(Path(root) / name, step)
            keys.append(checkpoint_key(name, step))
    return keys
