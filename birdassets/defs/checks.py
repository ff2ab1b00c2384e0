"""Asset checks. Blocking ones stop a run before a bad result poisons what follows.

A failed check's result carries a description saying what failed (which layer, how many values), and the check
then raises, so the run's error names the check and the reason: Dagster 1.13 builds its own failure message from
check names only ("1 blocking asset check failed with ERROR severity: encoder: encoder_shapes_consistent").
"""

from collections.abc import Iterator

import dagster as dg
import numpy as np
import pandas as pd

from birdassets import artifacts, steps
from birdassets.checkpoints import CheckpointError
from birdassets.defs.partitions import split_evaluation_key
from birdassets.defs.resources import BirdassetsHome
from birdassets.embeddings import collapse_stats
from birdassets.folds import check_folds
from birdassets.models.registry import load_encoder, validate_encoder

MAX_MEAN_COSINE = 0.9999
"""Embeddings whose rows are this similar on average are treated as collapsed."""
MIN_EFFECTIVE_RANK = 1.5
MEL_RANGE_TOLERANCE = 1e-5
"""float32 rounding of a preset's stage-C bounds themselves."""


def mel_value_range(dataset) -> dict:
    """``windows``, ``non_finite`` count, finite ``min``/``max`` over every window of every split."""
    low, high, non_finite, count = np.inf, -np.inf, 0, 0
    for split in dataset.windows()["split"].unique():
        for batch in dataset.as_dataset(split, batch_size=256).as_numpy_iterator():
            mel = batch["mel"]
            finite = np.isfinite(mel)
            non_finite += int((~finite).sum())
            low, high = min(low, float(mel[finite].min())), max(high, float(mel[finite].max()))
            count += len(mel)
    return {"windows": count, "non_finite": non_finite, "min": low, "max": high}


def verdict(check: str, asset: str, passed: bool, reason: str, metadata: dict) -> Iterator[dg.AssetCheckResult]:
    """Yield the check's result; when it failed, raise so the run's error says ``check`` on ``asset`` and why.

    Raises:
        dagster.Failure: ``"blocking check encoder_shapes_consistent on encoder failed: <reason>"``.
    """
    yield dg.AssetCheckResult(passed=passed, description=None if passed else reason, metadata=metadata)
    if not passed:
        raise dg.Failure(description=f"blocking check {check} on {asset} failed: {reason}", allow_retries=False)


def blocking_check(asset: dg.AssetsDefinition):
    """The decorator of a blocking check on ``asset``, per partition: it runs in every run that materializes the
    asset and stops the run's steps downstream when it fails."""
    return dg.asset_check(asset=asset, blocking=True, partitions_def=asset.partitions_def)


def by_fold_json(by_fold: dict) -> dg.MetadataValue:
    return dg.MetadataValue.json({str(fold): list(classes) for fold, classes in by_fold.items()})


def mel_check(asset: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    @blocking_check(asset)
    def mel_values_finite_and_in_range(context: dg.AssetCheckExecutionContext, birdassets: BirdassetsHome):
        """Every mel value of every window is finite and within the preset's stage-C range
        (``MelPreset.input_value_range``: [0, 1] for min-max presets)."""
        data = steps.TaskData.load(birdassets.settings, context.partition_key)
        found, (low, high) = mel_value_range(data.mel), data.preset.input_value_range
        passed = (found["non_finite"] == 0 and found["min"] >= low - MEL_RANGE_TOLERANCE
                  and found["max"] <= high + MEL_RANGE_TOLERANCE)
        reason = (f"{found['non_finite']} non-finite mel values; finite values span [{found['min']}, {found['max']}]"
                  f", allowed [{low}, {high}] (task {context.partition_key})")
        yield from verdict("mel_values_finite_and_in_range", "mel_dataset", passed, reason,
                           {**found, "allowed_range": f"[{low}, {high}]"})

    return mel_values_finite_and_in_range


def folds_check(asset: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    @blocking_check(asset)
    def folds_leak_free_and_cover_classes(context: dg.AssetCheckExecutionContext, birdassets: BirdassetsHome):
        """No recording spans two folds; every class is in every training split unless the data makes it impossible."""
        data = steps.TaskData.load(birdassets.settings, context.partition_key)
        table = pd.read_parquet(birdassets.settings.layout.folds_path(context.partition_key))
        manifest = data.manifest
        windows = data.mel.windows().set_index("window_id").loc[table["window_id"]]
        labels = manifest.label_matrix(windows.reset_index())  # groups are files: labels are the windows' own
        report = check_folds(table["recording_id"].to_numpy(), labels, table["fold"].to_numpy(), manifest.classes)
        avoidable = {fold: sorted(set(classes) - set(report.unavoidable_missing.get(fold, ())))
                     for fold, classes in report.missing_in_train.items()}
        avoidable = {fold: classes for fold, classes in avoidable.items() if classes}
        reason = (f"{report.leaks} recordings span two folds; classes missing from a training split that could "
                  f"have been there: {avoidable or 'none'} (task {context.partition_key})")
        yield from verdict(
            "folds_leak_free_and_cover_classes", "folds",
            report.leaks == 0 and report.missing_in_train == report.unavoidable_missing, reason,
            {"leaks": report.leaks, "windows_per_fold": dg.MetadataValue.json(list(report.windows_per_fold)),
             "missing_in_train": by_fold_json(report.missing_in_train),
             "unavoidable_missing": by_fold_json(report.unavoidable_missing)},
        )

    return folds_leak_free_and_cover_classes


def encoder_check(asset: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    @blocking_check(asset)
    def encoder_shapes_consistent(context: dg.AssetCheckExecutionContext, birdassets: BirdassetsHome):
        """The encoder's family validates it: a checkpoint's layers agree on the embedding width (read from
        Orbax metadata only); a pretrained encoder embeds a silent window into one finite vector of its width.
        Then its weights are read back as the embeddings will read them: files that fail their checksum
        manifest (named) or NaN/inf weights (layer and count named) fail the check."""
        settings, key = birdassets.settings, context.partition_key.keys_by_dimension["checkpoint"]
        roots, models_root = settings.checkpoint_roots, settings.layout.models_root
        try:
            found = validate_encoder(roots, key, models_root)
            load_encoder(roots, key, models_root=models_root)
        except CheckpointError as error:
            yield from verdict("encoder_shapes_consistent", "encoder", False, str(error), {"problem": str(error)})
            return
        yield from verdict("encoder_shapes_consistent", "encoder", True, "",
                           {key: dg.MetadataValue.text(str(v)) for key, v in found.items()})

    return encoder_shapes_consistent


def embeddings_check(asset: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    @blocking_check(asset)
    def embeddings_finite_not_collapsed(context: dg.AssetCheckExecutionContext, birdassets: BirdassetsHome):
        """Embeddings are finite and not collapsed (rows not all alike, more than one effective dimension)."""
        embedded = steps.embeddings_of(birdassets.settings, *split_evaluation_key(context))
        health = collapse_stats(embedded.embeddings)
        failed = [name for name, ok in (
            (f"{health['non_finite']:g} non-finite values", health["non_finite"] == 0),
            ("every dimension constant (mean_std 0)", health["mean_std"] > 0),
            (f"rows alike (mean cosine {health['mean_cosine']:.6f} >= {MAX_MEAN_COSINE})",
             health["mean_cosine"] < MAX_MEAN_COSINE),
            (f"effective rank {health['effective_rank']:.3f} < {MIN_EFFECTIVE_RANK}",
             health["effective_rank"] >= MIN_EFFECTIVE_RANK)) if not ok]
        yield from verdict("embeddings_finite_not_collapsed", "embeddings", not failed,
                           f"embeddings of {context.partition_key}: {'; '.join(failed)}",
                           {k: float(v) for k, v in health.items()})

    return embeddings_finite_not_collapsed


def scores_check(asset: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    @blocking_check(asset)
    def scores_within_unit_interval(context: dg.AssetCheckExecutionContext, birdassets: BirdassetsHome):
        """Every score is within [0, 1] (NaN only where no class could be scored)."""
        task, checkpoint = split_evaluation_key(context)
        table = pd.read_parquet(birdassets.settings.layout.scores_dir(task, checkpoint) / artifacts.SCORES)
        values = table["value"].to_numpy()
        undefined = np.isnan(values)
        bad = (~undefined & ((values < 0) | (values > 1))) | (undefined & (table["n_classes_scored"].to_numpy() > 0))
        reason = (f"{int(bad.sum())} of {len(table)} scores of {context.partition_key} are outside [0, 1] "
                  "(or NaN where classes were scored)")
        yield from verdict("scores_within_unit_interval", "scores", not bad.any(), reason, {
            "rows": len(table), "out_of_range": int(bad.sum()), "undefined": int(undefined.sum())})

    return scores_within_unit_interval


def build_checks(assets: dict[str, dg.AssetsDefinition]) -> list[dg.AssetChecksDefinition]:
    return [mel_check(assets["mel_dataset"]), folds_check(assets["folds"]), encoder_check(assets["encoder"]),
            embeddings_check(assets["embeddings"]), scores_check(assets["scores"])]
