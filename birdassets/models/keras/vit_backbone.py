"""The project's ViT encoder as a Keras layer: :class:`ViTBackbone`, the encoder of the supervised ``vit`` family.

Registered with Keras under :data:`~birdassets.models.keras.keys.SERIALIZABLE_PACKAGE`, so once this module is
imported ``keras.saving.load_model`` reloads a model holding it with no ``custom_objects``.
"""

from __future__ import annotations

from typing import Any

import jax
import keras
import numpy as np
from flax import nnx
from keras import ops

from birdassets.models.keras.keys import SERIALIZABLE_PACKAGE
from birdassets.models.vit.network import ViTConfig, ViTEncoder


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
