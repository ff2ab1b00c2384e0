"""Where birdassets keeps its data, and which data sets and checkpoint folders it benchmarks.

Everything lives under one folder, ``BIRDASSETS_HOME`` (environment variable; default ``~/.birdassets``)::

    $BIRDASSETS_HOME/
      birdassets.toml                 optional: data sets, checkpoint roots, probes (see below)
      dagster/                        the Dagster instance (DAGSTER_HOME)
      data/<task>/                    generated demo audio (other sources point elsewhere)
      manifests/<task>.parquet        one row per recording
      mel/<task>/<fingerprint>/       TFDS mel dataset + window index
      folds/<task>.parquet            window -> validation fold
      checkpoints/<run>/<step>/       Orbax checkpoints (the demo's; users add their own roots)
      embeddings/<task>/<checkpoint>/ arrays + window ids
      probes/<task>/<checkpoint>/     probe predictions and parameters
      scores/<task>/<checkpoint>/     score tables (parquet) before they enter DuckDB
      birdassets.duckdb               scores, per-class scores, lineage

``birdassets.toml`` example::

    include_demo = true                       # keep the two demo tasks (default true)
    checkpoint_roots = ["/runs/ssl"]          # folders holding <run>/<step>/ Orbax checkpoints
    probes = ["linear", "mlp", "centroid"]
    pretrained = ["birdnet-v2.4"]             # pretrained encoders to benchmark when installed ([] for none)

    [[datasets]]
    name = "birdclef-2025"                    # the task partition key
    source = "birdclef"                       # birdclef | birdset | folder | demo
    root = "/data/birdclef-2025"
    preset = "birdclef2025"                   # default: birdset for source "birdset", else birdclef2025
    # benchmark = false                       # only for training (no task partition)

    [presets.birdset-hop256]                  # user frontend presets (see birdassets.frontends.presets)
    base = "birdset"                          # start from a built-in preset ...
    hop_length = 256                          # ... and override fields
    [presets.birdset-hop256.model_input]
    mean = -5.1

Settings are read once per process by :func:`load_settings`; the Dagster definitions are built from them
(static task partitions must be known when the code location loads).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from birdassets.frontends.presets import MelPreset, PresetError, get_preset, presets_from_tables
from birdassets.layout import CONFIG_FILE, Layout, safe_name  # noqa: F401  (safe_name: re-exported)
from birdassets.models.registry import PRETRAINED
from birdassets.sources.registry import SOURCES, default_preset

HOME_ENV = "BIRDASSETS_HOME"
DEMO_TASK_NAMES = ("demo-clear", "demo-noisy")
DEMO_PRETRAIN = "demo-pretrain"
DEFAULT_PROBES = ("linear", "mlp", "centroid")
#: pretrained encoders benchmarked like checkpoints when installed (see birdassets.models.registry.PRETRAINED)
KNOWN_PRETRAINED = tuple(PRETRAINED)
_TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class SettingsError(ValueError):
    """birdassets.toml (or the environment) is invalid; the message names the file and the key."""


@dataclass(frozen=True)
class DatasetConfig:
    """One benchmark task: an audio collection read by one source.

    Attributes:
        name: task name; the Dagster ``task`` partition key (letters, digits, ``-_.``).
        source: ``"demo"`` (generated), ``"birdclef"`` (train.csv + train_audio/), ``"birdset"`` (local HF copy)
            or ``"folder"`` (a folder of unlabelled recordings).
        root: folder of the collection.
        preset: frontend preset name: a built-in one (:data:`birdassets.frontends.presets.PRESETS`) or one
            of the file's ``[presets.<name>]``.
        birdset_config: BirdSet config name (e.g. ``"HSN"``) for ``source="birdset"``.
        benchmark: ``False`` for data sets that only feed training (no ``task`` partition, never scored).
    """

    name: str
    source: str
    root: Path
    preset: str = "birdclef2025"
    birdset_config: str | None = None
    benchmark: bool = True

    def __post_init__(self) -> None:
        if not _TASK_NAME.match(self.name):
            raise SettingsError(f"dataset name {self.name!r} must use letters, digits, '-', '_' or '.'")
        if self.source not in SOURCES:
            raise SettingsError(f"dataset {self.name!r}: unknown source {self.source!r}; expected one of {tuple(SOURCES)}")


@dataclass(frozen=True)
class Settings:
    """Resolved configuration plus the on-disk layout under ``home``."""

    home: Path
    datasets: tuple[DatasetConfig, ...]
    checkpoint_roots: tuple[Path, ...]
    probes: tuple[str, ...] = DEFAULT_PROBES
    fold_seed: int = 42
    n_folds: int = 5
    presets: tuple[MelPreset, ...] = ()
    pretrained: tuple[str, ...] = KNOWN_PRETRAINED
    config_file: Path | None = field(default=None, compare=False)

    # ---- lookup -------------------------------------------------------------------------------
    @property
    def task_names(self) -> tuple[str, ...]:
        """The benchmark tasks (the ``task`` partitions)."""
        return tuple(d.name for d in self.datasets if d.benchmark)

    def dataset(self, task: str) -> DatasetConfig:
        for candidate in self.datasets:
            if candidate.name == task:
                return candidate
        raise SettingsError(f"unknown data set {task!r}; configured: {[d.name for d in self.datasets]}")

    def preset(self, name: str) -> MelPreset:
        """A built-in or user preset by name."""
        return get_preset(name, {p.name: p for p in self.presets})

    def task_preset(self, task: str) -> MelPreset:
        """The frontend preset of a configured data set."""
        return self.preset(self.dataset(task).preset)

    def task_fingerprint(self, task: str) -> str:
        """16 hex of everything configured for a task (source, root, BirdSet config, preset parameters): the
        task sensor rebuilds a task whose manifest was made under another fingerprint."""
        dataset = self.dataset(task)
        payload = {"source": dataset.source, "root": str(dataset.root), "birdset_config": dataset.birdset_config,
                   "preset": self.preset(dataset.preset).content_hash()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    # ---- layout -------------------------------------------------------------------------------
    @property
    def layout(self) -> Layout:
        """Every path under ``home``."""
        return Layout(self.home)


def home_from_env() -> Path:
    """``$BIRDASSETS_HOME`` or ``~/.birdassets``, absolute."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".birdassets").expanduser().resolve()


def demo_datasets(home: Path) -> tuple[DatasetConfig, ...]:
    """The two demo benchmark tasks plus the demo's pretraining data set."""
    tasks = tuple(DatasetConfig(name=name, source="demo", root=Layout(home).demo_data(name)) for name in DEMO_TASK_NAMES)
    pretrain = DatasetConfig(name=DEMO_PRETRAIN, source="demo", root=Layout(home).demo_data(DEMO_PRETRAIN), benchmark=False)
    return (*tasks, pretrain)


def load_settings(home: str | Path | None = None) -> Settings:
    """Read ``<home>/birdassets.toml`` (if present) on top of the defaults (the two demo tasks)."""
    home = Path(home).expanduser().resolve() if home is not None else home_from_env()
    config_file = home / CONFIG_FILE
    raw: dict = {}
    if config_file.exists():
        try:
            raw = tomllib.loads(config_file.read_text())
        except tomllib.TOMLDecodeError as error:
            raise SettingsError(f"{config_file}: not valid TOML ({error})") from error
    known = {"include_demo", "checkpoint_roots", "probes", "datasets", "fold_seed", "n_folds", "presets", "pretrained"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SettingsError(f"{config_file}: unknown keys {unknown}; expected some of {sorted(known)}")

    datasets = list(demo_datasets(home)) if raw.get("include_demo", True) else []
    for index, entry in enumerate(raw.get("datasets", [])):
        try:
            datasets.append(
                DatasetConfig(
                    name=entry["name"],
                    source=entry["source"],
                    root=Path(entry["root"]).expanduser(),
                    preset=entry.get("preset", default_preset(entry.get("source"))),
                    birdset_config=entry.get("birdset_config"),
                    benchmark=bool(entry.get("benchmark", True)),
                )
            )
        except KeyError as error:
            raise SettingsError(f"{config_file}: datasets[{index}] lacks key {error}") from error
        except SettingsError as error:
            raise SettingsError(f"{config_file}: datasets[{index}]: {error}") from error
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise SettingsError(f"{config_file}: duplicate dataset names in {names}")
    try:
        presets = presets_from_tables(raw.get("presets", {}), str(config_file))
    except PresetError as error:
        raise SettingsError(str(error)) from None
    for dataset in datasets:
        try:
            get_preset(dataset.preset, presets)
        except PresetError as error:
            raise SettingsError(f"{config_file}: dataset {dataset.name!r}: {error}") from None

    pretrained = tuple(raw.get("pretrained", KNOWN_PRETRAINED))
    unknown_pretrained = sorted(set(pretrained) - set(KNOWN_PRETRAINED))
    if unknown_pretrained:
        raise SettingsError(f"{config_file}: unknown pretrained encoders {unknown_pretrained}; known: {KNOWN_PRETRAINED}")

    roots = [Layout(home).checkpoints_root] + [Path(p).expanduser() for p in raw.get("checkpoint_roots", [])]
    return Settings(
        home=home,
        datasets=tuple(datasets),
        checkpoint_roots=tuple(dict.fromkeys(roots)),
        probes=tuple(raw.get("probes", DEFAULT_PROBES)),
        fold_seed=int(raw.get("fold_seed", 42)),
        n_folds=int(raw.get("n_folds", 5)),
        presets=tuple(presets.values()),
        pretrained=pretrained,
        config_file=config_file if config_file.exists() else None,
    )
