"""Step reports as Dagster UI metadata: one function per asset, plus Markdown tables and embedded PNG plots."""

from __future__ import annotations

import base64

import dagster as dg
import numpy as np
import pandas as pd

from birdassets import steps

QUARANTINE_LISTED = 20
"""Quarantined files listed (path, reason, detail) in raw_audio's materialization metadata."""
TOP_RECORDINGS_LISTED = 20
"""Recordings listed in the detections asset's metadata, most confident first."""


def table_metadata(frame: pd.DataFrame, floatfmt: str = ".4f") -> dg.MetadataValue:
    """A DataFrame as a Markdown table (rendered in the asset's materialization panel)."""
    return dg.MetadataValue.md(frame.to_markdown(index=False, floatfmt=floatfmt))


def plot_metadata(figures: dict[str, bytes]) -> dict[str, dg.MetadataValue]:
    """Each PNG as ``plot_<name>``: Markdown with the image inline (a data URI), so the UI shows the picture."""
    return {f"plot_{name}": dg.MetadataValue.md(f"![{name}](data:image/png;base64,{base64.b64encode(png).decode()})")
            for name, png in figures.items()}


def path(value) -> dg.MetadataValue:
    return dg.MetadataValue.path(str(value))


def per_second(amount: float, seconds: float) -> float | None:
    return amount / seconds if seconds else None


def ingest_metadata(report: steps.IngestReport) -> dict:
    result, table = report.result, report.result.manifest.table
    counts = table.groupby("split").agg(recordings=("recording_id", "count"), hours=("duration_s", "sum"))
    counts["hours"] = counts["hours"] / 3600
    reasons = pd.DataFrame({"reason": list(result.reason_counts()), "files": list(result.reason_counts().values())})
    first = result.quarantine_frame().head(QUARANTINE_LISTED)[["path", "reason", "detail"]]
    return {
        "source": report.dataset.source, "root": path(report.dataset.root),
        "manifest": path(report.manifest_path), "quarantine": path(report.quarantine_path),
        "found": result.found, "ingested": result.ingested, "quarantined": len(result.quarantine),
        "ignored_non_audio": result.ignored, "reconciles": result.reconciles,
        "quarantine_reasons": table_metadata(reasons), "quarantined_files": table_metadata(first),
        "recordings": len(table), "classes": len(result.manifest.classes),
        "manifest_hash": result.manifest.content_hash(), "task_fingerprint": report.task_fingerprint,
        "scan_files_per_s": per_second(result.found, report.seconds), "seconds": report.seconds,
        "by_split": table_metadata(counts.reset_index()),
    }


def mel_metadata(report: steps.MelReport) -> dict:
    stats = report.stats
    return {
        "path": path(report.dataset.builder_dir), "windows": stats["windows"],
        "windows_by_split": dg.MetadataValue.json(stats["windows_by_split"]), "audio_seconds": stats["audio_seconds"],
        "mel_throughput_audio_s_per_s": stats["mel_audio_s_per_s"],
        "build_throughput_audio_s_per_s": stats["build_audio_s_per_s"], "build_seconds": stats["wall_seconds"],
        "preset": report.preset.name, "preset_hash": report.preset.content_hash(),
        "shards_per_split": stats["shards_per_split"],
    }


def folds_metadata(report: steps.FoldsReport) -> dict:
    table, n_folds = report.table, report.n_folds
    per_fold = pd.DataFrame({
        "fold": range(n_folds),
        "windows": np.bincount(table["fold"], minlength=n_folds),
        "recordings": table.groupby("fold")["recording_id"].nunique().reindex(range(n_folds)).fillna(0),
    })
    return {"path": path(report.path), "n_folds": n_folds, "seed": report.seed, "folds_hash": report.folds_hash,
            "per_fold": table_metadata(per_fold)}


def encoder_metadata(report: steps.EncoderReport) -> dict:
    loaded, ref = report.loaded, report.loaded.ref
    return {"checkpoint_path": path(ref.path), "step": ref.step, "family": ref.family, "dim": loaded.encoder.dim,
            "record": path(report.record_path), "details": dg.MetadataValue.json(loaded.details),
            **plot_metadata(report.figures)}


def embeddings_metadata(report: steps.EmbeddingsReport) -> dict:
    stats = report.stats
    waveform = {"encoder": report.family, "encoder_windows": stats["encoder_windows"],
                "encoder_audio_s_per_s": stats["encoder_audio_s_per_s"]} if "encoder_windows" in stats else {}
    return {
        "path": path(report.directory), "windows": stats["windows"], "dim": stats["dim"],
        "seconds": stats["seconds"], "windows_per_s": stats["windows_per_s"], "audio_s_per_s": stats["audio_s_per_s"],
        **waveform, **{key: float(value) for key, value in report.health.items()},
    }


def scores_metadata(report: steps.ScoresReport) -> dict:
    summary = report.scores.groupby(["split", "probe", "metric"])["value"].agg(["mean", "std"]).reset_index()
    headline = summary[(summary["split"] == "valid") & (summary["metric"] == "cmAP")]
    return {
        "path": path(report.directory), "scores": table_metadata(summary),
        **{f"cmAP_valid_{row.probe}": float(row.mean) for row in headline.itertuples()},
        "code_version": report.lineage.code_version, "step": report.lineage.step, **plot_metadata(report.figures),
    }


def record_metadata(report: steps.RecordReport) -> dict:
    return {"database": path(report.db_path), "score_rows": report.score_rows,
            "class_score_rows": report.class_score_rows, "leaderboard": table_metadata(report.leaderboard),
            "scores_run_id": report.run_id, **plot_metadata(report.figures)}


def detection_metadata(report: steps.DetectionReport) -> dict:
    recordings = report.result.recordings
    files = pd.DataFrame([{"file": r.file, "windows": len(r.start_s), "positive": int(r.local_predictions.sum()),
                           "global_prediction": r.global_prediction,
                           "global_confidence": round(r.global_confidence, 4)} for r in recordings])
    top = files.sort_values(["global_prediction", "global_confidence"], ascending=False).head(TOP_RECORDINGS_LISTED)
    return {
        "scorer": report.scorer, "recordings": len(recordings),
        "detected": int(files["global_prediction"].sum()) if len(files) else 0, "windows": report.rows,
        "unreadable": len(report.result.failed), "seconds": report.seconds,
        "audio_s_per_s": per_second(sum(r.duration_s for r in recordings), report.seconds),
        "json": path(report.json_path), "csv": path(report.csv_path),
        "top_recordings": table_metadata(top) if len(top) else "none", **plot_metadata(report.figures),
    }


def supervised_metadata(report: steps.SupervisedReport) -> dict:
    valid = report.scores[(report.scores["split"] == "valid") & (report.scores["probe"] != "chance")]
    summary = valid.groupby("metric")["value"].agg(["mean", "std"]).reset_index()
    oof = dict(zip(summary["metric"], summary["mean"], strict=True))
    return {
        "checkpoint": report.key, "path": path(report.directory), "seconds": report.seconds,
        "oof_class_wise_auc": float(oof.get("AUC", float("nan"))), "oof_cmap": float(oof.get("cmAP", float("nan"))),
        "oof_scores": table_metadata(summary), "history": table_metadata(report.history),
        **plot_metadata(report.figures),
    }
