"""``birdassets train`` has one flag per ``TrainConfig`` field, typed as annotated, and the values reach the config."""

from __future__ import annotations

import dataclasses

import pytest

from birdassets.cli import build_parser
from birdassets.cli.train import attribute_docs, train_config
from birdassets.train.config import TrainConfig, TrainConfigError


def train_flags() -> dict[str, object]:
    """``{dest: argparse action}`` of the ``train`` subcommand."""
    (commands,) = [a for a in build_parser()._actions if a.dest == "command"]
    return {action.dest: action for action in commands.choices["train"]._actions}


def test_every_field_has_a_documented_flag():
    flags = train_flags()
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    assert set(fields) <= set(flags)
    assert set(flags) - set(fields) == {"help", "config", "no_progress"}
    for name in fields:
        assert flags[name].option_strings == ["--" + name.replace("_", "-")]
        assert flags[name].default is None  # unset flags keep the config file's value
    assert set(attribute_docs(TrainConfig)) == set(fields)  # every field is documented (the flag's help)
    assert "online linear probe" in flags["probe_lr"].help and "(default: 0.01)" in flags["probe_lr"].help


def test_flags_reach_the_config_with_their_types(tmp_path):
    parser = build_parser()
    config = train_config(parser.parse_args(["train", "--probe-lr", "0.003", "--shuffle-buffer", "7",
                                             "--max-checkpoints", "2", "--devices", "1", "--precision", "bfloat16"]))
    assert (config.probe_lr, config.shuffle_buffer, config.max_checkpoints, config.devices) == (0.003, 7, 2, 1)
    assert type(config.shuffle_buffer) is int and type(config.probe_lr) is float and config.precision == "bfloat16"
    assert (config.lr, config.task) == (1e-3, "demo-noisy")  # unset flags: TrainConfig's defaults

    file = tmp_path / "train.toml"
    file.write_text('task = "demo-clear"\nprobe_lr = 0.5\nshuffle_buffer = 64\n')
    config = train_config(parser.parse_args(["train", "--config", str(file), "--shuffle-buffer", "8"]))
    assert (config.task, config.probe_lr, config.shuffle_buffer) == ("demo-clear", 0.5, 8)  # file, file, flag

    with pytest.raises(SystemExit):  # argparse: not an int
        parser.parse_args(["train", "--shuffle-buffer", "many"])
    with pytest.raises(TrainConfigError, match="objective 'jepa'"):
        train_config(parser.parse_args(["train", "--objective", "jepa"]))
