"""Corrupted weights are refused, never benchmarked (issue #10, cases 4 and 7b): real Orbax steps written by the
project's savers, real flipped bits in their real array files, a real encoder job on a real Dagster instance, and a
real resume with another model size through the CLI's user-error path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from flax import nnx

from birdassets.checkpoints import CheckpointError
from birdassets.checkpoints.integrity import MANIFEST_FILE, MANIFEST_FLAG
from birdassets.cli.errors import run_command
from birdassets.defs.partitions import CHECKPOINT_PARTITIONS_NAME, evaluation_key
from birdassets.defs.runs import step_failure_messages
from birdassets.definitions import ENCODER_JOB, build_definitions
from birdassets.models.registry import load_encoder
from birdassets.models.vit import ViTConfig, ViTEncoder, encoder_params
from birdassets.models.vit.family import restore_encoder, save_checkpoint
from birdassets.settings import load_settings
from birdassets.train.saver import RunCheckpointer

CONFIG = ViTConfig(frames=40, mels=32, dim=32, depth=1, heads=4)
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """Run ``tiny`` with finalized step 0, saved by the project's saver (copied per test)."""
    run_dir = tmp_path_factory.mktemp("saved") / "tiny"
    save_checkpoint(run_dir, 0, ViTEncoder(CONFIG, rngs=nnx.Rngs(0)), CONFIG)
    return run_dir


def array_file(step_dir: Path) -> Path:
    """The largest OCDBT data file of the step: the one holding the weights' bytes."""
    return max((step_dir / "state").rglob("d/*"), key=lambda path: path.stat().st_size)


def flip_bit(path: Path, offset: int, bit: int = 4) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def nan_bytes(step_dir: Path, count: int = 16) -> dict[str, int]:
    """Overwrite ``count`` bytes of the array file with 0xff where, once decoded (the chunks are zstd-compressed),
    that gives NaN/inf weights; return Orbax's own ``{parameter: non-finite count}``."""
    path = array_file(step_dir)
    original = path.read_bytes()
    for offset in range(len(original) // 3, len(original) - count, 997):
        data = bytearray(original)
        data[offset:offset + count] = b"\xff" * count
        path.write_bytes(bytes(data))
        try:
            truth = non_finite_in_orbax(step_dir)
        except Exception:  # this corruption breaks the compressed stream itself: try another offset
            truth = {}
        if truth:
            return truth
    raise AssertionError(f"no offset of {path} decodes to non-finite weights")


def make_foreign(step_dir: Path) -> None:
    """The step as a checkpoint written elsewhere: no checksum manifest, none announced."""
    (step_dir / MANIFEST_FILE).unlink()
    meta = json.loads((step_dir / "_CHECKPOINT_METADATA").read_text())
    meta["custom_metadata"].pop(MANIFEST_FLAG)
    (step_dir / "_CHECKPOINT_METADATA").write_text(json.dumps(meta))


def test_the_saver_writes_a_manifest_of_every_state_file(saved):
    manifest = json.loads((saved / "0" / MANIFEST_FILE).read_text())
    files = sorted(path.relative_to(saved / "0").as_posix() for path in (saved / "0" / "state").rglob("*")
                   if path.is_file())
    assert manifest["algorithm"] == "sha256" and sorted(manifest["files"]) == files
    assert array_file(saved / "0").relative_to(saved / "0").as_posix() in manifest["files"]


def test_one_flipped_bit_in_an_array_file_is_refused_naming_the_file(saved, tmp_path):
    run_dir = shutil.copytree(saved, tmp_path / "root" / "tiny")
    target = array_file(run_dir / "0")
    flip_bit(target, target.stat().st_size // 2)
    with pytest.raises(CheckpointError, match=f"{target} does not match its checksum .*refusing to restore"):
        restore_encoder(run_dir, 0)
    with pytest.raises(CheckpointError, match=f"{target} does not match its checksum"):
        load_encoder([tmp_path / "root"], "tiny@0")


def test_a_foreign_checkpoint_with_nan_weights_is_refused_naming_the_layer_and_count(saved, tmp_path):
    run_dir = shutil.copytree(saved, tmp_path / "tiny")
    make_foreign(run_dir / "0")
    restore_encoder(run_dir, 0)  # intact and foreign: restored
    truth = nan_bytes(run_dir / "0")  # what Orbax itself hands back, counted here
    with pytest.raises(CheckpointError) as info:
        restore_encoder(run_dir, 0)
    named = ", ".join(f"{name} ({count})" for name, count in sorted(truth.items(), key=lambda kv: (-kv[1], kv[0])))
    assert str(info.value) == (f"checkpoint {run_dir / '0'}: {sum(truth.values())} non-finite weights (NaN/inf) in "
                               f"{len(truth)} parameter(s): {named}; refusing to restore")


def non_finite_in_orbax(step_dir: Path) -> dict[str, int]:
    """``{encoder parameter: NaN/inf count}`` of the step's weights as Orbax restores them (no birdassets code)."""
    import jax
    import orbax.checkpoint as ocp

    state = ocp.PyTreeCheckpointer().restore(step_dir / "state")
    leaves = jax.tree_util.tree_leaves_with_path(state["encoder"])
    counts = {".".join(str(getattr(k, "key", k)) for k in path): int((~np.isfinite(np.asarray(v))).sum())
              for path, v in leaves}
    return {name: count for name, count in counts.items() if count}


def test_the_encoder_job_stops_on_corrupted_weights_and_its_check_names_the_layer(saved, tmp_path):
    home = tmp_path / "home"
    for run in ("flipped", "later"):
        shutil.copytree(saved, home / "runs" / run)
    (home / "birdassets.toml").write_text(f'checkpoint_roots = ["{home / "runs"}"]\npretrained = []\n')
    flipped = array_file(home / "runs" / "flipped" / "0")
    flip_bit(flipped, 100)
    settings = load_settings(home)
    defs, task = build_definitions(settings), settings.task_names[0]  # the encoder is restored per task x checkpoint
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        instance.add_dynamic_partitions(CHECKPOINT_PARTITIONS_NAME, ["flipped@0", "later@0"])
        job = defs.resolve_job_def(ENCODER_JOB)
        result = job.execute_in_process(partition_key=evaluation_key(task, "flipped@0"), instance=instance,
                                        run_config=QUIET, raise_on_error=False)
        assert not result.success
        (message,) = step_failure_messages(result)  # the asset itself refuses: nothing downstream runs
        assert message.startswith("encoder: CheckpointError")
        assert f"checkpoint {flipped.parents[3]}: {flipped} does not match its checksum (sha256 " in message
        # a checkpoint that was good when its encoder was restored, corrupted since: the check alone names it
        later = evaluation_key(task, "later@0")
        assert job.execute_in_process(partition_key=later, instance=instance, run_config=QUIET).success
        make_foreign(home / "runs" / "later" / "0")
        truth = nan_bytes(home / "runs" / "later" / "0")
        only_check = job.execute_in_process(partition_key=later, instance=instance, run_config=QUIET,
                                            raise_on_error=False, op_selection=["encoder_encoder_shapes_consistent"])
    (message,) = step_failure_messages(only_check)
    assert message.startswith("encoder_encoder_shapes_consistent: Failure")
    assert "blocking check encoder_shapes_consistent on encoder failed: checkpoint " in message
    (evaluation,) = only_check.get_asset_check_evaluations()  # recorded as a failed check, with the reason
    assert not evaluation.passed and "non-finite weights" in evaluation.description
    name, count = max(truth.items(), key=lambda kv: kv[1])
    assert f"{sum(truth.values())} non-finite weights (NaN/inf) in {len(truth)} parameter(s): {name} ({count})" in message


def test_resuming_with_another_model_size_is_one_line_naming_the_parameter_and_shapes(tmp_path, capsys):
    small, wide = CONFIG, ViTConfig(frames=40, mels=32, dim=64, depth=1, heads=4)
    params = {"encoder": encoder_params(ViTEncoder(small, rngs=nnx.Rngs(0))), "objective": {}, "probe": {}}
    saver = RunCheckpointer(tmp_path / "run")
    saver.save(0, params, {"count": np.zeros((), np.int32)}, small, {})
    saver.close()
    assert (tmp_path / "run" / "0" / MANIFEST_FILE).is_file()  # written after Orbax's asynchronous finalize
    template = {"encoder": encoder_params(ViTEncoder(wide, rngs=nnx.Rngs(0))), "objective": {}, "probe": {}}
    resumed = RunCheckpointer(tmp_path / "run")

    status = run_command("train", lambda: resumed.restore(0, template, {"count": np.zeros((), np.int32)}))
    assert status == 2
    err = capsys.readouterr().err
    assert err == (f"birdassets train: cannot resume run {tmp_path / 'run'} from step 0: parameter encoder.blocks.0.attn.key.bias "
                   "was saved with shape (4, 8) but this run asks for (4, 16) (another model size or "
                   "objective?); train into a new run folder, or use the run's own settings\n")
    same = resumed.restore(0, params, {"count": np.zeros((), np.int32)})[0]
    np.testing.assert_array_equal(same["encoder"]["cls_token"], params["encoder"]["cls_token"])
    resumed.close()
