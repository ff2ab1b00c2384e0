"""Ingestion that loses nothing, on real files: every bad-file kind is quarantined with its reason, every
good format / bit depth / rate / channel layout is ingested and decodes to the right numbers, and the
counts reconcile. Unreadable files are checked for real: as root (who can read anything) the folder scan
runs in a child interpreter that dropped to the ``nobody`` user."""

from __future__ import annotations

import os
import pickle
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from birdassets.audio.io import AudioError, load, probe, verify
from birdassets.sources.folder import AUDIO_EXTENSIONS, read_folder
from birdassets.sources.ingest import (
    REASONS,
    UNANNOTATED,
    IngestResult,
    QuarantineRecord,
    read_quarantine,
    scan_audio,
    write_quarantine,
)
from birdassets.sources.manifest import file_sha256

MIN_S = 1.0  # the birdclef2025 preset's min_last_s
NOBODY = 65534


def _tone(hz: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float64)


def _mp3_writable() -> bool:
    return "MP3" in sf.available_formats() and "MPEG_LAYER_III" in sf.available_subtypes("MP3")


def _dominant_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[np.argmax(spectrum)])


_AS_NOBODY = """
import os, pickle, sys
from birdassets.sources.folder import read_folder  # every import happens before privileges are dropped
os.setgid({uid}); os.setuid({uid})
result = read_folder(sys.argv[1], min_duration_s=float(sys.argv[2]))
sys.stdout.buffer.write(pickle.dumps(result))
"""


def _read_folder_as_nobody(root: Path, min_duration_s: float) -> IngestResult:
    """:func:`read_folder` where file permissions bind: directly for a normal user; as root (who reads
    anything), in a fresh interpreter that imports everything and then becomes ``nobody``."""
    if os.geteuid() != 0:
        return read_folder(root, min_duration_s=min_duration_s)
    done = subprocess.run(
        [sys.executable, "-c", _AS_NOBODY.format(uid=NOBODY), str(root), str(min_duration_s)],
        check=False, capture_output=True, timeout=120, cwd="/",
    )
    if done.returncode != 0:  # a crash of the scan is a failure to see, never a reason to skip the core tests
        pytest.fail(f"the folder scan as user {NOBODY} exited with status {done.returncode}; its stderr:\n"
                    f"{done.stderr.decode(errors='replace')[-4000:]}", pytrace=False)
    return pickle.loads(done.stdout)


# --------------------------------------------------------------------------------------- the folder

GOOD = {
    # name: (rate, channels, seconds, subtype or format kwargs)
    "pcm_u8.wav": (16_000, 1, 1.5, {"subtype": "PCM_U8"}),
    "pcm_16.wav": (44_100, 1, 1.5, {"subtype": "PCM_16"}),
    "pcm_24.wav": (48_000, 1, 1.5, {"subtype": "PCM_24"}),
    "pcm_32.wav": (22_050, 1, 1.5, {"subtype": "PCM_32"}),
    "float_32.wav": (32_000, 1, 1.5, {"subtype": "FLOAT"}),
    "rate_8k.wav": (8_000, 1, 2.0, {"subtype": "PCM_16"}),
    "nested/deeper/rate_96k.flac": (96_000, 1, 2.0, {"format": "FLAC", "subtype": "PCM_24"}),
    "stereo.ogg": (32_000, 2, 2.0, {"format": "OGG", "subtype": "VORBIS"}),
    "six_channels.wav": (48_000, 6, 1.5, {"subtype": "PCM_16"}),
    "SHOUTED.WAV": (32_000, 1, 1.2, {"subtype": "PCM_16"}),
    "song.mp3": (32_000, 1, 2.0, {"format": "MP3", "subtype": "MPEG_LAYER_III"}),
}
TONE_HZ = {"rate_8k.wav": 1000.0, "nested/deeper/rate_96k.flac": 5000.0, "song.mp3": 2000.0}
SIX_LEVELS = np.array([0.05, 0.1, 0.2, 0.3, -0.1, 0.45])  # per-channel constants; their mean is 0.1667

BAD = {
    "empty.wav": "empty",
    "header_only.wav": "header_only",
    "truncated.wav": "truncated",
    "truncated.flac": "truncated",
    "corrupt.ogg": "corrupt",
    "text.mp3": "not_audio",
    "image.wav": "not_audio",
    "short.flac": "too_short",
    "locked.wav": "unreadable",
    "dangling.wav": "missing",
}


def _good_signal(name: str, rate: int, channels: int, seconds: float) -> np.ndarray:
    if name == "six_channels.wav":
        return np.tile(SIX_LEVELS, (round(seconds * rate), 1))
    if name == "stereo.ogg":  # right = half of left: the mixdown is 0.75 x left
        left = _tone(1500.0, seconds, rate)
        return np.stack([left, 0.5 * left], axis=1)
    return _tone(TONE_HZ.get(name, 440.0), seconds, rate)


def _write_folder(root: Path) -> dict[str, np.ndarray]:
    """Every good and bad file under ``root``; returns the signals written to the good ones."""
    signals = {}
    for name, (rate, channels, seconds, kwargs) in GOOD.items():
        if name.endswith(".mp3") and not _mp3_writable():
            continue
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        signals[name] = _good_signal(name, rate, channels, seconds)
        sf.write(path, signals[name], rate, **kwargs)
    (root / "empty.wav").write_bytes(b"")
    sf.write(root / "header_only.wav", np.zeros(0), 32_000, subtype="PCM_16")
    sf.write(root / "whole.wav", _tone(700.0, 2.0, 32_000), 32_000, subtype="PCM_16")
    data = (root / "whole.wav").read_bytes()
    (root / "truncated.wav").write_bytes(data[: len(data) * 2 // 3])
    (root / "whole.wav").unlink()
    sf.write(root / "whole.flac", _tone(700.0, 3.0, 32_000), 32_000, format="FLAC")
    data = (root / "whole.flac").read_bytes()
    (root / "truncated.flac").write_bytes(data[: len(data) // 2])
    (root / "whole.flac").unlink()
    sf.write(root / "whole.ogg", _tone(700.0, 2.0, 32_000), 32_000, format="OGG", subtype="VORBIS")
    data = bytearray((root / "whole.ogg").read_bytes())
    data[120:] = np.random.default_rng(0).integers(0, 256, len(data) - 120, dtype=np.uint8).tobytes()
    (root / "corrupt.ogg").write_bytes(bytes(data))  # an Ogg signature, then noise
    (root / "whole.ogg").unlink()
    (root / "text.mp3").write_text("ID list of recordings, not audio\n" * 20)
    (root / "image.wav").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(300))
    sf.write(root / "short.flac", _tone(900.0, 0.4, 32_000), 32_000, format="FLAC")
    sf.write(root / "locked.wav", _tone(900.0, 1.5, 32_000), 32_000, subtype="PCM_16")
    (root / "locked.wav").chmod(0)
    (root / "dangling.wav").symlink_to(root / "gone.wav")
    (root / "notes.txt").write_text("site 3, morning")
    (root / "nested/cover.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(10))
    return signals


@pytest.fixture(scope="module")
def folder():
    """A world-readable folder (so that ``nobody`` can read all but the locked file) and its signals."""
    root = Path(tempfile.mkdtemp(prefix="birdassets-ingest-"))
    root.chmod(0o755)
    try:
        yield root, _write_folder(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def ingested(folder) -> IngestResult:
    root, _ = folder
    return _read_folder_as_nobody(root, MIN_S)


def test_every_bad_file_is_quarantined_with_its_reason(folder, ingested: IngestResult) -> None:
    root, signals = folder
    reasons = {Path(r.path).relative_to(root).as_posix(): r.reason for r in ingested.quarantine}
    assert reasons == BAD
    assert set(reasons.values()) == set(REASONS) - {UNANNOTATED}  # every reason a folder can have (unannotated:
    # only annotated sources, exercised in test_raven_source)
    assert ingested.found == len(BAD) + len(signals)
    assert ingested.ingested == len(signals) and len(ingested.manifest.table) == len(signals)
    assert ingested.ignored == 2  # notes.txt, nested/cover.png: not audio by extension
    assert ingested.reconciles
    assert ingested.reason_counts() == {
        "missing": 1, "empty": 1, "unreadable": 1, "not_audio": 2, "corrupt": 1, "header_only": 1,
        "truncated": 2, "too_short": 1,
    }

    by_name = {Path(r.path).name: r for r in ingested.quarantine}
    assert by_name["empty.wav"].size_bytes == 0
    assert by_name["empty.wav"].sha256 == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert by_name["dangling.wav"].size_bytes is None and by_name["dangling.wav"].sha256 is None
    assert by_name["locked.wav"].sha256 is None
    assert by_name["locked.wav"].size_bytes == 96_044  # 1.5 s x 32 kHz x 2 bytes + 44-byte header
    assert by_name["header_only.wav"].size_bytes == 44
    for name in ("truncated.wav", "truncated.flac", "corrupt.ogg", "text.mp3", "image.wav", "short.flac"):
        assert by_name[name].sha256 == file_sha256(root / name)
        assert by_name[name].size_bytes == (root / name).stat().st_size
    # truncated.wav: 2 s of 16-bit mono = 128000 data bytes declared; 2/3 of the 128044-byte file is left
    assert "declares 128000 bytes but only 85318" in by_name["truncated.wav"].detail
    assert "0.667 s" in by_name["truncated.wav"].detail  # 42682 bytes missing / 64000 bytes per s
    assert "decoding stopped" in by_name["truncated.flac"].detail
    assert "PNG" in by_name["image.wav"].detail and "text" in by_name["text.mp3"].detail
    assert "0.400 s" in by_name["short.flac"].detail
    assert "broken symbolic link" in by_name["dangling.wav"].detail


def test_good_files_are_ingested_with_their_facts(folder, ingested: IngestResult) -> None:
    root, signals = folder
    table = ingested.manifest.table.set_index("recording_id")
    expected_ids = {Path(name).with_suffix("").as_posix() for name in signals}
    assert set(table.index) == expected_ids
    assert (table["split"] == "test").all() and (table["primary_label"] == "").all()
    assert table["labels"].map(len).sum() == 0 and ingested.manifest.classes == ()
    assert table["start_s"].isna().all()
    for name in signals:
        rate, channels, seconds, _ = GOOD[name]
        row = table.loc[Path(name).with_suffix("").as_posix()]
        assert (row["sample_rate"], row["channels"]) == (rate, channels), name
        assert row["duration_s"] == pytest.approx(seconds, abs=1e-9 if not name.endswith(".mp3") else 0.03), name
        assert row["sha256"] == file_sha256(root / name) and row["path"] == str(root / name)


@pytest.mark.parametrize(
    "name,tolerance",
    [
        ("pcm_u8.wav", 1 / 128),  # one 8-bit step
        ("pcm_16.wav", 1 / 32768),
        ("pcm_24.wav", 1 / 2**23),
        ("pcm_32.wav", 1e-7),  # float32 output resolution near 0.5
        ("float_32.wav", 3e-8),
    ],
)
def test_bit_depths_decode_to_the_written_samples(folder, name: str, tolerance: float) -> None:
    root, signals = folder
    audio, rate = load(root / name)
    assert rate == GOOD[name][0] and audio.dtype == np.float32
    assert len(audio) == len(signals[name])
    error = np.max(np.abs(audio - signals[name]))
    assert error <= tolerance, f"{name}: max error {error:.3g} > {tolerance:.3g}"
    if name != "pcm_u8.wav":
        assert error < 1 / 128  # finer than 8 bits: the decoder did not collapse the depth


@pytest.mark.parametrize("name,rate_in", [("rate_8k.wav", 8_000), ("nested/deeper/rate_96k.flac", 96_000)])
def test_resampling_keeps_the_tone_and_the_duration(folder, name: str, rate_in: int) -> None:
    root, _ = folder
    audio, rate = load(root / name, 32_000)
    assert rate == 32_000
    assert len(audio) == round(GOOD[name][2] * 32_000)  # 2 s at 32 kHz, whatever the native rate
    assert _dominant_hz(audio, rate) == pytest.approx(TONE_HZ[name], abs=1.0)
    assert np.sqrt(np.mean(audio[4000:-4000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_resampling_removes_content_above_the_new_nyquist(tmp_path: Path) -> None:
    """A 20 kHz tone at 96 kHz must vanish at 32 kHz (Nyquist 16 kHz), not alias to 12 kHz."""
    sf.write(tmp_path / "ultra.wav", _tone(20_000.0, 1.0, 96_000), 96_000, subtype="FLOAT")
    audio, _ = load(tmp_path / "ultra.wav", 32_000)
    assert np.sqrt(np.mean(audio[3000:-3000] ** 2)) < 1e-3 * 0.5


def test_multichannel_mixdown_averages_channels(folder) -> None:
    root, _ = folder
    six, _ = load(root / "six_channels.wav")
    assert six.shape == (round(1.5 * 48_000),)
    np.testing.assert_allclose(six, SIX_LEVELS.mean(), atol=2 / 32768)  # 1/6 (16-bit steps), not channel 0's 0.05
    stereo, _ = load(root / "stereo.ogg")
    left, _ = load(root / "rate_8k.wav")  # (any mono tone) only to have a reference RMS of a 0.5 sine
    rms = np.sqrt(np.mean(stereo[2000:-2000] ** 2))
    assert rms == pytest.approx(0.75 * 0.5 / np.sqrt(2), rel=0.02)  # (L + 0.5 L) / 2
    assert np.sqrt(np.mean(left[1000:-1000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_mp3_decodes_its_tone(folder) -> None:
    root, signals = folder
    if "song.mp3" not in signals:
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} cannot write MP3 (needs >= 1.1 with mpg123/lame)")
    info = verify(root / "song.mp3")
    assert (info.format, info.sample_rate, info.channels) == ("MP3", 32_000, 1)
    audio, _ = load(root / "song.mp3", 16_000)
    assert _dominant_hz(audio, 16_000) == pytest.approx(2000.0, abs=2.0)


def test_load_refuses_truncated_files_instead_of_returning_fewer_samples(folder) -> None:
    root, _ = folder
    for name in ("truncated.wav", "truncated.flac"):
        with pytest.raises(AudioError, match=name) as caught:
            load(root / name)
        assert caught.value.reason == "truncated"
    assert probe(root / "truncated.flac").frames == 96_000  # the header alone cannot tell; verify can
    with pytest.raises(AudioError) as caught:
        verify(root / "truncated.flac", decode="tail")
    assert caught.value.reason == "truncated"


def test_ogg_cut_on_a_page_boundary_is_truncated_and_mid_file_damage_is_corrupt(tmp_path: Path) -> None:
    noise = 0.3 * np.random.default_rng(1).standard_normal(3 * 32_000)  # noise: many audio pages
    sf.write(tmp_path / "a.ogg", noise, 32_000, format="OGG", subtype="VORBIS")
    data = (tmp_path / "a.ogg").read_bytes()
    assert probe(tmp_path / "a.ogg").frames == 96_000
    last_page = data.rfind(b"OggS")
    (tmp_path / "cut.ogg").write_bytes(data[:last_page])  # complete pages, but no end-of-stream page
    with pytest.raises(AudioError, match="end-of-stream") as caught:
        verify(tmp_path / "cut.ogg")
    assert caught.value.reason == "truncated"

    sf.write(tmp_path / "a.flac", _tone(700.0, 3.0, 32_000), 32_000, format="FLAC")
    flac = bytearray((tmp_path / "a.flac").read_bytes())
    flac[len(flac) // 3 : len(flac) // 3 + 2000] = bytes(2000)  # zeros inside the stream, end intact
    (tmp_path / "holed.flac").write_bytes(bytes(flac))
    with pytest.raises(AudioError, match="damage is inside") as caught:
        verify(tmp_path / "holed.flac")
    assert caught.value.reason == "corrupt"
    assert verify(tmp_path / "holed.flac", decode="tail").frames == 96_000  # only a full decode sees it


def test_nan_samples_are_corrupt(tmp_path: Path) -> None:
    audio = _tone(700.0, 1.0, 16_000)
    audio[8000] = np.nan
    sf.write(tmp_path / "nan.wav", audio, 16_000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"non-finite.*frame 8000") as caught:
        verify(tmp_path / "nan.wav")
    assert caught.value.reason == "corrupt"


def test_scan_checks_each_file_once_and_keeps_order(folder) -> None:
    root, _ = folder
    paths = [root / "pcm_16.wav", root / "empty.wav", root / "pcm_16.wav", root / "rate_8k.wav"]
    ok, bad = scan_audio(paths, MIN_S, workers=3)
    assert [Path(f.path).name for f in ok] == ["pcm_16.wav", "rate_8k.wav"]
    assert [(Path(r.path).name, r.reason) for r in bad] == [("empty.wav", "empty")]
    assert ok[0].frames == round(1.5 * 44_100) and ok[0].duration_s == pytest.approx(1.5)
    with pytest.raises(ValueError, match="min_duration_s"):
        scan_audio(paths, -1.0)


def test_quarantine_parquet_round_trips(ingested: IngestResult, tmp_path: Path) -> None:
    path = write_quarantine(ingested.quarantine, tmp_path / "q" / "task.quarantine.parquet")
    assert read_quarantine(path) == list(ingested.quarantine)
    frame = ingested.quarantine_frame()
    assert frame["size_bytes"].isna().sum() == 1 and frame["sha256"].isna().sum() == 2


def test_records_and_results_validate() -> None:
    with pytest.raises(ValueError, match="unknown quarantine reason 'bad'"):
        QuarantineRecord("/x.wav", "bad", "", 1, None)
    assert set(AUDIO_EXTENSIONS) == {".wav", ".flac", ".ogg", ".mp3"}


def test_scan_throughput_on_many_small_files(tmp_path: Path) -> None:
    """120 one-second files (wav/flac/ogg): a full check (decode + sha256) stays well above 20 files/s."""
    for i in range(120):
        kind = ("wav", "flac", "ogg")[i % 3]
        kwargs = {"format": "OGG", "subtype": "VORBIS"} if kind == "ogg" else {}
        sf.write(tmp_path / f"f{i:03d}.{kind}", _tone(300.0 + i, 1.0, 32_000), 32_000, **kwargs)
    started = time.perf_counter()
    result = read_folder(tmp_path, min_duration_s=MIN_S)
    seconds = time.perf_counter() - started
    assert result.found == result.ingested == 120 and result.reconciles
    assert 120 / seconds > 20, f"{120 / seconds:.1f} files/s"


def test_root_must_be_a_folder(tmp_path: Path) -> None:
    from birdassets.sources.manifest import ManifestError

    with pytest.raises(ManifestError, match="nowhere"):
        read_folder(tmp_path / "nowhere")
    empty = read_folder(tmp_path)
    assert (empty.found, empty.ingested, empty.quarantine, len(empty.manifest.table)) == (0, 0, (), 0)
    assert stat.S_ISDIR(tmp_path.stat().st_mode)


# ------------------------------------------------------------------------------------------ Dagster


def test_raw_audio_quarantines_instead_of_failing(tmp_path: Path) -> None:
    """raw_audio for a folder task with bad files, on a real Dagster instance: it succeeds, reports the
    counts, writes the quarantine to parquet and DuckDB, and re-materializing replaces those rows."""
    import dagster as dg

    from birdassets.definitions import DATA_JOB, build_definitions
    from birdassets.settings import load_settings
    from birdassets.sources.manifest import Manifest
    from birdassets.store import query_readonly

    data, home = tmp_path / "card", tmp_path / "home"
    (data / "day1").mkdir(parents=True)
    (home / "dagster").mkdir(parents=True)
    for i, rate in enumerate((16_000, 32_000, 48_000)):
        sf.write(data / "day1" / f"rec{i}.wav", _tone(500.0 * (i + 1), 2.0, rate), rate, subtype="PCM_16")
    sf.write(data / "rec3.flac", _tone(3000.0, 1.5, 44_100), 44_100, format="FLAC")
    (data / "empty.wav").write_bytes(b"")
    (data / "readme.mp3").write_text("not a song")
    sf.write(data / "blip.wav", _tone(800.0, 0.3, 32_000), 32_000)  # < min_last_s of birdclef2025 (1 s)
    (data / "log.txt").write_text("recorder log")
    (home / "birdassets.toml").write_text(
        f'include_demo = false\n[[datasets]]\nname = "card"\nsource = "folder"\nroot = "{data}"\n'
    )
    settings = load_settings(home)
    assert settings.dataset("card").preset == "birdclef2025" and settings.task_preset("card").min_last_s == 1.0
    defs = build_definitions(settings)
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}

    def materialize(instance):
        result = defs.resolve_job_def(DATA_JOB).execute_in_process(
            partition_key="card", instance=instance, run_config=quiet, asset_selection=[dg.AssetKey("raw_audio")]
        )
        assert result.success
        (materialization,) = result.asset_materializations_for_node("raw_audio")
        return result.run_id, {key: value.value for key, value in materialization.metadata.items()}

    def quarantine_rows():
        return query_readonly(settings.layout.db_path, "SELECT * FROM quarantine ORDER BY path")

    with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:
        run_id, metadata = materialize(instance)
        assert (metadata["found"], metadata["ingested"], metadata["quarantined"]) == (7, 4, 3)
        assert metadata["reconciles"] is True and metadata["ignored_non_audio"] == 1 and metadata["recordings"] == 4
        for name, reason in (("empty.wav", "empty"), ("readme.mp3", "not_audio"), ("blip.wav", "too_short")):
            assert f"{data / name}" in metadata["quarantined_files"] and reason in metadata["quarantined_files"]
        assert "| too_short |" in metadata["quarantine_reasons"].replace("  ", " ")

        manifest = Manifest.read(settings.layout.manifest_path("card"))
        assert sorted(manifest.table["recording_id"]) == ["day1/rec0", "day1/rec1", "day1/rec2", "rec3"]
        assert sorted(manifest.table["sample_rate"]) == [16_000, 32_000, 44_100, 48_000]
        assert [(Path(r.path).name, r.reason) for r in read_quarantine(settings.layout.quarantine_path("card"))] == [
            ("blip.wav", "too_short"), ("empty.wav", "empty"), ("readme.mp3", "not_audio"),
        ]
        rows = quarantine_rows()
        assert rows[["path", "reason"]].values.tolist() == [
            [str(data / "blip.wav"), "too_short"], [str(data / "empty.wav"), "empty"],
            [str(data / "readme.mp3"), "not_audio"],
        ]
        assert set(rows["task"]) == {"card"} and set(rows["run_id"]) == {run_id}
        sizes = [(data / name).stat().st_size for name in ("blip.wav", "empty.wav", "readme.mp3")]
        assert rows["size_bytes"].tolist() == sizes

        again_id, metadata = materialize(instance)  # idempotent: same rows, the new run id
        again = quarantine_rows()
        assert len(again) == 3 and set(again["run_id"]) == {again_id} and again_id != run_id
        assert again["found_at"].tolist() == rows["found_at"].tolist()

        (data / "empty.wav").unlink()  # the bad file is removed: its row goes
        _, metadata = materialize(instance)
        assert (metadata["found"], metadata["quarantined"]) == (6, 2)
        assert [Path(p).name for p in quarantine_rows()["path"]] == ["blip.wav", "readme.mp3"]
