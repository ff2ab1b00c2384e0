"""Lineage: everything that produced one (task, checkpoint) evaluation, and the code version in it.

A :class:`Lineage` is built once per evaluation (by the scores step), published beside the scores as
``lineage.json`` and stored as one row of the metrics database's ``lineage`` table, where each
score row joins it on ``(task, checkpoint)``.

Typical use::

    lineage = Lineage(task="HSN", checkpoint="demo-vit@200", step=200, ..., code_version=code_version())
    lineage.extra_json()    # extra as canonical JSON, as the store writes it
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from birdassets import __version__

_PACKAGE = Path(__file__).resolve().parent

_TEXT_FIELDS = (
    "manifest_hash",
    "preset_name",
    "preset_hash",
    "folds_hash",
    "checkpoint_path",
    "encoder_family",
    "code_version",
)
"""Fields that must be strings (may be empty)."""

_NAME_FIELDS = ("task", "checkpoint", "run_id")
"""Fields that must be non-empty strings."""


@dataclass(frozen=True)
class Lineage:
    """Everything that produced one (task, checkpoint) evaluation.

    ``step`` is the training step of the checkpoint (None for encoders without steps);
    ``*_hash`` are content hashes of the dataset manifest, frontend preset and fold assignment;
    ``run_id`` is the pipeline run that computed the scores; ``extra`` is free-form JSON-able
    context (seeds, probe configs, ...). A bad field raises
    :class:`birdassets.store.StoreValidationError` at construction.
    """

    task: str
    checkpoint: str
    step: int | None
    manifest_hash: str
    preset_name: str
    preset_hash: str
    folds_hash: str
    checkpoint_path: str
    encoder_family: str
    code_version: str
    run_id: str
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in _NAME_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise _invalid(f"Lineage.{name} must be a non-empty str, got {value!r}")
        label = f"{self.task}/{self.checkpoint}"
        for name in _TEXT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, str):
                raise _invalid(f"Lineage.{name} of {label} must be a str, got {value!r}")
        if self.step is not None and (
            isinstance(self.step, (bool, np.bool_)) or not isinstance(self.step, (int, np.integer))
        ):
            raise _invalid(f"Lineage.step of {label} must be an int or None, got {self.step!r}")
        if not isinstance(self.extra, dict):
            raise _invalid(
                f"Lineage.extra of {label} must be a dict, got {type(self.extra).__name__}"
            )
        self.extra_json()  # fail now, not inside the write transaction

    def extra_json(self) -> str:
        """``extra`` as canonical JSON (sorted keys); numpy scalars/arrays become numbers/lists."""
        try:
            return json.dumps(
                self.extra, sort_keys=True, allow_nan=False, default=_json_default_strict
            )
        except (TypeError, ValueError) as err:
            raise _invalid(
                f"Lineage.extra of {self.task}/{self.checkpoint} is not JSON-serialisable: {err}"
            ) from err

    def to_json(self) -> str:
        """The whole record as indented JSON (``lineage.json``; ``Lineage(**json.loads(text))`` reads it back)."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True, allow_nan=False,
                          default=_json_default_strict) + "\n"


def content_hash(config: Any) -> str:
    """sha256 of a config dataclass's fields (nested dataclasses included), or of a JSON-able dict, as canonical
    JSON."""
    payload = json.dumps(dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _json_default_strict(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON-serialisable")


def _invalid(message: str) -> Exception:
    """The store's validation error: a Lineage is rejected as the store would reject its row.

    Imported here, not at module level, because the store imports this module.
    """
    from birdassets.store.connection import StoreValidationError

    return StoreValidationError(message)


@cache
def source_fingerprint() -> str:
    """sha256 over the package's Python sources (path + bytes), so an edited checkout is distinguishable."""
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        digest.update(str(path.relative_to(_PACKAGE)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def code_version() -> str:
    """``"<package version>+<12 hex of the source fingerprint>"``, e.g. ``"0.1.0+3fa2c1d09b7e"``."""
    return f"{__version__}+{source_fingerprint()[:12]}"
