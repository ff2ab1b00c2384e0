"""``detections``: sliding-window detection over a task's recordings (OrcaHello decision rule), per task.

Launched on demand (Dagster UI launchpad or a job run config): which encoder, which target classes and the
decision rule are run config, not code, so one task can be searched for several species. Writes JSON and CSV
under ``$BIRDASSETS_HOME/detections/<task>/`` and replaces the task x scorer rows of the DuckDB
``detections`` / ``detection_files`` tables.
"""


import time

import dagster as dg
import pandas as pd
import pydantic

from birdassets import __version__
from birdassets.defs.metadata import table_metadata
from birdassets.defs.partitions import Partitions
from birdassets.defs.resources import BirdassetsHome
from birdassets.detect import DetectionConfig, detect_recordings, make_scorer
from birdassets.models.registry import BIRDNET_KEY
from birdassets.settings import safe_name
from birdassets.sources.manifest import Manifest

GROUP = "detection"


class DetectionRunConfig(dg.Config):
    """What to detect and how to decide (defaults: OrcaHello's 2 s / 1 s windows, 0.5, 3 positives)."""

    encoder: str = pydantic.Field(default=BIRDNET_KEY, description="birdnet-v2.4 or any checkpoint key")
    probe: str | None = pydantic.Field(default=None, description="'<task>:<probe>': score with that trained probe "
                                       "(targets are its classes); default: the encoder's own logits (BirdNET)")
    targets: list[str] = pydantic.Field(default_factory=list,
                                        description="target classes: BirdNET labels, scientific or common names")
    clip_s: float = 2.0
    hop_s: float = 1.0
    threshold: float = 0.5
    min_num_positive_calls: int = 3


def build_detection_assets(partitions: Partitions, data_assets) -> list[dg.AssetsDefinition]:
    raw_audio = next(a for a in data_assets if a.key == dg.AssetKey("raw_audio"))

    @dg.asset(
        group_name=GROUP,
        partitions_def=partitions.task,
        deps=[raw_audio],
        code_version=__version__,
        pool="duckdb",
        kinds={"tflite", "duckdb"},
    )
    def detections(context: dg.AssetExecutionContext, config: DetectionRunConfig, birdassets: BirdassetsHome):
        """Per-window confidences and per-recording OrcaHello decisions for the configured target classes."""
        task = context.partition_key
        settings = birdassets.settings
        if not config.targets:
            raise dg.Failure("detections: no target classes; set `targets` in the run config "
                             "(e.g. ['Turdus migratorius'] or ['Killer Whale'])")
        rule = DetectionConfig(clip_s=config.clip_s, hop_s=config.hop_s, threshold=config.threshold,
                               min_num_positive_calls=config.min_num_positive_calls)
        try:
            scorer = make_scorer(settings, config.encoder, config.targets, config.probe)
        except (ValueError, FileNotFoundError) as error:
            raise dg.Failure(f"detections: {error}") from error
        paths = Manifest.read(settings.manifest_path(task)).table["path"].drop_duplicates().tolist()
        started = time.perf_counter()
        result = detect_recordings(paths, scorer, rule)
        seconds = time.perf_counter() - started
        out = settings.home / "detections" / task
        json_path = result.write(out / f"{safe_name(scorer.name)}.json")
        csv_path = result.write(out / f"{safe_name(scorer.name)}.csv")
        rows = birdassets.store().replace_detections(task, result, context.run_id)
        files = pd.DataFrame([{"file": r.file, "windows": len(r.start_s), "positive": int(r.local_predictions.sum()),
                               "global_prediction": r.global_prediction,
                               "global_confidence": round(r.global_confidence, 4)} for r in result.recordings])
        audio_s = sum(r.duration_s for r in result.recordings)
        top = files.sort_values(["global_prediction", "global_confidence"], ascending=False).head(20)
        return dg.MaterializeResult(
            metadata={
                "scorer": scorer.name,
                "recordings": len(result.recordings),
                "detected": int(files["global_prediction"].sum()) if len(files) else 0,
                "windows": rows,
                "unreadable": len(result.failed),
                "seconds": seconds,
                "audio_s_per_s": audio_s / seconds if seconds else None,
                "json": dg.MetadataValue.path(str(json_path)),
                "csv": dg.MetadataValue.path(str(csv_path)),
                "top_recordings": table_metadata(top) if len(top) else "none",
            }
        )

    return [detections]
