"""TiDHy over spectrograms: a mel window becomes a short sequence of pooled frames.

TiDHy infers its latents by an optimisation at every time step, so its cost grows with the sequence length and
the observation width. A ``[frames, mels]`` window is average-pooled to ``[frames // pool_frames,
mels // pool_mels]`` (trailing frames or bins that do not fill a pool are dropped): with the default 4 × 4 a
stored 5 s ``birdclef2025`` window (its model input: 256 × 256, frames of 19.5 ms) becomes 64 steps of 78 ms
over 64 bands.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from birdassets.field_checks import check_fields
from birdassets.models.base import InputSpec


@dataclass(frozen=True)
class FramePooling:
    """Average pooling of mel windows into TiDHy sequences.

    Attributes:
        frames: consecutive frames averaged into one time step.
        mels: adjacent mel bins averaged into one observation channel.
    """

    frames: int = 4
    mels: int = 4

    def __post_init__(self) -> None:
        check_fields(self, positive_ints=("frames", "mels"))

    def sequence_shape(self, spec: InputSpec) -> tuple[int, int]:
        """``(steps, channels)`` of one pooled window of ``spec``.

        Raises:
            ValueError: the pools are larger than the window.
        """
        steps, channels = spec.frames // self.frames, spec.mels // self.mels
        if not steps or not channels:
            raise ValueError(f"pooling {self.frames} frames x {self.mels} mels leaves nothing of a "
                             f"[{spec.frames}, {spec.mels}] window (preset {spec.preset!r})")
        return steps, channels

    def apply(self, mel: np.ndarray) -> np.ndarray:
        """``[batch, frames, mels]`` -> ``[batch, frames // self.frames, mels // self.mels]`` float32 means."""
        batch, frames, mels = mel.shape
        steps, channels = frames // self.frames, mels // self.mels
        trimmed = np.asarray(mel, np.float32)[:, :steps * self.frames, :channels * self.mels]
        return trimmed.reshape(batch, steps, self.frames, channels, self.mels).mean(axis=(2, 4))
