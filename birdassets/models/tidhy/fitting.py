"""Training TiDHy on windows of observations, with Orbax checkpoints and exact resume.

The batch of step ``k`` is drawn by ``numpy.random.default_rng((seed, k))``, so a run stopped after any saved step
and resumed from it sees the same batches, and ends with the same parameters, as a run that never stopped.
A step ``k`` checkpoint holds the state after ``k`` updates (model, optimizer, scaler, configs:
:mod:`birdassets.models.tidhy.saved_model`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from birdassets.checkpoints.refs import CheckpointError, finalized_steps, latest_step
from birdassets.field_checks import check_fields
from birdassets.models.tidhy.saved_model import SavedTiDHy, Scaler, restore_optimizer, restore_tidhy, save_tidhy
from birdassets.models.tidhy.learning import new_optimizer, train_step
from birdassets.models.tidhy.network import TiDHy

OnStep = Callable[[int, dict[str, float]], None]
"""``on_step(step, terms)``: called after every update with the loss terms (floats)."""


class DivergedError(ValueError):
    """Training or inference produced a non-finite value (the message says where and which rates to lower)."""


@dataclass(frozen=True)
class Schedule:
    """How long and how TiDHy trains.

    Attributes:
        num_steps: updates in total (a resumed run continues up to this).
        batch_size: windows per update (at most the number of windows).
        checkpoint_every: updates between checkpoints (the last step is always saved).
        max_checkpoints: keep only this many newest steps (0: all).
        seed: parameter initialisation and batch order.
    """

    num_steps: int = 1000
    batch_size: int = 64
    checkpoint_every: int = 100
    max_checkpoints: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self, positive_ints=("num_steps", "batch_size", "checkpoint_every"))
        if not isinstance(self.max_checkpoints, int) or self.max_checkpoints < 0:
            raise ValueError(f"Schedule.max_checkpoints must be an integer >= 0, got {self.max_checkpoints!r}")


@dataclass(frozen=True)
class TrainResult:
    """``start_step -> final_step`` in ``seconds``; the total loss and mean inference iterations of each update."""

    start_step: int
    final_step: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    iterations: list[float] = field(default_factory=list)

    @property
    def steps_per_s(self) -> float:
        done = self.final_step - self.start_step
        return done / self.seconds if done and self.seconds > 0 else 0.0


def learning_rates(saved: SavedTiDHy) -> str:
    """``"inference lr_r 0.1, lr_r2 0.05; decoder 0.01, dynamics 0.01, hypernet 0.001"``, for error messages."""
    inference, learning = saved.inference, saved.learning
    return (f"inference lr_r {inference.lr_r}, lr_r2 {inference.lr_r2}; decoder {learning.lr_decoder}, dynamics "
            f"{learning.lr_dynamics}, hypernet {learning.lr_hypernet}")


def batch_indices(n_windows: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """The windows of update ``step``: ``min(batch_size, n_windows)`` distinct indices, from ``(seed, step)``."""
    return np.random.default_rng((seed, step)).choice(n_windows, min(batch_size, n_windows), replace=False)


def resume(run_dir: Path, model: TiDHy, saved: SavedTiDHy, scaler: Scaler) -> tuple[int, nnx.Optimizer]:
    """``(step, optimizer)`` restored from the run's latest step into ``model`` (which it overwrites).

    Raises:
        CheckpointError: the saved configs differ from ``saved`` (named), the data's scaler from the saved one
            (the training data changed), or the step cannot be resumed.
    """
    step = latest_step(run_dir)
    restored, saved_scaler, on_disk, _ = restore_tidhy(run_dir, step)  # validated against its own config
    for part in ("model", "inference", "learning", "input"):
        if getattr(on_disk, part) != getattr(saved, part):
            raise CheckpointError(f"cannot resume {run_dir} from step {step}: its {part} settings "
                                  f"{getattr(on_disk, part)} differ from this run's {getattr(saved, part)}; "
                                  "train into a new folder, or use the run's own settings")
    if not (np.allclose(saved_scaler.mean, scaler.mean) and np.allclose(saved_scaler.std, scaler.std)):
        raise CheckpointError(f"cannot resume {run_dir} from step {step}: the training data's channel means and "
                              "stds differ from the saved ones (the data changed); train into a new folder")
    nnx.update(model, nnx.state(restored, nnx.Param))
    opt = new_optimizer(model, saved.learning)
    restore_optimizer(run_dir, step, opt)
    return step, opt


def prune(run_dir: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest finalized steps (``keep = 0``: none)."""
    if keep:
        for step in finalized_steps(run_dir)[:-keep]:
            shutil.rmtree(run_dir / str(step), ignore_errors=True)


def train_tidhy(model: TiDHy, windows: np.ndarray, saved: SavedTiDHy, scaler: Scaler, schedule: Schedule,
                run_dir: Path | None = None, on_step: OnStep | None = None) -> TrainResult:
    """Train ``model`` in place on scaled ``windows [n, T, input_dim]``; checkpoint into ``run_dir`` (if given),
    resuming from its latest step.

    Raises:
        DivergedError: a non-finite loss (the step and the inference rates named).
        CheckpointError: a run folder whose saved settings differ from these.
    """
    start, opt = 0, new_optimizer(model, saved.learning)
    if run_dir is not None and latest_step(run_dir) is not None:
        start, opt = resume(Path(run_dir), model, saved, scaler)
    losses, iterations, started = [], [], time.perf_counter()
    for step in range(start, schedule.num_steps):
        batch = windows[batch_indices(len(windows), schedule.batch_size, schedule.seed, step)]
        terms, used = train_step(model, opt, jnp.asarray(batch), saved.inference, saved.learning)
        losses.append(float(terms["total"]))
        iterations.append(float(jnp.mean(used)))
        if not np.isfinite(losses[-1]):
            raise DivergedError(f"TiDHy training diverged at update {step} (loss {losses[-1]}); lower the learning "
                                f"rates: {learning_rates(saved)}")
        if on_step is not None:
            on_step(step, {name: float(value) for name, value in terms.items()})
        done = step + 1
        if run_dir is not None and (done % schedule.checkpoint_every == 0 or done == schedule.num_steps):
            save_tidhy(run_dir, done, model, scaler, saved, opt, {"loss": losses[-1]})
            prune(Path(run_dir), schedule.max_checkpoints)
    return TrainResult(start, max(start, schedule.num_steps), time.perf_counter() - started, losses, iterations)
