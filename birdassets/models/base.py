"""One interface for every encoder family.

Every encoder the platform benchmarks -- the Flax ViT restored from Orbax, BirdNET (TFLite), later Keras
models and TiDHy -- is wrapped in an object that satisfies :class:`Encoder`: it states what it takes
(:class:`InputSpec`: mel windows of a frontend preset; or :class:`WaveformSpec`: raw waveform windows, the
model computing its own spectrogram) and maps a batch of inputs to one embedding vector per window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class InputSpec:
    """What an encoder expects as input: one mel window per row.

    Attributes:
        preset: frontend preset name, e.g. ``"birdclef2025"``.
        sample_rate: audio sample rate the frontend resamples to, in Hz.
        clip_s: window length, in seconds.
        frames: time frames per window.
        mels: mel bins per frame.
    """

    preset: str
    sample_rate: int
    clip_s: float
    frames: int
    mels: int

    def __post_init__(self) -> None:
        if not self.preset:
            raise ValueError("InputSpec.preset must be a non-empty frontend preset name")
        for field_name in ("sample_rate", "frames", "mels"):
            value = getattr(self, field_name)
            if int(value) != value or value <= 0:
                raise ValueError(f"InputSpec.{field_name} must be a positive integer, got {value!r}")
        if not self.clip_s > 0:
            raise ValueError(f"InputSpec.clip_s must be positive seconds, got {self.clip_s!r}")

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of one window, ``(frames, mels)``."""
        return (self.frames, self.mels)


@dataclass(frozen=True)
class WaveformSpec:
    """An encoder that takes raw audio windows (its spectrogram is inside the model), e.g. BirdNET.

    Attributes:
        name: what the encoder calls its input, e.g. ``"birdnet-48k-3s"``.
        sample_rate: Hz; audio is resampled to this rate.
        clip_s: window length, seconds; ``embed`` takes ``[batch, round(clip_s * sample_rate)]`` float32.
    """

    name: str
    sample_rate: int
    clip_s: float

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_s * self.sample_rate))


@runtime_checkable
class Encoder(Protocol):
    """A frozen encoder: mel windows in, embeddings out.

    Attributes:
        name: human-readable encoder name (e.g. ``"vit-small"``).
        dim: embedding width.
        input_spec: the mel frontend the encoder was trained on (:class:`InputSpec`), or the waveform
            windows it takes (:class:`WaveformSpec`).
    """

    name: str
    dim: int
    input_spec: InputSpec | WaveformSpec

    def embed(self, mel: np.ndarray) -> np.ndarray:
        """Embed a batch of windows.

        Args:
            mel: float32 ``[batch, frames, mels]`` matching an :class:`InputSpec`, or
                ``[batch, clip_samples]`` waveforms for a :class:`WaveformSpec`.

        Returns:
            float32 ``[batch, dim]``.
        """
        ...


def check_mel_batch(mel: np.ndarray, spec: InputSpec, *, encoder_name: str) -> np.ndarray:
    """Validate and convert an encoder input batch.

    Args:
        mel: array-like ``[batch, frames, mels]``.
        spec: the encoder's input spec.
        encoder_name: named in the error message.

    Returns:
        float32 numpy array ``[batch, frames, mels]``.

    Raises:
        ValueError: wrong rank, wrong window shape, or non-finite values.
    """
    mel = np.asarray(mel, dtype=np.float32)
    if mel.ndim != 3 or mel.shape[1:] != spec.shape:
        raise ValueError(
            f"encoder {encoder_name!r} expects mel of shape [batch, {spec.frames}, {spec.mels}] "
            f"(preset {spec.preset!r}), got {list(mel.shape)}"
        )
    if not np.all(np.isfinite(mel)):
        raise ValueError(f"encoder {encoder_name!r} got non-finite mel values (NaN or inf)")
    return mel
