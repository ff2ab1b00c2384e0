"""Audio files -> BirdNET windows -> embeddings and logits, batched across files; saved as one ``.npz``.

Each file is decoded to 48 kHz mono, cut into :data:`~birdassets.models.birdnet.encoder.BIRDNET_WINDOWS`
(non-overlapping 3 s windows from 0 s, the last partial window zero-padded when >= 1 s long), and the
windows of consecutive files are run through the encoder together in full batches, so short files do not
waste padded rows. At most about ``flush_windows`` windows of audio (576 kB each) are held at once.

A file that cannot be decoded (or whose windows give non-finite embeddings or logits) either stops the call with
its :class:`~birdassets.audio.io.AudioError`, or, given ``on_error``, is reported there and left out while the
others are embedded. Nothing non-finite is ever returned or written.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from birdassets.atomic import atomic_path
from birdassets.audio.io import CORRUPT, AudioError, load
from birdassets.frontends.windowing import cut_windows, window_starts
from birdassets.models.birdnet.encoder import BIRDNET_WINDOWS, BirdNetEncoder

RESULT_KEYS = ("embeddings", "logits", "start_s", "file")
"""Arrays of an :func:`embed_recordings` result, all with one row per window."""


class _BatchedInference:
    """Windows in, encoder calls on whole batches out: ``add`` blocks, ``flush`` runs what fills a batch.

    Attributes:
        embeddings, logits: per encoder call, ``[rows, dim]`` and ``[rows, classes]`` float32.
    """

    def __init__(self, encoder: BirdNetEncoder, flush_windows: int) -> None:
        self.encoder = encoder
        self.batch = int(getattr(encoder, "batch_size", 1))
        self.flush_at = max(self.batch, flush_windows // self.batch * self.batch)
        self.pending: list[np.ndarray] = []  # [windows, clip_samples] blocks not yet encoded
        self.embeddings: list[np.ndarray] = []
        self.logits: list[np.ndarray] = []

    def add(self, windows: np.ndarray) -> None:
        """Queue ``[windows, clip_samples]``; encode whole batches once ``flush_windows`` are pending."""
        self.pending.append(windows)
        if sum(len(block) for block in self.pending) >= self.flush_at:
            self.flush(final=False)

    def flush(self, final: bool) -> None:
        """Encode the pending windows: all of them if ``final``, else whole batches only."""
        if not self.pending:
            return
        waves = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
        ready = len(waves) if final else len(waves) // self.batch * self.batch
        if ready:
            emb, logit = self.encoder.infer(waves[:ready])
            self.embeddings.append(emb)
            self.logits.append(logit)
        self.pending[:] = [waves[ready:]] if ready < len(waves) else []


def _file_windows(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``([windows, clip_samples] float32, [windows] start seconds)`` of one file.

    Raises:
        AudioError: the file cannot be decoded or resampled; the message names it.
    """
    spec = BIRDNET_WINDOWS
    try:
        audio, _ = load(path, spec.sample_rate)
    except AudioError:
        raise
    except Exception as error:  # e.g. a resampler failure: still name the file
        raise AudioError(path, f"cannot be loaded for embedding ({error})") from error
    starts = window_starts(len(audio) / spec.sample_rate, spec)
    return cut_windows(audio, starts, spec), np.asarray(starts, np.float32)


def embed_recordings(paths: Iterable[str | Path], encoder: BirdNetEncoder, *, flush_windows: int = 256,
                     on_error: Callable[[AudioError], None] | None = None) -> dict[str, np.ndarray]:
    """Embed every BirdNET window of every file, in file order then time order.

    Args:
        paths: audio files (anything :func:`birdassets.audio.io.load` decodes).
        encoder: a :class:`~birdassets.models.birdnet.encoder.BirdNetEncoder` (or anything with ``infer``,
            ``dim`` and a 48 kHz ``input_spec``).
        flush_windows: pending windows that trigger an encoder call (rounded down to whole encoder
            batches); bounds memory, not results.
        on_error: called with the error of each file that cannot be used, which is then left out;
            ``None``: the first such error is raised.

    Returns:
        ``{"embeddings": [windows, dim] float32, "logits": [windows, classes] float32,
        "start_s": [windows] float32 seconds from the start of the file, "file": [windows] str}``.

    Raises:
        AudioError: (without ``on_error``) a file cannot be decoded, or its windows give non-finite embeddings
            or logits; the message names the file.
    """
    spec = BIRDNET_WINDOWS
    if encoder.input_spec.sample_rate != spec.sample_rate or encoder.input_spec.clip_samples != spec.clip_samples:
        raise ValueError(f"encoder {encoder.name!r} takes {encoder.input_spec}, not BirdNET's 48 kHz 3 s windows")
    inference = _BatchedInference(encoder, flush_windows)
    starts: list[np.ndarray] = []
    files: list[str] = []
    for path in paths:
        try:
            windows, file_starts = _file_windows(path)
        except AudioError as error:
            if on_error is None:
                raise
            on_error(error)
            continue
        starts.append(file_starts)
        files.extend([str(path)] * len(file_starts))
        inference.add(windows)
    inference.flush(final=True)
    classes = int(getattr(encoder, "classes", 0))
    return _finite_rows({
        "embeddings": np.concatenate(inference.embeddings) if inference.embeddings
        else np.zeros((0, encoder.dim), np.float32),
        "logits": np.concatenate(inference.logits) if inference.logits else np.zeros((0, classes), np.float32),
        "start_s": np.concatenate(starts) if starts else np.zeros(0, np.float32),
        "file": np.asarray(files, dtype=str),
    }, on_error)


def _finite_rows(result: dict[str, np.ndarray], on_error: Callable[[AudioError], None] | None) -> dict[str, np.ndarray]:
    """``result`` without the rows of files with any non-finite embedding or logit (each such file reported to
    ``on_error``, or raised without it)."""
    finite = np.isfinite(result["embeddings"]).all(axis=1) & np.isfinite(result["logits"]).all(axis=1)
    if finite.all():
        return result
    bad_files = list(dict.fromkeys(result["file"][~finite].tolist()))
    for file in bad_files:
        windows = int(np.count_nonzero(~finite & (result["file"] == file)))
        error = AudioError(file, f"corrupt: BirdNET gave non-finite embeddings or logits for {windows} of its "
                           "windows; the file is left out", CORRUPT)
        if on_error is None:
            raise error
        on_error(error)
    keep = ~np.isin(result["file"], bad_files)
    return {key: value[keep] for key, value in result.items()}


def save_embeddings_npz(result: dict[str, np.ndarray], out_path: str | Path) -> Path:
    """Write an :func:`embed_recordings` result to ``out_path`` (``.npz``, read with ``np.load``) atomically.

    Written through :func:`birdassets.atomic.atomic_path`, so a crash never leaves a truncated file. Strings
    are stored as fixed-width unicode (no pickle needed).

    Raises:
        ValueError: a key is missing, the arrays disagree on the number of windows, or a number is NaN/inf
            (nothing non-finite is ever written).
    """
    out_path = Path(out_path)
    missing = [key for key in RESULT_KEYS if key not in result]
    if missing:
        raise ValueError(f"{out_path}: embedding result lacks {missing} (expected keys {list(RESULT_KEYS)})")
    lengths = {key: len(result[key]) for key in RESULT_KEYS}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{out_path}: arrays disagree on the number of windows: {lengths}")
    for key in ("embeddings", "logits", "start_s"):
        if not np.isfinite(result[key]).all():
            raise ValueError(f"{out_path}: refusing to write non-finite {key}")
    with atomic_path(out_path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        # what np.savez writes (one .npy per key); by hand, because np.savez cannot take a key named "file"
        for key, value in result.items():
            with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
    return out_path
