"""`birdassets spectrogram` writes arrays that match librosa for every preset (and user presets);
`bench_frontend` measures every implementation side by side with librosa."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from birdassets.audio.io import load
from birdassets.speed import bench_frontend
from birdassets.cli import main
from birdassets.frontends.presets import PRESETS, presets_from_toml
from birdassets_tests.conftest import tone, write_recording

pytest.importorskip("librosa", reason="librosa is the parity reference (pip install -e '.[test]')")
from birdassets.frontends.reference import librosa_mel_db, numpy_model_input  # noqa: E402


@pytest.fixture
def spectrogram(capsys, monkeypatch):
    """Run ``birdassets spectrogram ARGS`` in this process (``main`` is the console script's entry point)."""

    def run(*args: str, home) -> SimpleNamespace:
        monkeypatch.setenv("BIRDASSETS_HOME", str(home))
        code = main(["spectrogram", *args])
        captured = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)

    return run


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """7.3 s at 44.1 kHz: every preset resamples it (to 32 or 20 kHz) before its frontend."""
    path = tmp_path_factory.mktemp("audio") / "a.wav"
    return write_recording(path, tone(3000.0, 7.3, 44_100) + 0.3 * tone(800.0, 7.3, 44_100, seed=3), 44_100)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_cli_stage_b_and_c_match_the_references(name, recording, tmp_path, spectrogram):
    preset = PRESETS[name]
    audio, _ = load(recording, preset.sample_rate)  # the same resampled signal
    for stage in ("mel_db", "model_input"):
        out = tmp_path / f"{stage}.npy"
        done = spectrogram("--preset", name, "--stage", stage, "--out", str(out), str(recording), home=tmp_path)
        assert done.returncode == 0, done.stderr
        assert f"{stage} [" in done.stdout and name in done.stdout
        ours = np.load(out)
        assert ours.dtype == np.float32
        if stage == "mel_db":  # the whole file, no windowing
            ref = librosa_mel_db(audio, preset)
            assert ours.shape == ref.shape == (1 + len(audio) // preset.hop_length, preset.n_mels)
            scale = 20.0 / (preset.ln_scale * np.log(10.0)) if preset.log == "ln" else 1.0  # perch: in dB
            assert np.abs(ours - ref).max() * scale <= 1e-4
        else:  # the first stage-A window
            ref = numpy_model_input(librosa_mel_db(audio[: preset.clip_samples], preset), preset)
            assert ours.shape == ref.shape == preset.input_shape
            assert np.abs(ours - ref).max() <= 1e-4


def test_short_file_first_window_is_zero_padded(tmp_path, spectrogram):
    path = write_recording(tmp_path / "b.wav", tone(3000.0, 2.0, 32_000), 32_000)  # shorter than a 5 s window
    out = tmp_path / "b.npy"
    done = spectrogram("--preset", "birdset", "--stage", "model_input", "--out", str(out), str(path), home=tmp_path)
    assert done.returncode == 0, done.stderr
    x = np.load(out)
    assert x.shape == (501, 128)
    # after 2 s (frame 200 + the window's reach) only zeros: the top_db floor, 80 dB under the max, standardised
    np.testing.assert_allclose(x[205:], x.max() - 80.0 / 4.569, atol=1e-5)


def test_user_preset_from_file_and_from_home(tmp_path, spectrogram):
    presets_file = tmp_path / "presets.toml"
    presets_file.write_text('[presets.hop256]\nbase = "birdset"\nhop_length = 256\n')
    path = write_recording(tmp_path / "c.wav", tone(3000.0, 3.0, 32_000), 32_000)
    out = tmp_path / "c.npy"
    done = spectrogram("--preset", "hop256", "--presets", str(presets_file), "--out", str(out), str(path),
                       home=tmp_path)
    assert done.returncode == 0, done.stderr
    ours = np.load(out)
    preset = presets_from_toml(presets_file)["hop256"]
    assert ours.shape == (1 + 96_000 // 256, 128)
    assert np.abs(ours - librosa_mel_db(load(path, 32_000)[0], preset)).max() <= 1e-4
    (tmp_path / "birdassets.toml").write_text(presets_file.read_text())  # the same preset from BIRDASSETS_HOME
    done = spectrogram("--preset", "hop256", "--out", str(tmp_path / "d.npy"), str(path), home=tmp_path)
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), ours)


def test_bad_input_is_named(tmp_path, spectrogram):
    bad = tmp_path / "not-audio.wav"
    bad.write_bytes(b"hello")
    done = spectrogram("--out", str(tmp_path / "x.npy"), str(bad), home=tmp_path)
    assert done.returncode == 2 and "not-audio.wav" in done.stderr
    done = spectrogram("--preset", "nope", "--out", str(tmp_path / "x.npy"), str(bad), home=tmp_path)
    assert done.returncode == 2 and "unknown preset 'nope'" in done.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text('[presets.mine]\nbase = "birdset"\nn_mels = "many"\n')
    done = spectrogram("--preset", "mine", "--presets", str(broken), "--out", str(tmp_path / "x.npy"), str(bad),
                       home=tmp_path)
    assert done.returncode == 2 and "broken.toml: preset 'mine': n_mels = 'many' is not int" in done.stderr


def test_bench_frontend_reports_every_implementation():
    frame = bench_frontend([PRESETS["birdclef2025"], PRESETS["orcahello"]], seconds=10.0, repeats=1)
    assert set(frame["preset"]) == {"birdclef2025", "orcahello"}
    implementations = set(frame["implementation"])
    assert {"librosa (whole file)", "tf.signal (whole file)", "jax (whole file)"} <= implementations
    assert {"tf.signal (2 windows)", "tf.signal (9 windows)"} <= implementations  # 5 s and 2 s / 1 s hop windows
    assert (frame["audio_s_per_s"] > 0).all()
    np.testing.assert_allclose(frame["audio_s_per_s"], 10.0 / frame["seconds"])
    for _, rows in frame.groupby("preset"):
        librosa_row = rows[rows["implementation"] == "librosa (whole file)"].iloc[0]
        assert librosa_row["x_librosa"] == 1.0
        np.testing.assert_allclose(rows["x_librosa"], librosa_row["seconds"] / rows["seconds"])
