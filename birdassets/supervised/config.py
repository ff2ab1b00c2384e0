"""Configuration of the BirdCLEF-style supervised system (Keras 3 on JAX): augmentations, model family, training.

Three frozen dataclasses, validated on construction; each has a ``content_hash`` that goes into the lineage of
every score it produced. Defaults follow the BirdCLEF 2025 recipe this system reproduces: mixup with
alpha = 0.5, SpecAugment time and frequency masks, random brightness/contrast; BCE loss; 5 folds; seed 42.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from birdassets.lineage import content_hash
from birdassets.models.keras.keys import MODEL_FAMILIES, model_key, parse_model_key  # noqa: F401 (re-exported)

CNN_BACKBONES = ("efficientnet_b0", "resnet50")
"""``keras.applications`` backbones of the CNN family, built with ``weights=None``."""

RNN_CELLS = ("gru", "lstm")
LOSSES = ("bce", "focal")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
"""``auto``: ``mixed_float16`` when JAX sees a GPU, else ``mixed_bfloat16`` (variables stay float32)."""

SEED = 42
"""The seed of numpy, TensorFlow, Python ``random`` and Keras unless one is given."""

DEBUG_SAMPLES = 1000
"""Debug mode trains on at most this many training windows (chosen with the seed) ..."""
DEBUG_EPOCHS = 2
"""... for this many epochs."""

SUPERVISED_PROBE = "supervised"
"""The ``probe`` column of a supervised model's score rows (the model is its own classifier)."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class AugmentConfig:
    """Training-only augmentations of ``[batch, frames, mels]`` windows with values in [0, 1].

    Attributes:
        mixup: mix each window with another of its batch, ``x = lam * x_i + (1 - lam) * x_j`` and the labels
            with the same ``lam ~ Beta(mixup_alpha, mixup_alpha)`` (one ``lam`` per window).
        mixup_alpha: Beta parameter, > 0.
        spec_augment: zero out random time and frequency bands (SpecAugment masking).
        time_masks / time_mask_max: masks per window along frames / widest mask, frames (width ~ U{0..max}).
        freq_masks / freq_mask_max: masks per window along mels / widest mask, mel bins.
        brightness_contrast: ``x' = clip((x - mean) * c + mean + b, 0, 1)`` per window with
            ``b ~ U(-brightness, brightness)`` and ``c ~ U(1 - contrast, 1 + contrast)``.
    """

    mixup: bool = True
    mixup_alpha: float = 0.5
    spec_augment: bool = True
    time_masks: int = 2
    time_mask_max: int = 20
    freq_masks: int = 2
    freq_mask_max: int = 10
    brightness_contrast: bool = True
    brightness: float = 0.1
    contrast: float = 0.2

    def __post_init__(self) -> None:
        _require(self.mixup_alpha > 0, f"mixup_alpha must be > 0, got {self.mixup_alpha}")
        for name in ("time_masks", "time_mask_max", "freq_masks", "freq_mask_max"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value >= 0, f"{name} must be an integer >= 0, got {value!r}")
        _require(0 <= self.brightness <= 1, f"brightness must be in [0, 1], got {self.brightness}")
        _require(0 <= self.contrast < 1, f"contrast must be in [0, 1), got {self.contrast}")

    @classmethod
    def off(cls) -> AugmentConfig:
        """Every augmentation switched off (``--no-augment``; evaluation always runs without them)."""
        return cls(mixup=False, spec_augment=False, brightness_contrast=False)

    @property
    def active(self) -> bool:
        return self.mixup or self.spec_augment or self.brightness_contrast

    def content_hash(self) -> str:
        return content_hash(self)


@dataclass(frozen=True)
class ModelConfig:
    """One supervised model family and its architecture.

    Attributes:
        family: ``cnn`` | ``rnn`` | ``vit`` (:data:`MODEL_FAMILIES`).
        backbone: CNN backbone (:data:`CNN_BACKBONES`), ``keras.applications`` with ``weights=None``.
        rnn_cell / rnn_layers / rnn_units: RNN over time, input ``[batch, frames, rnn_mels]``.
        rnn_mels: mel bins the RNN reads (the 256 resized bins averaged down in equal groups), must divide
            the window's mel bins.
        vit_size: a size of :data:`birdassets.models.vit.network.VIT_SIZES` when no ``init_checkpoint``.
        init_checkpoint: ``"<run>@<step>"`` of a ViT checkpoint (the project's own pretraining) whose encoder
            initialises the ViT family; ``None``: random initialisation. (Nothing is ever downloaded.)
        dropout: dropout rate before the classification head.
    """

    family: str = "cnn"
    backbone: str = "efficientnet_b0"
    rnn_cell: str = "gru"
    rnn_layers: int = 2
    rnn_units: int = 128
    rnn_mels: int = 128
    vit_size: str = "tiny"
    vit_patch: int = 32
    init_checkpoint: str | None = None
    dropout: float = 0.2

    def __post_init__(self) -> None:
        _require(self.family in MODEL_FAMILIES, f"model must be one of {MODEL_FAMILIES}, got {self.family!r}")
        _require(self.backbone in CNN_BACKBONES, f"backbone must be one of {CNN_BACKBONES}, got {self.backbone!r}")
        _require(self.rnn_cell in RNN_CELLS, f"rnn_cell must be one of {RNN_CELLS}, got {self.rnn_cell!r}")
        _require(2 <= self.rnn_layers <= 3, f"rnn_layers must be 2 or 3, got {self.rnn_layers}")
        for name in ("rnn_units", "rnn_mels", "vit_patch"):
            _require(getattr(self, name) > 0, f"{name} must be > 0, got {getattr(self, name)}")
        _require(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        _require(self.init_checkpoint is None or self.family == "vit",
                 f"init_checkpoint initialises the vit family only, not {self.family!r}")

    def content_hash(self) -> str:
        return content_hash(self)


@dataclass(frozen=True)
class SupervisedConfig:
    """How one task x model family is trained on all folds.

    Attributes:
        epochs: passes over the training windows of each fold.
        batch_size: windows per step.
        learning_rate: AdamW peak learning rate (cosine decay to 0 over the fold's steps).
        weight_decay: AdamW decoupled weight decay.
        loss: ``bce`` | ``focal`` (sigmoid focal loss, ``focal_gamma``, ``focal_alpha``).
        class_weights: weight each class's loss by ``n / (classes * n_c)`` from the training fold's
            label counts ``n_c`` (normalised to mean 1; classes absent from the fold get weight 1).
        precision: :data:`PRECISIONS`.
        seed: numpy, TensorFlow, Python ``random`` and Keras seed; shuffling and augmentation derive from it.
        debug: at most :data:`DEBUG_SAMPLES` training windows and :data:`DEBUG_EPOCHS` epochs.
        max_samples: cap on training windows per task (None: all); debug sets it to :data:`DEBUG_SAMPLES`.
    """

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    loss: str = "bce"
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25
    class_weights: bool = False
    precision: str = "auto"
    seed: int = SEED
    debug: bool = False
    max_samples: int | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value > 0, f"{name} must be a positive integer, got {value!r}")
        _require(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        _require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        _require(self.loss in LOSSES, f"loss must be one of {LOSSES}, got {self.loss!r}")
        _require(self.focal_gamma >= 0 and 0 < self.focal_alpha < 1,
                 f"focal_gamma must be >= 0 and focal_alpha in (0, 1), got {self.focal_gamma}, {self.focal_alpha}")
        _require(self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        _require(self.max_samples is None or self.max_samples > 0, f"max_samples must be > 0, got {self.max_samples}")

    @classmethod
    def debug_mode(cls, **overrides: Any) -> SupervisedConfig:
        """Quick sanity runs: :data:`DEBUG_SAMPLES` windows, :data:`DEBUG_EPOCHS` epochs (overridable)."""
        values = {"epochs": DEBUG_EPOCHS, "max_samples": DEBUG_SAMPLES, "debug": True, **overrides}
        return cls(**values)

    def content_hash(self) -> str:
        return content_hash(self)



def build_configs(model: str, *, debug: bool = False, epochs: int | None = None, augment: bool = True,
                  focal: bool = False, class_weights: bool = False, init_checkpoint: str | None = None,
                  precision: str = "auto", batch_size: int = 32, seed: int = SEED,
                  rnn_units: int | None = None) -> tuple[ModelConfig, SupervisedConfig, AugmentConfig]:
    """The three configs of one training request, as the CLI flags and the Dagster run config state it.

    ``epochs`` / ``rnn_units`` None: the defaults (debug: :data:`DEBUG_EPOCHS`). Raises ``ValueError`` naming a
    bad value.
    """
    options = {"loss": "focal" if focal else "bce", "class_weights": class_weights, "precision": precision,
               "batch_size": batch_size, "seed": seed} | ({} if epochs is None else {"epochs": epochs})
    train = SupervisedConfig.debug_mode(**options) if debug else SupervisedConfig(**options)
    architecture = {} if rnn_units is None else {"rnn_units": rnn_units}
    return (ModelConfig(family=model, init_checkpoint=init_checkpoint, **architecture), train,
            AugmentConfig() if augment else AugmentConfig.off())
