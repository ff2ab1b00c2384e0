"""Every built-in preset pinned to the published parameters of the system it reproduces.

The numbers below are written out by hand from the sources named in each comment (summarised, with links, in
``/work/shared/research/birdset_birdclef.md`` and ``perch_birdnet.md``, and in the README's preset table); they
are never read from :data:`birdassets.frontends.presets.PRESETS`. So a changed preset value fails here twice:
once against the hand-written field, once against librosa computing stage B from the hand-written parameters.
(The parity tests in ``test_frontend_parity.py`` build their librosa references from the preset object itself,
so they cannot notice a wrong value.)
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from birdassets.frontends.presets import PRESETS
from birdassets.frontends.tf_mel import TFMelFrontend

librosa = pytest.importorskip("librosa", reason="librosa is the reference (pip install -e '.[test]')")

PUBLISHED = {
    # BirdCLEF 2025 public notebooks' recipe (research note birdset_birdclef.md §2d): librosa.feature.melspectrogram
    # defaults (periodic Hann, win = n_fft, centred with zeros, Slaney mel scale and area norm, power 2), then
    # power_to_db(ref=np.max) (amin 1e-10, top_db 80), per-clip min-max and cv2.resize to 256 x 256, on 5 s
    # windows of 32 kHz audio. The STFT/mel numbers are those the README's preset table publishes:
    # 1024 / 512, 128 mels, 50-14000 Hz.
    "birdclef2025": dict(
        sample_rate=32_000, n_fft=1024, win_length=1024, hop_length=512, n_mels=128, f_min=50.0, f_max=14_000.0,
        mel_scale="slaney", mel_norm="slaney", filterbank_rate=None, center=True, pad_mode="constant", power=2.0,
        spectrum_scale="none", log="db", db_ref="max", amin=1e-10, top_db=80.0,
        clip_s=5.0, hop_s=5.0, normalize="minmax", input_shape=(256, 256),
    ),
    # BirdSet's default vision frontend (birdset_birdclef.md §1c; BirdSet configs/datamodule/transforms/
    # preprocessing/*.yaml, convnext_bs.py): torchaudio Spectrogram(n_fft=1024, hop_length=320, power=2.0) with
    # its defaults win_length = n_fft, Hann, center=True, pad_mode="reflect"; MelScale(n_mels=128,
    # sample_rate=32000) with defaults f_min 0, f_max sr/2, HTK scale, no norm; PowerToDB(ref=1.0, amin=1e-10,
    # top_db=80); (x - (-4.268)) / 4.569; 5 s clips -> 501 frames.
    "birdset": dict(
        sample_rate=32_000, n_fft=1024, win_length=1024, hop_length=320, n_mels=128, f_min=0.0, f_max=16_000.0,
        mel_scale="htk", mel_norm=None, filterbank_rate=None, center=True, pad_mode="reflect", power=2.0,
        spectrum_scale="none", log="db", db_ref=1.0, amin=1e-10, top_db=80.0,
        clip_s=5.0, hop_s=5.0, normalize="standardize", mean=-4.268, std=4.569, input_shape=(501, 128),
    ),
    # OrcaHello SRKW detector (birdset_birdclef.md §3a-3b; aifororcas-livesystem fastai_inference.py and
    # model_v1/types.py): resample to 20 kHz; 2 s clips every 1 s; n_fft 2560, hop 256, 256 mels 0-10000 Hz,
    # torchaudio MelSpectrogram defaults (Hann, win = n_fft, centred, reflect, HTK, no norm, power 2) with the
    # filterbank built for torchaudio's default 16 kHz; AmplitudeToDB(top_db=100) (ref 1.0); each clip padded
    # to int(4.0 * 20000 / 256) = 312 frames with 0 dB.
    "orcahello": dict(
        sample_rate=20_000, n_fft=2560, win_length=2560, hop_length=256, n_mels=256, f_min=0.0, f_max=10_000.0,
        mel_scale="htk", mel_norm=None, filterbank_rate=16_000, center=True, pad_mode="reflect", power=2.0,
        spectrum_scale="none", log="db", db_ref=1.0, amin=1e-10, top_db=100.0,
        clip_s=2.0, hop_s=1.0, normalize="none", pad_value=0.0, input_shape=(312, 256),
    ),
    # Perch 2.0 (perch_birdnet.md §1.5; google-research/perch chirp/models/perch_2.py): MelSpectrogram(
    # features=128, stride=320, kernel_size=640, sample_rate=32000, freq_range=(60, 16000), power=1.0,
    # LogScalingConfig()) -> 0.1 * ln(max(mel, 1e-2) + 0) of the magnitude STFT scaled by the window sum
    # (scipy "spectrum" scaling), HTK mel, no norm; 5 s windows of which Perch keeps 500 frames.
    "perch": dict(
        sample_rate=32_000, n_fft=640, win_length=640, hop_length=320, n_mels=128, f_min=60.0, f_max=16_000.0,
        mel_scale="htk", mel_norm=None, filterbank_rate=None, center=True, pad_mode="constant", power=1.0,
        spectrum_scale="window_sum", log="ln", ln_floor=1e-2, ln_offset=0.0, ln_scale=0.1,
        clip_s=5.0, hop_s=5.0, normalize="none", input_shape=(500, 128),
    ),
}
STAGE_C_FIELDS = ("normalize", "mean", "std", "pad_value")
DERIVED = ("win_length", "input_shape")
STAGE_B_DB = 1e-4  # the parity tolerance of test_frontend_parity.py


def test_every_builtin_preset_has_published_parameters():
    assert sorted(PRESETS) == sorted(PUBLISHED)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_fields_equal_the_published_values(name):
    preset, published = PRESETS[name], PUBLISHED[name]
    actual = {}
    for field in published:
        if field in STAGE_C_FIELDS:
            actual[field] = getattr(preset.model_input, field)
        elif field == "win_length":
            actual[field] = preset.n_fft  # the frontends always use a periodic Hann window of n_fft samples
        elif field == "input_shape":
            actual[field] = preset.input_shape
        else:
            actual[field] = getattr(preset, field)
    assert actual == published


def librosa_stage_b(wave: np.ndarray, p: dict) -> np.ndarray:
    """Stage B ``[frames, mels]`` by librosa, from the hand-written parameters ``p`` only."""
    y = wave.astype(np.float64)
    if p["spectrum_scale"] == "window_sum":
        y = y / (p["win_length"] / 2)  # a periodic Hann window sums to half its length
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Empty filters detected")  # orcahello's 16 kHz filterbank
        mel = librosa.feature.melspectrogram(
            y=y, sr=p["filterbank_rate"] or p["sample_rate"], n_fft=p["n_fft"], hop_length=p["hop_length"],
            win_length=p["win_length"], window="hann", center=p["center"], pad_mode=p["pad_mode"], power=p["power"],
            n_mels=p["n_mels"], fmin=p["f_min"], fmax=p["f_max"], htk=p["mel_scale"] == "htk", norm=p["mel_norm"],
        )
    if p["log"] == "ln":
        out = p["ln_scale"] * np.log(np.maximum(mel, p["ln_floor"]) + p["ln_offset"])
    else:
        ref = np.max if p["db_ref"] == "max" else p["db_ref"]
        out = librosa.power_to_db(mel, ref=ref, amin=p["amin"], top_db=p["top_db"])
    return out.T


def chirps(seconds: float, rate: int) -> np.ndarray:
    """Rising tones sweeping 30 Hz to just under Nyquist plus quiet noise: every mel band gets energy, so a
    moved band edge (``f_min``, ``f_max``) or scale changes many values."""
    rng = np.random.default_rng(0)
    t = np.arange(int(round(seconds * rate))) / rate
    sweep = 30.0 * (0.48 * rate / 30.0) ** (t / seconds)  # Hz, exponential sweep
    phase = 2 * np.pi * np.cumsum(sweep) / rate
    return (0.4 * np.sin(phase) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_stage_b_equals_librosa_with_the_published_parameters(name):
    published = PUBLISHED[name]
    wave = chirps(published["clip_s"], published["sample_rate"])
    reference = librosa_stage_b(wave, published)
    frontend = TFMelFrontend(dataclasses.replace(PRESETS[name], precision="float64"))  # the 1e-4 dB path
    ours = frontend.mel_db(wave[None]).numpy()[0].astype(np.float64)
    assert ours.shape == reference.shape
    scale = 20.0 / (published["ln_scale"] * np.log(10.0)) if published["log"] == "ln" else 1.0  # ln units -> dB
    assert np.abs(ours - reference).max() * scale <= STAGE_B_DB
    assert frontend.model_input(wave[None]).numpy().shape == (1, *published["input_shape"])
