"""Plots: the numbers drawn are the numbers given, PNGs are small and byte-for-byte reproducible."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from birdassets.detection.rule import DetectionResult, RecordingDetections
from birdassets.detection import DetectionConfig
from birdassets.plots.timelines import detection_timeline_figure, timeline_order
from birdassets.plots.figures import best_probe, leaderboard_figures
from birdassets.plots.leaderboard import leaderboard_figure
from birdassets.plots.render import new_figure, to_png
from birdassets.plots.scores import class_summary, hardest_and_easiest, per_class_ap_figure, pr_curves_figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def class_scores_frame() -> pd.DataFrame:
    """Two folds x three classes of the linear probe (valid), plus rows another probe and split must not leak into."""
    rows = [(0, "valid", "linear", "amerob", 3, 0.9, 0.95), (1, "valid", "linear", "amerob", 4, 0.7, 0.9),
            (0, "valid", "linear", "woothr", 2, 0.2, 0.6), (1, "valid", "linear", "woothr", 5, 0.4, 0.7),
            (0, "valid", "linear", "norcar", 0, np.nan, np.nan), (1, "valid", "linear", "norcar", 1, 0.5, 0.8),
            (0, "valid", "mlp", "amerob", 3, 0.1, 0.1), (0, "test", "linear", "amerob", 9, 0.0, 0.0)]
    return pd.DataFrame(rows, columns=["fold", "split", "probe", "class_name", "support", "ap", "auc"])


def test_class_summary_averages_ap_over_the_folds_that_score_it_and_sums_support():
    summary = class_summary(class_scores_frame(), "linear")
    assert summary["class_name"].tolist() == ["woothr", "norcar", "amerob"]  # AP 0.3, 0.5, 0.8
    np.testing.assert_allclose(summary["ap"], [0.3, 0.5, 0.8])
    assert summary["support"].tolist() == [7, 1, 7]


def test_hardest_and_easiest_split_the_scored_classes():
    summary = pd.DataFrame({"class_name": [f"c{k:02d}" for k in range(12)], "ap": np.linspace(0.0, 1.1, 12) % 1.0})
    summary.loc[3, "ap"] = np.nan
    hardest, easiest = hardest_and_easiest(summary)
    ap = summary.dropna().set_index("class_name")["ap"]
    assert hardest == ap.sort_values().index[:5].tolist() and easiest == ap.sort_values().index[::-1][:5].tolist()
    three = pd.DataFrame({"class_name": ["a", "b", "c"], "ap": [0.9, 0.1, 0.5]})
    assert hardest_and_easiest(three) == (["b", "c"], ["a"])


def test_the_ap_bars_are_the_mean_aps_labelled_with_support():
    figure = per_class_ap_figure(class_summary(class_scores_frame(), "linear"), "t")
    axes = figure.axes[0]
    widths = [round(bar.get_width(), 6) for bar in axes.patches]
    assert widths == [0.3, 0.5, 0.8]  # drawn top to bottom: hardest first
    labels = [tick.get_text() for tick in axes.get_yticklabels()]
    assert labels == ["woothr (n=7)", "norcar (n=1)", "amerob (n=7)"]


def test_a_separable_class_has_a_pr_curve_through_precision_one_at_full_recall():
    truth = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    score = np.array([[0.9, 0.2], [0.8, 0.1], [0.1, 0.7], [0.2, 0.9]])  # class b: a negative outranks both positives
    figure = pr_curves_figure(truth, score, ("a", "b"), ["b"], ["a"], "t")
    hard, easy = (ax.get_lines()[0] for ax in figure.axes)
    assert easy.get_label() == "a (n=2)" and easy.get_ydata()[easy.get_xdata() == 1.0].max() == 1.0
    # b ranked: 0.9 (neg), 0.7 (pos), 0.2 (neg), 0.1 (pos): precision at full recall is 2/4
    recall, precision = hard.get_xdata(), hard.get_ydata()
    assert precision[np.flatnonzero(recall == 1.0)].min() == pytest.approx(0.5)


def test_pngs_are_small_and_the_same_bytes_every_time():
    summary = class_summary(class_scores_frame(), "linear")
    first, second = (to_png(per_class_ap_figure(summary, "same")) for _ in range(2))
    assert first == second and first.startswith(PNG_SIGNATURE) and len(first) < 200_000
    figure, axes = new_figure(8.0)
    axes.imshow(np.random.default_rng(0).random((900, 900, 3)))  # incompressible: over the limit
    with pytest.raises(ValueError, match="over the 200000 limit"):
        to_png(figure)


def test_the_best_probe_leaves_chance_out_and_the_leaderboard_highlights_the_checkpoint():
    scores = pd.DataFrame({"split": "valid", "metric": "cmAP", "probe": ["chance", "linear", "mlp", "linear"],
                           "value": [0.99, 0.5, 0.6, 0.6]})
    assert best_probe(scores) == "mlp"  # linear's mean is 0.55
    board = pd.DataFrame({"checkpoint": ["a@1", "a@1", "b@2", "b@2"], "probe": ["chance", "linear", "linear", "chance"],
                          "mean": [0.1, 0.4, 0.7, 0.3], "std": [0.0, 0.05, 0.1, 0.0]})
    figure = leaderboard_figure(board[board["probe"] != "chance"].assign(
        label=["a@1 · linear", "b@2 · linear"], highlight=[True, False]), "t", chance=0.2)
    axes = figure.axes[0]
    assert [round(bar.get_width(), 6) for bar in axes.patches] == [0.7, 0.4]  # best first
    assert [tick.get_text() for tick in axes.get_yticklabels()] == ["b@2 · linear", "a@1 · linear"]
    assert axes.patches[1].get_facecolor() != axes.patches[0].get_facecolor()  # a@1 highlighted
    (chance,) = [line for line in axes.get_lines() if line.get_linestyle() == "--"]
    assert chance.get_xdata()[0] == 0.2
    by_step = pd.DataFrame({"probe": ["linear", "linear"], "step": [1, 2], "mean": [0.4, 0.7]})
    assert set(leaderboard_figures(board, by_step, "task", "a@1", "a", 1)) == {"leaderboard", "score_vs_step"}


def recording(name: str, confidence: list[float], threshold: float = 0.5, min_positive: int = 2) -> RecordingDetections:
    conf = np.asarray(confidence)
    hits = conf > threshold
    return RecordingDetections(name, float(len(conf)), np.arange(len(conf), dtype=float), conf, 2.0, threshold,
                               int(hits.sum() >= min_positive), float(conf[hits].mean()) if hits.any() else 0.0)


def test_detection_timelines_show_detections_first_with_their_threshold():
    result = DetectionResult("s", DetectionConfig(), (
        recording("quiet.wav", [0.1, 0.45, 0.2]), recording("loud.wav", [0.9, 0.8, 0.1, 0.95]),
        recording("once.wav", [0.1, 0.99, 0.1]), recording("mild.wav", [0.6, 0.7, 0.1])))
    assert timeline_order(result) == [1, 3, 2, 0]  # detected by confidence (0.883 > 0.65), then the best window
    figure = detection_timeline_figure(result, "t")
    first = figure.axes[0]
    assert first.get_title().startswith("loud.wav: DETECTED (3 positive windows)")
    np.testing.assert_allclose(first.get_lines()[0].get_xdata(), [1.0, 2.0, 3.0, 4.0])  # window centres
    assert first.get_lines()[1].get_ydata()[0] == 0.5  # the threshold
    assert len(first.patches) == 3  # one shaded span per positive window
