"""An exported model's forward pass as TFLite, converted from the JAX function, and a runtime for it.

Conversion: ``jax2tf.convert`` (StableHLO serialization; jax 0.10 has no other) of the eval-mode forward with the
weights as constants, at batch 1 with a 4-D input ``[1, frames, mels, 1]``, traced by ``tf.function`` and
converted with TFLite builtin ops only (BatchNorm folds into the convolutions). A polymorphic batch also converts
but leaves ~70 broadcast ops in the graph and runs 1.5-2.5x slower, and a 3-D input bakes a batch-1 reshape in
that breaks resizing; so the static graph is resized at run time (``resize_tensor_input(strict=False)``).

Outputs: ``probabilities [batch, classes]`` and ``features [batch, dim]`` (the ResNet18's pooled features, the
ViT's embedding), told apart by their width (the converter does not keep their order).
"""

from __future__ import annotations

import numpy as np

from birdassets.models.base import check_mel_batch

TFLITE_THREADS = 2


def convert_forward(forward, spec, *, dynamic_batch: bool = False) -> bytes:
    """The TFLite flatbuffer of ``forward(mel [batch, frames, mels]) -> (probabilities, features)`` (weights closed
    over as constants) with a 4-D input ``[batch, frames, mels, 1]``: traced at batch 1 (resized at run time), or
    with ``dynamic_batch`` a polymorphic batch for graphs whose reshapes would bake batch 1 in (the ViT's patches).
    """
    import jax.numpy as jnp
    import tensorflow as tf
    from jax.experimental import jax2tf

    polymorphic = {"polymorphic_shapes": ["(b, _, _, _)"]} if dynamic_batch else {}
    converted = jax2tf.convert(lambda mel4: forward(jnp.squeeze(mel4, axis=-1)), with_gradient=False,
                               native_serialization_platforms=("cpu",), **polymorphic)
    signature = tf.TensorSpec([None if dynamic_batch else 1, spec.frames, spec.mels, 1], tf.float32, name="mel")
    function = tf.function(converted, autograph=False, input_signature=[signature])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], function)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


class TFLiteDetector:
    """An exported ``model.tflite`` behind the detector interface (``probabilities``, ``embed``).

    Attributes:
        name, classes, input_spec, dim: as the :class:`~birdassets.models.resnet.runtime.ResNetDetector` it was
            converted from.
    """

    def __init__(self, path, *, name: str, classes, input_spec, dim: int, threads: int = TFLITE_THREADS) -> None:
        import tensorflow as tf

        self.name, self.classes, self.input_spec, self.dim = name, tuple(classes), input_spec, dim
        self._interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=threads)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._batch = 0

    def run(self, mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``mel [n, frames, mels]`` -> ``(probabilities [n, classes], features [n, dim])`` float32."""
        mel = check_mel_batch(mel, self.input_spec, encoder_name=self.name)
        if len(mel) == 0:
            return np.zeros((0, len(self.classes)), np.float32), np.zeros((0, self.dim), np.float32)
        if len(mel) != self._batch:  # reallocating is cheap next to a forward pass, but not free
            self._interpreter.resize_tensor_input(self._input, [len(mel), *self.input_spec.shape, 1], strict=False)
            self._interpreter.allocate_tensors()
            self._batch = len(mel)
        self._interpreter.set_tensor(self._input, mel[..., None])
        self._interpreter.invoke()
        outputs = [self._interpreter.get_tensor(o["index"]) for o in self._interpreter.get_output_details()]
        by_width = {int(o.shape[-1]): np.asarray(o, np.float32) for o in outputs}
        return by_width[len(self.classes)], by_width[self.dim]

    def probabilities(self, mel: np.ndarray) -> np.ndarray:
        return self.run(mel)[0]

    def embed(self, mel: np.ndarray) -> np.ndarray:
        return self.run(mel)[1]
