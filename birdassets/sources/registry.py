"""One entry point from a configured data set to its manifest: sources differ only here."""

from __future__ import annotations

from birdassets.settings import DatasetConfig
from birdassets.sources.manifest import Manifest


def read_source(dataset: DatasetConfig) -> Manifest:
    """Read (or, for the demo, generate then read) the manifest of a configured data set."""
    if dataset.source == "demo":
        from birdassets.sources.demo import read_demo

        return read_demo(dataset.name, dataset.root)
    if dataset.source == "birdclef":
        from birdassets.sources.birdclef import read_birdclef

        return read_birdclef(dataset.root)
    if dataset.source == "birdset":
        from birdassets.sources.birdset import read_birdset

        return read_birdset(dataset.root, dataset.birdset_config)
    raise ValueError(f"dataset {dataset.name!r}: unknown source {dataset.source!r}")
