"""Tests that kill mutants of ``folds.py`` that survived the mutation run (issue #10).

Each test names the mutant it kills; expected values are written out by hand.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from birdassets.folds import (
    FoldConfig,
    _FoldCounts,
    _Groups,
    _canonical_groups,
    _Rebalancer,
    _fill_empty_folds,
    assign_folds,
    check_folds,
    fold_table,
    folds_hash,
)


def test_fold_table_keeps_recording_ids_as_given():
    """Kills ``fold_table``: ``np.asarray(groups, dtype=None)`` turned mixed ids ``[7, "r"]`` into ``["7", "r"]``."""
    table = fold_table(["w0", "w1"], [7, "r"], [0, 1])
    assert table["recording_id"].tolist() == [7, "r"]
    assert table["fold"].tolist() == [0, 1]


def test_folds_hash_names_a_missing_column():
    """Kills ``folds_hash``: the missing-column check disabled (a bare KeyError instead of the named column)."""
    with pytest.raises(ValueError, match=r"folds_hash: fold table lacks column\(s\) \['fold'\]"):
        folds_hash(pd.DataFrame({"window_id": ["w0"], "recording_id": ["r"]}))


def _rebalancer(labels, primary, weights, fold_of, n_folds):
    """A :class:`_Rebalancer` over hand-built groups: ``labels [G, C]`` 0/1, ``primary [G]``, ``weights [G]``."""
    groups = _Groups(np.array(labels, dtype=bool), np.array(primary, dtype=np.int64), np.array(weights, dtype=np.int64))
    return _Rebalancer(_FoldCounts.of(groups, np.array(fold_of, dtype=np.int64), n_folds))


@pytest.mark.parametrize(
    "fields,problem",
    [
        ({"n_folds": 2.5}, "FoldConfig.n_folds must be an int, got 2.5"),  # `bool and not int` let floats through
        ({"window_tolerance": 1.0}, r"FoldConfig.window_tolerance must be in \[0, 1\), got 1.0"),  # `<= 1.0`
    ],
)
def test_fold_config_refuses(fields, problem):
    """Kills ``FoldConfig.__post_init__`` mutants."""
    with pytest.raises(ValueError, match=problem):
        FoldConfig(**fields)


def test_primary_counts_skip_groups_without_primary():
    """Kills ``_FoldCounts.of``: every group counted (primary -1 landing on the last class) and ``add.at(..., 2)``.

    Groups: 0 (primary 1, fold 0), 1 (no primary, fold 0), 2 (primary 0, fold 1), 3 (primary 1, fold 1).
    """
    counts = _rebalancer([[0, 1], [1, 1], [1, 0], [0, 1]], [1, -1, 0, 1], [1, 1, 1, 1], [0, 0, 1, 1], 2).counts
    assert counts.count_primary.tolist() == [[0, 1], [1, 1]]
    assert counts.count_any.tolist() == [[1, 2], [1, 1]]


def test_check_folds_takes_one_window_and_refuses_none():
    """Kills ``check_folds``: ``n_windows == 1`` in place of ``== 0``."""
    report = check_folds(["r0"], [[1]], [0], ["a"])
    assert (report.n_folds, report.windows_per_fold, report.leaks) == (1, (1,), 0)
    with pytest.raises(ValueError, match="check_folds: no windows to check"):
        check_folds([], np.zeros((0, 1)), np.zeros(0, dtype=np.int64), ["a"])


def test_moving_a_group_moves_its_counts():
    """Kills ``_FoldCounts.move``: ``count_any[dest] += 2`` and ``count_primary[dest] -= 1``."""
    counts = _rebalancer([[1, 1], [1, 0]], [0, -1], [3, 2], [0, 1], 2).counts
    counts.move(0, 0, 1)
    assert counts.fold_of.tolist() == [1, 1]
    assert counts.count_any.tolist() == [[0, 0], [2, 1]]
    assert counts.count_primary.tolist() == [[0, 0], [1, 0]]
    assert counts.fold_windows.tolist() == [0, 5]


def test_fold_pairs_are_ranked_by_window_difference():
    """Kills ``_unequal_pairs``: ``order[::-2]`` and ``sort(key=None)``. Windows 10, 2, 6, 5 per fold."""
    balancer = _rebalancer([[0]] * 4, [-1] * 4, [10, 2, 6, 5], [0, 1, 2, 3], 4)
    assert balancer._unequal_pairs() == [(0, 1), (0, 3), (0, 2), (2, 1), (3, 1)]  # differences 8, 5, 4, 4, 3


# Five unlabelled groups: fold 0 holds groups 0, 1, 4 (5, 8 and 20 windows), fold 1 groups 2, 3 (1 and 4).
_FIVE = ([[0]] * 5, [-1] * 5, [5, 8, 1, 4, 20], [0, 0, 1, 1, 0], 2)


def test_move_gain_is_the_drop_in_squared_imbalance():
    """Kills ``_move_candidates``: gain ``2 w (gap - w)`` turned into ``2 w / (gap - w)``. Gap 6."""
    gains, movable, partners = _rebalancer(*_FIVE)._move_candidates(np.array([0, 1, 2, 3, 4]), 6)
    assert movable.tolist() == [0, 2, 3]  # 5, 1, 4 windows: below the gap
    assert gains.tolist() == [10, 10, 16]  # 2*5*1, 2*1*5, 2*4*2
    assert partners.tolist() == [-1, -1, -1]


def test_swap_candidates_are_the_nearest_partners_within_the_gap():
    """Kills ``_swap_candidates``: ``|`` for ``&`` (a shift beyond the gap kept) and gain ``2 / shift * ...``."""
    found = _rebalancer(*_FIVE)._swap_candidates(np.array([0, 1, 4]), np.array([2, 3]), 6)
    as_lists = [tuple(array.tolist() for array in candidate) for candidate in found]
    # shifts 5-1 = 4 and 8-4 = 4 (gain 2*4*2 = 16), then 5-4 = 1 (2*1*5 = 10) and 8-4; group 4 (shift 16 or 19) never
    assert as_lists == [([16, 16], [0, 1], [2, 3]), ([10, 16], [0, 1], [3, 3])]


def test_candidates_come_best_gain_first():
    """Kills ``_candidates``: the gains taken from the group column."""
    candidates = _rebalancer(*_FIVE)._candidates(0, 1, 6)
    assert candidates == [(16, 0, 2), (16, 1, 3), (16, 1, 3), (10, 0, -1), (10, 0, 3)]


def test_move_within_primary_share_and_without_growing_imbalance():
    """Kills ``_try_move``: floor check ``- 2``, the classes passed as None, and the destination passed as None.

    Groups 0-3 have primary class 0 (three in fold 0, one in fold 1: share 2 each); group 4 carries only class 1, in
    fold 1. Moving group 0 to fold 1 keeps the primary counts within 2..2 and changes the class-0 imbalance by
    2 * (1 - 3) + 2 = -2; counting class 1 as well would add 2 * (1 - 0) + 2 = 4 and refuse it.
    """
    balancer = _rebalancer([[1, 0]] * 4 + [[0, 1]], [0, 0, 0, 0, -1], [1] * 5, [0, 0, 0, 1, 1], 2)
    assert balancer._try_move(0, 0, 1)
    assert balancer.counts.fold_of.tolist() == [1, 0, 0, 1, 1]
    assert balancer.counts.count_primary.tolist() == [[2, 0], [2, 0]]
    assert balancer.counts.count_any.tolist() == [[2, 0], [2, 1]]


def test_swap_refused_when_one_direction_starves_a_class():
    """Kills ``_try_swap``: ``ok_out or ok_in``. Group 0 (class 1, fold 0) into fold 1 would put both class-1 groups
    there, though the swap lowers the imbalance (2 + (2 * (0 - 3) + 2) = -2)."""
    balancer = _rebalancer([[0, 1], [0, 1], [1, 0], [1, 0], [1, 0]], [-1] * 5, [1] * 5, [0, 1, 1, 1, 1], 2)
    assert not balancer._try_swap(0, 2, 0, 1)
    assert balancer.counts.fold_of.tolist() == [0, 1, 1, 1, 1]


def test_improve_swaps_with_group_zero():
    """Kills ``improve``: ``partner >= 1`` skipped swaps with group 0. All four groups have primary class 0 (share 2
    per fold: no move is allowed); fold 0 = groups 1, 2 (4 + 4 windows), fold 1 = groups 0, 3 (1 + 1)."""
    balancer = _rebalancer([[1]] * 4, [0] * 4, [1, 4, 4, 1], [1, 0, 0, 1], 2)
    assert balancer.improve()
    assert balancer.counts.fold_of.tolist() == [0, 1, 0, 1]
    assert balancer.counts.fold_windows.tolist() == [5, 5]


def test_empty_folds_take_the_smallest_group_of_the_fullest_fold():
    """Kills ``_fill_empty_folds`` (no test reached an empty fold): counts set to None, ``== 1`` for ``== 0``, the
    moved group None, and the donor's count lowered by 2.

    Folds 0 (groups 0, 1, 2: 3, 1, 1 windows) and 1 (groups 3, 4); folds 2 and 3 empty. Fold 2 takes group 2 (1
    window, seeded rank 0 beats group 1's rank 3); fold 0 still holds the most groups (2, tied with fold 1, first
    wins), so fold 3 takes its smallest, group 1.
    """
    fold_of = np.array([0, 0, 0, 1, 1])
    _fill_empty_folds(fold_of, np.array([3, 1, 1, 5, 4]), np.array([4, 3, 0, 1, 2]), 4)
    assert fold_of.tolist() == [0, 3, 2, 1, 1]


def test_unorderable_ids_are_ordered_by_type_then_repr():
    """Kills ``_canonical_groups``: the fallback order for mixed ids replaced by None or ``sorted(key=...)`` alone."""
    unique_ids, inverse = _canonical_groups(np.array([2, "b", 1, "a"], dtype=object))
    assert unique_ids.tolist() == [1, 2, "a", "b"]  # ("int", "1"), ("int", "2"), ("str", "'a'"), ("str", "'b'")
    assert inverse.tolist() == [1, 3, 0, 2]


def test_missing_recording_id_is_named_by_row():
    """Kills ``_canonical_groups``: the row of a missing id computed as ``int(None)`` (a TypeError)."""
    with pytest.raises(ValueError, match=r"^groups: row 1 has a missing \(None/NaN\) recording id$"):
        assign_folds(np.array(["r0", None, "r2"], dtype=object), np.ones((3, 1)), config=FoldConfig(n_folds=2))


def test_non_finite_label_is_named_by_row():
    """Kills ``_validated_labels``: the ``"labels"`` default name, and the row taken as None or the second bad row."""
    labels = np.array([[1.0], [np.nan], [0.0]])
    with pytest.raises(ValueError, match=r"^labels: row 1 has a non-finite value$"):
        assign_folds(np.array(["r0", "r1", "r2"], dtype=object), labels, config=FoldConfig(n_folds=2))
