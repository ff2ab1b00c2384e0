"""The schema of ``birdassets.toml``: every key once, with its type, range, allowed values, default and meaning.

:data:`TOP_LEVEL_KEYS` and :data:`DATASET_KEYS` are the one declaration. :func:`schema_problems` checks a parsed
file against them (types, ranges, allowed values, required and unknown keys) and :func:`settings_reference`
renders them as the README's table of settings (``test_settings_schema`` keeps the README equal to it), so the
check and the documentation cannot drift apart.

A problem is one string naming the key as a dotted path (``datasets[1].root``), what was expected and what was
found, in TOML notation; :func:`birdassets.settings.read_config_file` puts the file in front::

    birdassets.toml: checkpoint_roots: expected a list of paths, got the string "/tmp/abc"
    birdassets.toml: n_folds: expected an integer >= 2, got the boolean true
    birdassets.toml: probes[0]: unknown probe 'lin'; expected one of ('linear', ...) (did you mean 'linear'?)

TOML ``true`` is never an integer (Python's ``bool`` is an ``int`` subclass, so this is checked explicitly) and the
strings ``"no"`` / ``"yes"`` are never booleans. This module stays light to import: probe names are written out in
:data:`KNOWN_PROBES` (importing :mod:`birdassets.probes` loads JAX; a test pins them to its ``PROBES``).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from birdassets.annotations.labelling import LABEL_COLUMN, MIN_OVERLAP_FRACTION, MIN_OVERLAP_S
from birdassets.execution import EXECUTORS, ExecutionConfig
from birdassets.models.registry import PRETRAINED
from birdassets.sources.registry import SOURCES

KNOWN_PROBES = ("linear", "mlp", "centroid", "linear-asl")
"""The keys of :data:`birdassets.probes.PROBES`, the probes a ``probes`` list may name."""
DEFAULT_PROBES = ("linear", "mlp", "centroid")
"""Probes trained on every task x checkpoint when ``probes`` is not set."""
KNOWN_PRETRAINED = tuple(PRETRAINED)
"""Pretrained encoders benchmarked like checkpoints when installed (:data:`birdassets.models.registry.PRETRAINED`)."""
TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
"""A data set name (a Dagster partition key and one path component)."""

Kind = Literal["bool", "int", "number", "fraction", "str", "path", "list", "table", "tables"]


@dataclass(frozen=True)
class Key:
    """One key of the settings file.

    Attributes:
        name: the key as written in the file.
        kind: ``bool``, ``int``, ``number`` (integer or float), ``fraction`` (a number in [0, 1]), ``str``, ``path`` (an absolute path or one starting with ``~``), ``list`` (of
            ``item`` values), ``table`` (checked by its own reader) or ``tables`` (an array of tables).
        meaning: one line for the documentation.
        default: the value when the key is absent (``None``: required, or no default worth printing).
        item: kind of a list's items (``str`` or ``path``).
        minimum: smallest allowed integer or number, or fewest items of a list.
        choices: ``choices()``: the allowed strings (read when checked, so a source registered later counts).
        noun: what one allowed string is called in messages (``probe``, ``source``).
        required: the key must be present.
    """

    name: str
    kind: Kind
    meaning: str
    default: Any = None
    item: Kind | None = None
    minimum: int | None = None
    choices: Callable[[], Iterable[str]] | None = None
    noun: str = "value"
    required: bool = False

    @property
    def expected(self) -> str:
        """What the value must be, in words (for messages and the documentation)."""
        if self.kind == "list":
            items = f"{self.noun}s" if self.choices else "paths" if self.item == "path" else "strings"
            return f"a non-empty list of {items}" if self.minimum else f"a list of {items}"
        return _EXPECTED[self.kind].format(minimum=self.minimum)


_EXPECTED = {
    "bool": "true or false",
    "int": "an integer >= {minimum}",
    "number": "a number >= {minimum}",
    "fraction": "a number from 0 to 1",
    "str": "a string",
    "path": "an absolute path (a string, ~ allowed)",
    "table": "a table",
    "tables": "an array of tables",
}


def _sources() -> Iterable[str]:
    return tuple(SOURCES)


def _probes() -> Iterable[str]:
    return KNOWN_PROBES


def _pretrained() -> Iterable[str]:
    return KNOWN_PRETRAINED


TOP_LEVEL_KEYS: tuple[Key, ...] = (
    Key("include_demo", "bool", "keep the demo tasks demo-clear and demo-noisy (and the demo's training sets "
        "demo-pretrain and demo-orca)", True),
    Key("checkpoint_roots", "list", "folders holding `<run>/<step>/` Orbax checkpoints, besides "
        "`$BIRDASSETS_HOME/checkpoints`", (), item="path"),
    Key("probes", "list", "probes trained on every task x checkpoint", DEFAULT_PROBES, item="str",
        minimum=1, choices=_probes, noun="probe"),
    Key("pretrained", "list", "pretrained encoders benchmarked when installed (`[]` for none)",
        KNOWN_PRETRAINED, item="str", choices=_pretrained, noun="pretrained encoder"),
    Key("n_folds", "int", "cross-validation folds of every task", 5, minimum=2),
    Key("fold_seed", "int", "seed of the fold assignment", 42, minimum=0),
    Key("executor", "str", "how the steps of a run execute: `in_process`, `multiprocess` (a process per step) or "
        "`celery` (steps on `birdassets worker` processes; see Deployment)", ExecutionConfig.executor,
        choices=lambda: EXECUTORS, noun="executor"),
    Key("max_concurrent_steps", "int", "executor `multiprocess`: steps of one run at once",
        ExecutionConfig.max_concurrent_steps, minimum=1),
    Key("celery_broker", "str", "executor `celery`: the broker's URL", ExecutionConfig.celery_broker),
    Key("celery_backend", "str", "executor `celery`: where step results go", ExecutionConfig.celery_backend),
    Key("datasets", "tables", "`[[datasets]]`: one entry per data set (keys below)"),
    Key("presets", "table", "`[presets.<name>]`: user frontend presets (see Spectrogram frontends)"),
)
"""Every top-level key of ``birdassets.toml``."""

DATASET_KEYS: tuple[Key, ...] = (
    Key("name", "str", "the task name (letters, digits, `-_.`), a `task` partition", required=True),
    Key("source", "str", "the reader of the collection", required=True, choices=_sources, noun="source"),
    Key("root", "path", "folder of the collection", required=True),
    Key("preset", "str", "frontend preset: a built-in one or a `[presets.<name>]` (default: the source's)"),
    Key("birdset_config", "str", "BirdSet configuration name (e.g. `HSN`) for source `birdset`"),
    Key("benchmark", "bool", "`false`: only for training or detection (no `task` partition, never scored)", True),
    Key("label_column", "str", "source `raven`: the selection tables' column holding the class", LABEL_COLUMN),
    Key("min_overlap_s", "number", "source `raven`: seconds of overlap with a selection that label a window",
        MIN_OVERLAP_S, minimum=0),
    Key("min_overlap_fraction", "fraction", "source `raven`: ... or this fraction of the selection's length, if "
        "less", MIN_OVERLAP_FRACTION),
)
"""Every key of one ``[[datasets]]`` entry."""


def default(name: str) -> Any:
    """The default of a top-level key (:data:`TOP_LEVEL_KEYS`)."""
    return next(key.default for key in TOP_LEVEL_KEYS if key.name == name)


def toml_value(value: Any) -> str:
    """``value`` as written in TOML (``true``, ``"text"``, ``["a", "b"]`` for a list or tuple)."""
    return json.dumps(value)


def found(value: Any) -> str:
    """What the file holds, in words: ``the string "no"``, ``the boolean true``, ``a table``."""
    if isinstance(value, bool):
        return f"the boolean {toml_value(value)}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {toml_value(value)}"
    if isinstance(value, list):
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'}"
    if isinstance(value, dict):
        return "a table"
    return f"the {type(value).__name__} {value}"


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known`` (difflib), or nothing when none is close."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _scalar_problem(key: Key, kind: Kind, value: Any, path: str) -> str | None:
    """The problem with one scalar value of ``kind`` at ``path`` (None: it fits)."""
    expected = key.expected if kind == key.kind else _EXPECTED[kind]
    if kind == "bool" and not isinstance(value, bool):
        return f"{path}: expected {expected}, got {found(value)}"
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, int) or value < key.minimum):
        return f"{path}: expected {expected}, got {found(value)}"
    if kind in ("number", "fraction") and (isinstance(value, bool) or not isinstance(value, (int, float))
                                           or not (value >= (key.minimum or 0) and (kind == "number" or value <= 1))):
        return f"{path}: expected {expected}, got {found(value)}"
    if kind in ("str", "path") and not isinstance(value, str):
        return f"{path}: expected {expected}, got {found(value)}"
    if kind == "path" and not Path(value).expanduser().is_absolute():
        why = " (a relative path would depend on the working folder)" if value else ""
        return f"{path}: expected {expected}, got {found(value)}{why}"
    if kind == "str" and key.choices is not None:
        allowed = tuple(key.choices())
        if value not in allowed:
            return f"{path}: unknown {key.noun} {value!r}; expected one of {allowed}{did_you_mean(value, allowed)}"
    return None


def _value_problems(key: Key, value: Any, path: str) -> list[str]:
    """The problems of one key's value (a list: every bad item, and repeated items)."""
    if key.kind in ("table", "tables"):
        fits = isinstance(value, dict) if key.kind == "table" else isinstance(value, list)
        return [] if fits else [f"{path}: expected {key.expected}, got {found(value)}"]
    if key.kind != "list":
        problem = _scalar_problem(key, key.kind, value, path)
        return [problem] if problem else []
    if not isinstance(value, list) or len(value) < (key.minimum or 0):
        hint = f" (a list of one is written [{toml_value(value)}])" if isinstance(value, str) else ""
        return [f"{path}: expected {key.expected}, got {found(value)}{hint}"]
    problems = [_scalar_problem(key, key.item, item, f"{path}[{i}]") for i, item in enumerate(value)]
    repeated = sorted({item for item in value if isinstance(item, str) and value.count(item) > 1})
    if repeated:
        problems.append(f"{path}: {', '.join(map(repr, repeated))} listed more than once")
    return [problem for problem in problems if problem]


def table_problems(table: Mapping[str, Any], keys: tuple[Key, ...], where: str) -> list[str]:
    """Every problem of ``table`` against ``keys``: unknown keys (with the closest known one), missing required
    keys, wrong types and values. ``where`` is the table's dotted path (``""`` for the top level)."""
    known = {key.name: key for key in keys}
    prefix = f"{where}." if where else ""
    problems = []
    for name, value in table.items():
        if name not in known:
            problems.append(f"{prefix}{name}: unknown key{did_you_mean(name, known)}; known keys: {', '.join(known)}")
        else:
            problems += _value_problems(known[name], value, f"{prefix}{name}")
    missing = [key.name for key in keys if key.required and key.name not in table]
    problems += [f"{where or 'settings'}: missing required key {name!r}" for name in missing]
    return problems


def dataset_problems(entries: list) -> list[str]:
    """The problems of the ``[[datasets]]`` entries (each a table of :data:`DATASET_KEYS`, a well-formed name)."""
    problems = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            problems.append(f"datasets[{i}]: expected a table, got {found(entry)}")
            continue
        problems += table_problems(entry, DATASET_KEYS, f"datasets[{i}]")
        name = entry.get("name")
        if isinstance(name, str) and not TASK_NAME.match(name):
            problems.append(f"datasets[{i}].name: expected letters, digits, '-', '_' or '.' (not first), "
                            f"got {found(name)}")
    return problems


def schema_problems(document: Mapping[str, Any]) -> list[str]:
    """Every problem of a parsed ``birdassets.toml`` against the schema, in file order (empty: it is valid)."""
    problems = table_problems(document, TOP_LEVEL_KEYS, "")
    if isinstance(document.get("datasets"), list):
        problems += dataset_problems(document["datasets"])
    presets = document.get("presets")
    if isinstance(presets, dict):
        problems += [f"presets.{name}: expected a table, got {found(table)}"
                     for name, table in presets.items() if not isinstance(table, dict)]
    return problems


def _reference_row(key: Key, path: str) -> str:
    written = "required" if key.required else "" if key.default is None else f"`{toml_value(key.default)}`"
    allowed = f"; allowed: {', '.join(key.choices())}" if key.choices else ""
    return f"| `{path}` | {key.expected}{allowed} | {written} | {key.meaning} |"


def settings_reference() -> str:
    """The table of every setting (key, expected value, default, meaning) in Markdown, as the README shows it."""
    rows = [_reference_row(key, key.name) for key in TOP_LEVEL_KEYS]
    rows += [_reference_row(key, f"datasets[].{key.name}") for key in DATASET_KEYS]
    return "\n".join(["| key | expected | default | meaning |", "|---|---|---|---|", *rows])
