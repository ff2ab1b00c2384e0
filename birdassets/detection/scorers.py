"""Window scorers: clips in, one confidence in [0, 1] per clip out.

A :class:`WindowScorer` has a ``name`` (stored with the detections), the ``sample_rate`` its clips are resampled
to, and ``score(clips [windows, clip_samples]) -> [windows]``. Four kinds:

* :class:`BirdNetScorer`: BirdNET's own logits for chosen target classes;
* :class:`ClassifierScorer`: a window classifier's own class probabilities (the ResNet18 call detector);
* :class:`ProbeScorer`: a probe trained in the benchmark, on any encoder's embeddings;
* :class:`BandEnergyScorer`: a model-free energy detector (fraction of power in a band).

:func:`make_scorer` builds the one a user names (CLI, Dagster run config).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np


class WindowScorer(Protocol):
    """Maps clips to one confidence each.

    Attributes:
        name: stored with the detections (e.g. ``"birdnet-v2.4:Orcinus orca_Killer Whale"``).
        sample_rate: Hz the clips are resampled to.
    """

    name: str
    sample_rate: int

    def score(self, clips: np.ndarray) -> np.ndarray:
        """``[windows, clip_samples]`` float32 -> ``[windows]`` confidences in [0, 1]."""
        ...


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Logistic function, numerically safe for large ``|logits|``."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(logits, dtype=np.float64)))


def fit_clips(clips: np.ndarray, samples: int) -> np.ndarray:
    """Zero-pad (or split) ``[n, clip_samples]`` clips into encoder windows ``[n, k, samples]``.

    A clip no longer than ``samples`` becomes one window padded at the end (a 2 s clip for BirdNET's 3 s
    input); a longer one is cut into ``k = ceil(clip_samples / samples)`` consecutive windows, the last padded.
    """
    n, length = clips.shape
    k = max(1, -(-length // samples))
    padded = np.zeros((n, k * samples), np.float32)
    padded[:, :length] = clips
    return padded.reshape(n, k, samples)


@dataclass
class BirdNetScorer:
    """Confidence = max over the target classes of ``sigmoid(logit)`` from BirdNET (sensitivity 1).

    Clips shorter than BirdNET's 3 s are zero-padded; longer ones take the max over their 3 s parts.

    Attributes:
        encoder: a :class:`~birdassets.models.birdnet.BirdNetEncoder` (``infer``, ``labels``, ``input_spec``).
        targets: labels as in BirdNET's label file (``"Scientific name_Common name"``); each may also be
            given as just the scientific or the common name.
    """

    encoder: object
    targets: Sequence[str]
    indices: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.indices = resolve_labels(self.encoder.labels, self.targets)

    @property
    def name(self) -> str:
        return f"{self.encoder.name}:" + "|".join(self.encoder.labels[i] for i in self.indices)

    @property
    def sample_rate(self) -> int:
        return self.encoder.input_spec.sample_rate

    def score(self, clips: np.ndarray) -> np.ndarray:
        windows = fit_clips(clips, self.encoder.input_spec.clip_samples)  # [n, k, 144000]
        n, k, samples = windows.shape
        _, logits = self.encoder.infer(windows.reshape(n * k, samples))  # [n * k, classes]
        best = logits[:, self.indices].max(axis=1).reshape(n, k).max(axis=1)
        return sigmoid(best)


@dataclass
class ProbeScorer:
    """Confidence = max over target classes of a trained probe's probability (mean over its fold models) on
    an encoder's embedding of the clip.

    The clip is fitted to the encoder's input (zero-padded, or split with the max taken over the parts):
    a mel encoder sees the stage-C input of ``preset``, a waveform encoder (BirdNET) the raw clip.

    Attributes:
        encoder: any :class:`~birdassets.models.base.Encoder`.
        params: the probe's parameters (:func:`birdassets.artifacts.load_probe`), leading fold axis.
        classes: the probe's class names, one per output.
        targets: target class names among ``classes``.
        preset: the mel frontend of a mel encoder (``None`` for waveform encoders).
        label: names the probe in ``name`` (e.g. ``"demo-clear/linear"``).
    """

    encoder: object
    params: dict
    classes: Sequence[str]
    targets: Sequence[str]
    preset: object = None
    label: str = "probe"
    indices: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.indices = resolve_labels(self.classes, self.targets)
        self._frontend = None
        if self.preset is not None:
            from birdassets.frontends.tf_mel import TFMelFrontend

            self._frontend = TFMelFrontend(self.preset)

    @property
    def name(self) -> str:
        return f"{self.encoder.name}+{self.label}:" + "|".join(self.classes[i] for i in self.indices)

    @property
    def sample_rate(self) -> int:
        return self.preset.sample_rate if self.preset is not None else self.encoder.input_spec.sample_rate

    def score(self, clips: np.ndarray) -> np.ndarray:
        from birdassets.probes import predict_probe

        samples = self.preset.clip_samples if self.preset is not None else self.encoder.input_spec.clip_samples
        inputs, n, k = encoder_inputs(clips, samples, self._frontend)
        embeddings = np.asarray(self.encoder.embed(inputs), dtype=np.float32)  # [n * k, dim]
        probabilities = predict_probe(self.params, embeddings).mean(axis=0)  # [n * k, classes]
        return probabilities[:, self.indices].max(axis=1).reshape(n, k).max(axis=1)


@dataclass
class ClassifierScorer:
    """Confidence = max over target classes of a window classifier's own probability (the ResNet18 detector's
    softmax ``P(call)``) on the stage-C input of its preset; clips are fitted to its windows as in
    :class:`ProbeScorer`.

    Attributes:
        model: has ``name``, ``classes``, ``input_spec`` (an :class:`~birdassets.models.base.InputSpec`) and
            ``probabilities(mel [n, frames, mels]) -> [n, classes]``.
        targets: target class names among ``model.classes`` (``["call"]``).
        preset: the frontend of ``model.input_spec.preset`` (a built-in, a user preset or an exported folder's).
    """

    model: object
    targets: Sequence[str]
    preset: object
    indices: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        from birdassets.frontends.tf_mel import TFMelFrontend

        if self.preset.name != self.model.input_spec.preset:
            raise ValueError(f"{self.model.name} reads {self.model.input_spec.preset!r} windows, not {self.preset.name!r}")
        self.indices = resolve_labels(self.model.classes, self.targets)
        self._frontend = TFMelFrontend(self.preset)

    @property
    def name(self) -> str:
        return f"{self.model.name}:" + "|".join(self.model.classes[i] for i in self.indices)

    @property
    def sample_rate(self) -> int:
        return self.preset.sample_rate

    def score(self, clips: np.ndarray) -> np.ndarray:
        mel, n, k = encoder_inputs(clips, self.preset.clip_samples, self._frontend)
        probabilities = self.model.probabilities(mel)  # [n * k, classes]
        return probabilities[:, self.indices].max(axis=1).reshape(n, k).max(axis=1)


def encoder_inputs(clips: np.ndarray, samples: int, frontend) -> tuple[np.ndarray, int, int]:
    """``[n, clip_samples]`` clips -> ``(inputs, n, k)``: ``k`` windows of ``samples`` per clip
    (:func:`fit_clips`) as stage-C mel ``[n * k, frames, mels]`` of ``frontend``, or as waveforms
    ``[n * k, samples]`` when ``frontend`` is ``None``."""
    windows = fit_clips(clips, samples)  # [n, k, samples]
    n, k, _ = windows.shape
    flat = windows.reshape(n * k, samples)
    return (frontend.model_input(flat).numpy() if frontend is not None else flat), n, k


@dataclass(frozen=True)
class BandEnergyScorer:
    """A classical energy detector: the fraction of a clip's power in ``[f_lo, f_hi]`` Hz, in [0, 1].

    Useful as a model-free baseline on hydrophone data (a call band against broadband noise).
    """

    f_lo: float
    f_hi: float
    sample_rate: int = 16_000

    @property
    def name(self) -> str:
        return f"band-energy:{self.f_lo:g}-{self.f_hi:g}Hz"

    def score(self, clips: np.ndarray) -> np.ndarray:
        spectrum = np.abs(np.fft.rfft(clips, axis=1)) ** 2  # [windows, freqs]
        freqs = np.fft.rfftfreq(clips.shape[1], 1.0 / self.sample_rate)
        band = (freqs >= self.f_lo) & (freqs <= self.f_hi)
        total = spectrum.sum(axis=1)
        return np.where(total > 0, spectrum[:, band].sum(axis=1) / np.maximum(total, 1e-30), 0.0)


def make_scorer(settings, encoder: str, targets: Sequence[str], probe: str | None = None) -> WindowScorer:
    """The scorer a user names: BirdNET's own logits, a window classifier's own probabilities (a ResNet18
    detector checkpoint), or ``probe = "<task>:<probe>"``, the probe the benchmark trained on ``task`` for
    ``encoder`` (``"birdnet"``/``"birdnet-v2.4"`` or any checkpoint key). An ``encoder`` naming a folder is an
    exported model (:func:`birdassets.export.bundle.read_bundle`), run from the folder alone.

    Raises:
        ValueError: unknown targets, a malformed probe name, or an encoder without class logits and no probe.
        FileNotFoundError / CheckpointError: the probe or the checkpoint does not exist.
    """
    from birdassets.artifacts import load_probe
    from birdassets.models.base import InputSpec
    from birdassets.models.registry import BIRDNET_KEY, load_encoder

    if Path(encoder).is_dir():  # an exported model folder: run from the folder alone
        from birdassets.export.bundle import read_bundle

        if probe is not None:
            raise ValueError(f"{encoder}: an exported folder scores with its own classes; drop --probe")
        exported = read_bundle(encoder)
        return ClassifierScorer(exported.model, targets, exported.preset)
    key = BIRDNET_KEY if encoder == "birdnet" else encoder
    task, name = parse_probe(settings, probe) if probe is not None else ("", "")
    loaded = load_encoder(settings.checkpoint_roots, key, models_root=settings.layout.models_root)
    if probe is None:
        if hasattr(loaded.encoder, "probabilities"):  # a window classifier (the ResNet18 call detector)
            return ClassifierScorer(loaded.encoder, targets, settings.preset(loaded.encoder.input_spec.preset))
        if key != BIRDNET_KEY:
            raise ValueError(f"encoder {key!r} has no class logits: name a trained probe (--probe TASK:PROBE)")
        return BirdNetScorer(loaded.encoder, targets)
    params, classes = load_probe(settings.layout.probes_dir(task, key), name, f"{task} x {key}")
    mel = isinstance(loaded.encoder.input_spec, InputSpec)
    preset = settings.task_preset(task) if mel else None  # mel encoders need the frontend
    return ProbeScorer(loaded.encoder, params, classes, targets, preset=preset, label=f"{task}/{name}")


def parse_probe(settings, probe: str) -> tuple[str, str]:
    """``"<task>:<probe>"`` as ``(task, probe)``: a configured task and one of the configured probes, so the
    name can never point at a file outside the benchmark's probes folder.

    Raises:
        ValueError: not of that form, or a probe that is not configured.
        SettingsError: an unknown task.
    """
    task, _, name = probe.partition(":")
    if not task or not name:
        raise ValueError(f"probe {probe!r} must be '<task>:<probe>', e.g. 'demo-clear:linear'")
    settings.dataset(task)  # an unknown task is refused, naming the configured ones
    if name not in settings.probes:
        raise ValueError(f"probe {probe!r}: unknown probe {name!r}; configured: {list(settings.probes)}")
    return task, name


def resolve_labels(labels: Sequence[str], targets: Sequence[str]) -> np.ndarray:
    """Indices of ``targets`` in ``labels`` (full label, scientific name or common name, case-insensitive)."""
    if not targets:
        raise ValueError("no target classes given")
    lookup = {label.strip().lower(): index for index, label in reversed(list(enumerate(labels)))}
    for index, label in enumerate(labels):  # a whole label wins over a part of another ("call" vs "no_call")
        for key in label.split("_", 1):
            lookup.setdefault(key.strip().lower(), index)
    missing = [t for t in targets if t.strip().lower() not in lookup]
    if missing:
        raise ValueError(f"unknown target classes {missing}; give a label as in the model's label list "
                         f"(e.g. {labels[0]!r}), its scientific name or its common name")
    return np.array(sorted({lookup[t.strip().lower()] for t in targets}))
