"""The manifest: one typed table row per recording (or labelled segment) of a data set.

Every source (BirdCLEF folder, BirdSet copy, demo generator, plain folder) differs only in how it
builds a :class:`Manifest`; everything downstream (mel datasets, folds, probes, lineage) reads this.

Columns of ``Manifest.table`` (a pandas DataFrame, one row per recording or labelled segment):

=============  ========  =====================================================================
column         dtype     meaning
=============  ========  =====================================================================
recording_id   str       unique within the manifest (segments of one file get distinct ids,
                         e.g. ``"<file-stem>@12.0"``)
path           str       absolute path of the audio file
duration_s     float64   duration of the whole file, seconds
sample_rate    int64     native sample rate of the file, Hz
channels       int64     channel count of the file
primary_label  str       main class ("" when the row has no primary class, e.g. soundscapes)
labels         object    list[str]: primary + secondary labels (multi-hot source); may be empty
split          str       ``"train"`` (focal recordings, folds are drawn from these) or ``"test"``
                         (held-out soundscape windows)
start_s        float64   start of the labelled segment in the file, seconds (NaN: whole file)
end_s          float64   end of the labelled segment, seconds (NaN: whole file)
sha256         str       hex sha256 of the file's bytes
=============  ========  =====================================================================

``Manifest.classes`` is the ordered label space (the column order of every label matrix).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from birdassets.atomic import atomic_path

COLUMNS: tuple[str, ...] = (
    "recording_id",
    "path",
    "duration_s",
    "sample_rate",
    "channels",
    "primary_label",
    "labels",
    "split",
    "start_s",
    "end_s",
    "sha256",
)
SPLITS: tuple[str, ...] = ("train", "test")

_CLASSES_KEY = b"birdassets.classes"
_ANNOTATIONS_KEY = b"birdassets.annotations"


def multi_hot(label_lists: Iterable[Sequence[str]], classes: Sequence[str]) -> np.ndarray:
    """``[rows, classes]`` uint8: row ``i`` has a 1 in the column of each name in ``label_lists[i]``."""
    index = {name: i for i, name in enumerate(classes)}
    label_lists = list(label_lists)
    matrix = np.zeros((len(label_lists), len(classes)), dtype=np.uint8)
    for row, labels in enumerate(label_lists):
        matrix[row, [index[label] for label in labels]] = 1
    return matrix


class ManifestError(ValueError):
    """A manifest (or the source it was read from) is malformed; the message names the problem."""


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Manifest:
    """A data set's recordings plus its ordered label space.

    Attributes:
        table: one row per recording/segment with the columns in :data:`COLUMNS`.
        classes: ordered class names; column ``c`` of :meth:`label_matrix` is ``classes[c]``.
        annotations: the annotation files the labels were read from, ``(path, sha256)`` sorted by path (e.g. Raven
            selection tables; empty when the labels come with the audio).
    """

    table: pd.DataFrame
    classes: tuple[str, ...]
    annotations: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        missing = [c for c in COLUMNS if c not in self.table.columns]
        if missing:
            raise ManifestError(f"manifest is missing columns {missing}")
        if self.table["recording_id"].duplicated().any():
            dupes = self.table.loc[self.table["recording_id"].duplicated(), "recording_id"].tolist()[:5]
            raise ManifestError(f"manifest has duplicate recording_id values, e.g. {dupes}")
        bad_splits = sorted(set(self.table["split"]) - set(SPLITS))
        if bad_splits:
            raise ManifestError(f"manifest has unknown splits {bad_splits}; expected {list(SPLITS)}")
        if len(set(self.classes)) != len(self.classes):
            raise ManifestError("manifest classes are not unique")
        known = set(self.classes)
        unknown = sorted({label for labels in self.table["labels"] for label in labels} - known)
        if unknown:
            raise ManifestError(f"manifest rows use labels outside its classes: {unknown[:10]}")

    @classmethod
    def from_rows(cls, rows: list[dict], classes: tuple[str, ...] | None = None,
                  annotations: tuple[tuple[str, str], ...] = ()) -> "Manifest":
        """Build a manifest from dicts with the :data:`COLUMNS` keys.

        ``start_s``/``end_s`` may be omitted (whole file). ``classes`` defaults to the sorted union
        of all labels. Rows are sorted by (split, recording_id) so the result is deterministic.
        """
        table = pd.DataFrame(rows)
        for column in ("start_s", "end_s"):
            if column not in table.columns:
                table[column] = np.nan
        if table.empty:
            table = pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
        table["labels"] = table["labels"].map(lambda labels: [str(x) for x in labels])
        table = table.astype(
            {
                "recording_id": str,
                "path": str,
                "duration_s": "float64",
                "sample_rate": "int64",
                "channels": "int64",
                "primary_label": str,
                "split": str,
                "start_s": "float64",
                "end_s": "float64",
                "sha256": str,
            }
        )
        table = table[list(COLUMNS)].sort_values(["split", "recording_id"], kind="stable").reset_index(drop=True)
        if classes is None:
            classes = tuple(sorted({label for labels in table["labels"] for label in labels}))
        return cls(table=table, classes=tuple(classes), annotations=tuple(annotations))

    def split(self, name: str) -> pd.DataFrame:
        """Rows of one split (a view-safe copy)."""
        return self.table[self.table["split"] == name].reset_index(drop=True)

    def label_matrix(self, table: pd.DataFrame | None = None) -> np.ndarray:
        """Multi-hot labels, ``[rows, classes]`` uint8, for ``table`` (default: the whole manifest)."""
        return multi_hot((self.table if table is None else table)["labels"], self.classes)

    def content_hash(self) -> str:
        """sha256 over the rows (paths excluded: the same data moved elsewhere hashes the same) and classes;
        computed once per manifest (a manifest is not modified after construction)."""
        if "_content_hash" not in self.__dict__:
            object.__setattr__(self, "_content_hash", self._hash_rows())
        return self.__dict__["_content_hash"]

    def annotations_hash(self) -> str | None:
        """sha256 over the annotation files' names and contents (not their folders: moved tables hash the same),
        ``None`` without annotation files."""
        if not self.annotations:
            return None
        lines = sorted(f"{Path(path).name}\t{digest}" for path, digest in self.annotations)
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def _hash_rows(self) -> str:
        stable = self.table.drop(columns=["path"]).copy()
        stable["labels"] = stable["labels"].map(lambda labels: "|".join(labels))
        payload = json.dumps(
            {"classes": list(self.classes), "rows": stable.to_dict(orient="records")},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def write(self, path: str | Path) -> Path:
        """Write as parquet (classes in the schema metadata), atomically (:mod:`birdassets.atomic`)."""
        table = pa.Table.from_pandas(self.table, preserve_index=False)
        metadata = dict(table.schema.metadata or {})
        metadata[_CLASSES_KEY] = json.dumps(list(self.classes)).encode()
        if self.annotations:
            metadata[_ANNOTATIONS_KEY] = json.dumps([list(pair) for pair in self.annotations]).encode()
        table = table.replace_schema_metadata(metadata)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        return Path(path)

    @classmethod
    def read(cls, path: str | Path) -> "Manifest":
        """Read a manifest written by :meth:`write`."""
        path = Path(path)
        if not path.exists():
            raise ManifestError(f"{path}: manifest file does not exist")
        table = pq.read_table(path)
        metadata = table.schema.metadata or {}
        if _CLASSES_KEY not in metadata:
            raise ManifestError(f"{path}: not a birdassets manifest (no class list in its metadata)")
        classes = tuple(json.loads(metadata[_CLASSES_KEY]))
        annotations = tuple(tuple(pair) for pair in json.loads(metadata.get(_ANNOTATIONS_KEY, b"[]")))
        frame = table.to_pandas()
        frame["labels"] = frame["labels"].map(lambda labels: [str(x) for x in labels])
        return cls(table=frame, classes=classes, annotations=annotations)
