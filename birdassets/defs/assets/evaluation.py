"""Evaluation assets, partitioned by task x checkpoint: ``scores`` (files) -> ``metrics_db`` (DuckDB)."""

import dataclasses
import json

import dagster as dg
import pandas as pd

from birdassets import __version__
from birdassets.benchmark import mel_dataset_for, score_probes
from birdassets.defs.metadata import table_metadata
from birdassets.defs.partitions import Partitions, split_evaluation_key
from birdassets.defs.resources import BirdassetsHome
from birdassets.models.registry import resolve_encoder
from birdassets.evaluation import ap_chart_markdown
from birdassets.folds import folds_hash
from birdassets.lineage import code_version
from birdassets.probes import PROBES
from birdassets.settings import Settings
from birdassets.sources.manifest import Manifest
from birdassets.store import Lineage

GROUP = "evaluation"
SCORES = "scores.parquet"
CLASS_SCORES = "class_scores.parquet"
LINEAGE = "lineage.json"

#: weekly re-benchmark on top of eager: Sunday 03:00, even when nothing upstream changed
WEEKLY_CRON = "0 3 * * 0"


def evaluation_lineage(settings: Settings, task: str, checkpoint: str, run_id: str) -> Lineage:
    """Where a task x checkpoint's scores came from: data, frontend, folds, checkpoint, code and run."""
    dataset = settings.dataset(task)
    preset = settings.preset(dataset.preset)
    manifest = Manifest.read(settings.manifest_path(task))
    ref = resolve_encoder(settings.checkpoint_roots, checkpoint)
    return Lineage(
        task=task,
        checkpoint=checkpoint,
        step=ref.step,
        manifest_hash=manifest.content_hash(),
        preset_name=preset.name,
        preset_hash=preset.content_hash(),
        folds_hash=folds_hash(pd.read_parquet(settings.folds_path(task))),
        checkpoint_path=str(ref.path),
        encoder_family=ref.family,
        code_version=code_version(),
        run_id=run_id,
        extra={
            "mel_dataset": str(mel_dataset_for(settings, task).builder_dir),
            "fold_seed": settings.fold_seed,
            "n_folds": settings.n_folds,
            "probes": {name: dataclasses.asdict(PROBES[name]) for name in settings.probes},
        },
    )


def build_evaluation_assets(settings: Settings, partitions: Partitions, model_assets) -> list[dg.AssetsDefinition]:
    probe = next(a for a in model_assets if a.key == dg.AssetKey("probe"))
    rebenchmark = dg.AutomationCondition.eager() | (
        dg.AutomationCondition.cron_tick_passed(WEEKLY_CRON).since_last_handled()
        & ~dg.AutomationCondition.in_progress()
        & ~dg.AutomationCondition.any_deps_missing()
    ).with_label("weekly re-benchmark")

    @dg.asset(
        group_name=GROUP,
        partitions_def=partitions.evaluation,
        deps=[probe],
        code_version=__version__,
        automation_condition=rebenchmark,
        kinds={"python", "parquet"},
    )
    def scores(context: dg.AssetExecutionContext, birdassets: BirdassetsHome) -> dg.MaterializeResult:
        """cmAP, class-wise AUC, padded cmAP and top-1 per fold, split and probe, plus per-class AP/AUC."""
        task, checkpoint = split_evaluation_key(context)
        settings = birdassets.settings
        score_table, class_table = score_probes(settings, task, checkpoint)
        lineage = evaluation_lineage(settings, task, checkpoint, context.run.run_id)
        directory = settings.scores_dir(task, checkpoint)
        directory.mkdir(parents=True, exist_ok=True)
        for frame, name in ((score_table, SCORES), (class_table, CLASS_SCORES)):
            tmp = directory / f"{name}.tmp"
            frame.to_parquet(tmp, index=False)
            tmp.replace(directory / name)
        (directory / LINEAGE).write_text(json.dumps(dataclasses.asdict(lineage), indent=2))
        summary = (
            score_table.groupby(["split", "probe", "metric"])["value"].agg(["mean", "std"]).reset_index()
        )
        headline = summary[(summary["split"] == "valid") & (summary["metric"] == "cmAP")]
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(directory)),
                "scores": table_metadata(summary),
                "per_class_ap": dg.MetadataValue.md(ap_chart_markdown(class_table)),
                **{f"cmAP_valid_{row.probe}": float(row.mean) for row in headline.itertuples()},
                "code_version": lineage.code_version,
                "step": lineage.step,
            }
        )

    @dg.asset(
        group_name=GROUP,
        partitions_def=partitions.evaluation,
        deps=[scores],
        code_version=__version__,
        automation_condition=dg.AutomationCondition.eager(),
        pool="duckdb",
        kinds={"duckdb"},
    )
    def metrics_db(context: dg.AssetExecutionContext, birdassets: BirdassetsHome) -> dg.MaterializeResult:
        """The task x checkpoint's scores, per-class scores and lineage, upserted into DuckDB in one transaction."""
        task, checkpoint = split_evaluation_key(context)
        settings = birdassets.settings
        directory = settings.scores_dir(task, checkpoint)
        lineage = Lineage(**json.loads((directory / LINEAGE).read_text()))
        score_table = pd.read_parquet(directory / SCORES)
        class_table = pd.read_parquet(directory / CLASS_SCORES)
        store = birdassets.store()
        dataset = settings.dataset(task)
        manifest = Manifest.read(settings.manifest_path(task))
        store.upsert_dataset(task, dataset.source, str(dataset.root), manifest.content_hash(), len(manifest.table), len(manifest.classes))
        ref = resolve_encoder(settings.checkpoint_roots, checkpoint)
        store.upsert_checkpoint(checkpoint, ref.run, ref.step, str(ref.path), lineage.encoder_family)
        store.record_run(lineage.run_id, "benchmark", f"{task} x {checkpoint}")
        written = store.write_evaluation(lineage, score_table, class_table)
        board = store.query(
            "select probe, split, metric, mean, std, n_folds from leaderboard "
            "where task = ? and checkpoint = ? order by split, probe, metric",
            [task, checkpoint],
        )
        return dg.MaterializeResult(
            metadata={
                "database": dg.MetadataValue.path(str(settings.db_path)),
                "score_rows": written,
                "class_score_rows": len(class_table),
                "leaderboard": table_metadata(board),
                "scores_run_id": lineage.run_id,
            }
        )

    return [scores, metrics_db]
