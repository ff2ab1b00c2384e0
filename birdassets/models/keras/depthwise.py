"""Depthwise 2-D convolution as shifted multiply-adds: the same layer as ``keras.layers.DepthwiseConv2D``, fast on CPU.

XLA:CPU lowers a depthwise convolution (a convolution with ``feature_group_count = channels``) to a slow generic
loop: on 2 cores a 3x3 depthwise convolution of ``[32, 64, 64, 144]`` takes 747 ms forward and 4.4 s for its
gradient. Written as ``kh * kw`` shifted views of the padded input, each multiplied by one kernel tap
``[channels]`` and summed, the same result takes 91 ms and 0.44 s, because every term is an elementwise op XLA
fuses. EfficientNetB0 is 16 such layers; :func:`with_shifted_depthwise` swaps them in.

:class:`ShiftedDepthwiseConv2D` keeps ``DepthwiseConv2D``'s weights, config and output (``"same"`` padding
splits as TensorFlow and Keras do: the extra row/column goes after). Configurations it does not cover
(``channels_first``, ``depth_multiplier > 1``, dilation) fall back to the convolution.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops

from birdassets.models.keras.keys import SERIALIZABLE_PACKAGE


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """``(before, after)`` padding of one axis for ``"same"``: output ``ceil(size / stride)`` positions."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


@keras.saving.register_keras_serializable(package=SERIALIZABLE_PACKAGE)
class ShiftedDepthwiseConv2D(layers.DepthwiseConv2D):
    """``DepthwiseConv2D`` computed as ``sum_ij shift_ij(x) * kernel[i, j, :, 0]`` (kernel ``[kh, kw, c, 1]``):
    ``[batch, h, w, c]`` -> ``[batch, h', w', c]`` with ``h' = ceil(h / stride)`` (``"same"``) or ``(h - kh) // stride + 1``
    (``"valid"``)."""

    def _shiftable(self) -> bool:
        return (self.data_format == "channels_last" and self.depth_multiplier == 1
                and tuple(self.dilation_rate) == (1, 1))

    def _padded(self, inputs: Any) -> Any:
        if self.padding != "same":
            return inputs
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        rows = same_padding(int(inputs.shape[1]), kh, sh)
        cols = same_padding(int(inputs.shape[2]), kw, sw)
        return ops.pad(inputs, ((0, 0), rows, cols, (0, 0)))

    def call(self, inputs: Any) -> Any:
        if not self._shiftable():
            return super().call(inputs)
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        padded = self._padded(inputs)
        out_h = (int(padded.shape[1]) - kh) // sh + 1
        out_w = (int(padded.shape[2]) - kw) // sw + 1
        kernel = self.kernel
        outputs = None
        for i in range(kh):
            for j in range(kw):
                view = padded[:, i:i + (out_h - 1) * sh + 1:sh, j:j + (out_w - 1) * sw + 1:sw, :]
                term = view * kernel[i, j, :, 0]
                outputs = term if outputs is None else outputs + term
        if self.use_bias:
            outputs = outputs + self.bias
        return outputs if self.activation is None else self.activation(outputs)


def _shifted_clone(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A fresh copy of ``layer`` (from its config), a ``DepthwiseConv2D`` becoming a :class:`ShiftedDepthwiseConv2D`."""
    if type(layer) is layers.DepthwiseConv2D:
        return ShiftedDepthwiseConv2D.from_config(layer.get_config())
    return layer.__class__.from_config(layer.get_config())


def with_shifted_depthwise(model: keras.Model) -> keras.Model:
    """A functional ``model`` rebuilt with every ``DepthwiseConv2D`` as a :class:`ShiftedDepthwiseConv2D`; its
    weights are copied, so the outputs are the original's (to float rounding)."""
    clone = keras.models.clone_model(model, clone_function=_shifted_clone)
    clone.set_weights(model.get_weights())
    return clone
