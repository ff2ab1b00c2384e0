"""Flax NNX Vision Transformer over patchified mel spectrograms.

A window ``[frames, mels]`` is zero-padded up to a whole number of ``patch_frames x patch_mels``
patches, each patch is flattened and linearly projected to ``dim`` (``patch_embed``), a learnable
``cls_token`` is prepended, a learnable position table initialised from a fixed 2-D sin-cos table
(time x mel grid) is added (``pos_embed``), and ``depth`` pre-LayerNorm transformer ``blocks`` run,
followed by a final LayerNorm (``norm``). The window embedding is the mean of the patch tokens.

Attribute names ``patch_embed``, ``cls_token``, ``pos_embed``, ``blocks``, ``norm`` are part of the
checkpoint format: :mod:`birdassets.models.vit.family` names layers by them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from birdassets.models.base import InputSpec, check_mel_batch, in_fixed_batches

VIT_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"dim": 64, "depth": 2, "heads": 4},
    "small": {"dim": 192, "depth": 6, "heads": 3},
    "base": {"dim": 384, "depth": 6, "heads": 6},
}
"""Named model sizes; ``vit_config(size, frames, mels)`` builds a :class:`ViTConfig` from them."""


@dataclass(frozen=True)
class ViTConfig:
    """Architecture and input contract of a :class:`ViTEncoder`.

    Attributes:
        frames: time frames per input window.
        mels: mel bins per frame.
        dim: token / embedding width.
        depth: number of transformer blocks.
        heads: attention heads per block (``dim % heads == 0``).
        patch_frames: patch height along time, in frames.
        patch_mels: patch width along frequency, in mel bins.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        preset: frontend preset name the encoder expects.
        sample_rate: frontend sample rate, in Hz.
        clip_s: window length, in seconds.
        input_norm: ``"instance"`` standardises each window (zero mean, unit variance over frames x mels)
            before patchifying, so the patch embeddings, not the positional table, carry the differences
            between windows; ``"none"`` feeds the frontend's values as they are.
    """

    frames: int
    mels: int
    dim: int
    depth: int
    heads: int
    patch_frames: int = 16
    patch_mels: int = 16
    mlp_ratio: float = 4.0
    preset: str = "birdclef2025"
    sample_rate: int = 32000
    clip_s: float = 5.0
    input_norm: str = "instance"

    def __post_init__(self) -> None:
        for name in ("frames", "mels", "dim", "depth", "heads", "patch_frames", "patch_mels", "sample_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"ViTConfig.{name} must be a positive integer, got {value!r}")
        if self.dim % self.heads:
            raise ValueError(f"ViTConfig.dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.dim % 4:
            raise ValueError(
                f"ViTConfig.dim ({self.dim}) must be divisible by 4 for the 2-D sin-cos position table"
            )
        if not self.mlp_ratio > 0 or self.mlp_hidden < 1:
            raise ValueError(f"ViTConfig.mlp_ratio must be positive, got {self.mlp_ratio!r}")
        if not self.clip_s > 0:
            raise ValueError(f"ViTConfig.clip_s must be positive seconds, got {self.clip_s!r}")
        if self.input_norm not in ("instance", "none"):
            raise ValueError(f"ViTConfig.input_norm must be 'instance' or 'none', got {self.input_norm!r}")
        if not isinstance(self.preset, str) or not self.preset:
            raise ValueError(f"ViTConfig.preset must be a non-empty string, got {self.preset!r}")

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid ``(time patches, mel patches)``; inputs are zero-padded up to whole patches."""
        return (math.ceil(self.frames / self.patch_frames), math.ceil(self.mels / self.patch_mels))

    @property
    def n_patches(self) -> int:
        """Number of patch tokens (the sequence has one more: the cls token)."""
        grid_t, grid_m = self.grid
        return grid_t * grid_m

    @property
    def patch_size(self) -> int:
        """Values per flattened patch, ``patch_frames * patch_mels``."""
        return self.patch_frames * self.patch_mels

    @property
    def mlp_hidden(self) -> int:
        """MLP hidden width, ``int(dim * mlp_ratio)``."""
        return int(self.dim * self.mlp_ratio)

    @property
    def input_spec(self) -> InputSpec:
        """The frontend contract of this encoder."""
        return InputSpec(
            preset=self.preset,
            sample_rate=self.sample_rate,
            clip_s=self.clip_s,
            frames=self.frames,
            mels=self.mels,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field (plain ``int``/``float``/``str``)."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, (np.integer, np.floating)):
                value = value.item()
            out[field.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ViTConfig:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: unknown keys (named) or missing required keys (named).
        """
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ViTConfig keys {unknown}; known keys are {sorted(known)}")
        required = {
            field.name
            for field in dataclasses.fields(cls)
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(data))
        if missing:
            raise ValueError(f"ViTConfig dict is missing required keys {missing}")
        return cls(**data)


def vit_config(size: str, frames: int, mels: int, **overrides: Any) -> ViTConfig:
    """Build a :class:`ViTConfig` from a named size in :data:`VIT_SIZES`.

    Args:
        size: key of :data:`VIT_SIZES` (``"tiny"``, ``"small"``, ``"base"``).
        frames: time frames per window.
        mels: mel bins per frame.
        **overrides: any other :class:`ViTConfig` field (overrides the size's values too).
    """
    if size not in VIT_SIZES:
        raise ValueError(f"unknown ViT size {size!r}; choose one of {sorted(VIT_SIZES)}")
    return ViTConfig.from_dict({"frames": frames, "mels": mels, **VIT_SIZES[size], **overrides})


def sincos_1d(positions: np.ndarray, dim: int) -> np.ndarray:
    """Sin-cos embedding of integer positions.

    Args:
        positions: ``[n]`` positions.
        dim: even output width.

    Returns:
        float32 ``[n, dim]``: ``[sin(p * w_k) for k] ++ [cos(p * w_k) for k]`` with
        ``w_k = 10000 ** (-k / (dim / 2))``, ``k = 0 .. dim/2 - 1``.
    """
    if dim % 2:
        raise ValueError(f"sin-cos width must be even, got {dim}")
    omega = 1.0 / 10000.0 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.asarray(positions, dtype=np.float64)[:, None] * omega[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def sincos_2d_table(grid_t: int, grid_m: int, dim: int) -> np.ndarray:
    """Fixed 2-D sin-cos position table for a ``grid_t x grid_m`` patch grid (MAE style).

    Patches are ordered time-major (index ``t * grid_m + m``). The first ``dim/2`` channels encode the
    time index, the last ``dim/2`` the mel index.

    Returns:
        float32 ``[grid_t * grid_m, dim]``.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos width must be divisible by 4, got {dim}")
    t_index, m_index = np.meshgrid(np.arange(grid_t), np.arange(grid_m), indexing="ij")
    time_part = sincos_1d(t_index.reshape(-1), dim // 2)
    mel_part = sincos_1d(m_index.reshape(-1), dim // 2)
    return np.concatenate([time_part, mel_part], axis=1)


def pos_embed_table(config: ViTConfig) -> np.ndarray:
    """Initial ``pos_embed`` value: zeros for the cls token, then the 2-D sin-cos table.

    Returns:
        float32 ``[1, 1 + n_patches, dim]``.
    """
    table = sincos_2d_table(*config.grid, config.dim)
    return np.concatenate([np.zeros((1, config.dim), np.float32), table], axis=0)[None]


def patchify(mel: jax.Array, config: ViTConfig) -> jax.Array:
    """Cut mel windows into flattened patches.

    Args:
        mel: ``[batch, frames, mels]``.
        config: gives the patch size and grid; frames and mels are zero-padded to whole patches.

    Returns:
        ``[batch, n_patches, patch_frames * patch_mels]``, patches time-major, each patch flattened
        time-major (``patch_frames`` rows of ``patch_mels`` values).
    """
    batch = mel.shape[0]
    grid_t, grid_m = config.grid
    pad_t = grid_t * config.patch_frames - config.frames
    pad_m = grid_m * config.patch_mels - config.mels
    mel = jnp.pad(mel, ((0, 0), (0, pad_t), (0, pad_m)))
    patches = mel.reshape(batch, grid_t, config.patch_frames, grid_m, config.patch_mels)
    patches = patches.transpose(0, 1, 3, 2, 4)
    return patches.reshape(batch, grid_t * grid_m, config.patch_size)


class MLP(nnx.Module):
    """Transformer feed-forward: ``fc1`` (dim -> hidden), GELU, ``fc2`` (hidden -> dim)."""

    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs) -> None:
        self.fc1 = nnx.Linear(dim, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``[..., dim] -> [..., dim]``."""
        return self.fc2(jax.nn.gelu(self.fc1(x)))


class TransformerBlock(nnx.Module):
    """Pre-LayerNorm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, config: ViTConfig, *, rngs: nnx.Rngs) -> None:
        self.norm1 = nnx.LayerNorm(config.dim, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(
            num_heads=config.heads,
            in_features=config.dim,
            decode=False,
            deterministic=True,
            keep_rngs=False,
            rngs=rngs,
        )
        self.norm2 = nnx.LayerNorm(config.dim, rngs=rngs)
        self.mlp = MLP(config.dim, config.mlp_hidden, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``[batch, tokens, dim] -> [batch, tokens, dim]``."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTEncoder(nnx.Module):
    """ViT over patchified mel windows.

    Parameters (names are part of the checkpoint format):
        patch_embed: ``nnx.Linear`` ``[patch_frames * patch_mels] -> [dim]``.
        cls_token: ``[1, 1, dim]``, zeros at init.
        pos_embed: ``[1, 1 + n_patches, dim]``, initialised from :func:`pos_embed_table`, learnable.
        blocks: ``depth`` pre-LN :class:`TransformerBlock`.
        norm: final LayerNorm over ``dim``.

    Deterministic: no dropout.
    """

    def __init__(self, config: ViTConfig, *, rngs: nnx.Rngs) -> None:
        self.config = config
        self.patch_embed = nnx.Linear(config.patch_size, config.dim, rngs=rngs)
        self.cls_token = nnx.Param(jnp.zeros((1, 1, config.dim), jnp.float32))
        self.pos_embed = nnx.Param(jnp.asarray(pos_embed_table(config)))
        self.blocks = nnx.List([TransformerBlock(config, rngs=rngs) for _ in range(config.depth)])
        self.norm = nnx.LayerNorm(config.dim, rngs=rngs)

    def __call__(self, mel: jax.Array, mask: jax.Array | None = None, mask_token: jax.Array | None = None) -> jax.Array:
        """Encode mel windows to tokens.

        Args:
            mel: float32 ``[batch, frames, mels]``.
            mask: optional bool ``[batch, n_patches]``; ``True`` patches have their embedding replaced by
                ``mask_token`` ``[dim]`` before positions are added (masked-patch modelling, SimMIM-style).
            mask_token: the learned replacement embedding, required with ``mask``.

        Returns:
            ``[batch, 1 + n_patches, dim]``: cls token then patch tokens, after the final norm.
        """
        config = self.config
        if mel.ndim != 3 or tuple(mel.shape[1:]) != (config.frames, config.mels):
            raise ValueError(
                f"ViTEncoder expects mel [batch, {config.frames}, {config.mels}], got {list(mel.shape)}"
            )
        if config.input_norm == "instance":
            mean = jnp.mean(mel, axis=(1, 2), keepdims=True)
            std = jnp.std(mel, axis=(1, 2), keepdims=True)
            mel = (mel - mean) / (std + 1e-6)
        tokens = self.patch_embed(patchify(mel, config))
        if mask is not None:
            tokens = jnp.where(mask[..., None], mask_token.astype(tokens.dtype), tokens)
        cls = jnp.broadcast_to(self.cls_token[...], (tokens.shape[0], 1, config.dim))
        x = jnp.concatenate([cls.astype(tokens.dtype), tokens], axis=1) + self.pos_embed[...].astype(tokens.dtype)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def embed(self, mel: jax.Array) -> jax.Array:
        """Window embedding: mean over the patch tokens (cls excluded; padded patches included).

        Args:
            mel: float32 ``[batch, frames, mels]``.

        Returns:
            ``[batch, dim]``.
        """
        tokens = self(mel)  # [batch, 1 + n_patches, dim]; a static slice, so a polymorphic-batch export has no gather
        return jnp.mean(jax.lax.slice_in_dim(tokens, 1, tokens.shape[1], axis=1), axis=1)


def encoder_params(model: ViTEncoder) -> dict[str, Any]:
    """The model's ``nnx.Param`` values as a pure nested dict with string keys.

    This is the ``state["encoder"]`` tree stored in checkpoints, e.g.
    ``{"patch_embed": {"kernel": [256, dim], "bias": [dim]}, "blocks": {"0": {...}}, ...}``.
    """
    pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return _stringify_keys(pure)


def _stringify_keys(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {str(key): _stringify_keys(value) for key, value in tree.items()}
    return tree


class ViTEmbedder:
    """:class:`~birdassets.models.base.Encoder` adapter around a :class:`ViTEncoder`.

    The model is split once into a graph definition and a parameter state; a pure
    ``apply(state, mel) -> embeddings`` is jitted. Inputs are processed in chunks of exactly
    ``batch_size`` rows (the last chunk is zero-padded and the padding dropped), so any number of
    rows compiles once per embedder.

    Attributes:
        name: encoder name.
        dim: embedding width.
        input_spec: frontend contract.
        config: the model config.
        batch_size: rows per jitted call.
    """

    def __init__(self, model: ViTEncoder, config: ViTConfig | None = None, *, name: str = "vit",
                 batch_size: int = 64) -> None:
        config = model.config if config is None else config
        if config != model.config:
            raise ValueError(f"config {config} does not match the model's config {model.config}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.name = name
        self.config = config
        self.dim = config.dim
        self.input_spec = config.input_spec
        self.batch_size = int(batch_size)
        graphdef, state = nnx.split(model)
        self._state = state

        def apply(state: nnx.State, mel: jax.Array) -> jax.Array:
            return nnx.merge(graphdef, state).embed(mel)

        self._apply = jax.jit(apply)

    def embed(self, mel: np.ndarray) -> np.ndarray:
        """Embed windows.

        Args:
            mel: float32 ``[batch, frames, mels]`` (any ``batch >= 0``).

        Returns:
            float32 ``[batch, dim]``.
        """
        mel = check_mel_batch(mel, self.input_spec, encoder_name=self.name)
        return in_fixed_batches(lambda batch: self._apply(self._state, batch), mel, self.batch_size, self.dim)
