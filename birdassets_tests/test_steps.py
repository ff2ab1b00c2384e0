"""Every step of the pipeline runs without Dagster, reads the manifest once, and is idempotent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from birdassets import steps
from birdassets.folds import FoldConfig, assign_folds
from birdassets.settings import load_settings
from birdassets.sources.demo import DemoTaskSpec, generate
from birdassets.sources.manifest import Manifest, multi_hot
from birdassets.store import query_readonly
from birdassets_tests.conftest import write_tiny_vit

pytestmark = pytest.mark.slow
TASK = "mini"
CHECKPOINT = "ssl-b@3"


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    spec = DemoTaskSpec(name=TASK, seed=11, n_species=6, train_per_species=4, train_length_s=(3.0, 7.0),
                        n_test_windows=10, windows_per_soundscape=5)
    generate(spec, home / "mini-data")
    write_tiny_vit(home / "runs" / "ssl-b", 3, seed=3)
    (home / "birdassets.toml").write_text(
        f'include_demo = false\ncheckpoint_roots = ["{home / "runs"}"]\nprobes = ["linear", "centroid"]\n'
        f'pretrained = []\n[[datasets]]\nname = "{TASK}"\nsource = "birdclef"\nroot = "{home / "mini-data"}"\n'
    )
    return load_settings(home)


@pytest.fixture
def manifest_reads(monkeypatch):
    """Counts Manifest.read calls (the real method still runs)."""
    calls = []
    real = Manifest.read.__func__

    def counting(cls, path):
        calls.append(Path(path))
        return real(cls, path)

    monkeypatch.setattr(Manifest, "read", classmethod(counting))
    return calls


def run_chain(settings) -> dict[str, object]:
    reports = {"ingest": steps.ingest(settings, TASK, run_id="run-1")}
    reports["mel"] = steps.build_mel(settings, TASK)
    reports["folds"] = steps.make_folds(settings, TASK)
    reports["encoder"] = steps.restore_encoder(settings, CHECKPOINT)
    reports["embed"] = steps.embed(settings, TASK, CHECKPOINT)
    reports["probes"] = steps.fit_probes(settings, TASK, CHECKPOINT)
    reports["score"] = steps.score(settings, TASK, CHECKPOINT, run_id="run-1")
    reports["record"] = steps.record(settings, TASK, CHECKPOINT)
    return reports


@pytest.fixture(scope="module")
def chained(settings):
    """``settings`` after one run of the whole chain (whatever order the tests run in)."""
    run_chain(settings)
    return settings


def test_every_step_runs_without_dagster_and_reads_the_manifest_once(settings, manifest_reads):
    reports = run_chain(settings)
    layout = settings.layout
    assert reports["ingest"].result.reconciles and reports["ingest"].manifest_path == layout.manifest_path(TASK)
    assert reports["mel"].stats["windows"] == len(reports["mel"].dataset.windows())
    assert set(reports["folds"].table["fold"]) == set(range(5))
    assert reports["encoder"].loaded.ref.step == 3 and reports["encoder"].loaded.encoder.dim == 32
    assert reports["embed"].stats["dim"] == 32 and reports["embed"].health["non_finite"] == 0
    assert list(reports["probes"].summary["probe"]) == ["linear", "centroid"]
    lineage = reports["score"].lineage
    assert (lineage.task, lineage.checkpoint, lineage.step, lineage.run_id) == (TASK, CHECKPOINT, 3, "run-1")
    assert lineage.checkpoint_path == str(settings.checkpoint_roots[1] / "ssl-b" / "3")
    # each step that needs the manifest reads it exactly once (mel, folds, embed, score, record)
    assert manifest_reads.count(layout.manifest_path(TASK)) == 5
    db = query_readonly(layout.db_path, "select probe, count(*) as n from scores group by probe order by probe")
    assert dict(zip(db["probe"], db["n"])) == {"centroid": 40, "chance": 10, "linear": 40}  # 5 folds x 2 splits x 4|1
    classes = len(Manifest.read(layout.manifest_path(TASK)).classes)
    per_class = query_readonly(layout.db_path, "select count(*) as n from class_scores")["n"][0]
    assert classes == 6 and per_class == 5 * 2 * 2 * classes  # folds x splits x probes x classes
    plots = layout.scores_dir(TASK, CHECKPOINT) / "plots"
    assert set(reports["score"].figures) == {"per_class_ap", "pr_curves"} and set(reports["record"].figures) == {
        "leaderboard"}  # one step of the run scored: no curve against step
    assert sorted(p.name for p in plots.iterdir()) == ["leaderboard.png", "per_class_ap.png", "pr_curves.png"]
    assert (plots / "pr_curves.png").read_bytes() == reports["score"].figures["pr_curves"]


def test_rerunning_the_chain_gives_the_same_rows_and_scores(chained):
    settings = chained
    before = query_readonly(settings.layout.db_path, "select * from scores order by fold, split, probe, metric")
    plots = settings.layout.scores_dir(TASK, CHECKPOINT) / "plots"
    first = {p.name: p.read_bytes() for p in plots.iterdir()}
    run_chain(settings)
    after = query_readonly(settings.layout.db_path, "select * from scores order by fold, split, probe, metric")
    assert len(after) == len(before)
    np.testing.assert_array_equal(after["value"].to_numpy(), before["value"].to_numpy())  # same seeds, same scores
    assert {p.name: p.read_bytes() for p in plots.iterdir()} == first  # the same plots, byte for byte
    for table in ("datasets", "checkpoints", "lineage"):
        assert len(query_readonly(settings.layout.db_path, f"select * from {table}")) == 1
    leftovers = [p for p in settings.home.rglob("*") if p.name.endswith((".incomplete", ".tmp"))]
    assert leftovers == []


def test_the_recorded_dataset_and_checkpoint_rows_describe_the_evaluation(chained):
    settings = chained
    dataset = query_readonly(settings.layout.db_path, "select * from datasets").iloc[0]
    manifest = Manifest.read(settings.layout.manifest_path(TASK))
    assert (dataset["task"], dataset["manifest_hash"]) == (TASK, manifest.content_hash())
    checkpoint = query_readonly(settings.layout.db_path, "select * from checkpoints").iloc[0]
    assert (checkpoint["checkpoint"], checkpoint["run"], checkpoint["step"]) == (CHECKPOINT, "ssl-b", 3)
    saved = pd.read_parquet(settings.layout.scores_dir(TASK, CHECKPOINT) / "scores.parquet")
    assert saved["value"].notna().all() and ((saved["value"] >= 0) & (saved["value"] <= 1)).all()


def test_the_folds_step_stratifies_each_training_window_on_its_recordings_primary_label(chained):
    settings = chained
    """The step's wiring, recomputed by hand: train windows in window-index order, their multi-hot labels, the
    index of their recording's primary label, n_folds 5 and seed 42 (the settings' defaults)."""
    windows = steps.TaskData.load(settings, TASK).mel.windows()
    train = windows[windows["split"] == "train"].reset_index(drop=True)
    manifest = Manifest.read(settings.layout.manifest_path(TASK))
    classes = list(manifest.classes)
    primary_by_recording = manifest.table.set_index("recording_id")["primary_label"]
    primary = np.array([classes.index(primary_by_recording[r]) for r in train["recording_id"]])
    expected = assign_folds(train["recording_id"].to_numpy(), multi_hot(train["labels"], classes), primary,
                            FoldConfig(n_folds=5, seed=42))
    saved = pd.read_parquet(settings.layout.folds_path(TASK))
    assert saved["window_id"].tolist() == train["window_id"].tolist()
    np.testing.assert_array_equal(saved["fold"].to_numpy(), expected)
