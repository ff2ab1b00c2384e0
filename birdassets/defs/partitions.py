"""Partitions: ``task`` (static, one per configured data set), ``checkpoint`` (dynamic, added by the
checkpoint sensor) and ``model`` (static: the supervised families cnn, rnn, vit); evaluation assets are
partitioned by task x checkpoint, supervised assets by task x model (Dagster multi-partitions take exactly two).
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from birdassets.settings import Settings
from birdassets.models.keras.keys import MODEL_FAMILIES

CHECKPOINT_PARTITIONS_NAME = "birdassets_checkpoint"  # project-unique: dynamic names are instance-global
checkpoint_partitions = dg.DynamicPartitionsDefinition(name=CHECKPOINT_PARTITIONS_NAME)


@dataclass(frozen=True)
class Partitions:
    task: dg.StaticPartitionsDefinition
    checkpoint: dg.DynamicPartitionsDefinition
    evaluation: dg.MultiPartitionsDefinition
    supervised: dg.MultiPartitionsDefinition


def build_partitions(settings: Settings) -> Partitions:
    task = dg.StaticPartitionsDefinition(list(settings.task_names))
    return Partitions(
        task=task,
        checkpoint=checkpoint_partitions,
        evaluation=dg.MultiPartitionsDefinition({"task": task, "checkpoint": checkpoint_partitions}),
        supervised=dg.MultiPartitionsDefinition({"task": task, "model": dg.StaticPartitionsDefinition(list(MODEL_FAMILIES))}),
    )


def evaluation_key(task: str, checkpoint: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"task": task, "checkpoint": checkpoint})


def split_evaluation_key(context: dg.AssetExecutionContext) -> tuple[str, str]:
    """``(task, checkpoint)`` of a task x checkpoint partition."""
    keys = context.partition_key.keys_by_dimension
    return keys["task"], keys["checkpoint"]


def supervised_key(task: str, model: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"task": task, "model": model})


def split_supervised_key(context: dg.AssetExecutionContext) -> tuple[str, str]:
    """``(task, model)`` of a task x model partition."""
    keys = context.partition_key.keys_by_dimension
    return keys["task"], keys["model"]
