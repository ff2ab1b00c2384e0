"""Model assets: ``encoder`` (per checkpoint) -> ``embeddings`` -> ``probe`` (per task x checkpoint)."""

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from birdassets import __version__
from birdassets.benchmark import fit_probes, mel_dataset_for
from birdassets.checkpoints import read_encoder_shapes
from birdassets.defs.metadata import table_metadata
from birdassets.defs.partitions import Partitions, split_evaluation_key
from birdassets.defs.resources import BirdassetsHome
from birdassets.embeddings import collapse_stats, compute_embeddings, write_embeddings
from birdassets.models.registry import EMBED_BATCH, load_encoder
from birdassets.settings import Settings, safe_name

GROUP = "models"


def encoder_ref_path(settings: Settings, checkpoint: str) -> Path:
    return settings.home / "encoders" / f"{safe_name(checkpoint)}.json"


def build_model_assets(settings: Settings, partitions: Partitions, data_assets) -> list[dg.AssetsDefinition]:
    eager = dg.AutomationCondition.eager()
    mel_dataset = next(a for a in data_assets if a.key == dg.AssetKey("mel_dataset"))
    folds_asset = next(a for a in data_assets if a.key == dg.AssetKey("folds"))

    @dg.asset(group_name=GROUP, partitions_def=partitions.checkpoint, code_version=__version__, kinds={"jax", "orbax"})
    def encoder(context: dg.AssetExecutionContext, birdassets: BirdassetsHome) -> dg.MaterializeResult:
        """The checkpoint's encoder, validated from Orbax metadata and restored (``state.encoder`` only)."""
        checkpoint = context.partition_key
        settings = birdassets.settings
        loaded = load_encoder(settings.checkpoint_roots, checkpoint)  # validates shapes before restoring
        spec = loaded.encoder.input_spec
        info = {"checkpoint": checkpoint, "path": str(loaded.path), "step": loaded.step, "family": loaded.family}
        if loaded.config is not None:  # a ViT from Orbax
            config = loaded.config
            n_params = int(sum(np.prod(s) for s in read_encoder_shapes(loaded.path.parent, loaded.step).values()))
            details = {"config": config.to_dict(), "n_params": n_params}
            metadata = {"depth": config.depth, "parameters": n_params,
                        "input": dg.MetadataValue.json({"preset": config.preset, "frames": config.frames,
                                                        "mels": config.mels})}
        else:  # a pretrained waveform encoder
            details = {"input": {"name": spec.name, "sample_rate": spec.sample_rate, "clip_s": spec.clip_s}}
            metadata = {"input": dg.MetadataValue.json(details["input"])}
        path = encoder_ref_path(settings, checkpoint)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**info, **details}, indent=2))
        return dg.MaterializeResult(
            metadata={
                "checkpoint_path": dg.MetadataValue.path(str(loaded.path)),
                "step": loaded.step,
                "family": loaded.family,
                "dim": loaded.encoder.dim,
                **metadata,
            },
            data_version=dg.DataVersion(checkpoint),
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
        loaded = load_encoder(settings.checkpoint_roots, checkpoint)
        embedded, stats = compute_embeddings(loaded.encoder, mel_dataset_for(settings, task), batch_size=EMBED_BATCH)
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
                **({"encoder": loaded.family, "encoder_windows": stats["encoder_windows"],
                    "encoder_audio_s_per_s": stats["encoder_audio_s_per_s"]} if "encoder_windows" in stats else {}),
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
