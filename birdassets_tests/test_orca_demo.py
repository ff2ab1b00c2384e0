"""demo-orca: synthetic hydrophone noise and pulsed calls, the clips layout it is written in, and read_clips."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from birdassets.frontends.presets import get_preset
from birdassets.sources.clips import CALL_CLASS, read_clips
from birdassets.sources.demo import (
    COMPLETE_MARKER,
    ORCA_TASKS,
    generate,
    is_complete,
    read_demo,
    resolve_demo,
)
from birdassets.sources.demo.hydrophone import (
    PulsedCall,
    band_power,
    clicks,
    draw_call,
    flow_noise,
    pulsed_call,
    scaled_call,
    ship_noise,
)
from birdassets.sources.manifest import ManifestError

RATE = 20_000
ORCA = ORCA_TASKS["demo-orca"]
# the built-in acoustics, few files (keeps this module fast)
SMALL = dataclasses.replace(ORCA, name="orca-small", n_train_per_class=12, n_test_per_class=4, n_recordings=4,
                            recording_s=20.0)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(SMALL, tmp_path_factory.mktemp("orca") / "orca-small")


def _spectrum(wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(frequencies Hz, magnitude)`` of a Hann-windowed rfft."""
    return np.fft.rfftfreq(len(wave), 1 / RATE), np.abs(np.fft.rfft(wave * np.hanning(len(wave))))


def _peak_near(freqs: np.ndarray, magnitude: np.ndarray, hz: float, width_hz: float = 30.0) -> tuple[float, float]:
    """``(frequency, magnitude)`` of the largest bin within ``width_hz`` of ``hz``."""
    near = np.flatnonzero(np.abs(freqs - hz) <= width_hz)
    best = near[np.argmax(magnitude[near])]
    return float(freqs[best]), float(magnitude[best])


# ------------------------------------------------------------------------------------------------- sounds


def test_a_flat_call_peaks_at_f0_with_harmonics_at_k_f0_decaying() -> None:
    call = PulsedCall(f0_hz=1000.0, duration_s=1.0, harmonics=5, decay=0.6, ramp_s=0.05)
    wave, envelope = pulsed_call(call, RATE, np.random.default_rng(0))
    assert wave.shape == envelope.shape == (20_000,) and envelope.max() == pytest.approx(1.0)
    freqs, magnitude = _spectrum(wave)  # 1 Hz bins
    assert abs(freqs[np.argmax(magnitude)] - 1000.0) <= 1.0
    fundamental = _peak_near(freqs, magnitude, 1000.0)[1]
    for k, ratio in ((2, 0.6), (3, 0.36), (4, 0.216), (5, 0.1296)):
        where, level = _peak_near(freqs, magnitude, 1000.0 * k)
        assert abs(where - 1000.0 * k) <= 1.0 and level / fundamental == pytest.approx(ratio, rel=0.03)
    assert magnitude[freqs > 5500].max() < 1e-3 * fundamental  # nothing past the 5th harmonic


def test_harmonics_near_nyquist_are_tapered_away() -> None:
    call = PulsedCall(f0_hz=2500.0, duration_s=0.5, harmonics=4, decay=1.0)  # 2.5, 5, 7.5 and 10 kHz (= Nyquist)
    freqs, magnitude = _spectrum(pulsed_call(call, RATE, np.random.default_rng(1))[0])
    third = _peak_near(freqs, magnitude, 7500.0)[1]  # below 0.4 x rate: kept whole
    assert third == pytest.approx(_peak_near(freqs, magnitude, 2500.0)[1], rel=0.03)
    assert magnitude[freqs > 9000].max() < 1e-3 * third


def test_contours_bend_the_fundamental_as_named() -> None:
    def fundamental(contour: str, **terminal) -> np.ndarray:
        call = PulsedCall(f0_hz=1000.0, duration_s=1.0, contour=contour, excursion_oct=1.0, **terminal)
        return call.fundamental(RATE)

    up, down, arch = fundamental("upsweep"), fundamental("downsweep"), fundamental("arch")
    assert (up[0], up[10_000], up[-1]) == pytest.approx((707.1, 1000.0, 1414.2), abs=0.2)  # 1 kHz x 2^(-1/2..1/2)
    assert np.all(np.diff(up) > 0) and np.all(np.diff(down) < 0)
    assert (arch[0], arch[10_000], arch[-1]) == pytest.approx((707.1, 1414.2, 707.1), abs=0.2)
    hook = fundamental("flat", terminal_oct=-1.0, terminal_frac=0.2)  # flat, then down an octave in the last 20 %
    assert hook[15_000] == pytest.approx(1000.0) and hook[-1] == pytest.approx(500.0, abs=0.2)


def test_drawn_calls_stay_in_their_ranges() -> None:
    rng = np.random.default_rng(7)
    calls = [draw_call(rng, ORCA.f0_hz, ORCA.call_s, ORCA.harmonics, max_s=1.8) for _ in range(400)]
    f0 = np.array([c.f0_hz for c in calls])
    seconds = np.array([c.duration_s for c in calls])
    assert 500.0 <= f0.min() and f0.max() <= 1500.0 and f0.std() > 200  # uniform over 500-1500 Hz: std 289
    assert 0.5 <= seconds.min() and seconds.max() == 1.8 and np.mean(seconds == 1.8) > 0.05  # 2 s calls are cut
    assert {c.harmonics for c in calls} == set(range(4, 11))
    assert {c.contour for c in calls} == {"upsweep", "downsweep", "arch"}


def test_a_scaled_call_has_the_requested_snr_against_in_band_noise() -> None:
    """Against unit white noise, the background power above 500 Hz is about 9500 / 10000 = 0.95 (a 4th-order
    Butterworth run forwards and backwards loses a little more near 500 Hz), so a call at SNR s dB must have a mean
    power of 0.95 x 10^(s/10) over its active samples (1.0 x ... if the SNR were measured broadband)."""
    rng = np.random.default_rng(3)
    noise = rng.standard_normal(40_000)
    wave, envelope = pulsed_call(PulsedCall(f0_hz=800.0, duration_s=2.0), RATE, rng)
    active = envelope > 0.1
    for snr_db, power in ((0.0, 0.95), (10.0, 9.5), (-6.0, 0.95 * 10**-0.6)):
        scaled = scaled_call(noise, wave, envelope, snr_db, RATE)
        assert np.mean(scaled[active] ** 2) == pytest.approx(power, rel=0.025)


def test_background_components_have_their_spectra() -> None:
    rng = np.random.default_rng(11)
    n = 60 * RATE

    def share_below(x: np.ndarray, hz: float) -> float:
        power = np.abs(np.fft.rfft(x)) ** 2
        return float(power[np.fft.rfftfreq(len(x), 1 / RATE) < hz].sum() / power.sum())

    flow, ship = flow_noise(n, RATE, rng), ship_noise(n, RATE, rng)
    assert np.sqrt(np.mean(flow.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-3)
    assert share_below(flow, 100.0) > 0.9  # brown noise rolled off above 100 Hz
    assert share_below(ship, 2500.0) > 0.99  # tonals < 400 Hz, cavitation < 1-2 kHz
    impulses = clicks(n, RATE, rng, rate_hz=20.0, echolocation=False)
    runs = np.count_nonzero(np.diff((impulses != 0).astype(np.int8)) == 1)  # each click: 6 non-zero samples
    assert abs(runs - 1200) < 110  # Poisson(20 / s x 60 s): 1200 +- 35, a few merged


# ------------------------------------------------------------------------------------------------- data set


def test_the_builtin_spec_fits_the_orcahello_frontend_and_is_validated() -> None:
    preset = get_preset("orcahello")
    assert resolve_demo("demo-orca") is ORCA and ORCA.sample_rate == preset.sample_rate == 20_000
    assert ORCA.clip_s == preset.clip_s == 2.0
    assert (ORCA.n_train_per_class, ORCA.n_test_per_class, ORCA.n_recordings, ORCA.recording_s) == (160, 50, 10, 60.0)
    for bad in ({"f0_hz": (1500.0, 500.0)}, {"call_s": (1.9, 2.0)}, {"recording_s": 10.0}, {"n_train_per_class": 0},
                {"f0_hz": (500.0, 4500.0)}):
        with pytest.raises(ValueError, match="orca demo demo-orca"):
            dataclasses.replace(ORCA, **bad)
    with pytest.raises(KeyError, match="demo-orca"):
        resolve_demo("demo-whale")


def test_each_folder_holds_its_clips(small: Path) -> None:
    counts = {folder: len(list((small / folder).glob("*.flac")))
              for folder in ("positive", "negative", "test/positive", "test/negative", "recordings")}
    assert counts == {"positive": 12, "negative": 12, "test/positive": 4, "test/negative": 4, "recordings": 4}
    info = sf.info(small / "positive" / "pos_0000.flac")
    assert (info.format, info.subtype, info.samplerate, info.channels, info.frames) == ("FLAC", "PCM_16", RATE, 1,
                                                                                       40_000)
    table = pd.read_csv(small / "clips.csv")
    assert len(table) == 32 and set(table["file"]) == {p.relative_to(small).as_posix() for p in small.rglob("*.flac")
                                                       if "recordings" not in p.parts}
    assert (table["call"] == table["file"].str.contains("positive/")).all()
    assert (table["split"] == np.where(table["file"].str.startswith("test/"), "test", "train")).all()


def test_a_positive_clip_holds_one_whole_call(small: Path) -> None:
    table = pd.read_csv(small / "clips.csv")
    positive, negative = table[table["call"] == 1], table[table["call"] == 0]
    assert negative[["start_s", "end_s", "f0_hz", "snr_db"]].isna().all().all()
    assert positive["start_s"].min() >= 0.1 and positive["end_s"].max() <= 1.9 + 1e-9  # 0.1 s from both ends
    seconds = positive["end_s"] - positive["start_s"]
    assert seconds.min() >= 0.5 - 1e-9 and seconds.max() <= 1.8 + 1e-9
    assert positive["f0_hz"].between(500, 1500).all() and positive["snr_db"].between(-10, 10).all()


def test_calls_raise_the_in_band_energy_of_their_clips(small: Path) -> None:
    """In-band (>= 500 Hz, where the harmonics are) power inside the call's span vs outside it: about 1 + 10^(SNR/10)
    for a positive (SNR -10..10 dB: 1.1-11, median ~2), about 1 for a negative over the same span."""
    table = pd.read_csv(small / "clips.csv")
    positive, negative = table[table["call"] == 1].reset_index(), table[table["call"] == 0].reset_index()

    def inside_over_outside(file: str, start_s: float, end_s: float) -> float:
        audio, rate = sf.read(small / file)
        inside = np.zeros(len(audio), dtype=bool)
        inside[int(start_s * rate) : int(end_s * rate)] = True
        return band_power(audio, rate, inside) / band_power(audio, rate, ~inside)

    spans = list(zip(positive["start_s"], positive["end_s"]))
    with_call = [inside_over_outside(f, *span) for f, span in zip(positive["file"], spans)]
    without = [inside_over_outside(f, *span) for f, span in zip(negative["file"], spans)]
    assert min(with_call) > 1.0 and np.median(with_call) > 1.3
    assert 0.8 < np.median(without) < 1.25
    power = {label: np.mean([band_power(sf.read(small / f)[0], RATE) for f in group["file"]])
             for label, group in (("call", positive), ("none", negative))}
    assert power["call"] > 1.2 * power["none"]  # every file's background is scaled to the same level range


def test_recordings_truth_agrees_with_their_calls(small: Path) -> None:
    calls = pd.read_csv(small / "recordings.csv")
    truth = pd.read_csv(small / "recordings_truth.csv")
    assert list(truth.columns) == ["file", "calls", "global_truth"] and list(calls.columns)[:4] == [
        "file", "start_s", "end_s", "f0_hz"]
    assert list(truth["file"]) == [f"recordings/rec_{i:03d}.flac" for i in range(4)]
    counted = calls.groupby("file").size().reindex(truth["file"], fill_value=0)
    assert list(counted) == list(truth["calls"]) and list(truth["global_truth"]) == list((truth["calls"] > 0) * 1)
    assert sorted(truth["global_truth"]) == [0, 0, 1, 1]  # half the recordings hold calls
    assert truth.loc[truth["calls"] > 0, "calls"].between(3, 6).all()
    for file, group in calls.groupby("file"):
        assert sf.info(small / file).frames == 20 * RATE
        start, end = group["start_s"].to_numpy(), group["end_s"].to_numpy()
        assert start.min() >= 0.1 and end.max() <= 19.9 + 1e-9  # inside the file
        assert np.all(start[1:] - end[:-1] >= 1.0 - 1e-9)  # in order, 1 s or more apart: no overlap
        assert np.all((end - start >= 0.5 - 1e-9) & (end - start <= 2.0 + 1e-9))


def test_generation_is_byte_identical_and_a_second_call_does_nothing(small: Path, tmp_path: Path) -> None:
    again = generate(SMALL, tmp_path / "again")

    def digests(root: Path) -> dict[str, str]:
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    assert digests(again) == digests(small) and len(digests(small)) == 32 + 4 + 5
    before = {p: p.stat().st_mtime_ns for p in again.rglob("*")}
    assert generate(SMALL, again) == again and is_complete(again, SMALL)
    assert {p: p.stat().st_mtime_ns for p in again.rglob("*")} == before  # nothing rewritten
    assert not is_complete(again, "demo-orca")  # another spec's digest
    assert (again / COMPLETE_MARKER).read_text().strip() == SMALL.digest() != ORCA.digest()
    reseeded = dataclasses.replace(SMALL, seed=SMALL.seed + 1, n_train_per_class=1, n_test_per_class=0,
                                   n_recordings=0)
    generate(reseeded, again)  # a generated data set of another spec is replaced
    assert sorted(p.relative_to(again).as_posix() for p in again.rglob("*.flac")) == [
        "negative/neg_0000.flac", "positive/pos_0000.flac"]


def test_read_demo_reads_the_clips_and_ignores_the_recordings(small: Path) -> None:
    result = read_demo(SMALL, small, min_duration_s=2.0)  # the orcahello preset's min_last_s
    assert (result.found, result.ingested, result.quarantine) == (32, 32, ())
    assert result.ignored == 4 + 5  # recordings, 3 CSV tables, demo_spec.json, .complete
    manifest = result.manifest
    assert manifest.classes == (CALL_CLASS,) and not manifest.table["path"].str.contains("recordings").any()
    train, test = manifest.split("train"), manifest.split("test")
    assert (len(train), len(test)) == (24, 8)
    assert sorted(manifest.table["primary_label"].value_counts().items()) == [("", 16), ("call", 16)]
    assert manifest.table["recording_id"].iloc[:2].tolist() == ["test/negative/neg_0000", "test/negative/neg_0001"]
    assert "positive/pos_0011" in set(train["recording_id"]) and "test/positive/pos_0003" in set(test["recording_id"])
    assert (manifest.table["duration_s"] == 2.0).all() and manifest.table["start_s"].isna().all()
    assert manifest.label_matrix().sum() == 16


# ------------------------------------------------------------------------------------------------- read_clips


def _write(path: Path, seconds: float = 2.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, 0.1 * np.sin(np.arange(int(seconds * RATE)) / 7), RATE)  # default subtype of the extension


def test_read_clips_labels_splits_and_ignores_what_is_not_a_clip(tmp_path: Path) -> None:
    for name in ("positive/a.wav", "positive/a.flac", "positive/site2/b.ogg", "negative/c.WAV",
                 "test/positive/d.wav", "test/negative/e.wav", "recordings/long.wav", "test/stray.wav", "top.wav"):
        _write(tmp_path / name)
    (tmp_path / "positive" / "notes.txt").write_text("not audio, not a clip")
    result = read_clips(tmp_path)
    assert (result.found, result.ingested, result.ignored, result.quarantine) == (6, 6, 4, ())
    table = result.manifest.table
    assert result.manifest.classes == ("call",)
    assert list(zip(table["recording_id"], table["split"], table["labels"].map(tuple))) == [
        ("test/negative/e", "test", ()),
        ("test/positive/d", "test", ("call",)),
        ("negative/c", "train", ()),
        ("positive/a", "train", ("call",)),
        ("positive/a#2", "train", ("call",)),  # a.flac beside a.wav
        ("positive/site2/b", "train", ("call",)),
    ]
    assert [Path(path).name for path in table["path"].iloc[3:5]] == ["a.flac", "a.wav"]  # ids in sorted path order


def test_read_clips_quarantines_a_corrupt_clip_and_keeps_the_others(tmp_path: Path) -> None:
    _write(tmp_path / "positive" / "good.wav")
    _write(tmp_path / "negative" / "quiet.wav")
    _write(tmp_path / "negative" / "short.wav", seconds=0.5)
    (tmp_path / "positive" / "bad.wav").write_bytes(b"\x13\x37 this is not RIFF" * 40)
    result = read_clips(tmp_path, min_duration_s=1.0)
    assert result.reconciles and (result.found, result.ingested) == (4, 2)
    assert [(Path(r.path).name, r.reason) for r in result.quarantine] == [("short.wav", "too_short"),
                                                                           ("bad.wav", "not_audio")]
    assert sorted(result.manifest.table["recording_id"]) == ["negative/quiet", "positive/good"]


def test_read_clips_refuses_a_folder_without_the_layout_in_one_line(tmp_path: Path) -> None:
    _write(tmp_path / "recordings" / "long.wav")
    with pytest.raises(ManifestError) as refused:
        read_clips(tmp_path)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{tmp_path}: ") and "positive/" in message
    assert "negative/" in message
    with pytest.raises(ManifestError, match="does not exist or is not a folder; expected positive/"):
        read_clips(tmp_path / "missing")


def test_read_clips_refuses_training_clips_of_one_class(tmp_path: Path) -> None:
    _write(tmp_path / "positive" / "a.wav")
    with pytest.raises(ManifestError, match=r"no usable training clip in negative/ \(none found\); a call detector"):
        read_clips(tmp_path)
    (tmp_path / "negative").mkdir()
    (tmp_path / "negative" / "x.wav").write_text("text")
    with pytest.raises(ManifestError) as refused:
        read_clips(tmp_path)
    assert str(refused.value).startswith(f"{tmp_path}: no usable training clip in negative/ (all 1 quarantined)")
    assert "\n" not in str(refused.value)
