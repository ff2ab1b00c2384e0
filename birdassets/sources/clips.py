"""A folder of labelled binary clips (OrcaHello-style call detector training data) as a manifest.

Layout (folder names exact, lower case)::

    root/positive/**/*.{wav,flac,ogg,mp3}        clips holding a call       split "train", labels ["call"]
    root/negative/**/*                           clips without a call       split "train", labels []
    root/test/positive/**/*                      optional held-out clips    split "test",  labels ["call"]
    root/test/negative/**/*                                                 split "test",  labels []

What counts as *found*: a file with an audio extension (:data:`~birdassets.sources.folder.AUDIO_EXTENSIONS`, any
letter case) anywhere below one of those four folders; each is ingested or quarantined
(:mod:`birdassets.sources.ingest`: a text file named ``.wav`` is found, then quarantined). Every other file under
``root`` (``root/recordings/*.flac``, ``root/test/x.wav``, label tables, notes) is not a clip and is only counted in
:attr:`~birdassets.sources.ingest.IngestResult.ignored`. Folders are walked as the folder source walks them
(:func:`~birdassets.sources.folder.find_audio`: recursively, hidden files included, symlinked folders not followed).

Every usable clip becomes one whole-file row (``start_s``/``end_s`` NaN): ``recording_id`` its path relative to
``root`` without the extension (``"positive/pos_0003"``, ``"test/negative/x"``; a second file of the same stem gets
``"#2"``), ``primary_label`` :data:`CALL_CLASS` or ``""``. The manifest's classes are ``("call",)``.

A root that is not a folder or has neither ``positive/`` nor ``negative/``, and training clips that lack one of the
two classes (a detector cannot be trained from one), are a :class:`~birdassets.sources.manifest.ManifestError`
whose one line names the folder and the expected layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from birdassets.sources.folder import find_audio, whole_file_row
from birdassets.sources.ingest import IngestResult, scan_audio, sorted_records, unique_ids
from birdassets.sources.manifest import Manifest, ManifestError

CALL_CLASS = "call"
"""The one class of a clips data set: the clip holds a call."""
POSITIVE_DIR = "positive"
NEGATIVE_DIR = "negative"
TEST_DIR = "test"
CLIP_FOLDERS: dict[tuple[str, ...], tuple[str, tuple[str, ...]]] = {
    (POSITIVE_DIR,): ("train", (CALL_CLASS,)),
    (NEGATIVE_DIR,): ("train", ()),
    (TEST_DIR, POSITIVE_DIR): ("test", (CALL_CLASS,)),
    (TEST_DIR, NEGATIVE_DIR): ("test", ()),
}
"""Clip folder (path parts below ``root``) -> ``(split, labels)`` of its clips."""
_DEEPEST_FIRST = sorted(CLIP_FOLDERS, key=len, reverse=True)  # test/positive is matched before a bare positive
LAYOUT = "positive/ and negative/ folders of clips (optional test/positive/ and test/negative/)"
"""The expected layout, in the words errors use."""


def clip_folder(relative: Path) -> tuple[str, ...] | None:
    """The key of :data:`CLIP_FOLDERS` a file (path relative to ``root``) lies below, or ``None``: not a clip."""
    folders = relative.parts[:-1]
    for key in _DEEPEST_FIRST:
        if folders[: len(key)] == key:
            return key
    return None


def find_clips(root: str | Path) -> tuple[dict[Path, tuple[str, ...]], int]:
    """Clip files under ``root`` (sorted) with their :data:`CLIP_FOLDERS` key, and the number of other files.

    Raises:
        ManifestError: ``root`` is not a folder, or has neither ``positive/`` nor ``negative/``.
    """
    root = Path(root).absolute()
    if not root.is_dir():
        raise ManifestError(f"{root}: clips folder does not exist or is not a folder; expected {LAYOUT}")
    if not any((root / name).is_dir() for name in (POSITIVE_DIR, NEGATIVE_DIR)):
        raise ManifestError(f"{root}: has neither a positive/ nor a negative/ folder; expected {LAYOUT}")
    paths, ignored = find_audio(root)
    folders = {path: clip_folder(path.relative_to(root)) for path in paths}
    clips = {path: key for path, key in folders.items() if key is not None}
    return clips, ignored + len(folders) - len(clips)


def read_clips(
    root: str | Path,
    *,
    min_duration_s: float = 0.0,
    decode: Literal["full", "tail"] = "full",
    workers: int | None = None,
) -> IngestResult:
    """Ingest a folder of labelled clips (see the module docstring).

    Args:
        root: the folder.
        min_duration_s: shorter clips are quarantined as ``too_short`` (the task preset's ``min_last_s``).
        decode: how thoroughly files are checked (:func:`birdassets.sources.ingest.scan_audio`).
        workers: checking threads (default: see :func:`~birdassets.sources.ingest.scan_audio`).

    Returns:
        The manifest of usable clips (classes ``("call",)``), the quarantined ones, ``found`` = clip files,
        ``ignored`` = every other file under ``root``.

    Raises:
        ManifestError: ``root`` is not a folder, has neither ``positive/`` nor ``negative/``, or its usable training
            clips lack positives or negatives.
    """
    root = Path(root).absolute()
    clips, ignored = find_clips(root)
    paths = list(clips)
    ids = dict(zip(paths, unique_ids(p.relative_to(root).with_suffix("").as_posix() for p in paths)))
    usable, quarantine = scan_audio(paths, min_duration_s, decode=decode, workers=workers)
    rows = [whole_file_row(f, ids[Path(f.path)], *CLIP_FOLDERS[clips[Path(f.path)]]) for f in usable]
    manifest = Manifest.from_rows(rows, classes=(CALL_CLASS,))
    _check_both_classes(root, manifest, clips)
    return IngestResult(manifest, sorted_records(quarantine), found=len(paths), ignored=ignored).check()


def _check_both_classes(root: Path, manifest: Manifest, clips: dict[Path, tuple[str, ...]]) -> None:
    """Raise :class:`ManifestError` unless the usable training clips hold both positives and negatives."""
    train = manifest.split("train")
    for folder, has_call in ((POSITIVE_DIR, True), (NEGATIVE_DIR, False)):
        if not (train["primary_label"].eq(CALL_CLASS) == has_call).any():
            found = sum(key == (folder,) for key in clips.values())
            why = f"all {found} quarantined" if found else "none found"
            raise ManifestError(
                f"{root}: no usable training clip in {folder}/ ({why}); a call detector needs both classes; "
                f"expected {LAYOUT}"
            )
