"""Presets (built-in and user-defined), their hashes and validation, and stage A windowing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from birdassets.frontends.presets import (
    PRESETS,
    MelPreset,
    ModelInputSpec,
    PresetError,
    get_preset,
    preset_from_table,
    presets_from_toml,
)
from birdassets.frontends.windowing import cut_windows, window_starts
from birdassets.settings import SettingsError, load_settings


# ---- built-in presets ---------------------------------------------------------------------------------------
def test_builtin_presets_have_the_documented_shapes():
    shapes = {name: (p.sample_rate, p.frames, p.n_mels, p.input_shape) for name, p in PRESETS.items()}
    assert shapes == {
        "birdclef2025": (32_000, 313, 128, (256, 256)),  # 1 + 160000 // 512; resized
        "birdset": (32_000, 501, 128, (501, 128)),  # 1 + 160000 // 320
        "orcahello": (20_000, 157, 256, (312, 256)),  # 1 + 40000 // 256, padded to 4 s = 312 frames
        "perch": (32_000, 501, 128, (500, 128)),  # last frame dropped
    }
    assert PRESETS["birdset"].model_input.std > 0  # BirdSet's Python default has the sign wrong
    assert PRESETS["orcahello"].filterbank_rate == 16_000 and PRESETS["orcahello"].sample_rate == 20_000


def test_preset_hash_tracks_every_parameter():
    preset = get_preset("birdclef2025")
    assert preset.content_hash() == get_preset("birdclef2025").content_hash()
    assert len({p.content_hash() for p in PRESETS.values()}) == len(PRESETS)
    for change in ({"hop_length": 320}, {"f_min": 0.0}, {"mel_norm": None}, {"top_db": 100.0},
                   {"model_input": ModelInputSpec(normalize="minmax", size=(256, 255))}):
        assert dataclasses.replace(preset, **change).content_hash() != preset.content_hash()


def test_precision_enters_the_content_hash():
    """Same parameters in another stage-B precision: another hash, so another mel dataset path."""
    hashes = {precision: dataclasses.replace(get_preset("birdset"), precision=precision).content_hash()
              for precision in ("float64", "mixed", "float32")}
    assert len(set(hashes.values())) == 3
    assert hashes["mixed"] == get_preset("birdset").content_hash()  # the built-ins are "mixed"


def test_invalid_precision_is_refused_by_name(tmp_path):
    with pytest.raises(PresetError) as raised:
        dataclasses.replace(PRESETS["perch"], precision="float16")
    assert str(raised.value) == "preset 'perch': precision 'float16' is not one of ('float64', 'mixed', 'float32')"
    path = tmp_path / "presets.toml"
    path.write_text('[presets.exact]\nbase = "birdset"\nprecision = "float64"\n'
                    '[presets.half]\nbase = "birdset"\nprecision = "float16"\n')
    with pytest.raises(PresetError, match="preset 'half': precision = 'float16' is not"):
        presets_from_toml(path)
    path.write_text('[presets.exact]\nbase = "birdset"\nprecision = "float64"\n')
    assert presets_from_toml(path)["exact"].precision == "float64"


def test_invalid_presets_name_the_problem():
    with pytest.raises(PresetError, match="unknown preset 'nope'"):
        get_preset("nope")
    with pytest.raises(PresetError, match="broken.*Nyquist"):
        MelPreset(name="broken", sample_rate=16_000, n_fft=512, hop_length=128, n_mels=64, f_min=0, f_max=12_000)
    with pytest.raises(PresetError, match="model_input.std must be > 0"):
        dataclasses.replace(PRESETS["birdset"], model_input=ModelInputSpec(normalize="standardize", std=-4.569))
    with pytest.raises(PresetError, match="log 'log10' is not one of"):
        dataclasses.replace(PRESETS["birdset"], log="log10")


# ---- user presets -------------------------------------------------------------------------------------------
def test_user_presets_from_toml(tmp_path):
    path = tmp_path / "presets.toml"
    path.write_text(
        """
[presets.birdset-hop256]
base = "birdset"
hop_length = 256
[presets.birdset-hop256.model_input]
mean = -5

[presets.hydrophone]
sample_rate = 48000
n_fft = 2048
hop_length = 480
n_mels = 64
f_min = 10.0
f_max = 3000
clip_s = 10.0
hop_s = 5.0
mel_scale = "htk"
mel_norm = "slaney"
[presets.hydrophone.model_input]
normalize = "minmax"
size = [128, 64]
"""
    )
    presets = presets_from_toml(path)
    hop256, hydro = presets["birdset-hop256"], presets["hydrophone"]
    assert hop256.hop_length == 256 and hop256.frames == 626 and hop256.pad_mode == "reflect"
    assert hop256.model_input == ModelInputSpec(normalize="standardize", mean=-5.0, std=4.569)
    assert isinstance(hop256.model_input.mean, float)  # "-5" and "-5.0" hash the same
    assert hydro.input_shape == (128, 64) and hydro.frames == 1001 and hydro.f_max == 3000.0
    assert hydro.model_input.size == (128, 64)  # TOML list -> tuple (hashable, static for jit)
    hash(hydro)


@pytest.mark.parametrize(
    "table,problem",
    [
        ({"base": "birdset", "hop": 3}, "unknown field 'hop'"),
        ({"base": "birdset", "n_fft": "1024"}, "n_fft = '1024' is not int"),
        ({"base": "birdset", "center": 1}, "center = 1 is not bool"),
        ({"sample_rate": 16_000}, "missing required fields"),
        ({"base": "birdset", "model_input": {"std": -4.569}}, "std must be > 0"),
        ({"base": "birdset", "model_input": {"size": [1, 2, 3]}}, "size = \\[1, 2, 3\\]"),
        ({"base": "birdset", "model_input": {"resize": [2, 2]}}, "model_input: unknown field 'resize'"),
        ({"base": "nope"}, "base 'nope' is not a built-in preset"),
        ({"base": "birdset", "f_max": 20_000}, "Nyquist"),
    ],
)
def test_user_preset_errors_name_file_preset_and_field(table, problem):
    with pytest.raises(PresetError, match=problem) as raised:
        preset_from_table("mine", table, "conf/presets.toml")
    assert str(raised.value).startswith("conf/presets.toml: ") and "'mine'" in str(raised.value)


def test_builtin_names_cannot_be_redefined(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[presets.birdset]\nbase = "birdset"\nhop_length = 256\n')
    with pytest.raises(PresetError, match="redefines the built-in preset 'birdset'"):
        presets_from_toml(path)
    path.write_text("[presets.x\n")
    with pytest.raises(PresetError, match="p.toml: not valid TOML"):
        presets_from_toml(path)


def test_settings_resolve_user_presets_for_datasets(tmp_path):
    config = tmp_path / "birdassets.toml"
    config.write_text(
        '[[datasets]]\nname = "whales"\nsource = "birdclef"\nroot = "/data/w"\npreset = "slow-hop"\n'
        '[presets.slow-hop]\nbase = "orcahello"\nhop_length = 512\n'
    )
    settings = load_settings(tmp_path)
    preset = settings.task_preset("whales")
    assert preset.name == "slow-hop" and preset.hop_length == 512 and preset.frames == 79
    assert settings.task_preset("demo-clear") is PRESETS["birdclef2025"]
    config.write_text('[[datasets]]\nname = "whales"\nsource = "birdclef"\nroot = "/data/w"\npreset = "slow-hop"\n')
    with pytest.raises(SettingsError, match="birdassets.toml: dataset 'whales': unknown preset 'slow-hop'"):
        load_settings(tmp_path)
    config.write_text('[presets.bad]\nbase = "birdset"\nn_mels = 0\n')
    with pytest.raises(SettingsError, match="birdassets.toml: preset 'bad'.*n_mels must be > 0"):
        load_settings(tmp_path)


# ---- stage A ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,duration,expected",
    [
        ("birdclef2025", 12.3, [0.0, 5.0, 10.0]),
        ("birdclef2025", 10.9, [0.0, 5.0]),  # 0.9 s left: under min_last_s, dropped
        ("birdclef2025", 11.0, [0.0, 5.0, 10.0]),
        ("birdclef2025", 0.4, [0.0]),  # shorter than a clip: one zero-padded window
        ("birdclef2025", 0.0, []),
        ("orcahello", 5.0, [0.0, 1.0, 2.0, 3.0]),  # whole 2 s clips every 1 s
        ("orcahello", 5.9, [0.0, 1.0, 2.0, 3.0]),
    ],
)
def test_window_starts(name, duration, expected):
    assert window_starts(duration, PRESETS[name]) == expected


def test_orcahello_gives_59_clips_per_minute():
    assert len(window_starts(60.0, PRESETS["orcahello"])) == 59  # as the live system's [i, i + 2] proposals


def test_cut_windows_gathers_and_zero_pads():
    preset = dataclasses.replace(PRESETS["orcahello"], sample_rate=100, n_fft=64, hop_length=16, f_max=50.0)
    audio = np.arange(1, 451, dtype=np.float32)  # 4.5 s at 100 Hz
    windows = cut_windows(audio, [0.0, 1.0, 3.5], preset)
    assert windows.shape == (3, 200) and windows.dtype == np.float32
    np.testing.assert_array_equal(windows[1], audio[100:300])
    np.testing.assert_array_equal(windows[2][:100], audio[350:])
    assert np.all(windows[2][100:] == 0.0)
    assert cut_windows(audio, [], preset).shape == (0, 200)
    with pytest.raises(ValueError, match="mono"):
        cut_windows(np.zeros((2, 10)), [0.0], preset)
