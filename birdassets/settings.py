"""Where birdassets keeps its data, and which data sets and checkpoint folders it benchmarks.

Everything lives under one folder, ``BIRDASSETS_HOME`` (environment variable; default ``~/.birdassets``);
:class:`~birdassets.layout.Layout` (``settings.layout``) names every path under it.

``birdassets.toml`` example::

    include_demo = true                       # keep the two demo tasks and demo data sets (default true)
    checkpoint_roots = ["/runs/ssl"]          # folders holding <run>/<step>/ Orbax checkpoints
    probes = ["linear", "mlp", "centroid"]    # also "linear-asl"
    pretrained = ["birdnet-v2.4"]             # pretrained encoders to benchmark when installed ([] for none)
    n_folds = 5                               # cross-validation folds (>= 2)
    fold_seed = 42                            # seed of the fold assignment (>= 0)
    executor = "in_process"                   # or multiprocess, or celery (steps on `birdassets worker`s)
    celery_broker = "pyamqp://guest@localhost:5672//"  # executor celery: the broker

    [[datasets]]
    name = "birdclef-2025"                    # the task partition key
    source = "birdclef"                       # birdclef | birdset | folder | clips | raven | demo
    root = "/data/birdclef-2025"
    preset = "birdclef2025"                   # default: birdset for source "birdset", else birdclef2025
    # benchmark = false                       # only for training (no task partition)

    [presets.birdset-hop256]                  # user frontend presets (see birdassets.frontends.presets)
    base = "birdset"                          # start from a built-in preset ...
    hop_length = 256                          # ... and override fields
    [presets.birdset-hop256.model_input]
    mean = -5.1

Every key, its type, range, allowed values and default are declared once in :mod:`birdassets.toml_schema`
(the README's table of settings is rendered from it). :func:`load_settings` checks the file against it before using
any value: a wrong type (``probes = "linear"``), an out-of-range number, an unknown probe, source or key, or broken
TOML is a :class:`SettingsError` of one line naming the file and each key (``datasets[1].root``).

Settings are read once per process by :func:`load_settings`; the Dagster definitions are built from them
(static task partitions must be known when the code location loads).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from birdassets.annotations.labelling import LabelRule
from birdassets.execution import ExecutionConfig, ExecutionError
from birdassets.frontends.presets import MelPreset, PresetError, get_preset, presets_from_tables
from birdassets.layout import Layout
from birdassets.sources.registry import SOURCES, default_preset
from birdassets.toml_schema import DEFAULT_PROBES, KNOWN_PRETRAINED, TASK_NAME, default, schema_problems

HOME_ENV = "BIRDASSETS_HOME"
DEMO_TASK_NAMES = ("demo-clear", "demo-noisy")
DEMO_PRETRAIN = "demo-pretrain"
DEMO_ORCA = "demo-orca"
LABEL_RULE_KEYS = tuple(rule_field.name for rule_field in dataclasses.fields(LabelRule))
"""The ``[[datasets]]`` keys that make its :class:`LabelRule` (source ``raven``)."""


class SettingsError(ValueError):
    """birdassets.toml (or the environment) is invalid; the message names the file and the key."""


@dataclass(frozen=True)
class DatasetConfig:
    """One benchmark task: an audio collection read by one source.

    Attributes:
        name: task name; the Dagster ``task`` partition key (letters, digits, ``-_.``).
        source: ``"demo"`` (generated), ``"birdclef"`` (train.csv + train_audio/), ``"birdset"`` (local HF copy),
            ``"folder"`` (a folder of unlabelled recordings), ``"clips"`` (labelled clips: positive/ and negative/,
            optional test/positive/ and test/negative/; :mod:`birdassets.sources.clips`) or ``"raven"`` (recordings
            with Raven selection tables; :mod:`birdassets.sources.raven`).
        root: folder of the collection.
        preset: frontend preset name: a built-in one (:data:`birdassets.frontends.presets.PRESETS`) or one
            of the file's ``[presets.<name>]``.
        birdset_config: BirdSet config name (e.g. ``"HSN"``) for ``source="birdset"``.
        benchmark: ``False`` for data sets that only feed training (no ``task`` partition, never scored).
        label_rule: for ``source="raven"``: the selection tables' label column and the overlap that labels a
            window (:class:`~birdassets.annotations.labelling.LabelRule`).
    """

    name: str
    source: str
    root: Path
    preset: str = "birdclef2025"
    birdset_config: str | None = None
    benchmark: bool = True
    label_rule: LabelRule = LabelRule()

    def __post_init__(self) -> None:
        if not TASK_NAME.match(self.name):
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
    fold_seed: int = default("fold_seed")
    n_folds: int = default("n_folds")
    presets: tuple[MelPreset, ...] = ()
    pretrained: tuple[str, ...] = KNOWN_PRETRAINED
    execution: ExecutionConfig = ExecutionConfig()
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
        if dataset.label_rule != LabelRule():
            payload["label_rule"] = dataclasses.asdict(dataset.label_rule)
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
    """The two demo benchmark tasks, the demo's pretraining data set and its hydrophone clips (``demo-orca``: a
    killer-whale call detector's training clips, OrcaHello frontend); the last two are not benchmarked."""
    layout = Layout(home)
    tasks = tuple(DatasetConfig(name=name, source="demo", root=layout.demo_data(name)) for name in DEMO_TASK_NAMES)
    pretrain = DatasetConfig(name=DEMO_PRETRAIN, source="demo", root=layout.demo_data(DEMO_PRETRAIN), benchmark=False)
    orca = DatasetConfig(name=DEMO_ORCA, source="demo", root=layout.demo_data(DEMO_ORCA), preset="orcahello",
                         benchmark=False)
    return (*tasks, pretrain, orca)


def toml_error(error: tomllib.TOMLDecodeError, text: str) -> str:
    """tomllib's message, with the line and column also at the end of the document (tomllib names none there)."""
    message = str(error)
    if message.endswith("(at end of document)"):
        line, column = text.count("\n") + 1, len(text) - text.rfind("\n")
        message = message.removesuffix(")") + f", line {line}, column {column})"
    return message


def parse_config_file(config_file: Path) -> dict:
    """The TOML table of ``config_file`` (empty when there is none); unreadable or broken TOML is a
    :class:`SettingsError` of one line naming the file (and tomllib's line and column)."""
    if not config_file.exists():
        return {}
    try:
        text = config_file.read_bytes().decode("utf-8")
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"{config_file}: not valid TOML: {toml_error(error, text)}") from None
    except UnicodeDecodeError as error:
        raise SettingsError(f"{config_file}: not valid TOML: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise SettingsError(f"{config_file}: cannot read the settings ({error.strerror})") from None


def read_config_file(config_file: Path) -> dict:
    """The TOML table of ``config_file`` (empty when there is none), checked against the schema
    (:mod:`birdassets.toml_schema`): every problem in one message naming the file and each key."""
    raw = parse_config_file(config_file)
    problems = schema_problems(raw)
    if problems:
        raise SettingsError(f"{config_file}: " + "; ".join(problems))
    return raw


def dataset_from_entry(entry: dict) -> DatasetConfig:
    """One ``[[datasets]]`` entry, already checked against the schema."""
    return DatasetConfig(
        name=entry["name"],
        source=entry["source"],
        root=Path(entry["root"]).expanduser(),
        preset=entry.get("preset", default_preset(entry["source"])),
        birdset_config=entry.get("birdset_config"),
        benchmark=entry.get("benchmark", True),
        label_rule=LabelRule(**{key: entry[key] for key in LABEL_RULE_KEYS if key in entry}),
    )


def configured_datasets(raw: dict, home: Path, config_file: Path) -> tuple[DatasetConfig, ...]:
    """The demo data sets (unless ``include_demo = false``) and the file's ``[[datasets]]``, names unique."""
    datasets = list(demo_datasets(home)) if raw.get("include_demo", default("include_demo")) else []
    datasets += [dataset_from_entry(entry) for entry in raw.get("datasets", [])]
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise SettingsError(f"{config_file}: datasets: duplicate dataset names in {names}")
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


def configured_execution(raw: dict, config_file: Path) -> ExecutionConfig:
    """The file's executor settings (:class:`~birdassets.execution.ExecutionConfig`)."""
    try:
        return ExecutionConfig(**{f.name: raw[f.name] for f in dataclasses.fields(ExecutionConfig) if f.name in raw})
    except ExecutionError as error:
        raise SettingsError(f"{config_file}: {error}") from error


def load_settings(home: str | Path | None = None) -> Settings:
    """Read ``<home>/birdassets.toml`` (if present) on top of the defaults (the two demo tasks).

    Raises:
        SettingsError: the file is unreadable, not TOML, or breaks the schema (:mod:`birdassets.toml_schema`);
            the message is one line naming the file and each offending key.
    """
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
        fold_seed=raw.get("fold_seed", default("fold_seed")),
        n_folds=raw.get("n_folds", default("n_folds")),
        presets=tuple(presets.values()),
        pretrained=tuple(raw.get("pretrained", KNOWN_PRETRAINED)),
        execution=configured_execution(raw, layout.config_file),
        config_file=layout.config_file if layout.config_file.exists() else None,
    )
