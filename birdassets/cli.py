"""The ``birdassets`` command line.

* ``birdassets demo`` — generate the demo data, write a checkpoint, materialize every asset for every demo
  task through Dagster on the persistent instance under ``BIRDASSETS_HOME``, print the leaderboard.
* ``birdassets query "SQL" [--format table|csv|json]`` — read-only SQL on the metrics database.
* ``birdassets train``, ``spectrogram``, ``bench`` — training, a file's spectrogram, speed benchmarks.
* ``birdassets ingest FOLDER`` — what ingestion makes of a folder: counts and quarantined files with reasons.
* ``birdassets embed --encoder birdnet --out OUT.npz AUDIO...`` — BirdNET embeddings and logits of files.
* ``birdassets detect FOLDER --encoder birdnet --target LABEL ...`` — OrcaHello-style sliding-window detection.
* ``birdassets ui`` — the Dagster UI (webserver + daemon) on this project.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[1]


def _quiet() -> None:
    """Keep TensorFlow/XLA start-up chatter and preview warnings out of the terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*is currently in preview.*")
    warnings.filterwarnings("ignore", message=".*is currently in beta.*")


def prepare_instance(settings) -> Path:
    """Point Dagster at ``$BIRDASSETS_HOME/dagster`` and install the project's ``dagster.yaml`` there."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    template = _REPO_ROOT / "dagster.yaml"
    target = home / "dagster.yaml"
    if template.exists():
        if not target.exists() or target.read_text() != template.read_text():
            shutil.copyfile(template, target)
    elif not target.exists():
        target.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ["BIRDASSETS_HOME"] = str(settings.home)
    return home


def register_checkpoints(defs, instance, settings) -> list[str]:
    """Evaluate the checkpoint sensor once and apply its tick: add the new partitions, run their encoders."""
    import dagster as dg

    from birdassets.defs.resources import BirdassetsHome

    sensor = defs.resolve_sensor_def("checkpoint_sensor")
    context = dg.build_sensor_context(instance=instance, resources={"birdassets": BirdassetsHome(home=str(settings.home))})
    result = sensor(context)
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return [request.partition_key for request in result.run_requests]


def _run_job(defs, name: str, partition_key, instance, ops: dict | None = None) -> float:
    started = time.perf_counter()
    result = defs.resolve_job_def(name).execute_in_process(
        partition_key=partition_key,
        instance=instance,
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}, **({"ops": ops} if ops else {})},
    )
    if not result.success:
        from birdassets.defs.runs import step_failure_messages

        failures = step_failure_messages(result)
        raise SystemExit(f"birdassets: {name} [{partition_key}] failed:\n  " + "\n  ".join(failures or ["(see the Dagster UI)"]))
    return time.perf_counter() - started


def cmd_demo(args: argparse.Namespace) -> int:
    _quiet()
    from dagster import DagsterInstance, MultiPartitionKey

    from birdassets.definitions import BENCHMARK_JOB, DATA_JOB, ENCODER_JOB, build_definitions
    from birdassets.defs.training import DEMO_TRAINING, TRAIN_JOB
    from birdassets.defs.partitions import CHECKPOINT_PARTITIONS_NAME
    from birdassets.settings import load_settings
    from birdassets.sources.demo import generate
    from birdassets.store import format_frame, query_readonly

    started = time.perf_counter()
    settings = load_settings()
    prepare_instance(settings)
    demo_data = [d for d in settings.datasets if d.source == "demo"]
    demo_tasks = [d for d in demo_data if d.benchmark]
    if not demo_tasks:
        raise SystemExit(f"birdassets: no demo tasks configured ({settings.config_file} sets include_demo = false)")
    print(f"BIRDASSETS_HOME={settings.home}")
    for dataset in demo_data:
        t0 = time.perf_counter()
        generate(dataset.name, dataset.root)
        print(f"  demo data {dataset.name:<12} {dataset.root}  ({time.perf_counter() - t0:.1f} s)")
    defs = build_definitions(settings)
    with DagsterInstance.get() as instance:
        for dataset in demo_tasks:
            seconds = _run_job(defs, DATA_JOB, dataset.name, instance)
            print(f"  materialized raw_audio, mel_dataset, folds  [{dataset.name}]  {seconds:.1f} s")
        seconds = _run_job(defs, TRAIN_JOB, None, instance)  # the job's defaults are the demo's run
        run = DEMO_TRAINING["run"]
        print(f"  trained {run} ({DEMO_TRAINING['objective']}, {DEMO_TRAINING['num_steps']} steps "
              f"on {DEMO_TRAINING['task']})  {seconds:.1f} s")
        new = register_checkpoints(defs, instance, settings)
        registered = instance.get_dynamic_partitions(CHECKPOINT_PARTITIONS_NAME)
        checkpoints = sorted((k for k in registered if k.startswith(f"{run}@")), key=lambda k: int(k.rsplit("@", 1)[1]))
        checkpoints += [k for k in registered if k in settings.pretrained]  # BirdNET, when installed
        for checkpoint in checkpoints:
            seconds = _run_job(defs, ENCODER_JOB, checkpoint, instance)
            print(f"  materialized encoder  [{checkpoint}]{' (new)' if checkpoint in new else ''}  {seconds:.1f} s")
            for dataset in demo_tasks:
                key = MultiPartitionKey({"task": dataset.name, "checkpoint": checkpoint})
                seconds = _run_job(defs, BENCHMARK_JOB, key, instance)
                print(f"  materialized embeddings, probe, scores, metrics_db  [{dataset.name} x {checkpoint}]  {seconds:.1f} s")

    names = ", ".join(f"'{d.name}'" for d in demo_tasks)
    board = query_readonly(
        settings.db_path,
        "select task, checkpoint, probe, round(mean, 4) as cmap, round(std, 4) as std, n_folds "
        f"from leaderboard where split = 'valid' and metric = 'cmAP' and task in ({names}) "
        "order by task, step, probe",
    )
    print("\nLeaderboard, cmAP on validation folds (mean and std over 5 folds):")
    print(format_frame(board, "table"))
    print(f"\nbirdassets demo finished in {time.perf_counter() - started:.1f} s. "
          f"Query more with: birdassets query \"select * from leaderboard\"")
    return 0


TRAIN_FLAGS = (
    ("task", str), ("objective", str), ("model", str), ("patch_frames", int), ("patch_mels", int), ("num_steps", int), ("warmup_steps", int), ("lr", float),
    ("weight_decay", float), ("grad_clip", float), ("batch_size", int), ("log_every", int),
    ("checkpoint_every", int), ("max_checkpoints", int), ("output_dir", str), ("seed", int),
    ("precision", str), ("devices", int), ("mask_ratio", float),
)


def cmd_train(args: argparse.Namespace) -> int:
    _quiet()
    from birdassets.benchmark import ensure_mel_dataset
    from birdassets.settings import load_settings
    from birdassets.train.config import TrainConfig, TrainConfigError
    from birdassets.train.loop import train

    try:
        base = TrainConfig.from_file(args.config) if args.config else TrainConfig()
        config = base.replace(**{name: getattr(args, name) for name, _ in TRAIN_FLAGS})
    except TrainConfigError as error:
        print(f"birdassets train: {error}", file=sys.stderr)
        return 2
    settings = load_settings()
    run_dir = Path(config.output_dir) if config.output_dir else (
        settings.checkpoint_roots[0] / f"{config.task}-{config.objective}-{config.model}"
    )
    dataset = ensure_mel_dataset(settings, config.task)
    print(f"training {config.objective} {config.model} on {config.task} -> {run_dir}")
    result = train(config, dataset, run_dir, progress=not args.no_progress, log=print)
    if result.final_step == result.start_step:
        print(f"nothing to do: {run_dir} already holds step {result.start_step} (>= --num-steps)")
        return 0
    rate = f"{result.steps_per_s:.2f} steps/s" if result.steps_per_s else "n/a"
    print(f"steps {result.start_step} -> {result.final_step}; {rate} at batch {config.batch_size}; "
          f"checkpoint saves blocked {result.checkpoint_seconds:.2f} s; checkpoints in {run_dir}")
    return 0


def resolve_presets(names: list[str] | None, presets_file: str | None):
    """Presets by name: built-ins, ``[presets]`` of ``$BIRDASSETS_HOME/birdassets.toml``, and ``presets_file``."""
    from birdassets.frontends.presets import PRESETS, get_preset, presets_from_toml
    from birdassets.settings import load_settings

    user = {p.name: p for p in load_settings().presets}
    if presets_file:
        user.update(presets_from_toml(presets_file))
    return [get_preset(name, user) for name in (names or [*PRESETS, *user])]


def cmd_spectrogram(args: argparse.Namespace) -> int:
    _quiet()
    import numpy as np

    from birdassets.audio.io import AudioError, load
    from birdassets.frontends.presets import PresetError
    from birdassets.frontends.tf_mel import TFMelFrontend
    from birdassets.frontends.windowing import cut_windows
    from birdassets.settings import SettingsError

    try:
        (preset,) = resolve_presets([args.preset], args.presets)
        audio, _ = load(args.audio, preset.sample_rate)
    except (PresetError, SettingsError, AudioError) as error:
        print(f"birdassets spectrogram: {error}", file=sys.stderr)
        return 2
    frontend = TFMelFrontend(preset)
    if args.stage == "mel_db":  # stage B over the whole file: [frames, mels]
        result = frontend.mel_db(audio[None]).numpy()[0]
    else:  # stage C of the first stage-A window (zero-padded if the file is shorter than a clip)
        result = frontend.model_input(cut_windows(audio, [0.0], preset)).numpy()[0]
    np.save(args.out, result.astype(np.float32))
    print(f"{args.out}: {args.stage} {list(result.shape)} float32 ({preset.name}, {preset.sample_rate} Hz)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    _quiet()
    from birdassets.store import format_frame

    if args.what == "birdnet":
        from birdassets.bench import bench_birdnet

        if _birdnet_or_error("bench") is None:
            return 2
        seconds = 300.0 if args.seconds is None else args.seconds
        frame = bench_birdnet(seconds=seconds, repeats=args.repeats)
        print(f"BirdNET V2.4 embeddings + logits on {seconds:.0f} s of audio, warm, best of {args.repeats}:")
        print(format_frame(frame, "table"))
        return 0
    from birdassets.bench import bench_frontend
    from birdassets.frontends.presets import PresetError
    from birdassets.settings import SettingsError

    try:
        presets = resolve_presets(args.preset, args.presets)
    except (PresetError, SettingsError) as error:
        print(f"birdassets bench: {error}", file=sys.stderr)
        return 2
    seconds = 600.0 if args.seconds is None else args.seconds
    frame = bench_frontend(presets, seconds=seconds, repeats=args.repeats)
    print(f"Stage B on {seconds:.0f} s of audio, warm, best of {args.repeats} (audio_s_per_s = x real time):")
    print(format_frame(frame, "table"))
    return 0


def _birdnet_or_error(command: str):
    """The BirdNET encoder, or ``None`` after printing why it is unavailable."""
    from birdassets.models.birdnet import BirdNetEncoder

    try:
        return BirdNetEncoder()
    except (ImportError, FileNotFoundError, RuntimeError, ValueError) as error:
        print(f"birdassets {command}: {error}", file=sys.stderr)
        return None


def cmd_embed(args: argparse.Namespace) -> int:
    _quiet()
    from birdassets.audio.io import AudioError
    from birdassets.embed import embed_recordings, save_embeddings_npz

    encoder = _birdnet_or_error("embed")
    if encoder is None:
        return 2
    started = time.perf_counter()
    try:
        result = embed_recordings(args.audio, encoder)
    except AudioError as error:
        print(f"birdassets embed: {error}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - started
    out = save_embeddings_npz(result, args.out)
    windows = len(result["start_s"])
    print(f"{out}: embeddings {list(result['embeddings'].shape)}, logits {list(result['logits'].shape)} from "
          f"{len(args.audio)} file(s), {windows} windows of 3 s in {seconds:.1f} s "
          f"({windows * 3.0 / max(seconds, 1e-9):.0f}x real time)")
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    _quiet()
    from birdassets.checkpoints import CheckpointError
    from birdassets.detect import DetectionConfig, detect_recordings, make_scorer
    from birdassets.settings import SettingsError, load_settings
    from birdassets.sources.folder import find_audio

    folder = Path(args.folder)
    if not folder.is_dir():
        print(f"birdassets detect: {folder} is not a folder", file=sys.stderr)
        return 2
    try:
        config = DetectionConfig(clip_s=args.clip, hop_s=args.hop, threshold=args.threshold,
                                 min_num_positive_calls=args.min_positive)
        scorer = make_scorer(load_settings(), args.encoder, args.target, args.probe)
    except (ValueError, FileNotFoundError, RuntimeError, CheckpointError, SettingsError) as error:
        print(f"birdassets detect: {error}", file=sys.stderr)
        return 2
    result = detect_recordings(find_audio(folder)[0], scorer, config)
    out = result.write(args.out)
    positives = sum(r.global_prediction for r in result.recordings)
    print(f"{out}: {len(result.recordings)} recording(s), {positives} with a detection of {scorer.name}; "
          f"{len(result.failed)} unreadable")
    for path, reason in result.failed:
        print(f"  unreadable: {path}: {reason}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    _quiet()
    import json

    from birdassets.frontends.presets import PresetError
    from birdassets.sources.folder import read_folder
    from birdassets.sources.manifest import ManifestError

    try:
        (preset,) = resolve_presets([args.preset], args.presets)
        result = read_folder(args.folder, min_duration_s=preset.min_last_s).check()
    except (PresetError, ManifestError) as error:
        print(f"birdassets ingest: {error}", file=sys.stderr)
        return 2
    quarantined = [{"path": r.path, "reason": r.reason, "detail": r.detail} for r in result.quarantine]
    if args.json:
        print(json.dumps({"found": result.found, "ingested": result.ingested, "quarantined": quarantined,
                          "ignored": result.ignored}))
        return 0
    print(f"{args.folder}: found {result.found} audio files, ingested {result.ingested}, "
          f"quarantined {len(quarantined)}" + (f", ignored {result.ignored} non-audio files" if result.ignored else ""))
    for reason, count in result.reason_counts().items():
        print(f"  {reason}: {count}")
    for record in quarantined:
        print(f"  {record['reason']:<12} {record['path']}: {record['detail']}")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from birdassets.settings import load_settings
    from birdassets.store import StoreError, format_frame, query_readonly

    settings = load_settings()
    try:
        frame = query_readonly(settings.db_path, args.sql)
    except StoreError as error:
        print(f"birdassets query: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # DuckDB parser/catalog errors: show them, not a traceback
        print(f"birdassets query: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    print(format_frame(frame, args.format))
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from birdassets.settings import load_settings

    settings = load_settings()
    prepare_instance(settings)
    command = ["dagster", "dev", "-m", "birdassets.definitions", "--host", args.host, "--port", str(args.port)]
    print(f"DAGSTER_HOME={os.environ['DAGSTER_HOME']}\n$ {' '.join(command)}")
    os.execvp(command[0], command)
    return 0  # not reached


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="birdassets", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="generate the demo data and run the whole benchmark through Dagster")
    demo.set_defaults(func=cmd_demo)

    query = commands.add_parser("query", help="run read-only SQL on the metrics database")
    query.add_argument("sql")
    query.add_argument("--format", choices=("table", "csv", "json"), default="table")
    query.set_defaults(func=cmd_query)

    train = commands.add_parser("train", help="train (or resume) an encoder; writes Orbax checkpoints")
    train.add_argument("--config", help="TOML or JSON file with any of the settings below (flags override it)")
    for name, kind in TRAIN_FLAGS:
        train.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None)
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)

    spectrogram = commands.add_parser("spectrogram", help="write a file's mel spectrogram (stage B or C) as .npy")
    spectrogram.add_argument("audio")
    spectrogram.add_argument("--preset", default="birdclef2025", help="built-in or user preset name")
    spectrogram.add_argument("--presets", help="TOML file with [presets.<name>] tables (user presets)")
    spectrogram.add_argument("--stage", choices=("mel_db", "model_input"), default="mel_db")
    spectrogram.add_argument("--out", required=True)
    spectrogram.set_defaults(func=cmd_spectrogram)

    bench = commands.add_parser("bench", help="speed benchmarks")
    bench.add_argument("what", choices=("frontend", "birdnet"))
    bench.add_argument("--preset", action="append", help="preset to time (repeatable; default: every preset)")
    bench.add_argument("--presets", help="TOML file with [presets.<name>] tables (user presets)")
    bench.add_argument("--seconds", type=float, default=None,
                       help="audio length (default: 600 s for frontend, 300 s for birdnet)")
    bench.add_argument("--repeats", type=int, default=3)
    bench.set_defaults(func=cmd_bench)

    ingest = commands.add_parser("ingest", help="check a folder of recordings: counts, quarantined files and reasons")
    ingest.add_argument("folder")
    ingest.add_argument("--json", action="store_true", help="one JSON object {found, ingested, quarantined, ignored}")
    ingest.add_argument("--preset", default="birdclef2025", help="files shorter than its min_last_s are too short")
    ingest.add_argument("--presets", help="TOML file with [presets.<name>] tables (user presets)")
    ingest.set_defaults(func=cmd_ingest)

    embed = commands.add_parser("embed", help="BirdNET embeddings [windows, 1024] and logits of audio files")
    embed.add_argument("audio", nargs="+")
    embed.add_argument("--encoder", choices=("birdnet",), default="birdnet")
    embed.add_argument("--out", required=True, help="output .npz (embeddings, logits, start_s, file)")
    embed.set_defaults(func=cmd_embed)

    detect = commands.add_parser("detect", help="sliding-window detection over a folder (OrcaHello decision rule)")
    detect.add_argument("folder")
    detect.add_argument("--encoder", default="birdnet", help="birdnet, or a checkpoint key (with --probe)")
    detect.add_argument("--probe", help="score with the benchmark's probe '<task>:<probe>' for this encoder, "
                        "e.g. demo-clear:linear (targets are that task's classes)")
    detect.add_argument("--target", action="append", required=True,
                        help="target class (BirdNET label, scientific or common name); repeatable")
    detect.add_argument("--threshold", type=float, default=0.5, help="a window is positive above this")
    detect.add_argument("--min-positive", type=int, default=3, help="positive windows for a global detection")
    detect.add_argument("--clip", type=float, default=2.0, help="window length, s")
    detect.add_argument("--hop", type=float, default=1.0, help="hop between windows, s")
    detect.add_argument("--out", required=True, help="output .json or .csv")
    detect.set_defaults(func=cmd_detect)

    ui = commands.add_parser("ui", help="start the Dagster UI on this project")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
