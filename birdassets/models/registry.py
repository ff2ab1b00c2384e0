"""From a checkpoint partition key to an :class:`~birdassets.models.base.Encoder`.

Every encoder family plugs in here; embeddings, probes and scores never ask which family they have.
Today: ``"<run>@<step>"`` keys resolve to Flax ViT checkpoints under the configured checkpoint roots.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from birdassets.checkpoints import restore_encoder
from birdassets.discovery import resolve_checkpoint
from birdassets.models.base import Encoder
from birdassets.models.vit import ViTConfig, ViTEmbedder

EMBED_BATCH = 64


@dataclass(frozen=True)
class LoadedEncoder:
    """An encoder plus where it came from.

    Attributes:
        encoder: satisfies :class:`~birdassets.models.base.Encoder`.
        family: encoder family name (``"vit"``).
        checkpoint: the partition key.
        step: training step (``None`` for encoders without steps).
        path: the checkpoint's step folder.
        config: the model config.
    """

    encoder: Encoder
    family: str
    checkpoint: str
    step: int | None
    path: Path
    config: ViTConfig


def load_encoder(checkpoint_roots: Iterable[str | Path], checkpoint: str, batch_size: int = EMBED_BATCH) -> LoadedEncoder:
    """Restore the encoder named ``checkpoint`` (shapes validated from metadata, then ``state.encoder`` only)."""
    ref = resolve_checkpoint(checkpoint_roots, checkpoint)
    model, config, step = restore_encoder(ref.run_dir, ref.step)
    embedder = ViTEmbedder(model, config, name=f"vit@{checkpoint}", batch_size=batch_size)
    return LoadedEncoder(embedder, "vit", checkpoint, step, ref.step_dir, config)
