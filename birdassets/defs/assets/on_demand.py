"""``detections``: sliding-window detection over a task's recordings (OrcaHello decision rule), per task.

Launched on demand (Dagster UI launchpad or a job run config): which encoder, which target classes and the
decision rule are run config, not code, so one task can be searched for several species. Writes JSON and CSV
under ``$BIRDASSETS_HOME/detections/<task>/`` and replaces the task x scorer rows of the DuckDB
``detections`` / ``detection_files`` tables.
"""

import dagster as dg
import pydantic

from birdassets import __version__, steps
from birdassets.defs.metadata import detection_metadata
from birdassets.defs.partitions import Partitions
from birdassets.defs.profiles import DUCKDB_POOL
from birdassets.defs.resources import BirdassetsHome
from birdassets.detection import DetectionConfig
from birdassets.models.registry import BIRDNET_KEY

GROUP = "detection"
DEFAULT_RULE = DetectionConfig()
"""OrcaHello's defaults: 2 s windows every 1 s, threshold 0.5, 3 positive windows."""


class DetectionRunConfig(dg.Config):
    """What to detect and how to decide (defaults: OrcaHello's 2 s / 1 s windows, 0.5, 3 positives)."""

    encoder: str = pydantic.Field(default=BIRDNET_KEY, description="birdnet-v2.4 or any checkpoint key")
    probe: str | None = pydantic.Field(default=None, description="'<task>:<probe>': score with that trained probe "
                                       "(targets are its classes); default: the encoder's own logits (BirdNET)")
    targets: list[str] = pydantic.Field(default_factory=list,
                                        description="target classes: BirdNET labels, scientific or common names")
    clip_s: float = DEFAULT_RULE.clip_s
    hop_s: float = DEFAULT_RULE.hop_s
    threshold: float = DEFAULT_RULE.threshold
    min_num_positive_calls: int = DEFAULT_RULE.min_num_positive_calls

    def request(self) -> steps.DetectionRequest:
        """The core request; raises ``dg.Failure`` naming what is wrong with the run config."""
        if not self.targets:
            raise dg.Failure("detections: no target classes; set `targets` in the run config "
                             "(e.g. ['Turdus migratorius'] or ['Killer Whale'])")
        rule = DetectionConfig(clip_s=self.clip_s, hop_s=self.hop_s, threshold=self.threshold,
                               min_num_positive_calls=self.min_num_positive_calls)
        return steps.DetectionRequest(self.encoder, tuple(self.targets), self.probe, rule)


def detections_asset(partitions: Partitions) -> dg.AssetsDefinition:
    @dg.asset(group_name=GROUP, partitions_def=partitions.task, deps=["raw_audio"], code_version=__version__,
              pool=DUCKDB_POOL, kinds={"tflite", "duckdb"})
    def detections(context: dg.AssetExecutionContext, config: DetectionRunConfig,
                   birdassets: BirdassetsHome) -> dg.MaterializeResult:
        """Per-window confidences and per-recording OrcaHello decisions for the configured target classes."""
        try:
            report = steps.detect(birdassets.settings, context.partition_key, config.request(), context.run_id)
        except (ValueError, FileNotFoundError) as error:
            raise dg.Failure(f"detections: {error}") from error
        return dg.MaterializeResult(metadata=detection_metadata(report))

    return detections
