"""How annotated selections label a data set's windows (light to import: the settings hold one)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LABEL_COLUMN = "Species"
"""The default label column of a selection table (Raven's own default annotation column is ``Annotation``)."""
MIN_OVERLAP_S = 0.5
"""Default labelling rule: a selection labels a window it overlaps by at least this many seconds ..."""
MIN_OVERLAP_FRACTION = 0.5
"""... or by this fraction of the selection's length, whichever is less."""


@dataclass(frozen=True)
class LabelRule:
    """Where labels are read and how much overlap makes a window carry one.

    Attributes:
        label_column: the selection tables' column holding the class (``Species``, ``Annotation``, ...).
        min_overlap_s: seconds of overlap that always suffice.
        min_overlap_fraction: fraction of the selection's length that suffices when less (a call shorter than
            ``min_overlap_s / min_overlap_fraction`` needs that fraction of itself inside the window).
    """

    label_column: str = LABEL_COLUMN
    min_overlap_s: float = MIN_OVERLAP_S
    min_overlap_fraction: float = MIN_OVERLAP_FRACTION

    def __post_init__(self) -> None:
        if not self.label_column.strip():
            raise ValueError("label_column must name a column of the selection tables")
        if not self.min_overlap_s >= 0:
            raise ValueError(f"min_overlap_s must be a number of seconds >= 0, got {self.min_overlap_s}")
        if not 0 <= self.min_overlap_fraction <= 1:
            raise ValueError(f"min_overlap_fraction must be in [0, 1], got {self.min_overlap_fraction}")

    def needed_s(self, length_s: np.ndarray) -> np.ndarray:
        """Overlap (s) that makes a selection of ``length_s`` seconds label a window (same shape)."""
        return np.minimum(self.min_overlap_s, self.min_overlap_fraction * np.asarray(length_s, dtype=np.float64))
