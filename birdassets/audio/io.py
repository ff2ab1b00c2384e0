"""Audio decoding, mono mixdown and resampling.

Everything returns float32 waveforms in [-1, 1] with shape ``[samples]`` (mono) and a sample rate in Hz.
Decoding uses libsndfile (``soundfile``: wav, flac, ogg/vorbis, mp3 with libsndfile >= 1.1);
resampling uses soxr's high-quality polyphase resampler.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr


class AudioError(ValueError):
    """An audio file cannot be used. The message always names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file.

    Attributes:
        path: the file.
        sample_rate: native rate, Hz.
        channels: channel count.
        frames: samples per channel.
        format: container (e.g. ``"OGG"``, ``"WAV"``).
        subtype: sample encoding (e.g. ``"VORBIS"``, ``"PCM_16"``).
    """

    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration_s(self) -> float:
        """Duration in seconds."""
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def probe(path: str | Path) -> AudioInfo:
    """Read an audio file's header without decoding its samples.

    Raises:
        AudioError: the file is missing, unreadable, not audio, or has no samples.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "file does not exist")
    try:
        info = sf.info(str(path))
    except Exception as error:  # libsndfile raises a bare RuntimeError/LibsndfileError
        raise AudioError(path, f"cannot be read as audio ({error})") from error
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError(path, f"invalid header (rate={info.samplerate}, channels={info.channels})")
    return AudioInfo(
        path=str(path),
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        frames=int(info.frames),
        format=str(info.format),
        subtype=str(info.subtype),
    )


def mixdown(audio: np.ndarray) -> np.ndarray:
    """Average channels: ``[samples, channels]`` (or ``[samples]``) -> ``[samples]`` float32."""
    audio = np.asarray(audio, dtype=np.float32)
    return audio if audio.ndim == 1 else audio.mean(axis=1, dtype=np.float32)


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample a mono ``[samples]`` float32 waveform from ``rate_in`` Hz to ``rate_out`` Hz (soxr HQ)."""
    if rate_in == rate_out:
        return np.asarray(audio, dtype=np.float32)
    return soxr.resample(np.asarray(audio, dtype=np.float32), rate_in, rate_out, quality="HQ").astype(np.float32)


def load(
    path: str | Path,
    sample_rate: int | None = None,
    start_s: float = 0.0,
    end_s: float | None = None,
) -> tuple[np.ndarray, int]:
    """Decode (a segment of) a file to mono float32.

    Args:
        path: audio file.
        sample_rate: target rate in Hz; ``None`` keeps the native rate.
        start_s: segment start, seconds.
        end_s: segment end, seconds (``None``: end of file).

    Returns:
        ``(waveform [samples] float32, sample_rate Hz)``.

    Raises:
        AudioError: unreadable, truncated or empty file; the message names the file.
    """
    info = probe(path)
    start = int(round(start_s * info.sample_rate))
    stop = None if end_s is None else int(round(end_s * info.sample_rate))
    try:
        audio, rate = sf.read(str(path), start=start, stop=stop, dtype="float32", always_2d=True)
    except Exception as error:
        raise AudioError(path, f"decoding failed ({error})") from error
    if audio.shape[0] == 0:
        raise AudioError(path, f"no samples in [{start_s}, {end_s}] s")
    mono = mixdown(audio)
    if sample_rate is not None and sample_rate != rate:
        mono = resample(mono, rate, sample_rate)
        rate = sample_rate
    return mono, int(rate)
