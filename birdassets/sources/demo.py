"""Deterministic synthetic bird-like audio, written in BirdCLEF layout, so the platform runs without downloads.

The generator knows 12 invented species (eBird-style 6-letter codes such as ``"glawar"``), each with a
parametric call (:class:`SpeciesCall`):

* ``fm_sweep``: one or a few notes whose frequency glides linearly or exponentially (integrated phase),
  optionally with vibrato (a whistle is a sweep of zero bandwidth with vibrato);
* ``trill``: a phrase of many short (20-40 ms) notes repeated at 12-25 Hz;
* ``harmonic_stack``: a tonal note with decaying harmonics (``decay ** k`` amplitude for harmonic ``k``);
* ``two_note``: notes alternating between two pitches (``note_pitch_ratios``);
* ``buzz``: a tone under sharp periodic amplitude pulses (``am_hz``), which spreads it into sidebands.

Calls live in 2-10 kHz (32 kHz sample rate); species differ in pitch, glide, rhythm and timbre, and
their ranges overlap partly. Every recording draws its own "individual": small pitch (a few %) and
tempo (~8 %) jitter, plus per-note pitch jitter of 1 %.

Background (everything that is not a labelled call) is realistic-ish field noise:

* pink (1/f power) noise, shaped in the frequency domain: the noise floor used for the SNR;
* wind rumble: brown noise low-passed at ~250 Hz under slow (< 0.5 Hz) gusty amplitude modulation,
  at ``wind_db`` relative to the pink noise;
* in train recordings, other species calling quietly (``background_gain_db`` below the focal bird);
  they are listed in ``secondary_labels``.

SNR (dB) is ``10 log10(P_calls / P_pink)`` where ``P_calls`` is the mean power of the call mixture over
the samples where a call is sounding (envelope > 10 % of its peak) and ``P_pink`` the pink-noise power.

Output (BirdCLEF layout, read back by :func:`birdassets.sources.birdclef.read_birdclef`)::

    root/train.csv                                   BirdCLEF columns, one row per focal recording
    root/train_audio/<code>/<code>_<nnn>.ogg         focal recordings, 4-15 s
    root/test_soundscapes/<task>_sc<nnn>.ogg         soundscapes of ``windows_per_soundscape`` x 5 s
    root/soundscape_labels.csv                       filename, start_s, end_s, labels (space-separated)
    root/demo_spec.json                              the task spec and species table used
    root/.complete                                   the spec hash; written last

Soundscapes are continuous noise; each 5-s window gets its own set of species (1-2 in ``demo-clear``,
2-4 in ``demo-noisy``) whose phrases lie entirely inside the window, so window labels are exact.
Every species appears in at least one test window (when there are at least as many windows as species).

Audio is OGG Vorbis (libsndfile compression level 0.3), 32 kHz mono, each file peak-normalised to
``peak`` (0.7). Generation is deterministic: every file draws from its own
``SeedSequence([seed, stream, i, j])``, and the OGG stream serial number (random in libsndfile) is
stamped to a value derived from the file name, so the same spec gives byte-identical files (and
identical sha256s in the manifest). :func:`generate` is idempotent
(``.complete`` holding the spec hash short-circuits it) and atomic (it writes a temporary sibling
directory and renames it into place, so a half-written data set is never visible at ``root``).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import shutil
import tempfile
import uuid
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.fft
import soundfile as sf

from birdassets.audio.io import resample
from birdassets.sources.birdclef import read_birdclef
from birdassets.sources.ingest import IngestResult

GENERATOR_VERSION = 1
CALL_KINDS: tuple[str, ...] = ("fm_sweep", "trill", "harmonic_stack", "two_note", "buzz")
COMPLETE_MARKER = ".complete"
TRAIN_COLUMNS: tuple[str, ...] = (
    "primary_label",
    "secondary_labels",
    "type",
    "filename",
    "collection",
    "rating",
    "url",
    "latitude",
    "longitude",
    "scientific_name",
    "common_name",
    "author",
    "license",
)
VORBIS_COMPRESSION_LEVEL = 0.3  # libsndfile 0 (best quality) .. 1; the default (~0.6) smears quiet noise near calls
_ACTIVE_FRACTION = 0.1  # a sample counts as "calling" when the envelope exceeds this fraction of its peak


@dataclass(frozen=True)
class SpeciesCall:
    """Parameters of one species' call. Frequencies in Hz, times in seconds.

    A phrase is ``notes_per_phrase`` notes with onsets ``1 / note_rate_hz`` apart; each note lasts
    ``note_s`` and glides from ``base_hz * r`` to ``(base_hz + bandwidth_hz) * r`` (``r`` cycles through
    ``note_pitch_ratios``), linearly or (``exponential``) geometrically. Phrases are separated by
    ``phrase_gap_s`` of silence on average.

    Attributes:
        code: eBird-style label code.
        common_name: invented English name.
        scientific_name: invented binomial.
        kind: one of :data:`CALL_KINDS` (descriptive; the parameters define the sound).
        base_hz: start frequency of the fundamental, Hz.
        bandwidth_hz: glide over one note, Hz (negative: downward).
        note_s: note duration, seconds.
        notes_per_phrase: notes in one phrase.
        note_rate_hz: note onsets per second inside a phrase.
        phrase_gap_s: mean silence between phrases, seconds.
        harmonics: number of harmonics (1 = pure fundamental).
        harmonic_decay: amplitude ratio between successive harmonics.
        exponential: glide geometrically (constant octaves per second) instead of linearly.
        attack_frac: fraction of the note spent in the raised-cosine attack.
        release_power: exponent of the ``(1 - u) ** p`` release after the attack (larger: more percussive).
        note_pitch_ratios: per-note frequency multipliers, cycled over the notes of a phrase.
        vibrato_hz: vibrato rate, Hz (0: none).
        vibrato_depth_hz: vibrato depth, Hz.
        am_hz: rate of sharp amplitude pulses (buzz), Hz (0: none).
        call_type: BirdCLEF ``type`` value (``"song"`` or ``"call"``).
    """

    code: str
    common_name: str
    scientific_name: str
    kind: str
    base_hz: float
    bandwidth_hz: float
    note_s: float
    notes_per_phrase: int
    note_rate_hz: float
    phrase_gap_s: float
    harmonics: int = 1
    harmonic_decay: float = 0.5
    exponential: bool = False
    attack_frac: float = 0.2
    release_power: float = 1.5
    note_pitch_ratios: tuple[float, ...] = (1.0,)
    vibrato_hz: float = 0.0
    vibrato_depth_hz: float = 0.0
    am_hz: float = 0.0
    call_type: str = "call"

    def __post_init__(self) -> None:
        if self.kind not in CALL_KINDS:
            raise ValueError(f"species {self.code}: kind {self.kind!r} not in {CALL_KINDS}")
        if self.notes_per_phrase < 1 or self.note_s <= 0 or self.note_rate_hz <= 0:
            raise ValueError(f"species {self.code}: needs >= 1 note of positive duration and rate")
        if self.notes_per_phrase > 1 and self.note_s > 1.0 / self.note_rate_hz:
            raise ValueError(f"species {self.code}: notes overlap (note_s > 1 / note_rate_hz)")
        if not 0.0 < self.attack_frac < 1.0:
            raise ValueError(f"species {self.code}: attack_frac must be in (0, 1)")

    @property
    def phrase_s(self) -> float:
        """Duration of one phrase at nominal tempo, seconds."""
        return (self.notes_per_phrase - 1) / self.note_rate_hz + self.note_s


SPECIES: tuple[SpeciesCall, ...] = (
    SpeciesCall("copthr", "Copper Thrush", "Synthetica cuprea", "harmonic_stack", 2000.0, 120.0, 0.35, 2, 2.2, 1.2,
                harmonics=4, harmonic_decay=0.5, attack_frac=0.3, release_power=1.0, call_type="song"),
    SpeciesCall("slaflu", "Slate Flutewren", "Synthetica ardesiaca", "harmonic_stack", 2650.0, -250.0, 0.22, 3, 3.2,
                1.0,
                harmonics=3, harmonic_decay=0.6, vibrato_hz=6.0, vibrato_depth_hz=50.0, call_type="song"),
    SpeciesCall("palswe", "Pale Sweeper", "Synthetica pallida", "fm_sweep", 2950.0, 800.0, 0.4, 1, 1.0, 0.9,
                harmonics=2, harmonic_decay=0.3, attack_frac=0.5, release_power=2.0),
    SpeciesCall("cintri", "Cinder Trillfinch", "Synthetica cinerea", "trill", 3900.0, 450.0, 0.03, 14, 15.0, 1.5,
                harmonics=2, harmonic_decay=0.4, attack_frac=0.3, call_type="song"),
    SpeciesCall("ashbun", "Ash Bunting", "Synthetica fraxinea", "two_note", 4600.0, -150.0, 0.18, 2, 3.5, 1.1,
                note_pitch_ratios=(1.0, 1.14), attack_frac=0.15, call_type="song"),
    SpeciesCall("marwhi", "Marsh Whistler", "Synthetica palustris", "fm_sweep", 6000.0, 0.0, 0.7, 1, 1.0, 1.4,
                vibrato_hz=7.0, vibrato_depth_hz=180.0, attack_frac=0.3, release_power=1.0, call_type="song"),
    SpeciesCall("duschi", "Dusky Chiffchat", "Synthetica fusca", "fm_sweep", 5600.0, -1800.0, 0.07, 4, 7.0, 1.0,
                attack_frac=0.1, release_power=1.2),
    SpeciesCall("glawar", "Glass Warbler", "Synthetica vitrea", "fm_sweep", 5200.0, 2000.0, 0.12, 3, 5.0, 0.8,
                exponential=True, attack_frac=0.6, release_power=1.0, call_type="song"),
    SpeciesCall("ambbuz", "Amber Buzzwing", "Synthetica electra", "buzz", 6700.0, 300.0, 0.5, 1, 1.0, 1.0,
                am_hz=110.0, attack_frac=0.2, release_power=1.0),
    SpeciesCall("velpip", "Velvet Piper", "Synthetica velutina", "two_note", 7200.0, 0.0, 0.1, 4, 5.0, 1.2,
                note_pitch_ratios=(1.0, 1.1), attack_frac=0.3, call_type="song"),
    SpeciesCall("reetin", "Reed Tinkerbird", "Synthetica arundinis", "trill", 8700.0, -600.0, 0.02, 20, 24.0, 1.3,
                attack_frac=0.3),
    SpeciesCall("hazchi", "Hazel Chirper", "Synthetica avellana", "fm_sweep", 9800.0, -1000.0, 0.05, 6, 10.0, 0.9,
                exponential=True, attack_frac=0.15),
)
"""The species pool, the same for every task; a task uses the first ``n_species``."""


@dataclass(frozen=True)
class DemoTaskSpec:
    """One synthetic data set. Ranges are ``(low, high)``, drawn uniformly per item.

    Attributes:
        name: task name; also the prefix of the soundscape files.
        seed: root seed of every random draw.
        n_species: species used, the first ``n_species`` of :data:`SPECIES` (2..12).
        train_per_species: focal recordings per species.
        train_length_s: focal recording length range, seconds.
        n_test_windows: labelled 5-s test windows in total.
        window_s: test window length, seconds.
        windows_per_soundscape: windows per soundscape file (the last file holds the remainder).
        test_species_per_window: range of species calling in one test window (inclusive).
        snr_db: SNR range, dB (see the module docstring).
        wind_db: wind-rumble power relative to the pink noise, dB.
        background_probability: chance that a train recording has other species in the background.
        background_species: range of background species counts when it has (inclusive).
        background_gain_db: background species level relative to the focal bird, dB.
        test_gain_db: per-species level spread inside a test window, dB.
        pitch_jitter: per-recording (individual) relative pitch standard deviation.
        tempo_jitter: per-recording relative tempo standard deviation.
        sample_rate: Hz.
        peak: absolute peak every file is normalised to.
        latitude: centre latitude of the invented recording sites, degrees.
        longitude: centre longitude, degrees.
    """

    name: str
    seed: int
    n_species: int = 12
    train_per_species: int = 10
    train_length_s: tuple[float, float] = (4.0, 15.0)
    n_test_windows: int = 100
    window_s: float = 5.0
    windows_per_soundscape: int = 10
    test_species_per_window: tuple[int, int] = (1, 2)
    snr_db: tuple[float, float] = (15.0, 30.0)
    wind_db: float = -10.0
    background_probability: float = 0.15
    background_species: tuple[int, int] = (1, 1)
    background_gain_db: tuple[float, float] = (-20.0, -14.0)
    test_gain_db: tuple[float, float] = (-4.0, 0.0)
    pitch_jitter: float = 0.02
    tempo_jitter: float = 0.08
    sample_rate: int = 32000
    peak: float = 0.7
    latitude: float = 47.6
    longitude: float = 9.2

    def __post_init__(self) -> None:
        if not 2 <= self.n_species <= len(SPECIES):
            raise ValueError(f"task {self.name}: n_species must be in [2, {len(SPECIES)}], got {self.n_species}")
        low, high = self.test_species_per_window
        if not 1 <= low <= high <= self.n_species:
            raise ValueError(f"task {self.name}: test_species_per_window {self.test_species_per_window} invalid")
        if self.train_per_species < 1 or self.n_test_windows < 1 or self.windows_per_soundscape < 1:
            raise ValueError(f"task {self.name}: needs >= 1 train recording, test window and window per soundscape")
        if self.train_length_s[0] < 2.0 or self.train_length_s[1] < self.train_length_s[0]:
            raise ValueError(f"task {self.name}: train_length_s {self.train_length_s} must be >= 2 s and ordered")
        longest_phrase = max(s.phrase_s for s in self.species) * (1 + 4 * self.tempo_jitter)
        if self.window_s < longest_phrase + 0.5:
            raise ValueError(
                f"task {self.name}: window_s {self.window_s} too short for a phrase ({longest_phrase:.2f} s)"
            )
        if self.background_species[1] > self.n_species - 1:
            raise ValueError(f"task {self.name}: more background species than other species")

    @property
    def species(self) -> tuple[SpeciesCall, ...]:
        """The species of this task."""
        return SPECIES[: self.n_species]

    def digest(self) -> str:
        """sha256 of the spec, the species table and the generator version (what ``.complete`` holds)."""
        payload = {
            "generator_version": GENERATOR_VERSION,
            "spec": dataclasses.asdict(self),
            "species": [dataclasses.asdict(s) for s in self.species],
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


DEMO_TASKS: dict[str, DemoTaskSpec] = {
    "demo-clear": DemoTaskSpec(name="demo-clear", seed=20240601),
    "demo-noisy": DemoTaskSpec(
        name="demo-noisy",
        seed=20240602,
        test_species_per_window=(2, 4),
        snr_db=(-6.0, 6.0),
        wind_db=6.0,
        background_probability=0.7,
        background_species=(1, 2),
        background_gain_db=(-12.0, -4.0),
        test_gain_db=(-8.0, 0.0),
        pitch_jitter=0.03,
    ),
    # Pretraining data (not a benchmark task): other individuals of the same species, clean focal recordings,
    # like Xeno-canto focal audio before BirdSet's soundscape tests. Encoders trained here never see the
    # recordings the benchmark tasks are scored on.
    "demo-pretrain": DemoTaskSpec(
        name="demo-pretrain", seed=20240603, train_per_species=12, n_test_windows=10, windows_per_soundscape=10
    ),
}
"""Built-in data sets: ``demo-clear`` (high SNR, 1-2 species per window, rare quiet background birds),
``demo-noisy`` (low SNR, strong wind, 2-4 species per window, frequent louder background birds) and
``demo-pretrain`` (focal recordings of other individuals, for training encoders; not benchmarked)."""


# ----------------------------------------------------------------------------------------------- audio


def _rng(spec: DemoTaskSpec, stream: int, *index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([spec.seed, stream, *index]))


def _filtered_noise(n: int, rng: np.random.Generator, gain_of_hz, sample_rate: int) -> np.ndarray:
    """Gaussian noise with amplitude spectrum ``gain_of_hz(f)``, drawn directly in the frequency domain.

    Returns:
        ``[n]`` float32, zero mean, unit RMS.
    """
    size = scipy.fft.next_fast_len(n, real=True)
    bins = size // 2 + 1
    spectrum = rng.standard_normal(bins, dtype=np.float32) + 1j * rng.standard_normal(bins, dtype=np.float32)
    spectrum *= gain_of_hz(np.arange(bins, dtype=np.float32) * np.float32(sample_rate / size))
    spectrum[0] = 0.0
    noise = scipy.fft.irfft(spectrum, size)[:n]
    return noise / (np.sqrt(np.mean(noise**2)) + np.float32(1e-12))


def pink_noise(n: int, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """1/f-power noise (amplitude ``1/sqrt(f)`` above 20 Hz), ``[n]`` float32, unit RMS."""
    return _filtered_noise(n, rng, lambda f: 1.0 / np.sqrt(np.maximum(f, np.float32(20.0))), sample_rate)


def wind_rumble(
    n: int, rng: np.random.Generator, sample_rate: int, cutoff_hz: float = 250.0, control_rate: int = 2000
) -> np.ndarray:
    """Gusty low-frequency rumble, ``[n]`` float32, unit RMS.

    Brown (1/f^2 power) noise through a 4th-order low-pass at ``cutoff_hz``, times a slow positive gust
    envelope (noise low-passed at 0.4 Hz, exponentiated); synthesised at ``control_rate`` Hz and
    resampled (soxr) to ``sample_rate``, since it has no content above ~1 kHz.
    """
    n_low = int(np.ceil(n * control_rate / sample_rate)) + 16
    rumble = _filtered_noise(
        n_low, rng, lambda f: (1.0 / np.maximum(f, np.float32(5.0))) / (1.0 + (f / cutoff_hz) ** 4), control_rate
    )
    gusts = _filtered_noise(n_low, rng, lambda f: np.exp(-((f / np.float32(0.4)) ** 2)), control_rate)
    wind = resample(rumble * np.exp(np.float32(0.7) * gusts), control_rate, sample_rate)
    wind = np.pad(wind, (0, max(0, n - len(wind))))[:n]
    return wind / (np.sqrt(np.mean(wind**2)) + np.float32(1e-12))


def phrase(
    call: SpeciesCall, sample_rate: int, rng: np.random.Generator, pitch: float, tempo: float
) -> tuple[np.ndarray, np.ndarray]:
    """Synthesize one phrase of ``call``, vectorised over samples.

    Args:
        call: the species' call.
        sample_rate: Hz.
        rng: draws the per-note pitch jitter.
        pitch: individual pitch multiplier (1 = nominal).
        tempo: individual tempo multiplier (> 1: faster, shorter notes).

    Returns:
        ``(wave [samples], envelope [samples])`` float64; peak envelope 1.
    """
    note_s = call.note_s / tempo
    note_rate = call.note_rate_hz * tempo
    n = int(np.ceil(((call.notes_per_phrase - 1) / note_rate + note_s) * sample_rate))
    t = np.arange(n) / sample_rate
    note = np.minimum((t * note_rate).astype(np.int64), call.notes_per_phrase - 1)
    tau = t - note / note_rate
    u = np.clip(tau / note_s, 0.0, 1.0)
    sounding = tau < note_s

    ratios = np.asarray(call.note_pitch_ratios)[np.arange(call.notes_per_phrase) % len(call.note_pitch_ratios)]
    ratios = ratios * (1.0 + 0.01 * rng.standard_normal(call.notes_per_phrase))
    f_start = call.base_hz * pitch * ratios[note]
    f_end = (call.base_hz + call.bandwidth_hz) * pitch * ratios[note]
    freq = f_start * (f_end / f_start) ** u if call.exponential else f_start + (f_end - f_start) * u
    if call.vibrato_hz > 0:
        freq = freq + call.vibrato_depth_hz * pitch * np.sin(2 * np.pi * call.vibrato_hz * t)
    phase = 2 * np.pi * np.cumsum(freq) / sample_rate + rng.uniform(0, 2 * np.pi)

    wave = np.zeros(n)
    for k in range(1, call.harmonics + 1):  # a handful of harmonics; each term is a vector op
        below_nyquist = k * freq < 0.45 * sample_rate
        wave += call.harmonic_decay ** (k - 1) * np.sin(k * phase) * below_nyquist

    a = call.attack_frac
    envelope = np.where(
        u < a,
        0.5 - 0.5 * np.cos(np.pi * u / a),
        ((1.0 - u) / (1.0 - a)) ** call.release_power,
    ) * sounding
    if call.am_hz > 0:
        envelope = envelope * (0.5 + 0.5 * np.sin(2 * np.pi * call.am_hz * t)) ** 4
    return wave * envelope, envelope / max(envelope.max(), 1e-12)


def calls(
    call: SpeciesCall,
    n: int,
    sample_rate: int,
    rng: np.random.Generator,
    *,
    pitch: float,
    tempo: float,
    start_s: float = 0.0,
    end_s: float | None = None,
    max_phrases: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Phrases of one individual placed inside ``[start_s, end_s)`` of an ``n``-sample buffer.

    Phrases never cross ``end_s``; at least one phrase is placed when it fits. Gaps between phrases are
    ``phrase_gap_s`` times a uniform(0.5, 1.5) factor; the first onset is uniform within one gap.

    Returns:
        ``(wave [n], envelope [n])`` float64.
    """
    end_s = n / sample_rate if end_s is None else end_s
    wave, envelope = np.zeros(n), np.zeros(n)
    onset = start_s + rng.uniform(0.05, 0.05 + call.phrase_gap_s)
    placed = 0
    while max_phrases is None or placed < max_phrases:
        piece, piece_env = phrase(call, sample_rate, rng, pitch, tempo)
        if onset + len(piece) / sample_rate > end_s:
            # the first phrase must fit: pull it back to the latest onset that fits
            onset = end_s - len(piece) / sample_rate - 0.02
            if placed or onset < start_s:
                break
        first = int(round(onset * sample_rate))
        wave[first : first + len(piece)] += piece
        envelope[first : first + len(piece)] = np.maximum(envelope[first : first + len(piece)], piece_env)
        placed += 1
        onset += len(piece) / sample_rate + call.phrase_gap_s * rng.uniform(0.5, 1.5) / tempo
    return wave, envelope


def _individual(spec: DemoTaskSpec, rng: np.random.Generator) -> dict[str, float]:
    """Per-recording pitch and tempo multipliers: 1 + N(0, jitter), clipped at 2.5 standard deviations."""

    def draw(jitter: float) -> float:
        return float(1.0 + np.clip(jitter * rng.standard_normal(), -2.5 * jitter, 2.5 * jitter))

    pitch = draw(spec.pitch_jitter)
    return {"pitch": pitch, "tempo": draw(spec.tempo_jitter)}


def _active_power(wave: np.ndarray, envelope: np.ndarray) -> float:
    active = envelope > _ACTIVE_FRACTION
    return float(np.mean(wave[active] ** 2)) if active.any() else float(np.mean(wave**2)) + 1e-12


def _noise_bed(spec: DemoTaskSpec, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(pink [n] unit RMS, pink + wind [n])``."""
    pink = pink_noise(n, rng, spec.sample_rate)
    wind = wind_rumble(n, rng, spec.sample_rate)
    return pink, pink + 10 ** (spec.wind_db / 20) * wind


def _db(gain_db: float) -> float:
    return 10 ** (gain_db / 20)


def train_recording(
    spec: DemoTaskSpec, species_index: int, recording_index: int
) -> tuple[np.ndarray, list[str], float]:
    """One focal recording.

    Returns:
        ``(audio [samples] float32 peak-normalised, background species codes, snr_db)``.
    """
    rng = _rng(spec, 1, species_index, recording_index)
    sr = spec.sample_rate
    n = int(round(rng.uniform(*spec.train_length_s) * sr))
    focal = spec.species[species_index]
    wave, envelope = calls(focal, n, sr, rng, **_individual(spec, rng))
    signal_power = _active_power(wave, envelope)

    background: list[str] = []
    if rng.uniform() < spec.background_probability:
        others = [i for i in range(spec.n_species) if i != species_index]
        count = int(rng.integers(spec.background_species[0], spec.background_species[1] + 1))
        for other in rng.choice(others, size=count, replace=False):
            bg_wave, bg_envelope = calls(spec.species[other], n, sr, rng, **_individual(spec, rng))
            bg_power = _active_power(bg_wave, bg_envelope)
            gain = _db(rng.uniform(*spec.background_gain_db)) * np.sqrt(signal_power / bg_power)
            wave = wave + gain * bg_wave
            background.append(spec.species[other].code)

    snr_db = float(rng.uniform(*spec.snr_db))
    pink, noise = _noise_bed(spec, n, rng)
    audio = wave + np.sqrt(signal_power / 10 ** (snr_db / 10)) * noise  # pink has unit power
    return _normalise(audio, spec.peak), background, snr_db


def soundscape(spec: DemoTaskSpec, soundscape_index: int, window_species: list[list[int]]) -> np.ndarray:
    """One soundscape of ``len(window_species)`` windows; window ``w`` holds calls of ``window_species[w]``.

    Returns:
        audio ``[windows * window_s * sample_rate]`` float32, peak-normalised.
    """
    rng = _rng(spec, 2, soundscape_index)
    sr = spec.sample_rate
    window_n = int(round(spec.window_s * sr))
    _, audio = _noise_bed(spec, window_n * len(window_species), rng)  # its pink part has unit power
    audio = audio.astype(np.float64)
    for w, members in enumerate(window_species):
        mix, envelope = np.zeros(window_n), np.zeros(window_n)
        for member in members:
            wave, env = calls(
                spec.species[member], window_n, sr, rng, **_individual(spec, rng),
                start_s=0.05, end_s=spec.window_s - 0.05, max_phrases=int(rng.integers(1, 4)),
            )
            mix += _db(rng.uniform(*spec.test_gain_db)) * wave / np.sqrt(_active_power(wave, env))
            envelope = np.maximum(envelope, env)
        snr_db = rng.uniform(*spec.snr_db)
        audio[w * window_n : (w + 1) * window_n] += mix * np.sqrt(10 ** (snr_db / 10) / _active_power(mix, envelope))
    return _normalise(audio, spec.peak)


def _normalise(audio: np.ndarray, peak: float) -> np.ndarray:
    return (audio * (peak / max(np.abs(audio).max(), 1e-12))).astype(np.float32)


def window_species_plan(spec: DemoTaskSpec) -> list[list[int]]:
    """Species indices calling in each test window, ``[n_test_windows][k]`` (sorted per window).

    The first member of window ``w`` walks through shuffled copies of all species, so every species
    appears once the windows outnumber the species; the others are drawn without replacement.
    """
    rng = _rng(spec, 3)
    cycle = np.concatenate([rng.permutation(spec.n_species) for _ in range(-(-spec.n_test_windows // spec.n_species))])
    low, high = spec.test_species_per_window
    windows = []
    for w in range(spec.n_test_windows):
        first = int(cycle[w])
        count = int(rng.integers(low, high + 1))
        others = rng.choice([i for i in range(spec.n_species) if i != first], size=count - 1, replace=False)
        windows.append(sorted([first, *map(int, others)]))
    return windows


# ----------------------------------------------------------------------------------------------- files

_BIT_REVERSED = np.array([int(f"{b:08b}"[::-1], 2) for b in range(256)], dtype=np.uint8)


def _ogg_crc(page: bytes) -> int:
    """Ogg page CRC (poly 0x04C11DB7, MSB-first, init 0, no final xor) via zlib's reflected CRC-32."""
    reflected = zlib.crc32(_BIT_REVERSED[np.frombuffer(page, dtype=np.uint8)].tobytes(), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def stamp_ogg_serial(data: bytes, serial: int) -> bytes:
    """Set every page's bitstream serial number to ``serial`` and fix the page CRCs.

    libsndfile draws the serial from the clock, which makes otherwise identical files differ.
    """
    out = bytearray(data)
    pos = 0
    while pos < len(out):
        if out[pos : pos + 4] != b"OggS":
            raise ValueError(f"not an Ogg page at byte {pos}")
        segments = out[pos + 26]
        length = 27 + segments + sum(out[pos + 27 : pos + 27 + segments])
        out[pos + 14 : pos + 18] = serial.to_bytes(4, "little")
        out[pos + 22 : pos + 26] = b"\0\0\0\0"
        out[pos + 22 : pos + 26] = _ogg_crc(bytes(out[pos : pos + length])).to_bytes(4, "little")
        pos += length
    return bytes(out)


def write_ogg(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono float32 ``[samples]`` as OGG Vorbis with a serial number derived from the file name."""
    buffer = io.BytesIO()
    sf.write(buffer, audio, sample_rate, format="OGG", subtype="VORBIS", compression_level=VORBIS_COMPRESSION_LEVEL)
    serial = int.from_bytes(hashlib.sha256(path.name.encode()).digest()[:4], "little")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(stamp_ogg_serial(buffer.getvalue(), serial))


class _BackgroundWriter:
    """Encodes OGG files on worker threads while the caller synthesises the next ones.

    libsndfile is called through cffi, which releases the GIL, so encoding overlaps synthesis. At most
    ``max_pending`` waveforms wait in memory; the first failure is re-raised.
    """

    def __init__(self, workers: int = 2, max_pending: int = 8):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="demo-ogg")
        self._pending: deque[Future] = deque()
        self._max_pending = max_pending

    def write(self, path: Path, audio: np.ndarray, sample_rate: int) -> None:
        self._pending.append(self._pool.submit(write_ogg, path, audio, sample_rate))
        while len(self._pending) > self._max_pending:
            self._pending.popleft().result()

    def __enter__(self) -> "_BackgroundWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _write_dataset(spec: DemoTaskSpec, root: Path) -> None:
    with _BackgroundWriter() as writer:
        _write_files(spec, root, writer)


def _write_files(spec: DemoTaskSpec, root: Path, writer: _BackgroundWriter) -> None:
    sr = spec.sample_rate
    train_rows = []
    for s, call in enumerate(spec.species):
        site = _rng(spec, 4, s)
        lat, lon = spec.latitude + site.uniform(-2, 2), spec.longitude + site.uniform(-3, 3)
        for r in range(spec.train_per_species):
            audio, background, snr_db = train_recording(spec, s, r)
            filename = f"{call.code}/{call.code}_{r:03d}.ogg"
            writer.write(root / "train_audio" / filename, audio, sr)
            train_rows.append(
                {
                    "primary_label": call.code,
                    "secondary_labels": repr(background),
                    "type": repr([call.call_type]),
                    "filename": filename,
                    "collection": "DEMO",
                    "rating": f"{float(np.clip(np.round(2 * (1 + 4 * (snr_db + 6) / 36)) / 2, 1, 5)):.1f}",
                    "url": "",
                    "latitude": f"{lat + site.uniform(-0.2, 0.2):.4f}",
                    "longitude": f"{lon + site.uniform(-0.2, 0.2):.4f}",
                    "scientific_name": call.scientific_name,
                    "common_name": call.common_name,
                    "author": "birdassets demo generator",
                    "license": "CC0 1.0",
                }
            )
    _write_csv(root / "train.csv", TRAIN_COLUMNS, train_rows)

    windows = window_species_plan(spec)
    label_rows = []
    per_file = spec.windows_per_soundscape
    for f, first in enumerate(range(0, len(windows), per_file)):
        members = windows[first : first + per_file]
        name = f"{spec.name}_sc{f:03d}.ogg"
        writer.write(root / "test_soundscapes" / name, soundscape(spec, f, members), sr)
        for w, species in enumerate(members):
            label_rows.append(
                {
                    "filename": name,
                    "start_s": f"{w * spec.window_s:.3f}",
                    "end_s": f"{(w + 1) * spec.window_s:.3f}",
                    "labels": " ".join(spec.species[i].code for i in species),
                }
            )
    _write_csv(root / "soundscape_labels.csv", ("filename", "start_s", "end_s", "labels"), label_rows)
    payload = {
        "generator_version": GENERATOR_VERSION,
        "spec": dataclasses.asdict(spec),
        "species": [dataclasses.asdict(s) for s in spec.species],
    }
    (root / "demo_spec.json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


# ----------------------------------------------------------------------------------------------- API


def resolve_task(task: str | DemoTaskSpec) -> DemoTaskSpec:
    """A spec itself, or the built-in :data:`DEMO_TASKS` entry of that name."""
    if isinstance(task, DemoTaskSpec):
        return task
    if task not in DEMO_TASKS:
        raise KeyError(f"unknown demo task {task!r}; known: {sorted(DEMO_TASKS)}")
    return DEMO_TASKS[task]


def is_complete(root: str | Path, task: str | DemoTaskSpec) -> bool:
    """Whether ``root`` holds a finished data set of exactly this spec."""
    marker = Path(root) / COMPLETE_MARKER
    try:
        return marker.read_text().strip() == resolve_task(task).digest()
    except OSError:
        return False


def generate(task: str | DemoTaskSpec, root: str | Path) -> Path:
    """Write the task's data set to ``root`` (BirdCLEF layout) unless it is already there.

    Idempotent: returns at once when ``root/.complete`` holds this spec's digest. Otherwise writes into
    a fresh temporary sibling directory and renames it into place (replacing an older generated data
    set of another spec), so readers never see a half-written folder. Concurrent writers are safe: the
    loser discards its copy.

    Returns:
        ``root``.

    Raises:
        FileExistsError: ``root`` exists, is not empty and is not a generated data set.
    """
    spec = resolve_task(task)
    root = Path(root).absolute()
    digest = spec.digest()
    if is_complete(root, spec):
        return root
    if root.exists() and any(root.iterdir()) and not (root / COMPLETE_MARKER).exists():
        raise FileExistsError(
            f"{root}: exists, is not empty and is not a generated demo data set; refusing to replace it"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.staging-", dir=root.parent))
    try:
        _write_dataset(spec, staging)
        (staging / COMPLETE_MARKER).write_text(digest + "\n")
        staging.chmod(0o755)
        _move_into_place(staging, root, spec)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return root


def _move_into_place(staging: Path, root: Path, spec: DemoTaskSpec) -> None:
    try:
        os.rename(staging, root)  # succeeds when root is absent or an empty directory
        return
    except OSError:
        pass
    if is_complete(root, spec):  # a concurrent writer finished first: keep theirs
        return
    retired = root.with_name(f".{root.name}.retired-{uuid.uuid4().hex}")
    os.rename(root, retired)  # an older generated data set (other spec)
    os.rename(staging, root)
    shutil.rmtree(retired, ignore_errors=True)


def read_demo(task: str | DemoTaskSpec, root: str | Path, *, min_duration_s: float = 0.0) -> IngestResult:
    """:func:`generate` the task into ``root`` (if needed) and read it with :func:`read_birdclef`.

    Generated files are all usable, so the quarantine is empty unless files were damaged after
    generation (or are shorter than ``min_duration_s``; generated files last >= 2 s).
    """
    return read_birdclef(generate(task, root), min_duration_s=min_duration_s)
