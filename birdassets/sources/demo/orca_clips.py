"""``demo-orca``: synthetic hydrophone clips for training a killer-whale call detector, plus long recordings to
run it on, in the clips layout (:mod:`birdassets.sources.clips`).

Output (FLAC PCM_16, 20 kHz mono; sounds from :mod:`birdassets.sources.demo.hydrophone`)::

    root/positive/pos_<nnnn>.flac           training clips of clip_s (2 s), each holding one whole call
    root/negative/neg_<nnnn>.flac           training clips without a call
    root/test/positive/pos_<nnnn>.flac      held-out clips, drawn from streams of their own
    root/test/negative/neg_<nnnn>.flac
    root/clips.csv                          one row per clip: file, split, call (1/0), start_s, end_s, f0_hz, snr_db
    root/recordings/rec_<nnn>.flac          held-out long recordings (recording_s, 60 s); a share of them hold calls
    root/recordings.csv                     one row per call in them: file, start_s, end_s, f0_hz, snr_db
    root/recordings_truth.csv               one row per recording: file, calls, global_truth (1 iff calls >= 1)
    root/demo_spec.json                     the spec (:meth:`OrcaDemoSpec.record`)
    root/.complete                          the spec's digest; written last

``file`` columns are paths relative to ``root``; times are seconds from the start of the file (exact: a whole number
of samples). A positive clip's call lies entirely inside it, at least ``call_margin_s`` from both ends (calls longer
than ``clip_s - 2 call_margin_s`` are shortened to fit); calls in a recording do not overlap and are at least
``call_gap_s`` apart. Every file is scaled so that its background has an RMS of ``level_dbfs`` (drawn per file),
less when the peak would pass 0.95.

Every file draws from its own ``SeedSequence([seed, stream, i])`` (:meth:`OrcaDemoSpec.rng`; one stream per clip
folder, one for the recordings, one for which recordings hold calls), so the same spec gives byte-identical files.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from birdassets.atomic import write_json
from birdassets.sources.clips import CLIP_FOLDERS, POSITIVE_DIR
from birdassets.sources.demo.hydrophone import (
    NoiseLevels,
    PulsedCall,
    background,
    draw_call,
    pulsed_call,
    scaled_call,
    to_level,
)
from birdassets.sources.demo.publishing import SPEC_FILE, BackgroundWriter, record_digest, write_csv

ORCA_GENERATOR_VERSION = 1
"""Bumped when the generator's output changes; part of every spec's digest."""
CLIP_STREAMS: dict[tuple[str, bool], int] = {("train", True): 1, ("train", False): 2, ("test", True): 3,
                                             ("test", False): 4}
"""Random stream of each clip folder, by ``(split, holds a call)``: ``spec.rng(stream, clip)``."""
RECORDING_STREAM = 5
"""Random stream of the long recordings: ``spec.rng(RECORDING_STREAM, recording)``."""
PLAN_STREAM = 6
"""Random stream of which recordings hold calls."""
RECORDINGS_DIR = "recordings"
CLIPS_CSV = "clips.csv"
RECORDINGS_CSV = "recordings.csv"
RECORDINGS_TRUTH_CSV = "recordings_truth.csv"
CLIP_COLUMNS: tuple[str, ...] = ("file", "split", "call", "start_s", "end_s", "f0_hz", "snr_db")
CALL_COLUMNS: tuple[str, ...] = ("file", "start_s", "end_s", "f0_hz", "snr_db")
TRUTH_COLUMNS: tuple[str, ...] = ("file", "calls", "global_truth")


@dataclass(frozen=True)
class CallEvent:
    """One call placed in a file: ``start_s``/``end_s`` seconds from the file's start, central ``f0_hz``, ``snr_db``."""

    start_s: float
    end_s: float
    f0_hz: float
    snr_db: float


@dataclass(frozen=True)
class OrcaDemoSpec:
    """One synthetic hydrophone data set. Ranges are ``(low, high)``, drawn uniformly per file or call (counts:
    inclusive; ``click_rate_hz``: log-uniform).

    Attributes:
        name: data set name.
        seed: root seed of every random draw.
        n_train_per_class: positive and negative training clips, each.
        n_test_per_class: positive and negative held-out clips, each (0: no ``test/``).
        clip_s: clip length, seconds.
        n_recordings: long recordings (0: no ``recordings/``).
        recording_s: recording length, seconds.
        calls_per_recording: calls in a recording that holds calls.
        recordings_with_calls: share of the recordings that hold calls (rounded to a whole number of files).
        f0_hz: central fundamental of a call, Hz.
        call_s: call duration, seconds (cut to fit a clip).
        harmonics: harmonics of a call, the fundamental included.
        snr_db: SNR of a call, dB (see :mod:`~birdassets.sources.demo.hydrophone`).
        call_margin_s: least distance of a call from the ends of its file, seconds.
        call_gap_s: least silence between calls of a recording, seconds.
        level_dbfs: RMS of a file's background, dB re full scale.
        ship_db: ship noise RMS re the ambient floor, dB.
        flow_db: flow noise RMS re the ambient floor, dB.
        click_db: median click peak re the ambient floor's RMS, dB.
        click_rate_hz: snapping-shrimp clicks per second.
        echolocation_probability: chance that a file holds an echolocation-like click train.
        sample_rate: Hz.
    """

    name: str
    seed: int
    n_train_per_class: int = 160
    n_test_per_class: int = 50
    clip_s: float = 2.0
    n_recordings: int = 10
    recording_s: float = 60.0
    calls_per_recording: tuple[int, int] = (3, 6)
    recordings_with_calls: float = 0.5
    f0_hz: tuple[float, float] = (500.0, 1500.0)
    call_s: tuple[float, float] = (0.5, 2.0)
    harmonics: tuple[int, int] = (4, 10)
    snr_db: tuple[float, float] = (-10.0, 10.0)
    call_margin_s: float = 0.1
    call_gap_s: float = 1.0
    level_dbfs: tuple[float, float] = (-36.0, -24.0)
    ship_db: tuple[float, float] = (-20.0, 10.0)
    flow_db: tuple[float, float] = (-10.0, 15.0)
    click_db: tuple[float, float] = (6.0, 30.0)
    click_rate_hz: tuple[float, float] = (0.5, 40.0)
    echolocation_probability: float = 0.2
    sample_rate: int = 20_000

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise ValueError(f"orca demo {self.name}: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        ranges = ("calls_per_recording", "f0_hz", "call_s", "harmonics", "snr_db", "level_dbfs", "ship_db",
                  "flow_db", "click_db", "click_rate_hz")
        problems = [f"{name} {getattr(self, name)} must be (low, high) with low <= high" for name in ranges
                    if len(getattr(self, name)) != 2 or getattr(self, name)[0] > getattr(self, name)[1]]
        if self.n_train_per_class < 1 or self.n_test_per_class < 0 or self.n_recordings < 0:
            problems.append("needs n_train_per_class >= 1, n_test_per_class >= 0 and n_recordings >= 0")
        if not (0 < self.f0_hz[0] and 2 * self.f0_hz[1] < 0.4 * self.sample_rate and self.harmonics[0] >= 1):
            problems.append(f"f0_hz {self.f0_hz} must be > 0 with 2 harmonics below 0.4 x the sample rate")
        if not 0 < self.call_s[0] <= self.max_clip_call_s:
            problems.append(f"call_s {self.call_s} must start in (0, clip_s - 2 call_margin_s]")
        if self.n_recordings and self.recording_s < self._longest_plan_s():
            problems.append(f"recording_s {self.recording_s} cannot hold {self.calls_per_recording[1]} calls")
        if not (0 <= self.recordings_with_calls <= 1 and 0 <= self.echolocation_probability <= 1):
            problems.append("recordings_with_calls and echolocation_probability must be in [0, 1]")
        if self.click_rate_hz[0] <= 0 or self.calls_per_recording[0] < 1 or self.call_margin_s < 0:
            problems.append("needs click_rate_hz > 0, calls_per_recording >= 1 and call_margin_s >= 0")
        return problems

    def _longest_plan_s(self) -> float:
        most = self.calls_per_recording[1]
        return 2 * self.call_margin_s + most * self.call_s[1] + (most - 1) * self.call_gap_s

    @property
    def max_clip_call_s(self) -> float:
        """The longest call a clip holds, seconds: ``clip_s - 2 call_margin_s``."""
        return self.clip_s - 2 * self.call_margin_s

    def record(self) -> dict:
        """The spec and the generator version, JSON-ready (written as ``demo_spec.json``)."""
        return {"generator": "orca-clips", "generator_version": ORCA_GENERATOR_VERSION,
                "spec": dataclasses.asdict(self)}

    def digest(self) -> str:
        """sha256 of :meth:`record` (what ``.complete`` holds)."""
        return record_digest(self.record())

    def rng(self, stream: int, *index: int) -> np.random.Generator:
        """The random generator of one item: ``SeedSequence([seed, stream, *index])``."""
        return np.random.default_rng(np.random.SeedSequence([self.seed, stream, *index]))

    def draw_levels(self, rng: np.random.Generator) -> NoiseLevels:
        """One file's background mixture."""
        rate = math.exp(rng.uniform(math.log(self.click_rate_hz[0]), math.log(self.click_rate_hz[1])))
        return NoiseLevels(ship_db=float(rng.uniform(*self.ship_db)), flow_db=float(rng.uniform(*self.flow_db)),
                           click_db=float(rng.uniform(*self.click_db)), click_rate_hz=rate,
                           echolocation=bool(rng.uniform() < self.echolocation_probability))


ORCA_TASKS: dict[str, OrcaDemoSpec] = {"demo-orca": OrcaDemoSpec(name="demo-orca", seed=20240604)}
"""Built-in hydrophone data sets: ``demo-orca`` (a call detector's training clips and held-out recordings; not a
benchmark task)."""


# --------------------------------------------------------------------------------------------------- audio


def _mix(
    spec: OrcaDemoSpec, rng: np.random.Generator, noise: np.ndarray, placed: list[tuple[int, PulsedCall]]
) -> tuple[np.ndarray, list[CallEvent]]:
    """``noise`` (a file's background, ``[samples]``) with each ``(first sample, call)`` of ``placed`` added, scaled
    to the file's level. Draws, in order: each call's phase and SNR, then the file's level.

    Returns:
        ``(audio [samples] float32, the calls placed)``.
    """
    sr = spec.sample_rate
    audio = noise.astype(np.float64)
    events = []
    for first, call in placed:
        wave, envelope = pulsed_call(call, sr, rng)
        where = slice(first, first + len(wave))
        snr_db = float(rng.uniform(*spec.snr_db))
        audio[where] += scaled_call(noise[where], wave, envelope, snr_db, sr)
        events.append(CallEvent(first / sr, (first + len(wave)) / sr, call.f0_hz, snr_db))
    rms = float(np.sqrt(np.mean(np.square(noise, dtype=np.float64))))
    return to_level(audio, rms, float(rng.uniform(*spec.level_dbfs))), events


def _draw_call(spec: OrcaDemoSpec, rng: np.random.Generator, max_s: float) -> PulsedCall:
    return draw_call(rng, spec.f0_hz, spec.call_s, spec.harmonics, max_s=max_s)


def _samples(spec: OrcaDemoSpec, seconds: float) -> int:
    return int(round(seconds * spec.sample_rate))


def clip(spec: OrcaDemoSpec, split: str, positive: bool, index: int) -> tuple[np.ndarray, CallEvent | None]:
    """Clip ``index`` of a clip folder (``split`` ``"train"`` or ``"test"``; with a call when ``positive``).

    The call (cut to :attr:`OrcaDemoSpec.max_clip_call_s`) starts on a uniformly drawn sample where it lies
    ``call_margin_s`` or more from both ends of the clip.

    Returns:
        ``(audio [clip_s * sample_rate] float32, the call or None)``.
    """
    rng = spec.rng(CLIP_STREAMS[(split, positive)], index)
    n = _samples(spec, spec.clip_s)
    noise = background(n, spec.sample_rate, rng, spec.draw_levels(rng))
    placed = []
    if positive:
        call = _draw_call(spec, rng, spec.max_clip_call_s)
        margin = _samples(spec, spec.call_margin_s)
        placed.append((int(rng.integers(margin, max(n - margin - call.samples(spec.sample_rate), margin) + 1)), call))
    audio, events = _mix(spec, rng, noise, placed)
    return audio, (events[0] if events else None)


def recording_plan(spec: OrcaDemoSpec) -> np.ndarray:
    """Which recordings hold calls, ``[n_recordings]`` bool: ``round(recordings_with_calls * n_recordings)`` of them,
    chosen at random."""
    count = round(spec.recordings_with_calls * spec.n_recordings)
    chosen = spec.rng(PLAN_STREAM).permutation(spec.n_recordings)[:count]
    plan = np.zeros(spec.n_recordings, dtype=bool)
    plan[chosen] = True
    return plan


def place_calls(rng: np.random.Generator, lengths: list[int], n: int, margin: int, gap: int) -> list[int]:
    """First samples (in order) of calls of ``lengths`` samples in a file of ``n`` samples: inside
    ``[margin, n - margin)``, ``gap`` samples or more apart, the free samples split at random (Dirichlet, rounded
    down) among the ``len + 1`` spaces around them.

    Raises:
        ValueError: the calls do not fit.
    """
    lengths_ = np.asarray(lengths, dtype=np.int64)
    free = n - 2 * margin - int(lengths_.sum()) - max(len(lengths_) - 1, 0) * gap
    if free < 0:
        raise ValueError(f"{len(lengths_)} calls of {lengths_.sum()} samples do not fit in {n} samples")
    spaces = np.floor(rng.dirichlet(np.ones(len(lengths_) + 1)) * free).astype(np.int64)
    before = np.concatenate([[0], np.cumsum(lengths_)[:-1]]).astype(np.int64) if len(lengths_) else lengths_
    return [int(x) for x in margin + np.cumsum(spaces[:-1]) + before + gap * np.arange(len(lengths_))]


def recording(spec: OrcaDemoSpec, index: int, with_calls: bool) -> tuple[np.ndarray, list[CallEvent]]:
    """Long recording ``index`` (``with_calls``: its entry of :func:`recording_plan`).

    Returns:
        ``(audio [recording_s * sample_rate] float32, its calls in time order; none without calls)``.
    """
    rng = spec.rng(RECORDING_STREAM, index)
    n = _samples(spec, spec.recording_s)
    noise = background(n, spec.sample_rate, rng, spec.draw_levels(rng))
    count = int(rng.integers(spec.calls_per_recording[0], spec.calls_per_recording[1] + 1)) if with_calls else 0
    calls = [_draw_call(spec, rng, spec.call_s[1]) for _ in range(count)]
    firsts = place_calls(rng, [c.samples(spec.sample_rate) for c in calls], n, _samples(spec, spec.call_margin_s),
                         _samples(spec, spec.call_gap_s))
    return _mix(spec, rng, noise, list(zip(firsts, calls)))


# ------------------------------------------------------------------------------------------------- writing


def write_flac(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono float32 ``[samples]`` as FLAC PCM_16 (libFLAC output is deterministic: the same samples give the
    same bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sample_rate, format="FLAC", subtype="PCM_16")


def _times(event: CallEvent) -> dict[str, str]:
    return {"start_s": f"{event.start_s:.5f}", "end_s": f"{event.end_s:.5f}", "f0_hz": f"{event.f0_hz:.1f}",
            "snr_db": f"{event.snr_db:.2f}"}


def _write_clips(spec: OrcaDemoSpec, root: Path, writer: BackgroundWriter) -> list[dict[str, str]]:
    """Every clip folder's files; their ``clips.csv`` rows."""
    rows = []
    for folder, (split, labels) in CLIP_FOLDERS.items():
        count = spec.n_train_per_class if split == "train" else spec.n_test_per_class
        prefix = "pos" if folder[-1] == POSITIVE_DIR else "neg"
        for i in range(count):
            audio, event = clip(spec, split, bool(labels), i)
            name = "/".join((*folder, f"{prefix}_{i:04d}.flac"))
            writer.write(root / name, audio, spec.sample_rate)
            blank = dict.fromkeys(("start_s", "end_s", "f0_hz", "snr_db"), "")
            rows.append({"file": name, "split": split, "call": str(int(event is not None)),
                         **(_times(event) if event else blank)})
    return rows


def _write_recordings(
    spec: OrcaDemoSpec, root: Path, writer: BackgroundWriter
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """``recordings/rec_<nnn>.flac``; the rows of ``recordings.csv`` and ``recordings_truth.csv``."""
    calls, truth = [], []
    for i, with_calls in enumerate(recording_plan(spec)):
        audio, events = recording(spec, i, bool(with_calls))
        name = f"{RECORDINGS_DIR}/rec_{i:03d}.flac"
        writer.write(root / name, audio, spec.sample_rate)
        calls.extend({"file": name, **_times(event)} for event in events)
        truth.append({"file": name, "calls": str(len(events)), "global_truth": str(int(bool(events)))})
    return calls, truth


def write_orca_dataset(spec: OrcaDemoSpec, root: Path) -> None:
    """Every file of the data set (see the module docstring) except ``.complete``, into ``root``."""
    with BackgroundWriter(write_flac) as writer:
        clip_rows = _write_clips(spec, root, writer)
        call_rows, truth_rows = _write_recordings(spec, root, writer)
    write_csv(root / CLIPS_CSV, CLIP_COLUMNS, clip_rows)
    write_csv(root / RECORDINGS_CSV, CALL_COLUMNS, call_rows)
    write_csv(root / RECORDINGS_TRUTH_CSV, TRUTH_COLUMNS, truth_rows)
    write_json(root / SPEC_FILE, spec.record(), sort_keys=True)


def read_recording_truth(root: str | Path) -> dict[str, int]:
    """``{recording path: global truth}`` from ``recordings_truth.csv`` (1 = the recording holds a call); paths
    absolute, as :func:`birdassets.sources.folder.find_audio` lists them."""
    import csv

    root = Path(root).absolute()
    with open(root / RECORDINGS_TRUTH_CSV, newline="") as handle:
        return {str(root / row["file"]): int(row["global_truth"]) for row in csv.DictReader(handle)}
