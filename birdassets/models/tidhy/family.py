"""The TiDHy encoder family: TiDHy checkpoints (:mod:`birdassets.models.tidhy.saved_model`) as encoders.

A checkpoint whose ``input`` is ``{"kind": "mel", ...}`` encodes mel windows of its preset
(:class:`~birdassets.models.tidhy.embedder.TiDHyEmbedder`); one of the SLDS benchmark (``"kind": "slds"``) is a
valid TiDHy checkpoint that encodes no audio: :func:`load` refuses it with :class:`NotAnAudioEncoder`, and the
pipeline leaves its task pairs unmaterialized (the ``slds_scores`` asset scores it instead).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from birdassets.checkpoints.orbax_io import flatten_shapes
from birdassets.checkpoints.refs import CheckpointError
from birdassets.models.base import Encoder, EncoderFamily, EncoderRef, InputSpec, no_pretrained
from birdassets.models.tidhy.saved_model import FAMILY_NAME, SavedTiDHy, abstract_params, restore_tidhy, validate_tidhy
from birdassets.models.tidhy.embedder import TiDHyEmbedder
from birdassets.models.tidhy.frames import FramePooling

SPEC_FIELDS = ("preset", "sample_rate", "clip_s", "frames", "mels")


class NotAnAudioEncoder(CheckpointError):
    """A valid checkpoint whose model observes something other than audio (TiDHy on SLDS data)."""


def input_spec(saved: SavedTiDHy, where: str) -> tuple[InputSpec, FramePooling]:
    """The mel windows a ``"mel"`` checkpoint encodes and how it pools them.

    Raises:
        NotAnAudioEncoder: the checkpoint observes another kind of data.
        CheckpointError: incomplete input settings, or ones that do not give the model's input width.
    """
    kind = saved.input["kind"]
    if kind != "mel":
        raise NotAnAudioEncoder(f"checkpoint {where} is TiDHy trained on {kind} observations; it encodes no audio "
                                "(its scores come from the slds_scores asset / `birdassets tidhy benchmark`)")
    try:
        spec = InputSpec(**{name: saved.input[name] for name in SPEC_FIELDS})
        pooling = FramePooling(saved.input["pool_frames"], saved.input["pool_mels"])
        channels = pooling.sequence_shape(spec)[1]
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {where}: invalid mel input settings ({error})") from None
    if channels != saved.model.input_dim:
        raise CheckpointError(f"checkpoint {where}: pooled mel windows have {channels} channels but the model "
                              f"takes {saved.model.input_dim}")
    return spec, pooling


def n_params(saved: SavedTiDHy) -> int:
    """Parameters of the model ``saved`` describes (a validated checkpoint holds exactly these shapes)."""
    return int(sum(np.prod(shape) for shape in flatten_shapes(abstract_params(saved.model)).values()))


def validate(ref: EncoderRef) -> dict[str, Any]:
    """Config and saved shapes agree (metadata only); ``{"checkpoint", "input", "dim", "n_params"}``."""
    saved = validate_tidhy(ref.path.parent, ref.step)
    if saved.input["kind"] == "mel":
        input_spec(saved, str(ref.path))
    dim = 2 * (saved.model.r_dim + saved.model.r2_dim)
    return {"checkpoint": str(ref.path), "input": saved.input["kind"], "dim": dim, "n_params": n_params(saved)}


def load(ref: EncoderRef, batch_size: int) -> Encoder:
    """The checkpoint's model, scaler and inference settings behind a :class:`TiDHyEmbedder`."""
    model, scaler, saved, _ = restore_tidhy(ref.path.parent, ref.step)
    spec, pooling = input_spec(saved, str(ref.path))
    return TiDHyEmbedder(model, scaler, saved.inference, spec, pooling, name=f"tidhy@{ref.key}",
                         batch_size=batch_size)


def describe(ref: EncoderRef) -> dict[str, Any]:
    """``{"config": {model, inference, learning, input}, "n_params": int}`` from metadata only."""
    saved = validate_tidhy(ref.path.parent, ref.step)
    return {"config": saved.to_dict(), "n_params": n_params(saved)}


FAMILY = EncoderFamily(name=FAMILY_NAME, pretrained=(), locate=no_pretrained, validate=validate, load=load,
                       describe=describe)
