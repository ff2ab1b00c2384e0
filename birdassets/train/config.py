"""Training settings as one frozen dataclass, readable from a TOML/JSON file and overridable by flags."""

from __future__ import annotations

import dataclasses
import json
import numbers
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from birdassets.layout import safe_name

OBJECTIVES = ("mae", "supervised")
TIDHY = "tidhy"
"""``model = "tidhy"``: a TiDHy dynamics encoder of the task's pooled mel frames instead of a ViT
(:func:`birdassets.steps.train_tidhy_encoder`)."""
TIDHY_FIELDS = ("task", "num_steps", "batch_size", "checkpoint_every", "max_checkpoints", "seed", "log_every")
"""The settings a TiDHy run reads (besides the run folder); the others are the ViT's."""
RESNET = "resnet18"
"""``model = "resnet18"``: a ResNet18 call detector trained with softmax cross-entropy on a binary task
(:func:`birdassets.train.detector_loop.train_detector`)."""
RESNET_FIELDS = ("task", "num_steps", "warmup_steps", "lr", "weight_decay", "grad_clip", "batch_size", "log_every",
                 "checkpoint_every", "max_checkpoints", "seed", "precision", "devices", "shuffle_buffer", "width")
"""The settings a ResNet18 run reads (besides the run folder)."""
PRECISIONS = ("float32", "bfloat16")


class TrainConfigError(ValueError):
    """Invalid training settings; the message names the file (if any) and the field."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (and so its checkpoints).

    Attributes:
        task: configured data set whose ``train`` windows are used.
        objective: ``"mae"`` (masked-patch reconstruction, SimMIM-style) or ``"supervised"`` (BCE on labels).
        model: ViT size (``tiny``, ``small``, ``base``), ``tidhy`` for a TiDHy dynamics encoder, or ``resnet18``
            for a ResNet18 call detector (``no_call``/``call``) on a task with one class.
        patch_frames, patch_mels: ViT patch size along time (frames) and frequency (mel bins) of the model input.
        num_steps: optimisation steps in total (a resumed run continues up to this).
        warmup_steps: linear warm-up steps of the learning rate (capped at ``num_steps``).
        lr: peak learning rate (AdamW, cosine decay to 0 at ``num_steps``).
        weight_decay: AdamW decoupled weight decay (masked off biases, norms, cls/pos embeddings).
        grad_clip: global-norm gradient clipping.
        batch_size: windows per step (split evenly across devices).
        log_every: steps between log lines / online-probe evaluations.
        checkpoint_every: steps between checkpoints (step 0 and the last step are always saved).
        max_checkpoints: Orbax ``max_to_keep`` (``None`` keeps all).
        output_dir: the run's checkpoint folder (``<checkpoint root>/<run>``).
        seed: parameter init, masks, data order.
        mask_ratio: fraction of patches masked for ``mae``.
        probe_lr: learning rate of the online linear probe.
        precision: ``"bfloat16"`` computes in bf16 with float32 master weights.
        devices: how many devices to shard the batch over (``None``: all visible).
        shuffle_buffer: tf.data shuffle buffer (windows).
        width: ResNet18 base channels (64 = the standard ResNet18, 512-d features; stages double it).
    """

    task: str = "demo-noisy"
    objective: str = "mae"
    model: str = "tiny"
    patch_frames: int = 16
    patch_mels: int = 16
    num_steps: int = 300
    warmup_steps: int = 30
    lr: float = 1e-3
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    batch_size: int = 32
    log_every: int = 25
    checkpoint_every: int = 100
    max_checkpoints: int | None = None
    output_dir: str | None = None
    seed: int = 0
    mask_ratio: float = 0.6
    probe_lr: float = 1e-2
    precision: str = "float32"
    devices: int | None = None
    shuffle_buffer: int = 2048
    width: int = 64

    def __post_init__(self) -> None:
        kinds = {"int": numbers.Integral, "float": numbers.Real, "str": str}
        wrong = []
        for f in dataclasses.fields(self):  # annotations are strings here: "int", "float", "int | None", ...
            value = getattr(self, f.name)
            if value is None and f.type.endswith("| None"):
                continue
            if isinstance(value, bool) or not isinstance(value, kinds[f.type.removesuffix(" | None")]):
                wrong.append(f"{f.name} must be {f.type}, got {value!r}")
        if wrong:
            raise TrainConfigError("invalid training config: " + "; ".join(wrong))
        problems = []
        if self.objective not in OBJECTIVES:
            problems.append(f"objective {self.objective!r} is not one of {OBJECTIVES}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r} is not one of {PRECISIONS}")
        for name in ("num_steps", "batch_size", "log_every", "checkpoint_every", "patch_frames", "patch_mels", "width"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be >= 1")
        if self.warmup_steps < 0:
            problems.append("warmup_steps must be >= 0")
        if not 0 < self.mask_ratio < 1:
            problems.append("mask_ratio must be within (0, 1)")
        if self.lr <= 0 or self.probe_lr <= 0 or self.weight_decay < 0 or self.grad_clip <= 0:
            problems.append("lr, probe_lr and grad_clip must be > 0 and weight_decay >= 0")
        if self.max_checkpoints is not None and self.max_checkpoints < 1:
            problems.append("max_checkpoints must be >= 1 (or unset to keep all)")
        if problems:
            raise TrainConfigError("invalid training config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes`` applied (``None`` values are ignored, so unset flags keep the file's value)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        """Read a ``.toml`` or ``.json`` file holding any of the fields."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as error:
            raise TrainConfigError(f"{path}: cannot read training config ({error})") from error
        try:
            raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
            raise TrainConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'TOML'} ({error})") from error
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise TrainConfigError(f"{path}: unknown training settings {unknown}; known: {sorted(known)}")
        try:
            return cls(**raw)
        except TrainConfigError as error:
            raise TrainConfigError(f"{path}: {error}") from error


def run_directory(run: str, roots: Sequence[Path]) -> Path:
    """``<first root>/<run>``: the folder of the training run named ``run`` (``train_job``'s ``run`` setting).

    Raises:
        TrainConfigError: ``run`` is not a plain name (one path component of letters, digits, ``_ . @ -``; not
            ``.`` or ``..``), so an absolute path or ``../x`` never leaves the roots; or the folder is a link that
            resolves outside every root in ``roots``.
    """
    if not isinstance(run, str) or run in ("", ".", "..") or safe_name(run) != run:
        raise TrainConfigError(f"run {run!r} must be a plain name (letters, digits and _ . @ -, not '.' or '..'): "
                               f"the run is written to <checkpoint root>/<run> under {roots[0]}")
    path = roots[0] / run
    resolved = path.resolve()
    if not any(resolved.is_relative_to(root.resolve()) for root in roots):
        raise TrainConfigError(f"run {run!r}: {path} resolves to {resolved}, outside every checkpoint root "
                               f"({', '.join(str(root) for root in roots)})")
    return path
