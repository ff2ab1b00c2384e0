"""Model assets: ``encoder`` (per checkpoint) -> ``embeddings`` -> ``probe`` (per task x checkpoint)."""

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from birdassets import __version__
from birdassets.checkpoints import read_config, read_encoder_shapes, restore_encoder, validate_encoder_shapes
from birdassets.defs.assets.data import mel_dataset_for
from birdassets.defs.metadata import table_metadata
from birdassets.defs.partitions import Partitions, split_evaluation_key
from birdassets.defs.resources import BirdassetsHome
from birdassets.discovery import resolve_checkpoint
from birdassets.embeddings import collapse_stats, compute_embeddings, write_embeddings
from birdassets.models.vit import ViTEmbedder
from birdassets.benchmark import fit_probes
from birdassets.settings import Settings, safe_name

GROUP = "models"
EMBED_BATCH = 64


def encoder_ref_path(settings: Settings, checkpoint: str) -> Path:
    return settings.home / "encoders" / f"{safe_name(checkpoint)}.json"


def load_encoder(settings: Settings, checkpoint: str) -> tuple[ViTEmbedder, dict]:
    """Restore a checkpoint's encoder (partial restore of ``state.encoder``) behind the Encoder interface."""
    ref = resolve_checkpoint(settings.checkpoint_roots, checkpoint)
    model, config, step = restore_encoder(ref.run_dir, ref.step)
    info = {"checkpoint": checkpoint, "run_dir": str(ref.run_dir), "step": step, "family": "vit", "config": config.to_dict()}
    return ViTEmbedder(model, config, name=f"vit@{checkpoint}", batch_size=EMBED_BATCH), info


def build_model_assets(settings: Settings, partitions: Partitions, data_assets) -> list[dg.AssetsDefinition]:
    eager = dg.AutomationCondition.eager()
    mel_dataset = next(a for a in data_assets if a.key == dg.AssetKey("mel_dataset"))
    folds_asset = next(a for a in data_assets if a.key == dg.AssetKey("folds"))

    @dg.asset(group_name=GROUP, partitions_def=partitions.checkpoint, code_version=__version__, kinds={"jax", "orbax"})
    def encoder(context: dg.AssetExecutionContext, birdassets: BirdassetsHome) -> dg.MaterializeResult:
        """The checkpoint's encoder, validated from Orbax metadata and restored (``state.encoder`` only)."""
        checkpoint = context.partition_key
        settings = birdassets.settings
        ref = resolve_checkpoint(settings.checkpoint_roots, checkpoint)
        config = read_config(ref.run_dir, ref.step)
        shapes = read_encoder_shapes(ref.run_dir, ref.step)
        validate_encoder_shapes(shapes, config, where=str(ref.step_dir))
        embedder, info = load_encoder(settings, checkpoint)
        n_params = int(sum(np.prod(shape) for shape in shapes.values()))
        path = encoder_ref_path(settings, checkpoint)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**info, "n_params": n_params}, indent=2))
        return dg.MaterializeResult(
            metadata={
                "checkpoint_path": dg.MetadataValue.path(str(ref.step_dir)),
                "step": ref.step,
                "family": "vit",
                "dim": config.dim,
                "depth": config.depth,
                "parameters": n_params,
                "input": dg.MetadataValue.json(
                    {"preset": config.preset, "frames": config.frames, "mels": config.mels}
                ),
            },
            data_version=dg.DataVersion(f"{ref.run}@{ref.step}"),
        )

    @dg.asset(
        group_name=GROUP,
        partitions_def=partitions.evaluation,
        deps=[mel_dataset, encoder],
        code_version=__version__,
        automation_condition=eager,
        kinds={"jax", "numpy"},
    )
    def embeddings(context: dg.AssetExecutionContext, birdassets: BirdassetsHome) -> dg.MaterializeResult:
        """Embeddings ``[windows, dim]`` of every mel window of the task under the checkpoint's encoder."""
        task, checkpoint = split_evaluation_key(context)
        settings = birdassets.settings
        embedder, _ = load_encoder(settings, checkpoint)
        embedded, stats = compute_embeddings(embedder, mel_dataset_for(settings, task), batch_size=EMBED_BATCH)
        directory = write_embeddings(embedded, settings.embeddings_dir(task, checkpoint), stats)
        health = collapse_stats(embedded.embeddings)
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(directory)),
                "windows": stats["windows"],
                "dim": stats["dim"],
                "seconds": stats["seconds"],
                "windows_per_s": stats["windows_per_s"],
                "audio_s_per_s": stats["audio_s_per_s"],
                **{key: float(value) for key, value in health.items()},
            }
        )

    @dg.asset(
        group_name=GROUP,
        partitions_def=partitions.evaluation,
        deps=[embeddings, folds_asset],
        code_version=__version__,
        automation_condition=eager,
        kinds={"jax", "optax"},
    )
    def probe(context: dg.AssetExecutionContext, birdassets: BirdassetsHome) -> dg.MaterializeResult:
        """Probes (settings.probes) trained per fold on frozen embeddings; out-of-fold and test predictions."""
        task, checkpoint = split_evaluation_key(context)
        settings = birdassets.settings
        directory = fit_probes(settings, task, checkpoint)
        summary = pd.read_parquet(directory / "summary.parquet")
        return dg.MaterializeResult(
            metadata={"path": dg.MetadataValue.path(str(directory)), "probes": table_metadata(summary)}
        )

    return [encoder, embeddings, probe]
