"""Benchmarks (``birdassets bench ...``): speed targets live here, never in timed unit tests.

``bench_frontend`` times stage B (mel power in dB) of each preset on the same synthetic signal, side by side
with librosa computing the same quantity in the same process, warm (every implementation runs once before
timing) and best of ``repeats``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from birdassets.frontends.presets import MelPreset, get_preset


def bench_signal(seconds: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    """Bird-like test audio: a repeated chirp in pink-ish noise, float32 ``[samples]``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    chirp = 0.3 * np.sin(2 * np.pi * (2500 + 1500 * np.mod(t, 0.5)) * t)
    noise = np.cumsum(rng.standard_normal(len(t))) * 1e-3
    return (chirp + noise - noise.mean()).astype(np.float32)


def _best_of(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm: compile / trace / cache
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def librosa_mel_db(audio: np.ndarray, preset: MelPreset) -> np.ndarray:
    """librosa's stage B for ``preset``: ``[frames, mels]`` dB (the parity reference)."""
    import librosa

    power = librosa.feature.melspectrogram(
        y=audio, sr=preset.sample_rate, n_fft=preset.n_fft, hop_length=preset.hop_length, n_mels=preset.n_mels,
        fmin=preset.f_min, fmax=preset.f_max, center=preset.center, pad_mode=preset.pad_mode, power=preset.power,
        htk=preset.mel_scale == "htk", norm=preset.mel_norm,
    )
    ref = np.max if preset.db_ref == "max" else float(preset.db_ref)
    return librosa.power_to_db(power, ref=ref, amin=preset.amin, top_db=preset.top_db).T


def bench_frontend(presets: Sequence[str] = ("birdclef2025",), seconds: float = 600.0, repeats: int = 3) -> pd.DataFrame:
    """Stage-B throughput per preset and implementation, in audio seconds per wall second.

    Rows: ``preset, implementation, seconds, audio_s_per_s, x_librosa`` where ``x_librosa`` is the speed-up
    over librosa measured in the same run. ``tf.signal (windows)`` runs the preset's 5 s windows as one batch
    (what the mel datasets do); ``tf.signal (whole file)`` and librosa process the signal as one array.
    """
    from birdassets.frontends.tf_mel import TFMelFrontend

    rows = []
    for name in presets:
        preset = get_preset(name)
        audio = bench_signal(seconds, preset.sample_rate)
        n = preset.clip_samples
        windows = audio[: len(audio) // n * n].reshape(-1, n)
        frontend = TFMelFrontend(preset)
        timings = {
            "librosa (whole file)": _best_of(lambda: librosa_mel_db(audio, preset), repeats),
            "tf.signal (whole file)": _best_of(lambda: frontend.mel_db(audio[None]).numpy(), repeats),
            "tf.signal (5 s windows, one batch)": _best_of(lambda: frontend.mel_db(windows).numpy(), repeats),
        }
        try:
            from birdassets.frontends.jax_mel import JaxMelFrontend

            jax_frontend = JaxMelFrontend(preset)
            timings["jax (5 s windows, one batch)"] = _best_of(
                lambda: np.asarray(jax_frontend.mel_db(windows)), repeats
            )
        except ImportError:
            pass
        reference = timings["librosa (whole file)"]
        for implementation, wall in timings.items():
            rows.append(
                {
                    "preset": name,
                    "implementation": implementation,
                    "seconds": wall,
                    "audio_s_per_s": seconds / wall,
                    "x_librosa": reference / wall,
                }
            )
    return pd.DataFrame(rows)
