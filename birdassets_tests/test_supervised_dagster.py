"""The supervised system in Dagster: task x model partitions, learning curves in the materialization, rows in
DuckDB beside the probes, and the trained model's penultimate layer benchmarked like any checkpoint."""

from __future__ import annotations

import base64
from pathlib import Path

import dagster as dg
import pytest

from birdassets.definitions import BENCHMARK_JOB, DATA_JOB, SUPERVISED_JOB, build_definitions
from birdassets.defs.partitions import CHECKPOINT_PARTITIONS_NAME, evaluation_key, supervised_key
from birdassets.defs.runs import step_failure_messages
from birdassets.embeddings import read_embeddings
from birdassets.settings import load_settings
from birdassets.sources.demo import DemoTaskSpec, generate
from birdassets.store import query_readonly

pytestmark = pytest.mark.slow
TASK = "mini"
KEY = "birdclef-rnn.mini"
ENCODER = "birdclef-rnn.mini:embedding"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("home")
    spec = DemoTaskSpec(name=TASK, seed=7, n_species=6, train_per_species=5, train_length_s=(3.0, 8.0),
                        n_test_windows=10, windows_per_soundscape=5)
    generate(spec, home / "mini-data")
    (home / "runs").mkdir()
    (home / "birdassets.toml").write_text(
        f'include_demo = false\ncheckpoint_roots = ["{home / "runs"}"]\nprobes = ["linear", "centroid"]\n'
        f'pretrained = []\n[[datasets]]\nname = "{TASK}"\nsource = "birdclef"\nroot = "{home / "mini-data"}"\n'
    )
    return home


@pytest.fixture(scope="module")
def instance(home):
    (home / "dagster").mkdir(exist_ok=True)
    with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:
        yield instance


@pytest.fixture(scope="module")
def defs(home):
    return build_definitions(load_settings(home))


def run(defs, name, key, instance, ops=None):
    return defs.resolve_job_def(name).execute_in_process(
        partition_key=key, instance=instance, raise_on_error=False, run_config={**QUIET, "ops": ops or {}})


@pytest.fixture(scope="module")
def trained(home, defs, instance):
    assert run(defs, DATA_JOB, TASK, instance).success
    result = run(defs, SUPERVISED_JOB, supervised_key(TASK, "rnn"), instance,
                 {"supervised_model": {"config": {"debug": True, "epochs": 3}}})
    assert result.success, step_failure_messages(result)
    return result


def materialization(result, asset: str) -> dg.AssetMaterialization:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return event.step_materialization_data.materialization


def test_learning_curves_and_oof_scores_reach_the_ui_and_duckdb(home, trained):
    metadata = materialization(trained, "supervised_model").metadata
    curves = metadata["plot_learning_curves"].value  # the PNG inline, so the UI shows the picture
    png = base64.b64decode(curves.removeprefix("![learning_curves](data:image/png;base64,").removesuffix(")"))
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and 10_000 < len(png) < 200_000
    history = metadata["history"].value
    assert len([line for line in history.splitlines() if line.startswith("|")]) == 2 + 5 * 3  # folds x epochs
    board = query_readonly(home / "birdassets.duckdb",
                           "select metric, mean, n_folds from leaderboard where task = ? and checkpoint = ? "
                           "and probe = 'supervised' and split = 'valid' order by metric", [TASK, KEY])
    auc = dict(zip(board["metric"], board["mean"], strict=True))["AUC"]
    assert set(board["n_folds"]) == {5}
    assert metadata["oof_class_wise_auc"].value == pytest.approx(auc, abs=1e-12)
    epochs = query_readonly(home / "birdassets.duckdb",
                            "select count(*) as n from supervised_epochs where task = ? and checkpoint = ?", [TASK, KEY])
    assert int(epochs["n"][0]) == 15


def test_trained_model_is_an_encoder_the_benchmark_scores(home, defs, instance, trained):
    from birdassets.cli.pipeline import register_checkpoints

    new = register_checkpoints(defs, instance, load_settings(home))
    assert ENCODER in new and ENCODER in instance.get_dynamic_partitions(CHECKPOINT_PARTITIONS_NAME)
    result = run(defs, BENCHMARK_JOB, evaluation_key(TASK, ENCODER), instance)
    assert result.success, step_failure_messages(result)
    embeddings = read_embeddings(home / "embeddings" / TASK / "birdclef-rnn.mini_embedding").embeddings
    assert embeddings.shape[1] == 2 * 128  # the RNN's embedding: mean and max over time of 128 GRU units
    board = query_readonly(home / "birdassets.duckdb",
                           "select probe from leaderboard where task = ? and checkpoint = ? and metric = 'cmAP' "
                           "and split = 'valid' order by probe", [TASK, ENCODER])
    assert list(board["probe"]) == ["centroid", "chance", "linear"]
    model = query_readonly(home / "birdassets.duckdb", "select distinct probe from scores where checkpoint = ? "
                           "order by probe", [KEY])
    assert list(model["probe"]) == ["chance", "supervised"]  # the model's own rows are still there


def test_bad_run_config_fails_with_the_field_named(defs, instance, trained):
    result = run(defs, SUPERVISED_JOB, supervised_key(TASK, "cnn"), instance,
                 {"supervised_model": {"config": {"epochs": 0}}})
    assert not result.success
    assert any(m.startswith("supervised_model") and "epochs must be a positive integer, got 0" in m
               for m in step_failure_messages(result))
