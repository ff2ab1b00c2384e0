"""Cross-validation folds: grouped, multi-label-stratified, seeded (BirdCLEF style).

Every window of a recording lands in the same fold (no recording leaks from training into
validation), and each class's recordings are spread as evenly as possible over the folds, so every
class with at least two recordings appears in every training split. Fold ``k``'s validation split is
the windows with ``fold_of == k``; its training split is all other windows (80/20 for 5 folds).

Algorithm (:func:`assign_folds`):

1. Aggregate windows to recordings (groups): labels = OR over the recording's windows (plus its
   primary class), primary = the recording's most frequent primary class, weight = window count.
2. Iterative multi-label stratification (Sechidis, Tsoumakas & Vlahavas 2011) at group level:
   repeatedly take the class with the fewest still-unassigned groups and place each of its
   unassigned groups (those with it as primary first, larger recordings first) in the fold that
   needs it most. Folds are compared lexicographically by

   a. how many of the group's classes would have *all* their groups in this fold, i.e. be absent
      from its training split (avoid),
   b. the remaining demand for the group's own primary class (the primary label outranks
      secondary labels, so primary counts normally end within one recording of ``n / n_folds``),
   c. the remaining demand for the class being processed (any label),
   d. the remaining window capacity of the fold (balances fold sizes by window count),
   e. a seeded random tie-break.

   All folds have the same desired share (``1 / n_folds``), so "largest remaining demand" is
   "fewest already assigned"; counts are integers and comparisons are exact.
3. Groups without any label fill the folds with the most remaining window capacity, largest first.
4. Window rebalancing (:func:`_balance_windows`): greedy moves/swaps between the most unequal
   folds that keep primary counts within ``floor``/``ceil`` of their share, never empty a class
   from a training split and never worsen the any-label balance, until every fold is within
   ``FoldConfig.window_tolerance`` of ``n_windows / n_folds``.

Cost: O(groups x classes_per_group x n_folds) for step 2, plus O(classes^2) to pick the classes.

The result depends only on the data and the seed: groups are put in canonical (sorted id) order
before any seeded shuffling, so permuting the input rows does not change the assignment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class FoldConfig:
    """How to draw folds.

    Attributes:
        n_folds: number of folds (>= 2); fold ``k``'s validation split is group ``k``.
        seed: seed for the shuffles and tie-breaks; same seed and data -> same folds.
        window_tolerance: window-count rebalancing stops once every fold is within this fraction
            of its target (``n_windows / n_folds``); 0 rebalances as far as the labels allow.
    """

    n_folds: int = 5
    seed: int = 42
    window_tolerance: float = 0.01

    def __post_init__(self) -> None:
        if isinstance(self.n_folds, bool) or not isinstance(self.n_folds, (int, np.integer)):
            raise ValueError(f"FoldConfig.n_folds must be an int, got {self.n_folds!r}")
        if self.n_folds < 2:
            raise ValueError(f"FoldConfig.n_folds must be >= 2, got {self.n_folds}")
        if not 0.0 <= self.window_tolerance < 1.0:
            raise ValueError(f"FoldConfig.window_tolerance must be in [0, 1), got {self.window_tolerance}")


@dataclass(frozen=True)
class FoldReport:
    """Sanity report of a fold assignment (see :func:`check_folds`).

    Attributes:
        n_folds: number of folds.
        windows_per_fold: validation window count of each fold.
        leaks: number of groups (recordings) whose windows sit in more than one fold (must be 0).
        missing_in_train: fold -> classes present in the data but absent from that fold's training
            split (folds with nothing missing are left out).
        unavoidable_missing: the subset of ``missing_in_train`` that no assignment could avoid: the
            class occurs in a single group, so the fold validating that group has none in training.
    """

    n_folds: int
    windows_per_fold: tuple[int, ...]
    leaks: int
    missing_in_train: dict[int, tuple[str, ...]]
    unavoidable_missing: dict[int, tuple[str, ...]]

    @property
    def passed(self) -> bool:
        """Leak-free and every class present in each training split where the data allows."""
        return self.leaks == 0 and self.missing_in_train == self.unavoidable_missing


# ----------------------------------------------------------------------------------------------
# input handling


def _canonical_groups(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group ids in canonical sorted order and each row's index into them.

    Returns ``(unique_ids [n_groups], inverse [n_windows])``; ids of mixed, unorderable types are
    ordered by ``(type name, repr)``.
    """
    codes, uniques = pd.factorize(pd.Series(np.asarray(groups, dtype=object)), sort=False)
    if (codes < 0).any():
        row = int(np.flatnonzero(codes < 0)[0])
        raise ValueError(f"groups: row {row} has a missing (None/NaN) recording id")
    uniques = np.asarray(uniques, dtype=object)
    try:
        order = np.array(sorted(range(len(uniques)), key=lambda i: uniques[i]), dtype=np.int64)
    except TypeError:
        order = np.array(
            sorted(range(len(uniques)), key=lambda i: (type(uniques[i]).__name__, repr(uniques[i]))),
            dtype=np.int64,
        )
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return uniques[order], rank[codes]


def _validated_labels(labels: np.ndarray, n_windows: int, name: str = "labels") -> np.ndarray:
    """``labels`` as a boolean ``[n_windows, n_classes]`` matrix (entries > 0 are present)."""
    matrix = np.asarray(labels)
    if matrix.ndim != 2:
        raise ValueError(f"{name}: expected a [n_windows, n_classes] matrix, got shape {matrix.shape}")
    if matrix.shape[0] != n_windows:
        raise ValueError(f"{name}: has {matrix.shape[0]} rows but groups has {n_windows} windows")
    if matrix.dtype == bool:
        return matrix
    if not np.issubdtype(matrix.dtype, np.number):
        raise ValueError(f"{name}: expected a numeric or boolean multi-hot matrix, got dtype {matrix.dtype}")
    if np.issubdtype(matrix.dtype, np.floating) and not np.isfinite(matrix).all():
        row = int(np.flatnonzero(~np.isfinite(matrix).all(axis=1))[0])
        raise ValueError(f"{name}: row {row} has a non-finite value")
    return matrix > 0


def _group_labels(window_labels: np.ndarray, inverse: np.ndarray, n_groups: int) -> np.ndarray:
    """OR of window labels per group: ``[n_windows, C] bool -> [n_groups, C] bool``."""
    result = np.zeros((n_groups, window_labels.shape[1]), dtype=bool)
    rows, cols = np.nonzero(window_labels)
    result[inverse[rows], cols] = True
    return result


def _group_primary(primary: np.ndarray, inverse: np.ndarray, n_groups: int) -> np.ndarray:
    """Most frequent non-negative primary class per group (ties -> lowest class; -1 if none)."""
    result = np.full(n_groups, -1, dtype=np.int64)
    has = primary >= 0
    if not has.any():
        return result
    pairs, counts = np.unique(np.stack([inverse[has], primary[has]], axis=1), axis=0, return_counts=True)
    order = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))  # by group, then count desc, then class
    pairs = pairs[order]
    first = np.ones(len(pairs), dtype=bool)
    first[1:] = pairs[1:, 0] != pairs[:-1, 0]
    result[pairs[first, 0]] = pairs[first, 1]
    return result


# ----------------------------------------------------------------------------------------------
# fold assignment


def assign_folds(
    groups: np.ndarray,
    labels: np.ndarray,
    primary: np.ndarray | None = None,
    config: FoldConfig = FoldConfig(),
) -> np.ndarray:
    """Validation fold of every window: grouped, multi-label-stratified, balanced by window count.

    Args:
        groups: ``[n_windows]`` recording id of each window (any hashable: str, int, ...).
        labels: ``[n_windows, n_classes]`` multi-hot labels (bool or numbers; > 0 means present).
        primary: ``[n_windows]`` int class index of the window's primary label, ``-1`` for none;
            ``None`` treats every label as secondary.
        config: number of folds and seed.

    Returns:
        ``[n_windows]`` int64 in ``[0, n_folds)``: the fold whose validation split holds the window.
        All windows of a group share one fold.

    Raises:
        ValueError: malformed inputs, or fewer groups than folds.

    See the module docstring for the algorithm; after stratification, fold sizes are evened out
    (by moves/swaps that keep the stratification) to within ``config.window_tolerance``.
    """
    group_ids = np.asarray(groups, dtype=object)
    if group_ids.ndim != 1:
        raise ValueError(f"groups: expected a 1-D array of recording ids, got shape {group_ids.shape}")
    n_windows = len(group_ids)
    if n_windows == 0:
        raise ValueError("groups: no windows to assign to folds")
    window_labels = _validated_labels(labels, n_windows)
    window_primary = _validated_primary(primary, n_windows, window_labels.shape[1])

    unique_ids, inverse = _canonical_groups(group_ids)
    n_folds = int(config.n_folds)
    if len(unique_ids) < n_folds:
        raise ValueError(
            f"cannot draw {n_folds} folds from {len(unique_ids)} recording groups: "
            f"every fold needs at least one group (use fewer folds or more recordings)"
        )
    recordings = _Groups.from_windows(window_labels, window_primary, inverse, len(unique_ids))
    fold_of_group = _stratify(recordings, n_folds, int(config.seed))
    fold_of_group = _balance_windows(fold_of_group, recordings, n_folds, config.window_tolerance)
    return fold_of_group[inverse]


def _validated_primary(primary: np.ndarray | None, n_windows: int, n_classes: int) -> np.ndarray:
    """``primary`` as int64 ``[n_windows]`` within ``[-1, n_classes)``; ``None`` -> all ``-1`` (no primary)."""
    if primary is None:
        return np.full(n_windows, -1, dtype=np.int64)
    window_primary = np.asarray(primary)
    if window_primary.shape != (n_windows,):
        raise ValueError(f"primary: expected shape ({n_windows},), got {window_primary.shape}")
    if not np.issubdtype(window_primary.dtype, np.integer):
        raise ValueError(f"primary: expected integer class indices, got dtype {window_primary.dtype}")
    window_primary = window_primary.astype(np.int64)
    bad = (window_primary < -1) | (window_primary >= n_classes)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"primary: row {row} has class index {window_primary[row]}, outside [-1, {n_classes})")
    return window_primary


@dataclass
class _Groups:
    """Recordings (groups) as the fold rules see them; ``G`` groups, ``C`` classes.

    Attributes:
        labels: ``[G, C]`` bool: OR of the group's window labels, plus its primary class.
        primary: ``[G]`` int64 most frequent primary class of the group's windows, ``-1`` for none.
        weights: ``[G]`` int64 window count.
        rows, cols: the ``(group, class)`` pairs of ``labels`` (``np.nonzero``), sorted by group.
        starts: ``[G + 1]``: the pairs of group ``g`` are ``starts[g] : starts[g + 1]``.
        total_any: ``[C]`` int64 groups carrying each class.
    """

    labels: np.ndarray
    primary: np.ndarray
    weights: np.ndarray
    rows: np.ndarray = field(init=False)
    cols: np.ndarray = field(init=False)
    starts: np.ndarray = field(init=False)
    total_any: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.rows, self.cols = np.nonzero(self.labels)
        self.starts = np.searchsorted(self.rows, np.arange(len(self.labels) + 1))
        self.total_any = self.labels.sum(axis=0).astype(np.int64)

    @classmethod
    def from_windows(cls, window_labels: np.ndarray, window_primary: np.ndarray, inverse: np.ndarray,
                     n_groups: int) -> _Groups:
        """Aggregate ``[n_windows, C]`` labels and ``[n_windows]`` primaries to the groups ``inverse`` names."""
        primary = _group_primary(window_primary, inverse, n_groups)
        labels = _group_labels(window_labels, inverse, n_groups)
        with_primary = np.flatnonzero(primary >= 0)
        labels[with_primary, primary[with_primary]] = True
        return cls(labels, primary, np.bincount(inverse, minlength=n_groups).astype(np.int64))

    @property
    def n_groups(self) -> int:
        return self.labels.shape[0]

    @property
    def n_classes(self) -> int:
        return self.labels.shape[1]

    def classes_of(self, group: int) -> np.ndarray:
        """Classes carried by ``group``, ascending."""
        return self.cols[self.starts[group] : self.starts[group + 1]]


@dataclass
class _FoldCounts:
    """A (partial) assignment of groups to ``F`` folds and the counts the fold rules compare.

    Attributes:
        groups: the groups being assigned.
        fold_of: ``[G]`` int64 fold of each group, ``-1`` while unplaced.
        count_any: ``[F, C]`` int64 groups carrying class ``c`` in fold ``f``.
        count_primary: ``[F, C]`` int64 groups with primary class ``c`` in fold ``f``.
        fold_windows: ``[F]`` int64 windows in fold ``f``.
    """

    groups: _Groups
    fold_of: np.ndarray
    count_any: np.ndarray
    count_primary: np.ndarray
    fold_windows: np.ndarray

    @classmethod
    def empty(cls, groups: _Groups, n_folds: int) -> _FoldCounts:
        """No group placed yet."""
        zeros = np.zeros((n_folds, groups.n_classes), dtype=np.int64)
        return cls(groups, np.full(groups.n_groups, -1, dtype=np.int64), zeros, zeros.copy(),
                   np.zeros(n_folds, dtype=np.int64))

    @classmethod
    def of(cls, groups: _Groups, fold_of: np.ndarray, n_folds: int) -> _FoldCounts:
        """The counts of a complete assignment ``fold_of`` (kept, not copied)."""
        has_primary = groups.primary >= 0
        count_any = np.stack([groups.labels[fold_of == f].sum(axis=0) for f in range(n_folds)]).astype(np.int64)
        count_primary = np.zeros((n_folds, groups.n_classes), dtype=np.int64)
        np.add.at(count_primary, (fold_of[has_primary], groups.primary[has_primary]), 1)
        fold_windows = np.bincount(fold_of, weights=groups.weights, minlength=n_folds).astype(np.int64)
        return cls(groups, fold_of, count_any, count_primary, fold_windows)

    def place(self, group: int, fold: int) -> None:
        """Put the unplaced ``group`` in ``fold``."""
        self.fold_of[group] = fold
        self.count_any[fold, self.groups.classes_of(group)] += 1
        if self.groups.primary[group] >= 0:
            self.count_primary[fold, self.groups.primary[group]] += 1
        self.fold_windows[fold] += self.groups.weights[group]

    def move(self, group: int, source: int, dest: int) -> None:
        """Move ``group`` from fold ``source`` to fold ``dest``."""
        classes, primary = self.groups.classes_of(group), self.groups.primary[group]
        self.count_any[source, classes] -= 1
        self.count_any[dest, classes] += 1
        if primary >= 0:
            self.count_primary[source, primary] -= 1
            self.count_primary[dest, primary] += 1
        self.fold_of[group] = dest
        self.fold_windows[source] -= self.groups.weights[group]
        self.fold_windows[dest] += self.groups.weights[group]


def _starves(count_any: np.ndarray, total_any: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Bool ``[..., len(classes)]``: one more group of each of ``classes`` in the fold(s) whose counts are
    ``count_any`` (``[F, C]`` or one fold's ``[C]``) would put *all* groups of a class with >= 2 groups there,
    leaving it absent from that fold's training split."""
    return (count_any[..., classes] + 1 == total_any[classes]) & (total_any[classes] >= 2)


# ----------------------------------------------------------------------------------------------
# step 2-3: iterative stratification


@dataclass(frozen=True)
class _SeededOrder:
    """The seeded randomness of the stratification, drawn once in a fixed order.

    Attributes:
        shuffle_rank: ``[G]`` rank of each group in a seeded shuffle (tie-break among groups).
        fold_noise: ``[G, F]`` uniform tie-breaks between folds, per group.
        class_tie_rank: ``[C]`` rank of each class in a seeded shuffle (tie-break among classes).
    """

    shuffle_rank: np.ndarray
    fold_noise: np.ndarray
    class_tie_rank: np.ndarray

    @classmethod
    def draw(cls, seed: int, n_groups: int, n_folds: int, n_classes: int) -> _SeededOrder:
        rng = np.random.default_rng(seed)
        shuffle_rank = _rank_of(rng.permutation(n_groups))
        fold_noise = rng.random((n_groups, n_folds))
        return cls(shuffle_rank, fold_noise, _rank_of(rng.permutation(n_classes)))


def _rank_of(permutation: np.ndarray) -> np.ndarray:
    """Inverse permutation: ``rank[permutation[i]] = i`` (int64)."""
    rank = np.empty(len(permutation), dtype=np.int64)
    rank[permutation] = np.arange(len(permutation))
    return rank


def _stratify(groups: _Groups, n_folds: int, seed: int) -> np.ndarray:
    """Group-level iterative stratification; returns ``[G]`` fold index (module doc, steps 2-3)."""
    order = _SeededOrder.draw(seed, groups.n_groups, n_folds, groups.n_classes)
    counts = _FoldCounts.empty(groups, n_folds)
    remaining = groups.total_any.copy()  # [C] unassigned groups carrying the class
    class_groups, class_starts = _groups_by_class(groups, order.shuffle_rank)
    for current in _rarest_first(remaining, order.class_tie_rank):
        for group in class_groups[class_starts[current] : class_starts[current + 1]]:
            if counts.fold_of[group] >= 0:
                continue
            counts.place(group, _best_fold(counts, group, current, order.fold_noise[group]))
            remaining[groups.classes_of(group)] -= 1
    _place_unlabelled(counts, order)
    _fill_empty_folds(counts.fold_of, groups.weights, order.shuffle_rank, n_folds)
    return counts.fold_of


def _groups_by_class(groups: _Groups, shuffle_rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The groups of each class in processing order: those with it as primary first, then larger groups first,
    then by seeded rank. Returns ``(class_groups, starts [C + 1])``: class ``c``'s are
    ``class_groups[starts[c] : starts[c + 1]]``."""
    rows, cols = groups.rows, groups.cols
    is_primary_pair = groups.primary[rows] == cols
    pair_order = np.lexsort((shuffle_rank[rows], -groups.weights[rows], ~is_primary_pair, cols))
    return rows[pair_order], np.searchsorted(cols[pair_order], np.arange(groups.n_classes + 1))


def _rarest_first(remaining: np.ndarray, tie_rank: np.ndarray) -> Iterator[int]:
    """Classes to process: the one with the fewest still-unassigned groups first (ties by ``tie_rank``).

    ``remaining`` ([C]) is read afresh before each pick, so the caller's updates re-rank the classes; classes
    with no unassigned group are never picked, and at most ``C`` classes are.
    """
    unfinished = np.iinfo(np.int64).max
    for _ in range(len(remaining)):
        key = np.where(remaining > 0, remaining, unfinished)
        if not (key < unfinished).any():
            return
        tied = np.flatnonzero(key == key.min())
        yield int(tied[np.argmin(tie_rank[tied])])


def _best_fold(counts: _FoldCounts, group: int, current: int, noise: np.ndarray) -> int:
    """The fold that needs ``group`` most while processing class ``current`` (criteria a-e of the module doc)."""
    groups = counts.groups
    starve = _starves(counts.count_any, groups.total_any, groups.classes_of(group)).sum(axis=1)  # a
    own_primary = groups.primary[group]
    if own_primary >= 0:
        primary_count = counts.count_primary[:, own_primary]  # b
    else:
        primary_count = np.zeros(len(counts.fold_windows), dtype=np.int64)
    # c: the class being processed, d: window capacity, e: seeded noise
    return int(np.lexsort((noise, counts.fold_windows, counts.count_any[:, current], primary_count, starve))[0])


def _place_unlabelled(counts: _FoldCounts, order: _SeededOrder) -> None:
    """Groups without any label: best-fit by window count, largest first."""
    unlabelled = np.flatnonzero(counts.fold_of < 0)
    weights = counts.groups.weights
    for group in unlabelled[np.lexsort((order.shuffle_rank[unlabelled], -weights[unlabelled]))]:
        counts.place(group, int(np.lexsort((order.fold_noise[group], counts.fold_windows))[0]))


def _fill_empty_folds(fold_of: np.ndarray, weights: np.ndarray, shuffle_rank: np.ndarray, n_folds: int) -> None:
    """A fold that got no group takes the smallest group of the fold holding the most groups (in place).

    Possible only when groups barely outnumber folds and classes force co-location.
    """
    groups_per_fold = np.bincount(fold_of, minlength=n_folds)
    for empty in np.flatnonzero(groups_per_fold == 0):
        donor = int(np.argmax(groups_per_fold))
        members = np.flatnonzero(fold_of == donor)
        moved = int(members[np.lexsort((shuffle_rank[members], weights[members]))[0]])
        fold_of[moved] = empty
        groups_per_fold[donor] -= 1
        groups_per_fold[empty] += 1


# ----------------------------------------------------------------------------------------------
# step 4: window rebalancing


def _balance_windows(
    fold_of: np.ndarray,
    groups: _Groups,
    n_folds: int,
    tolerance: float,
    max_rounds: int = 2000,
) -> np.ndarray:
    """Even out fold window counts by moves and swaps that keep the stratification (:class:`_Rebalancer`).

    Stops when no feasible change helps, every fold is within ``tolerance`` of its target window
    count, or after ``max_rounds`` changes. Returns a new ``[G]`` fold array.
    """
    balancer = _Rebalancer(_FoldCounts.of(groups, fold_of.copy(), n_folds))
    for _ in range(max_rounds):
        if balancer.within(tolerance) or not balancer.improve():
            break
    return balancer.counts.fold_of


class _Rebalancer:
    """Greedy local search on ``sum_f (windows_f - target)^2``.

    Each :meth:`improve` applies the best-gain feasible change between the most unequal pair of folds that
    has one, where feasible means

    * a swap exchanges two groups with the same primary class (primary counts stay put), or a move
      keeps the moved group's primary count of both folds within ``floor``/``ceil`` of its share;
    * no class with >= 2 groups ends up with all its groups in one fold (absent from a training
      split), and the any-label count imbalance ``sum_{f,c} (count_fc - share_c)^2`` does not grow.
    """

    MAX_CHECKS = 32
    """Candidate changes tried per pair of folds, best gain first."""

    def __init__(self, counts: _FoldCounts) -> None:
        self.counts = counts
        groups, n_folds = counts.groups, len(counts.fold_windows)
        total_primary = np.bincount(groups.primary[groups.primary >= 0], minlength=groups.n_classes)
        self.floor_primary = total_primary // n_folds
        self.ceil_primary = -(-total_primary // n_folds)
        self.target = groups.weights.sum() / n_folds
        self.bucket = groups.primary + 1  # swap partners share this (0: no primary)
        self.spacing = 2.0 * (groups.weights.max() + groups.weights.sum()) + 2.0  # keeps buckets apart in one key

    def within(self, tolerance: float) -> bool:
        """Every fold within ``tolerance * target`` windows of the target."""
        return np.abs(self.counts.fold_windows - self.target).max() <= tolerance * self.target

    def improve(self) -> bool:
        """Apply one change (the first feasible candidate of the most unequal pair); False when none is."""
        for heavy, light in self._unequal_pairs():
            gap = int(self.counts.fold_windows[heavy] - self.counts.fold_windows[light])
            for _gain, group, partner in self._candidates(heavy, light, gap):
                if partner < 0 and self._try_move(group, heavy, light):
                    return True
                if partner >= 0 and self._try_swap(group, partner, heavy, light):
                    return True
        return False

    def _unequal_pairs(self) -> list[tuple[int, int]]:
        """``(heavy, light)`` fold pairs more than one window apart, largest difference first."""
        fold_windows = self.counts.fold_windows
        order = np.argsort(-fold_windows, kind="stable")
        pairs = [
            (int(heavy), int(light))
            for i, heavy in enumerate(order)
            for light in order[::-1][: len(order) - 1 - i]
            if fold_windows[heavy] - fold_windows[light] > 1
        ]
        pairs.sort(key=lambda pair: -(fold_windows[pair[0]] - fold_windows[pair[1]]))
        return pairs

    def _candidates(self, heavy: int, light: int, gap: int) -> list[tuple[int, int, int]]:
        """``(gain, group, partner or -1)`` of improving moves/swaps heavy -> light, best first."""
        members = np.flatnonzero(self.counts.fold_of == heavy)
        others = np.flatnonzero(self.counts.fold_of == light)
        found = [self._move_candidates(members, gap)]
        if len(others):
            found += self._swap_candidates(members, others, gap)
        gains = np.concatenate([f[0] for f in found])
        groups = np.concatenate([f[1] for f in found])
        partners = np.concatenate([f[2] for f in found])
        best = np.lexsort((partners, groups, -gains))[: self.MAX_CHECKS]
        return [(int(gains[i]), int(groups[i]), int(partners[i])) for i in best]

    def _move_candidates(self, members: np.ndarray, gap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(gains, groups, partners = -1)`` of moving one member whose window count is within the gap."""
        weights = self.counts.groups.weights
        movable = members[(weights[members] > 0) & (weights[members] < gap)]
        moved = weights[movable]
        return 2 * moved * (gap - moved), movable, np.full(len(movable), -1)

    def _swap_candidates(self, members: np.ndarray, others: np.ndarray,
                         gap: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``(gains, groups, partners)``: for each member, the two same-bucket partners nearest half the gap."""
        weights, bucket = self.counts.groups.weights, self.bucket
        key = bucket[others] * self.spacing + weights[others]
        order = np.argsort(key, kind="stable")
        key, others = key[order], others[order]
        wanted = bucket[members] * self.spacing + (weights[members] - gap / 2.0)
        right = np.searchsorted(key, wanted)
        found = []
        for index in (np.clip(right - 1, 0, len(key) - 1), np.clip(right, 0, len(key) - 1)):
            partner = others[index]
            shift = weights[members] - weights[partner]
            good = (bucket[partner] == bucket[members]) & (shift > 0) & (shift < gap)
            found.append((2 * shift[good] * (gap - shift[good]), members[good], partner[good]))
        return found

    def _transfer_ok(self, classes: np.ndarray, source: int, dest: int) -> tuple[bool, int]:
        """Whether moving one count of ``classes`` source -> dest starves nothing; its change of the
        any-label imbalance."""
        count_any = self.counts.count_any
        full = _starves(count_any[dest], self.counts.groups.total_any, classes)
        delta = int((2 * (count_any[dest, classes] - count_any[source, classes]) + 2).sum())
        return not full.any(), delta

    def _try_move(self, group: int, source: int, dest: int) -> bool:
        """Move ``group`` source -> dest if feasible; whether it moved."""
        primary = self.counts.groups.primary[group]
        count_primary = self.counts.count_primary
        if primary >= 0 and (
            count_primary[source, primary] - 1 < self.floor_primary[primary]
            or count_primary[dest, primary] + 1 > self.ceil_primary[primary]
        ):
            return False
        ok, delta = self._transfer_ok(self.counts.groups.classes_of(group), source, dest)
        if not ok or delta > 0:
            return False
        self.counts.move(group, source, dest)
        return True

    def _try_swap(self, group: int, partner: int, source: int, dest: int) -> bool:
        """Exchange ``group`` (in source) and ``partner`` (in dest, same primary) if feasible; whether it did."""
        own, other = self.counts.groups.classes_of(group), self.counts.groups.classes_of(partner)
        outgoing, incoming = np.setdiff1d(own, other), np.setdiff1d(other, own)
        ok_out, delta_out = self._transfer_ok(outgoing, source, dest)
        ok_in, delta_in = self._transfer_ok(incoming, dest, source)
        if not (ok_out and ok_in) or delta_out + delta_in > 0:
            return False
        self.counts.move(group, source, dest)
        self.counts.move(partner, dest, source)
        return True


# ----------------------------------------------------------------------------------------------
# tables, hashing, checks


def fold_table(window_ids: Sequence, groups: Sequence, fold_of: np.ndarray) -> pd.DataFrame:
    """One row per window: columns ``window_id``, ``recording_id`` (its group: the recording, or for segments of
    one audio file that file's first recording id), ``fold`` (int64).

    Raises:
        ValueError: lengths differ, window ids repeat, or a fold index is negative.
    """
    window_ids = np.asarray(window_ids, dtype=object)
    groups = np.asarray(groups, dtype=object)
    folds = np.asarray(fold_of)
    if not (len(window_ids) == len(groups) == len(folds)):
        raise ValueError(
            f"fold_table: window_ids ({len(window_ids)}), groups ({len(groups)}) and fold_of "
            f"({len(folds)}) must have the same length"
        )
    if len(folds) and (not np.issubdtype(folds.dtype, np.integer) or folds.min() < 0):
        raise ValueError("fold_table: fold_of must hold non-negative integer fold indices")
    table = pd.DataFrame(
        {"window_id": window_ids, "recording_id": groups, "fold": folds.astype(np.int64)}
    )
    duplicated = table["window_id"].duplicated()
    if duplicated.any():
        raise ValueError(f"fold_table: window id {table['window_id'][duplicated].iloc[0]!r} repeats")
    return table


def folds_hash(fold_table: pd.DataFrame) -> str:
    """Hex sha256 over the ``(window_id, fold)`` pairs sorted by window id (row order ignored)."""
    missing = {"window_id", "fold"} - set(fold_table.columns)
    if missing:
        raise ValueError(f"folds_hash: fold table lacks column(s) {sorted(missing)}")
    ids = fold_table["window_id"].astype(str)
    lines = (ids + "\t" + fold_table["fold"].astype(np.int64).astype(str)).sort_values(kind="stable")
    digest = hashlib.sha256()
    digest.update("\n".join(lines.tolist()).encode("utf-8"))
    return digest.hexdigest()


def check_folds(
    groups: np.ndarray,
    labels: np.ndarray,
    fold_of: np.ndarray,
    classes: Sequence[str],
    n_folds: int | None = None,
) -> FoldReport:
    """Check a fold assignment for leaks and for classes missing from training splits.

    Args:
        groups: ``[n_windows]`` recording id of each window.
        labels: ``[n_windows, n_classes]`` multi-hot labels (primary included).
        fold_of: ``[n_windows]`` validation fold of each window.
        classes: ``n_classes`` class names (column order of ``labels``).
        n_folds: number of folds; default ``max(fold_of) + 1``.

    Returns:
        A :class:`FoldReport`; ``report.passed`` iff leak-free and nothing avoidable is missing.
    """
    group_ids = np.asarray(groups, dtype=object)
    n_windows = len(group_ids)
    if n_windows == 0:
        raise ValueError("check_folds: no windows to check")
    window_labels = _validated_labels(labels, n_windows)
    if window_labels.shape[1] != len(classes):
        raise ValueError(
            f"check_folds: labels has {window_labels.shape[1]} columns but {len(classes)} classes given"
        )
    folds, n_folds = _validated_fold_of(fold_of, n_windows, n_folds)

    _, inverse = _canonical_groups(group_ids)
    n_groups = int(inverse.max()) + 1
    group_fold_pairs = np.unique(np.stack([inverse, folds], axis=1), axis=0)
    folds_per_group = np.bincount(group_fold_pairs[:, 0], minlength=n_groups)
    leaks = int((folds_per_group > 1).sum())

    # per-fold class counts [F, C] and the training-split counts (everything outside the fold)
    per_fold = np.zeros((n_folds, window_labels.shape[1]), dtype=np.int64)
    for f in range(n_folds):
        per_fold[f] = window_labels[folds == f].sum(axis=0)
    total = per_fold.sum(axis=0)
    missing = (total > 0)[None, :] & (total[None, :] - per_fold == 0)  # [F, C]
    groups_per_class = _group_labels(window_labels, inverse, n_groups).sum(axis=0)
    unavoidable = missing & (groups_per_class == 1)[None, :]

    names = np.asarray(list(classes), dtype=object)

    def as_dict(mask: np.ndarray) -> dict[int, tuple[str, ...]]:
        return {int(f): tuple(str(c) for c in names[mask[f]]) for f in range(n_folds) if mask[f].any()}

    return FoldReport(
        n_folds=n_folds,
        windows_per_fold=tuple(int(n) for n in np.bincount(folds, minlength=n_folds)),
        leaks=leaks,
        missing_in_train=as_dict(missing),
        unavoidable_missing=as_dict(unavoidable),
    )


def _validated_fold_of(fold_of: np.ndarray, n_windows: int, n_folds: int | None) -> tuple[np.ndarray, int]:
    """``fold_of`` as int64 ``[n_windows]`` and the number of folds (default ``max(fold_of) + 1``)."""
    folds = np.asarray(fold_of)
    if folds.shape != (n_windows,) or not np.issubdtype(folds.dtype, np.integer):
        raise ValueError(f"check_folds: fold_of must be {n_windows} integer fold indices")
    if folds.min() < 0:
        raise ValueError(f"check_folds: fold_of has negative fold index {int(folds.min())}")
    folds = folds.astype(np.int64)
    observed = int(folds.max()) + 1
    n_folds = observed if n_folds is None else int(n_folds)
    if observed > n_folds:
        raise ValueError(f"check_folds: fold_of has fold {observed - 1} but n_folds is {n_folds}")
    return folds, n_folds
