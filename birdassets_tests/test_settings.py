"""Settings: BIRDASSETS_HOME, birdassets.toml parsing and errors, checkpoint discovery across roots."""

from __future__ import annotations

import re

import pytest
from flax import nnx

from birdassets.checkpoints import CheckpointError, discover_checkpoints, resolve_checkpoint
from birdassets.models.vit import ViTConfig, ViTEncoder
from birdassets.models.vit.family import save_checkpoint
from birdassets.settings import SettingsError, load_settings


def test_defaults_are_the_demo_tasks_under_home(tmp_path, monkeypatch):
    monkeypatch.setenv("BIRDASSETS_HOME", str(tmp_path))
    settings = load_settings()
    assert settings.home == tmp_path.resolve()
    assert settings.task_names == ("demo-clear", "demo-noisy")
    assert settings.dataset("demo-clear").root == tmp_path / "data" / "demo-clear"
    assert [d.name for d in settings.datasets if not d.benchmark] == ["demo-pretrain", "demo-orca"]
    orca = settings.dataset("demo-orca")  # the hydrophone clips: a detector's training data, OrcaHello frontend
    assert (orca.source, orca.preset, orca.root) == ("demo", "orcahello", tmp_path / "data" / "demo-orca")
    assert settings.task_preset("demo-orca").sample_rate == 20_000
    assert settings.checkpoint_roots == (tmp_path / "checkpoints",)
    assert settings.layout.db_path == tmp_path / "birdassets.duckdb"
    assert settings.layout.embeddings_dir("demo-clear", "run/x@3").name == "run_x@3"  # one path component


def test_config_file_adds_datasets_roots_and_probes(tmp_path):
    (tmp_path / "birdassets.toml").write_text(
        'include_demo = false\ncheckpoint_roots = ["/runs/a"]\nprobes = ["linear"]\n'
        '[[datasets]]\nname = "hsn"\nsource = "birdset"\nroot = "/data/hsn"\nbirdset_config = "HSN"\n'
    )
    settings = load_settings(tmp_path)
    assert settings.task_names == ("hsn",) and settings.dataset("hsn").birdset_config == "HSN"
    assert settings.task_preset("hsn").name == "birdset"  # BirdSet data defaults to BirdSet's frontend
    assert [str(p) for p in settings.checkpoint_roots] == [str(tmp_path / "checkpoints"), "/runs/a"]
    assert settings.probes == ("linear",)


@pytest.mark.parametrize(
    "text,problem",
    [
        ("colour = 1", "colour: unknown key; known keys: include_demo, "),
        ('[[datasets]]\nname = "x"\nroot = "/x"', "datasets\\[0\\]: missing required key 'source'"),
        ('[[datasets]]\nname = "x"\nsource = "mp3"\nroot = "/x"', "unknown source 'mp3'"),
        ('[[datasets]]\nname = "demo-clear"\nsource = "demo"\nroot = "/x"', "duplicate dataset names"),
        ("include_demo = ", "not valid TOML"),
    ],
)
def test_bad_config_names_file_and_problem(tmp_path, text, problem):
    (tmp_path / "birdassets.toml").write_text(text)
    with pytest.raises(SettingsError, match=problem) as info:
        load_settings(tmp_path)
    assert "birdassets.toml" in str(info.value)


def test_discovery_across_roots_and_ambiguous_runs(tmp_path):
    config = ViTConfig(frames=32, mels=16, dim=32, depth=1, heads=2)
    for root, run, step in (("a", "r1", 0), ("a", "r1", 5), ("b", "r2", 3), ("b", "r1", 5)):
        save_checkpoint(tmp_path / root / run, step, ViTEncoder(config, rngs=nnx.Rngs(0)), config)
    (tmp_path / "a" / "r1" / "9.orbax-checkpoint-tmp-1").mkdir()
    refs = discover_checkpoints([tmp_path / "a", tmp_path / "b", tmp_path / "missing"])
    assert [ref.key for ref in refs] == ["r2@3"]  # run r1 is in both roots: ambiguous, skipped (with a reason)
    assert resolve_checkpoint([tmp_path / "a", tmp_path / "b"], "r2@3").run_dir == tmp_path / "b" / "r2"
    assert resolve_checkpoint([tmp_path / "a"], "r1@0").run_dir == tmp_path / "a" / "r1"
    for key in ("r1@0", "r1@5"):
        with pytest.raises(CheckpointError, match="several checkpoint roots"):
            resolve_checkpoint([tmp_path / "a", tmp_path / "b"], key)
    with pytest.raises(CheckpointError, match="no finalized step 9"):
        resolve_checkpoint([tmp_path / "a"], "r1@9")


@pytest.mark.parametrize("line, named", [
    ('n_folds = "five"', 'n_folds: expected an integer >= 2, got the string "five"'),
    ("n_folds = 1", "n_folds: expected an integer >= 2, got the integer 1"),
    ("fold_seed = 1.5", "fold_seed: expected an integer >= 0, got the number 1.5"),
])
def test_a_bad_fold_setting_names_the_file_and_the_key(tmp_path, line, named):
    (tmp_path / "birdassets.toml").write_text(line + "\n")
    with pytest.raises(SettingsError, match=f"birdassets.toml: {re.escape(named)}"):
        load_settings(tmp_path)
