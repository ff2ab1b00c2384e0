"""The supervised Keras model families (cnn, rnn, vit) and their mixed precision.

The CNN is never trained or run here (XLA:CPU needs ~1 s per window): it is built once and one forward pass is
traced to a jaxpr. The RNN and ViT are run on a couple of windows.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import birdassets  # noqa: F401  (KERAS_BACKEND=jax before keras)
import jax
import keras
import numpy as np
import pytest
from flax import nnx

from birdassets.checkpoints.refs import CheckpointError
from birdassets.models.keras.depthwise import ShiftedDepthwiseConv2D
from birdassets.models.keras.vit_backbone import ViTBackbone
from birdassets.models.vit import ViTConfig, ViTEmbedder, ViTEncoder, restore_encoder, save_checkpoint
from birdassets.supervised.config import ModelConfig
from birdassets.supervised.architectures import EMBEDDING, LOGITS, MEL_AVERAGE, MEL_NORM, build_model
from birdassets.supervised.precision import precision_policy, resolve_precision

WINDOW = (256, 256)
CLASSES = 7
MATMULS = ("dot_general", "conv_general_dilated")
TINY_VIT = ViTConfig(frames=256, mels=256, dim=32, depth=1, heads=2, patch_frames=32, patch_mels=32)
TINY_VIT_32 = ViTConfig(frames=32, mels=32, dim=16, depth=1, heads=2, patch_frames=8, patch_mels=8)


def windows(n: int, shape: tuple[int, int] = WINDOW, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def predict_outputs(model: keras.Model, x: np.ndarray, *layer_names: str) -> list[np.ndarray]:
    """The logits and the named layers' outputs of ``model`` on ``x``, from one compiled predict."""
    probe = keras.Model(model.input, [model.output] + [model.get_layer(name).output for name in layer_names])
    return probe.predict(x, verbose=0)


def all_equations(jaxpr):
    """Every equation of a jaxpr, those of its sub-jaxprs (scan, pjit, ...) included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from all_equations(inner)


def matmul_operand_dtypes(jaxpr) -> list[tuple[str, ...]]:
    """Operand dtypes of every dot_general / convolution in a jaxpr, sub-jaxprs included."""
    return [tuple(str(var.aval.dtype) for var in eqn.invars) for eqn in all_equations(jaxpr)
            if eqn.primitive.name in MATMULS]


def traced_forward(model: keras.Model, batch: int = 2):
    """The jaxpr of ``model``'s inference forward pass on ``batch`` float32 windows (traced, not compiled or run)."""
    trainable = [v.value for v in model.trainable_variables]
    frozen = [v.value for v in model.non_trainable_variables]
    x = jax.ShapeDtypeStruct((batch, *model.input_shape[1:]), np.float32)

    def forward(trainable, frozen, x):
        return model.stateless_call(trainable, frozen, x, training=False)[0]

    return jax.make_jaxpr(forward)(trainable, frozen, x)


def assert_computes_in_bfloat16(model: keras.Model, batch: int = 2) -> None:
    """float32 variables, every matmul/conv on bfloat16 operands except the float32 head, float32 logits."""
    assert {v.dtype for v in model.trainable_variables} == {"float32"}
    assert model.get_layer(LOGITS).dtype_policy.name == "float32"
    (embedding,) = traced_forward(keras.Model(model.input, model.get_layer(EMBEDDING).output), batch).out_avals
    assert str(embedding.dtype) == "bfloat16"
    closed = traced_forward(model, batch)
    (logits,) = closed.out_avals
    assert (logits.shape, str(logits.dtype)) == ((batch, CLASSES), "float32")
    operands = matmul_operand_dtypes(closed.jaxpr)
    in_bf16 = [ops for ops in operands if set(ops) == {"bfloat16"}]
    in_f32 = [ops for ops in operands if set(ops) == {"float32"}]
    assert len(in_bf16) >= 2 and len(in_f32) == 1, operands  # the one float32 matmul is the head
    assert len(in_bf16) + len(in_f32) == len(operands), operands


# --------------------------------------------------------------------------- precision


def test_resolve_precision_names_the_policy_for_this_machine() -> None:
    assert resolve_precision("auto") == "mixed_bfloat16"  # JAX sees only the CPU here
    for name in ("float32", "mixed_bfloat16", "mixed_float16"):
        assert resolve_precision(name) == name
    with pytest.raises(ValueError, match=r"precision must be one of .*got 'bf16'"):
        resolve_precision("bf16")


def test_precision_policy_is_restored_after_the_block_and_after_an_error() -> None:
    assert keras.config.dtype_policy().name == "float32"
    with precision_policy("auto") as resolved:
        assert resolved == "mixed_bfloat16"
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(RuntimeError, match="boom"), precision_policy("mixed_float16"):
        assert keras.config.dtype_policy().name == "mixed_float16"
        raise RuntimeError("boom")
    assert keras.config.dtype_policy().name == "float32"


# --------------------------------------------------------------------------- rnn


def test_rnn_averages_adjacent_mel_bins_like_numpy() -> None:
    model = build_model(ModelConfig(family="rnn", rnn_units=4, rnn_mels=3), (5, 12), CLASSES)
    x = windows(2, (5, 12))
    averaged = np.asarray(keras.Model(model.input, model.get_layer(MEL_AVERAGE).output)(x))
    by_hand = np.stack([[[x[b, t, 4 * g:4 * g + 4].sum() / 4 for g in range(3)] for t in range(5)] for b in range(2)])
    np.testing.assert_allclose(averaged, by_hand, rtol=1e-6)


def test_rnn_normalises_each_averaged_mel_bin_over_batch_and_time() -> None:
    """In training, every bin leaves the norm with mean 0 and variance 1 over batch x frames (the [0, 1] dB values
    would otherwise sit in a narrow band the GRU barely learns from)."""
    model = build_model(ModelConfig(family="rnn", rnn_units=4, rnn_mels=3), (40, 12), CLASSES)
    x = windows(6, (40, 12)) * np.linspace(0.1, 1.0, 12, dtype=np.float32)  # bins of different scales
    normed = np.asarray(keras.Model(model.input, model.get_layer(MEL_NORM).output)(x, training=True), np.float64)
    averaged = x.reshape(6, 40, 3, 4).mean(axis=-1).astype(np.float64)
    by_hand = (averaged - averaged.mean(axis=(0, 1))) / np.sqrt(averaged.var(axis=(0, 1)) + 1e-3)  # Keras's epsilon
    np.testing.assert_allclose(normed, by_hand, atol=1e-4)


def test_rnn_mels_must_divide_the_window_mels() -> None:
    with pytest.raises(ValueError, match=r"rnn_mels \(100\) must divide the window's 256 mel bins"):
        build_model(ModelConfig(family="rnn", rnn_mels=100), WINDOW, CLASSES)


def test_rnn_logits_embedding_and_save_load_round_trip(tmp_path: Path) -> None:
    config = ModelConfig(family="rnn", rnn_cell="lstm", rnn_layers=3, rnn_units=16, rnn_mels=8)
    model = build_model(config, (32, 16), CLASSES)
    x = windows(3, (32, 16))
    logits, embedding, sequence = predict_outputs(model, x, EMBEDDING, "lstm_2")
    assert (logits.shape, logits.dtype) == ((3, CLASSES), np.float32) and np.all(np.isfinite(logits))
    assert embedding.shape == (3, 2 * 16)  # mean and max over time of the last LSTM(16): [3, 32, 16]
    np.testing.assert_allclose(embedding, np.concatenate([sequence.mean(1), sequence.max(1)], 1), rtol=1e-5, atol=1e-6)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    reloaded_logits, reloaded_embedding = predict_outputs(loaded, x, EMBEDDING)
    np.testing.assert_array_equal(reloaded_logits, logits)
    np.testing.assert_array_equal(reloaded_embedding, embedding)


def test_rnn_computes_in_bfloat16_with_float32_variables() -> None:
    with precision_policy("mixed_bfloat16"):
        model = build_model(ModelConfig(family="rnn"), WINDOW, CLASSES)
    assert keras.config.dtype_policy().name == "float32"
    assert model.get_layer(EMBEDDING).output.shape == (None, 2 * 128)  # default rnn_units 128
    assert_computes_in_bfloat16(model)


# --------------------------------------------------------------------------- vit


@pytest.fixture(scope="module")
def vit_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A real Orbax ViT checkpoint (dim 32, depth 1, patch 32 on 256 x 256): ``(root, "pretrain@3")``."""
    root = tmp_path_factory.mktemp("checkpoints")
    save_checkpoint(root / "pretrain", 3, ViTEncoder(TINY_VIT, rngs=nnx.Rngs(7)), TINY_VIT)
    return root, "pretrain@3"


def test_vit_from_checkpoint_reproduces_the_encoder_and_survives_save_load(vit_checkpoint, tmp_path: Path) -> None:
    root, key = vit_checkpoint
    model = build_model(ModelConfig(family="vit", init_checkpoint=key), WINDOW, CLASSES, checkpoint_roots=[root])
    assert model.get_layer(EMBEDDING).vit_config == TINY_VIT  # the checkpoint's config, not vit_size "tiny"
    x = windows(3)
    restored, _, _ = restore_encoder(root / "pretrain", 3)
    expected = ViTEmbedder(restored, batch_size=3).embed(x)  # ViTEncoder.embed, jitted
    logits, embedding = predict_outputs(model, x, EMBEDDING)
    np.testing.assert_allclose(embedding, expected, atol=1e-5)
    assert (logits.shape, logits.dtype) == ((3, CLASSES), np.float32) and np.all(np.isfinite(logits))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.get_layer(EMBEDDING), ViTBackbone)
    reloaded_logits, reloaded_embedding = predict_outputs(loaded, x, EMBEDDING)
    np.testing.assert_array_equal(reloaded_logits, logits)
    np.testing.assert_array_equal(reloaded_embedding, embedding)


def test_vit_checkpoint_of_other_window_shape_is_refused(vit_checkpoint) -> None:
    root, key = vit_checkpoint
    message = r"init checkpoint 'pretrain@3' \(.*pretrain/3\) takes \[frames, mels\] = \[256, 256\] .* \[128, 256\]"
    with pytest.raises(CheckpointError, match=message):
        build_model(ModelConfig(family="vit", init_checkpoint=key), (128, 256), CLASSES, checkpoint_roots=[root])
    with pytest.raises(CheckpointError, match="no finalized step 9"):
        build_model(ModelConfig(family="vit", init_checkpoint="pretrain@9"), WINDOW, CLASSES, checkpoint_roots=[root])


def test_vit_computes_in_bfloat16_with_float32_variables() -> None:
    with precision_policy("mixed_bfloat16"):
        model = build_model(ModelConfig(family="vit", vit_size="tiny", vit_patch=32), WINDOW, CLASSES)
    assert keras.config.dtype_policy().name == "float32"
    assert model.get_layer(EMBEDDING).output.shape == (None, 64)  # vit_size tiny: dim 64
    assert_computes_in_bfloat16(model)


# --------------------------------------------------------------------------- cnn (built and traced, never run)


def test_resnet_cnn_computes_in_bfloat16_with_float32_variables() -> None:
    with precision_policy("mixed_bfloat16"):
        model = build_model(ModelConfig(family="cnn", backbone="resnet50"), WINDOW, CLASSES)
    assert keras.config.dtype_policy().name == "float32"
    assert model.get_layer(EMBEDDING).output.shape == (None, 2048)  # ResNet50 top channels
    assert_computes_in_bfloat16(model, batch=1)


@pytest.mark.slow  # building EfficientNetB0 costs ~30 s of CPU (one XLA compile per weight shape to initialise it)
def test_efficientnet_cnn_stem_sees_windows_in_zero_one_and_computes_in_bfloat16() -> None:
    """EfficientNet's built-in Rescaling(1/255) + un-adapted Normalization undo the model's x255: identity."""
    with precision_policy("mixed_bfloat16"):
        model = build_model(ModelConfig(family="cnn", backbone="efficientnet_b0"), WINDOW, CLASSES)
    assert model.get_layer(EMBEDDING).output.shape == (None, 1280)  # EfficientNetB0 top channels
    assert_computes_in_bfloat16(model, batch=1)
    backbone = model.get_layer("efficientnetb0")
    kinds = [type(layer).__name__ for layer in backbone.layers]
    assert kinds.count("ShiftedDepthwiseConv2D") == 16 and "DepthwiseConv2D" not in kinds  # EfficientNetB0's 16 blocks
    assert grouped_convolutions(traced_forward(model, batch=1).jaxpr) == 0
    normalization = next(layer for layer in backbone.layers if isinstance(layer, keras.layers.Normalization))
    x = windows(1)
    image = model.get_layer("to_pixel_range")(x[..., None])
    stem_input = keras.Model(backbone.input, normalization.output)(image)
    np.testing.assert_allclose(np.asarray(stem_input, np.float32), x[..., None], rtol=1e-2, atol=1e-2)


# --------------------------------------------------------------------------- depthwise convolution as shifted adds


def test_shifted_depthwise_strided_same_padding_puts_the_extra_row_and_column_after() -> None:
    """3x3 ones kernel, stride 2, "same" on a 4x4 image: pad 0 before, 1 after (TensorFlow's split), by hand."""
    layer = ShiftedDepthwiseConv2D(3, strides=2, padding="same", use_bias=False)
    image = np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4, 1)
    layer.build(image.shape)
    layer.set_weights([np.ones((3, 3, 1, 1), np.float32)])
    expected = [[1 + 2 + 3 + 5 + 6 + 7 + 9 + 10 + 11, 3 + 4 + 7 + 8 + 11 + 12],
                [9 + 10 + 11 + 13 + 14 + 15, 11 + 12 + 15 + 16]]
    np.testing.assert_array_equal(np.asarray(layer(image))[0, :, :, 0], expected)


@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, "same"), (3, 2, "same"), (5, 2, "same"), (5, 1, "valid"),
                                                    (3, 2, "valid")])
def test_shifted_depthwise_equals_keras_depthwise_conv(kernel: int, stride: int, padding: str) -> None:
    """Same weights, bias and activation as ``DepthwiseConv2D``: same output shape and values, odd and even sizes."""
    x = np.random.default_rng(kernel * stride).normal(size=(2, 15, 16, 6)).astype(np.float32)
    reference = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding=padding, activation="swish",
                                             bias_initializer="random_normal")
    expected = np.asarray(reference(x))
    shifted = ShiftedDepthwiseConv2D.from_config(reference.get_config())
    shifted.build(x.shape)
    shifted.set_weights(reference.get_weights())
    np.testing.assert_allclose(np.asarray(shifted(x)), expected, rtol=1e-5, atol=1e-5)


def grouped_convolutions(jaxpr) -> int:
    """How many convolutions with ``feature_group_count > 1`` a jaxpr holds, sub-jaxprs included."""
    return sum(eqn.primitive.name == "conv_general_dilated" and eqn.params["feature_group_count"] > 1
               for eqn in all_equations(jaxpr))


def test_keras_models_with_custom_layers_load_in_a_fresh_process(tmp_path: Path) -> None:
    """The keras family's embedder reloads shifted depthwise and ViT layers with nothing else imported first."""
    inputs = keras.Input((32, 32), name="mel")
    image = keras.layers.Reshape((32, 32, 1))(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(ShiftedDepthwiseConv2D(3)(image))
    features = keras.layers.Concatenate(name=EMBEDDING)([pooled, ViTBackbone(TINY_VIT_32.to_dict())(inputs)])
    model = keras.Model(inputs, keras.layers.Dense(2)(features))
    x = windows(3, (32, 32))
    expected = np.asarray(keras.Model(inputs, features)(x))
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", x)
    script = ("import numpy as np, sys; from birdassets.models.base import InputSpec; "
              "from birdassets.models.keras.family import KerasEmbedder; d = sys.argv[1]; "
              "e = KerasEmbedder(d + '/m.keras', InputSpec('p', 32000, 5.0, 32, 32), name='m', batch_size=2); "
              "np.save(d + '/y.npy', e.embed(np.load(d + '/x.npy')))")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-6)
