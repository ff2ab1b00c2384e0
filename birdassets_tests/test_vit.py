from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from flax import nnx

from birdassets.models.base import Encoder, InputSpec
from birdassets.models.vit import (
    VIT_SIZES,
    ViTConfig,
    ViTEmbedder,
    ViTEncoder,
    encoder_params,
    patchify,
    pos_embed_table,
    sincos_2d_table,
    vit_config,
)

SMALL = ViTConfig(frames=40, mels=20, dim=32, depth=1, heads=4, patch_frames=8, patch_mels=4)

# jitted forward passes keep the tests fast (eager mode compiles every op separately)
_tokens = nnx.jit(lambda model, mel: model(mel))
_embed = nnx.jit(lambda model, mel: model.embed(mel))


def _mel(batch: int, config: ViTConfig, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, config.frames, config.mels)).astype(np.float32)


def _params_equal(a: ViTEncoder, b: ViTEncoder) -> bool:
    flat_a = jax.tree.leaves(encoder_params(a))
    flat_b = jax.tree.leaves(encoder_params(b))
    return len(flat_a) == len(flat_b) and all(np.array_equal(x, y) for x, y in zip(flat_a, flat_b))


@pytest.mark.parametrize(
    ("config", "grid"),
    [
        (ViTConfig(frames=313, mels=128, dim=32, depth=1, heads=4), (20, 8)),  # 313 -> padded to 320
        (SMALL, (5, 5)),
    ],
)
def test_output_shapes(config: ViTConfig, grid: tuple[int, int]) -> None:
    assert config.grid == grid
    assert config.n_patches == grid[0] * grid[1]
    model = ViTEncoder(config, rngs=nnx.Rngs(0))
    mel = _mel(2, config)
    tokens = _tokens(model, mel)
    assert tokens.shape == (2, 1 + config.n_patches, config.dim)
    assert _embed(model, mel).shape == (2, config.dim)
    assert model.patch_embed.kernel.shape == (config.patch_frames * config.patch_mels, config.dim)
    assert model.cls_token.shape == (1, 1, config.dim)
    assert model.pos_embed.shape == (1, 1 + config.n_patches, config.dim)
    assert len(model.blocks) == config.depth


def test_wrong_input_shape_is_rejected() -> None:
    model = ViTEncoder(SMALL, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\[batch, 40, 20\].*\[2, 40, 21\]"):
        model(np.zeros((2, 40, 21), np.float32))


def test_patchify_places_values_time_major_and_zero_pads() -> None:
    config = ViTConfig(frames=10, mels=6, dim=8, depth=1, heads=2, patch_frames=4, patch_mels=4)
    assert config.grid == (3, 2)  # frames 10 -> 12, mels 6 -> 8
    mel = np.zeros((1, 10, 6), np.float32)
    mel[0, 5, 3] = 7.0  # time patch 1, mel patch 0, row 1, col 3
    mel[0, 9, 5] = 2.0  # time patch 2, mel patch 1, row 1, col 1
    patches = np.asarray(patchify(mel, config))
    assert patches.shape == (1, 6, 16)
    assert patches[0, 1 * 2 + 0, 1 * 4 + 3] == 7.0
    assert patches[0, 2 * 2 + 1, 1 * 4 + 1] == 2.0
    assert np.count_nonzero(patches) == 2
    # ones everywhere: padded cells in the last time patch / mel patch are zero
    ones = np.asarray(patchify(np.ones((1, 10, 6), np.float32), config))
    assert ones.sum() == 60.0
    assert ones[0, 5].reshape(4, 4)[:2, :2].sum() == 4.0 and ones[0, 5].reshape(4, 4)[2:].sum() == 0.0


def test_embed_is_mean_of_patch_tokens() -> None:
    model = ViTEncoder(SMALL, rngs=nnx.Rngs(3))
    mel = _mel(3, SMALL)
    tokens = np.asarray(_tokens(model, mel))
    expected = tokens[:, 1:, :].mean(axis=1)
    np.testing.assert_allclose(np.asarray(_embed(model, mel)), expected, rtol=1e-5, atol=1e-6)
    # and it is not the cls token or the mean including it
    assert not np.allclose(expected, tokens[:, 0, :], atol=1e-3)


def test_same_seed_same_model_different_seed_different_model() -> None:
    mel = _mel(2, SMALL)
    a = ViTEncoder(SMALL, rngs=nnx.Rngs(7))
    b = ViTEncoder(SMALL, rngs=nnx.Rngs(7))
    c = ViTEncoder(SMALL, rngs=nnx.Rngs(8))
    assert _params_equal(a, b)
    np.testing.assert_array_equal(np.asarray(_embed(a, mel)), np.asarray(_embed(b, mel)))
    assert not _params_equal(a, c)
    assert np.abs(np.asarray(_embed(a, mel)) - np.asarray(_embed(c, mel))).max() > 1e-3


def test_pos_embed_initialised_from_2d_sincos_table() -> None:
    config = ViTConfig(frames=48, mels=32, dim=16, depth=1, heads=2)
    grid_t, grid_m = config.grid
    assert (grid_t, grid_m) == (3, 2)
    model = ViTEncoder(config, rngs=nnx.Rngs(0))
    pos = np.asarray(model.pos_embed[...])
    np.testing.assert_array_equal(pos, pos_embed_table(config))
    np.testing.assert_array_equal(pos[0, 0], np.zeros(16))  # cls position
    table = sincos_2d_table(grid_t, grid_m, 16)
    np.testing.assert_array_equal(pos[0, 1:], table)
    # independent check of the layout: channels [0:4] sin(t*w), [4:8] cos(t*w), [8:12] sin(m*w), [12:16] cos(m*w)
    omega = 1.0 / 10000.0 ** (np.arange(4) / 4.0)
    for t in range(grid_t):
        for m in range(grid_m):
            row = table[t * grid_m + m]
            np.testing.assert_allclose(row[0:4], np.sin(t * omega), atol=1e-6)
            np.testing.assert_allclose(row[4:8], np.cos(t * omega), atol=1e-6)
            np.testing.assert_allclose(row[8:12], np.sin(m * omega), atol=1e-6)
            np.testing.assert_allclose(row[12:16], np.cos(m * omega), atol=1e-6)
    # learnable: it is an nnx.Param
    assert "pos_embed" in encoder_params(model)


def test_jitted_embedder_matches_eager_and_compiles_once() -> None:
    model = ViTEncoder(SMALL, rngs=nnx.Rngs(1))
    embedder = ViTEmbedder(model, SMALL, name="vit-test", batch_size=2)
    assert isinstance(embedder, Encoder)
    assert embedder.dim == 32
    assert embedder.input_spec == InputSpec("birdclef2025", 32000, 5.0, 40, 20)
    mel = _mel(5, SMALL, seed=2)
    eager = np.asarray(model.embed(mel))
    for n in (5, 1, 3):
        out = embedder.embed(mel[:n])
        assert out.shape == (n, 32) and out.dtype == np.float32
        np.testing.assert_allclose(out, eager[:n], rtol=1e-4, atol=1e-5)
    assert embedder._apply._cache_size() == 1  # padded chunks: one trace for every n
    assert embedder.embed(np.zeros((0, 40, 20), np.float32)).shape == (0, 32)
    with pytest.raises(ValueError, match="vit-test.*\\[batch, 40, 20\\]"):
        embedder.embed(np.zeros((2, 20, 40), np.float32))


def test_config_round_trip_and_unknown_keys() -> None:
    config = vit_config("small", frames=313, mels=128, patch_frames=8, clip_s=3.0)
    assert (config.dim, config.depth, config.heads, config.patch_frames, config.clip_s) == (192, 6, 3, 8, 3.0)
    data = json.loads(json.dumps(config.to_dict()))
    assert ViTConfig.from_dict(data) == config
    with pytest.raises(ValueError, match="unknown ViTConfig keys \\['colour'\\]"):
        ViTConfig.from_dict({**data, "colour": "red"})
    del data["depth"]
    with pytest.raises(ValueError, match="missing required keys \\['depth'\\]"):
        ViTConfig.from_dict(data)
    assert {size: VIT_SIZES[size]["dim"] for size in ("tiny", "small", "base")} == {"tiny": 64, "small": 192, "base": 384}
    with pytest.raises(ValueError, match="unknown ViT size 'huge'"):
        vit_config("huge", 313, 128)
    with pytest.raises(ValueError, match="divisible by heads"):
        ViTConfig(frames=10, mels=10, dim=30, depth=1, heads=4)
    with pytest.raises(ValueError, match="frames must be a positive integer"):
        ViTConfig(frames=0, mels=10, dim=32, depth=1, heads=4)
