"""Tests that kill mutants of ``frontends/presets.py`` that survived the mutation run (issue #10).

Each test names the mutant it kills; expected values are written out by hand.
"""

from __future__ import annotations

import pytest

from birdassets.frontends.presets import PRESETS, PresetError, preset_from_table, presets_from_tables, presets_from_toml

# sha256 of each built-in preset's parameters (FRONTEND_VERSION "3", precision "mixed"), pinned when issue 15's
# precision field was added (FRONTEND_VERSION "2" pins, as on 022c4fb: 691d8f8c..., 756b3c4e..., 0aadb071..., 24fbd399...). Content hashes key the mel
# datasets on disk: a change rebuilds every dataset, so it must come with a FRONTEND_VERSION bump and a new pin.
PINNED_CONTENT_HASHES = {
    "birdclef2025": "95a7196664b36ca01675015c0e85aebaa57adbf605bd3d1a10f99ed82f017d08",
    "birdset": "96f3c81a12a9f22ed186897fa6078b1f96e5ff3f36ac3db874963a5a8137a6fe",
    "orcahello": "f234e4b49858e355d64687d714e52728e76a68928f14ff7922908e940a9e4a44",
    "perch": "5bd3c87aa9d553dfb90a709cd035117aa3313c3cdf0c345d15d4545b8cc78f9c",
}


def test_builtin_content_hashes_are_stable():
    """Kills ``content_hash``: ``sort_keys=False`` (same parameters, another hash)."""
    assert {name: preset.content_hash() for name, preset in PRESETS.items()} == PINNED_CONTENT_HASHES


def test_int_for_an_optional_float_field_is_stored_as_float():
    """Kills ``_coerce``: union options dropped, so ``top_db = 60`` stayed an int and hashed unlike ``60.0``."""
    as_int = preset_from_table("mine", {"base": "birdset", "top_db": 60})
    as_float = preset_from_table("mine", {"base": "birdset", "top_db": 60.0})
    assert type(as_int.top_db) is float and as_int.top_db == 60.0
    assert as_int.content_hash() == as_float.content_hash()


@pytest.mark.parametrize(
    "table,problem",
    [
        # _check_type: `option is None-type or value is None` let None through for any field
        ({"base": "birdset", "n_fft": None}, "n_fft = None is not int"),
        # _check_type: `origin is not tuple` accepted a two-int list for a plain int field
        ({"base": "birdset", "n_fft": [1024, 1024]}, "n_fft = [1024, 1024] is not int"),
    ],
)
def test_wrongly_typed_values_are_refused(table, problem):
    with pytest.raises(PresetError) as raised:
        preset_from_table("mine", table, "presets.toml")
    assert str(raised.value) == f"presets.toml: preset 'mine': {problem}"


@pytest.mark.parametrize(
    "fields,problem",
    [
        # MelPreset.__post_init__: `clip_s <= 0 and hop_s <= 0` needed both bad; the message replaced by None
        ({"hop_s": 0.0}, "clip_s and hop_s must be > 0 and min_last_s >= 0"),
        # MelPreset.__post_init__: `n_fft <= 0 and hop_length <= 0` needed both bad
        ({"hop_length": 0}, "n_fft, hop_length and n_mels must be > 0"),
        # MelPreset.__post_init__: these messages replaced by None or upper-cased
        ({"clip_s": 0.01}, "reflect padding of 512 needs clips longer than that"),
        ({"power": 0.0}, "power must be > 0"),
        ({"filterbank_rate": 0}, "filterbank_rate must be > 0"),
        ({"amin": 0.0}, "amin and ln_floor must be > 0"),
        ({"top_db": 0.0}, "top_db must be > 0 or None"),
        # ModelInputSpec.problems: `not std >= 0` let std = 0 through (a division by zero in stage C)
        ({"model_input": {"std": 0.0}}, "model_input.std must be > 0, got 0.0 (a negative std flips the input's sign)"),
        # ModelInputSpec.problems: the eps message upper-cased
        ({"model_input": {"eps": -1.0}}, "model_input.eps must be >= 0"),
        # ModelInputSpec.problems: `min(size) < 0` let a zero-sized resize through
        ({"model_input": {"size": [0, 64]}}, "model_input.size must be two positive ints (frames, mels), got (0, 64)"),
        # ModelInputSpec.problems: the frames message replaced by None
        ({"model_input": {"frames": 0}}, "model_input.frames must be > 0, got 0"),
    ],
)
def test_each_invalid_parameter_alone_is_refused_by_name(fields, problem):
    with pytest.raises(PresetError) as raised:
        preset_from_table("mine", {"base": "birdset", **fields}, "presets.toml")
    assert str(raised.value) == f"presets.toml: preset 'mine': {problem}"


def test_default_source_is_named_config():
    """Kills the ``"<config>"`` default of ``preset_from_table`` and ``presets_from_tables`` (messages start with it)."""
    with pytest.raises(PresetError) as from_table:
        preset_from_table("mine", {"base": "birdset", "hop": 3})
    with pytest.raises(PresetError) as from_tables:
        presets_from_tables({"mine": {"base": "birdset", "hop": 3}})
    for raised in (from_table, from_tables):
        assert str(raised.value).startswith("<config>: preset 'mine': unknown field 'hop'")


def test_preset_file_errors_name_the_file(tmp_path):
    """Kills ``presets_from_toml`` passing no source (or ``str(None)``) on to the table checks."""
    path = tmp_path / "my-presets.toml"
    path.write_text('[presets.mine]\nbase = "birdset"\nn_fft = "1024"\n')
    with pytest.raises(PresetError) as raised:
        presets_from_toml(path)
    assert str(raised.value) == f"{path}: preset 'mine': n_fft = '1024' is not int"
