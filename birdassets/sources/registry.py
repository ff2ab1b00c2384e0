"""One entry point from a configured data set to its manifest and quarantine: sources differ only here."""

from __future__ import annotations

from birdassets.frontends.presets import MelPreset
from birdassets.settings import DatasetConfig
from birdassets.sources.ingest import IngestResult
from birdassets.sources.manifest import Manifest


def ingest_source(dataset: DatasetConfig, preset: MelPreset | None = None) -> IngestResult:
    """Read (or, for the demo, generate then read) a configured data set: manifest + quarantine.

    Args:
        dataset: the data set's configuration.
        preset: the task's frontend preset; files shorter than its ``min_last_s`` (no window could
            be cut) are quarantined as ``too_short``. ``None``: no minimum duration.

    Returns:
        An :class:`IngestResult` whose counts reconcile (found = ingested + quarantined files).
    """
    min_duration_s = preset.min_last_s if preset is not None else 0.0
    if dataset.source == "demo":
        from birdassets.sources.demo import read_demo

        return read_demo(dataset.name, dataset.root, min_duration_s=min_duration_s)
    if dataset.source == "birdclef":
        from birdassets.sources.birdclef import read_birdclef

        return read_birdclef(dataset.root, min_duration_s=min_duration_s)
    if dataset.source == "birdset":
        from birdassets.sources.birdset import read_birdset

        return read_birdset(dataset.root, dataset.birdset_config, min_duration_s=min_duration_s)
    if dataset.source == "folder":
        from birdassets.sources.folder import read_folder

        return read_folder(dataset.root, min_duration_s=min_duration_s)
    raise ValueError(f"dataset {dataset.name!r}: unknown source {dataset.source!r}")


def read_source(dataset: DatasetConfig, preset: MelPreset | None = None) -> Manifest:
    """The manifest of :func:`ingest_source` alone (its quarantine is dropped here: callers that
    must report unusable files, like the ``raw_audio`` asset, use :func:`ingest_source`)."""
    return ingest_source(dataset, preset).manifest
