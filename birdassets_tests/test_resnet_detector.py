"""The ResNet18 call detector: topology, BatchNorm bookkeeping, training, exact resume and its checkpoints.

Training runs a width-4 ResNet18 on a real mel dataset (``orcahello`` preset, 20 kHz): 16 four-second recordings,
the even ones with a harmonic "call" over noise (labelled ``call``), the odd ones noise only -> 48 windows.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from birdassets.checkpoints import CheckpointError
from birdassets.checkpoints.orbax_io import read_metadata, save_step
from birdassets.datasets.mel_tfds import MelDataset, build_mel_dataset
from birdassets.frontends.presets import get_preset
from birdassets.models.registry import load_encoder, validate_encoder
from birdassets.models.resnet.family import n_params, restore_resnet
from birdassets.models.resnet.network import ResNet18, ResNetConfig, model_state
from birdassets.sources.manifest import Manifest, file_sha256
from birdassets.train.config import TrainConfig
from birdassets.train.detector_loop import create_detector_state, make_detector_step, train_detector
from birdassets.train.loop import HISTORY
from birdassets_tests.conftest import write_recording

RATE = 20_000
BASE = TrainConfig(task="calls", model="resnet18", width=4, num_steps=20, warmup_steps=2, batch_size=8, log_every=5,
                   checkpoint_every=10, shuffle_buffer=64, seed=0)


def orca_config(width: int) -> ResNetConfig:
    return ResNetConfig(width=width, preset="orcahello", sample_rate=RATE, clip_s=2.0, frames=312, mels=256)


def recording(i: int) -> tuple[np.ndarray, bool]:
    """4 s at 20 kHz: noise, plus (even ``i``) a 4-harmonic stack on f0 = 700 + 50 i Hz."""
    t = np.arange(4 * RATE) / RATE
    audio = 0.05 * np.random.default_rng(i).standard_normal(len(t))
    call = i % 2 == 0
    if call:
        f0 = 700 + 50 * i
        audio += sum(0.2 / k * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 5))
    return audio.astype(np.float32), call


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> MelDataset:
    root = tmp_path_factory.mktemp("calls")
    rows = []
    for i in range(16):
        audio, call = recording(i)
        path = write_recording(root / f"r{i}.wav", audio, RATE)
        rows.append(dict(recording_id=f"r{i}", path=str(path), duration_s=4.0, sample_rate=RATE, channels=1,
                         primary_label="call" if call else "", labels=["call"] if call else [], split="train",
                         sha256=file_sha256(path)))
    return build_mel_dataset(Manifest.from_rows(rows, classes=("call",)), get_preset("orcahello"), root / "mel")


@pytest.fixture(scope="module")
def straight(dataset, tmp_path_factory):
    return train_detector(BASE, dataset, tmp_path_factory.mktemp("runs") / "straight", progress=False)


def test_standard_width_has_torchvision_resnet18_parameter_count_with_one_input_channel_and_two_classes():
    # torchvision resnet18: 11,689,512 parameters; conv1 with 1 input channel instead of 3 drops 2 * 64 * 7 * 7
    # = 6,272; fc to 2 classes instead of 1000 drops 998 * 512 + 998 = 511,974.
    assert n_params(orca_config(64)) == 11_689_512 - 6_272 - 511_974 == 11_171_266
    assert orca_config(64).dim == 512


def test_feature_map_strides_follow_resnet18_and_pooling_gives_eight_width_features():
    model = ResNet18(orca_config(4), rngs=nnx.Rngs(0))
    model.eval()
    x = jnp.zeros((2, 312, 256))
    # conv1 stride 2 (pad 3): 156 x 128; max-pool stride 2 (pad 1): 78 x 64; stages 2-4 halve (ceil): 39x32,
    # 20x16, 10x8.
    h = nnx.relu(model.bn1(model.conv1(x[..., None])))
    assert h.shape == (2, 156, 128, 4)
    from birdassets.models.resnet.network import max_pool

    h = max_pool(h)
    assert h.shape == (2, 78, 64, 4)
    sizes = []
    for stage in range(4):
        for block in getattr(model, f"layer{stage + 1}"):
            h = block(h)
        sizes.append(h.shape[1:])
    assert sizes == [(78, 64, 4), (39, 32, 8), (20, 16, 16), (10, 8, 32)]
    assert model.features(x).shape == (2, 32) and model(x).shape == (2, 2)


def test_one_step_moves_running_statistics_by_torchvision_momentum_and_adamw_leaves_them_alone(dataset):
    state = create_detector_state(BASE, orca_config(4))
    model = nnx.merge(state.graphdef, nnx.State(nnx.restore_int_paths(state.params["encoder"])))
    mel = jnp.asarray(dataset.arrays("train")[0][:8])
    batch = {"mel": mel, "labels": jnp.zeros((8, 1))}
    conv1 = model.conv1(mel[..., None])  # [8, 156, 128, 4]
    expected_mean = 0.1 * np.asarray(conv1.mean(axis=(0, 1, 2)))  # running mean starts at 0
    expected_var = 0.9 * 1.0 + 0.1 * np.asarray(conv1.var(axis=(0, 1, 2)))  # running var starts at 1
    params, _, _ = make_detector_step(state, BASE)(state.params, state.opt_state, batch, 0)
    bn1 = params["encoder"]["bn1"]
    np.testing.assert_allclose(np.asarray(bn1["mean"]), expected_mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(bn1["var"]), expected_var, rtol=1e-3)


def test_detector_learns_the_calls_and_its_checkpoints_restore_through_the_registry(dataset, straight):
    history = [json.loads(line) for line in (straight.run_dir / HISTORY).read_text().splitlines()]
    assert [h["step"] for h in history] == [0, 5, 10, 15, 20]
    assert history[-1]["loss"] < 0.5 * history[1]["loss"]
    assert history[-1]["val_ap"] == 1.0 and history[-1]["val_accuracy"] == 1.0
    metadata = read_metadata(straight.run_dir, 20)
    assert metadata["family"] == "resnet18" and metadata["objective"] == "softmax-ce"
    roots = [straight.run_dir.parent]
    assert validate_encoder(roots, "straight@20")["dim"] == 32
    loaded = load_encoder(roots, "straight@20", batch_size=5)
    mel, labels = dataset.arrays("train")
    probabilities = loaded.encoder.probabilities(mel)  # [48, 2], 5 per jitted call (last call padded)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    assert np.mean((probabilities[:, 1] > 0.5) == (labels[:, 0] == 1)) == 1.0
    assert loaded.encoder.embed(mel[:7]).shape == (7, 32) and loaded.encoder.classes == ("no_call", "call")


class Interrupted(Exception):
    """Raised from the ``log`` callback to stop a run mid-way, as Ctrl-C or a pre-emption would."""


def test_an_encoder_reads_only_tasks_of_its_own_preset(straight):
    from birdassets.models.base import WaveformSpec
    from birdassets.steps import reads_other_preset

    detector = load_encoder([straight.run_dir.parent], "straight@20")  # trained on orcahello windows
    assert reads_other_preset(detector, get_preset("birdclef2025"))
    assert not reads_other_preset(detector, get_preset("orcahello"))

    class Waveform:  # BirdNET-like: takes raw audio, so any task
        encoder = type("E", (), {"input_spec": WaveformSpec("birdnet-48k-3s", 48_000, 3.0)})()

    assert not reads_other_preset(Waveform(), get_preset("birdclef2025"))


def test_interrupted_run_resumes_bit_for_bit(dataset, straight, tmp_path):
    def stop_at_step_15(line: str) -> None:
        if json.loads(line)["step"] == 15:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_detector(BASE, dataset, tmp_path / "resumed", log=stop_at_step_15, progress=False)
    resumed = train_detector(BASE, dataset, tmp_path / "resumed", progress=False)
    assert resumed.start_step == 10 and resumed.final_step == 20
    assert resumed.history == straight.history  # losses, gradient norms and validation AP at every logged step
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(straight.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # running statistics included


def test_a_checkpoint_whose_weights_disagree_with_its_config_is_refused_naming_the_parameter(tmp_path):
    wide = model_state(ResNet18(orca_config(8), rngs=nnx.Rngs(0)))
    save_step(tmp_path / "liar", 1, "resnet18", {"encoder": wide}, config=orca_config(4).to_dict())
    with pytest.raises(CheckpointError, match=r"bn1\.bias was saved with shape \(8,\).*width 4.*\(4,\)"):
        restore_resnet(tmp_path / "liar", 1)


def test_a_task_with_several_classes_is_refused(tmp_path, dataset):
    rows = dataset.windows()
    assert len(dataset.classes()) == 1 and len(rows) == 48
    from birdassets.train.detector_loop import detector_config

    class TwoClasses:
        root = Path("/data/birds")

        @staticmethod
        def classes():
            return ("a", "b")

    with pytest.raises(ValueError, match="/data/birds: a call detector trains on a task with one class.*has 2"):
        detector_config(BASE, TwoClasses())


# --------------------------------------------------------------------------- detection


def test_target_call_resolves_to_call_not_to_the_call_part_of_no_call():
    from birdassets.detection import resolve_labels

    assert resolve_labels(("no_call", "call"), ["call"]).tolist() == [1]
    assert resolve_labels(("no_call", "call"), ["no_call"]).tolist() == [0]
    assert resolve_labels(("Orcinus orca_Killer Whale", "x_y"), ["killer whale"]).tolist() == [0]


def long_recording(path: Path, call_from_s: float | None, seconds: float = 10.0) -> Path:
    """Noise, plus the training calls' 4-harmonic stack (f0 900 Hz) from ``call_from_s`` for 4 s."""
    t = np.arange(int(seconds * RATE)) / RATE
    audio = 0.05 * np.random.default_rng(99).standard_normal(len(t))
    if call_from_s is not None:
        inside = (t >= call_from_s) & (t < call_from_s + 4.0)
        audio += inside * sum(0.2 / k * np.sin(2 * np.pi * k * 900.0 * t) for k in range(1, 5))
    return write_recording(path, audio.astype(np.float32), RATE)


def test_orcahello_predicts_the_windows_holding_the_call_and_the_global_decision(straight, tmp_path):
    from birdassets.detection import OrcaHello

    loaded = load_encoder([straight.run_dir.parent], "straight@20")
    detector = OrcaHello(loaded.encoder, threshold=0.5, min_num_positive_calls_threshold=3)
    calling = detector.predict(long_recording(tmp_path / "calling.wav", 4.0))
    assert calling.start_s.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]  # 2 s every 1 s, whole only
    assert calling.local_predictions[[0, 1, 2]].tolist() == [0, 0, 0]  # windows 0-2 .. 2-4 s: noise only
    assert calling.local_predictions[[4, 5, 6]].tolist() == [1, 1, 1]  # 4-6 .. 6-8 s: inside the call
    assert calling.global_prediction == 1
    positive = calling.confidence[calling.confidence > 0.5]
    assert calling.global_confidence == pytest.approx(positive.mean())
    quiet = detector.predict(long_recording(tmp_path / "quiet.wav", None))
    assert quiet.global_prediction == 0 and quiet.local_predictions.sum() < 3


def test_detect_cli_with_a_detector_checkpoint_writes_per_window_rows(straight, tmp_path, cli, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "birdassets.toml").write_text(f'checkpoint_roots = ["{straight.run_dir.parent}"]\npretrained = []\n')
    folder = tmp_path / "season"
    long_recording(folder / "a.wav", 4.0)
    long_recording(folder / "b.wav", None)
    (folder / "broken.wav").write_bytes(b"not audio")
    result = cli("detect", str(folder), "--encoder", "straight@20", "--target", "call", "--out",
                 str(tmp_path / "out.csv"))
    assert result.returncode == 2  # one unreadable file: reported, the others written
    assert "broken.wav" in result.stderr and "2 recording(s), 1 with a detection of resnet18@straight@20:call" in result.stdout
    import pandas as pd

    rows = pd.read_csv(tmp_path / "out.csv")
    assert len(rows) == 18 and rows.groupby("file")["global_prediction"].first().tolist() == [1, 0]


# --------------------------------------------------------------------------- export


@pytest.fixture(scope="module")
def exported(straight, tmp_path_factory):
    """``birdassets export straight@20`` into a folder, from a home whose checkpoint root holds the run."""
    import os

    from birdassets.cli import main

    home = tmp_path_factory.mktemp("export_home")
    (home / "birdassets.toml").write_text(f'checkpoint_roots = ["{straight.run_dir.parent}"]\npretrained = []\n')
    out = tmp_path_factory.mktemp("exports") / "detector"
    before = os.environ.get("BIRDASSETS_HOME")
    os.environ["BIRDASSETS_HOME"] = str(home)
    try:
        assert main(["export", "straight@20", "--out", str(out), "--licence", "CC-BY-4.0"]) == 0
        assert main(["export", "straight@20", "--out", str(out), "--licence", "CC-BY-4.0"]) == 0  # idempotent
    finally:
        os.environ.pop("BIRDASSETS_HOME") if before is None else os.environ.__setitem__("BIRDASSETS_HOME", before)
    return out, home


def test_export_writes_a_self_describing_folder_and_one_duckdb_row(exported):
    out, home = exported
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors", "model.tflite",
                                                     "preprocessor_config.json"]
    config = json.loads((out / "config.json").read_text())
    assert config["classes"] == ["no_call", "call"] and config["architecture"]["width"] == 4
    assert config["decision_rule"]["threshold"] == 0.5 and config["decision_rule"]["min_num_positive_calls"] == 3
    preprocessor = json.loads((out / "preprocessor_config.json").read_text())
    preset = preprocessor["preset"]  # OrcaHello's published frontend, written out by hand here
    assert (preset["sample_rate"], preset["n_fft"], preset["hop_length"], preset["n_mels"]) == (20000, 2560, 256, 256)
    assert (preset["f_max"], preset["top_db"], preset["model_input"]["frames"]) == (10000.0, 100.0, 312)
    assert preset["filterbank_rate"] == 16000 and "built for 16000 Hz" in preprocessor["notes"][0]
    card = (out / "README.md").read_text()
    assert config["lineage_hash"] in card and "CC-BY-4.0" in card and "val_ap 1.0000" in card
    import hashlib

    assert config["lineage_hash"] == hashlib.sha256(json.dumps(config["lineage"], sort_keys=True).encode()).hexdigest()
    from birdassets.layout import Layout
    from birdassets.store import query_readonly

    rows = query_readonly(Layout(home).db_path, "select * from exports")
    assert len(rows) == 1 and rows["checkpoint"][0] == "straight@20"
    assert rows["lineage_hash"][0] == config["lineage_hash"]
    assert rows["size_bytes"][0] == sum(p.stat().st_size for p in out.iterdir())


def test_exported_folder_reloads_with_the_checkpoints_outputs_and_tflite_within_1e5(dataset, straight, exported):
    from birdassets.export.bundle import read_bundle
    from birdassets.export.tflite import TFLiteDetector

    out, _ = exported
    bundle = read_bundle(out)
    mel, _ = dataset.arrays("train")
    reference = load_encoder([straight.run_dir.parent], "straight@20").encoder
    np.testing.assert_allclose(bundle.model.probabilities(mel), reference.probabilities(mel), atol=1e-6, rtol=0)
    np.testing.assert_allclose(bundle.model.embed(mel), reference.embed(mel), atol=1e-6, rtol=0)
    tflite = TFLiteDetector(bundle.tflite_path, name="tflite", classes=bundle.model.classes,
                            input_spec=bundle.model.input_spec, dim=bundle.model.dim)
    probabilities, features = tflite.run(mel)
    assert np.abs(probabilities - reference.probabilities(mel)).max() < 1e-5
    assert np.abs(features - reference.embed(mel)).max() < 1e-3 * max(1.0, np.abs(features).max())


def test_a_fresh_process_detects_with_only_the_folder_and_matches_the_checkpoint(straight, exported, tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    from birdassets.detection import OrcaHello

    folder = tmp_path / "handed_over"
    shutil.copytree(exported[0], folder)
    recordings = tmp_path / "season"
    long_recording(recordings / "a.wav", 4.0)
    long_recording(recordings / "b.wav", None)
    env = {k: v for k, v in os.environ.items() if k != "BIRDASSETS_HOME"}
    env["HOME"] = str(tmp_path / "empty_home")  # no ~/.birdassets either
    done = subprocess.run([sys.executable, "-m", "birdassets.cli", "detect", str(recordings), "--encoder", str(folder),
                           "--target", "call", "--out", str(tmp_path / "out.json")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "empty_home" / ".birdassets").exists()
    result = json.loads((tmp_path / "out.json").read_text())
    detector = OrcaHello(load_encoder([straight.run_dir.parent], "straight@20").encoder)
    for recording in result["recordings"]:
        expected = detector.predict(recording["file"])
        np.testing.assert_allclose(recording["local_confidences"], expected.confidence, atol=1e-6, rtol=0)
        assert recording["global_prediction"] == expected.global_prediction
    assert [r["global_prediction"] for r in result["recordings"]] == [1, 0]


@pytest.mark.parametrize("damage, message", [
    ("missing", "not an exported model folder (missing model.safetensors)"),
    ("preset", "do not give its recorded preset_hash"),
    ("width", "weight bn1.bias has shape (4,) but the architecture (width 8) gives (8,)"),
])
def test_a_damaged_export_is_refused_in_one_line_naming_the_folder(exported, tmp_path, cli, damage, message):
    import shutil

    folder = tmp_path / "damaged"
    shutil.copytree(exported[0], folder)
    if damage == "missing":
        (folder / "model.safetensors").unlink()
    elif damage == "preset":
        document = json.loads((folder / "preprocessor_config.json").read_text())
        document["preset"]["f_max"] = 8000.0
        (folder / "preprocessor_config.json").write_text(json.dumps(document))
    else:
        config = json.loads((folder / "config.json").read_text())
        config["architecture"]["width"] = 8
        (folder / "config.json").write_text(json.dumps(config))
    (tmp_path / "season").mkdir()
    long_recording(tmp_path / "season" / "a.wav", None)
    result = cli("detect", str(tmp_path / "season"), "--encoder", str(folder), "--target", "call", "--out",
                 str(tmp_path / "out.json"))
    assert result.returncode == 2
    assert message in result.stderr and str(folder) in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bench_detector_times_jax_and_tflite_side_by_side(exported, cli):
    result = cli("bench", "detector", "--encoder", str(exported[0]), "--seconds", "10", "--repeats", "1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"export:{exported[0].name} on 10 s of audio (2 s windows every 1 s)")
    rows = {line.split()[0]: line.split() for line in lines[3:] if not line.startswith("(")}
    assert set(rows) == {"jax", "tflite"} and rows["jax"][1] == rows["tflite"][1] == "9"  # windows of 10 s
    assert float(rows["jax"][-1]) == 1.0  # x_first: the first runtime against itself
