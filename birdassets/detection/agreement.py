"""How a detector's per-recording decisions agree with the truth: confusion matrix, precision and recall."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Confusion:
    """Counts of global decisions against the truth (1 = the recording holds a call).

    Attributes:
        tp, fp, fn, tn: true/false positives, false/true negatives (recordings).
    """

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float | None:
        """``tp / (tp + fp)``; ``None`` when nothing was flagged."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        """``tp / (tp + fn)``; ``None`` when no recording holds a call."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    def table(self) -> str:
        """The 2x2 matrix as text (rows: truth, columns: decision)."""
        return (f"             decided 1  decided 0\n"
                f"  truth 1    {self.tp:>9d}  {self.fn:>9d}\n"
                f"  truth 0    {self.fp:>9d}  {self.tn:>9d}")


def confusion(decided: Mapping[str, int], truth: Mapping[str, int]) -> Confusion:
    """Compare ``{recording: 0/1}`` decisions with ``{recording: 0/1}`` truth over the recordings of ``truth``.

    Raises:
        ValueError: a recording of ``truth`` has no decision (the first few named).
    """
    missing = sorted(set(truth) - set(decided))
    if missing:
        raise ValueError(f"no decision for {len(missing)} recording(s) with truth, e.g. {missing[:3]}")
    pairs = [(int(decided[name]), int(value)) for name, value in truth.items()]
    return Confusion(tp=pairs.count((1, 1)), fp=pairs.count((1, 0)), fn=pairs.count((0, 1)), tn=pairs.count((0, 0)))
