"""The jobs: asset jobs by asset key (data per task, the encoder alone and the benchmark from encoder to DuckDB
per task x checkpoint, detections per task, supervised models per task x model family) and ``train_job``, whose runs
write Orbax steps into a watched checkpoint root, so the checkpoint sensor registers each new step and the
benchmark follows without a click."""

import dataclasses
import typing
from pathlib import Path

import dagster as dg
import pydantic

from birdassets.defs.partitions import Partitions
from birdassets.defs.profiles import ACCELERATOR_POOL
from birdassets.defs.resources import BirdassetsHome
from birdassets.settings import SettingsError
from birdassets.steps import ensure_mel_dataset, tidhy_schedule, train_tidhy_encoder, training_function
from birdassets.train.config import TIDHY, TrainConfig, TrainConfigError, run_directory

DATA_JOB = "data_job"
ENCODER_JOB = "encoder_job"
BENCHMARK_JOB = "benchmark_job"
DETECT_JOB = "detect_job"
SUPERVISED_JOB = "supervised_job"
SLDS_JOB = "slds_job"


def build_jobs(partitions: Partitions) -> dict:
    """The asset jobs, selected by asset key: data per task, the encoder alone and the benchmark (encoder ->
    embeddings -> probe -> scores -> DuckDB) per task x checkpoint, detections per task, supervised training per
    task x model family, SLDS scores per checkpoint."""
    return {
        DATA_JOB: dg.define_asset_job(DATA_JOB, selection=["raw_audio", "mel_dataset", "folds"],
                                      partitions_def=partitions.task),
        ENCODER_JOB: dg.define_asset_job(ENCODER_JOB, selection=["encoder"], partitions_def=partitions.evaluation),
        BENCHMARK_JOB: dg.define_asset_job(BENCHMARK_JOB,
                                           selection=["encoder", "embeddings", "probe", "scores", "metrics_db"],
                                           partitions_def=partitions.evaluation),
        DETECT_JOB: dg.define_asset_job(DETECT_JOB, selection=["detections"], partitions_def=partitions.task),
        SUPERVISED_JOB: dg.define_asset_job(SUPERVISED_JOB, selection=["supervised_model", "supervised_scores"],
                                            partitions_def=partitions.supervised),
        SLDS_JOB: dg.define_asset_job(SLDS_JOB, selection=["slds_scores"], partitions_def=partitions.checkpoint),
    }


TRAIN_JOB = "train_job"
HELD_OUT_METRICS = {"probe_cmap": "online_probe_cmap", "val_ap": "val_ap", "val_accuracy": "val_accuracy"}
"""History keys of the last logged step -> the train op's metadata entries (ViT's online probe, detector's
validation)."""

#: The demo's run and the launchpad defaults: supervised pretraining of a tiny ViT on demo-pretrain (other
#: individuals of the demo species, never scored), checkpoints at steps 0, 100 and 200.
DEMO_TRAINING = {"run": "demo-sup", "task": "demo-pretrain", "objective": "supervised", "model": "tiny",
                 "patch_frames": 32, "patch_mels": 32,
                 "num_steps": 200, "warmup_steps": 20, "checkpoint_every": 100, "log_every": 50, "seed": 0}

#: The demo's call detector: a ResNet18 at a quarter of the standard width (8 base channels, 64-d features; the
#: standard 64 trains at about a tenth of the speed on 2 cores) on demo-orca's 2 s hydrophone clips, 150 steps of
#: batch 32 (about 19 epochs; validation AP levels off by step 100), checkpoints at 0, 50, 100, 150.
DEMO_DETECTOR = {"run": "demo-orca-resnet18", "task": "demo-orca", "model": "resnet18", "width": 8,
                 "num_steps": 150, "warmup_steps": 15, "batch_size": 32, "checkpoint_every": 50, "log_every": 50,
                 "seed": 0}

#: The demo's supervised model per demo task: the RNN family (the one that trains in seconds on a CPU) in debug
#: mode (at most 1000 windows, 2 epochs), all five folds; 32 GRU units (a quarter of the default: the two demo
#: tasks then train in about 13 s each instead of 17 s with 64) in float32, because XLA:CPU runs the GRU 3-4x
#: slower in mixed_bfloat16 (the default, ``precision="auto"``, stays bf16 on CPU).
DEMO_SUPERVISED = {"model": "rnn", "config": {"debug": True, "precision": "float32", "rnn_units": 32}}

#: Launchpad config of a training run: the run name plus every field of TrainConfig (derived from it, so a
#: new training setting is settable from the UI without touching this file). ``output_dir`` is not offered:
#: the run always writes into ``<first checkpoint root>/<run>``, where the checkpoint sensor looks; ``run`` must
#: be a plain name (:func:`~birdassets.train.config.run_directory`), checked when the run starts.
TrainRunConfig = pydantic.create_model(
    "TrainRunConfig",
    __base__=dg.Config,
    run=(str, DEMO_TRAINING["run"]),
    **{
        field.name: (typing.get_type_hints(TrainConfig)[field.name], DEMO_TRAINING.get(field.name, field.default))
        for field in dataclasses.fields(TrainConfig)
        if field.name != "output_dir"
    },
)


def checked_run(config: TrainRunConfig, settings) -> tuple[TrainConfig, Path]:
    """The training settings and run folder of a launch, checked before anything is read or written.

    Raises:
        dg.Failure: naming the run config key: ``run`` not a plain name (``/tmp/x``, ``../x``) or resolving
            outside the checkpoint roots, ``task`` not a configured data set, or an invalid training setting.
    """
    try:
        run_dir = run_directory(config.run, settings.checkpoint_roots)
    except TrainConfigError as error:
        raise dg.Failure(f"{TRAIN_JOB} run config: {error}") from error
    try:
        settings.dataset(config.task)
    except SettingsError as error:
        raise dg.Failure(f"{TRAIN_JOB} run config `task`: {error}") from error
    try:
        return TrainConfig(**config.model_dump(exclude={"run"})), run_dir
    except TrainConfigError as error:
        raise dg.Failure(f"{TRAIN_JOB} run config: {error}") from error


@dg.op(pool=ACCELERATOR_POOL,
       description="Train (or resume) an encoder into <first checkpoint root>/<run>/ (run: a plain name; model "
       "tiny/small/base for a ViT, tidhy for a TiDHy dynamics encoder, resnet18 for a call detector).")
def train_encoder(context: dg.OpExecutionContext, config: TrainRunConfig, birdassets: BirdassetsHome) -> dg.Output:
    settings = birdassets.settings
    train_config, run_dir = checked_run(config, settings)
    if train_config.model == TIDHY:
        return tidhy_output(train_tidhy_encoder(settings, train_config.task, tidhy_schedule(train_config), run_dir),
                            run_dir)
    dataset = ensure_mel_dataset(settings, train_config.task)
    try:
        result = training_function(train_config)(train_config, dataset, run_dir, progress=False, log=context.log.info)
    except ValueError as error:  # e.g. a detector asked to train on a task with several classes
        raise dg.Failure(f"{TRAIN_JOB}: {error}") from error
    last = result.history[-1] if result.history else {}
    return dg.Output(
        str(run_dir),
        metadata={
            "run_dir": dg.MetadataValue.path(str(run_dir)),
            "steps": f"{result.start_step} -> {result.final_step}",
            "steps_per_s": result.steps_per_s or 0.0,
            "checkpoint_blocking_s": result.checkpoint_seconds,
            "final_loss": float(last.get("loss", float("nan"))),
            **{HELD_OUT_METRICS[key]: float(value) for key, value in last.items() if key in HELD_OUT_METRICS},
        },
    )


def tidhy_output(result, run_dir: Path) -> dg.Output:
    """The train op's output for a TiDHy run (:class:`~birdassets.models.tidhy.fitting.TrainResult`)."""
    return dg.Output(str(run_dir), metadata={
        "run_dir": dg.MetadataValue.path(str(run_dir)), "steps": f"{result.start_step} -> {result.final_step}",
        "steps_per_s": result.steps_per_s, "final_loss": result.losses[-1] if result.losses else 0.0,
    })


@dg.job(name=TRAIN_JOB, description="Train an encoder; the checkpoint sensor benchmarks every step it saves.")
def train_job():
    train_encoder()
