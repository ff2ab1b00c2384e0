"""The SLDS benchmark of TiDHy: generate the data, train on sliding windows, decode the discrete states.

Scores (all on the test split, which training never sees):

* ``r2_knn_acc`` / ``r_knn_acc``: k-NN (k = 3) accuracy of the 8-way joint discrete state of each time step from
  the inferred ``r2_t`` / ``r_t`` (a seeded 75/25 split of the test steps, as the reference notebooks do);
* ``pca_knn_acc``: the same from the observations reduced by PCA to ``r_dim`` components (the baseline);
* ``recon_r2``: R² of the reconstruction ``dec(r_t)`` against ``x_t`` over every test value;
* ``inference_iterations``: mean SGD iterations per time step of the test inference.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx
from sklearn.decomposition import PCA
from sklearn.neighbors import KNeighborsClassifier

from birdassets.field_checks import check_fields
from birdassets.checkpoints.refs import CheckpointError
from birdassets.models.tidhy.saved_model import SavedTiDHy, Scaler, restore_tidhy
from birdassets.models.tidhy.inference import InferenceConfig, infer_batch
from birdassets.models.tidhy.network import TiDHy, TiDHyConfig
from birdassets.models.tidhy.mstep import LearningConfig
from birdassets.models.tidhy.slds_data import SLDSConfig, SLDSData, generate
from birdassets.models.tidhy.fitting import DivergedError, OnStep, Schedule, TrainResult, train_tidhy

KNN_NEIGHBOURS = 3
KNN_TRAIN_FRACTION = 0.75
SCORE_NAMES = ("r2_knn_acc", "r_knn_acc", "pca_knn_acc", "recon_r2")
"""The benchmark's scores, in the order the table prints them."""


@dataclass(frozen=True)
class BenchmarkConfig:
    """One benchmark run: data, model, inference, learning, and the training schedule.

    The defaults are the full run: the reference's model and windows (200 steps, stride 20) on a tenth of its
    data (20 000 training steps), 600 updates of 32 windows (about 4 minutes on 2 CPU cores); the reference
    trains 1000 full-batch epochs on 200 000 steps, hours on a GPU.

    Attributes:
        sequence_length: time steps per training window (and per test inference window).
        stride: steps between the starts of consecutive training windows.
        batch_size: windows per training step (drawn at random, seeded).
        train_steps: training steps.
        checkpoint_every: training steps between checkpoints (when the run has a folder).
    """

    slds: SLDSConfig = field(default_factory=SLDSConfig)
    model: TiDHyConfig = field(default_factory=lambda: TiDHyConfig(input_dim=20))
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    learning: LearningConfig = field(default_factory=LearningConfig)
    sequence_length: int = 200
    stride: int = 20
    batch_size: int = 32
    train_steps: int = 600
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        check_fields(self, positive_ints=("sequence_length", "stride", "batch_size", "train_steps", "checkpoint_every"))
        if self.model.input_dim != self.slds.project_dim:
            raise ValueError(f"BenchmarkConfig: the model's input_dim ({self.model.input_dim}) must be the "
                             f"data's project_dim ({self.slds.project_dim})")

    def to_dict(self) -> dict:
        """JSON-safe nested dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BenchmarkConfig:
        """Inverse of :meth:`to_dict` (a ValueError/TypeError names an unknown or bad field)."""
        parts = {"slds": SLDSConfig, "model": TiDHyConfig, "inference": InferenceConfig, "learning": LearningConfig}
        return cls(**{name: parts[name](**value) if name in parts else value for name, value in data.items()})


SMALL = BenchmarkConfig(slds=SLDSConfig(train_steps=4_000, test_steps=2_000), sequence_length=100,
                        train_steps=150, checkpoint_every=50)
"""The CI-sized run (``--small``)."""


def sliding_windows(x: np.ndarray, length: int, stride: int) -> np.ndarray:
    """``x [steps, dim]`` -> ``[windows, length, dim]`` starting every ``stride`` steps (a view, no copy)."""
    if len(x) < length:
        raise ValueError(f"a split of {len(x)} steps is shorter than one {length}-step window")
    return np.lib.stride_tricks.sliding_window_view(x, length, axis=0).transpose(0, 2, 1)[::stride]


def knn_accuracy(features: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """Accuracy of a k-NN classifier fitted on a seeded 75 % of the rows and scored on the other 25 %."""
    order = np.random.default_rng(seed).permutation(len(labels))
    cut = int(KNN_TRAIN_FRACTION * len(labels))
    train, test = order[:cut], order[cut:]
    knn = KNeighborsClassifier(n_neighbors=KNN_NEIGHBOURS).fit(features[train], labels[train])
    return float(knn.score(features[test], labels[test]))


def saved_config(config: BenchmarkConfig, seed: int) -> SavedTiDHy:
    """What a benchmark checkpoint stores: the model, inference and learning configs, and the data it observes."""
    data = {"kind": "slds", "seed": seed, "benchmark": config.to_dict()}
    return SavedTiDHy(config.model, config.inference, config.learning, data)


def fit(model: TiDHy, train: SLDSData, config: BenchmarkConfig, seed: int, on_step: OnStep | None = None,
        run_dir: Path | None = None) -> TrainResult:
    """Train ``model`` in place on sliding windows of the training split (checkpoints in ``run_dir``, if given)."""
    windows = sliding_windows(train.x, config.sequence_length, config.stride)
    schedule = Schedule(num_steps=config.train_steps, batch_size=config.batch_size,
                        checkpoint_every=config.checkpoint_every, seed=seed)
    return train_tidhy(model, windows, saved_config(config, seed), Scaler.identity(config.model.input_dim),
                       schedule, run_dir, on_step)


def evaluate(model: TiDHy, test: SLDSData, config: BenchmarkConfig, seed: int) -> dict[str, float]:
    """The scores of :data:`SCORE_NAMES` and ``inference_iterations`` on whole test windows."""
    windows = sliding_windows(test.x, config.sequence_length, config.sequence_length)
    latents = infer_batch(model, jnp.asarray(windows), config.inference)
    steps = windows.shape[0] * windows.shape[1]
    labels, x = test.state[:steps], windows.reshape(steps, -1)
    r, r2 = np.asarray(latents.r).reshape(steps, -1), np.asarray(latents.r2).reshape(steps, -1)
    if not (np.isfinite(r).all() and np.isfinite(r2).all()):
        raise DivergedError(f"TiDHy inference diverged on the test split (lr_r {config.inference.lr_r}, "
                            f"lr_r2 {config.inference.lr_r2})")
    x_hat = np.asarray(model.decode(latents.r)).reshape(steps, -1)
    pca = PCA(n_components=min(config.model.r_dim, x.shape[1]), random_state=seed).fit_transform(x)
    return {"r2_knn_acc": knn_accuracy(r2, labels, seed), "r_knn_acc": knn_accuracy(r, labels, seed),
            "pca_knn_acc": knn_accuracy(pca, labels, seed),
            "recon_r2": float(1.0 - np.sum((x_hat - x) ** 2) / np.sum((x - x.mean(axis=0)) ** 2)),
            "inference_iterations": float(np.asarray(latents.iterations).mean())}


def evaluate_checkpoint(run_dir: Path, step: int | None = None) -> tuple[BenchmarkConfig, int, dict[str, float]]:
    """``(config, seed, scores)`` of a saved benchmark step on the test split its saved seed generates.

    Raises:
        CheckpointError: not a TiDHy checkpoint of the SLDS benchmark, or one that fails validation.
    """
    model, _, saved, step = restore_tidhy(run_dir, step)
    where = Path(run_dir) / str(step)
    if saved.input["kind"] != "slds":
        raise CheckpointError(f"checkpoint {where} is a TiDHy encoder of {saved.input['kind']} frames, not a "
                              "run of the SLDS benchmark")
    try:
        config, seed = BenchmarkConfig.from_dict(saved.input["benchmark"]), int(saved.input["seed"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {where}: unreadable SLDS benchmark settings ({error})") from None
    return config, seed, evaluate(model, generate(config.slds, seed)[1], config, seed)


def run_benchmark(config: BenchmarkConfig, seed: int, on_step: OnStep | None = None,
                  run_dir: Path | None = None) -> dict[str, float]:
    """Generate (seed), build (seed), train (resuming from ``run_dir``'s latest step) and evaluate; the scores
    plus ``train_seconds`` and ``steps_per_s`` of the updates this call made (0 when none was left to make)."""
    train, test = generate(config.slds, seed)
    model = TiDHy(config.model, rngs=nnx.Rngs(seed))
    result = fit(model, train, config, seed, on_step, run_dir)
    scores = evaluate(model, test, config, seed)
    return {**scores, "train_seconds": result.seconds, "steps_per_s": result.steps_per_s}
