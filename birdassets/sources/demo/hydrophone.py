"""Synthetic hydrophone audio: ship, click and flow noise over an ambient floor, and killer-whale-like pulsed calls.

Everything is vectorised numpy over samples, deterministic given the ``rng`` passed in (the draws happen in a fixed
order). Waveforms are ``[samples]`` at ``sample_rate`` Hz (20 kHz in ``demo-orca``); frequencies are in Hz, times
in seconds, levels in dB.

Background (everything that is not a call; :func:`background`), each component's level drawn per file
(:class:`NoiseLevels`, dB relative to the ambient floor):

* ambient floor (sea state): pink noise (:func:`~birdassets.sources.demo.synthesis.pink_noise`), unit RMS, the
  reference of every other level;
* ship (:func:`ship_noise`): a blade-rate tonal series (fundamental 8-30 Hz, harmonics up to 400 Hz with amplitude
  ``~k**-0.7``) plus cavitation (broadband noise of 100 Hz to 1-2 kHz, amplitude-modulated at the blade rate), both
  under a slow (< 0.2 Hz) swell of the ship's passage;
* clicks (:func:`clicks`): Poisson impulses of a few samples (snapping shrimp) with log-normal amplitudes and, in some
  files, an echolocation-like train (one click every 20-150 ms for 0.3-2 s, swelling and fading);
* flow noise (:func:`flow_noise`): brown noise (1/f^2 power) rolled off above 100 Hz, under a slowly varying level.

Calls (:class:`PulsedCall`, :func:`pulsed_call`): the pulse train of a killer-whale pulsed call seen as a harmonic
stack, fundamental ``f0`` (500-1500 Hz) bent by a contour (upsweep, downsweep or arch, plus an optional terminal
sweep), harmonic ``k`` at ``decay ** (k - 1)`` tapered to zero between 0.40 and 0.45 x the sample rate (below
Nyquist), raised-cosine onset and offset.

SNR (dB, :func:`scaled_call`) is ``10 log10(P_call / P_bg)``: ``P_call`` the call's mean power over its active
samples (envelope above :data:`ACTIVE_FRACTION` of its peak), ``P_bg`` the background's power over the same samples
in the call band (high-passed at :data:`SNR_BAND_HZ`), so ship and flow rumble far below any call does not count as
masking it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.signal

from birdassets.audio.io import resample
from birdassets.sources.demo.synthesis import filtered_noise, pink_noise

ACTIVE_FRACTION = 0.1
"""A sample is part of a call when the call's envelope exceeds this fraction of its peak."""
SNR_BAND_HZ = 500.0
"""Lower edge of the band the SNR's background power is measured in, Hz."""
CONTOURS: tuple[str, ...] = ("flat", "upsweep", "downsweep", "arch")
"""Shapes of a call's fundamental over its duration (``flat``: constant, for tests; the others are drawn)."""
SHIP_CONTROL_RATE = 1000
"""Sample rate the ship's tonal series is synthesised at before resampling, Hz (it has nothing above 400 Hz)."""
CONTROL_RATE = 100
"""Rate slow level changes are computed at before linear interpolation, Hz."""


def _db(gain_db: float) -> float:
    return 10 ** (gain_db / 20)


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return (x / (np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-12)).astype(np.float32)


def slow_gain(n: int, sample_rate: int, rng: np.random.Generator, depth_db: float, max_hz: float = 0.2) -> np.ndarray:
    """A positive, slowly varying gain ``[n]`` float32 swinging within ``+-depth_db`` dB: three sinusoids of random
    frequency (0.01-``max_hz`` Hz), phase and weight, summed in dB (computed every 10 ms, interpolated)."""
    freqs, phases, weights = rng.uniform(0.01, max_hz, 3), rng.uniform(0, 2 * np.pi, 3), rng.uniform(0.5, 1.0, 3)
    t_control = np.arange(int(np.ceil(n / sample_rate * CONTROL_RATE)) + 2) / CONTROL_RATE
    swing = weights @ np.sin(2 * np.pi * freqs[:, None] * t_control + phases[:, None]) / weights.sum()
    gain = np.interp(np.arange(n, dtype=np.float32) / np.float32(sample_rate), t_control, 10 ** (depth_db * swing / 20))
    return gain.astype(np.float32)


def harmonic_sum(phase: np.ndarray, weights) -> np.ndarray:
    """``sum_k Im(weights[k] * exp(i (k + 1) phase))``, ``[samples]`` float64: harmonics ``1..len(weights)`` of
    ``phase`` (radians, ``[samples]``). A weight is a complex number (amplitude and phase offset) or a real
    ``[samples]`` array (an amplitude varying over time). Powers of ``exp(i phase)`` come by repeated multiplication
    (one vector product per harmonic, no per-harmonic sine)."""
    rotor = np.exp(1j * phase)
    power = np.ones_like(rotor)
    total = np.zeros_like(rotor)
    for weight in weights:  # a handful of harmonics; each step is a vector op over samples
        power *= rotor
        total += weight * power
    return total.imag


def ship_noise(n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A passing ship, ``[n]`` float32, unit RMS.

    Tonals: harmonics ``k * blade`` (blade rate 8-30 Hz) up to 400 Hz, amplitude ``k**-0.7`` with log-normal jitter
    (synthesised at :data:`SHIP_CONTROL_RATE` and resampled); cavitation: noise band-passed 100 Hz to 1-2 kHz,
    modulated at the blade rate (depth 0.3-0.8); the tonals sit 6 dB below to 6 dB above the cavitation; both swell
    slowly (+-6 dB, :func:`slow_gain`).
    """
    blade_hz = rng.uniform(8.0, 30.0)
    k = np.arange(1, int(400.0 // blade_hz) + 1)
    amplitudes = k**-0.7 * np.exp(0.3 * rng.standard_normal(len(k)))
    t_low = np.arange(int(np.ceil(n * SHIP_CONTROL_RATE / sample_rate)) + 16) / SHIP_CONTROL_RATE
    tonal = harmonic_sum(2 * np.pi * blade_hz * t_low, amplitudes * np.exp(1j * rng.uniform(0, 2 * np.pi, len(k))))
    tonal = resample(tonal.astype(np.float32), SHIP_CONTROL_RATE, sample_rate)
    tonal = _unit_rms(np.pad(tonal, (0, max(0, n - len(tonal))))[:n])
    cutoff = float(rng.uniform(1000.0, 2000.0))
    cavitation = filtered_noise(
        n, rng, lambda f: (f / 100.0) ** 2 / (1.0 + (f / 100.0) ** 2) / (1.0 + (f / cutoff) ** 4), sample_rate
    )
    t = np.arange(n, dtype=np.float32) / np.float32(sample_rate)  # float32: the AM needs no more than 1e-3 rad
    depth, phase = np.float32(rng.uniform(0.3, 0.8)), np.float32(rng.uniform(0, 2 * np.pi))
    blade_am = 1.0 + depth * np.cos(np.float32(2 * np.pi * blade_hz) * t + phase)
    ship = _db(rng.uniform(-6.0, 6.0)) * tonal + _unit_rms(cavitation * blade_am)
    return _unit_rms(ship * slow_gain(n, sample_rate, rng, depth_db=6.0))


def clicks(n: int, sample_rate: int, rng: np.random.Generator, rate_hz: float, echolocation: bool) -> np.ndarray:
    """Broadband clicks, ``[n]`` float32; a median click peaks near 1.

    Snapping shrimp: Poisson(``rate_hz``) impulses at uniform times, amplitudes log-normal (sigma 0.7) with random
    sign. With ``echolocation``: one train of clicks every 20-150 ms (+-10 % jitter) for 0.3-2 s, amplitude 0.5-2
    under a raised-sine swell. Every impulse is shaped by the file's 6-sample decaying-noise kernel (peak 1).
    """
    impulses = np.zeros(n)
    count = rng.poisson(rate_hz * n / sample_rate)
    where, signs = rng.integers(0, n, count), rng.choice([-1.0, 1.0], count)
    np.add.at(impulses, where, np.exp(0.7 * rng.standard_normal(count)) * signs)
    if echolocation:
        interval_s, length_s = rng.uniform(0.02, 0.15), min(rng.uniform(0.3, 2.0), 0.9 * n / sample_rate)
        times = np.arange(0.0, length_s, interval_s) + rng.uniform(0, n / sample_rate - length_s)
        times += interval_s * rng.uniform(-0.1, 0.1, len(times))
        swell = np.sin(np.pi * np.clip((times - times[0]) / length_s, 0.0, 1.0)) + 0.1
        train = np.clip(np.round(times * sample_rate).astype(np.int64), 0, n - 1)
        np.add.at(impulses, train, rng.uniform(0.5, 2.0) * swell)
    kernel = rng.standard_normal(6) * np.exp(-np.arange(6) / rng.uniform(0.7, 2.0))
    return np.convolve(impulses, kernel / np.abs(kernel).max())[:n].astype(np.float32)


def flow_noise(n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Flow noise over the hydrophone, ``[n]`` float32, unit RMS: brown noise (amplitude ``1/f`` above 2 Hz) rolled
    off as ``1 / (1 + (f / 100)**2)``, under a slowly varying level (+-8 dB, :func:`slow_gain`)."""
    flow = filtered_noise(n, rng, lambda f: 1.0 / np.maximum(f, 2.0) / (1.0 + (f / 100.0) ** 2), sample_rate)
    return _unit_rms(flow * slow_gain(n, sample_rate, rng, depth_db=8.0, max_hz=0.3))


@dataclass(frozen=True)
class NoiseLevels:
    """One file's background mixture. Levels in dB relative to the ambient floor's RMS.

    Attributes:
        ship_db: ship noise RMS.
        flow_db: flow noise RMS.
        click_db: a median click's peak amplitude.
        click_rate_hz: snapping-shrimp clicks per second.
        echolocation: whether the file holds an echolocation-like click train.
    """

    ship_db: float
    flow_db: float
    click_db: float
    click_rate_hz: float
    echolocation: bool


def background(n: int, sample_rate: int, rng: np.random.Generator, levels: NoiseLevels) -> np.ndarray:
    """Hydrophone background ``[n]`` float32: unit-RMS pink floor + ship + flow + clicks at ``levels``."""
    floor = pink_noise(n, rng, sample_rate)
    ship = _db(levels.ship_db) * ship_noise(n, sample_rate, rng)
    flow = _db(levels.flow_db) * flow_noise(n, sample_rate, rng)
    impulsive = _db(levels.click_db) * clicks(n, sample_rate, rng, levels.click_rate_hz, levels.echolocation)
    return floor + ship + flow + impulsive


@dataclass(frozen=True)
class PulsedCall:
    """One synthetic killer-whale pulsed call.

    The fundamental at position ``u`` in 0..1 of the call is ``f0_hz * 2 ** (excursion_oct * shape(u) +
    terminal_oct * r(u) ** 2)``: ``shape`` is 0 (``flat``), ``u - 1/2`` (``upsweep``), ``1/2 - u`` (``downsweep``) or
    ``1/2 - 4 (u - 1/2)**2`` (``arch``), so the contour spans ``excursion_oct`` octaves around ``f0_hz``; ``r`` rises
    from 0 to 1 over the last ``terminal_frac`` of the call (the terminal sweep).

    Attributes:
        f0_hz: central fundamental, Hz.
        duration_s: seconds.
        contour: one of :data:`CONTOURS`.
        excursion_oct: octaves the contour spans.
        terminal_oct: terminal sweep, octaves (positive: up, negative: down, 0: none).
        terminal_frac: fraction of the call the terminal sweep takes.
        harmonics: harmonics, the fundamental included (those near Nyquist are tapered away).
        decay: amplitude ratio of successive harmonics (0-1].
        ramp_s: raised-cosine onset and offset, seconds.
    """

    f0_hz: float
    duration_s: float
    contour: str = "flat"
    excursion_oct: float = 0.0
    terminal_oct: float = 0.0
    terminal_frac: float = 0.15
    harmonics: int = 6
    decay: float = 0.7
    ramp_s: float = 0.05

    def __post_init__(self) -> None:
        if self.contour not in CONTOURS:
            raise ValueError(f"call contour {self.contour!r} not in {CONTOURS}")
        if self.f0_hz <= 0 or self.duration_s <= 0 or self.harmonics < 1 or not 0 < self.decay <= 1:
            raise ValueError(f"call needs f0_hz > 0, duration_s > 0, harmonics >= 1, decay in (0, 1]: {self}")
        if not 0 <= self.ramp_s <= self.duration_s / 2 or not 0 < self.terminal_frac < 1:
            raise ValueError(f"call needs 0 <= ramp_s <= duration_s / 2 and terminal_frac in (0, 1): {self}")

    def samples(self, sample_rate: int) -> int:
        """Length of the call at ``sample_rate``, samples."""
        return max(1, int(round(self.duration_s * sample_rate)))

    def fundamental(self, sample_rate: int) -> np.ndarray:
        """Instantaneous fundamental ``[samples]`` float64, Hz."""
        u = (np.arange(self.samples(sample_rate)) + 0.5) / self.samples(sample_rate)
        shape = {"flat": 0.0 * u, "upsweep": u - 0.5, "downsweep": 0.5 - u, "arch": 0.5 - 4 * (u - 0.5) ** 2}
        terminal = np.clip((u - (1 - self.terminal_frac)) / self.terminal_frac, 0.0, 1.0) ** 2
        return self.f0_hz * 2 ** (self.excursion_oct * shape[self.contour] + self.terminal_oct * terminal)


def pulsed_call(call: PulsedCall, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Synthesise ``call``; ``rng`` draws its start phase.

    Returns:
        ``(wave [samples], envelope [samples])`` float64; the envelope peaks at 1.
    """
    f0 = call.fundamental(sample_rate)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate + rng.uniform(0, 2 * np.pi)
    top = float(f0.max())
    weights = [  # harmonic k tapers from 1 at 0.40 to 0 at 0.45 x the sample rate (computed only where it applies)
        call.decay ** (k - 1) * (np.clip((0.45 * sample_rate - k * f0) / (0.05 * sample_rate), 0.0, 1.0)
                                 if k * top > 0.4 * sample_rate else 1.0)
        for k in range(1, call.harmonics + 1)
    ]
    wave = harmonic_sum(phase, weights)
    n = len(f0)
    ramp = max(call.ramp_s * sample_rate, 1.0)
    edge = np.minimum(np.arange(n), np.arange(n)[::-1]) + 0.5
    envelope = 0.5 - 0.5 * np.cos(np.pi * np.clip(edge / ramp, 0.0, 1.0))
    return wave * envelope, envelope / envelope.max()


def draw_call(
    rng: np.random.Generator,
    f0_hz: tuple[float, float],
    duration_s: tuple[float, float],
    harmonics: tuple[int, int],
    max_s: float,
) -> PulsedCall:
    """A random call: ``f0_hz`` and ``duration_s`` uniform in their ranges (the duration cut to ``max_s``),
    ``harmonics`` uniform in its inclusive range; an upsweep, downsweep or arch of 0.1-0.6 octaves; a terminal sweep
    of +-0.2-0.6 octaves half the time; decay 0.55-0.85; onset/offset 30-100 ms (at most a quarter of the call)."""
    f0 = rng.uniform(*f0_hz)
    duration = min(rng.uniform(*duration_s), max_s)
    contour = CONTOURS[1 + int(rng.integers(3))]
    excursion = rng.uniform(0.1, 0.6)
    terminal = rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.6) if rng.uniform() < 0.5 else 0.0
    return PulsedCall(
        f0_hz=float(f0), duration_s=float(duration), contour=contour, excursion_oct=float(excursion),
        terminal_oct=float(terminal), harmonics=int(rng.integers(harmonics[0], harmonics[1] + 1)),
        decay=float(rng.uniform(0.55, 0.85)), ramp_s=float(min(rng.uniform(0.03, 0.1), duration / 4)),
    )


@lru_cache(maxsize=8)
def _band_filter(sample_rate: int) -> np.ndarray:
    return scipy.signal.butter(4, SNR_BAND_HZ, btype="highpass", fs=sample_rate, output="sos")


def band_power(audio: np.ndarray, sample_rate: int, where: np.ndarray | None = None) -> float:
    """Mean power of ``audio`` above :data:`SNR_BAND_HZ` (4th-order Butterworth, zero phase), over the samples
    where ``where`` (bool ``[samples]``) holds, or all."""
    band = scipy.signal.sosfiltfilt(_band_filter(sample_rate), np.asarray(audio, dtype=np.float64))
    return float(np.mean(band[where] ** 2 if where is not None else band**2))


def scaled_call(
    noise: np.ndarray, wave: np.ndarray, envelope: np.ndarray, snr_db: float, sample_rate: int
) -> np.ndarray:
    """``wave`` scaled to ``snr_db`` against ``noise`` (the background under the call, same length).

    Returns:
        ``[samples]`` float64: add it to the background (see the module docstring for the SNR).
    """
    active = envelope > ACTIVE_FRACTION
    noise_power = band_power(noise, sample_rate, active)
    call_power = float(np.mean(wave[active] ** 2))
    return wave * np.sqrt(noise_power * 10 ** (snr_db / 10) / max(call_power, 1e-24))


def to_level(audio: np.ndarray, background_rms: float, level_dbfs: float, max_peak: float = 0.95) -> np.ndarray:
    """``audio`` scaled so that its background has RMS ``level_dbfs`` dB re full scale, less when its peak would pass
    ``max_peak``; ``[samples]`` float32."""
    gain = min(_db(level_dbfs) / max(background_rms, 1e-12), max_peak / max(float(np.abs(audio).max()), 1e-12))
    return (audio * gain).astype(np.float32)
