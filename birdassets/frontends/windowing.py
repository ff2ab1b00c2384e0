"""Stage A: where the windows of a recording start, and cutting them out of a waveform in one gather.

Works for anything with the windowing attributes of a :class:`~birdassets.frontends.presets.MelPreset`
(:class:`Windowing`): mel presets, and waveform encoders such as BirdNET (:class:`WindowSpec`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Windowing(Protocol):
    """What stage A needs: rate (Hz), clip and hop (s), and the shortest last window kept (s)."""

    sample_rate: int
    clip_s: float
    hop_s: float
    min_last_s: float

    @property
    def clip_samples(self) -> int: ...


@dataclass(frozen=True)
class WindowSpec:
    """Stage A of a waveform encoder (no mel stages), e.g. BirdNET: 48 kHz, 3 s clips, 3 s hop, last >= 1 s.

    Attributes:
        sample_rate: Hz.
        clip_s: window length, seconds.
        hop_s: hop between window starts, seconds.
        min_last_s: the last partial window is kept (zero-padded) when at least this long, seconds.
    """

    sample_rate: int
    clip_s: float
    hop_s: float
    min_last_s: float = 1.0

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.clip_s <= 0 or self.hop_s <= 0 or self.min_last_s < 0:
            raise ValueError(f"invalid window spec {self}: rate, clip and hop must be > 0, min_last_s >= 0")

    @property
    def clip_samples(self) -> int:
        """Samples per window."""
        return int(round(self.clip_s * self.sample_rate))


def window_starts(duration_s: float, preset: Windowing) -> list[float]:
    """Start times (s) of the stage-A windows over a recording of ``duration_s`` seconds.

    Windows start every ``hop_s``; a window whose audio would run past the end is zero-padded and kept
    when at least ``min_last_s`` of it is audio. The first window is always kept for a non-empty recording
    (a recording shorter than one clip gives one zero-padded window).
    """
    if duration_s <= 0:
        return []
    count = max(1, math.floor((duration_s - min(preset.min_last_s, duration_s)) / preset.hop_s + 1e-9) + 1)
    return [round(k * preset.hop_s, 6) for k in range(count)]


def cut_windows(audio: np.ndarray, starts_s: np.ndarray | list[float], preset: Windowing) -> np.ndarray:
    """Cut stage-A windows out of one waveform, zero-padding past its end.

    Args:
        audio: ``[samples]`` float32 at ``preset.sample_rate`` Hz.
        starts_s: ``[windows]`` start times, seconds from the start of ``audio``.
        preset: a mel preset or :class:`WindowSpec`; gives ``clip_samples`` and the sample rate.

    Returns:
        ``[windows, clip_samples]`` float32.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"cut_windows expects a mono [samples] waveform, got shape {audio.shape}")
    starts = np.rint(np.asarray(starts_s, dtype=np.float64) * preset.sample_rate).astype(np.int64)  # [windows]
    if len(starts) == 0:
        return np.zeros((0, preset.clip_samples), np.float32)
    if starts.min() < 0:
        raise ValueError(f"window starts must be >= 0 s, got {float(np.min(starts_s))}")
    length = max(len(audio), int(starts.max()) + preset.clip_samples)
    padded = np.zeros(length, np.float32)
    padded[: len(audio)] = audio
    return padded[starts[:, None] + np.arange(preset.clip_samples)[None, :]]
