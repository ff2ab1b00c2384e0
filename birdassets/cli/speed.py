"""``birdassets bench frontend|birdnet|submission``: speed benchmarks (:mod:`birdassets.speed`), printed as tables.

``bench submission --task T --model M`` also stores its figure in DuckDB (``submission_speed``), next to the
model's scores."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from birdassets.cli.audio import PRESETS_HELP, load_birdnet, resolve_presets
from birdassets.defs.profiles import PROFILES


def positive(kind: type) -> Callable[[str], float]:
    """An argparse ``type`` accepting numbers of ``kind`` above 0."""

    def parse(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} is not above 0")
        return value

    parse.__name__ = kind.__name__  # argparse names it in "invalid int value"
    return parse


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``bench``."""
    bench = commands.add_parser("bench", help="speed benchmarks")
    bench.add_argument("what", choices=("frontend", "birdnet", "submission", "detector", "sensor", "load", "latency"))
    bench.add_argument("--preset", action="append", help="preset to time (repeatable; default: every preset)")
    bench.add_argument("--presets", help=PRESETS_HELP)
    bench.add_argument("--seconds", type=positive(float), default=None,
                       help="audio length (default: 600 s for frontend, 300 s for birdnet, 60 s for submission)")
    bench.add_argument("--repeats", type=positive(int), default=3)
    bench.add_argument("--task", help="submission: the task the model was trained on")
    bench.add_argument("--model", help="submission: the supervised model family (cnn, rnn, vit)")
    bench.add_argument("--batch-size", type=positive(int), default=None, help="submission: windows per forward pass")
    bench.add_argument("--encoder", help="detector: a ResNet18 checkpoint key or an exported folder (its TFLite "
                       "file is timed beside it; a checkpoint is converted for the run)")
    bench.add_argument("--runs", type=positive(int), default=None,
                       help="sensor, load: synthetic training runs (default 100 for sensor, 50 for load)")
    bench.add_argument("--steps", type=positive(int), default=None,
                       help="sensor, load: finalized steps per run (default 100 for sensor, 20 for load)")
    bench.add_argument("--tasks", type=positive(int), default=8, help="load: tasks (default 8)")
    bench.add_argument("--profile", choices=tuple(PROFILES), default=None,
                       help="latency: the instance profile birdassets ui runs with (default: $BIRDASSETS_PROFILE, "
                       "else local)")
    bench.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    commands = {"birdnet": birdnet_speed, "frontend": frontend_speed, "submission": submission_speed,
                "detector": detector_speed, "sensor": sensor_speed, "load": load_speed,
                "latency": latency_speed}
    return commands[args.what](args)


def frontend_speed(args: argparse.Namespace) -> int:
    """Stage B of each preset (``--preset``, default all) and librosa, in multiples of real time, with each
    result's largest dB difference from librosa in float64."""
    from birdassets.cli.format import format_frame
    from birdassets.speed import bench_frontend

    presets = resolve_presets(args.preset, args.presets)
    seconds = 600.0 if args.seconds is None else args.seconds
    frame = bench_frontend(presets, seconds=seconds, repeats=args.repeats)
    frame["max_db_diff"] = frame["max_db_diff"].map("{:.1e}".format)  # 1e-6 .. 1e-2 dB: four decimals hide it
    print(f"Stage B on {seconds:.0f} s of audio, warm, best of {args.repeats} (audio_s_per_s = x real time; "
          "max_db_diff = largest |dB| from librosa in float64 on the same input):")
    print(format_frame(frame, "table"))
    return 0


def birdnet_speed(args: argparse.Namespace) -> int:
    """BirdNET embeddings + logits per batch size and thread count, in multiples of real time."""
    from birdassets.cli.format import format_frame
    from birdassets.speed import bench_birdnet

    load_birdnet()  # a user error when BirdNET is not installed
    seconds = 300.0 if args.seconds is None else args.seconds
    frame = bench_birdnet(seconds=seconds, repeats=args.repeats)
    print(f"BirdNET V2.4 embeddings + logits on {seconds:.0f} s of audio, warm, best of {args.repeats}:")
    print(format_frame(frame, "table"))
    return 0


def submission_speed(args: argparse.Namespace) -> int:
    """A supervised model's submission path (decode -> mel -> all folds), projected onto Kaggle's test set; the
    figure is stored in DuckDB (``submission_speed``)."""
    from birdassets.cli.birdclef import run_id, trained_model
    from birdassets.cli.errors import UserError
    from birdassets.speed import KAGGLE_CPU_LIMIT_S, KAGGLE_SOUNDSCAPE_S, KAGGLE_TEST_SOUNDSCAPES, bench_submission
    from birdassets.store import MetricsStore
    from birdassets.supervised.config import model_key

    if not args.task or not args.model:
        raise UserError("bench submission needs --task and --model")
    settings, model_dir, preset = trained_model(args.task, args.model)
    seconds = 60.0 if args.seconds is None else args.seconds
    row = bench_submission(model_dir, seconds=seconds, repeats=args.repeats, batch_size=args.batch_size, preset=preset)
    key = model_key(args.model, args.task)
    MetricsStore(settings.layout.db_path).record_submission_speed(args.task, key, row, run_id("bench-submission"))
    verdict = "fits" if row["projected_s"] <= KAGGLE_CPU_LIMIT_S else "does NOT fit"
    print(f"{key}: {row['audio_s_per_s']:.1f} audio s per s ({row['n_folds']} folds, "
          f"batch {row['batch_size']}, {seconds:.0f} s of audio in {row['soundscapes']} OGG soundscape(s), warm, "
          f"best of {args.repeats})")
    print(f"Kaggle test set ({KAGGLE_TEST_SOUNDSCAPES} x {KAGGLE_SOUNDSCAPE_S:.0f} s): {row['projected_s'] / 60:.1f} "
          f"min on this machine; {verdict} in the {KAGGLE_CPU_LIMIT_S / 60:.0f}-minute CPU limit")
    return 0


def detector_speed(args: argparse.Namespace) -> int:
    """An exportable model (a ResNet18 detector, or any exported folder) in JAX and as TFLite (2 threads), side by
    side, in multiples of real time."""
    from birdassets.cli.errors import UserError
    from birdassets.cli.format import format_frame
    from birdassets.speed import bench_detector

    if not args.encoder:
        raise UserError("bench detector needs --encoder (a ResNet18 checkpoint key or an exported folder)")
    try:
        runtimes, preset = detector_runtimes(args.encoder)
    except (ValueError, FileNotFoundError) as error:
        raise UserError(str(error)) from error
    seconds = 600.0 if args.seconds is None else args.seconds
    frame = bench_detector(runtimes, preset, seconds=seconds, repeats=args.repeats)
    print(f"{runtimes['jax'].name} on {seconds:.0f} s of audio ({preset.clip_s:g} s windows every "
          f"{preset.hop_s:g} s), warm, best of {args.repeats}:")
    print(format_frame(frame, "table"))
    return 0


def detector_runtimes(encoder: str) -> tuple[dict[str, object], object]:
    """``({runtime name: detector}, preset)`` of a checkpoint key (JAX, and TFLite converted now) or an exported
    folder (its JAX weights and its ``model.tflite``)."""
    import tempfile
    from pathlib import Path

    from birdassets.export.tflite import TFLiteDetector, convert_forward

    if Path(encoder).is_dir():
        from birdassets.export.bundle import read_bundle

        bundle = read_bundle(encoder)
        jax_model, preset, tflite_path = bundle.model, bundle.preset, bundle.tflite_path
    else:
        from birdassets.models.registry import load_encoder
        from birdassets.settings import load_settings

        settings = load_settings()
        jax_model = load_encoder(settings.checkpoint_roots, encoder).encoder
        if not hasattr(jax_model, "probabilities"):
            raise ValueError(f"{encoder} is not a detector checkpoint (no class probabilities)")
        preset = settings.preset(jax_model.input_spec.preset)
        tflite_path = Path(tempfile.mkdtemp()) / "model.tflite"
        tflite_path.write_bytes(convert_forward(jax_model.forward, jax_model.input_spec,
                                                dynamic_batch=getattr(jax_model, "reshapes_batch", False)))
    runtimes = {"jax": jax_model}
    if tflite_path is not None:
        runtimes["tflite"] = TFLiteDetector(tflite_path, name="tflite", classes=jax_model.classes,
                                            input_spec=jax_model.input_spec, dim=jax_model.dim)
    return runtimes, preset


def sensor_speed(args: argparse.Namespace) -> int:
    """Checkpoint-sensor ticks over ``--runs`` x ``--steps`` synthetic finalized steps (default 100 x 100)."""
    import tempfile

    from birdassets.cli.format import format_frame
    from birdassets.defs.loadtest import bench_sensor

    runs, steps = args.runs or 100, args.steps or 100
    with tempfile.TemporaryDirectory(prefix="birdassets-bench-sensor-") as work:
        frame = bench_sensor(Path(work), runs, steps)
    print(f"Checkpoint sensor over {runs} runs x {steps} steps = {runs * steps} synthetic finalized steps "
          f"(tick = evaluation + adding its partitions, as the daemon does):")
    print(format_frame(frame, "table"))
    return 0


def load_speed(args: argparse.Namespace) -> int:
    """The load test: ``--runs`` x ``--steps`` checkpoints (default 50 x 20) x ``--tasks`` tasks (default 8)."""
    import tempfile

    from birdassets.cli.format import format_frame
    from birdassets.defs.loadtest import load_test

    runs, steps = args.runs or 50, args.steps or 20
    with tempfile.TemporaryDirectory(prefix="birdassets-bench-load-") as work:
        frame = load_test(Path(work), runs, steps, args.tasks)
    print(f"Load test: {runs * steps} checkpoints x {args.tasks} tasks = {runs * steps * args.tasks} partitions, "
          "200 score rows each:")
    print(format_frame(frame, "table"))
    return 0


def latency_speed(args: argparse.Namespace) -> int:
    """Checkpoint -> scores latency with ``birdassets ui`` running, on a home where ``birdassets demo`` ran."""
    import tempfile

    from birdassets.cli.format import format_frame
    from birdassets.defs.latency import bench_latency
    from birdassets.defs.profiles import chosen_profile
    from birdassets.settings import load_settings

    settings, profile = load_settings(), chosen_profile(args.profile).name
    with tempfile.TemporaryDirectory(prefix="birdassets-bench-latency-") as work:
        frame = bench_latency(settings, profile, Path(work))
    print(f"New checkpoint -> DuckDB scores of every demo task, birdassets ui --profile {profile} running "
          f"(copies of the demo encoder's last step, landing alone and two at once):")
    print(format_frame(frame, "table"))
    return 0
