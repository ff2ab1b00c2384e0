"""Each blocking asset check, fed bad data through a real Dagster run, fails and stops the run before the
next asset: real instance, real files on disk, real Orbax checkpoints, real DuckDB file.

The bad data comes from the places it would come from in life: a mel dataset left in the content-addressed
cache by a buggy frontend, a fold assignment with a bug (recordings split across folds), an encoder whose
patch embedding is dead (every window embeds alike), a scorer that reports percentages. A bug is planted only
to *produce* bad files; the Dagster run, the checks and the stores are never patched. (The encoder check is
covered with the checkpoint-integrity tests: its failure needs a checkpoint whose weights the check reads.)
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from birdassets import steps
from birdassets.datasets import mel_tfds
from birdassets.definitions import BENCHMARK_JOB, DATA_JOB, build_definitions
from birdassets.defs.partitions import CHECKPOINT_PARTITIONS_NAME, evaluation_key
from birdassets.defs.resources import BirdassetsHome
from birdassets.models.vit import ViTEncoder
from birdassets.models.vit.family import save_checkpoint
from birdassets.settings import load_settings
from birdassets.sources.demo import DemoTaskSpec, generate
from birdassets_tests.conftest import tiny_vit_config

pytestmark = pytest.mark.slow
TASK = "tiny"
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def write_home(home: Path, data: Path) -> Path:
    """A BIRDASSETS_HOME whose one task reads the BirdCLEF-layout folder ``data``; 3 folds, centroid probe."""
    (home / "runs").mkdir(parents=True, exist_ok=True)
    (home / "birdassets.toml").write_text(
        f'include_demo = false\ncheckpoint_roots = ["{home / "runs"}"]\nprobes = ["centroid"]\nn_folds = 3\n'
        f'pretrained = []\n[[datasets]]\nname = "{TASK}"\nsource = "birdclef"\nroot = "{data}"\n'
    )
    return home


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    spec = DemoTaskSpec(name=TASK, seed=3, n_species=4, train_per_species=3, train_length_s=(6.0, 11.0),
                        n_test_windows=8, windows_per_soundscape=4)
    root = tmp_path_factory.mktemp("data") / "tiny-data"
    generate(spec, root)
    return root


@pytest.fixture(scope="module")
def home(tmp_path_factory, data) -> Path:
    """The task's data built Dagster-free by the steps (manifest, mel dataset, folds): the benchmark runs
    below start from good task data."""
    home = write_home(tmp_path_factory.mktemp("home"), data)
    settings = load_settings(home)
    steps.ingest(settings, TASK, run_id="setup")
    steps.build_mel(settings, TASK)
    steps.make_folds(settings, TASK)
    return home


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        yield instance


def run(home: Path, job: str, partition_key: str, instance) -> dg.ExecuteInProcessResult:
    defs = build_definitions(load_settings(home))
    return defs.resolve_job_def(job).execute_in_process(
        partition_key=partition_key, instance=instance, run_config=QUIET, raise_on_error=False,
        resources={"birdassets": BirdassetsHome(home=str(home))},
    )


def check_verdicts(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def materialized(instance, *names: str) -> dict[str, bool]:
    return {name: instance.get_latest_materialization_event(dg.AssetKey(name)) is not None for name in names}


def scores_rows(home: Path, checkpoint: str) -> int:
    """Rows of the DuckDB ``scores`` table for ``checkpoint`` (the file exists: ingestion records its quarantine)."""
    with duckdb.connect(str(load_settings(home).layout.db_path), read_only=True) as db:
        return db.execute("select count(*) from scores where checkpoint = ?", [checkpoint]).fetchone()[0]


def write_encoder(home: Path, run_name: str, dead_patch_embed: bool = False) -> str:
    """A finalized Orbax step 0 of a tiny ViT; ``dead_patch_embed`` zeroes its patch embedding, so the encoder
    ignores its input and every window embeds to the same vector. Returns the checkpoint key."""
    config = tiny_vit_config()
    encoder = ViTEncoder(config, rngs=nnx.Rngs(0))
    if dead_patch_embed:
        graphdef, state = nnx.split(encoder)
        zeroed = jax.tree_util.tree_map_with_path(
            lambda path, x: jnp.zeros_like(x) if "patch_embed" in jax.tree_util.keystr(path) else x, state)
        encoder = nnx.merge(graphdef, zeroed)
    save_checkpoint(home / "runs" / run_name, 0, encoder, config)
    return f"{run_name}@0"


# ---------------------------------------------------------------------------------------------- mel_dataset


def test_non_finite_mel_values_stop_the_data_run_before_folds(tmp_path, data, instance, monkeypatch):
    """A mel dataset with one NaN, left in the content-addressed cache by a buggy frontend: the data run
    reuses it, the check fails and ``folds`` is never materialized."""
    home = write_home(tmp_path / "home", data)
    settings = load_settings(home)
    steps.ingest(settings, TASK, run_id="setup")
    original = mel_tfds.MelWindows._emit

    def emit_with_a_nan(self, pending, label_index):
        for number, (key, example) in enumerate(original(self, pending, label_index)):
            if number == 0:
                example["mel"] = example["mel"].copy()
                example["mel"][0, 0] = np.nan
            yield key, example

    with monkeypatch.context() as planted:
        planted.setattr(mel_tfds.MelWindows, "_emit", emit_with_a_nan)
        cached = steps.build_mel(settings, TASK).dataset
    result = run(home, DATA_JOB, TASK, instance)
    assert steps.TaskData.load(settings, TASK).mel.root == cached.root  # the run used the poisoned cache
    assert not result.success
    assert check_verdicts(result) == {"mel_values_finite_and_in_range": False}
    assert materialized(instance, "raw_audio", "mel_dataset", "folds") == {
        "raw_audio": True, "mel_dataset": True, "folds": False}
    assert not settings.layout.folds_path(TASK).exists()


def test_good_task_data_passes_both_data_checks(home, instance):
    """The same run on good data: both checks pass and every asset is materialized (the control)."""
    result = run(home, DATA_JOB, TASK, instance)
    assert result.success
    assert check_verdicts(result) == {"mel_values_finite_and_in_range": True, "folds_leak_free_and_cover_classes": True}
    assert all(materialized(instance, "raw_audio", "mel_dataset", "folds").values())


# ---------------------------------------------------------------------------------------------------- folds


def test_folds_that_split_recordings_fail_their_check_and_the_data_run(home, instance, monkeypatch):
    """A planted fold-assignment bug (window i -> fold i mod 3, ignoring recordings) writes a real folds file
    in which recordings span folds; the check reads it and fails the run."""

    def round_robin(groups, labels, primary=None, config=None):
        return np.arange(len(groups)) % config.n_folds

    monkeypatch.setattr(steps, "assign_folds", round_robin)
    result = run(home, DATA_JOB, TASK, instance)
    assert not result.success
    verdicts = check_verdicts(result)
    assert verdicts == {"mel_values_finite_and_in_range": True, "folds_leak_free_and_cover_classes": False}
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert evaluation.metadata["leaks"].value > 0  # recordings in two folds, counted


# ----------------------------------------------------------------------------------------------- embeddings


def test_collapsed_embeddings_stop_the_benchmark_before_the_probe(home, instance):
    """An encoder with a dead patch embedding embeds every window alike: the embeddings check fails and
    no probe, score or DuckDB row follows."""
    key = write_encoder(home, "dead", dead_patch_embed=True)
    instance.add_dynamic_partitions(CHECKPOINT_PARTITIONS_NAME, [key])
    result = run(home, BENCHMARK_JOB, evaluation_key(TASK, key), instance)
    assert not result.success
    assert check_verdicts(result) == {"encoder_shapes_consistent": True, "embeddings_finite_not_collapsed": False}
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert evaluation.metadata["mean_cosine"].value > 0.9999
    assert materialized(instance, "embeddings", "probe", "scores", "metrics_db") == {
        "embeddings": True, "probe": False, "scores": False, "metrics_db": False}
    assert not load_settings(home).layout.probes_dir(TASK, key).exists()
    assert scores_rows(home, key) == 0


# --------------------------------------------------------------------------------------------------- scores


def test_scores_outside_the_unit_interval_stop_the_benchmark_before_duckdb(home, instance, monkeypatch):
    """A planted scoring bug reports percentages (x 100): the scores check fails and nothing reaches DuckDB,
    while the same run with the bug removed records the scores (the control)."""
    key = write_encoder(home, "alive")
    instance.add_dynamic_partitions(CHECKPOINT_PARTITIONS_NAME, [key])
    original = steps.score_probes

    def in_percent(directory, probes):
        scores, class_scores = original(directory, probes)
        return scores.assign(value=scores["value"] * 100), class_scores

    with monkeypatch.context() as planted:
        planted.setattr(steps, "score_probes", in_percent)
        result = run(home, BENCHMARK_JOB, evaluation_key(TASK, key), instance)
    assert not result.success
    assert check_verdicts(result) == {"encoder_shapes_consistent": True, "embeddings_finite_not_collapsed": True,
                                      "scores_within_unit_interval": False}
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert evaluation.metadata["out_of_range"].value > 0
    assert materialized(instance, "scores", "metrics_db") == {"scores": True, "metrics_db": False}
    assert scores_rows(home, key) == 0

    fixed = run(home, BENCHMARK_JOB, evaluation_key(TASK, key), instance)
    assert fixed.success and materialized(instance, "metrics_db") == {"metrics_db": True}
    assert scores_rows(home, key) > 0
