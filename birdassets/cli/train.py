"""``birdassets train``: train (or resume) an encoder and write Orbax checkpoints.

Its flags are :class:`~birdassets.train.config.TrainConfig`'s fields (``probe_lr`` -> ``--probe-lr``, typed as
annotated), so a new field is a new flag. Flags override ``--config FILE``; unset flags keep the file's value.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from pathlib import Path

from birdassets.cli.errors import UserError
from birdassets.train.config import RESNET, RESNET_FIELDS, TIDHY, TIDHY_FIELDS


def config_flags() -> list[tuple[str, type]]:
    """``(field name, type)`` of every :class:`TrainConfig` field; ``int | None`` gives ``int``."""
    from birdassets.train.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    flags = []
    for field in dataclasses.fields(TrainConfig):
        kind = hints[field.name]
        if isinstance(kind, types.UnionType):
            (kind,) = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        flags.append((field.name, kind))
    return flags


def attribute_docs(cls: type) -> dict[str, str]:
    """``{field: text}`` from the ``Attributes:`` section of ``cls``'s docstring (``a, b: text`` documents both)."""
    section = (cls.__doc__ or "").partition("Attributes:")[2]
    docs: dict[str, str] = {}
    names: list[str] = []
    for line in section.splitlines():
        entry = re.match(r"\s*([a-z_][a-z0-9_, ]*):\s+(.*)", line)
        if entry:
            names = [name.strip() for name in entry.group(1).split(",")]
            docs.update({name: entry.group(2) for name in names})
        elif line.strip() and names:
            docs.update({name: f"{docs[name]} {line.strip()}" for name in names})
    return docs


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``train`` with one flag per :class:`TrainConfig` field, its help from the field's documentation."""
    from birdassets.train.config import TrainConfig

    train = commands.add_parser("train", help="train (or resume) an encoder; writes Orbax checkpoints")
    train.add_argument("--config", help="TOML or JSON file with any of the settings below (flags override it)")
    defaults, docs = TrainConfig(), attribute_docs(TrainConfig)
    for name, kind in config_flags():
        help_text = f"{docs.get(name, '')} (default: {getattr(defaults, name)})".replace("%", "%%")
        train.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None, help=help_text.strip())
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)


def train_config(args: argparse.Namespace):
    """The :class:`TrainConfig` of ``--config`` (or the defaults) with the flags given applied."""
    from birdassets.train.config import TrainConfig

    base = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    return base.replace(**{name: getattr(args, name) for name, _ in config_flags()})


def cmd_train(args: argparse.Namespace) -> int:
    from birdassets.settings import load_settings

    config = train_config(args)
    settings = load_settings()
    settings.dataset(config.task)  # an unknown task is named before TensorFlow and JAX start
    from birdassets.models.vit import VIT_SIZES

    if config.model == TIDHY:
        return train_tidhy(config, settings, progress=not args.no_progress)
    if config.model not in (*VIT_SIZES, RESNET):
        raise UserError(f"unknown model {config.model!r}; choose one of {sorted(VIT_SIZES)}, {TIDHY!r} or {RESNET!r}")
    from birdassets.steps import ensure_mel_dataset, training_function

    default_run = f"{config.task}-{RESNET}" if config.model == RESNET else (
        f"{config.task}-{config.objective}-{config.model}")
    run_dir = Path(config.output_dir) if config.output_dir else settings.checkpoint_roots[0] / default_run
    dataset = ensure_mel_dataset(settings, config.task)
    if config.model == RESNET:
        print(f"training a ResNet18 call detector (width {config.width}) on {config.task} -> {run_dir} (reads "
              f"{', '.join(RESNET_FIELDS)}, output_dir)")
    else:
        print(f"training {config.objective} {config.model} on {config.task} -> {run_dir}")
    try:
        result = training_function(config)(config, dataset, run_dir, progress=not args.no_progress, log=print)
    except ValueError as error:  # e.g. a detector asked to train on a task with several classes
        raise UserError(str(error)) from error
    if result.final_step == result.start_step:
        print(f"nothing to do: {run_dir} already holds step {result.start_step} (>= --num-steps)")
        return 0
    rate = f"{result.steps_per_s:.2f} steps/s" if result.steps_per_s else "n/a"
    print(f"steps {result.start_step} -> {result.final_step}; {rate} at batch {config.batch_size}; "
          f"checkpoint saves blocked {result.checkpoint_seconds:.2f} s; checkpoints in {run_dir}")
    return 0


def train_tidhy(config, settings, progress: bool) -> int:
    """``birdassets train --model tidhy``: train (or resume) a TiDHy encoder into ``<root>/tidhy-<task>``."""
    from birdassets.steps import tidhy_run_name, tidhy_schedule, train_tidhy_encoder

    run_dir = Path(config.output_dir) if config.output_dir else (
        settings.checkpoint_roots[0] / tidhy_run_name(config.task))
    print(f"training TiDHy on {config.task} -> {run_dir} (reads {', '.join(TIDHY_FIELDS)}, output_dir; the other "
          "settings are the ViT's)")

    def on_step(step: int, terms: dict[str, float]) -> None:
        if progress and (step + 1) % config.log_every == 0:
            print(f"  step {step + 1}: loss {terms['total']:.3f}", flush=True)

    result = train_tidhy_encoder(settings, config.task, tidhy_schedule(config), run_dir, on_step)
    if result.final_step == result.start_step:
        print(f"nothing to do: {run_dir} already holds step {result.start_step} (>= --num-steps)")
        return 0
    iterations = sum(result.iterations) / len(result.iterations)
    print(f"steps {result.start_step} -> {result.final_step}; {result.steps_per_s:.2f} steps/s at batch "
          f"{config.batch_size}; {iterations:.1f} inference iterations per time step; checkpoints in {run_dir}")
    return 0
