"""Every source birdassets can read, in one table: name -> reader and default frontend preset.

A source turns one configured data set (:class:`birdassets.settings.DatasetConfig`) into an
:class:`~birdassets.sources.ingest.IngestResult` (manifest + quarantine, counts that reconcile). Adding a source is
one reader module plus one :class:`Source` entry in :data:`SOURCES`; ``birdassets.toml`` validation
(:func:`birdassets.settings.load_settings`) and ingestion (:func:`ingest_source`) read this table.

This module stays light to import (the settings import it): the readers, which pull in pandas, pyarrow and
libsndfile, are imported only when a data set is read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from birdassets.frontends.presets import MelPreset
    from birdassets.settings import DatasetConfig
    from birdassets.sources.ingest import IngestResult
    from birdassets.sources.manifest import Manifest

FALLBACK_PRESET = "birdclef2025"
"""Frontend preset of a data set whose source is unknown (it fails validation anyway)."""


@dataclass(frozen=True)
class Source:
    """One kind of audio collection.

    Attributes:
        name: the ``source`` value in ``birdassets.toml``.
        read: ``read(dataset, preset) -> IngestResult``; ``preset`` (``None``: no minimum) sets the shortest usable
            file (``preset.min_last_s`` seconds, see :func:`min_duration_s`).
        default_preset: frontend preset of a data set of this source that names none.
        description: one line for listings.
        labelled: whether its recordings carry species labels (``False``: only detection and embedding).
    """

    name: str
    read: Callable[[DatasetConfig, MelPreset | None], IngestResult]
    default_preset: str
    description: str
    labelled: bool = True


def min_duration_s(preset: MelPreset | None) -> float:
    """Shortest usable file, seconds: the preset's ``min_last_s`` (no window fits in less), 0 without a preset."""
    return preset.min_last_s if preset is not None else 0.0


def _read_demo(dataset: DatasetConfig, preset: MelPreset | None) -> IngestResult:
    from birdassets.sources.demo import read_demo

    return read_demo(dataset.name, dataset.root, min_duration_s=min_duration_s(preset))


def _read_birdclef(dataset: DatasetConfig, preset: MelPreset | None) -> IngestResult:
    from birdassets.sources.birdclef import read_birdclef

    return read_birdclef(dataset.root, min_duration_s=min_duration_s(preset))


def _read_birdset(dataset: DatasetConfig, preset: MelPreset | None) -> IngestResult:
    from birdassets.sources.birdset import read_birdset

    return read_birdset(dataset.root, dataset.birdset_config, min_duration_s=min_duration_s(preset))


def _read_folder(dataset: DatasetConfig, preset: MelPreset | None) -> IngestResult:
    from birdassets.sources.folder import read_folder

    return read_folder(dataset.root, min_duration_s=min_duration_s(preset))


def _read_clips(dataset: DatasetConfig, preset: MelPreset | None) -> IngestResult:
    from birdassets.sources.clips import read_clips

    return read_clips(dataset.root, min_duration_s=min_duration_s(preset))


def _read_raven(dataset: DatasetConfig, preset: MelPreset | None) -> IngestResult:
    from birdassets.frontends.presets import PRESETS
    from birdassets.sources.raven import read_raven

    preset = preset or PRESETS[FALLBACK_PRESET]
    return read_raven(dataset.root, preset, dataset.label_rule, min_duration_s=min_duration_s(preset))


SOURCES: dict[str, Source] = {
    source.name: source
    for source in (
        Source("demo", _read_demo, "birdclef2025", "synthetic bird calls, generated into the data set's root"),
        Source("birdclef", _read_birdclef, "birdclef2025", "BirdCLEF Kaggle folder: train.csv + train_audio/"),
        Source("birdset", _read_birdset, "birdset", "local copy of one BirdSet configuration (HF parquet/arrow)"),
        Source("folder", _read_folder, "birdclef2025", "a folder of unlabelled recordings", labelled=False),
        Source("clips", _read_clips, "orcahello", "labelled clips: positive/ and negative/ (+ test/)"),
        Source("raven", _read_raven, "birdclef2025", "annotated soundscapes: recordings + Raven selection tables"),
    )
}
"""Every known source by name; BirdSet data gets BirdSet's frontend, labelled clips (a call detector's training data)
OrcaHello's, the others BirdCLEF 2025's."""


def default_preset(source: str | None) -> str:
    """Frontend preset of a data set of ``source`` that names none (:data:`FALLBACK_PRESET` for an unknown one)."""
    return SOURCES[source].default_preset if source in SOURCES else FALLBACK_PRESET


def ingest_source(dataset: DatasetConfig, preset: MelPreset | None = None) -> IngestResult:
    """Read (or, for the demo, generate then read) a configured data set: manifest + quarantine.

    Args:
        dataset: the data set's configuration.
        preset: the task's frontend preset; files shorter than its ``min_last_s`` (no window could
            be cut) are quarantined as ``too_short``. ``None``: no minimum duration.

    Returns:
        An :class:`~birdassets.sources.ingest.IngestResult` whose counts reconcile (found = ingested + quarantined
        files).

    Raises:
        ValueError: the data set's source is not registered.
    """
    if dataset.source not in SOURCES:
        known = tuple(SOURCES)
        raise ValueError(f"dataset {dataset.name!r}: unknown source {dataset.source!r}; expected one of {known}")
    return SOURCES[dataset.source].read(dataset, preset)


def read_source(dataset: DatasetConfig, preset: MelPreset | None = None) -> Manifest:
    """The manifest of :func:`ingest_source` alone (its quarantine is dropped here: callers that
    must report unusable files, like the ``raw_audio`` asset, use :func:`ingest_source`)."""
    return ingest_source(dataset, preset).manifest
