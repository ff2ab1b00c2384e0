"""The supervised model families as Keras 3 functional models: mel windows in, float32 logits out.

Every model maps ``[batch, frames, mels]`` float32 windows (values in [0, 1]) to ``[batch, classes]`` float32
LOGITS. Its layer named :data:`EMBEDDING` outputs the pooled features ``[batch, width]`` that the head reads
(through dropout), so a trained model's penultimate layer can serve as an encoder:

* ``cnn``: the window as a one-channel image through a ``keras.applications`` backbone built with
  ``weights=None``, global average pooling; width 1280 (EfficientNetB0) or 2048 (ResNet50).
  EfficientNet carries its own preprocessing: ``Rescaling(1/255)`` then a ``Normalization`` layer that, never
  adapted (``weights=None``), is the identity (mean 0, variance 1). Windows in [0, 1] are therefore first scaled
  by 255, so its stem sees them in [0, 1] again (fed as they are, they would reach the stem's BatchNorm at
  1/255 of their scale, far below its epsilon). ResNet50 has no built-in preprocessing.
* ``rnn``: the mel axis averaged down to ``rnn_mels`` bins in equal groups of adjacent bins, each bin normalised
  over batch and time (``BatchNormalization``: without it the [0, 1] dB values leave the GRU learning the class
  priors only, OOF AUC 0.61 instead of 0.81 after 10 epochs on demo-clear's fold 0), ``rnn_layers``
  GRU/LSTM layers over time (``return_sequences``), then the mean and the max over time concatenated;
  width ``2 * rnn_units``.
* ``vit``: the project's Flax NNX :class:`~birdassets.models.vit.network.ViTEncoder` inside
  :class:`ViTBackbone` (its parameters are trainable Keras variables), initialised from one of the project's
  own Orbax checkpoints (``init_checkpoint``) or randomly; embedding = mean of the patch tokens
  (:meth:`ViTEncoder.embed`); width ``dim``.

The head is ``Dropout(dropout)`` then ``Dense(classes, dtype="float32")``: under a mixed precision policy
(:mod:`birdassets.supervised.precision`, in force while the model is built) the features are computed in
bfloat16/float16 and the logits in float32. Custom layers are registered with Keras under the package
``"birdassets"``, so once this module is imported ``keras.saving.load_model(path)`` reloads a saved model with
no ``custom_objects``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jax
import keras
import numpy as np
from flax import nnx
from keras import layers, ops

from birdassets.checkpoints.refs import CheckpointError
from birdassets.models.registry import resolve_encoder
from birdassets.models.vit.family import FAMILY_NAME as VIT_FAMILY
from birdassets.models.vit.family import read_config, restore_encoder
from birdassets.models.vit.network import ViTConfig, ViTEncoder, vit_config
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
SERIALIZABLE_PACKAGE = "birdassets"


# --------------------------------------------------------------------------- the ViT as a Keras layer


def _leaf_name(path: tuple[Any, ...]) -> str:
    """``(DictKey('blocks'), DictKey(0), ...) -> "blocks.0.attn.query.kernel"``."""
    return ".".join(str(getattr(key, "key", getattr(key, "name", key))) for key in path)


def encoder_leaves(encoder: ViTEncoder) -> tuple[list[tuple[str, jax.Array]], Any, Any]:
    """``([(name, value)], treedef, graphdef)``: an encoder's parameters in a fixed (pytree) order, and how to
    rebuild it (``nnx.merge(graphdef, jax.tree_util.tree_unflatten(treedef, values))``).

    Raises:
        ValueError: the encoder holds state other than ``nnx.Param`` (the Keras layer keeps parameters only).
    """
    graphdef, params, rest = nnx.split(encoder, nnx.Param, ...)
    if jax.tree_util.tree_leaves(rest):
        raise ValueError("the ViT encoder holds non-parameter state; ViTBackbone keeps parameters only")
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(params)
    return [(_leaf_name(path), value) for path, value in with_paths], treedef, graphdef


@keras.saving.register_keras_serializable(package=SERIALIZABLE_PACKAGE)
class ViTBackbone(keras.layers.Layer):
    """A :class:`ViTEncoder` whose parameters are trainable Keras variables: ``[batch, frames, mels] -> [batch, dim]``.

    The output is :meth:`ViTEncoder.embed` (mean of the patch tokens after the final norm). Variables are
    created in the layer's dtype policy's variable dtype (float32 under mixed precision) and cast to its compute
    dtype inside :meth:`call`, so under ``mixed_bfloat16`` every matmul of the encoder runs in bfloat16.

    Args:
        vit_config: :meth:`ViTConfig.to_dict` of the encoder (its frames/mels must be the input's).
        seed: seed of the random initialisation (overwritten by :meth:`load_encoder` or when a saved model's
            weights are loaded).
    """

    def __init__(self, vit_config: dict[str, Any], seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vit_config = ViTConfig.from_dict(dict(vit_config))
        self.seed = int(seed)
        self._params: list[keras.Variable] = []

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        config = self.vit_config
        if tuple(input_shape[1:]) != (config.frames, config.mels):
            raise ValueError(f"ViTBackbone {self.name!r} takes [batch, {config.frames}, {config.mels}] windows, "
                             f"got {list(input_shape)}")
        named, self._treedef, self._graphdef = encoder_leaves(ViTEncoder(config, rngs=nnx.Rngs(self.seed)))
        for name, value in named:
            initial = np.asarray(value)
            self._params.append(self.add_weight(
                shape=initial.shape, initializer=lambda shape, dtype, v=initial: ops.cast(v, dtype), name=name))

    def call(self, mel: Any) -> Any:
        """``[batch, frames, mels]`` -> ``[batch, dim]`` in the compute dtype (Keras autocasts the variables
        inside ``__call__`` too; the explicit casts keep it so with ``autocast=False``)."""
        dtype = self.compute_dtype
        leaves = [ops.cast(variable.value, dtype) for variable in self._params]
        encoder = nnx.merge(self._graphdef, jax.tree_util.tree_unflatten(self._treedef, leaves))
        return encoder.embed(ops.cast(mel, dtype))

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, int]:
        return (input_shape[0], self.vit_config.dim)

    def load_encoder(self, encoder: ViTEncoder) -> None:
        """Copy a (restored) encoder's parameters into the layer's variables (the layer must be built).

        Raises:
            ValueError: the encoder's config or a parameter's shape differs from the layer's.
        """
        if encoder.config != self.vit_config:
            raise ValueError(f"encoder config {encoder.config} differs from the layer's {self.vit_config}")
        named, _, _ = encoder_leaves(encoder)
        for variable, (name, value) in zip(self._params, named, strict=True):
            if tuple(variable.shape) != tuple(value.shape):
                raise ValueError(f"ViT parameter {name}: shape {tuple(value.shape)} != {tuple(variable.shape)}")
            variable.assign(value)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "vit_config": self.vit_config.to_dict(), "seed": self.seed}


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
