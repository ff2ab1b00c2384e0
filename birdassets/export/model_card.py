"""The ``README.md`` model card of an exported folder: what the model is for, what it was trained on, where it
came from (the lineage hash), how well it did (metrics from DuckDB), its licence and how to run it."""

from __future__ import annotations

from typing import Any

import pandas as pd

INTENDED_USE = {
    "resnet18": "Detecting calls in long recordings: 2 s windows every 1 s are scored with P(call), and a recording "
                "is flagged when enough windows are positive (OrcaHello's rule). Meant to triage audio for human "
                "review on data like its training data (same recorder type, site and sound classes).",
    "vit": "Scoring windows for the probe's classes: a frozen ViT encoder and a probe the benchmark trained on its "
           "embeddings of one task. Meant for recordings like that task's (species, sites, recorders).",
    "keras": "Multi-label species scoring of soundscape windows, BirdCLEF style: a supervised model trained on one "
             "task, its fold models averaged. Meant for recordings like that task's (species, sites, recorders).",
}
"""Per family: the intended use stated on its card."""


def model_card(config: dict[str, Any], preset: dict[str, Any], metrics: pd.DataFrame, licence: str) -> str:
    """Markdown text of the card for an export's ``config.json`` (and its preset dict), ``metrics`` rows of the
    DuckDB leaderboard (``task, probe, split, metric, mean, std, n_folds``) and a licence name."""
    source, rule, lineage = config["source"], config["decision_rule"], config["lineage"]
    lines = [
        f"# {config['name']}",
        "",
        f"A **{config['family']}** model exported by birdassets {config['birdassets_version']} from "
        + (f"checkpoint `{source['checkpoint']}` (step {source['step']})." if "checkpoint" in source else
           f"supervised model `{source['model']}` ({config['architecture']['folds']} fold models)."),
        "",
        "## Intended use",
        "",
        INTENDED_USE.get(config["family"], "Scoring audio windows like its training data."),
        "Not validated for other recorders, sites or species; check it on labelled data of yours first.",
        "",
        "## Training data and lineage",
        "",
        f"- task: `{lineage['task']}`" + (f"; probe `{config['probe']['name']}` trained on `{config['probe']['task']}`"
                                          if "probe" in config else ""),
        f"- manifest hash: `{lineage['manifest_hash'] or 'unknown (no manifest of the task on the exporting machine)'}`",
        f"- frontend preset: `{preset['name']}` (hash `{lineage['preset_hash']}`)",
        f"- code version: `{lineage['code_version']}`",
        f"- **lineage hash: `{config['lineage_hash']}`** (sha256 of the lineage entry of `config.json`)",
        "",
        "## Metrics",
        "",
        *metric_lines(config, metrics),
        "",
        "## Inputs and outputs",
        "",
        f"- input: mono audio resampled to {preset['sample_rate']} Hz, windows of {rule['clip_s']} s every "
        f"{rule['hop_s']} s, stage-C mel `[{', '.join(str(n) for n in config['input_shape'])}]` "
        "(`preprocessor_config.json` holds every frontend parameter)",
        f"- output: {config['output']} over `{', '.join(config['classes'][:12])}`"
        + (" ..." if len(config["classes"]) > 12 else "") + "; a window's confidence is the target classes' largest",
        f"- decision: a window is positive when its confidence > {rule['threshold']}; a recording is positive when "
        f">= {rule['min_num_positive_calls']} windows are",
        "",
        "## How to run",
        "",
        "```",
        f"birdassets detect FOLDER --encoder THIS_FOLDER --target {config['classes'][-1]} --out detections.csv",
        "```",
        "",
        "## Licence",
        "",
        licence,
        "",
    ]
    return "\n".join(lines)


def metric_lines(config: dict[str, Any], metrics: pd.DataFrame) -> list[str]:
    """The training run's validation figures, then the DuckDB leaderboard rows, as markdown."""
    lines = [f"- training validation ({config.get('validation_from', 'held-out fold 0')}): "
             + ", ".join(f"{name} {value:.4f}" for name, value in sorted(config["validation"].items()))]
    if metrics.empty:
        lines.append("- no benchmark scores in DuckDB for this checkpoint yet")
        return lines
    lines += ["", "| task | probe | split | metric | mean | std | folds |", "|---|---|---|---|---|---|---|"]
    for row in metrics.itertuples(index=False):
        lines.append(f"| {row.task} | {row.probe} | {row.split} | {row.metric} | {row.mean:.4f} | "
                     f"{row.std:.4f} | {row.n_folds} |")
    return lines
