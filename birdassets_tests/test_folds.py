"""Grouped, multi-label-stratified folds: leak-freedom, balance, stratification, determinism."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import GroupKFold

from birdassets.folds import (
    FoldConfig,
    FoldReport,
    assign_folds,
    check_folds,
    fold_table,
    folds_hash,
)

# primary-recording count of each class; sp14 never is a primary (secondary-only, 2 recordings),
# sp12 and sp13 have a single recording each (their absence from one training split is unavoidable)
PRIMARY_COUNTS = (20, 15, 12, 10, 8, 7, 6, 5, 5, 4, 3, 2, 1, 1, 0)
CLASSES = tuple(f"sp{c:02d}" for c in range(len(PRIMARY_COUNTS)))
N_UNLABELLED_RECORDINGS = 3


@dataclass(frozen=True)
class Windows:
    """A synthetic window table: one row per window."""

    window_ids: np.ndarray  # [n_windows] str
    groups: np.ndarray  # [n_windows] str recording id
    labels: np.ndarray  # [n_windows, n_classes] bool
    primary: np.ndarray  # [n_windows] int, -1 = none
    recording_labels: dict[str, np.ndarray]  # recording id -> [n_classes] bool (OR of windows)
    recording_primary: dict[str, int]

    def permuted(self, seed: int) -> "Windows":
        order = np.random.default_rng(seed).permutation(len(self.groups))
        return Windows(
            self.window_ids[order],
            self.groups[order],
            self.labels[order],
            self.primary[order],
            self.recording_labels,
            self.recording_primary,
        )


def make_windows(seed: int = 0) -> Windows:
    """~100 recordings with 1-30 windows each, Zipf-ish primaries, random secondaries."""
    rng = np.random.default_rng(seed)
    n_classes = len(CLASSES)
    primaries = [c for c, n in enumerate(PRIMARY_COUNTS) for _ in range(n)]
    primaries += [-1] * N_UNLABELLED_RECORDINGS
    secondary_only = rng.choice(len(primaries) - N_UNLABELLED_RECORDINGS, size=2, replace=False)
    window_ids, groups, labels, primary = [], [], [], []
    recording_labels, recording_primary = {}, {}
    for r, p in enumerate(primaries):
        rec = f"XC{1000 + 7 * r}"
        rec_labels = np.zeros(n_classes, dtype=bool)
        if p >= 0:
            rec_labels[p] = True
            if rng.random() < 0.4:  # secondaries among the common classes only
                rec_labels[rng.choice(12, size=rng.integers(1, 3), replace=False)] = True
        if r in secondary_only:
            rec_labels[14] = True
        n_windows = int(rng.integers(1, 31))
        seen = np.zeros(n_classes, dtype=bool)
        for w in range(n_windows):
            row = rec_labels.copy()
            secondaries = np.flatnonzero(rec_labels & (np.arange(n_classes) != p))
            if len(secondaries) and w > 0:  # secondaries audible in some windows only
                row[secondaries] = rng.random(len(secondaries)) < 0.5
            seen |= row
            window_ids.append(f"{rec}_w{w:03d}")
            groups.append(rec)
            labels.append(row)
            primary.append(p)
        recording_labels[rec] = seen
        recording_primary[rec] = p
    return Windows(
        np.array(window_ids),
        np.array(groups),
        np.array(labels),
        np.array(primary, dtype=np.int64),
        recording_labels,
        recording_primary,
    )


def recording_folds(windows: Windows, fold_of: np.ndarray) -> dict[str, int]:
    """Recording id -> its fold; asserts every window of a recording shares it."""
    result: dict[str, int] = {}
    for group, fold in zip(windows.groups, fold_of):
        assert result.setdefault(group, int(fold)) == int(fold), f"{group} split across folds"
    return result


def max_deviation_per_class(rec_fold: dict[str, int], members: dict[str, np.ndarray], n_folds: int) -> dict:
    """Class -> max over folds of |validation recordings - share| (classes with >= 5 recordings)."""
    result = {}
    for c, recs in members.items():
        if len(recs) >= 5:
            counts = np.bincount([rec_fold[r] for r in recs], minlength=n_folds)
            result[c] = float(np.abs(counts - len(recs) / n_folds).max())
    return result


@pytest.fixture(scope="module")
def windows() -> Windows:
    return make_windows()


@pytest.fixture(scope="module")
def fold_of(windows: Windows) -> np.ndarray:
    return assign_folds(windows.groups, windows.labels, windows.primary)


def test_every_recording_in_one_fold_and_folds_balanced_by_windows(windows, fold_of):
    assert fold_of.shape == windows.groups.shape
    assert fold_of.min() == 0 and fold_of.max() == 4
    rec_fold = recording_folds(windows, fold_of)
    assert len(rec_fold) == 102
    share = np.bincount(fold_of, minlength=5) / len(fold_of)
    assert np.all(np.abs(share - 0.2) <= 0.05), share
    # fold k's train/validation split is ~80/20 by windows and by recordings
    recs_per_fold = np.bincount(list(rec_fold.values()), minlength=5)
    assert recs_per_fold.min() >= 10


def test_primary_labels_stratified_to_within_one_recording(windows, fold_of):
    rec_fold = recording_folds(windows, fold_of)
    members = {
        c: [r for r, p in windows.recording_primary.items() if p == c] for c in range(len(CLASSES))
    }
    deviation = max_deviation_per_class(rec_fold, members, 5)
    assert len(deviation) == 9  # classes with >= 5 primary recordings
    assert max(deviation.values()) < 1.0, deviation


def test_all_labels_stratified_better_than_group_kfold(windows, fold_of):
    rec_fold = recording_folds(windows, fold_of)
    members = {
        c: [r for r, lab in windows.recording_labels.items() if lab[c]] for c in range(len(CLASSES))
    }
    ours = max_deviation_per_class(rec_fold, members, 5)
    baseline_fold = np.zeros(len(fold_of), dtype=np.int64)
    for k, (_, validation) in enumerate(GroupKFold(n_splits=5).split(windows.labels, groups=windows.groups)):
        baseline_fold[validation] = k
    baseline = max_deviation_per_class(recording_folds(windows, baseline_fold), members, 5)
    assert np.mean(list(ours.values())) < 0.75 * np.mean(list(baseline.values())), (ours, baseline)
    assert max(ours.values()) <= 2.5


def test_every_class_with_two_recordings_in_every_training_split(windows, fold_of):
    rec_fold = recording_folds(windows, fold_of)
    for c, name in enumerate(CLASSES):
        recs = [r for r, lab in windows.recording_labels.items() if lab[c]]
        train_counts = [sum(rec_fold[r] != k for r in recs) for k in range(5)]
        if len(recs) >= 2:
            assert min(train_counts) >= 1, (name, train_counts)
        else:
            assert sorted(train_counts) == [0, 1, 1, 1, 1], (name, train_counts)

    report = check_folds(windows.groups, windows.labels, fold_of, CLASSES)
    assert isinstance(report, FoldReport)
    assert report.leaks == 0
    assert report.n_folds == 5
    assert report.windows_per_fold == tuple(np.bincount(fold_of, minlength=5))
    assert sum(report.windows_per_fold) == len(fold_of)
    single = {"sp12", "sp13"}
    flagged = {name for names in report.unavoidable_missing.values() for name in names}
    assert flagged == single
    for name in single:
        rec = next(r for r, p in windows.recording_primary.items() if p == CLASSES.index(name))
        assert name in report.unavoidable_missing[rec_fold[rec]]
    assert report.missing_in_train == report.unavoidable_missing
    assert report.passed


def test_same_seed_same_folds_even_with_permuted_rows(windows, fold_of):
    again = assign_folds(windows.groups, windows.labels, windows.primary)
    np.testing.assert_array_equal(again, fold_of)

    shuffled = windows.permuted(seed=7)
    shuffled_fold = assign_folds(shuffled.groups, shuffled.labels, shuffled.primary)
    by_window = dict(zip(windows.window_ids, fold_of))
    assert all(by_window[w] == f for w, f in zip(shuffled.window_ids, shuffled_fold))


def test_different_seed_gives_a_different_partition(windows, fold_of):
    other = assign_folds(windows.groups, windows.labels, windows.primary, FoldConfig(seed=7))

    def partition(folds: np.ndarray) -> set[frozenset[str]]:
        rec_fold = recording_folds(windows, folds)
        return {frozenset(r for r, f in rec_fold.items() if f == k) for k in range(5)}

    assert partition(other) != partition(fold_of)
    # the other seed's folds are just as good
    assert check_folds(windows.groups, windows.labels, other, CLASSES).passed


def test_fold_table_and_hash(windows, fold_of):
    table = fold_table(windows.window_ids, windows.groups, fold_of)
    assert list(table.columns) == ["window_id", "recording_id", "fold"]
    assert len(table) == len(fold_of)
    assert table["fold"].dtype == np.int64
    digest = folds_hash(table)
    assert len(digest) == 64 and int(digest, 16) >= 0

    # row order does not matter, a single moved window does
    assert folds_hash(table.sample(frac=1.0, random_state=3).reset_index(drop=True)) == digest
    moved = table.copy()
    moved.loc[17, "fold"] = (moved.loc[17, "fold"] + 1) % 5
    assert folds_hash(moved) != digest
    renamed = table.copy()
    renamed.loc[17, "window_id"] = renamed.loc[17, "window_id"] + "x"
    assert folds_hash(renamed) != digest

    with pytest.raises(ValueError, match="repeats"):
        fold_table(["a", "a"], ["r", "r"], np.array([0, 0]))
    with pytest.raises(ValueError, match="same length"):
        fold_table(["a", "b"], ["r"], np.array([0, 0]))


def test_check_folds_detects_an_injected_leak(windows, fold_of):
    counts = pd.Series(windows.groups).value_counts()
    rec = counts.index[0]  # a recording with many windows
    leaked = fold_of.copy()
    row = int(np.flatnonzero(windows.groups == rec)[0])
    leaked[row] = (leaked[row] + 1) % 5
    report = check_folds(windows.groups, windows.labels, leaked, CLASSES)
    assert report.leaks == 1
    assert not report.passed


def test_check_folds_flags_avoidable_missing_class():
    # class "b" is in two recordings, both validated in fold 0 -> avoidably absent from its train
    groups = np.array(["r0", "r1", "r2", "r3", "r4", "r5"])
    labels = np.array([[1, 1], [1, 1], [1, 0], [1, 0], [1, 0], [0, 0]], dtype=bool)
    folds = np.array([0, 0, 1, 2, 3, 4])
    report = check_folds(groups, labels, folds, ["a", "b"])
    assert report.leaks == 0
    assert report.missing_in_train == {0: ("b",)}
    assert report.unavoidable_missing == {}
    assert not report.passed
    # a single-recording class missing is unavoidable; an explicit n_folds counts empty folds
    report = check_folds(groups[1:], labels[1:], np.array([0, 1, 1, 2, 2]), ["a", "b"], n_folds=4)
    assert report.missing_in_train == report.unavoidable_missing == {0: ("b",)}
    assert report.windows_per_fold == (1, 2, 2, 0)
    assert report.passed


def test_fewer_recordings_than_folds_is_a_clear_error():
    groups = np.array(["a", "a", "b", "c", "c"])
    labels = np.ones((5, 1), dtype=bool)
    with pytest.raises(ValueError, match="5 folds from 3 recording groups"):
        assign_folds(groups, labels)
    folds = assign_folds(groups, labels, config=FoldConfig(n_folds=3))
    assert sorted(set(recording_folds_plain(groups, folds).values())) == [0, 1, 2]


def recording_folds_plain(groups: np.ndarray, folds: np.ndarray) -> dict:
    result: dict = {}
    for g, f in zip(groups, folds):
        assert result.setdefault(g, int(f)) == int(f)
    return result


def test_windows_without_labels_are_balanced_by_window_count():
    rng = np.random.default_rng(5)
    sizes = rng.integers(1, 41, size=60)
    groups = np.repeat(np.arange(60), sizes)  # integer recording ids work too
    labels = np.zeros((len(groups), 3), dtype=bool)
    folds = assign_folds(groups, labels)
    rec_fold = recording_folds_plain(groups, folds)
    assert len(rec_fold) == 60
    share = np.bincount(folds, minlength=5) / len(folds)
    assert np.all(np.abs(share - 0.2) <= 0.02), share
    report = check_folds(groups, labels, folds, ["a", "b", "c"])
    assert report.passed and report.missing_in_train == {}


def test_primary_index_counts_as_a_label_even_if_the_matrix_lacks_it():
    groups = np.array([f"r{i}" for i in range(10)] + [f"s{i}" for i in range(10)])
    labels = np.zeros((20, 2), dtype=bool)  # only primaries carry the classes
    primary = np.array([0] * 10 + [1] * 10)
    folds = assign_folds(groups, labels, primary)
    assert np.array_equal(np.bincount(folds[:10], minlength=5), [2] * 5)
    assert np.array_equal(np.bincount(folds[10:], minlength=5), [2] * 5)


def test_two_folds(windows):
    folds = assign_folds(windows.groups, windows.labels, windows.primary, FoldConfig(n_folds=2))
    assert set(np.unique(folds)) == {0, 1}
    rec_fold = recording_folds(windows, folds)
    share = np.bincount(folds) / len(folds)
    assert np.all(np.abs(share - 0.5) <= 0.05), share
    members = {
        c: [r for r, p in windows.recording_primary.items() if p == c] for c in range(len(CLASSES))
    }
    for c, recs in members.items():
        if len(recs) >= 2:
            counts = np.bincount([rec_fold[r] for r in recs], minlength=2)
            assert abs(counts[0] - counts[1]) <= 1, (CLASSES[c], counts)
    report = check_folds(windows.groups, windows.labels, folds, CLASSES)
    assert report.n_folds == 2 and report.passed


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"labels": np.zeros((3, 2))}, "has 3 rows"),
        ({"primary": np.array([0, 5, 0, 0])}, r"row 1 has class index 5"),
        ({"primary": np.array([0.0, 1.0, 0.0, 0.0])}, "integer class indices"),
        ({"labels": np.zeros(4)}, r"\[n_windows, n_classes\]"),
    ],
)
def test_bad_inputs_name_the_problem(kwargs, message):
    args = {
        "groups": np.array(["a", "b", "c", "d"]),
        "labels": np.zeros((4, 2)),
        "primary": np.array([0, 1, 0, 1]),
        "config": FoldConfig(n_folds=2),
    } | kwargs
    with pytest.raises(ValueError, match=message):
        assign_folds(**args)


def test_config_validation():
    with pytest.raises(ValueError, match="n_folds must be >= 2"):
        FoldConfig(n_folds=1)
    with pytest.raises(ValueError, match="window_tolerance"):
        FoldConfig(window_tolerance=1.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rare_secondary_class_kept_in_both_training_splits_against_primary_pull(seed):
    # "x" (secondary of g1 and g2) is processed first; g2's primary "r" already sits in g1's fold's
    # partner, so primary balance alone would validate both x recordings in one fold
    rows = [  # recording, windows, primary, labels
        ("r0", 5, "r", {"r", "z"}),
        ("g1", 4, "q", {"q", "x"}),
        ("g2", 3, "r", {"r", "x"}),
        ("q2", 2, "q", {"q"}),
        ("q3", 2, "q", {"q"}),
        ("r3", 2, "r", {"r"}),
        ("r4", 2, "r", {"r"}),
    ]
    classes = ["q", "r", "x", "z"]
    groups = np.array([rec for rec, n, _, _ in rows for _ in range(n)])
    primary = np.array([classes.index(p) for _, n, p, _ in rows for _ in range(n)])
    labels = np.array([[c in labs for c in classes] for _, n, _, labs in rows for _ in range(n)])
    folds = assign_folds(groups, labels, primary, FoldConfig(n_folds=2, seed=seed))
    rec_fold = recording_folds_plain(groups, folds)
    assert rec_fold["g1"] != rec_fold["g2"]
    report = check_folds(groups, labels, folds, classes)
    assert report.missing_in_train == report.unavoidable_missing == {rec_fold["r0"]: ("z",)}
    assert report.passed


def label_imbalance(groups: np.ndarray, labels: np.ndarray, folds: np.ndarray, n_folds: int) -> float:
    """sum over folds and classes of (recordings carrying the class in the fold - share)^2."""
    table = pd.DataFrame(labels).assign(group=groups, fold=folds).groupby("group").max()
    per_fold = table.groupby("fold").sum().reindex(range(n_folds), fill_value=0).to_numpy()
    return float(((per_fold - per_fold.sum(axis=0) / n_folds) ** 2).sum())


@pytest.mark.parametrize("seed", [0, 1])
def test_window_rebalancing_keeps_the_stratification(seed):
    # heavy-tailed window counts (1 to ~100 windows per recording) are hard to balance greedily
    rng = np.random.default_rng(100 + seed)
    n_recordings, n_classes = 120, 10
    rec_primary = rng.choice(n_classes, size=n_recordings, p=rng.dirichlet(np.ones(n_classes)))
    rec_labels = rng.random((n_recordings, n_classes)) < 0.12
    rec_labels[np.arange(n_recordings), rec_primary] = True
    sizes = np.clip(rng.lognormal(2.0, 1.0, n_recordings).astype(int), 1, 100)
    rows = np.repeat(np.arange(n_recordings), sizes)
    groups, labels, primary = rows.astype(str), rec_labels[rows], rec_primary[rows]
    classes = [f"c{c}" for c in range(n_classes)]

    raw = assign_folds(groups, labels, primary, FoldConfig(window_tolerance=0.99))  # no rebalancing
    balanced = assign_folds(groups, labels, primary)
    raw_share = np.bincount(raw, minlength=5) / len(raw)
    share = np.bincount(balanced, minlength=5) / len(balanced)
    assert np.abs(share - 0.2).max() <= 0.2 * 0.01 + 1e-9  # default tolerance: 1% of a fold's share
    assert np.abs(share - 0.2).max() < np.abs(raw_share - 0.2).max()
    # primary counts stay within one recording of the share, any-label imbalance does not grow
    for folds in (raw, balanced):
        rec_fold = np.zeros(n_recordings, dtype=np.int64)
        rec_fold[rows] = folds
        for c in range(n_classes):
            counts = np.bincount(rec_fold[rec_primary == c], minlength=5)
            assert np.abs(counts - counts.sum() / 5).max() < 1.0
        assert check_folds(groups, labels, folds, classes).passed
    assert label_imbalance(groups, labels, balanced, 5) <= label_imbalance(groups, labels, raw, 5)


def test_recording_primary_is_the_most_frequent_window_primary():
    from birdassets.folds import _group_primary

    # group 0: windows 1, 0, 0 -> 0; group 1: 2, 2, -1 -> 2; group 2: none -> -1; group 3: tie 3/1 -> 1
    primary = np.array([1, 0, 0, 2, 2, -1, -1, 3, 1])
    inverse = np.array([0, 0, 0, 1, 1, 1, 2, 3, 3])
    np.testing.assert_array_equal(_group_primary(primary, inverse, 4), [0, 2, -1, 1])
