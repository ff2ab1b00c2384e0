"""Where birdassets keeps its data, and which data sets and checkpoint folders it benchmarks.

Everything lives under one folder, ``BIRDASSETS_HOME`` (environment variable; default ``~/.birdassets``);
:class:`~birdassets.layout.Layout` (``settings.layout``) names every path under it.

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
from birdassets.layout import Layout
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
    layout = Layout(home)
    tasks = tuple(DatasetConfig(name=name, source="demo", root=layout.demo_data(name)) for name in DEMO_TASK_NAMES)
    pretrain = DatasetConfig(name=DEMO_PRETRAIN, source="demo", root=layout.demo_data(DEMO_PRETRAIN), benchmark=False)
    return (*tasks, pretrain)


SETTINGS_KEYS = frozenset({"include_demo", "checkpoint_roots", "probes", "datasets", "fold_seed", "n_folds",
                           "presets", "pretrained"})
"""The top-level keys of ``birdassets.toml``."""


def read_config_file(config_file: Path) -> dict:
    """The TOML table of ``config_file`` (empty when there is none), its top-level keys checked."""
    if not config_file.exists():
        return {}
    try:
        raw = tomllib.loads(config_file.read_text())
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"{config_file}: not valid TOML ({error})") from error
    unknown = sorted(set(raw) - SETTINGS_KEYS)
    if unknown:
        raise SettingsError(f"{config_file}: unknown keys {unknown}; expected some of {sorted(SETTINGS_KEYS)}")
    return raw


def dataset_from_entry(entry: dict, index: int, config_file: Path) -> DatasetConfig:
    """One ``[[datasets]]`` entry; errors name the file and the entry."""
    try:
        return DatasetConfig(
            name=entry["name"],
            source=entry["source"],
            root=Path(entry["root"]).expanduser(),
            preset=entry.get("preset", default_preset(entry.get("source"))),
            birdset_config=entry.get("birdset_config"),
            benchmark=bool(entry.get("benchmark", True)),
        )
    except KeyError as error:
        raise SettingsError(f"{config_file}: datasets[{index}] lacks key {error}") from error
    except SettingsError as error:
        raise SettingsError(f"{config_file}: datasets[{index}]: {error}") from error


def configured_datasets(raw: dict, home: Path, config_file: Path) -> tuple[DatasetConfig, ...]:
    """The demo data sets (unless ``include_demo = false``) and the file's ``[[datasets]]``, names unique."""
    datasets = list(demo_datasets(home)) if raw.get("include_demo", True) else []
    datasets += [dataset_from_entry(entry, i, config_file) for i, entry in enumerate(raw.get("datasets", []))]
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise SettingsError(f"{config_file}: duplicate dataset names in {names}")
    return tuple(datasets)


def configured_presets(raw: dict, datasets: tuple[DatasetConfig, ...], config_file: Path) -> dict[str, MelPreset]:
    """The file's ``[presets.<name>]``; every data set's preset must exist (built-in or the file's)."""
    try:
        presets = presets_from_tables(raw.get("presets", {}), str(config_file))
    except PresetError as error:
        raise SettingsError(str(error)) from None
    for dataset in datasets:
        try:
            get_preset(dataset.preset, presets)
        except PresetError as error:
            raise SettingsError(f"{config_file}: dataset {dataset.name!r}: {error}") from None
    return presets


def configured_pretrained(raw: dict, config_file: Path) -> tuple[str, ...]:
    """The pretrained encoders to benchmark when installed (default: every known one)."""
    pretrained = tuple(raw.get("pretrained", KNOWN_PRETRAINED))
    unknown = sorted(set(pretrained) - set(KNOWN_PRETRAINED))
    if unknown:
        raise SettingsError(f"{config_file}: unknown pretrained encoders {unknown}; known: {KNOWN_PRETRAINED}")
    return pretrained


def configured_int(raw: dict, key: str, default: int, minimum: int, config_file: Path) -> int:
    """An integer setting of at least ``minimum`` (``n_folds``, ``fold_seed``)."""
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SettingsError(f"{config_file}: {key} must be an integer >= {minimum}, got {value!r}")
    return value


def load_settings(home: str | Path | None = None) -> Settings:
    """Read ``<home>/birdassets.toml`` (if present) on top of the defaults (the two demo tasks)."""
    home = Path(home).expanduser().resolve() if home is not None else home_from_env()
    layout = Layout(home)
    raw = read_config_file(layout.config_file)
    datasets = configured_datasets(raw, home, layout.config_file)
    presets = configured_presets(raw, datasets, layout.config_file)
    roots = [layout.checkpoints_root] + [Path(p).expanduser() for p in raw.get("checkpoint_roots", [])]
    return Settings(
        home=home,
        datasets=datasets,
        checkpoint_roots=tuple(dict.fromkeys(roots)),
        probes=tuple(raw.get("probes", DEFAULT_PROBES)),
        fold_seed=configured_int(raw, "fold_seed", 42, 0, layout.config_file),
        n_folds=configured_int(raw, "n_folds", 5, 2, layout.config_file),
        presets=tuple(presets.values()),
        pretrained=configured_pretrained(raw, layout.config_file),
        config_file=layout.config_file if layout.config_file.exists() else None,
    )
