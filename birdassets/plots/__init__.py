"""Figures of results, rendered to small deterministic PNGs (matplotlib's Agg, no pyplot state).

One module per subject: :mod:`~birdassets.plots.scores` (per-class AP with support, precision-recall curves),
:mod:`~birdassets.plots.leaderboard` (a task's leaderboard, score against training step),
:mod:`~birdassets.plots.curves` (loss and online-probe curves), :mod:`~birdassets.plots.timelines`
(confidence over time per recording). Each figure function returns a :class:`matplotlib.figure.Figure`;
:func:`~birdassets.plots.render.to_png` turns it into bytes.
"""
