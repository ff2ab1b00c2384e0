"""Raven Pro selection tables in Raven's exact format: views merged, empty labels counted, windows labelled."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from birdassets.annotations.raven import RavenTableError, label_windows, read_selection_table, write_selection_table

RAVEN = (
    "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tAnnotation\n"
    "1\tWaveform 1\t1\t0.400000\t1.200000\t0.000\t16000.000\tamerob\n"
    "1\tSpectrogram 1\t1\t0.400000\t1.200000\t1500.000\t4200.000\tamerob\n"
    "2\tSpectrogram 1\t1\t4.700000\t6.500000\t2000.000\t5000.000\twoothr\n"
    "3\tSpectrogram 1\t1\t9.800000\t10.100000\t2000.000\t5000.000\tamerob\n"
    "4\tSpectrogram 1\t1\t12.000000\t13.000000\t2000.000\t5000.000\t\n"
)


def test_views_of_one_selection_are_one_and_empty_labels_are_counted(tmp_path):
    (tmp_path / "rec.Table.1.selections.txt").write_text(RAVEN)
    selections = read_selection_table(tmp_path / "rec.Table.1.selections.txt", label_column="Annotation")
    assert selections.frame["selection"].tolist() == [1, 2, 3] and selections.empty_labels == 1
    assert selections.frame["label"].tolist() == ["amerob", "woothr", "amerob"]
    assert selections.frame.loc[0, ["begin_s", "end_s", "low_hz"]].tolist() == [0.4, 1.2, 0.0]  # the first view


def test_windows_carry_a_class_from_half_a_second_or_half_the_call(tmp_path):
    (tmp_path / "t.selections.txt").write_text(RAVEN)
    frame = read_selection_table(tmp_path / "t.selections.txt", "Annotation").frame
    labels = label_windows(frame, np.array([0.0, 5.0, 10.0]), 5.0, ["amerob", "woothr"])
    # woothr 4.7-6.5 s: 0.3 s in window 0 (< 0.5), 1.5 s in window 1; amerob 9.8-10.1 s (0.3 s long): 0.1 s in
    # window 2 (< 0.15 = half the call), 0.2 s in window 1 (>= 0.15)
    assert labels.tolist() == [[1, 0], [1, 1], [0, 0]]


def test_an_empty_table_means_nothing_present_and_a_bad_one_is_named(tmp_path):
    (tmp_path / "empty.selections.txt").write_text(RAVEN.splitlines()[0] + "\n")
    assert read_selection_table(tmp_path / "empty.selections.txt", "Annotation").frame.empty
    with pytest.raises(RavenTableError, match="bad.selections.txt: not a Raven selection table .missing column Species"):
        (tmp_path / "bad.selections.txt").write_text(RAVEN)
        read_selection_table(tmp_path / "bad.selections.txt")


def test_a_written_table_reads_back_as_the_same_windows(tmp_path):
    selections = pd.DataFrame({"begin_s": [5.0, 15.0], "end_s": [10.0, 25.0], "low_hz": 0.0, "high_hz": 10000.0,
                               "label": "call"})
    path = write_selection_table(tmp_path / "out.selections.txt", selections)
    assert path.read_text().splitlines()[:2] == [
        "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tSpecies",
        "1\tSpectrogram 1\t1\t5.000000\t10.000000\t0.000000\t10000.000000\tcall"]
    frame = read_selection_table(path).frame
    labels = label_windows(frame, np.arange(0.0, 30.0, 5.0), 5.0, ["call"])
    assert labels[:, 0].tolist() == [0, 1, 0, 1, 1, 0]
