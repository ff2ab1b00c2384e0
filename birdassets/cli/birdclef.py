"""``birdassets birdclef``: the BirdCLEF-style supervised system (Keras 3 models trained per fold).

* ``birdassets birdclef train --task T --model cnn|rnn|vit [--debug] [--epochs N] [--no-augment] [--focal]
  [--class-weights] [--init-checkpoint KEY] [--batch-size N] [--precision P] [--seed N] [--oof-out FILE.parquet]``:
  train the family on every fold of the task (its data and folds are built first when missing), save one
  ``.keras`` model per fold under ``models/<task>/<model>/``, record scores, lineage and learning curves in
  DuckDB, print each fold's best epoch and the out-of-fold scores.
* ``birdassets birdclef submit --task T --model M --soundscapes DIR --out submission.csv [--batch-size N]``: the
  Kaggle submission of a trained model: every 5-s window of every soundscape in DIR, the fold models averaged,
  columns in the order of the task's ``sample_submission.csv`` when it has one; a soundscape that cannot be
  decoded is named on stderr, the others are still written, and the exit status is then 2.

Each subcommand is one ``add_*_parser`` function plus its ``cmd_*`` function, added by :func:`add_parser`.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

from birdassets.cli.errors import UserError

OOF_SUFFIX = ".parquet"
"""What ``--oof-out`` must end with."""


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``birdclef`` and its subcommands."""
    birdclef = commands.add_parser("birdclef", help="BirdCLEF-style supervised Keras models: train per fold")
    actions = birdclef.add_subparsers(dest="action", required=True, metavar="{train,submit}")
    add_train_parser(actions)
    add_submit_parser(actions)


def add_train_parser(actions: argparse._SubParsersAction) -> None:
    """Add ``birdclef train``; its flags are :func:`birdassets.supervised.config.build_configs`'s arguments."""
    train = actions.add_parser("train", help="train a model family on every fold of a task; scores to DuckDB")
    train.add_argument("--task", required=True, help="a configured task")
    train.add_argument("--model", required=True, metavar="cnn|rnn|vit", help="the model family")
    train.add_argument("--debug", action="store_true", help="at most 1000 training windows, 2 epochs")
    train.add_argument("--epochs", type=int, default=None, help="epochs per fold (default: 10, debug: 2)")
    train.add_argument("--no-augment", dest="augment", action="store_false",
                       help="no mixup, SpecAugment or brightness/contrast")
    train.add_argument("--focal", action="store_true", help="sigmoid focal loss instead of BCE")
    train.add_argument("--class-weights", action="store_true", help="weight classes by training-fold counts")
    train.add_argument("--init-checkpoint", metavar="KEY",
                       help="'<run>@<step>' ViT checkpoint that initialises the vit family's encoder")
    train.add_argument("--batch-size", type=int, default=32, help="windows per step (default: 32)")
    train.add_argument("--precision", default="auto",
                       help="auto (mixed_float16 on GPU, mixed_bfloat16 on CPU), float32, mixed_bfloat16, "
                       "mixed_float16")
    train.add_argument("--seed", type=int, default=None, help="seed of everything (default: 42)")
    train.add_argument("--rnn-units", type=int, default=None, help="units per recurrent layer of rnn (default: 128)")
    train.add_argument("--oof-out", metavar="FILE.parquet", help="also write the out-of-fold predictions here")
    train.set_defaults(func=cmd_train)


def run_id(command: str) -> str:
    """A run id for what a command writes to DuckDB: ``cli-<command>-<UTC time>-<6 hex>``."""
    return f"cli-{command}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:6]}"


def training_configs(args: argparse.Namespace):
    """``(ModelConfig, SupervisedConfig, AugmentConfig)`` of the flags; a bad value is a :class:`UserError`."""
    from birdassets.supervised.config import SEED, build_configs

    try:
        return build_configs(args.model, debug=args.debug, epochs=args.epochs, augment=args.augment,
                             focal=args.focal, class_weights=args.class_weights, init_checkpoint=args.init_checkpoint,
                             precision=args.precision, batch_size=args.batch_size,
                             seed=SEED if args.seed is None else args.seed, rnn_units=args.rnn_units)
    except ValueError as error:
        raise UserError(str(error)) from error


def oof_path(text: str | None) -> Path | None:
    """``--oof-out`` as a path: it must end with ``.parquet`` and its folder must exist."""
    if text is None:
        return None
    path = Path(text)
    if path.suffix.lower() != OOF_SUFFIX:
        raise UserError(f"--oof-out {path}: out-of-fold predictions are written as {OOF_SUFFIX}")
    if not path.parent.is_dir():
        raise UserError(f"--oof-out {path}: folder {path.parent} does not exist")
    return path


def prepare_task(settings, task: str, run: str) -> None:
    """The task's manifest, mel dataset and folds, each built when missing (as the data job would)."""
    from birdassets import steps

    if not settings.layout.manifest_path(task).exists():
        steps.ingest(settings, task, run)
    steps.build_mel(settings, task)
    if not settings.layout.folds_path(task).exists():
        steps.make_folds(settings, task)


def cmd_train(args: argparse.Namespace) -> int:
    from birdassets.settings import load_settings

    settings = load_settings()
    settings.dataset(args.task)  # an unknown task is named before TensorFlow and JAX start
    configs, oof_out = training_configs(args), oof_path(args.oof_out)
    from birdassets import steps

    run = run_id("birdclef-train")
    prepare_task(settings, args.task, run)
    print(f"training {args.model} on {args.task} (run {run})")
    report = steps.train_supervised(settings, args.task, *configs, run, oof_out=oof_out)
    recorded = steps.record_supervised(settings, args.task, report.model, run)
    print_training(report)
    print(f"models: {report.directory}; {recorded.score_rows} score rows in {recorded.db_path}"
          + (f"; out-of-fold predictions: {oof_out}" if oof_out else ""))
    return 0


def print_training(report) -> None:
    """Each fold's best epoch and its validation AUC, then the out-of-fold scores (mean ± std over folds)."""
    from birdassets.supervised.config import SUPERVISED_PROBE

    for fold, rows in report.history.groupby("fold"):
        best = rows.loc[rows["val_auc"].fillna(-1.0).idxmax()]
        print(f"  fold {fold}: best epoch {int(best['epoch'])} of {len(rows)}, val AUC {best['val_auc']:.4f}")
    valid = report.scores[(report.scores["split"] == "valid") & (report.scores["probe"] == SUPERVISED_PROBE)]
    summary = valid.groupby("metric")["value"].agg(["mean", "std"])
    print(f"out-of-fold class-wise AUC {summary.loc['AUC', 'mean']:.4f} ± {summary.loc['AUC', 'std']:.4f}, "
          f"cmAP {summary.loc['cmAP', 'mean']:.4f} ± {summary.loc['cmAP', 'std']:.4f} over {valid['fold'].nunique()} folds; "
          f"training took {report.lineage.extra['train_seconds']:.1f} s ({report.seconds:.1f} s with scoring)")


# ------------------------------------------------------------------------------------------------ submit


def add_submit_parser(actions: argparse._SubParsersAction) -> None:
    """Add ``birdclef submit``."""
    submit = actions.add_parser("submit", help="Kaggle submission CSV of a trained model over a soundscape folder")
    submit.add_argument("--task", required=True, help="the task the model was trained on")
    submit.add_argument("--model", required=True, metavar="cnn|rnn|vit", help="the model family")
    submit.add_argument("--soundscapes", required=True, metavar="DIR", help="folder of soundscape audio files")
    submit.add_argument("--out", required=True, metavar="submission.csv", help="the CSV to write")
    submit.add_argument("--batch-size", type=int, default=64, help="windows per forward pass (default: 64)")
    submit.set_defaults(func=cmd_submit)


def trained_model(task: str, model: str):
    """``(settings, model folder, preset)`` of a trained task x model; a :class:`UserError` saying which command
    trains it when there is none."""
    from birdassets.settings import load_settings
    from birdassets.supervised.model_folder import read_model_record

    settings = load_settings()
    settings.dataset(task)  # an unknown task: one line naming the configured ones
    folder = settings.layout.models_dir(task, model)
    try:
        record = read_model_record(folder)
    except FileNotFoundError as error:
        found = f" ({error})" if folder.is_dir() else f" in {folder}"  # incomplete: the missing files named
        raise UserError(f"no trained {model!r} model for task {task!r}{found}; "
                        f"train it with: birdassets birdclef train --task {task} --model {model}") from None
    return settings, folder, settings.preset(record["preset"])


def soundscape_files(folder: str) -> list[Path]:
    """The audio files under ``folder``, sorted; a :class:`UserError` when there is none or two share a stem
    (their row ids would collide)."""
    from birdassets.sources.folder import find_audio

    if not Path(folder).is_dir():
        raise UserError(f"--soundscapes {folder}: no such folder")
    files = find_audio(folder)[0]
    if not files:
        raise UserError(f"--soundscapes {folder}: no audio files in it")
    stems: dict[str, Path] = {}
    for file in files:
        if file.stem in stems:
            raise UserError(f"{file} and {stems[file.stem]} share the name {file.stem!r}: their row ids would collide")
        stems[file.stem] = file
    return files


def cmd_submit(args: argparse.Namespace) -> int:
    from birdassets.cli.audio import report_bad_file
    from birdassets.cli.errors import USER_ERROR_STATUS
    from birdassets.supervised.submission import predict_soundscapes, submission_class_order, write_submission

    settings, folder, preset = trained_model(args.task, args.model)
    files, out = soundscape_files(args.soundscapes), Path(args.out)
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: folder {out.parent} does not exist")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    failed: list[Path] = []

    def skip(path: Path, error) -> None:
        failed.append(path)
        report_bad_file("birdclef submit", path, error.problem)

    frame = predict_soundscapes(folder, files, batch_size=args.batch_size, preset=preset, on_error=skip)
    order = submission_class_order(settings.dataset(args.task).root, list(frame.columns[1:]))
    for notice in write_submission(frame, out, order):
        print(f"birdassets birdclef submit: {notice}", file=sys.stderr)
    print(f"{out}: {len(frame)} windows of {len(files) - len(failed)} soundscapes x {len(order)} species"
          + (f"; {len(failed)} soundscape(s) could not be read" if failed else ""))
    return USER_ERROR_STATUS if failed else 0
