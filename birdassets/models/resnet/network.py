"""Flax NNX ResNet18 call detector over one mel window, the topology of torchvision's ``resnet18``.

A window ``[frames, mels]`` (OrcaHello: the ``orcahello`` preset's stage C, ``[312, 256]`` dB values, no
standardisation) is one 1-channel image, time along the height and mel bins along the width (NHWC). Then, as
torchvision: ``conv1`` 7x7 stride 2 (pad 3) -> ``bn1`` -> ReLU -> max-pool 3x3 stride 2 (pad 1) -> four stages
``layer1..layer4`` of two :class:`BasicBlock` each (``width, 2 width, 4 width, 8 width`` channels; stages 2-4
start with stride 2 and a 1x1 conv + BatchNorm ``downsample``) -> global average pool (the ``8 width``-d
features, 512 at the standard width 64) -> ``fc`` to the class logits (``no_call``, ``call``).

BatchNorm: epsilon 1e-5 and running averages with torchvision's momentum 0.1 (Flax ``momentum=0.9``); the
model in ``eval()`` mode uses the running statistics. Attribute names are part of the checkpoint and export
formats (``layer2.0.downsample.conv.kernel``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from birdassets.models.base import InputSpec

DETECTOR_CLASSES = ("no_call", "call")
"""The detector's outputs, in logit order."""
CALL_CLASS = "call"
BLOCKS_PER_STAGE = (2, 2, 2, 2)
"""ResNet18: two basic blocks in each of the four stages."""
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
"""Flax's decay of the running statistics; torchvision's ``momentum=0.1``."""


@dataclass(frozen=True)
class ResNetConfig:
    """Architecture and input contract of a :class:`ResNet18`.

    Attributes:
        width: channels of ``conv1`` and stage 1 (64 for the standard ResNet18; stages double it).
        classes: output names, in logit order.
        preset, sample_rate, clip_s, frames, mels: the mel windows it takes (as :class:`InputSpec`).
    """

    width: int
    preset: str
    sample_rate: int
    clip_s: float
    frames: int
    mels: int
    classes: tuple[str, ...] = DETECTOR_CLASSES

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        if int(self.width) != self.width or self.width < 1:
            raise ValueError(f"ResNetConfig.width must be a positive integer, got {self.width!r}")
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"ResNetConfig.classes must be >= 2 distinct names, got {self.classes!r}")
        self.input_spec  # validates the input fields

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec(self.preset, self.sample_rate, self.clip_s, self.frames, self.mels)

    @property
    def dim(self) -> int:
        """Width of the pooled features (512 at width 64)."""
        return 8 * self.width

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResNetConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ResNetConfig fields {unknown}")
        return cls(**data)


def batch_norm(channels: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(channels, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, rngs=rngs)


def conv(c_in: int, c_out: int, size: int, stride: int, rngs: nnx.Rngs) -> nnx.Conv:
    """A bias-free convolution padded as torchvision's (``size // 2`` on each side), He-normal initialised."""
    pad = size // 2
    return nnx.Conv(c_in, c_out, (size, size), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                    use_bias=False, kernel_init=nnx.initializers.he_normal(), rngs=rngs)


class Downsample(nnx.Module):
    """1x1 stride-``stride`` conv + BatchNorm on the shortcut when a block changes shape."""

    def __init__(self, c_in: int, c_out: int, stride: int, rngs: nnx.Rngs) -> None:
        self.conv = conv(c_in, c_out, 1, stride, rngs)
        self.bn = batch_norm(c_out, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.bn(self.conv(x))


class BasicBlock(nnx.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` with 3x3 convs."""

    def __init__(self, c_in: int, c_out: int, stride: int, rngs: nnx.Rngs) -> None:
        self.conv1 = conv(c_in, c_out, 3, stride, rngs)
        self.bn1 = batch_norm(c_out, rngs)
        self.conv2 = conv(c_out, c_out, 3, 1, rngs)
        self.bn2 = batch_norm(c_out, rngs)
        self.downsample = Downsample(c_in, c_out, stride, rngs) if stride != 1 or c_in != c_out else None

    def __call__(self, x: jax.Array) -> jax.Array:
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return nnx.relu(y + (x if self.downsample is None else self.downsample(x)))


def max_pool(x: jax.Array) -> jax.Array:
    """3x3 stride-2 max-pool padded by 1 with -inf (torchvision's ``MaxPool2d(3, 2, 1)``), ``[b, h, w, c]``."""
    return nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class ResNet18(nnx.Module):
    """ResNet18 on ``[batch, frames, mels]`` mel windows (see the module docstring)."""

    def __init__(self, config: ResNetConfig, *, rngs: nnx.Rngs) -> None:
        self.config = config
        width = config.width
        self.conv1 = nnx.Conv(1, width, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)), use_bias=False,
                              kernel_init=nnx.initializers.he_normal(), rngs=rngs)
        self.bn1 = batch_norm(width, rngs)
        c_in = width
        for stage, blocks in enumerate(BLOCKS_PER_STAGE):
            c_out = width * 2**stage
            layer = [BasicBlock(c_in if b == 0 else c_out, c_out, 2 if stage and b == 0 else 1, rngs)
                     for b in range(blocks)]
            setattr(self, f"layer{stage + 1}", nnx.List(layer))
            c_in = c_out
        self.fc = nnx.Linear(c_in, len(config.classes), rngs=rngs)

    def features(self, mel: jax.Array) -> jax.Array:
        """``[batch, frames, mels]`` -> pooled features ``[batch, 8 * width]``."""
        x = nnx.relu(self.bn1(self.conv1(mel[..., None])))
        x = max_pool(x)
        for stage in range(len(BLOCKS_PER_STAGE)):
            for block in getattr(self, f"layer{stage + 1}"):
                x = block(x)
        return jnp.mean(x, axis=(1, 2))

    def __call__(self, mel: jax.Array) -> jax.Array:
        """``[batch, frames, mels]`` -> logits ``[batch, classes]``."""
        return self.fc(self.features(mel))


def model_state(model: ResNet18) -> dict[str, Any]:
    """Every array of the model (``nnx.Param`` and the BatchNorm running ``mean``/``var``) as a pure nested dict
    with string keys: the ``state["encoder"]`` tree of a checkpoint, e.g. ``["layer1"]["0"]["bn1"]["var"]``."""
    from birdassets.checkpoints.orbax_io import string_keys

    return string_keys(nnx.to_pure_dict(nnx.state(model)))
