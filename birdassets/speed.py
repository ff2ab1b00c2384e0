"""Speed benchmarks (``birdassets bench frontend|birdnet|submission|detector``): speed targets live here, never in timed
unit tests.

``bench_frontend`` times stage B of each preset on the same synthetic signal, side by side with librosa
computing the same quantity in the same process, warm (every implementation runs once before timing) and
best of ``repeats``, and reports each result's largest dB difference from librosa in float64. librosa is
timed on the float32 waveform, as a user would call it. ``bench_submission`` times a
supervised model's Kaggle submission path on OGG soundscapes and projects it onto Kaggle's test set.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from birdassets.frontends.presets import MelPreset
from birdassets.frontends.windowing import WindowSpec, cut_windows, window_starts


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


def bench_frontend(presets: Sequence[MelPreset], seconds: float = 600.0, repeats: int = 3) -> pd.DataFrame:
    """Stage-B throughput per preset and implementation, in audio seconds per wall second, and its accuracy.

    Rows: ``preset, implementation, precision, seconds, audio_s_per_s, x_librosa, max_db_diff`` where
    ``audio_s_per_s`` is the ``seconds`` of input audio over the wall time (so also the multiple of real time),
    ``x_librosa`` the speed-up over librosa on the whole file, measured in the same run, and ``max_db_diff`` the
    largest stage-B difference from librosa in float64 on the same input, in dB (``log="ln"``: converted as
    ``20 / (ln_scale ln 10)`` dB per unit). ``whole file`` rows process the signal as one array; ``windows`` rows
    cut the preset's stage-A windows (overlapping for ``orcahello``) and run them as one batch, as the mel
    datasets do, except librosa's, which calls it once per window as BirdCLEF notebooks do. tf.signal runs in
    the preset's ``precision`` and, for comparison, in ``"float64"``; librosa on the float32 waveform.
    """
    rows = []
    for preset in presets:
        audio = bench_signal(seconds, preset.sample_rate)
        windows = cut_windows(audio, window_starts(seconds, preset), preset)  # [windows, clip_samples]
        runs = _frontend_runs(preset, audio, windows)
        timings = {name: _best_of(fn, repeats) for name, (fn, _) in runs.items()}
        reference = timings["librosa (whole file)"]
        truth = _librosa_float64(preset, audio, windows)
        for implementation, wall in timings.items():
            fn, precision = runs[implementation]
            error = _db_difference(fn(), truth, preset)
            rows.append({"preset": preset.name, "implementation": implementation, "precision": precision,
                         "seconds": wall, "audio_s_per_s": seconds / wall, "x_librosa": reference / wall,
                         "max_db_diff": error})
    return pd.DataFrame(rows)


def _frontend_runs(preset: MelPreset, audio: np.ndarray, windows: np.ndarray) -> dict[str, tuple[Callable, str]]:
    """``{implementation: (run, precision)}``; each run returns stage B, ``[frames, mels]`` for a whole file or
    ``[windows, frames, mels]``."""
    import dataclasses

    from birdassets.frontends.jax_mel import JaxMelFrontend
    from birdassets.frontends.reference import librosa_mel_db
    from birdassets.frontends.tf_mel import TFMelFrontend

    tf_frontend, jax_frontend = TFMelFrontend(preset), JaxMelFrontend(preset)
    tf64 = TFMelFrontend(dataclasses.replace(preset, precision="float64"))
    n = len(windows)
    return {
        "librosa (whole file)": (lambda: librosa_mel_db(audio, preset, dtype=np.float32), "float32 input"),
        f"librosa ({n} windows, one call each)": (
            lambda: np.stack([librosa_mel_db(window, preset, dtype=np.float32) for window in windows]),
            "float32 input"),
        "tf.signal (whole file)": (lambda: tf_frontend.mel_db(audio[None]).numpy()[0], preset.precision),
        "jax (whole file)": (lambda: np.asarray(jax_frontend.mel_db(audio[None]))[0], preset.precision),
        f"tf.signal ({n} windows)": (lambda: tf_frontend.mel_db(windows).numpy(), preset.precision),
        f"jax ({n} windows)": (lambda: np.asarray(jax_frontend.mel_db(windows)), preset.precision),
        "tf.signal float64 (whole file)": (lambda: tf64.mel_db(audio[None]).numpy()[0], "float64"),
        f"tf.signal float64 ({n} windows)": (lambda: tf64.mel_db(windows).numpy(), "float64"),
    }


def _librosa_float64(preset: MelPreset, audio: np.ndarray, windows: np.ndarray) -> dict[int, np.ndarray]:
    """The float64 references by rank: ``{2: [frames, mels] of audio, 3: [windows, frames, mels]}``."""
    from birdassets.frontends.reference import librosa_mel_db

    return {2: librosa_mel_db(audio, preset), 3: np.stack([librosa_mel_db(window, preset) for window in windows])}


def _db_difference(stage_b: np.ndarray, truth: dict[int, np.ndarray], preset: MelPreset) -> float:
    """Max ``|stage_b - truth[stage_b.ndim]|`` in dB (``log="ln"`` converted, ``20 / (ln_scale ln 10)`` per unit)."""
    per_unit = 20.0 / (preset.ln_scale * math.log(10.0)) if preset.log == "ln" else 1.0
    return float(np.abs(stage_b.astype(np.float64) - truth[stage_b.ndim]).max() * per_unit)


def bench_birdnet(
    seconds: float = 300.0,
    batch_sizes: Sequence[int] = (1, 8, 16, 32),
    num_threads: Sequence[int] = (1, 2),
    repeats: int = 3,
    baseline_batch_sizes: Sequence[int] = (1, 8),
) -> pd.DataFrame:
    """BirdNET V2.4 throughput on CPU, in multiples of real time, per implementation, batch size and threads.

    Rows: ``implementation, batch_size, num_threads, seconds, x_realtime``, where ``seconds`` is the wall
    time (warm, best of ``repeats``) to get embeddings and logits of every 3 s window of ``seconds`` of audio
    and ``x_realtime`` is audio seconds over wall seconds. Implementations:

    * ``"graph output"``: :class:`~birdassets.models.birdnet.BirdNetEncoder` (the embedding made a second
      graph output by rewriting the flatbuffer; XNNPACK, arena reuse);
    * ``"preserve_all_tensors"``: the same model read with ``experimental_preserve_all_tensors=True`` and the
      embedding fetched by tensor name. It keeps every intermediate tensor (about 250 MB per window of
      batch), so it only runs at ``baseline_batch_sizes``.
    """
    from birdassets.models.birdnet import BIRDNET_WINDOWS, BirdNetEncoder, locate_birdnet

    files = locate_birdnet()
    audio = bench_signal(seconds, BIRDNET_WINDOWS.sample_rate)
    windows = cut_windows(audio, window_starts(seconds, BIRDNET_WINDOWS), BIRDNET_WINDOWS)  # [windows, 144000]
    rows = []
    for threads in num_threads:
        for batch_size in batch_sizes:
            encoder = BirdNetEncoder(files, batch_size=batch_size, num_threads=threads)
            runs = {"graph output": lambda encoder=encoder: encoder.infer(windows)}
            if batch_size in baseline_batch_sizes:
                runs["preserve_all_tensors"] = _preserve_all_tensors(files.model, windows, batch_size, threads)
            for implementation, fn in runs.items():
                wall = _best_of(fn, repeats)
                rows.append(
                    {
                        "implementation": implementation,
                        "batch_size": batch_size,
                        "num_threads": threads,
                        "seconds": wall,
                        "x_realtime": seconds / wall,
                    }
                )
    return pd.DataFrame(rows)


def _preserve_all_tensors(model: Path, windows: np.ndarray, batch_size: int, threads: int) -> Callable[[], list]:
    """Embeddings and logits of ``windows`` ``[windows, samples]`` read by tensor name from an interpreter that
    keeps every intermediate tensor (the baseline the graph-output rewrite replaces)."""
    import tensorflow as tf

    from birdassets.models.birdnet import EMBEDDING_TENSOR

    interpreter = tf.lite.Interpreter(model_path=str(model), num_threads=threads, experimental_preserve_all_tensors=True)
    interpreter.resize_tensor_input(0, [batch_size, windows.shape[1]])
    interpreter.allocate_tensors()
    (logits,) = interpreter.get_output_details()
    (embedding,) = [d["index"] for d in interpreter.get_tensor_details() if d["name"] == EMBEDDING_TENSOR]
    padded = np.zeros((-(-len(windows) // batch_size) * batch_size, windows.shape[1]), np.float32)
    padded[: len(windows)] = windows

    def run() -> list:
        out = []
        for start in range(0, len(padded), batch_size):
            interpreter.set_tensor(0, padded[start : start + batch_size])
            interpreter.invoke()
            out.append((interpreter.get_tensor(embedding).copy(), interpreter.get_tensor(logits["index"]).copy()))
        return out

    return run


KAGGLE_TEST_SOUNDSCAPES = 700
"""Soundscapes in a BirdCLEF hidden test set (about 700 one-minute files)."""
KAGGLE_SOUNDSCAPE_S = 60.0
"""Length of each, seconds."""
KAGGLE_CPU_LIMIT_S = 90 * 60.0
"""A BirdCLEF CPU notebook's time limit, seconds."""
BENCH_SOUNDSCAPE_S = 60.0
"""``bench_submission`` writes its audio as soundscapes of this length (the last one holds the remainder)."""


def write_bench_soundscapes(folder: Path, seconds: float, sample_rate: int) -> list[Path]:
    """:func:`bench_signal` audio of ``seconds`` in total as OGG Vorbis soundscapes of :data:`BENCH_SOUNDSCAPE_S`
    (a real decode, as on Kaggle): ``folder/bench_<nnn>.ogg``."""
    paths = []
    for index in range(math.ceil(seconds / BENCH_SOUNDSCAPE_S)):
        length = min(BENCH_SOUNDSCAPE_S, seconds - index * BENCH_SOUNDSCAPE_S)
        paths.append(folder / f"bench_{index:03d}.ogg")
        sf.write(paths[-1], bench_signal(length, sample_rate, seed=index), sample_rate, format="OGG", subtype="VORBIS")
    return paths


def bench_submission(
    model_dir: Path, *, seconds: float = BENCH_SOUNDSCAPE_S, repeats: int = 3, batch_size: int | None = None,
    preset: MelPreset | None = None,
) -> dict:
    """Throughput of a model folder's submission path: decode -> mel -> every fold model, batched, warm (one run
    before timing compiles the frontend and the models), best of ``repeats``; model loading is not timed.

    Returns:
        ``{"audio_s_per_s", "projected_s", "soundscapes", "audio_seconds", "n_folds", "batch_size"}``:
        audio seconds per wall second, the wall time projected for :data:`KAGGLE_TEST_SOUNDSCAPES`
        soundscapes of :data:`KAGGLE_SOUNDSCAPE_S` on this machine, and the windows per forward pass used
        (``batch_size``, or all the windows when there are fewer).
    """
    from birdassets.supervised.submission import (
        DEFAULT_BATCH_SIZE,
        load_submission_model,
        planned_windows,
        predict_batches,
    )

    batch_size = batch_size or DEFAULT_BATCH_SIZE
    model = load_submission_model(model_dir, preset)
    with tempfile.TemporaryDirectory(prefix="birdassets-bench-submission-") as folder:
        paths = write_bench_soundscapes(Path(folder), seconds, model.preset.sample_rate)
        wall = _best_of(lambda: predict_batches(model, paths, batch_size=batch_size), repeats)
        batch_size = min(batch_size, planned_windows(paths, model.preset))  # what predict_batches ran with
    audio_s_per_s = seconds / wall
    return {
        "audio_s_per_s": audio_s_per_s,
        "projected_s": KAGGLE_TEST_SOUNDSCAPES * KAGGLE_SOUNDSCAPE_S / audio_s_per_s,
        "soundscapes": len(paths),
        "audio_seconds": float(seconds),
        "n_folds": len(model.models),
        "batch_size": int(batch_size),
    }


def bench_detector(runtimes: dict[str, object], preset: MelPreset, seconds: float = 600.0,
                   repeats: int = 3) -> pd.DataFrame:
    """The call detector's speed per runtime (``{"jax (checkpoint)": detector, "tflite": detector}``, each with
    ``probabilities``), side by side on the same audio, warm, best of ``repeats``.

    Rows: ``runtime, windows, model_windows_per_s`` (the network alone on stage-C windows) and
    ``end_to_end_x_real_time`` (audio seconds over the wall time of stage A + stage C + network for ``seconds`` of
    audio, the preset's windows: OrcaHello's 2 s every 1 s), and ``x_first`` (end-to-end speed over the first runtime's).
    """
    from birdassets.frontends.tf_mel import TFMelFrontend

    spec = WindowSpec(sample_rate=preset.sample_rate, clip_s=preset.clip_s, hop_s=preset.hop_s,
                      min_last_s=preset.clip_s)
    audio = bench_signal(seconds, preset.sample_rate)
    clips = cut_windows(audio, np.asarray(window_starts(seconds, spec)), spec)  # [windows, clip_samples]
    frontend = TFMelFrontend(preset)
    mel = frontend.model_input(clips).numpy()
    rows = []
    for name, runtime in runtimes.items():
        model_s = _best_of(lambda: runtime.probabilities(mel), repeats)
        total_s = _best_of(lambda: runtime.probabilities(frontend.model_input(clips).numpy()), repeats)
        rows.append({"runtime": name, "windows": len(clips), "model_windows_per_s": len(clips) / model_s,
                     "end_to_end_x_real_time": seconds / total_s})
    frame = pd.DataFrame(rows)
    frame["x_first"] = frame["end_to_end_x_real_time"] / frame["end_to_end_x_real_time"].iloc[0]
    return frame
