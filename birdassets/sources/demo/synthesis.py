"""Synthesis of the demo's audio: field noise, species phrases, focal recordings and labelled soundscapes.

Calls live in 2-10 kHz (32 kHz sample rate); species differ in pitch, glide, rhythm and timbre, and
their ranges overlap partly. Every recording draws its own "individual": small pitch (a few %) and
tempo (~8 %) jitter, plus per-note pitch jitter of 1 %. The call kinds (:class:`~.species.SpeciesCall`):

* ``fm_sweep``: one or a few notes whose frequency glides linearly or exponentially (integrated phase),
  optionally with vibrato (a whistle is a sweep of zero bandwidth with vibrato);
* ``trill``: a phrase of many short (20-40 ms) notes repeated at 12-25 Hz;
* ``harmonic_stack``: a tonal note with decaying harmonics (``decay ** k`` amplitude for harmonic ``k``);
* ``two_note``: notes alternating between two pitches (``note_pitch_ratios``);
* ``buzz``: a tone under sharp periodic amplitude pulses (``am_hz``), which spreads it into sidebands.

Background (everything that is not a labelled call) is realistic-ish field noise:

* pink (1/f power) noise, shaped in the frequency domain: the noise floor used for the SNR;
* wind rumble: brown noise low-passed at ~250 Hz under slow (< 0.5 Hz) gusty amplitude modulation,
  at ``wind_db`` relative to the pink noise;
* in train recordings, other species calling quietly (``background_gain_db`` below the focal bird);
  they are listed in ``secondary_labels``.

SNR (dB) is ``10 log10(P_calls / P_pink)`` where ``P_calls`` is the mean power of the call mixture over
the samples where a call is sounding (envelope > 10 % of its peak) and ``P_pink`` the pink-noise power.

Soundscapes are continuous noise; each 5-s window gets its own set of species whose phrases lie entirely inside
the window, so window labels are exact (:func:`window_species_plan`). Every function is deterministic given the
spec: each recording draws from its own random stream (:meth:`~.species.DemoTaskSpec.rng`).
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from birdassets.audio.io import resample
from birdassets.sources.demo.species import (
    PLAN_STREAM,
    SOUNDSCAPE_STREAM,
    TRAIN_STREAM,
    UNLABELLED_STREAM,
    DemoTaskSpec,
    SpeciesCall,
)

_ACTIVE_FRACTION = 0.1  # a sample counts as "calling" when the envelope exceeds this fraction of its peak


def filtered_noise(n: int, rng: np.random.Generator, gain_of_hz, sample_rate: int) -> np.ndarray:
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
    return filtered_noise(n, rng, lambda f: 1.0 / np.sqrt(np.maximum(f, np.float32(20.0))), sample_rate)


def wind_rumble(
    n: int, rng: np.random.Generator, sample_rate: int, cutoff_hz: float = 250.0, control_rate: int = 2000
) -> np.ndarray:
    """Gusty low-frequency rumble, ``[n]`` float32, unit RMS.

    Brown (1/f^2 power) noise through a 4th-order low-pass at ``cutoff_hz``, times a slow positive gust
    envelope (noise low-passed at 0.4 Hz, exponentiated); synthesised at ``control_rate`` Hz and
    resampled (soxr) to ``sample_rate``, since it has no content above ~1 kHz.
    """
    n_low = int(np.ceil(n * control_rate / sample_rate)) + 16
    rumble = filtered_noise(
        n_low, rng, lambda f: (1.0 / np.maximum(f, np.float32(5.0))) / (1.0 + (f / cutoff_hz) ** 4), control_rate
    )
    gusts = filtered_noise(n_low, rng, lambda f: np.exp(-((f / np.float32(0.4)) ** 2)), control_rate)
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
        rng: draws the per-note pitch jitter, then the start phase.
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
    freq = _frequency(call, rng, pitch, t, note, u)
    phase = 2 * np.pi * np.cumsum(freq) / sample_rate + rng.uniform(0, 2 * np.pi)
    wave = np.zeros(n)
    for k in range(1, call.harmonics + 1):  # a handful of harmonics; each term is a vector op
        below_nyquist = k * freq < 0.45 * sample_rate
        wave += call.harmonic_decay ** (k - 1) * np.sin(k * phase) * below_nyquist
    envelope = _envelope(call, t, u, sounding=tau < note_s)
    return wave * envelope, envelope / max(envelope.max(), 1e-12)


def _frequency(
    call: SpeciesCall, rng: np.random.Generator, pitch: float, t: np.ndarray, note: np.ndarray, u: np.ndarray
) -> np.ndarray:
    """Instantaneous fundamental, Hz, ``[samples]``: each note's glide (note ``note``, position ``u`` in 0..1 of the
    note) at its jittered pitch ratio, plus vibrato at time ``t`` (seconds)."""
    ratios = np.asarray(call.note_pitch_ratios)[np.arange(call.notes_per_phrase) % len(call.note_pitch_ratios)]
    ratios = ratios * (1.0 + 0.01 * rng.standard_normal(call.notes_per_phrase))
    f_start = call.base_hz * pitch * ratios[note]
    f_end = (call.base_hz + call.bandwidth_hz) * pitch * ratios[note]
    freq = f_start * (f_end / f_start) ** u if call.exponential else f_start + (f_end - f_start) * u
    if call.vibrato_hz > 0:
        freq = freq + call.vibrato_depth_hz * pitch * np.sin(2 * np.pi * call.vibrato_hz * t)
    return freq


def _envelope(call: SpeciesCall, t: np.ndarray, u: np.ndarray, sounding: np.ndarray) -> np.ndarray:
    """Amplitude ``[samples]``: raised-cosine attack over ``attack_frac`` of each note, ``(1 - u) ** p`` release,
    zero between notes (``sounding`` false), times the buzz's sharp pulses at ``am_hz``."""
    a = call.attack_frac
    envelope = np.where(
        u < a,
        0.5 - 0.5 * np.cos(np.pi * u / a),
        ((1.0 - u) / (1.0 - a)) ** call.release_power,
    ) * sounding
    if call.am_hz > 0:
        envelope = envelope * (0.5 + 0.5 * np.sin(2 * np.pi * call.am_hz * t)) ** 4
    return envelope


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
    rng = spec.rng(TRAIN_STREAM, species_index, recording_index)
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
    return _soundscape(spec, spec.rng(SOUNDSCAPE_STREAM, soundscape_index), window_species)


def unlabelled_soundscape(spec: DemoTaskSpec, soundscape_index: int) -> tuple[np.ndarray, list[list[int]]]:
    """One unlabelled soundscape of ``spec.unlabelled_windows`` windows (``train_soundscapes/``), synthesised like
    the labelled ones from its own stream (:data:`~.species.UNLABELLED_STREAM`); each window holds 0 to
    ``test_species_per_window[1]`` species (silent windows too, as in real soundscapes).

    Returns:
        ``(audio [unlabelled_windows * window_s * sample_rate] float32 peak-normalised, species per window)``.
    """
    rng = spec.rng(UNLABELLED_STREAM, soundscape_index)
    high = spec.test_species_per_window[1]
    plan = [sorted(map(int, rng.choice(spec.n_species, size=int(rng.integers(0, high + 1)), replace=False)))
            for _ in range(spec.unlabelled_windows)]
    return _soundscape(spec, rng, plan), plan


def _soundscape(spec: DemoTaskSpec, rng: np.random.Generator, window_species: list[list[int]]) -> np.ndarray:
    """:func:`soundscape`'s audio, drawn from ``rng``."""
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
    rng = spec.rng(PLAN_STREAM)
    cycle = np.concatenate([rng.permutation(spec.n_species) for _ in range(-(-spec.n_test_windows // spec.n_species))])
    low, high = spec.test_species_per_window
    windows = []
    for w in range(spec.n_test_windows):
        first = int(cycle[w])
        count = int(rng.integers(low, high + 1))
        others = rng.choice([i for i in range(spec.n_species) if i != first], size=count - 1, replace=False)
        windows.append(sorted([first, *map(int, others)]))
    return windows
