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
from collections.abc import Sequence
from dataclasses import dataclass

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
    n_classes = window_labels.shape[1]
    if primary is None:
        window_primary = np.full(n_windows, -1, dtype=np.int64)
    else:
        window_primary = np.asarray(primary)
        if window_primary.shape != (n_windows,):
            raise ValueError(f"primary: expected shape ({n_windows},), got {window_primary.shape}")
        if not np.issubdtype(window_primary.dtype, np.integer):
            raise ValueError(f"primary: expected integer class indices, got dtype {window_primary.dtype}")
        window_primary = window_primary.astype(np.int64)
        bad = (window_primary < -1) | (window_primary >= n_classes)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"primary: row {row} has class index {window_primary[row]}, outside [-1, {n_classes})"
            )

    unique_ids, inverse = _canonical_groups(group_ids)
    n_groups = len(unique_ids)
    n_folds = int(config.n_folds)
    if n_groups < n_folds:
        raise ValueError(
            f"cannot draw {n_folds} folds from {n_groups} recording groups: "
            f"every fold needs at least one group (use fewer folds or more recordings)"
        )

    group_primary = _group_primary(window_primary, inverse, n_groups)
    group_labels = _group_labels(window_labels, inverse, n_groups)
    with_primary = np.flatnonzero(group_primary >= 0)
    group_labels[with_primary, group_primary[with_primary]] = True
    weights = np.bincount(inverse, minlength=n_groups).astype(np.int64)

    fold_of_group = _stratify(group_labels, group_primary, weights, n_folds, int(config.seed))
    fold_of_group = _balance_windows(
        fold_of_group, group_labels, group_primary, weights, n_folds, config.window_tolerance
    )
    return fold_of_group[inverse]


def _stratify(
    group_labels: np.ndarray,
    group_primary: np.ndarray,
    weights: np.ndarray,
    n_folds: int,
    seed: int,
) -> np.ndarray:
    """Group-level iterative stratification; returns ``[n_groups]`` fold index (see module doc)."""
    n_groups, n_classes = group_labels.shape
    rng = np.random.default_rng(seed)
    shuffle_rank = np.empty(n_groups, dtype=np.int64)
    shuffle_rank[rng.permutation(n_groups)] = np.arange(n_groups)
    fold_noise = rng.random((n_groups, n_folds))
    class_tie_rank = np.empty(n_classes, dtype=np.int64)
    class_tie_rank[rng.permutation(n_classes)] = np.arange(n_classes)

    # classes of each group (CSR) and groups of each class (CSR), in processing order
    group_rows, class_cols = np.nonzero(group_labels)
    group_class_starts = np.searchsorted(group_rows, np.arange(n_groups + 1))
    is_primary_pair = group_primary[group_rows] == class_cols
    pair_order = np.lexsort((shuffle_rank[group_rows], -weights[group_rows], ~is_primary_pair, class_cols))
    class_groups = group_rows[pair_order]
    class_group_starts = np.searchsorted(class_cols[pair_order], np.arange(n_classes + 1))

    total_any = group_labels.sum(axis=0).astype(np.int64)  # [C] groups carrying the class
    remaining = total_any.copy()  # [C] unassigned groups carrying the class
    count_any = np.zeros((n_folds, n_classes), dtype=np.int64)  # groups carrying c in fold f
    count_primary = np.zeros((n_folds, n_classes), dtype=np.int64)  # groups with primary c in f
    fold_windows = np.zeros(n_folds, dtype=np.int64)
    fold_of = np.full(n_groups, -1, dtype=np.int64)
    no_class = np.zeros(n_folds, dtype=np.int64)

    def place(group: int, fold: int, classes: np.ndarray) -> None:
        fold_of[group] = fold
        count_any[fold, classes] += 1
        if group_primary[group] >= 0:
            count_primary[fold, group_primary[group]] += 1
        fold_windows[fold] += weights[group]
        remaining[classes] -= 1

    # rarest class (fewest unassigned groups) first; ties by seeded rank
    unfinished = np.iinfo(np.int64).max
    for _ in range(n_classes):
        key = np.where(remaining > 0, remaining, unfinished)
        if not (key < unfinished).any():
            break
        lowest = key.min()
        tied = np.flatnonzero(key == lowest)
        current = int(tied[np.argmin(class_tie_rank[tied])])
        for group in class_groups[class_group_starts[current] : class_group_starts[current + 1]]:
            if fold_of[group] >= 0:
                continue
            classes = class_cols[group_class_starts[group] : group_class_starts[group + 1]]
            # a: folds where this group would hold every example of one of its classes
            starve = (
                (count_any[:, classes] + 1 == total_any[classes]) & (total_any[classes] >= 2)
            ).sum(axis=1)
            # b: the group's primary class first, c: then the class being processed
            own_primary = group_primary[group]
            primary_count = count_primary[:, own_primary] if own_primary >= 0 else no_class
            fold = int(
                np.lexsort((fold_noise[group], fold_windows, count_any[:, current], primary_count, starve))[0]
            )
            place(group, fold, classes)

    # groups without any label: best-fit by window count, largest first
    empty_classes = np.zeros(0, dtype=np.int64)
    unlabelled = np.flatnonzero(fold_of < 0)
    for group in unlabelled[np.lexsort((shuffle_rank[unlabelled], -weights[unlabelled]))]:
        fold = int(np.lexsort((fold_noise[group], fold_windows))[0])
        place(group, fold, empty_classes)

    # a fold that got no group (possible only when groups barely outnumber folds and classes
    # force co-location) takes the smallest group of the fold holding the most groups
    groups_per_fold = np.bincount(fold_of, minlength=n_folds)
    for empty in np.flatnonzero(groups_per_fold == 0):
        donor = int(np.argmax(groups_per_fold))
        members = np.flatnonzero(fold_of == donor)
        moved = int(members[np.lexsort((shuffle_rank[members], weights[members]))[0]])
        fold_of[moved] = empty
        groups_per_fold[donor] -= 1
        groups_per_fold[empty] += 1
    return fold_of


def _balance_windows(
    fold_of: np.ndarray,
    group_labels: np.ndarray,
    group_primary: np.ndarray,
    weights: np.ndarray,
    n_folds: int,
    tolerance: float,
    max_rounds: int = 2000,
) -> np.ndarray:
    """Even out fold window counts by moves and swaps that keep the stratification.

    Greedy local search on ``sum_f (windows_f - target)^2``: each round applies the best-gain
    feasible change between the most unequal pair of folds that has one, where feasible means

    * a swap exchanges two groups with the same primary class (primary counts stay put), or a move
      keeps the moved group's primary count of both folds within ``floor``/``ceil`` of its share;
    * no class with >= 2 groups ends up with all its groups in one fold (absent from a training
      split), and the any-label count imbalance ``sum_{f,c} (count_fc - share_c)^2`` does not grow.

    Stops when no feasible change helps, every fold is within ``tolerance`` of its target window
    count, or after ``max_rounds`` changes. Returns a new ``[n_groups]`` fold array.
    """
    fold_of = fold_of.copy()
    n_groups, n_classes = group_labels.shape
    has_primary = group_primary >= 0
    count_any = np.stack([group_labels[fold_of == f].sum(axis=0) for f in range(n_folds)]).astype(np.int64)
    count_primary = np.zeros((n_folds, n_classes), dtype=np.int64)
    np.add.at(count_primary, (fold_of[has_primary], group_primary[has_primary]), 1)
    total_any = count_any.sum(axis=0)
    total_primary = np.bincount(group_primary[has_primary], minlength=n_classes)
    floor_primary = total_primary // n_folds
    ceil_primary = -(-total_primary // n_folds)
    fold_windows = np.bincount(fold_of, weights=weights, minlength=n_folds).astype(np.int64)
    target = weights.sum() / n_folds
    group_rows, class_cols = np.nonzero(group_labels)
    class_starts = np.searchsorted(group_rows, np.arange(n_groups + 1))
    bucket = group_primary + 1  # swap partners share this (0: no primary)
    spacing = 2.0 * (weights.max() + weights.sum()) + 2.0  # keeps buckets apart in one sort key
    max_checks = 32

    def classes_of(group: int) -> np.ndarray:
        return class_cols[class_starts[group] : class_starts[group + 1]]

    def transfer_ok(classes: np.ndarray, source: int, dest: int) -> tuple[bool, int]:
        """Whether moving one count of ``classes`` source -> dest starves nothing; its delta L."""
        full = (count_any[dest, classes] + 1 == total_any[classes]) & (total_any[classes] >= 2)
        delta = int((2 * (count_any[dest, classes] - count_any[source, classes]) + 2).sum())
        return not full.any(), delta

    def try_move(group: int, source: int, dest: int) -> bool:
        primary = group_primary[group]
        if primary >= 0 and (
            count_primary[source, primary] - 1 < floor_primary[primary]
            or count_primary[dest, primary] + 1 > ceil_primary[primary]
        ):
            return False
        classes = classes_of(group)
        ok, delta = transfer_ok(classes, source, dest)
        if not ok or delta > 0:
            return False
        count_any[source, classes] -= 1
        count_any[dest, classes] += 1
        if primary >= 0:
            count_primary[source, primary] -= 1
            count_primary[dest, primary] += 1
        fold_of[group] = dest
        fold_windows[source] -= weights[group]
        fold_windows[dest] += weights[group]
        return True

    def try_swap(group: int, partner: int, source: int, dest: int) -> bool:
        own, other = classes_of(group), classes_of(partner)
        outgoing, incoming = np.setdiff1d(own, other), np.setdiff1d(other, own)
        ok_out, delta_out = transfer_ok(outgoing, source, dest)
        ok_in, delta_in = transfer_ok(incoming, dest, source)
        if not (ok_out and ok_in) or delta_out + delta_in > 0:
            return False
        count_any[source, outgoing] -= 1
        count_any[dest, outgoing] += 1
        count_any[dest, incoming] -= 1
        count_any[source, incoming] += 1
        fold_of[group], fold_of[partner] = dest, source
        shift = weights[group] - weights[partner]
        fold_windows[source] -= shift
        fold_windows[dest] += shift
        return True

    def candidates(heavy: int, light: int, gap: int) -> list[tuple[int, int, int]]:
        """(gain, group, partner or -1) of improving moves/swaps heavy -> light, best first."""
        members = np.flatnonzero(fold_of == heavy)
        others = np.flatnonzero(fold_of == light)
        found = []
        movable = members[(weights[members] > 0) & (weights[members] < gap)]
        moved = weights[movable]
        found.append((2 * moved * (gap - moved), movable, np.full(len(movable), -1)))
        if len(others):
            key = bucket[others] * spacing + weights[others]
            order = np.argsort(key, kind="stable")
            key, others = key[order], others[order]
            wanted = bucket[members] * spacing + (weights[members] - gap / 2.0)
            right = np.searchsorted(key, wanted)
            for index in (np.clip(right - 1, 0, len(key) - 1), np.clip(right, 0, len(key) - 1)):
                partner = others[index]
                shift = weights[members] - weights[partner]
                good = (bucket[partner] == bucket[members]) & (shift > 0) & (shift < gap)
                found.append((2 * shift[good] * (gap - shift[good]), members[good], partner[good]))
        gains = np.concatenate([f[0] for f in found])
        groups = np.concatenate([f[1] for f in found])
        partners = np.concatenate([f[2] for f in found])
        best = np.lexsort((partners, groups, -gains))[:max_checks]
        return [(int(gains[i]), int(groups[i]), int(partners[i])) for i in best]

    for _ in range(max_rounds):
        if np.abs(fold_windows - target).max() <= tolerance * target:
            break
        order = np.argsort(-fold_windows, kind="stable")
        pairs = [
            (int(heavy), int(light))
            for i, heavy in enumerate(order)
            for light in order[::-1][: n_folds - 1 - i]
            if fold_windows[heavy] - fold_windows[light] > 1
        ]
        pairs.sort(key=lambda pair: -(fold_windows[pair[0]] - fold_windows[pair[1]]))
        changed = False
        for heavy, light in pairs:
            gap = int(fold_windows[heavy] - fold_windows[light])
            for _gain, group, partner in candidates(heavy, light, gap):
                if partner < 0:
                    changed = try_move(group, heavy, light)
                else:
                    changed = try_swap(group, partner, heavy, light)
                if changed:
                    break
            if changed:
                break
        if not changed:
            break
    return fold_of


# ----------------------------------------------------------------------------------------------
# tables, hashing, checks


def fold_table(window_ids: Sequence, groups: Sequence, fold_of: np.ndarray) -> pd.DataFrame:
    """One row per window: columns ``window_id``, ``recording_id``, ``fold`` (int64).

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
