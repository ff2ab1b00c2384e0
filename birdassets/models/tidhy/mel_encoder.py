"""Training TiDHy as an encoder of mel windows: each window's pooled frames are one sequence.

Defaults (the public JAX rewrite's sizes, ``r_dim`` 16 / ``r2_dim`` 8 / ``mix_dim`` 8 / hidden 32; frames and
mels pooled 4 × 4; at most 50 inference iterations per step) keep embedding the demo tasks within seconds on
2 CPU cores. The scaler (per-channel mean and std of the pooled training frames) is saved with the model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from flax import nnx

from birdassets.models.base import InputSpec
from birdassets.models.tidhy.saved_model import SavedTiDHy, Scaler
from birdassets.models.tidhy.frames import FramePooling
from birdassets.models.tidhy.inference import InferenceConfig
from birdassets.models.tidhy.mstep import LearningConfig
from birdassets.models.tidhy.network import TiDHy, TiDHyConfig
from birdassets.models.tidhy.fitting import OnStep, Schedule, TrainResult, train_tidhy


@dataclass(frozen=True)
class MelEncoderConfig:
    """A TiDHy encoder of mel windows, short of its input width (which the pooled preset gives).

    Attributes:
        r_dim, r2_dim, mix_dim, hyper_hidden: the model's widths (:class:`TiDHyConfig`).
        pooling: how windows become sequences.
        inference: E-step settings, for training and embedding alike.
        learning: M-step settings.
    """

    r_dim: int = 16
    r2_dim: int = 8
    mix_dim: int = 8
    hyper_hidden: int = 32
    pooling: FramePooling = field(default_factory=FramePooling)
    inference: InferenceConfig = field(default_factory=lambda: InferenceConfig(max_iter=50))
    learning: LearningConfig = field(default_factory=LearningConfig)

    def saved(self, spec: InputSpec, task: str) -> SavedTiDHy:
        """The checkpoint config of an encoder of ``spec``'s windows trained on ``task``."""
        channels = self.pooling.sequence_shape(spec)[1]
        model = TiDHyConfig(input_dim=channels, r_dim=self.r_dim, r2_dim=self.r2_dim, mix_dim=self.mix_dim,
                            hyper_hidden=self.hyper_hidden)
        data = {"kind": "mel", **dataclasses.asdict(spec), "pool_frames": self.pooling.frames,
                "pool_mels": self.pooling.mels, "task": task}
        return SavedTiDHy(model, self.inference, self.learning, data)


def train_mel_encoder(mel: np.ndarray, spec: InputSpec, task: str, config: MelEncoderConfig, schedule: Schedule,
                      run_dir: Path | None = None, on_step: OnStep | None = None) -> tuple[TiDHy, TrainResult]:
    """Train on ``mel [windows, frames, mels]`` (one task's training windows); checkpoints in ``run_dir``."""
    saved = config.saved(spec, task)
    sequences = config.pooling.apply(mel)
    scaler = Scaler.fit(sequences)
    model = TiDHy(saved.model, rngs=nnx.Rngs(schedule.seed))
    windows = np.asarray(scaler.apply(sequences), np.float32)
    return model, train_tidhy(model, windows, saved, scaler, schedule, run_dir, on_step)
