"""The supervised model families as Keras 3 functional models: mel windows in, float32 logits out.

Every model maps ``[batch, frames, mels]`` float32 windows (values in [0, 1]) to ``[batch, classes]`` float32
LOGITS. Its layer named :data:`EMBEDDING` outputs the pooled features ``[batch, width]`` that the head reads
(through dropout), so a trained model's penultimate layer can serve as an encoder:

* ``cnn``: the window as a one-channel image through a ``keras.applications`` backbone built with
  ``weights=None``, global average pooling; width 1280 (EfficientNetB0) or 2048 (ResNet50).
  EfficientNet carries its own preprocessing: ``Rescaling(1/255)`` then a ``Normalization`` layer that, never
  adapted (``weights=None``), is the identity (mean 0, variance 1). Windows in [0, 1] are therefore first scaled
  by 255, so its stem sees them in [0, 1] again (fed as they are, they would reach the stem's BatchNorm at
  1/255 of their scale, far below its epsilon). ResNet50 has no built-in preprocessing. Its depthwise
  convolutions are :class:`~birdassets.models.keras.depthwise.ShiftedDepthwiseConv2D` (same weights and outputs,
  several times faster on XLA:CPU).
* ``rnn``: the mel axis averaged down to ``rnn_mels`` bins in equal groups of adjacent bins, each bin normalised
  over batch and time (``BatchNormalization``: without it the [0, 1] dB values leave the GRU learning the class
  priors only, OOF AUC 0.61 instead of 0.81 after 10 epochs on demo-clear's fold 0), ``rnn_layers``
  GRU/LSTM layers over time (``return_sequences``), then the mean and the max over time concatenated;
  width ``2 * rnn_units``.
* ``vit``: the project's Flax NNX :class:`~birdassets.models.vit.network.ViTEncoder` inside
  :class:`~birdassets.models.keras.vit_backbone.ViTBackbone` (its parameters are trainable Keras variables),
  initialised from one of the project's own Orbax checkpoints (``init_checkpoint``) or randomly; embedding = mean of the patch tokens
  (:meth:`ViTEncoder.embed`); width ``dim``.

The head is ``Dropout(dropout)`` then ``Dense(classes, dtype="float32")``: under a mixed precision policy
(:mod:`birdassets.supervised.precision`, in force while the model is built) the features are computed in
bfloat16/float16 and the logits in float32. The custom layers live in :mod:`birdassets.models.keras`, the
family that loads trained models back (:func:`birdassets.models.keras.family.register_layers`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers

from birdassets.checkpoints.refs import CheckpointError
from birdassets.models.keras.depthwise import with_shifted_depthwise
from birdassets.models.keras.vit_backbone import ViTBackbone
from birdassets.models.registry import resolve_encoder
from birdassets.models.vit.family import FAMILY_NAME as VIT_FAMILY
from birdassets.models.vit.family import read_config, restore_encoder
from birdassets.models.vit.network import ViTEncoder, vit_config
from birdassets.supervised.config import ModelConfig

EMBEDDING = "embedding"
"""Name of the layer whose output ``[batch, width]`` is the model's penultimate features."""
LOGITS = "logits"
"""Name of the float32 classification head ``[batch, classes]``."""
MEL_AVERAGE = "mel_average"
"""Name of the RNN family's layer that outputs ``[batch, frames, rnn_mels]``."""
MEL_NORM = "mel_norm"
"""Name of the RNN family's ``BatchNormalization`` of the averaged mel bins (one mean and variance per bin)."""

CNN_BACKBONE_BUILDERS = {"efficientnet_b0": "EfficientNetB0", "resnet50": "ResNet50"}
"""CNN backbone name (:data:`~birdassets.supervised.config.CNN_BACKBONES`) -> ``keras.applications`` builder."""
PIXEL_SCALE = 255.0
"""EfficientNet divides its inputs by this (built-in ``Rescaling``); [0, 1] windows are multiplied by it first."""
RNN_CELLS = {"gru": layers.GRU, "lstm": layers.LSTM}


def restore_init_encoder(
    key: str, checkpoint_roots: Iterable[str | Path], input_shape: tuple[int, int]
) -> ViTEncoder:
    """The ViT encoder of checkpoint ``key`` (``"<run>@<step>"``), checked to take ``input_shape`` windows.

    The frames/mels check reads only the checkpoint's config, before any weights.

    Raises:
        CheckpointError: no such checkpoint, not a ViT, a window shape other than ``input_shape`` (both named),
            or parameters inconsistent with the stored config.
    """
    ref = resolve_encoder(checkpoint_roots, key)
    if ref.family != VIT_FAMILY:
        raise CheckpointError(f"init checkpoint {key!r} ({ref.path}) is a {ref.family!r} encoder, not a ViT")
    stored = read_config(ref.path.parent, ref.step)
    if (stored.frames, stored.mels) != tuple(input_shape):
        raise CheckpointError(
            f"init checkpoint {key!r} ({ref.path}) takes [frames, mels] = [{stored.frames}, {stored.mels}] windows, "
            f"but the model's input is [{input_shape[0]}, {input_shape[1]}]"
        )
    encoder, _, _ = restore_encoder(ref.path.parent, ref.step)
    return encoder


# --------------------------------------------------------------------------- one builder per family


def _cnn_features(inputs: keras.KerasTensor, config: ModelConfig, checkpoint_roots: Iterable[str | Path]) -> Any:
    """``[batch, frames, mels]`` -> ``keras.applications`` backbone (``weights=None``) -> ``[batch, channels]``."""
    frames, mels = inputs.shape[1:]
    x = layers.Reshape((frames, mels, 1), name="as_image")(inputs)
    if config.backbone == "efficientnet_b0":
        x = layers.Rescaling(PIXEL_SCALE, name="to_pixel_range")(x)
    builder = getattr(keras.applications, CNN_BACKBONE_BUILDERS[config.backbone])
    backbone = builder(include_top=False, weights=None, input_shape=(frames, mels, 1), pooling="avg")
    backbone = with_shifted_depthwise(backbone)
    return layers.Identity(name=EMBEDDING)(backbone(x))


def _rnn_features(inputs: keras.KerasTensor, config: ModelConfig, checkpoint_roots: Iterable[str | Path]) -> Any:
    """Average mels to ``rnn_mels`` -> normalise each bin -> ``rnn_layers`` x GRU/LSTM -> concat(mean, max over
    time) ``[batch, 2 units]``.

    Raises:
        ValueError: ``rnn_mels`` does not divide the window's mel bins.
    """
    frames, mels = inputs.shape[1:]
    if mels % config.rnn_mels:
        raise ValueError(f"rnn_mels ({config.rnn_mels}) must divide the window's {mels} mel bins "
                         f"(they are averaged in equal groups)")
    x = layers.Reshape((frames, mels, 1), name="with_channel")(inputs)
    x = layers.AveragePooling2D(pool_size=(1, mels // config.rnn_mels), name="mel_groups")(x)
    x = layers.Reshape((frames, config.rnn_mels), name=MEL_AVERAGE)(x)
    x = layers.BatchNormalization(name=MEL_NORM)(x)
    for index in range(config.rnn_layers):
        x = RNN_CELLS[config.rnn_cell](config.rnn_units, return_sequences=True, name=f"{config.rnn_cell}_{index}")(x)
    pooled = [layers.GlobalAveragePooling1D(name="time_mean")(x), layers.GlobalMaxPooling1D(name="time_max")(x)]
    return layers.Concatenate(name=EMBEDDING)(pooled)


def _vit_features(inputs: keras.KerasTensor, config: ModelConfig, checkpoint_roots: Iterable[str | Path]) -> Any:
    """ViT encoder (from ``init_checkpoint``, whose config rules, or random ``vit_size``) -> ``[batch, dim]``."""
    shape = tuple(inputs.shape[1:])
    encoder = None
    if config.init_checkpoint:
        encoder = restore_init_encoder(config.init_checkpoint, checkpoint_roots, shape)
        vit = encoder.config
    else:
        vit = vit_config(config.vit_size, *shape, patch_frames=config.vit_patch, patch_mels=config.vit_patch)
    seed = int(keras.random.randint((), 0, 2**31 - 1))  # Keras's global seed (keras.utils.set_random_seed)
    backbone = ViTBackbone(vit.to_dict(), seed=seed, name=EMBEDDING)
    features = backbone(inputs)
    if encoder is not None:
        backbone.load_encoder(encoder)
    return features


FAMILY_BUILDERS = {"cnn": _cnn_features, "rnn": _rnn_features, "vit": _vit_features}
"""Model family -> ``(inputs, config, checkpoint_roots) -> embedding tensor``."""


def build_model(
    config: ModelConfig, input_shape: tuple[int, int], n_classes: int, checkpoint_roots: Iterable[str | Path] = ()
) -> keras.Model:
    """Build one supervised model (under the dtype policy in force: see :mod:`birdassets.supervised.precision`).

    Args:
        config: a :class:`~birdassets.supervised.config.ModelConfig`.
        input_shape: ``(frames, mels)`` of one window, e.g. ``(256, 256)`` for the ``birdclef2025`` preset.
        n_classes: classes of the task (width of the logits).
        checkpoint_roots: where ``config.init_checkpoint`` (vit only) is looked up.

    Returns:
        an unbuilt-optimizer functional ``keras.Model`` named ``"birdclef_<family>"``: float32
        ``[batch, frames, mels]`` -> float32 logits ``[batch, n_classes]``; layer :data:`EMBEDDING` gives the
        features the head reads.

    Raises:
        ValueError: a bad shape or class count, ``rnn_mels`` not dividing ``mels``.
        CheckpointError: an ``init_checkpoint`` that cannot initialise this ViT (the message names it).
    """
    if len(input_shape) != 2 or not all(isinstance(n, (int, np.integer)) and n > 0 for n in input_shape):
        raise ValueError(f"input_shape must be (frames, mels), two positive integers, got {input_shape!r}")
    if not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
    inputs = keras.Input(shape=tuple(int(n) for n in input_shape), name="mel")
    features = FAMILY_BUILDERS[config.family](inputs, config, tuple(checkpoint_roots))
    x = layers.Dropout(config.dropout, name="head_dropout")(features)
    logits = layers.Dense(int(n_classes), dtype="float32", name=LOGITS)(x)
    return keras.Model(inputs, logits, name=f"birdclef_{config.family}")
