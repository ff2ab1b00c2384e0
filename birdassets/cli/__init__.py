"""The ``birdassets`` command line.

* ``birdassets demo`` — generate the demo data, write a checkpoint, materialize every asset for every demo
  task through Dagster on the persistent instance under ``BIRDASSETS_HOME``, print the leaderboard.
* ``birdassets ui [--read-only] [--profile local|production]`` — the Dagster UI (webserver + daemon) on this
  project, guarded against web pages.
* ``birdassets worker [--name NAME]`` — a Celery worker executing the steps of runs (executor ``celery``).
* ``birdassets query "SQL" [--format table|csv|json] [--limit N]`` — one read-only statement on the metrics
  database, streamed.
* ``birdassets train`` — train (or resume) an encoder; one flag per ``TrainConfig`` field.
* ``birdassets birdclef train --task T --model cnn|rnn|vit`` — supervised Keras models trained per fold, to DuckDB.
* ``birdassets birdclef submit --task T --model M --soundscapes DIR --out submission.csv`` — a Kaggle submission.
* ``birdassets tidhy benchmark [--small] [--seed N]`` — TiDHy on its SLDS benchmark, scores to DuckDB (task ``slds``).
* ``birdassets spectrogram AUDIO... --out X.npy`` — a file's mel spectrogram (stage B or C); several files or
  folders: one ``.npy`` each in the folder ``--out``.
* ``birdassets ingest FOLDER`` — what ingestion makes of a folder: counts and quarantined files with reasons.
* ``birdassets embed --encoder birdnet --out OUT.npz AUDIO...`` — BirdNET embeddings and logits of files.
* ``birdassets detect FOLDER --encoder birdnet --target LABEL ...`` — OrcaHello-style sliding-window detection.
* ``birdassets export KEY [--probe TASK:PROBE] --out DIR`` — a trained detector (or a ViT with its probe) as a
  self-describing folder (safetensors, config, preprocessor config, model card, TFLite), in DuckDB ``exports``.
* ``birdassets bench frontend|birdnet|submission`` — speed benchmarks (``submission``: a trained model's Kaggle
  submission path, projected onto the test set's CPU limit, stored in DuckDB).

One module per command group (:mod:`~birdassets.cli.demo`, :mod:`~birdassets.cli.pipeline`,
:mod:`~birdassets.cli.ui`, :mod:`~birdassets.cli.worker`, :mod:`~birdassets.cli.query`, :mod:`~birdassets.cli.train`,
:mod:`~birdassets.cli.tidhy`, :mod:`~birdassets.cli.audio`, :mod:`~birdassets.cli.sharing`,
:mod:`~birdassets.cli.speed`), each adding its commands with ``add_parser(subparsers)``; :mod:`~birdassets.cli.errors`
turns user errors into one line and exit status 2; :mod:`~birdassets.cli.format` formats tables. Commands import
the library inside their functions, so ``birdassets --help`` starts fast.
"""

from __future__ import annotations

import argparse
import os
import warnings

from birdassets.allocator import reuse_large_blocks
from birdassets.cli import audio, birdclef, demo, pipeline, query, sharing, speed, tidhy, train, ui, worker
from birdassets.cli.errors import run_command

COMMAND_GROUPS = (demo, pipeline, ui, worker, query, train, birdclef, tidhy, audio, sharing, speed)
"""Modules that add commands, in ``--help`` order."""


def build_parser() -> argparse.ArgumentParser:
    """The ``birdassets`` parser: one subcommand per command, its function in ``func``."""
    parser = argparse.ArgumentParser(prog="birdassets", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.add_parser(commands)
    return parser


def quiet() -> None:
    """Keep TensorFlow/XLA start-up chatter and preview warnings out of the terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*is currently in preview.*")
    warnings.filterwarnings("ignore", message=".*is currently in beta.*")


def use_compile_cache() -> None:
    """JAX's persistent compilation cache under ``BIRDASSETS_HOME`` for this command and its child processes."""
    from birdassets.compile_cache import enable_compile_cache
    from birdassets.layout import Layout
    from birdassets.settings import home_from_env

    enable_compile_cache(Layout(home_from_env()).compile_cache)


def main(argv: list[str] | None = None) -> int:
    """Run ``birdassets ARGV`` (default: ``sys.argv[1:]``); returns the exit status.

    Commands run quietly (:func:`quiet`) unless their parser sets ``quiet=False``, and with malloc reusing
    large blocks (:func:`~birdassets.allocator.reuse_large_blocks`).
    """
    args = build_parser().parse_args(argv)
    reuse_large_blocks()
    if getattr(args, "quiet", True):
        quiet()
    use_compile_cache()
    command = " ".join(filter(None, (args.command, getattr(args, "action", None))))  # "birdclef train"
    return run_command(command, lambda: args.func(args))
