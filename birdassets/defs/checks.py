"""Asset checks. Blocking ones stop a run before a bad result poisons what follows."""

import dagster as dg
import numpy as np
import pandas as pd

from birdassets.benchmark import mel_dataset_for
from birdassets.checkpoints import CheckpointError, read_config, read_encoder_shapes, validate_encoder_shapes
from birdassets.defs.partitions import split_evaluation_key
from birdassets.defs.resources import BirdassetsHome
from birdassets.discovery import resolve_checkpoint
from birdassets.models.registry import PRETRAINED, load_encoder
from birdassets.embeddings import collapse_stats, read_embeddings
from birdassets.folds import check_folds
from birdassets.sources.manifest import Manifest

#: embeddings whose rows are this similar on average are treated as collapsed
MAX_MEAN_COSINE = 0.9999
MIN_EFFECTIVE_RANK = 1.5


def build_checks(assets: dict[str, dg.AssetsDefinition]) -> list[dg.AssetChecksDefinition]:
    @dg.asset_check(asset=assets["mel_dataset"], blocking=True, partitions_def=assets["mel_dataset"].partitions_def)
    def mel_values_finite_and_in_range(context: dg.AssetCheckExecutionContext, birdassets: BirdassetsHome) -> dg.AssetCheckResult:
        """Every mel value of every window is finite and within the preset's stage-C range
        (``MelPreset.input_value_range``: [0, 1] for min-max presets)."""
        dataset = mel_dataset_for(birdassets.settings, context.partition_key)
        bounds = birdassets.settings.task_preset(context.partition_key).input_value_range
        low, high, non_finite, count = np.inf, -np.inf, 0, 0
        for split in dataset.windows()["split"].unique():
            for batch in dataset.as_dataset(split, batch_size=256).as_numpy_iterator():
                mel = batch["mel"]
                finite = np.isfinite(mel)
                non_finite += int((~finite).sum())
                low, high = min(low, float(mel[finite].min())), max(high, float(mel[finite].max()))
                count += len(mel)
        tolerance = 1e-5  # float32 rounding of the bounds themselves
        passed = non_finite == 0 and low >= bounds[0] - tolerance and high <= bounds[1] + tolerance
        return dg.AssetCheckResult(
            passed=passed,
            metadata={"windows": count, "non_finite": non_finite, "min": low, "max": high,
                      "allowed_range": f"[{bounds[0]}, {bounds[1]}]"},
        )

    @dg.asset_check(asset=assets["folds"], blocking=True, partitions_def=assets["folds"].partitions_def)
    def folds_leak_free_and_cover_classes(context: dg.AssetCheckExecutionContext, birdassets: BirdassetsHome) -> dg.AssetCheckResult:
        """No recording spans two folds; every class is in every training split unless the data makes it impossible."""
        settings = birdassets.settings
        task = context.partition_key
        table = pd.read_parquet(settings.folds_path(task))
        manifest = Manifest.read(settings.manifest_path(task))
        labels = manifest.label_matrix(
            manifest.table.set_index("recording_id").loc[table["recording_id"]].reset_index()
        )
        report = check_folds(table["recording_id"].to_numpy(), labels, table["fold"].to_numpy(), manifest.classes)
        passed = report.leaks == 0 and report.missing_in_train == report.unavoidable_missing
        return dg.AssetCheckResult(
            passed=passed,
            metadata={
                "leaks": report.leaks,
                "windows_per_fold": dg.MetadataValue.json(list(report.windows_per_fold)),
                "missing_in_train": dg.MetadataValue.json({str(k): list(v) for k, v in report.missing_in_train.items()}),
                "unavoidable_missing": dg.MetadataValue.json({str(k): list(v) for k, v in report.unavoidable_missing.items()}),
            },
        )

    @dg.asset_check(asset=assets["encoder"], blocking=True, partitions_def=assets["encoder"].partitions_def)
    def encoder_shapes_consistent(context: dg.AssetCheckExecutionContext, birdassets: BirdassetsHome) -> dg.AssetCheckResult:
        """Every layer of the checkpoint's encoder agrees on the embedding width (read from Orbax metadata);
        a pretrained encoder embeds a silent window into one finite vector of its stated width."""
        if context.partition_key in PRETRAINED:
            encoder = load_encoder(birdassets.settings.checkpoint_roots, context.partition_key).encoder
            probe = np.asarray(encoder.embed(np.zeros((1, encoder.input_spec.clip_samples), np.float32)))
            passed = probe.shape == (1, encoder.dim) and bool(np.isfinite(probe).all())
            return dg.AssetCheckResult(passed=passed, metadata={"embedding_shape": str(probe.shape), "dim": encoder.dim})
        ref = resolve_checkpoint(birdassets.settings.checkpoint_roots, context.partition_key)
        try:
            validate_encoder_shapes(read_encoder_shapes(ref.run_dir, ref.step), read_config(ref.run_dir, ref.step), where=str(ref.step_dir))
        except CheckpointError as error:
            return dg.AssetCheckResult(passed=False, metadata={"problem": str(error)})
        return dg.AssetCheckResult(passed=True, metadata={"checkpoint": str(ref.step_dir)})

    @dg.asset_check(asset=assets["embeddings"], blocking=True, partitions_def=assets["embeddings"].partitions_def)
    def embeddings_finite_not_collapsed(context: dg.AssetCheckExecutionContext, birdassets: BirdassetsHome) -> dg.AssetCheckResult:
        """Embeddings are finite and not collapsed (rows not all alike, more than one effective dimension)."""
        task, checkpoint = split_evaluation_key(context)
        embedded = read_embeddings(birdassets.settings.embeddings_dir(task, checkpoint))
        health = collapse_stats(embedded.embeddings)
        passed = (
            health["non_finite"] == 0
            and health["mean_std"] > 0
            and health["mean_cosine"] < MAX_MEAN_COSINE
            and health["effective_rank"] >= MIN_EFFECTIVE_RANK
        )
        return dg.AssetCheckResult(passed=passed, metadata={k: float(v) for k, v in health.items()})

    @dg.asset_check(asset=assets["scores"], blocking=True, partitions_def=assets["scores"].partitions_def)
    def scores_within_unit_interval(context: dg.AssetCheckExecutionContext, birdassets: BirdassetsHome) -> dg.AssetCheckResult:
        """Every score is within [0, 1] (NaN only where no class could be scored)."""
        task, checkpoint = split_evaluation_key(context)
        table = pd.read_parquet(birdassets.settings.scores_dir(task, checkpoint) / "scores.parquet")
        values = table["value"].to_numpy()
        undefined = np.isnan(values)
        bad = (~undefined & ((values < 0) | (values > 1))) | (undefined & (table["n_classes_scored"].to_numpy() > 0))
        return dg.AssetCheckResult(
            passed=not bad.any(),
            metadata={"rows": len(table), "out_of_range": int(bad.sum()), "undefined": int(undefined.sum())},
        )

    return [
        mel_values_finite_and_in_range,
        folds_leak_free_and_cover_classes,
        encoder_shapes_consistent,
        embeddings_finite_not_collapsed,
        scores_within_unit_interval,
    ]
