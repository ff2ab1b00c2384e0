"""Exporting the supervised Keras models (#8): fold models -> safetensors + Keras JSON -> one ensemble whose
probabilities are the fold mean of sigmoid(logits) Keras itself computes, and a TFLite file for each family."""

from __future__ import annotations

import numpy as np
import pytest

from birdassets.export.from_checkpoint import convert_and_compare
from birdassets.export.weights import load_weights, save_weights
from birdassets.frontends.presets import get_preset
from birdassets.models.base import InputSpec
from birdassets.models.keras.ensemble import ensemble_from_weights, exported_weights
from birdassets.supervised.architectures import build_model
from birdassets.supervised.config import ModelConfig

PRESET = get_preset("birdclef2025")
SPEC = InputSpec(preset=PRESET.name, sample_rate=PRESET.sample_rate, clip_s=PRESET.clip_s,
                 frames=PRESET.input_shape[0], mels=PRESET.input_shape[1])
CLASSES = ("amerob", "woothr", "norcar", "blujay")
FOLDS = {"rnn": 2, "vit": 2, "cnn": 1}
"""Fold models per family (the CNN's one: its EfficientNet-B0 costs ~25 s a fold here; the mean is the same code)."""
MODEL_CONFIGS = {
    "rnn": ModelConfig(family="rnn", rnn_units=16, rnn_layers=2),
    "vit": ModelConfig(family="vit", vit_size="tiny", vit_patch=64),
    "cnn": ModelConfig(family="cnn"),
}


def fold_models(family: str) -> list:
    """``FOLDS[family]`` models of one architecture (one Keras JSON, as training's folds) with different weights: each
    later fold is the first rebuilt from its JSON with noise added to its trainable weights."""
    import keras

    keras.utils.set_random_seed(0)
    first = build_model(MODEL_CONFIGS[family], (SPEC.frames, SPEC.mels), len(CLASSES))
    models, rng = [first], np.random.default_rng(1)
    for _ in range(1, FOLDS[family]):
        model = keras.models.model_from_json(first.to_json())
        model.set_weights(first.get_weights())
        for variable in model.trainable_variables:
            variable.assign(np.asarray(variable.value) + rng.normal(0, 0.02, variable.shape).astype(np.float32))
        models.append(model)
    return models


def mel_windows(n: int = 5) -> np.ndarray:
    """``[n, frames, mels]`` dB-like windows (stage C values of the birdclef2025 preset lie in [-80, 0])."""
    return np.random.default_rng(7).uniform(-80, 0, (n, SPEC.frames, SPEC.mels)).astype(np.float32)


def keras_reference(models: list, mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What Keras itself says: mean over folds of sigmoid(predict), and fold 0's ``embedding`` layer."""
    import keras

    logits = np.stack([model.predict(mel, verbose=0) for model in models])
    embedding = keras.Model(models[0].inputs, models[0].get_layer("embedding").output).predict(mel, verbose=0)
    return (1.0 / (1.0 + np.exp(-logits))).mean(axis=0), embedding


@pytest.mark.parametrize("family", ["rnn", "vit", "cnn"])
def test_fold_models_reload_from_safetensors_as_the_fold_mean_and_convert_to_tflite(family, tmp_path):
    models = fold_models(family)
    mel = mel_windows()
    expected, embedding = keras_reference(models, mel)
    architecture, weights = exported_weights(models, family, SPEC)
    save_weights(tmp_path / "model.safetensors", weights, {"family": "keras"})
    reloaded, _ = load_weights(tmp_path / "model.safetensors")
    ensemble = ensemble_from_weights(architecture, reloaded, CLASSES, name="t", where="here", batch_size=4)
    assert architecture["folds"] == len(reloaded) == FOLDS[family]
    assert len(models) == 1 or not np.allclose(models[0].predict(mel, verbose=0), models[1].predict(mel, verbose=0))
    np.testing.assert_allclose(ensemble.probabilities(mel), expected, atol=1e-6, rtol=0)
    np.testing.assert_allclose(ensemble.embed(mel), embedding, atol=1e-5, rtol=1e-5)
    assert ensemble.reshapes_batch is (family != "cnn")
    _, tflite = convert_and_compare(ensemble, PRESET)
    assert tflite["file"] == "model.tflite", tflite.get("reason")
    assert tflite["max_abs_diff"] < (2e-3 if family == "cnn" else 1e-5)  # XNNPACK's conv sums in another order


def test_weights_of_another_shape_or_missing_are_refused_naming_fold_and_variable():
    models = fold_models("rnn")
    architecture, weights = exported_weights(models, "rnn", SPEC)
    kernel = f"{architecture['variables'].index('logits/kernel'):04d}"  # safetensors names: the variable's index
    weights["fold_1"][kernel] = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match=r"here: fold_1 weight 'logits/kernel' is shape \(3, 3\), the architecture "
                                         r"needs \(32, 4\)"):  # 2 x 16 units (bidirectional)
        ensemble_from_weights(architecture, weights, CLASSES, name="t", where="here")
    del weights["fold_1"][kernel]
    with pytest.raises(ValueError, match="fold_1 weight 'logits/kernel' is missing"):
        ensemble_from_weights(architecture, weights, CLASSES, name="t", where="here")


def test_folds_of_different_architectures_are_refused():
    import keras

    keras.utils.set_random_seed(0)
    other = build_model(ModelConfig(family="rnn", rnn_units=8, rnn_layers=2), (SPEC.frames, SPEC.mels), len(CLASSES))
    with pytest.raises(ValueError, match="do not share one architecture"):
        exported_weights([fold_models("rnn")[0], other], "rnn", SPEC)
