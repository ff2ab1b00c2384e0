"""Spectrogram frontend presets: frozen dataclasses in a small registry, each with a content hash.

A preset fixes every number between a waveform and a model input, split into three stages:

* **A — windowing** (:mod:`birdassets.frontends.windowing`): clip length and hop over a recording, and
  what happens to the last partial window (zero-padded when at least ``min_last_s`` long, dropped otherwise).
* **B — mel spectrogram on a log scale**: STFT (periodic Hann of ``n_fft`` samples), ``|X| ** power``,
  mel filterbank, then ``10 log10`` with a reference and a ``top_db`` floor (``log="db"``) or a scaled natural
  log with a floor (``log="ln"``); shape ``[frames, mels]``.
* **C — model input** (:class:`ModelInputSpec`): normalisation, resizing and time cropping/padding of
  stage B to what a model expects.

Both implementations (:mod:`~birdassets.frontends.tf_mel`, :mod:`~birdassets.frontends.jax_mel`) return
float32 and compute stage B in the preset's :attr:`MelPreset.precision`: ``"float64"`` throughout agrees with
librosa on a float64 waveform (:mod:`~birdassets.frontends.reference`) to well under 1e-4 dB even 80-100 dB
below the peak; ``"mixed"`` (the built-ins) keeps the window and FFT in float64 and runs the rest in float32,
within 1e-3 dB of it (measured ~1e-5) and faster; ``"float32"`` throughout is ~1e-2 dB off on quiet bins.

The preset's :meth:`MelPreset.content_hash` enters lineage in DuckDB and the path of its mel dataset, so
changing any parameter produces a new dataset (and stale downstream assets) instead of silently mixing.
User presets come from ``[presets.<name>]`` tables of a TOML file (:func:`presets_from_toml`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

#: Bump when the implementation (not the parameters) changes numerics. 2: float64 stage B, stage C spec.
#: 3: stage-B ``precision`` field, built-ins ``"mixed"``.
FRONTEND_VERSION = "3"

#: Stage-B compute precisions (:attr:`MelPreset.precision`): what runs in float64 before the float32 output.
STAGE_B_PRECISIONS = ("float64", "mixed", "float32")


class PresetError(ValueError):
    """A preset is unknown or its parameters are invalid; the message names the preset, field and file."""


@dataclass(frozen=True)
class ModelInputSpec:
    """Stage C: from stage B ``[frames, mels]`` to the model input, applied in this order.

    1. ``normalize``: ``"none"``; ``"minmax"`` maps each window's own ``[min, max]`` to [0, 1] as
       ``(x - min) / (max - min + eps)``; ``"standardize"`` computes ``(x - mean) / std`` with fixed
       dataset statistics.
    2. ``size``: bilinear resize to ``(frames, mels)`` with half-pixel centres and no antialiasing
       (OpenCV ``INTER_LINEAR``, ``tf.image.resize(..., "bilinear")``), as BirdCLEF notebooks do with
       ``cv2.resize``; ``None`` keeps the stage-B size.
    3. ``frames``: crop the time axis to this many frames, or pad it at the end with ``pad_value``;
       ``None`` keeps it.

    Attributes:
        normalize: ``"none"``, ``"minmax"`` or ``"standardize"``.
        mean, std: statistics of ``"standardize"`` (in stage-B units, e.g. dB).
        eps: added to the ``"minmax"`` range (a silent window maps to zeros instead of NaN).
        size: ``(frames, mels)`` after resizing, or ``None``.
        frames: time frames after cropping/padding, or ``None``.
        pad_value: value of padded frames (stage-B units after normalisation).
    """

    normalize: Literal["none", "minmax", "standardize"] = "none"
    mean: float = 0.0
    std: float = 1.0
    eps: float = 1e-8
    size: tuple[int, int] | None = None
    frames: int | None = None
    pad_value: float = 0.0

    def problems(self) -> list[str]:
        found = []
        if self.normalize not in ("none", "minmax", "standardize"):
            found.append(f"model_input.normalize {self.normalize!r} is not 'none', 'minmax' or 'standardize'")
        if self.normalize == "standardize" and not self.std > 0:
            found.append(f"model_input.std must be > 0, got {self.std} (a negative std flips the input's sign)")
        if self.eps < 0:
            found.append("model_input.eps must be >= 0")
        if self.size is not None and (len(self.size) != 2 or min(self.size) <= 0):
            found.append(f"model_input.size must be two positive ints (frames, mels), got {self.size!r}")
        if self.frames is not None and self.frames <= 0:
            found.append(f"model_input.frames must be > 0, got {self.frames}")
        return found


_CHOICES = {
    "pad_mode": ("constant", "reflect"),
    "spectrum_scale": ("none", "window_sum"),
    "mel_scale": ("slaney", "htk"),
    "mel_norm": ("slaney", None),
    "log": ("db", "ln"),
    "precision": STAGE_B_PRECISIONS,
}


@dataclass(frozen=True)
class MelPreset:
    """All parameters of a mel frontend.

    Attributes:
        name: registry name.
        sample_rate: audio is resampled to this rate, Hz.
        n_fft: FFT size and periodic-Hann window length, samples.
        hop_length: STFT hop, samples.
        n_mels: mel bands.
        f_min, f_max: filterbank edges, Hz (``f_max`` at most the Nyquist frequency of ``sample_rate``).
        clip_s: window (clip) length of stage A, seconds.
        hop_s: hop between windows of stage A, seconds.
        min_last_s: the last partial window is kept (zero-padded) when at least this long, seconds.
        center: pad ``n_fft // 2`` samples on both sides before the STFT (librosa/torchaudio ``center=True``);
            frames per ``n`` samples: ``1 + n // hop_length`` (centred), else ``1 + (n - n_fft) // hop_length``.
        pad_mode: ``"constant"`` (zeros, librosa >= 0.10 default) or ``"reflect"`` (torchaudio default).
        power: exponent of the magnitude (2 = power spectrogram, 1 = magnitude).
        spectrum_scale: ``"none"``, or ``"window_sum"`` to divide the STFT by the window's sum
            (``scipy.signal.stft``'s ``scaling="spectrum"``) before taking ``|X| ** power``.
        mel_scale: ``"slaney"`` (librosa default) or ``"htk"`` (torchaudio default).
        mel_norm: ``"slaney"`` (area normalisation, librosa default) or ``None``.
        filterbank_rate: build the filterbank as if audio were at this rate, Hz (``None``: ``sample_rate``);
            only for bug-compatibility with models trained that way (OrcaHello).
        log: ``"db"``: ``10 log10(max(mel, amin) / ref)`` floored at ``max - top_db``; ``"ln"``:
            ``ln_scale * ln(max(mel, ln_floor) + ln_offset)``.
        db_ref: ``"max"`` (each window's own maximum, librosa ``ref=np.max``) or a fixed reference.
        amin: floor on the mel value before ``log10``.
        top_db: per window, dB below ``max - top_db`` are raised to it (``None``: no floor).
        ln_floor, ln_offset, ln_scale: parameters of ``log="ln"``.
        precision: stage-B compute precision (the output is float32 in every case). ``"float64"``: every step
            (<= 1e-4 dB from librosa on a float64 waveform); ``"mixed"``: windowing, FFT and ``|X|^2`` in float64,
            then ``** power``, filterbank and log in float32 (<= 1e-3 dB, measured ~1e-5; ~1.3-1.6x float64 on 2 cores);
            ``"float32"``: every step (float32 FFTs put bins 60-100 dB below a frame's peak ~1e-2 dB off).
            Part of :meth:`content_hash`, so datasets of different precisions never mix.
        model_input: stage C (:class:`ModelInputSpec`).
    """

    name: str
    sample_rate: int
    n_fft: int
    hop_length: int
    n_mels: int
    f_min: float
    f_max: float
    clip_s: float = 5.0
    hop_s: float = 5.0
    min_last_s: float = 1.0
    center: bool = True
    pad_mode: Literal["constant", "reflect"] = "constant"
    power: float = 2.0
    spectrum_scale: Literal["none", "window_sum"] = "none"
    mel_scale: Literal["slaney", "htk"] = "slaney"
    mel_norm: Literal["slaney"] | None = "slaney"
    filterbank_rate: int | None = None
    log: Literal["db", "ln"] = "db"
    db_ref: Literal["max"] | float = "max"
    amin: float = 1e-10
    top_db: float | None = 80.0
    ln_floor: float = 1e-2
    ln_offset: float = 0.0
    ln_scale: float = 0.1
    precision: Literal["float64", "mixed", "float32"] = "mixed"
    model_input: ModelInputSpec = field(default_factory=ModelInputSpec)

    def __post_init__(self) -> None:
        problems = []
        if self.sample_rate <= 0:
            problems.append("sample_rate must be > 0")
        if self.n_fft <= 0 or self.hop_length <= 0 or self.n_mels <= 0:
            problems.append("n_fft, hop_length and n_mels must be > 0")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            problems.append(f"need 0 <= f_min < f_max <= Nyquist ({self.sample_rate / 2} Hz)")
        if self.clip_s <= 0 or self.hop_s <= 0 or self.min_last_s < 0:
            problems.append("clip_s and hop_s must be > 0 and min_last_s >= 0")
        if self.clip_samples < self.n_fft and not self.center:
            problems.append(f"a clip of {self.clip_samples} samples is shorter than one frame (n_fft {self.n_fft})")
        if self.pad_mode == "reflect" and self.clip_samples <= self.n_fft // 2:
            problems.append(f"reflect padding of {self.n_fft // 2} needs clips longer than that")
        if self.power <= 0:
            problems.append("power must be > 0")
        if self.filterbank_rate is not None and self.filterbank_rate <= 0:
            problems.append("filterbank_rate must be > 0")
        if self.amin <= 0 or self.ln_floor <= 0:
            problems.append("amin and ln_floor must be > 0")
        if self.top_db is not None and self.top_db <= 0:
            problems.append("top_db must be > 0 or None")
        if not (self.db_ref == "max" or (not isinstance(self.db_ref, str) and self.db_ref > 0)):
            problems.append(f"db_ref must be 'max' or a positive number, got {self.db_ref!r}")
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                problems.append(f"{name} {getattr(self, name)!r} is not one of {allowed}")
        if not isinstance(self.model_input, ModelInputSpec):
            problems.append(f"model_input must be a ModelInputSpec, got {type(self.model_input).__name__}")
        else:
            problems += self.model_input.problems()
        if problems:
            raise PresetError(f"preset {self.name!r}: " + "; ".join(problems))

    @property
    def clip_samples(self) -> int:
        """Samples per stage-A window."""
        return int(round(self.clip_s * self.sample_rate))

    def stft_frames(self, samples: int) -> int:
        """Stage-B frames of a ``samples``-long signal (an int, or a scalar integer tensor in a traced function)."""
        if self.center:
            return 1 + samples // self.hop_length
        return 1 + (samples - self.n_fft) // self.hop_length

    @property
    def frames(self) -> int:
        """Stage-B frames per window (time axis of ``mel_db``)."""
        return self.stft_frames(self.clip_samples)

    @property
    def stage_b_dtypes(self) -> tuple[str, str]:
        """``(spectrum, mel)`` dtype names of stage B: windowing, FFT and ``|X|^2`` run in the first; ``** power``,
        filterbank and log in the second (see :attr:`precision`)."""
        return {"float64": ("float64", "float64"), "mixed": ("float64", "float32"),
                "float32": ("float32", "float32")}[self.precision]

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def input_shape(self) -> tuple[int, int]:
        """Stage-C output per window, ``(frames, mels)``: what an encoder for this preset takes."""
        spec = self.model_input
        frames, mels = spec.size if spec.size is not None else (self.frames, self.n_mels)
        return (spec.frames if spec.frames is not None else frames, mels)

    @property
    def input_value_range(self) -> tuple[float, float]:
        """Bounds every stage-C value lies in (``-inf``/``inf`` where the preset guarantees none).

        ``minmax``: [0, 1]. Otherwise from stage B: ``[-top_db, 0]`` dB for a per-window ``max`` reference,
        ``[ln_scale * ln(ln_floor + ln_offset), inf)`` for ``log="ln"`` (positive ``ln_scale``), then mapped by
        ``standardize`` and widened to include ``pad_value`` when frames are padded. Resizing stays inside.
        """
        spec = self.model_input
        if spec.normalize == "minmax":
            return (0.0, 1.0)
        low, high = -math.inf, math.inf
        if self.log == "db" and self.db_ref == "max" and self.top_db is not None:
            low, high = -self.top_db, 0.0
        elif self.log == "ln" and self.ln_scale > 0:
            low = self.ln_scale * math.log(self.ln_floor + self.ln_offset)
        if spec.normalize == "standardize":
            low, high = (low - spec.mean) / spec.std, (high - spec.mean) / spec.std
        if spec.frames is not None:
            low, high = min(low, spec.pad_value), max(high, spec.pad_value)
        return (low, high)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MelPreset:
        """The preset of a :meth:`to_dict` (e.g. an exported model's ``preprocessor_config.json``), validated.

        Raises:
            PresetError: unknown or missing fields, or invalid values.
        """
        data = dict(data)
        try:
            spec = ModelInputSpec(**data.pop("model_input", {}))
            return cls(model_input=spec, **data)
        except TypeError as error:
            raise PresetError(f"preset {data.get('name')!r}: {error}") from None

    def content_hash(self) -> str:
        """sha256 over every parameter and the frontend implementation version."""
        payload = json.dumps({"frontend_version": FRONTEND_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


_FIELD_TYPES = typing.get_type_hints(MelPreset)
_SPEC_TYPES = typing.get_type_hints(ModelInputSpec)

PRESETS: dict[str, MelPreset] = {
    # BirdCLEF 2025 public notebooks: librosa.feature.melspectrogram defaults (Slaney scale and norm, centred
    # with zeros), power_to_db(ref=np.max, top_db=80), per-clip min-max, cv2.resize to 256 x 256.
    "birdclef2025": MelPreset(
        name="birdclef2025",
        sample_rate=32_000,
        n_fft=1024,
        hop_length=512,
        n_mels=128,
        f_min=50.0,
        f_max=14_000.0,
        model_input=ModelInputSpec(normalize="minmax", size=(256, 256)),
    ),
    # BirdSet (torchaudio Spectrogram + MelScale + PowerToDB defaults). Deliberate difference: the top_db
    # floor is per clip; BirdSet's PowerToDB takes the max over the whole batch tensor, which makes a clip's
    # input depend on its batch mates. Statistics are BirdSet's YAML ones (positive std; the Python
    # default in BirdSet's PreprocessingConfig has std=-4.569, a sign error).
    "birdset": MelPreset(
        name="birdset",
        sample_rate=32_000,
        n_fft=1024,
        hop_length=320,
        n_mels=128,
        f_min=0.0,
        f_max=16_000.0,
        pad_mode="reflect",
        mel_scale="htk",
        mel_norm=None,
        db_ref=1.0,
        top_db=80.0,
        model_input=ModelInputSpec(normalize="standardize", mean=-4.268, std=4.569),
    ),
    # OrcaHello SRKW detector (fastai_audio + torchaudio MelSpectrogram): 2 s clips every 1 s at 20 kHz, only
    # whole clips (min_last_s = clip_s, as the live system's proposals; a recording shorter than 2 s still gives
    # one zero-padded clip, where the live system gives none). Legacy quirk kept on purpose: the
    # filterbank is built for 16 kHz (torchaudio's default rate was never overridden), so filters meant for
    # 0-10 kHz span 0-12.5 kHz of the real spectrum and the bands above 8 kHz "as if" are empty (top_db floor).
    # Stage C pads each 157-frame clip to int(4.0 * 20000 / 256) = 312 frames with 0 dB (full scale, not
    # silence: the legacy "known issue", kept for parity).
    "orcahello": MelPreset(
        name="orcahello",
        sample_rate=20_000,
        n_fft=2560,
        hop_length=256,
        n_mels=256,
        f_min=0.0,
        f_max=10_000.0,
        clip_s=2.0,
        hop_s=1.0,
        min_last_s=2.0,
        pad_mode="reflect",
        mel_scale="htk",
        mel_norm=None,
        filterbank_rate=16_000,
        db_ref=1.0,
        top_db=100.0,
        model_input=ModelInputSpec(frames=312, pad_value=0.0),
    ),
    # Perch 2.0 frontend (chirp MelSpectrogram: scipy-style STFT, kernel 640, stride 320, spectrum scaling,
    # power 1, 128 mels 60-16000 Hz, LogScalingConfig floor 1e-2, offset 0, scalar 0.1):
    #   stage B = 0.1 * ln(max(M @ |STFT(x) / sum(w)|, 1e-2)).
    # Deliberate difference: librosa's HTK filters (triangles linear in Hz between mel-spaced edges) instead
    # of chirp's tf-style matrix (triangles linear in mel), so librosa can compute the same quantity. Stage C
    # drops the last frame (500 frames per 5 s, the "SAME"-convolution count Perch keeps). Perch's own
    # wrapper also peak-normalises each waveform window to 0.25; that belongs to the model, not the frontend.
    "perch": MelPreset(
        name="perch",
        sample_rate=32_000,
        n_fft=640,
        hop_length=320,
        n_mels=128,
        f_min=60.0,
        f_max=16_000.0,
        power=1.0,
        spectrum_scale="window_sum",
        mel_scale="htk",
        mel_norm=None,
        log="ln",
        ln_floor=1e-2,
        ln_offset=0.0,
        ln_scale=0.1,
        model_input=ModelInputSpec(frames=500),
    ),
}


def get_preset(name: str, extra: Mapping[str, MelPreset] | None = None) -> MelPreset:
    """Look a preset up by name among the built-ins and ``extra`` (user presets), naming the known ones."""
    known = {**PRESETS, **(extra or {})}
    try:
        return known[name]
    except KeyError:
        raise PresetError(f"unknown preset {name!r}; known presets: {sorted(known)}") from None


def _check_type(value: Any, annotation: Any) -> bool:
    """Whether a TOML value fits a field annotation (ints accepted for floats, never bools for numbers)."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    options = typing.get_args(annotation) if union else (annotation,)
    for option in options:
        if option is type(None) and value is None:
            return True
        if typing.get_origin(option) is Literal and value in typing.get_args(option):
            return True
        if option is bool and isinstance(value, bool):
            return True
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return True
        if option is str and isinstance(value, str):
            return True
        if typing.get_origin(option) is tuple and isinstance(value, list | tuple):
            return len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    return False


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _coerce(value: Any, annotation: Any) -> Any:
    """TOML lists to tuples, and ints to floats for float fields (so ``mean = -5`` hashes as ``-5.0``)."""
    if isinstance(value, list):
        return tuple(value)
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    options = typing.get_args(annotation) if union else (annotation,)
    if isinstance(value, int) and not isinstance(value, bool) and float in options and int not in options:
        return float(value)
    return value


def _typed_fields(where: str, table: Mapping[str, Any], hints: dict[str, Any], skip: set[str]) -> dict[str, Any]:
    """Validate one TOML table against dataclass field types; errors name ``where`` and every bad key."""
    problems = []
    for key, value in table.items():
        if key in skip:
            continue
        if key not in hints:
            problems.append(f"unknown field {key!r} (fields: {', '.join(sorted(hints))})")
        elif not _check_type(value, hints[key]):
            problems.append(f"{key} = {value!r} is not {_type_name(hints[key])}")
    if problems:
        raise PresetError(f"{where}: " + "; ".join(problems))
    return {k: _coerce(v, hints[k]) for k, v in table.items() if k not in skip}


def preset_from_table(name: str, table: Mapping[str, Any], source: str = "<config>") -> MelPreset:
    """Build a user preset from a TOML-like table.

    ``base = "<built-in name>"`` starts from a built-in preset and overrides the given fields (a nested
    ``model_input`` table overrides fields of the base's stage C); without ``base`` every required field
    (``sample_rate``, ``n_fft``, ``hop_length``, ``n_mels``, ``f_min``, ``f_max``) must be given.
    Names of built-in presets cannot be redefined, so ``birdset`` always means BirdSet's frontend.

    Raises:
        PresetError: naming ``source``, the preset and each offending field.
    """
    where = f"{source}: preset {name!r}"
    if name in PRESETS:
        raise PresetError(f"{where}: redefines the built-in preset {name!r}; pick another name (or base = {name!r})")
    if not isinstance(table, Mapping):
        raise PresetError(f"{where}: must be a table of fields, got {table!r}")
    hints = {k: v for k, v in _FIELD_TYPES.items() if k != "name"} | {"base": str}
    fields = _typed_fields(where, table, hints, skip={"model_input"})
    base_name = fields.pop("base", None)
    spec_table = table.get("model_input", {})
    if not isinstance(spec_table, Mapping):
        raise PresetError(f"{where}: model_input must be a table, got {spec_table!r}")
    spec_fields = _typed_fields(f"{where} model_input", spec_table, _SPEC_TYPES, skip=set())
    try:
        if base_name is not None:
            if base_name not in PRESETS:
                raise PresetError(f"preset {name!r}: base {base_name!r} is not a built-in preset {sorted(PRESETS)}")
            base = PRESETS[base_name]
            spec = dataclasses.replace(base.model_input, **spec_fields)
            return dataclasses.replace(base, name=name, model_input=spec, **fields)
        missing = [f.name for f in dataclasses.fields(MelPreset)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   and f.name != "name" and f.name not in fields]
        if missing:
            raise PresetError(f"preset {name!r}: missing required fields {missing} (or set base = one of {sorted(PRESETS)})")
        return MelPreset(name=name, model_input=ModelInputSpec(**spec_fields), **fields)
    except PresetError as error:
        raise PresetError(f"{source}: {error}") from None


def presets_from_tables(tables: Mapping[str, Any], source: str = "<config>") -> dict[str, MelPreset]:
    """``{name: table}`` (the ``[presets]`` table of a config file) to validated presets."""
    if not isinstance(tables, Mapping):
        raise PresetError(f"{source}: [presets] must be a table of preset tables")
    return {name: preset_from_table(name, table, source) for name, table in tables.items()}


def presets_from_toml(path: str | Path) -> dict[str, MelPreset]:
    """User presets from the ``[presets.<name>]`` tables of a TOML file (see :func:`preset_from_table`)."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise PresetError(f"{path}: preset file not found") from None
    except tomllib.TOMLDecodeError as error:
        raise PresetError(f"{path}: not valid TOML ({error})") from None
    return presets_from_tables(document.get("presets", {}), str(path))
