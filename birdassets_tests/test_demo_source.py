"""The synthetic demo generator: layout, determinism, idempotence and acoustic sanity, on real files."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from scipy.signal import stft, welch

from birdassets.sources.demo import (
    COMPLETE_MARKER,
    DEMO_TASKS,
    SPECIES,
    DemoTaskSpec,
    generate,
    is_complete,
    read_demo,
    window_species_plan,
)
from birdassets.frontends.presets import get_preset
from birdassets.sources.birdclef import SAMPLE_SUBMISSION_CSV, UNLABELLED_SOUNDSCAPE_DIR
from birdassets.sources.manifest import Manifest

CLEAR = DEMO_TASKS["demo-clear"]
NOISY = DEMO_TASKS["demo-noisy"]
# same acoustics as the built-in noisy task, fewer files (keeps this module fast)
NOISY_SMALL = dataclasses.replace(NOISY, name="demo-noisy-small", train_per_species=2, n_test_windows=24)
TINY = dataclasses.replace(
    CLEAR,
    name="tiny",
    n_species=4,
    train_per_species=2,
    train_length_s=(4.0, 6.0),
    n_test_windows=4,
    windows_per_soundscape=2,
    unlabelled_soundscapes=1,
    unlabelled_windows=2,
)
# demo-clear as the code wrote it before the unlabelled soundscapes existed (commit a71fdda): they must leave every
# other file as it was, so the demo's leaderboard does not move by a digit. The tables are pinned by their bytes.
# The OGG bytes are not stable across machines (the synthesis's float ulps differ with the CPU's SIMD paths, and
# Vorbis then encodes differently), so each audio file is pinned by its decoded length, rate, peak and the RMS of
# each chunk, as a71fdda's generator wrote them (measured 2026-12-02 by running a71fdda; its sc009 bytes there were c19db259...,
# not the 3c6509c6... pinned before on another machine). A call moved or a noise stream shifted changes a chunk's RMS.
A71FDDA_DEMO_CLEAR_SHA256 = {
    "train.csv": "bb888e40c056276cf418ace01955eddbe920f0701652cbd270404666e4d05242",
    "soundscape_labels.csv": "52496996a6aaae297e96e100ac5acfa9b25915b370f8fc8dc2fc08bec47940aa",
}
A71FDDA_DEMO_CLEAR_AUDIO = {  # name: (frames, sample rate, peak, chunk length, RMS of each whole chunk)
    "test_soundscapes/demo-clear_sc009.ogg": (1_600_000, 32_000, 0.696101, 160_000,
                                              [0.024, 0.0654, 0.09347, 0.03302, 0.04639, 0.0221, 0.06735, 0.03256,
                                               0.04866, 0.01423]),
    "train_audio/hazchi/hazchi_009.ogg": (214_168, 32_000, 0.704260, 32_000,
                                          [0.12882, 0.10643, 0.08103, 0.13109, 0.06881, 0.11217]),
}


def _read_clean(task, root: Path) -> Manifest:
    """read_demo, asserting that every generated file but the unlabelled soundscapes was ingested (nothing
    quarantined); those are not read."""
    result = read_demo(task, root, min_duration_s=1.0)
    assert result.quarantine == () and result.reconciles
    n_files = len([p for p in root.rglob("*.ogg") if p.parent.name != UNLABELLED_SOUNDSCAPE_DIR])
    assert result.found == result.ingested == n_files
    assert not result.manifest.table["path"].str.contains(UNLABELLED_SOUNDSCAPE_DIR).any()
    return result.manifest


@pytest.fixture(scope="module")
def clear(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    root = tmp_path_factory.mktemp("demo") / "demo-clear"
    return root, _read_clean("demo-clear", root)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    root = tmp_path_factory.mktemp("demo") / "demo-noisy-small"
    return root, _read_clean(NOISY_SMALL, root)


def _crude_snr_db(audio: np.ndarray, rate: int) -> float:
    """Loud-frame vs quiet-frame energy in 2-10 kHz, dB (95th / 10th percentile of frame energies)."""
    freqs, _, spectrum = stft(audio, rate, nperseg=512)
    band = (freqs >= 2000) & (freqs <= 10000)
    energy = (np.abs(spectrum[band]) ** 2).sum(axis=0)
    return float(10 * np.log10(np.percentile(energy, 95) / np.percentile(energy, 10)))


def _decode_rows(table: pd.DataFrame) -> list[tuple[np.ndarray, int]]:
    out = []
    for row in table.itertuples():
        if np.isnan(row.start_s):
            audio, rate = sf.read(row.path, dtype="float32")
        else:
            start, stop = int(row.start_s * 32000), int(row.end_s * 32000)
            audio, rate = sf.read(row.path, start=start, stop=stop, dtype="float32")
        out.append((audio, rate))
    return out


def test_builtin_tasks_share_species_with_ebird_like_codes() -> None:
    assert {"demo-clear", "demo-noisy"} <= set(DEMO_TASKS)
    for spec in DEMO_TASKS.values():
        assert spec.n_species >= 10 and spec.sample_rate == 32000 and spec.window_s == 5.0
    assert [s.code for s in CLEAR.species] == [s.code for s in NOISY.species]
    codes = [s.code for s in SPECIES]
    assert len(set(codes)) == len(codes) == 12
    assert all(re.fullmatch(r"[a-z]{6}", code) for code in codes)
    assert NOISY.snr_db[1] < CLEAR.snr_db[0]
    with pytest.raises(ValueError, match="n_species"):
        dataclasses.replace(CLEAR, n_species=40)


def test_read_demo_clear_layout_and_labels(clear: tuple[Path, Manifest]) -> None:
    root, manifest = clear
    train, test = manifest.split("train"), manifest.split("test")
    codes = tuple(s.code for s in CLEAR.species)
    assert manifest.classes == tuple(sorted(codes))
    assert len(train) == CLEAR.n_species * CLEAR.train_per_species
    assert len(test) == CLEAR.n_test_windows
    assert set(train["primary_label"]) == set(codes)
    assert {label for labels in test["labels"] for label in labels} == set(codes)  # every species is tested
    assert (train["sample_rate"] == 32000).all() and (manifest.table["channels"] == 1).all()
    assert train["duration_s"].between(*CLEAR.train_length_s).all()
    np.testing.assert_allclose(test["end_s"] - test["start_s"], 5.0)
    assert test["labels"].map(len).between(1, 2).all()
    assert (test["duration_s"] == CLEAR.windows_per_soundscape * 5.0).all()

    train_matrix = manifest.label_matrix(train)
    primary_columns = [manifest.classes.index(label) for label in train["primary_label"]]
    assert (train_matrix[np.arange(len(train)), primary_columns] == 1).all()
    assert train_matrix.sum(axis=1).max() <= 1 + CLEAR.background_species[1]
    assert (manifest.label_matrix(test).sum(axis=1) == test["labels"].map(len)).all()

    csv = pd.read_csv(root / "train.csv")
    assert list(csv.columns[:4]) == ["primary_label", "secondary_labels", "type", "filename"]
    metadata = {"rating", "latitude", "longitude", "scientific_name", "common_name", "author", "license"}
    assert metadata <= set(csv.columns)
    assert all(path.startswith(f"{label}/{label}_") for label, path in zip(csv["primary_label"], csv["filename"]))
    peaks = [np.abs(audio).max() for audio, _ in _decode_rows(train.iloc[:6])]
    np.testing.assert_allclose(peaks, CLEAR.peak, atol=0.05)  # peak-normalised, no clipping
    assert is_complete(root, "demo-clear")


def test_noisy_has_more_overlap_more_background_and_lower_snr(
    clear: tuple[Path, Manifest], noisy: tuple[Path, Manifest]
) -> None:
    (clear_root, clear_manifest), (noisy_root, noisy_manifest) = clear, noisy
    clear_counts = clear_manifest.split("test")["labels"].map(len)
    noisy_counts = noisy_manifest.split("test")["labels"].map(len)
    assert noisy_counts.between(2, 4).all()
    assert noisy_counts.mean() > clear_counts.mean() + 1.0

    def with_background(root: Path) -> float:
        return float((pd.read_csv(root / "train.csv")["secondary_labels"] != "[]").mean())

    assert with_background(noisy_root) > with_background(clear_root) + 0.3

    def median_snr(manifest: Manifest, split: str) -> float:
        return float(np.median([_crude_snr_db(a, r) for a, r in _decode_rows(manifest.split(split).iloc[:24])]))

    assert median_snr(noisy_manifest, "train") < median_snr(clear_manifest, "train") - 10.0
    assert median_snr(noisy_manifest, "test") < median_snr(clear_manifest, "test") - 10.0


def test_species_differ_acoustically(clear: tuple[Path, Manifest]) -> None:
    _, manifest = clear
    train = manifest.split("train")
    train = train[train.groupby("primary_label").cumcount() < 6]  # 6 recordings per species
    profiles, dominant = [], []
    for audio, rate in _decode_rows(train):
        freqs, power = welch(audio, rate, nperseg=1024)
        band = (freqs >= 1500) & (freqs <= 11000)
        dominant.append(freqs[band][np.argmax(power[band])])
        profile = np.log(power[band] + 1e-12)
        profiles.append(profile - profile.mean())
    labels = train["primary_label"].to_numpy()
    medians = np.sort([np.median(np.asarray(dominant)[labels == c]) for c in manifest.classes])
    assert np.diff(medians).min() >= 100.0  # 12 distinct dominant frequencies, 2-10 kHz
    assert 1800 <= medians[0] and medians[-1] <= 10000

    # leave-one-out nearest-centroid on log-spectral profiles: the species are separable
    profiles = np.asarray(profiles)
    correct = 0
    for i in range(len(profiles)):
        keep = np.arange(len(profiles)) != i
        centroids = np.stack([profiles[keep & (labels == c)].mean(axis=0) for c in manifest.classes])
        correct += manifest.classes[int(np.argmin(((centroids - profiles[i]) ** 2).sum(axis=1)))] == labels[i]
    assert correct / len(profiles) >= 0.9


def test_generation_is_deterministic(tmp_path: Path) -> None:
    first, second = generate(TINY, tmp_path / "a"), generate(TINY, tmp_path / "b")
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert len([f for f in files if f.suffix == ".ogg"]) == 4 * 2 + 2 + 1
    for name in ("train.csv", "soundscape_labels.csv", SAMPLE_SUBMISSION_CSV, "demo_spec.json", COMPLETE_MARKER):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    for relative in files:
        if relative.suffix == ".ogg":
            a, _ = sf.read(first / relative, dtype="float32")
            b, _ = sf.read(second / relative, dtype="float32")
            np.testing.assert_array_equal(a, b)
            # the OGG serial number is stamped, so even the bytes (and manifest sha256s) agree
            digests = {hashlib.sha256((root / relative).read_bytes()).hexdigest() for root in (first, second)}
            assert len(digests) == 1

    other = generate(dataclasses.replace(TINY, seed=TINY.seed + 1), tmp_path / "c")
    a, _ = sf.read(first / "train_audio/copthr/copthr_000.ogg", dtype="float32")
    b, _ = sf.read(other / "train_audio/copthr/copthr_000.ogg", dtype="float32")
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_generate_is_idempotent_and_replaces_other_specs(tmp_path: Path) -> None:
    root = generate(TINY, tmp_path / "tiny")
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert generate(TINY, root) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == mtimes  # nothing rewritten

    reseeded = dataclasses.replace(TINY, seed=TINY.seed + 7)
    assert not is_complete(root, reseeded)
    generate(reseeded, root)
    assert is_complete(root, reseeded) and not is_complete(root, TINY)
    assert (root / COMPLETE_MARKER).read_text().strip() == reseeded.digest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]  # no staging/retired leftovers


def test_a_damaged_generated_file_is_quarantined_not_fatal(tmp_path: Path) -> None:
    root = generate(TINY, tmp_path / "tiny")
    damaged = root / "train_audio/copthr/copthr_001.ogg"
    data = damaged.read_bytes()
    damaged.write_bytes(data[: len(data) // 2])
    result = read_demo(TINY, root)
    assert [(Path(r.path).name, r.reason) for r in result.quarantine] == [("copthr_001.ogg", "truncated")]
    assert result.quarantine[0].sha256 == hashlib.sha256(data[: len(data) // 2]).hexdigest()
    assert (result.found, result.ingested) == (4 * 2 + 2, 4 * 2 + 1) and result.reconciles
    assert "copthr/copthr_001" not in set(result.manifest.table["recording_id"])


def test_refuses_to_replace_a_foreign_folder(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="mine"):
        generate(TINY, root)
    assert (root / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_window_plan_covers_every_species_and_respects_counts() -> None:
    plan = window_species_plan(NOISY)
    assert len(plan) == NOISY.n_test_windows
    assert all(2 <= len(members) <= 4 and len(set(members)) == len(members) for members in plan)
    assert {s for members in plan for s in members} == set(range(NOISY.n_species))
    assert plan == window_species_plan(NOISY)
    assert plan != window_species_plan(dataclasses.replace(NOISY, seed=1))


def test_spec_digest_tracks_every_field() -> None:
    assert CLEAR.digest() == DemoTaskSpec(name="demo-clear", seed=CLEAR.seed).digest()
    assert CLEAR.digest() != dataclasses.replace(CLEAR, wind_db=CLEAR.wind_db + 1).digest()


def test_unlabelled_soundscapes_and_sample_submission_leave_the_rest_bit_identical(
    clear: tuple[Path, Manifest]
) -> None:
    from birdassets.supervised.submission import soundscape_windows

    root, manifest = clear
    for name, digest in A71FDDA_DEMO_CLEAR_SHA256.items():
        assert hashlib.sha256((root / name).read_bytes()).hexdigest() == digest, name
    for name, (frames, rate, peak, chunk, rms) in A71FDDA_DEMO_CLEAR_AUDIO.items():
        audio, sample_rate = sf.read(root / name, dtype="float64")
        assert (len(audio), sample_rate) == (frames, rate), name
        chunks = audio[: len(rms) * chunk].reshape(len(rms), chunk)
        np.testing.assert_allclose(np.sqrt(np.mean(chunks ** 2, axis=1)), rms, rtol=2e-3, atol=1e-5, err_msg=name)
        assert np.abs(audio).max() == pytest.approx(peak, rel=2e-3), name
    files = sorted((root / UNLABELLED_SOUNDSCAPE_DIR).glob("*.ogg"))
    assert [f.name for f in files] == [f"demo-clear_u{u:03d}.ogg" for u in range(3)]
    for file in files:
        audio, rate = sf.read(file, dtype="float32")
        assert (rate, len(audio)) == (32000, 60 * 32000)
        assert _crude_snr_db(audio, rate) > 15.0  # calls in it, not only noise
    sample = pd.read_csv(root / SAMPLE_SUBMISSION_CSV)
    assert list(sample.columns) == ["row_id", *manifest.classes]  # the task's class order
    assert sample["row_id"].tolist()[:3] == ["demo-clear_u000_5", "demo-clear_u000_10", "demo-clear_u000_15"]
    assert sample["row_id"].tolist() == soundscape_windows(files, get_preset("birdclef2025"))[0]  # what submit writes
    assert len(sample) == 3 * 12 and (sample[list(manifest.classes)] == 0).all().all()
