"""The SLDS benchmark end to end at toy size: finite scores in range, reproducible from the seed, k-NN by hand."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from birdassets.models.tidhy.benchmark import (SMALL, BenchmarkConfig, DivergedError, knn_accuracy, run_benchmark,
                                               sliding_windows)
from birdassets.models.tidhy.inference import InferenceConfig
from birdassets.models.tidhy.mstep import LearningConfig
from birdassets.models.tidhy.slds_data import SLDSConfig
from birdassets.settings import load_settings
from birdassets.steps import slds_benchmark
from birdassets.store import query_readonly

TOY = dataclasses.replace(SMALL, slds=SLDSConfig(train_steps=1_500, test_steps=600), sequence_length=50,
                          batch_size=16, train_steps=80, inference=InferenceConfig(max_iter=50))


def test_sliding_windows_start_every_stride_steps() -> None:
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    windows = sliding_windows(x, 4, 3)
    assert windows.shape == (3, 4, 2)  # starts 0, 3, 6
    np.testing.assert_array_equal(windows[1, :, 0], [6, 8, 10, 12])


def test_knn_accuracy_on_separable_and_on_shuffled_labels() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 100)
    features = labels[:, None] * 10.0 + rng.normal(size=(400, 2))
    assert knn_accuracy(features, labels, seed=0) == 1.0
    assert knn_accuracy(features, rng.permutation(labels), seed=0) < 0.45  # chance is 0.25


def test_a_diverging_run_stops_with_a_clear_error() -> None:
    wild = dataclasses.replace(TOY, learning=LearningConfig(lr_dynamics=5.0))
    with pytest.raises(DivergedError, match=r"diverged at update 1 .*lower the learning rates: inference lr_r 0\.1, "
                                            r"lr_r2 0\.05; decoder 0\.01, dynamics 5\.0, hypernet 0\.001"):
        run_benchmark(wild, seed=0)


def test_model_and_data_widths_must_agree() -> None:
    with pytest.raises(ValueError, match="input_dim"):
        BenchmarkConfig(slds=SLDSConfig(project_dim=12))


def test_toy_runs_are_reproducible_and_recording_twice_replaces_rows_and_keeps_other_seeds(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("BIRDASSETS_HOME", str(tmp_path))
    settings = load_settings()
    first = slds_benchmark(settings, 0, True, "run-a", config=TOY)
    again = slds_benchmark(settings, 0, True, "run-b", config=TOY)
    slds_benchmark(settings, 1, True, "run-c", config=TOY)
    for name in ("r2_knn_acc", "r_knn_acc", "pca_knn_acc"):
        assert 0.125 < first.scores[name] <= 1.0, name  # above the 8-way chance level
        assert first.scores[name] == again.scores[name], name  # the same seed gives the same scores
    assert 0.0 < first.scores["recon_r2"] <= 1.0
    assert first.scores["recon_r2"] == pytest.approx(again.scores["recon_r2"], abs=1e-6)
    assert 1 <= first.scores["inference_iterations"] <= 50
    rows = query_readonly(settings.layout.db_path, "select checkpoint, metric, value, run_id from scores "
                          "where task = 'slds' order by checkpoint, metric")
    assert len(rows) == 8 and set(rows["checkpoint"]) == {"tidhy-slds-small-seed0@80", "tidhy-slds-small-seed1@80"}
    seed0 = rows[rows["checkpoint"] == first.checkpoint].set_index("metric")
    assert set(seed0["run_id"]) == {"run-b"}
    assert seed0.loc["r2_knn_acc", "value"] == pytest.approx(first.scores["r2_knn_acc"])  # same seed, same score


def test_cli_small_benchmark_prints_the_table_and_records_it(cli, tmp_path) -> None:
    """Seed 2: the one whose training diverged (the dynamics' spectral radius grew to 3 until r exploded) before
    the inference rate of r went from 0.05 to 0.1. (The command runs in this process: JAX is already imported.)"""
    done = cli("tidhy", "benchmark", "--small", "--seed", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    home = tmp_path / "home"  # the cli fixture's BIRDASSETS_HOME
    printed = dict(re.findall(r"^\s+(\w+_(?:acc|r2))\s+([0-9.]+)$", done.stdout, re.M))
    assert set(printed) == {"r2_knn_acc", "r_knn_acc", "pca_knn_acc", "recon_r2"}
    stored = query_readonly(home / "birdassets.duckdb",
                            "select metric, value from scores where task = 'slds' and checkpoint = "
                            "'tidhy-slds-small-seed2@150'")
    assert dict(zip(stored["metric"], stored["value"].round(4))) == {k: float(v) for k, v in printed.items()}
    assert float(printed["r2_knn_acc"]) > float(printed["pca_knn_acc"])  # r2 decodes the states better than PCA
    run_dir = home / "checkpoints" / "tidhy-slds-small-seed2"
    assert sorted(int(p.name) for p in run_dir.iterdir() if p.name.isdigit()) == [50, 100, 150]
