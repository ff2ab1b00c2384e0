"""Spectrogram frontend presets: frozen dataclasses in a small registry, each with a content hash.

A preset fixes every number between a waveform and a model input, split into three stages:

* **A — windowing**: clip length and hop over a recording, and what happens to the last partial window
  (zero-padded when at least ``min_last_s`` long, dropped otherwise).
* **B — mel power in dB**: STFT (Hann, periodic), power, mel filterbank, ``10 log10`` with a reference and
  a ``top_db`` floor; shape ``[frames, mels]``.
* **C — model input**: scaling/normalisation of stage B to what a model expects.

The preset's :meth:`MelPreset.content_hash` enters lineage in DuckDB and the path of its mel dataset, so
changing any parameter produces a new dataset (and stale downstream assets) instead of silently mixing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Literal

FRONTEND_VERSION = "1"  # bump when the implementation (not the parameters) changes numerics


class PresetError(ValueError):
    """A preset is unknown or its parameters are invalid; the message names the preset and field."""


@dataclass(frozen=True)
class MelPreset:
    """All parameters of a mel frontend.

    Attributes:
        name: registry name.
        sample_rate: audio is resampled to this rate, Hz.
        n_fft: FFT size and Hann window length, samples.
        hop_length: STFT hop, samples.
        n_mels: mel bands.
        f_min, f_max: filterbank edges, Hz.
        clip_s: window (clip) length of stage A, seconds.
        hop_s: hop between windows of stage A, seconds.
        min_last_s: the last partial window is kept (zero-padded) when at least this long, seconds.
        center: pad ``n_fft // 2`` samples on both sides before the STFT (librosa/torchaudio ``center=True``).
        pad_mode: ``"constant"`` (zeros, librosa >= 0.10 default) or ``"reflect"`` (torchaudio default).
        power: exponent of the magnitude (2 = power spectrogram).
        mel_scale: ``"slaney"`` (librosa default) or ``"htk"``.
        mel_norm: ``"slaney"`` (area normalisation, librosa default) or ``None``.
        db_ref: ``"max"`` (per window, librosa ``ref=np.max``) or a fixed reference power.
        amin: floor on power before the log.
        top_db: dB values below ``max - top_db`` are clipped to it (``None``: no clipping).
        scaling: stage C: ``"unit"`` maps ``[max - top_db, max]`` dB linearly to [0, 1].
    """

    name: str
    sample_rate: int
    n_fft: int
    hop_length: int
    n_mels: int
    f_min: float
    f_max: float
    clip_s: float = 5.0
    hop_s: float = 5.0
    min_last_s: float = 1.0
    center: bool = True
    pad_mode: Literal["constant", "reflect"] = "constant"
    power: float = 2.0
    mel_scale: Literal["slaney", "htk"] = "slaney"
    mel_norm: Literal["slaney"] | None = "slaney"
    db_ref: Literal["max"] | float = "max"
    amin: float = 1e-10
    top_db: float | None = 80.0
    scaling: Literal["unit"] = "unit"

    def __post_init__(self) -> None:
        problems = []
        if self.sample_rate <= 0:
            problems.append("sample_rate must be > 0")
        if self.n_fft <= 0 or self.hop_length <= 0 or self.n_mels <= 0:
            problems.append("n_fft, hop_length and n_mels must be > 0")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            problems.append(f"need 0 <= f_min < f_max <= Nyquist ({self.sample_rate / 2} Hz)")
        if self.clip_s <= 0 or self.hop_s <= 0:
            problems.append("clip_s and hop_s must be > 0")
        if self.pad_mode not in ("constant", "reflect"):
            problems.append(f"pad_mode {self.pad_mode!r} is not 'constant' or 'reflect'")
        if self.mel_scale not in ("slaney", "htk"):
            problems.append(f"mel_scale {self.mel_scale!r} is not 'slaney' or 'htk'")
        if self.scaling == "unit" and self.top_db is None:
            problems.append("scaling 'unit' needs top_db")
        if problems:
            raise PresetError(f"preset {self.name!r}: " + "; ".join(problems))

    @property
    def clip_samples(self) -> int:
        """Samples per stage-A window."""
        return int(round(self.clip_s * self.sample_rate))

    @property
    def frames(self) -> int:
        """STFT frames per window (stage B time axis)."""
        if self.center:
            return 1 + self.clip_samples // self.hop_length
        return 1 + (self.clip_samples - self.n_fft) // self.hop_length

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def content_hash(self) -> str:
        """sha256 over every parameter and the frontend implementation version."""
        payload = json.dumps({"frontend_version": FRONTEND_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


PRESETS: dict[str, MelPreset] = {
    "birdclef2025": MelPreset(
        name="birdclef2025",
        sample_rate=32_000,
        n_fft=1024,
        hop_length=512,
        n_mels=128,
        f_min=50.0,
        f_max=14_000.0,
        clip_s=5.0,
        hop_s=5.0,
    ),
}


def get_preset(name: str) -> MelPreset:
    """Look a preset up by name, with an error that lists the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise PresetError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}") from None


def window_starts(duration_s: float, preset: MelPreset) -> list[float]:
    """Stage A: start times (s) of the windows over a recording of ``duration_s`` seconds.

    Windows start every ``hop_s``; a window whose audio would run past the end is zero-padded and kept
    when at least ``min_last_s`` of it is audio (the first window is always kept for a non-empty recording).
    """
    if duration_s <= 0:
        return []
    count = max(1, math.floor((duration_s - min(preset.min_last_s, duration_s)) / preset.hop_s + 1e-9) + 1)
    return [round(k * preset.hop_s, 6) for k in range(count)]
