"""``birdassets export KEY --out DIR``: a trained model as a self-describing folder someone else can run.

The folder (:mod:`birdassets.export.bundle`) holds ``model.safetensors``, ``config.json``,
``preprocessor_config.json``, a ``README.md`` model card and, where the conversion works, ``model.tflite``;
``birdassets detect FOLDER --encoder DIR --target call`` runs it with the folder alone. Each export is a row of
the DuckDB ``exports`` table.
"""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path

from birdassets.cli.errors import UserError

DEFAULT_LICENCE = "unspecified: the exporter set no licence (birdassets export --licence NAME)"


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``export``."""
    export = commands.add_parser("export", help="write a trained model as a self-describing folder (weights, "
                                 "config, preprocessor, model card, TFLite)")
    export.add_argument("key", help="checkpoint key '<run>@<step>' of a ResNet18 detector or of a ViT (with --probe), "
                        "or a supervised model 'birdclef-<model>.<task>' (birdassets birdclef train)")
    export.add_argument("--probe", help="a ViT's benchmark probe '<task>:<probe>' exported with it, e.g. "
                        "demo-clear:linear")
    export.add_argument("--out", required=True, help="the folder to write (replaced when it exists)")
    export.add_argument("--licence", default=DEFAULT_LICENCE, help="licence stated on the model card")
    export.add_argument("--threshold", type=float, default=0.5, help="decision rule: a window is positive above this")
    export.add_argument("--min-positive", type=int, default=3, help="decision rule: positive windows for a detection")
    export.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from birdassets.checkpoints import CheckpointError
    from birdassets.detection import DetectionConfig
    from birdassets.settings import load_settings
    from birdassets.steps import export_model

    try:
        rule = DetectionConfig(threshold=args.threshold, min_num_positive_calls=args.min_positive)
        report = export_model(load_settings(), args.key, Path(args.out), rule, args.licence, f"export-{uuid.uuid4()}",
                              args.probe)
    except (ValueError, FileNotFoundError, CheckpointError) as error:
        raise UserError(str(error)) from error
    summary = report.summary
    tflite = summary.config["tflite"]
    print(f"{summary.directory}: {len(summary.files)} files, {summary.size_bytes / 1e6:.2f} MB; lineage "
          f"{summary.config['lineage_hash'][:12]}")
    for name, entry in summary.files.items():
        print(f"  {name:<26} {entry['bytes']:>11,d} bytes  sha256 {entry['sha256'][:12]}")
    if tflite.get("file"):
        print(f"  TFLite vs JAX: max |difference| {tflite['max_abs_diff']:.2e} (probabilities), "
              f"{tflite['max_abs_diff_features']:.2e} (features) on {tflite['compared_on']}")
    else:
        print(f"  no TFLite file: {tflite['reason']}")
    return 0
