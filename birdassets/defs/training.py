"""Training as a Dagster job: a run writes Orbax steps into a watched checkpoint root, so the checkpoint
sensor registers each new step and the benchmark follows without a click."""

import dagster as dg

from birdassets.benchmark import ensure_mel_dataset
from birdassets.defs.resources import BirdassetsHome
from birdassets.train.config import TrainConfig
from birdassets.train.loop import train

TRAIN_JOB = "train_job"


class TrainRunConfig(dg.Config):
    """Launchpad config of a training run (fields of :class:`birdassets.train.config.TrainConfig`)."""

    run: str = "demo-sup"
    task: str = "demo-pretrain"
    objective: str = "supervised"
    model: str = "tiny"
    num_steps: int = 200
    warmup_steps: int = 20
    lr: float = 1e-3
    weight_decay: float = 0.05
    batch_size: int = 32
    log_every: int = 25
    checkpoint_every: int = 100
    seed: int = 0
    precision: str = "float32"


@dg.op(description="Train (or resume) an encoder into <first checkpoint root>/<run>/.")
def train_encoder(context: dg.OpExecutionContext, config: TrainRunConfig, birdassets: BirdassetsHome) -> dg.Output:
    settings = birdassets.settings
    train_config = TrainConfig(**config.model_dump(exclude={"run"}))
    dataset = ensure_mel_dataset(settings, train_config.task)
    run_dir = settings.checkpoint_roots[0] / config.run
    result = train(train_config, dataset, run_dir, progress=False, log=context.log.info)
    last = result.history[-1] if result.history else {}
    return dg.Output(
        str(run_dir),
        metadata={
            "run_dir": dg.MetadataValue.path(str(run_dir)),
            "steps": f"{result.start_step} -> {result.final_step}",
            "steps_per_s": result.steps_per_s or 0.0,
            "checkpoint_blocking_s": result.checkpoint_seconds,
            "final_loss": float(last.get("loss", float("nan"))),
            "online_probe_cmap": float(last.get("probe_cmap", float("nan"))),
        },
    )


@dg.job(name=TRAIN_JOB, description="Train an encoder; the checkpoint sensor benchmarks every step it saves.")
def train_job():
    train_encoder()
