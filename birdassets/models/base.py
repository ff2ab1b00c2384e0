"""One interface for every encoder family.

Every encoder the platform benchmarks -- the Flax ViT restored from Orbax, BirdNET (TFLite), later Keras
models and TiDHy -- is wrapped in an object that satisfies :class:`Encoder`: it states what it takes
(:class:`InputSpec`: mel windows of a frontend preset; or :class:`WaveformSpec`: raw waveform windows, the
model computing its own spectrogram) and maps a batch of inputs to one embedding vector per window.

Each family is one :class:`EncoderFamily` (in its own module, e.g. :mod:`birdassets.models.vit.family`): how to
find a pretrained model, validate a checkpoint from metadata alone, load it and describe it.
:mod:`birdassets.models.registry` maps a checkpoint key to its family (:class:`EncoderRef`) and hands back a
:class:`LoadedEncoder`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

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
    """A frozen encoder: windows in (mel or waveform, as its ``input_spec`` says), embeddings out.

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


def in_fixed_batches(apply: Callable[[np.ndarray], Any], x: np.ndarray, batch_size: int, out_dim: int) -> np.ndarray:
    """``apply`` over the rows of ``x [n, ...]`` in chunks of exactly ``batch_size`` (the last one zero-padded, the
    padding dropped), so a jitted ``apply`` compiles once whatever ``n``; float32 ``[n, out_dim]``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    out = []
    for start in range(0, len(x), batch_size):
        chunk = x[start:start + batch_size]
        padded = np.zeros((batch_size, *x.shape[1:]), x.dtype)
        padded[:len(chunk)] = chunk
        out.append(np.asarray(apply(padded), dtype=np.float32)[:len(chunk)])
    return np.concatenate(out) if out else np.zeros((0, out_dim), np.float32)


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


@dataclass(frozen=True)
class EncoderRef:
    """Where an encoder comes from, without loading it.

    Attributes:
        key: the checkpoint partition key (``"<run>@<step>"`` or a pretrained key such as BirdNET's).
        family: encoder family name (``"vit"``, ``"birdnet"``, ...).
        run: training run (the key itself for pretrained encoders).
        step: training step (``None`` for pretrained encoders).
        path: the finalized step folder (checkpoints) or the model file (pretrained encoders).
    """

    key: str
    family: str
    run: str
    step: int | None
    path: Path


@dataclass(frozen=True)
class LoadedEncoder:
    """An encoder, where it came from, and its family's description of it.

    Attributes:
        encoder: satisfies :class:`Encoder`.
        ref: where it came from.
        describe: the family's :attr:`EncoderFamily.describe`, called once, on first use of :attr:`details`
            (a ViT's reads the checkpoint's metadata: only the encoder asset needs it).
    """

    encoder: Encoder
    ref: EncoderRef
    describe: Callable[[EncoderRef], dict[str, Any]] = field(repr=False, compare=False)

    @cached_property
    def details(self) -> dict[str, Any]:
        """The family's JSON-safe description, e.g. a ViT's ``{"config": {...}, "n_params": int}`` or BirdNET's
        ``{"input": {"name", "sample_rate", "clip_s"}}``."""
        return self.describe(self.ref)

    @property
    def family(self) -> str:
        return self.ref.family

    @property
    def checkpoint(self) -> str:
        """The partition key."""
        return self.ref.key

    @property
    def step(self) -> int | None:
        return self.ref.step

    @property
    def path(self) -> Path:
        return self.ref.path


@dataclass(frozen=True)
class EncoderFamily:
    """Everything the platform needs from one encoder family; each family module defines one as ``FAMILY``.

    Attributes:
        name: the family name stored in its checkpoints' ``metadata`` item (``"vit"``) or used for its
            pretrained keys (``"birdnet"``).
        pretrained: keys of pretrained encoders served without checkpoint roots (e.g. ``("birdnet-v2.4",)``).
        locate: ``key -> model file`` of a pretrained key; raises ``ImportError``/``FileNotFoundError``/
            ``RuntimeError``/``ValueError`` when it is not installed (never downloads).
        validate: ``ref -> dict`` of findings, from checkpoint metadata only (no weights read; a pretrained
            model with no metadata may run a quick self-test instead); raises
            :class:`~birdassets.checkpoints.refs.CheckpointError` naming the problem and the path.
        load: ``(ref, batch_size) -> Encoder``, validating first.
        describe: ``ref -> dict``, the JSON-safe description stored with the encoder asset.
        find: for a family whose models live under the models root (the supervised Keras models):
            ``(models_root, key) -> EncoderRef``; raises :class:`~birdassets.checkpoints.refs.CheckpointError`
            when the model is not there. ``None`` for families served from checkpoint roots or pretrained files.
    """

    name: str
    pretrained: tuple[str, ...]
    locate: Callable[[str], Path]
    validate: Callable[[EncoderRef], dict[str, Any]]
    load: Callable[[EncoderRef, int], Encoder]
    describe: Callable[[EncoderRef], dict[str, Any]]
    find: Callable[[Path | None, str], EncoderRef] | None = None


def no_pretrained(key: str) -> Path:
    """:attr:`EncoderFamily.locate` of a family that serves only checkpoints."""
    raise FileNotFoundError(f"encoder family serves no pretrained model {key!r}")
