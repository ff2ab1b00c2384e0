"""The ViT encoder family: the Flax NNX network (:mod:`.network`) and its Orbax checkpoints (:mod:`.family`).

``from birdassets.models.vit import ViTConfig, ViTEncoder, save_checkpoint, restore_encoder, ...`` gives both
modules' public names.
"""

from birdassets.models.vit.network import (
    MLP,
    VIT_SIZES,
    TransformerBlock,
    ViTConfig,
    ViTEmbedder,
    ViTEncoder,
    encoder_params,
    patchify,
    pos_embed_table,
    sincos_1d,
    sincos_2d_table,
    vit_config,
)
from birdassets.models.vit.family import (
    read_config,
    read_encoder_shapes,
    restore_encoder,
    save_checkpoint,
    validate_encoder_shapes,
)

__all__ = [
    "MLP",
    "VIT_SIZES",
    "TransformerBlock",
    "ViTConfig",
    "ViTEmbedder",
    "ViTEncoder",
    "encoder_params",
    "patchify",
    "pos_embed_table",
    "read_config",
    "read_encoder_shapes",
    "restore_encoder",
    "save_checkpoint",
    "sincos_1d",
    "sincos_2d_table",
    "validate_encoder_shapes",
    "vit_config",
]
