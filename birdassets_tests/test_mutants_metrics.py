"""Tests that kill mutants of ``metrics.py`` that survived the mutation run (issue #10).

Each test names the mutant it kills; expected values are written out by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from birdassets.metrics import cmap


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int8])
def test_truth_of_any_real_dtype_is_accepted(dtype):
    """Kills ``_validate_truth``: ``issubdtype(dtype, None)`` (float64 only) refused float32/float16 0/1 truth.

    Scores rank the two positives of class 0 first and second (AP 1); class 1's positive is ranked second of three
    (precision 1/2 at its threshold: AP 0.5). cmAP = (1 + 0.5) / 2 = 0.75.
    """
    truth = np.array([[1, 0], [1, 1], [0, 0]], dtype=dtype)
    score = np.array([[0.9, 0.8], [0.8, 0.5], [0.1, 0.1]])
    result = cmap(truth, score)
    assert result.value == pytest.approx(0.75) and result.n_classes_scored == 2
