"""Checks of a frozen config dataclass's numeric fields, for ``__post_init__``: one ValueError naming the field."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np


def check_fields(config: Any, *, positive_ints: Iterable[str] = (), positive: Iterable[str] = (),
                 non_negative: Iterable[str] = ()) -> None:
    """Raise ``ValueError("<Class>.<field> must be ..., got <value>")`` for the first field that is not a positive
    integer (``bool`` is not one), not ``> 0``, or not ``>= 0`` (NaN fails both)."""
    owner = type(config).__name__
    for name in positive_ints:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{owner}.{name} must be a positive integer, got {value!r}")
    for name in positive:
        value = getattr(config, name)
        if not value > 0:
            raise ValueError(f"{owner}.{name} must be positive, got {value!r}")
    for name in non_negative:
        value = getattr(config, name)
        if not value >= 0:
            raise ValueError(f"{owner}.{name} must be >= 0, got {value!r}")
