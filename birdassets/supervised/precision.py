"""Mixed precision of the supervised Keras models: which Keras dtype policy, and setting it while a model is built.

A Keras layer takes the global dtype policy when it is constructed and keeps it (it is saved with the model),
so the policy only has to be in force while :func:`birdassets.supervised.architectures.build_model` runs:

* ``float32``: variables and computation in float32;
* ``mixed_bfloat16`` (CPU): variables float32, computation bfloat16 (no loss scaling needed);
* ``mixed_float16`` (GPU): variables float32, computation float16; ``Model.compile`` wraps the optimizer in a
  ``LossScaleOptimizer`` itself when the model's policy is ``mixed_float16``;
* ``auto``: ``mixed_float16`` when JAX sees a GPU, else ``mixed_bfloat16``.

The classification heads are built with ``dtype="float32"``, so the logits (and the loss) stay float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from birdassets.supervised.config import PRECISIONS

AUTO = "auto"
GPU_POLICY = "mixed_float16"
CPU_POLICY = "mixed_bfloat16"


def _jax_sees_gpu() -> bool:
    import jax

    return any(device.platform == "gpu" for device in jax.devices())


def resolve_precision(name: str) -> str:
    """The Keras dtype policy name of a precision setting (:data:`~birdassets.supervised.config.PRECISIONS`).

    Returns:
        ``"float32"``, ``"mixed_bfloat16"`` or ``"mixed_float16"`` (``"auto"`` resolved for this machine).

    Raises:
        ValueError: an unknown name (the known ones listed).
    """
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {name!r}")
    if name == AUTO:
        return GPU_POLICY if _jax_sees_gpu() else CPU_POLICY
    return name


@contextlib.contextmanager
def precision_policy(name: str) -> Iterator[str]:
    """Set Keras's global dtype policy to ``resolve_precision(name)`` for the ``with`` block.

    The previous global policy is restored on exit, also when the block raises.

    Yields:
        the resolved policy name.
    """
    import keras

    resolved = resolve_precision(name)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(resolved)
    try:
        yield resolved
    finally:
        keras.config.set_dtype_policy(previous)
