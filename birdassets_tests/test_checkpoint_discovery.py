"""Discovery that one bad folder cannot stop (issue #10, case 3): real Orbax steps written by the project's
saver, real symlink loops, real broken metadata files, and the real checkpoint sensor on a real Dagster instance."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import dagster as dg
import pytest
from flax import nnx

from birdassets.checkpoints import CheckpointError, resolve_checkpoint, scan_checkpoints
from birdassets.defs.partitions import CHECKPOINT_PARTITIONS_NAME
from birdassets.defs.resources import BirdassetsHome
from birdassets.definitions import build_definitions
from birdassets.models.registry import load_encoder
from birdassets.models.vit import ViTConfig, ViTEncoder
from birdassets.models.vit.family import save_checkpoint
from birdassets.settings import load_settings

CONFIG = ViTConfig(frames=40, mels=32, dim=32, depth=1, heads=4)
LOOP = "Too many levels of symbolic links"


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A run folder ``good`` with finalized steps 0 and 100, saved by the project's saver (copied per test)."""
    run_dir = tmp_path_factory.mktemp("saved") / "good"
    for step in (0, 100):
        save_checkpoint(run_dir, step, ViTEncoder(CONFIG, rngs=nnx.Rngs(step)), CONFIG)
    return run_dir


def root_with(good: Path, root: Path, *runs: str) -> Path:
    for run in runs:
        shutil.copytree(good, root / run, symlinks=True)
    return root


def reasons(found) -> dict[str, str]:
    return {str(skipped.path): skipped.reason for skipped in found.skipped}


def test_symlink_loops_are_skipped_with_their_reason_and_the_good_runs_are_found(good, tmp_path):
    root = root_with(good, tmp_path / "root", "good", "looped")
    os.symlink("7", root / "looped" / "7")  # a step folder that is a loop onto itself
    os.symlink("selfloop", root / "selfloop")  # a run folder that is a loop
    found = scan_checkpoints([root])
    assert found.keys == ["good@0", "good@100", "looped@0", "looped@100"]
    assert reasons(found) == {str(root / "looped" / "7"): f"cannot be read: {LOOP}",
                              str(root / "selfloop"): f"cannot be read: {LOOP}"}


def test_the_sensor_registers_good_checkpoints_next_to_a_looped_folder_and_logs_the_skip(good, tmp_path, capfd):
    home = tmp_path / "home"
    root = root_with(good, home / "runs", "good")
    os.makedirs(root / "looped")
    os.symlink("5", root / "looped" / "5")
    (home / "birdassets.toml").write_text(  # the same root twice, once through "..": one root, no duplicate keys
        f'checkpoint_roots = ["{root}", "{root}/../runs"]\npretrained = []\n')
    defs = build_definitions(load_settings(home))
    sensor = defs.resolve_sensor_def("checkpoint_sensor")
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        context = dg.build_sensor_context(instance=instance, definitions=defs,
                                          resources={"birdassets": BirdassetsHome(home=str(home))})
        result = sensor(context)
        (added,) = result.dynamic_partitions_requests
        instance.add_dynamic_partitions(CHECKPOINT_PARTITIONS_NAME, list(added.partition_keys))  # as the daemon
        assert instance.get_dynamic_partitions(CHECKPOINT_PARTITIONS_NAME) == ["good@0", "good@100"]
    assert result.run_requests == []  # no task is built yet: automation carries each checkpoint once one is
    assert f"checkpoint folder skipped: {root / 'looped' / '5'}: cannot be read: {LOOP}" in capfd.readouterr().err


def test_the_same_run_name_in_two_roots_is_refused_naming_both_paths(good, tmp_path):
    first, second = root_with(good, tmp_path / "a", "good", "only-a"), root_with(good, tmp_path / "b", "good")
    found = scan_checkpoints([first, second, first / ".." / "a"])
    assert found.keys == ["only-a@0", "only-a@100"]
    both = f"({first / 'good'} and {second / 'good'})"
    assert reasons(found) == {str(first / "good"): f"run name 'good' is in several checkpoint roots {both}; run names "
                                                   "must be unique across roots: rename one",
                              str(second / "good"): f"run name 'good' is in several checkpoint roots {both}; run "
                                                    "names must be unique across roots: rename one"}
    with pytest.raises(CheckpointError, match=f"several checkpoint roots: {first / 'good'} and {second / 'good'}"):
        resolve_checkpoint([first, second], "good@0")


def test_a_step_folder_whose_metadata_names_another_step_is_skipped(good, tmp_path):
    root = root_with(good, tmp_path / "root", "good")
    shutil.copytree(root / "good" / "100", root / "good" / "7")
    found = scan_checkpoints([root])
    assert found.keys == ["good@0", "good@100"]
    assert reasons(found) == {str(root / "good" / "7"): "its metadata says step 100 but the folder is named 7 "
                                                        "(a renamed or copied step)"}
    with pytest.raises(CheckpointError, match="good/7\\): its metadata says step 100 but the folder is named 7"):
        load_encoder([root], "good@7")


@pytest.mark.parametrize("key", ["/etc@0", "../outside@0", "..@0", "a/../../outside@0", "a\\b@0"])
def test_keys_never_resolve_outside_the_roots(good, tmp_path, key):
    root_with(good, tmp_path, "outside")  # a real run next to the root, reachable by a path key
    (tmp_path / "root").mkdir()
    with pytest.raises(CheckpointError, match="forbidden characters|not a folder name"):
        resolve_checkpoint([tmp_path / "root"], key)


def test_a_run_or_step_symlinked_out_of_its_root_is_refused(good, tmp_path):
    outside = root_with(good, tmp_path / "elsewhere", "good")
    root = root_with(good, tmp_path / "root", "inside")
    os.symlink(outside / "good", root / "linked")
    os.symlink(outside / "good" / "100", root / "inside" / "200")
    found = scan_checkpoints([root])
    assert found.keys == ["inside@0", "inside@100"]
    assert reasons(found)[str(root / "linked")].startswith(f"resolves to {outside / 'good'}, outside the checkpoint root")
    assert "outside its run folder; refused" in reasons(found)[str(root / "inside" / "200")]
    with pytest.raises(CheckpointError, match=f"linked@0.*resolves to {outside / 'good'}/0, outside the checkpoint root"):
        resolve_checkpoint([root], "linked@0")


@pytest.mark.parametrize("content, problem", [("1", "holds a JSON int, not an object"),
                                              ('{"tree_metadata": ', "is not valid JSON"),
                                              ('{"tree_metadata": 3}', "has no tree_metadata object")])
def test_broken_state_metadata_is_skipped_naming_the_file(good, tmp_path, content, problem):
    root = root_with(good, tmp_path / "root", "good")
    broken = root / "good" / "100" / "state" / "_METADATA"
    broken.write_text(content)
    found = scan_checkpoints([root])
    assert found.keys == ["good@0"]
    (reason,) = reasons(found).values()
    assert reason.startswith(f"broken metadata: {broken} ") and problem in reason
    with pytest.raises(CheckpointError, match=f"good@100.*{broken}"):
        load_encoder([root], "good@100")
    assert json.loads((root / "good" / "0" / "state" / "_METADATA").read_text())["tree_metadata"]  # untouched
