"""Commands on audio files, without Dagster.

* ``birdassets spectrogram AUDIO... --out X.npy``: a file's mel spectrogram (stage B, or stage C of its first
  window); several files or folders: one ``.npy`` per file in the folder ``--out``.
* ``birdassets ingest FOLDER [--source raven]``: what ingestion makes of a folder: counts and quarantined files with
  reasons; with Raven selection tables, the windows each class labels.
* ``birdassets embed --encoder birdnet --out OUT.npz AUDIO...``: BirdNET embeddings and logits of files (or folders).
* ``birdassets detect FOLDER --target LABEL --out OUT.json``: OrcaHello-style sliding-window detection.

A bad audio file never stops ``spectrogram``, ``embed`` or ``detect``: each prints one line
``birdassets <command>: <path>: <problem>`` on stderr per bad file, writes the outputs of the good ones and
exits with status 2 (:data:`~birdassets.cli.errors.USER_ERROR_STATUS`) when any file failed. Nothing
non-finite is written: every array is checked (:func:`birdassets.audio.io.require_finite`) first.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from birdassets.annotations.labelling import LABEL_COLUMN, MIN_OVERLAP_FRACTION, MIN_OVERLAP_S
from birdassets.cli.errors import USER_ERROR_STATUS, UserError

PRESETS_HELP = "TOML file with [presets.<name>] tables (user presets)"


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``spectrogram``, ``ingest``, ``embed`` and ``detect``."""
    spectrogram = commands.add_parser("spectrogram", help="write a file's mel spectrogram (stage B or C) as .npy")
    spectrogram.add_argument("audio", nargs="+", help="audio files or folders")
    spectrogram.add_argument("--preset", default="birdclef2025", help="built-in or user preset name")
    spectrogram.add_argument("--presets", help=PRESETS_HELP)
    spectrogram.add_argument("--stage", choices=("mel_db", "model_input"), default="mel_db")
    spectrogram.add_argument("--out", required=True, help="the .npy file (one audio file), else a folder that "
                             "receives <file name>.npy per file")
    spectrogram.set_defaults(func=cmd_spectrogram)

    ingest = commands.add_parser("ingest", help="check a folder of recordings: counts, quarantined files and reasons")
    ingest.add_argument("folder")
    ingest.add_argument("--source", choices=("folder", "raven"), default="folder",
                        help="raven: recordings with Raven selection tables (*.selections.txt), labelled by window")
    ingest.add_argument("--label-column", default=LABEL_COLUMN, help="raven: the tables' column holding the class")
    ingest.add_argument("--min-overlap-s", type=float, default=MIN_OVERLAP_S,
                        help="raven: seconds of overlap with a selection that label a window")
    ingest.add_argument("--min-overlap-fraction", type=float, default=MIN_OVERLAP_FRACTION,
                        help="raven: ... or this fraction of the selection's length, whichever is less")
    ingest.add_argument("--json", action="store_true", help="one JSON object {found, ingested, quarantined, ignored"
                        "[, positive_windows, ...]}")
    ingest.add_argument("--preset", default="birdclef2025", help="files shorter than its min_last_s are too short; "
                        "raven: its windows are labelled")
    ingest.add_argument("--presets", help=PRESETS_HELP)
    ingest.set_defaults(func=cmd_ingest)

    embed = commands.add_parser("embed", help="BirdNET embeddings [windows, 1024] and logits of audio files")
    embed.add_argument("audio", nargs="+", help="audio files or folders")
    embed.add_argument("--encoder", choices=("birdnet",), default="birdnet")
    embed.add_argument("--out", required=True, help="output .npz (embeddings, logits, start_s, file)")
    embed.set_defaults(func=cmd_embed)
    add_detect_parser(commands)


def add_detect_parser(commands: argparse._SubParsersAction) -> None:
    detect = commands.add_parser("detect", help="sliding-window detection over a folder (OrcaHello decision rule)")
    detect.add_argument("folder")
    detect.add_argument("--encoder", default="birdnet", help="birdnet, a detector checkpoint key, an exported model "
                        "folder, or any checkpoint key with --probe")
    detect.add_argument("--probe", help="score with the benchmark's probe '<task>:<probe>' for this encoder, "
                        "e.g. demo-clear:linear (targets are that task's classes)")
    detect.add_argument("--target", action="append", required=True,
                        help="target class (BirdNET label, scientific or common name); repeatable")
    detect.add_argument("--threshold", type=float, default=0.5, help="a window is positive above this")
    detect.add_argument("--min-positive", type=int, default=3, help="positive windows for a global detection")
    detect.add_argument("--clip", type=float, help="window length, s (default: an exported folder's, else 2)")
    detect.add_argument("--hop", type=float, help="hop between windows, s (default: an exported folder's, else 1)")
    detect.add_argument("--out", required=True, help="output .json, .csv or .selections.txt (Raven); with --format "
                        "audacity a folder of label tracks, or a .txt for one recording")
    detect.add_argument("--format", help="json, csv, raven or audacity (default: from --out's suffix)")
    detect.add_argument("--merge", action="store_true", help="Raven/Audacity: one selection per run of overlapping "
                        "positive windows")
    detect.set_defaults(func=cmd_detect)


def resolve_presets(names: list[str] | None, presets_file: str | None):
    """Presets by name: built-ins, ``[presets]`` of ``$BIRDASSETS_HOME/birdassets.toml``, and ``presets_file``.

    ``names=None`` gives every built-in and user preset.
    """
    from birdassets.frontends.presets import PRESETS, get_preset, presets_from_toml
    from birdassets.settings import load_settings

    user = {p.name: p for p in load_settings().presets}
    if presets_file:
        user.update(presets_from_toml(presets_file))
    return [get_preset(name, user) for name in (names or [*PRESETS, *user])]


def load_birdnet():
    """The BirdNET V2.4 encoder; a :class:`UserError` saying why when it is unavailable."""
    from birdassets.models.birdnet import BirdNetEncoder

    try:
        return BirdNetEncoder()
    except (ImportError, FileNotFoundError, RuntimeError, ValueError) as error:
        raise UserError(str(error)) from error


def report_bad_file(command: str, path: str | Path, problem: str) -> None:
    """One line on stderr for a file a command could not use: ``birdassets <command>: <path>: <problem>``."""
    print(f"birdassets {command}: {path}: {problem}", file=sys.stderr)


def audio_inputs(names: list[str]) -> list[Path]:
    """The files named, each folder replaced by the audio files under it (:func:`~birdassets.sources.folder.
    find_audio`); a name that is neither stays (decoding then names its problem)."""
    from birdassets.sources.folder import find_audio

    files: list[Path] = []
    for name in names:
        files.extend(find_audio(name)[0] if Path(name).is_dir() else [Path(name)])
    if not files:
        raise UserError(f"no audio files in {' '.join(names)}")
    return files


def spectrogram_outputs(names: list[str], files: list[Path], out: str) -> dict[Path, Path]:
    """Where each file's array goes: ``out`` (``.npy`` added) for one file named alone, else
    ``out/<file name>.npy`` (a repeated name gets ``#2``, ... as recording ids do)."""
    from birdassets.sources.ingest import unique_ids

    if len(names) == 1 and len(files) == 1 and not Path(names[0]).is_dir():
        return {files[0]: Path(out if out.endswith(".npy") else out + ".npy")}  # where np.save(out) would write
    if out.endswith(".npy"):
        raise UserError(f"{out}: with several audio files --out is a folder (one <file name>.npy per file)")
    return {file: Path(out) / f"{name}.npy" for file, name in zip(files, unique_ids(f.name for f in files))}


def cmd_spectrogram(args: argparse.Namespace) -> int:
    from birdassets.audio.io import AudioError

    (preset,) = resolve_presets([args.preset], args.presets)
    outputs = spectrogram_outputs(args.audio, audio_inputs(args.audio), args.out)
    frontend, failed = None, 0
    for path, out in outputs.items():
        try:
            if frontend is None:
                frontend = _mel_frontend(path, preset)
            shape = _write_spectrogram(path, out, frontend, args.stage)
        except AudioError as error:
            report_bad_file("spectrogram", path, error.problem)
            failed += 1
            continue
        print(f"{out}: {args.stage} {shape} float32 ({preset.name}, {preset.sample_rate} Hz)")
    return USER_ERROR_STATUS if failed else 0


def _mel_frontend(path: Path, preset):
    """The TensorFlow frontend, built once the first file has decoded (``path`` is probed first so that a bad
    single file is named before TensorFlow loads)."""
    from birdassets.audio.io import probe

    probe(path)
    from birdassets.frontends.tf_mel import TFMelFrontend

    return TFMelFrontend(preset)


def _write_spectrogram(path: Path, out: Path, frontend, stage: str) -> list[int]:
    """Decode ``path``, compute its ``stage`` array, check it is finite, write it to ``out``; its shape.

    Raises:
        AudioError: the file cannot be decoded, or its array has NaN/inf values (then nothing is written).
    """
    import numpy as np

    from birdassets.atomic import atomic_path
    from birdassets.audio.io import load, require_finite
    from birdassets.frontends.windowing import cut_windows

    preset = frontend.preset
    audio, _ = load(path, preset.sample_rate)
    if stage == "mel_db":  # stage B over the whole file: [frames, mels]
        result = frontend.mel_db(audio[None]).numpy()[0]
    else:  # stage C of the first stage-A window (zero-padded if the file is shorter than a clip)
        result = frontend.model_input(cut_windows(audio, [0.0], preset)).numpy()[0]
    require_finite(path, f"its {stage} spectrogram", result)
    with atomic_path(out) as tmp, open(tmp, "wb") as handle:
        np.save(handle, result.astype(np.float32))
    return list(result.shape)


def cmd_ingest(args: argparse.Namespace) -> int:
    from birdassets.sources.folder import read_folder

    (preset,) = resolve_presets([args.preset], args.presets)
    if args.source == "raven":
        result = read_raven_folder(args, preset)
    else:
        result = read_folder(args.folder, min_duration_s=preset.min_last_s).check()
    quarantined = [{"path": r.path, "reason": r.reason, "detail": r.detail} for r in result.quarantine]
    report = {"found": result.found, "ingested": result.ingested, "quarantined": quarantined, "ignored": result.ignored}
    if args.source == "raven":
        report.update(annotation_report(result))
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{args.folder}: found {result.found} audio files, ingested {result.ingested}, "
          f"quarantined {len(quarantined)}" + (f", ignored {result.ignored} non-audio files" if result.ignored else ""))
    for reason, count in result.reason_counts().items():
        print(f"  {reason}: {count}")
    for record in quarantined:
        print(f"  {record['reason']:<12} {record['path']}: {record['detail']}")
    if args.source == "raven":
        print_annotation_report(report)
    return 0


def read_raven_folder(args: argparse.Namespace, preset):
    """``ingest --source raven``: the folder's recordings labelled by their selection tables."""
    from birdassets.annotations.labelling import LabelRule
    from birdassets.sources.raven import read_raven

    try:
        rule = LabelRule(args.label_column, args.min_overlap_s, args.min_overlap_fraction)
    except ValueError as error:
        raise UserError(str(error)) from error
    return read_raven(args.folder, preset, rule, min_duration_s=preset.min_last_s)


def annotation_report(result) -> dict:
    """What a :class:`~birdassets.sources.raven.RavenIngest` adds to ``ingest``'s report."""
    return {"windows": len(result.manifest.table), "positive_windows": result.positive_windows(),
            "tables": len(result.manifest.annotations), "orphan_tables": list(result.orphan_tables),
            "empty_labels": result.empty_labels, "annotations_hash": result.manifest.annotations_hash()}


def print_annotation_report(report: dict) -> None:
    print(f"  {report['tables']} selection table(s), {report['windows']} windows; "
          f"{report['empty_labels']} selection(s) with an empty label ignored")
    for name, count in report["positive_windows"].items():
        print(f"  {name:<12} {count} positive window(s)")
    for table in report["orphan_tables"]:
        print(f"  orphan table {table}: pairs with no recording")


def cmd_embed(args: argparse.Namespace) -> int:
    from birdassets.audio.io import AudioError, probe
    from birdassets.models.birdnet.recordings import embed_recordings, save_embeddings_npz

    failed: list[str] = []

    def bad(path, problem: str) -> None:
        report_bad_file("embed", path, problem)
        failed.append(str(path))

    good = []
    for path in audio_inputs(args.audio):  # a missing or broken file is named before the model loads
        try:
            probe(path)
            good.append(path)
        except AudioError as error:
            bad(path, error.problem)
    if not good:
        return USER_ERROR_STATUS
    encoder = load_birdnet()
    started = time.perf_counter()
    result = embed_recordings(good, encoder, on_error=lambda error: bad(error.path, error.problem))
    seconds = time.perf_counter() - started
    embedded = len(set(result["file"].tolist()))
    if embedded:
        out = save_embeddings_npz(result, args.out)
        windows = len(result["start_s"])
        print(f"{out}: embeddings {list(result['embeddings'].shape)}, logits {list(result['logits'].shape)} from "
              f"{embedded} file(s), {windows} windows of 3 s in {seconds:.1f} s "
              f"({windows * 3.0 / max(seconds, 1e-9):.0f}x real time)")
    return USER_ERROR_STATUS if failed else 0


def detection_windows(encoder: str, clip_s: float | None, hop_s: float | None) -> tuple[float, float]:
    """``(clip_s, hop_s)`` of ``detect``: the flags where given, else an exported folder's decision rule (the
    model's own windows), else OrcaHello's 2 s every 1 s."""
    from birdassets.detection import DetectionConfig

    default = DetectionConfig()
    if (clip_s is None or hop_s is None) and Path(encoder).is_dir():
        from birdassets.export.bundle import read_rule

        default = read_rule(encoder)
    return (default.clip_s if clip_s is None else clip_s), (default.hop_s if hop_s is None else hop_s)


def cmd_detect(args: argparse.Namespace) -> int:
    from birdassets.detection import DetectionConfig, detect_recordings, make_scorer
    from birdassets.detection.outputs import EXPORT_FORMATS, format_of
    from birdassets.settings import load_settings
    from birdassets.sources.folder import find_audio

    folder = Path(args.folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder")
    try:
        kind = args.format or format_of(args.out)
        if kind not in EXPORT_FORMATS:
            raise ValueError(f"--format {kind}: unknown; expected one of {', '.join(EXPORT_FORMATS)}")
    except ValueError as error:
        raise UserError(str(error)) from error
    try:
        clip_s, hop_s = detection_windows(args.encoder, args.clip, args.hop)
        config = DetectionConfig(clip_s=clip_s, hop_s=hop_s, threshold=args.threshold,
                                 min_num_positive_calls=args.min_positive)
        scorer = make_scorer(load_settings(), args.encoder, args.target, args.probe)
    except (ValueError, FileNotFoundError, RuntimeError) as error:  # unknown target, probe, checkpoint, ...
        raise UserError(str(error)) from error
    result = detect_recordings(find_audio(folder)[0], scorer, config)
    out = result.write(args.out, kind, label=" ".join(args.target), merge=args.merge)
    positives = sum(r.global_prediction for r in result.recordings)
    print(f"{out}: {len(result.recordings)} recording(s), {positives} with a detection of {scorer.name}; "
          f"{len(result.failed)} unreadable")
    for path, reason in result.failed:  # reason: "<path>: <problem>" (an AudioError's message)
        report_bad_file("detect", path, reason.removeprefix(f"{path}: "))
    return USER_ERROR_STATUS if result.failed else 0
