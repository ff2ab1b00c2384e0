"""``model.safetensors``: a nested dict of arrays as one flat safetensors file, and back.

Keys are the dotted paths of the nested dict (``"layer1.0.conv1.kernel"``), arrays are stored as they are (Flax
layouts: convolution kernels ``[height, width, in, out]``, dense kernels ``[in, out]``); the file's string
metadata carries the format and the model's identity. Written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as load_tensors
from safetensors.numpy import save as save_tensors

from birdassets.atomic import write_bytes

WEIGHTS_FILE = "model.safetensors"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """``{"a": {"b": x}} -> {"a.b": x}`` (leaves as contiguous numpy arrays).

    Raises:
        ValueError: a key holding a ``.`` (it would not come back apart).
    """
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        key = str(key)
        if "." in key:
            raise ValueError(f"weight name {prefix + key!r}: a '.' inside a key cannot be flattened")
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = np.asarray(value, order="C")  # (ascontiguousarray would make a scalar 1-d)
    return flat


def unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The inverse of :func:`flatten`."""
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def save_weights(path: str | Path, tree: Mapping[str, Any], metadata: Mapping[str, str]) -> Path:
    """Write ``tree``'s arrays (flattened) and the string ``metadata`` as a safetensors file, atomically."""
    return write_bytes(path, save_tensors(flatten(tree), metadata=dict(metadata)))


def load_weights(path: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """``(tree, metadata)`` of a safetensors file written by :func:`save_weights`.

    Raises:
        ValueError: not a readable safetensors file (the message names it).
    """
    from safetensors import safe_open

    path = Path(path)
    try:
        data = path.read_bytes()
        tensors = load_tensors(data)
        with safe_open(str(path), framework="numpy") as opened:
            metadata = opened.metadata() or {}
    except Exception as error:  # OSError, or safetensors' own SafetensorError
        raise ValueError(f"{path}: not a readable safetensors file ({error})") from None
    return unflatten(tensors), metadata
