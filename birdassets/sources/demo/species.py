"""The demo's species and tasks: 12 invented species with parametric calls, and the specs of the built-in data sets.

A :class:`SpeciesCall` holds one species' call parameters (pitch, glide, rhythm, timbre; see
:mod:`birdassets.sources.demo.synthesis` for how they become sound); :data:`SPECIES` is the pool every task draws
from. A :class:`DemoTaskSpec` fixes one data set (species count, recording counts and lengths, SNR, background
birds, jitter, seed); :data:`DEMO_TASKS` holds the built-in ones. :meth:`DemoTaskSpec.digest` identifies a spec
(it is what the ``.complete`` marker holds) and :meth:`DemoTaskSpec.rng` gives every file its own random stream.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from birdassets.sources.demo.publishing import record_digest

GENERATOR_VERSION = 2
"""Bumped when the generator's output changes; part of every spec's digest."""
CALL_KINDS: tuple[str, ...] = ("fm_sweep", "trill", "harmonic_stack", "two_note", "buzz")

TRAIN_STREAM = 1
"""Random stream of focal recordings: ``spec.rng(TRAIN_STREAM, species, recording)``."""
SOUNDSCAPE_STREAM = 2
"""Random stream of soundscapes: ``spec.rng(SOUNDSCAPE_STREAM, soundscape)``."""
PLAN_STREAM = 3
"""Random stream of the species-per-test-window plan."""
SITE_STREAM = 4
"""Random stream of each species' recording sites (``train.csv`` latitude/longitude)."""
UNLABELLED_STREAM = 5
"""Random stream of the unlabelled soundscapes (species plan, then audio): ``spec.rng(UNLABELLED_STREAM, soundscape)``.
A stream of their own, so adding them left every other file bit-identical."""


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
        unlabelled_soundscapes: unlabelled soundscapes in ``train_soundscapes/`` (BirdCLEF 2025 layout, what
            ``birdassets birdclef submit`` predicts; listed in ``sample_submission.csv``).
        unlabelled_windows: ``window_s`` windows per unlabelled soundscape (12: one minute, as on Kaggle).
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
    unlabelled_soundscapes: int = 3
    unlabelled_windows: int = 12
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
        if self.unlabelled_soundscapes < 0 or self.unlabelled_windows < 1:
            raise ValueError(f"task {self.name}: unlabelled_soundscapes must be >= 0 and unlabelled_windows >= 1")
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

    def record(self) -> dict:
        """The spec, its species table and the generator version, JSON-ready (written as ``demo_spec.json``)."""
        return {
            "generator_version": GENERATOR_VERSION,
            "spec": dataclasses.asdict(self),
            "species": [dataclasses.asdict(s) for s in self.species],
        }

    def digest(self) -> str:
        """sha256 of :meth:`record` (what ``.complete`` holds)."""
        return record_digest(self.record())

    def rng(self, stream: int, *index: int) -> np.random.Generator:
        """The random generator of one item: ``SeedSequence([seed, stream, *index])`` (streams: ``*_STREAM``)."""
        return np.random.default_rng(np.random.SeedSequence([self.seed, stream, *index]))


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
        name="demo-pretrain", seed=20240603, train_per_species=12, n_test_windows=10, windows_per_soundscape=10,
        unlabelled_soundscapes=0,  # no benchmark task, so nothing is ever submitted for it
    ),
}
"""Built-in data sets: ``demo-clear`` (high SNR, 1-2 species per window, rare quiet background birds),
``demo-noisy`` (low SNR, strong wind, 2-4 species per window, frequent louder background birds) and
``demo-pretrain`` (focal recordings of other individuals, for training encoders; not benchmarked)."""


def resolve_task(task: str | DemoTaskSpec) -> DemoTaskSpec:
    """A spec itself, or the built-in :data:`DEMO_TASKS` entry of that name."""
    if isinstance(task, DemoTaskSpec):
        return task
    if task not in DEMO_TASKS:
        raise KeyError(f"unknown demo task {task!r}; known: {sorted(DEMO_TASKS)}")
    return DEMO_TASKS[task]
