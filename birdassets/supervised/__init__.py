"""The BirdCLEF-style supervised system: Keras 3 models (CNN, RNN, ViT) trained per fold on mel windows.

Keras runs on the JAX backend: :mod:`birdassets` sets ``KERAS_BACKEND=jax`` when it is imported, before
anything can import Keras (users never set it). :func:`require_jax_backend` fails clearly when Keras was
imported earlier with another backend.
"""

from __future__ import annotations


def require_jax_backend() -> None:
    """Raise ``RuntimeError`` unless Keras runs on JAX."""
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(
            f"Keras was imported with the {keras.backend.backend()!r} backend before birdassets; "
            "import birdassets first (it runs Keras on JAX)"
        )
