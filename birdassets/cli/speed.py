"""``birdassets bench frontend|birdnet``: speed benchmarks (:mod:`birdassets.speed`), printed as tables."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from birdassets.cli.audio import PRESETS_HELP, load_birdnet, resolve_presets


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
    bench.add_argument("what", choices=("frontend", "birdnet"))
    bench.add_argument("--preset", action="append", help="preset to time (repeatable; default: every preset)")
    bench.add_argument("--presets", help=PRESETS_HELP)
    bench.add_argument("--seconds", type=positive(float), default=None,
                       help="audio length (default: 600 s for frontend, 300 s for birdnet)")
    bench.add_argument("--repeats", type=positive(int), default=3)
    bench.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    return birdnet_speed(args) if args.what == "birdnet" else frontend_speed(args)


def frontend_speed(args: argparse.Namespace) -> int:
    """Stage B of each preset (``--preset``, default all) and librosa, in multiples of real time."""
    from birdassets.cli.format import format_frame
    from birdassets.speed import bench_frontend

    presets = resolve_presets(args.preset, args.presets)
    seconds = 600.0 if args.seconds is None else args.seconds
    frame = bench_frontend(presets, seconds=seconds, repeats=args.repeats)
    print(f"Stage B on {seconds:.0f} s of audio, warm, best of {args.repeats} (audio_s_per_s = x real time):")
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
