"""One step per asset: the Dagster-free work of the whole pipeline.

Each step reads its inputs from disk through the :class:`~birdassets.layout.Layout` of a
:class:`~birdassets.settings.Settings`, publishes its outputs atomically, and returns a small report. The
Dagster assets (:mod:`birdassets.defs`) call a step and turn its report into metadata; the CLI, notebooks and
tests call the same steps without Dagster::

    settings = load_settings()
    ingest(settings, "demo-clear", run_id="notebook")      # raw_audio
    build_mel(settings, "demo-clear")                       # mel_dataset
    make_folds(settings, "demo-clear")                      # folds
    restore_encoder(settings, "demo-sup@200")               # encoder
    embed(settings, "demo-clear", "demo-sup@200")           # embeddings
    fit_probes(settings, "demo-clear", "demo-sup@200")      # probe
    score(settings, "demo-clear", "demo-sup@200", "nb")     # scores
    record(settings, "demo-clear", "demo-sup@200")          # metrics_db

A task's manifest is read once per step (:class:`TaskData`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from birdassets import artifacts
from birdassets.atomic import write_json
from birdassets.datasets.mel_tfds import MelDataset, build_mel_dataset, dataset_dir
from birdassets.detection import DetectionConfig, DetectionResult, detect_recordings, make_scorer
from birdassets.embeddings import EmbeddingSet, collapse_stats, compute_embeddings, read_embeddings, write_embeddings
from birdassets.folds import FoldConfig, assign_folds, fold_table, folds_hash
from birdassets.frontends.presets import MelPreset
from birdassets.layout import safe_name
from birdassets.lineage import Lineage, code_version
from birdassets.models.base import EncoderRef, InputSpec, LoadedEncoder
from birdassets.models.registry import EMBED_BATCH, SUPERVISED_FAMILY, load_encoder, resolve_encoder
from birdassets.plots import figures as plots
from birdassets.plots.render import save_pngs
from birdassets.probes import PROBES, fit_probe
from birdassets.scoring import chance_scores, score_fold_predictions, score_probes
from birdassets.settings import DatasetConfig, Settings
from birdassets.sources.ingest import IngestResult, write_quarantine
from birdassets.sources.manifest import Manifest
from birdassets.sources.registry import ingest_source
from birdassets.train.loop import HISTORY, read_history
from birdassets.store import SUPERVISED_MODEL_FIELDS, CheckpointRow, DatasetRow, EvaluationRecord, MetricsStore, RunRow
from birdassets.supervised.config import SUPERVISED_PROBE, AugmentConfig, ModelConfig, SupervisedConfig, model_key

if TYPE_CHECKING:  # Keras and the training code load only when a model is trained
    from birdassets.supervised.cross_validation import FoldsResult


@dataclass(frozen=True)
class TaskData:
    """What every step of one task reads: its configuration, frontend preset and manifest (read once)."""

    settings: Settings
    task: str
    dataset: DatasetConfig
    preset: MelPreset
    manifest: Manifest

    @classmethod
    def load(cls, settings: Settings, task: str) -> TaskData:
        manifest = Manifest.read(settings.layout.manifest_path(task))
        return cls(settings, task, settings.dataset(task), settings.task_preset(task), manifest)

    @property
    def mel(self) -> MelDataset:
        """The mel dataset of this manifest and preset (built by :func:`build_mel`)."""
        return MelDataset(dataset_dir(self.settings.layout.mel_root(self.task), self.manifest, self.preset))

    def lineage_fields(self) -> dict:
        """The :class:`Lineage` fields every evaluation of this task shares: data, frontend, folds and code."""
        return {"task": self.task, "manifest_hash": self.manifest.content_hash(), "preset_name": self.preset.name,
                "preset_hash": self.preset.content_hash(),
                "folds_hash": folds_hash(pd.read_parquet(self.settings.layout.folds_path(self.task))),
                "code_version": code_version()}

    def annotation_lineage(self) -> dict:
        """``annotations_hash`` and ``annotation_tables`` (their count) when the labels come from annotation files
        (Raven selection tables), else nothing."""
        digest = self.manifest.annotations_hash()
        return {} if digest is None else {"annotations_hash": digest, "annotation_tables": len(self.manifest.annotations)}

    def dataset_row(self, manifest_hash: str) -> DatasetRow:
        """The task's DuckDB ``datasets`` row, with the manifest hash its scores were computed on."""
        return DatasetRow(self.task, self.dataset.source, str(self.dataset.root), manifest_hash,
                          len(self.manifest.table), len(self.manifest.classes))


PLOTS = "plots"
"""Folder of an evaluation's PNG figures (``scores/<task>/<checkpoint>/plots/``)."""


def open_store(settings: Settings) -> MetricsStore:
    """The metrics database of ``settings`` (each write creates the file and schema when missing)."""
    return MetricsStore(settings.layout.db_path)


# ------------------------------------------------------------------------------------- task data


@dataclass(frozen=True)
class IngestReport:
    """``raw_audio``: the manifest and quarantine of one task."""

    task: str
    dataset: DatasetConfig
    result: IngestResult
    manifest_path: Path
    quarantine_path: Path
    task_fingerprint: str
    seconds: float


def ingest(settings: Settings, task: str, run_id: str) -> IngestReport:
    """Read the task's source, publish its manifest and quarantine (parquet + DuckDB ``quarantine``)."""
    started = time.perf_counter()
    layout = settings.layout
    result = ingest_source(settings.dataset(task), settings.task_preset(task))
    manifest_path = result.manifest.write(layout.manifest_path(task))
    quarantine_path = write_quarantine(result.quarantine, layout.quarantine_path(task))
    open_store(settings).replace_quarantine(task, result.quarantine, run_id)
    return IngestReport(task, settings.dataset(task), result, manifest_path, quarantine_path,
                        settings.task_fingerprint(task), time.perf_counter() - started)


@dataclass(frozen=True)
class MelReport:
    """``mel_dataset``: the TFDS mel windows of one task."""

    dataset: MelDataset
    preset: MelPreset
    stats: dict


def build_mel(settings: Settings, task: str) -> MelReport:
    """Write (or find) the task's TFDS mel dataset for its current manifest and preset."""
    data = TaskData.load(settings, task)
    dataset = build_mel_dataset(data.manifest, data.preset, settings.layout.mel_root(task))
    return MelReport(dataset, data.preset, dataset.stats())


def ensure_mel_dataset(settings: Settings, task: str) -> MelDataset:
    """The task's mel dataset, reading its source and building it first when missing (idempotent; training
    uses it for data sets that are not benchmark tasks)."""
    path = settings.layout.manifest_path(task)
    if not path.exists():
        ingest_source(settings.dataset(task), settings.task_preset(task)).manifest.write(path)
    return build_mel(settings, task).dataset


@dataclass(frozen=True)
class FoldsReport:
    """``folds``: the validation fold of every training window."""

    path: Path
    table: pd.DataFrame
    n_folds: int
    seed: int
    folds_hash: str


def file_groups(manifest_table: pd.DataFrame) -> dict[str, str]:
    """``recording_id -> group``: the first recording id of the row's audio file, so the segments of one file
    (annotated windows, labelled segments) never straddle folds; a whole-file row is its own group."""
    first = manifest_table.groupby("path")["recording_id"].transform("min")
    return dict(zip(manifest_table["recording_id"], first, strict=True))


def make_folds(settings: Settings, task: str) -> FoldsReport:
    """Grouped, multi-label-stratified k-fold assignment of the task's training windows."""
    data = TaskData.load(settings, task)
    windows = data.mel.windows()
    train = windows[windows["split"] == "train"].reset_index(drop=True)
    table = data.manifest.table
    primary_of = dict(zip(table["recording_id"], table["primary_label"], strict=True))
    index = {name: i for i, name in enumerate(data.manifest.classes)}
    primary = np.array([index.get(primary_of[r], -1) for r in train["recording_id"]])
    config = FoldConfig(n_folds=settings.n_folds, seed=settings.fold_seed)
    groups = train["recording_id"].map(file_groups(table))  # the windows of one audio file stay in one fold
    fold_of = assign_folds(groups.to_numpy(), data.manifest.label_matrix(train), primary, config)
    folds = fold_table(train["window_id"], groups, fold_of)
    path = artifacts.write_parquet(settings.layout.folds_path(task), folds)
    return FoldsReport(path, folds, settings.n_folds, settings.fold_seed, folds_hash(folds))


# -------------------------------------------------------------------------------------- encoders


@dataclass(frozen=True)
class EncoderReport:
    """``encoder``: the checkpoint's encoder, validated and restored."""

    loaded: LoadedEncoder
    record_path: Path
    figures: dict[str, bytes] = dataclasses.field(default_factory=dict)


def restore_encoder(settings: Settings, checkpoint: str) -> EncoderReport:
    """Validate (from metadata) and restore the checkpoint's encoder; record what was restored (a JSON file, and
    its row of the DuckDB ``checkpoints`` table, so a checkpoint no task scores yet is still listed)."""
    loaded = load_encoder(settings.checkpoint_roots, checkpoint, models_root=settings.layout.models_root)
    ref = loaded.ref
    record = {"checkpoint": checkpoint, "path": str(ref.path), "step": ref.step, "family": ref.family,
              "dim": loaded.encoder.dim, **loaded.details}
    open_store(settings).upsert_checkpoint(checkpoint, ref.run, ref.step, ref.path, ref.family)
    figures = plots.run_figures(read_history(Path(ref.path).parent / HISTORY), checkpoint, ref.step)
    return EncoderReport(loaded, write_json(settings.layout.encoder_path(checkpoint), record), figures)


@dataclass(frozen=True)
class EmbeddingsReport:
    """``embeddings``: one vector per mel window of the task."""

    directory: Path
    family: str
    stats: dict
    health: dict


def embed(settings: Settings, task: str, checkpoint: str) -> EmbeddingsReport | None:
    """Embed every window of the task with the checkpoint's encoder (batched), publish the arrays; ``None`` when
    the encoder reads mel windows of another frontend preset than the task's (the ResNet18 detector trained on
    ``orcahello`` windows and a BirdCLEF task): that pair has nothing to embed."""
    data = TaskData.load(settings, task)
    loaded = load_encoder(settings.checkpoint_roots, checkpoint, models_root=settings.layout.models_root)
    if reads_other_preset(loaded, data.preset):
        return None
    embedded, stats = compute_embeddings(loaded.encoder, data.mel, batch_size=EMBED_BATCH)
    directory = write_embeddings(embedded, settings.layout.embeddings_dir(task, checkpoint), stats)
    return EmbeddingsReport(directory, loaded.ref.family, stats, collapse_stats(embedded.embeddings))


def reads_other_preset(loaded: LoadedEncoder, preset: MelPreset) -> bool:
    """Whether a mel encoder was trained on another frontend preset than ``preset`` (waveform encoders read any
    task)."""
    spec = loaded.encoder.input_spec
    return isinstance(spec, InputSpec) and spec.preset != preset.name


# ---------------------------------------------------------------------------------- probes, scores


@dataclass(frozen=True)
class ProbesReport:
    """``probe``: every configured probe trained on all folds at once."""

    directory: Path
    summary: pd.DataFrame


def fit_probes(settings: Settings, task: str, checkpoint: str) -> ProbesReport:
    """Fit every probe in ``settings.probes`` on the task x checkpoint's frozen embeddings, all folds in one
    jitted call per probe; publish out-of-fold and test predictions and the parameters."""
    layout = settings.layout
    embedded = read_embeddings(layout.embeddings_dir(task, checkpoint))
    x_train, y_train, index_train = embedded.split("train")
    x_test, y_test, _ = embedded.split("test")
    fold_of = artifacts.fold_assignment(layout.folds_path(task), index_train["window_id"])
    results, rows = {}, []
    for name in settings.probes:
        started = time.perf_counter()
        result = fit_probe(PROBES[name], np.asarray(x_train), y_train, fold_of, np.asarray(x_test), settings.n_folds)
        results[name] = result
        loss = result.train_loss
        rows.append({"probe": name, "seconds": time.perf_counter() - started,
                     "final_train_loss": float(loss[:, -1].mean()) if loss.size else float("nan")})
    summary = pd.DataFrame(rows)
    predictions = {"fold_of": fold_of, "y_train": y_train, "y_test": y_test}
    directory = layout.probes_dir(task, checkpoint)
    artifacts.write_probe_results(directory, results, predictions, summary, embedded.classes)
    return ProbesReport(directory, summary)


@dataclass(frozen=True)
class ScoresReport:
    """``scores``: cmAP, AUC, padded cmAP and top-1 per fold, split and probe, with their lineage."""

    directory: Path
    scores: pd.DataFrame
    class_scores: pd.DataFrame
    lineage: Lineage
    figures: dict[str, bytes] = dataclasses.field(default_factory=dict)


def score(settings: Settings, task: str, checkpoint: str, run_id: str) -> ScoresReport:
    """Score every probe's predictions and publish the tables with where they came from."""
    layout = settings.layout
    scores, class_scores = score_probes(layout.probes_dir(task, checkpoint), settings.probes)
    ref = resolve_encoder(settings.checkpoint_roots, checkpoint, settings.layout.models_root)
    lineage = evaluation_lineage(TaskData.load(settings, task), ref, run_id)
    directory = artifacts.write_scores(layout.scores_dir(task, checkpoint), scores, class_scores, lineage)
    figures = plots.evaluation_figures(layout.probes_dir(task, checkpoint), scores, class_scores, f"{task} x {checkpoint}")
    save_pngs(directory / PLOTS, figures)
    return ScoresReport(directory, scores, class_scores, lineage, figures)


def evaluation_lineage(data: TaskData, ref: EncoderRef, run_id: str) -> Lineage:
    """Where a task x checkpoint's scores came from: data, frontend, folds, checkpoint, code and run."""
    settings = data.settings
    return Lineage(
        **data.lineage_fields(),
        checkpoint=ref.key,
        step=ref.step,
        checkpoint_path=str(ref.path),
        encoder_family=ref.family,
        run_id=run_id,
        extra={
            "mel_dataset": str(data.mel.builder_dir),
            "fold_seed": settings.fold_seed,
            "n_folds": settings.n_folds,
            "probes": {name: dataclasses.asdict(PROBES[name]) for name in settings.probes},
            **data.annotation_lineage(),
        },
    )


# ------------------------------------------------------------------------------------------ DuckDB


@dataclass(frozen=True)
class RecordReport:
    """``metrics_db``: the evaluation as recorded in DuckDB, and its leaderboard rows."""

    db_path: Path
    score_rows: int
    class_score_rows: int
    run_id: str
    leaderboard: pd.DataFrame
    figures: dict[str, bytes] = dataclasses.field(default_factory=dict)


def record(settings: Settings, task: str, checkpoint: str) -> RecordReport:
    """Record the task x checkpoint's scores, per-class scores, lineage, data set, checkpoint and run in DuckDB,
    in one transaction (replacing that pair's previous rows)."""
    scores, class_scores, lineage = artifacts.read_scores(settings.layout.scores_dir(task, checkpoint))
    data = TaskData.load(settings, task)
    run = checkpoint if lineage.step is None else checkpoint.rpartition("@")[0]  # pretrained: the key is the run
    store = open_store(settings)
    written = store.record_evaluation(EvaluationRecord(
        lineage=lineage, scores=scores, class_scores=class_scores,
        dataset=data.dataset_row(lineage.manifest_hash),
        checkpoint=CheckpointRow(checkpoint, run, lineage.step, lineage.checkpoint_path, lineage.encoder_family),
        run=RunRow(lineage.run_id, "benchmark", f"{task} x {checkpoint}"),
    ))
    board = leaderboard(store, task, checkpoint)
    figures = task_figures(store, task, checkpoint, run, lineage.step)
    save_pngs(settings.layout.scores_dir(task, checkpoint) / PLOTS, figures)
    return RecordReport(settings.layout.db_path, written, len(class_scores), lineage.run_id, board, figures)


def task_figures(store: MetricsStore, task: str, checkpoint: str, run: str, step: int | None) -> dict[str, bytes]:
    """The task's validation cmAP leaderboard and, for a checkpoint with steps, its ``run``'s score against step."""
    split, metric = plots.HEADLINE
    board = store.query("select checkpoint, probe, mean, std from leaderboard where task = ? and split = ? and "
                        "metric = ? and mean is not null", [task, split, metric])
    by_step = store.query("select probe, step, mean from score_by_step where task = ? and split = ? and metric = ? "
                          "and run = ? and step is not null and mean is not null",
                          [task, split, metric, run])
    return plots.leaderboard_figures(board, by_step, task, checkpoint, run, step)


def leaderboard(store: MetricsStore, task: str, checkpoint: str) -> pd.DataFrame:
    """The task x checkpoint's leaderboard rows (mean and std over folds)."""
    return store.query(
        "select probe, split, metric, mean, std, n_folds from leaderboard "
        "where task = ? and checkpoint = ? order by split, probe, metric",
        [task, checkpoint],
    )


def embeddings_of(settings: Settings, task: str, checkpoint: str) -> EmbeddingSet:
    """The published embeddings of a task x checkpoint."""
    return read_embeddings(settings.layout.embeddings_dir(task, checkpoint))


# --------------------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class DetectionRequest:
    """What to detect in a task: the scorer (encoder, optional ``<task>:<probe>``, target classes) and the
    OrcaHello decision rule."""

    encoder: str
    targets: tuple[str, ...]
    probe: str | None
    rule: DetectionConfig


@dataclass(frozen=True)
class DetectionReport:
    """``detections``: per-window confidences and per-recording decisions, exported and in DuckDB."""

    scorer: str
    result: DetectionResult
    json_path: Path
    csv_path: Path
    rows: int
    seconds: float

    @property
    def figures(self) -> dict[str, bytes]:
        """Confidence over time of the most confident recordings (rendered on each access)."""
        return plots.detection_figures(self.result)


def detect(settings: Settings, task: str, request: DetectionRequest, run_id: str,
           paths: list[Path] | None = None) -> DetectionReport:
    """Slide the scorer over every recording of the task (or over ``paths``, recordings filed under ``task``);
    export JSON + CSV and replace the task x scorer rows of DuckDB ``detections`` / ``detection_files``."""
    scorer = make_scorer(settings, request.encoder, request.targets, request.probe)
    if paths is None:
        paths = TaskData.load(settings, task).manifest.table["path"].drop_duplicates().tolist()
    started = time.perf_counter()
    result = detect_recordings(paths, scorer, request.rule)
    seconds = time.perf_counter() - started
    out, name = settings.layout.detections_dir(task), safe_name(scorer.name)  # "birdnet-v2.4:...": no with_suffix
    json_path, csv_path = result.write(out / f"{name}.json"), result.write(out / f"{name}.csv")
    rows = open_store(settings).replace_detections(task, result, run_id)
    return DetectionReport(scorer.name, result, json_path, csv_path, rows, seconds)


# -------------------------------------------------------------------------------------- supervised


@dataclass(frozen=True)
class SupervisedReport:
    """``supervised_model``: a model family trained on every fold of a task, its predictions scored.

    ``history``: one row per fold and epoch (train loss, validation BCE and class-wise AUC, seconds);
    ``scores``/``class_scores``: as :func:`score` makes them, probe ``"supervised"`` (+ ``"chance"``);
    ``oof``: one row per validation window (``window_id``, ``fold``, ``y_<class>`` 0/1, ``p_<class>``);
    ``seconds``: wall time of the step.
    """

    task: str
    model: str
    key: str
    directory: Path
    history: pd.DataFrame
    scores: pd.DataFrame
    class_scores: pd.DataFrame
    lineage: Lineage
    oof: pd.DataFrame
    seconds: float

    @property
    def figures(self) -> dict[str, bytes]:
        """Each fold's training loss and validation AUC against epoch (rendered on each access)."""
        return plots.supervised_figures(self.history, f"{self.key}: learning curves")


def train_supervised(settings: Settings, task: str, model_config: ModelConfig, train_config: SupervisedConfig,
                     augment: AugmentConfig, run_id: str, *, oof_out: Path | None = None,
                     log: Callable[[str], None] = print) -> SupervisedReport:
    """Train ``model_config``'s family on every fold of the task, publish the model folder
    (:meth:`~birdassets.layout.Layout.models_dir`) and its scores (``scores/<task>/<key>/``); with ``oof_out``,
    also the out-of-fold predictions as parquet. ``log`` gets one line per fold and epoch."""
    from birdassets.supervised.model_folder import write_model_folder
    from birdassets.supervised.cross_validation import train_folds

    started = time.perf_counter()
    data, model = TaskData.load(settings, task), model_config.family
    windows = data.mel.windows()
    train_ids = windows.loc[windows["split"] == "train", "window_id"].reset_index(drop=True)
    fold_of = artifacts.fold_assignment(settings.layout.folds_path(task), train_ids)
    result = train_folds(data.mel, fold_of, model_config, train_config, augment, settings.checkpoint_roots, log)
    directory = settings.layout.models_dir(task, model)
    lineage = supervised_lineage(data, (model_config, train_config, augment), result, directory, run_id)
    write_model_folder(directory, result, model_record(data, lineage))
    scores, class_scores = score_supervised(result)
    artifacts.write_scores(settings.layout.scores_dir(task, lineage.checkpoint), scores, class_scores, lineage)
    oof = oof_frame(result)
    if oof_out is not None:
        artifacts.write_parquet(Path(oof_out), oof)
    return SupervisedReport(task, model, lineage.checkpoint, directory, result.history, scores, class_scores,
                            lineage, oof, time.perf_counter() - started)


def score_supervised(result: FoldsResult) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every fold's validation and test scores of the model (probe ``"supervised"``), the chance rows first."""
    chance = chance_scores(result.fold_of, result.y_train, result.y_test)
    scores, class_scores = score_fold_predictions(SUPERVISED_PROBE, result.classes, result.fold_of, result.y_train,
                                                  result.valid_scores, result.y_test, result.test_scores)
    return pd.concat([chance, scores], ignore_index=True), class_scores


def oof_frame(result: FoldsResult) -> pd.DataFrame:
    """One row per validation window: ``window_id``, ``fold``, then ``y_<class>`` (int 0/1) and ``p_<class>``
    (float probability) per class, in the task's class order."""
    truth = {f"y_{name}": result.y_train[:, i].astype(np.int64) for i, name in enumerate(result.classes)}
    scores = {f"p_{name}": result.valid_scores[:, i].astype(np.float64) for i, name in enumerate(result.classes)}
    return pd.DataFrame({"window_id": np.asarray(result.train_window_ids, dtype=str),
                         "fold": np.asarray(result.fold_of, dtype=np.int64), **truth, **scores})


def supervised_lineage(data: TaskData, configs: tuple[ModelConfig, SupervisedConfig, AugmentConfig],
                       result: FoldsResult, directory: Path, run_id: str) -> Lineage:
    """Where a supervised model's scores came from: data, frontend, folds, the three configs (and their hashes),
    loss, precision, epochs, seed, code and run."""
    settings, (model_config, train_config, augment) = data.settings, configs
    return Lineage(
        **data.lineage_fields(), checkpoint=model_key(model_config.family, data.task), step=None,
        checkpoint_path=str(directory), encoder_family=SUPERVISED_FAMILY, run_id=run_id,
        extra={
            "model_family": model_config.family, "model_config": dataclasses.asdict(model_config),
            "model_config_hash": model_config.content_hash(), "train_config": dataclasses.asdict(train_config),
            "train_config_hash": train_config.content_hash(), "augment": dataclasses.asdict(augment),
            "augment_hash": augment.content_hash(), "augmented": augment.active, "loss": train_config.loss,
            "precision": result.precision, "epochs": train_config.epochs, "seed": train_config.seed,
            "debug": train_config.debug, "n_params": int(result.n_params), "train_seconds": float(result.seconds),
            "mel_dataset": str(data.mel.builder_dir), "fold_seed": settings.fold_seed, "n_folds": result.n_folds,
        },
    )


def model_record(data: TaskData, lineage: Lineage) -> dict:
    """The ``model.json`` of a model folder before the training facts are added (key, task, model, preset and
    the window it cuts, data hashes, the three configs and their hashes, seed)."""
    extra = lineage.extra
    configs = ("model_config", "model_config_hash", "train_config", "train_config_hash", "augment", "augment_hash",
               "seed", "loss", "epochs", "debug")
    return {"key": lineage.checkpoint, "task": data.task, "model": extra["model_family"], "preset": data.preset.name,
            "preset_hash": lineage.preset_hash, "sample_rate": data.preset.sample_rate, "clip_s": data.preset.clip_s,
            "folds_hash": lineage.folds_hash, "manifest_hash": lineage.manifest_hash, "run_id": lineage.run_id,
            **{name: extra[name] for name in configs}}


def record_supervised(settings: Settings, task: str, model: str, run_id: str) -> RecordReport:
    """Record the trained model's scores, lineage, data set, model row and learning curves in DuckDB, in one
    transaction (replacing that task x model's previous rows). The rows carry the training run (the lineage's);
    ``run_id``, the recording run, is named in its ``runs`` row's note."""
    from birdassets.supervised.model_folder import read_history

    key = model_key(model, task)
    scores, class_scores, lineage = artifacts.read_scores(settings.layout.scores_dir(task, key))
    directory = settings.layout.models_dir(task, model)
    data, history = TaskData.load(settings, task), read_history(directory)  # FileNotFoundError: not trained
    store = open_store(settings)
    written = store.record_supervised(EvaluationRecord(
        lineage=lineage, scores=scores, class_scores=class_scores,
        dataset=data.dataset_row(lineage.manifest_hash),
        checkpoint=CheckpointRow(key, key, None, lineage.checkpoint_path, SUPERVISED_FAMILY),
        run=RunRow(lineage.run_id, "supervised", f"{task} x {model}, recorded by {run_id}"),
    ), {name: lineage.extra[name] for name in SUPERVISED_MODEL_FIELDS}, history)  # the lineage holds the row
    board = leaderboard(store, task, key)
    return RecordReport(settings.layout.db_path, written, len(class_scores), lineage.run_id, board)


# ------------------------------------------------------------------------------------- TiDHy SLDS benchmark


@dataclass(frozen=True)
class SLDSReport:
    """One SLDS benchmark run: its checkpoint key, scores (``SCORE_NAMES`` plus ``inference_iterations``,
    ``train_seconds``, ``steps_per_s``) and the database it was recorded in."""

    checkpoint: str
    scores: dict
    db_path: Path
    run_id: str


def slds_benchmark(settings: Settings, seed: int, small: bool, run_id: str, on_step=None,
                   config=None) -> SLDSReport:
    """Generate the SLDS data of ``seed``, train TiDHy on it into ``<first checkpoint root>/tidhy-slds[-small]-
    seed<seed>`` (resuming there; every ``checkpoint_every`` steps is a checkpoint the sensor picks up), decode
    the states with the last step, record the scores (task ``slds``) with their lineage in DuckDB in one
    transaction (a re-run replaces that step's rows). ``config`` (a
    :class:`~birdassets.models.tidhy.benchmark.BenchmarkConfig`) replaces the full or small one."""
    from birdassets.models.tidhy import benchmark
    from birdassets.models.tidhy.saved_model import FAMILY_NAME
    from birdassets.models.tidhy.slds_scores import run_name

    config = config or (benchmark.SMALL if small else benchmark.BenchmarkConfig())
    run = run_name(seed, small)
    run_dir = settings.checkpoint_roots[0] / run
    scores = benchmark.run_benchmark(config, seed, on_step, run_dir)
    step = config.train_steps
    ref = EncoderRef(f"{run}@{step}", FAMILY_NAME, run, step, run_dir / str(step))
    return record_slds(settings, config, seed, scores, run_id, ref)


def record_slds(settings: Settings, config, seed: int, scores: dict, run_id: str, ref: EncoderRef) -> SLDSReport:
    """Record one SLDS evaluation of the checkpoint ``ref``."""
    from birdassets.models.tidhy.slds_scores import slds_record

    record = slds_record(config, seed, scores, run_id, ref)
    open_store(settings).record_evaluation(record)
    return SLDSReport(ref.key, scores, settings.layout.db_path, run_id)


def score_slds_checkpoint(settings: Settings, checkpoint: str, run_id: str) -> SLDSReport | None:
    """Score a checkpoint of the SLDS benchmark on the test data of its saved seed and record it (task ``slds``);
    ``None`` for any other checkpoint (another family, or TiDHy trained on audio)."""
    from birdassets.checkpoints.discovery import AUDIO, observed_data
    from birdassets.checkpoints.refs import CheckpointRef
    from birdassets.models.tidhy.benchmark import evaluate_checkpoint
    from birdassets.models.tidhy.saved_model import FAMILY_NAME

    ref = resolve_encoder(settings.checkpoint_roots, checkpoint, settings.layout.models_root)
    if ref.family != FAMILY_NAME or observed_data(CheckpointRef(ref.run, ref.step, ref.path.parent)) == AUDIO:
        return None  # the checkpoint sensor routes by the same test
    config, seed, scores = evaluate_checkpoint(ref.path.parent, ref.step)
    return record_slds(settings, config, seed, scores, run_id, ref)


# ---------------------------------------------------------------------------------- TiDHy as an encoder


def training_function(config) -> Callable:
    """The trainer of a :class:`~birdassets.train.config.TrainConfig`'s model (not TiDHy, which trains on pooled
    frames: :func:`train_tidhy_encoder`): :func:`~birdassets.train.detector_loop.train_detector` for ``resnet18``,
    else the ViT's :func:`~birdassets.train.loop.train`; both ``(config, dataset, run_dir, *, progress, log)``."""
    from birdassets.train.config import RESNET

    if config.model == RESNET:
        from birdassets.train.detector_loop import train_detector

        return train_detector
    from birdassets.train.loop import train

    return train


def tidhy_run_name(task: str) -> str:
    """``tidhy-<task>``: the default run folder of a TiDHy encoder trained on ``task``."""
    return f"tidhy-{task}"


def tidhy_schedule(config):
    """The TiDHy :class:`~birdassets.models.tidhy.fitting.Schedule` of a
    :class:`~birdassets.train.config.TrainConfig` (its :data:`~birdassets.train.config.TIDHY_FIELDS`)."""
    from birdassets.models.tidhy.fitting import Schedule

    return Schedule(num_steps=config.num_steps, batch_size=config.batch_size, checkpoint_every=config.checkpoint_every,
                    max_checkpoints=config.max_checkpoints or 0, seed=config.seed)


def train_tidhy_encoder(settings: Settings, task: str, schedule, run_dir: Path, on_step=None, config=None):
    """Train (or resume) a TiDHy encoder on the ``train`` windows of ``task``'s mel dataset into ``run_dir``;
    ``config``: a :class:`~birdassets.models.tidhy.mel_encoder.MelEncoderConfig` (default: its defaults).
    Returns the :class:`~birdassets.models.tidhy.fitting.TrainResult`."""
    from birdassets.models.tidhy.mel_encoder import MelEncoderConfig, train_mel_encoder

    dataset = ensure_mel_dataset(settings, task)
    mel, _ = dataset.arrays("train")
    return train_mel_encoder(mel, dataset.input_spec(), task, config or MelEncoderConfig(), schedule, run_dir,
                             on_step)[1]


# ---------------------------------------------------------------------------------- export


@dataclass(frozen=True)
class ExportReport:
    """``birdassets export``: the folder written and its DuckDB ``exports`` row."""

    summary: Any
    key: str


def export_model(settings: Settings, key: str, out: Path, rule: DetectionConfig, licence: str, run_id: str,
                 probe: str | None = None) -> ExportReport:
    """Export the model ``key`` (a ResNet18 detector checkpoint; a ViT checkpoint with ``probe =
    "<task>:<probe>"``, the probe the benchmark trained on that task for it; a supervised model
    ``birdclef-<model>.<task>``) as a self-describing folder ``out``; record it in DuckDB ``exports``.

    Raises:
        CheckpointError: no such checkpoint, or one its family refuses.
        ValueError: a family that cannot be exported, a ViT without a probe, or an unknown probe.
        FileNotFoundError: the named probe or supervised model was never trained.
    """
    from birdassets.checkpoints.orbax_io import read_metadata
    from birdassets.export.from_checkpoint import export_checkpoint
    from birdassets.models.keras.keys import parse_model_key

    if parse_model_key(key) is not None:
        return export_supervised_model(settings, key, out, rule, licence, run_id)
    ref = resolve_encoder(settings.checkpoint_roots, key, settings.layout.models_root)
    metadata = read_metadata(ref.path.parent, ref.step)
    train_config = metadata.get("train_config", {})
    chosen = exported_probe(settings, key, probe) if probe is not None else None
    preset = settings.preset(checkpoint_preset(ref))
    lineage = export_lineage(settings, ref, train_config, preset)
    validation = {k: float(v) for k, v in metadata.get("metrics", {}).items() if k.startswith("val_")}
    metrics = checkpoint_metrics(settings, key)
    if chosen is not None:
        lineage["probe"] = {"task": chosen.task, "name": chosen.name}
        board = metrics[(metrics["task"] == chosen.task) & (metrics["probe"] == chosen.name)
                        & (metrics["split"] == "valid") & (metrics["metric"] == "cmAP")]
        validation = {f"{chosen.task} {chosen.name} cmAP (valid folds)": float(board["mean"].iloc[0])} if len(board) else {}
    summary = export_checkpoint(ref, out, preset=preset, rule=rule, lineage=lineage, validation=validation,
                                metrics=metrics, licence=licence, probe=chosen)
    return record_export(settings, key, out, summary, run_id)


def export_supervised_model(settings: Settings, key: str, out: Path, rule: DetectionConfig, licence: str,
                            run_id: str) -> ExportReport:
    """Export the supervised model ``key`` (``birdclef-<model>.<task>``): its fold models, its out-of-fold
    figures from DuckDB as the validation, the hashes of its data, folds and configs as the lineage."""
    from birdassets.export.from_checkpoint import export_model_folder
    from birdassets.models.keras.keys import parse_model_key
    from birdassets.supervised.model_folder import read_model_record

    model, task = parse_model_key(key)
    folder = settings.layout.models_dir(task, model)
    record = read_model_record(folder)
    preset = settings.preset(record["preset"])
    if preset.content_hash() != record["preset_hash"]:
        raise ValueError(f"{folder}: trained on preset {preset.name!r} as it was then; its parameters have "
                         "changed since (preset_hash differs), so an export would describe the wrong input")
    lineage = {name: record[name] for name in SUPERVISED_LINEAGE if name in record} | {"code_version": code_version()}
    metrics = checkpoint_metrics(settings, key)
    own = metrics[(metrics["task"] == task) & (metrics["probe"] == SUPERVISED_PROBE) & (metrics["split"] == "valid")]
    validation = {f"{task} {row.metric} (valid folds)": float(row.mean) for row in own.itertuples(index=False)}
    summary = export_model_folder(folder, out, preset=preset, rule=rule, lineage=lineage, validation=validation,
                                  metrics=metrics, licence=licence)
    return record_export(settings, key, out, summary, run_id)


SUPERVISED_LINEAGE = ("key", "task", "manifest_hash", "folds_hash", "preset", "preset_hash", "run_id",
                      "model_config", "model_config_hash", "train_config", "train_config_hash", "augment",
                      "augment_hash")
"""The facts of a supervised model's ``model.json`` that an export carries as its lineage."""


def record_export(settings: Settings, key: str, out: Path, summary: Any, run_id: str) -> ExportReport:
    """The DuckDB ``exports`` row of an export (folder, lineage hash, size, file digests, TFLite difference)."""
    row = {"checkpoint": key, "family": summary.config["family"], "lineage_hash": summary.config["lineage_hash"],
           "size_bytes": summary.size_bytes, "files": json.dumps(summary.files, sort_keys=True),
           "tflite_max_abs_diff": summary.tflite_max_abs_diff}
    open_store(settings).record_export(str(Path(out).resolve()), row, run_id)
    return ExportReport(summary, key)


def checkpoint_preset(ref: EncoderRef) -> str:
    """The frontend preset a ResNet18 or ViT checkpoint reads (from its config item)."""
    from birdassets.models.resnet.family import FAMILY_NAME as RESNET

    if ref.family == RESNET:
        from birdassets.models.resnet.family import read_config
    else:
        from birdassets.models.vit.family import read_config
    return read_config(ref.path.parent, ref.step).preset


def exported_probe(settings: Settings, key: str, probe: str):
    """The :class:`~birdassets.export.from_checkpoint.ProbeChoice` of ``"<task>:<probe>"`` for checkpoint ``key``."""
    from birdassets.detection.scorers import parse_probe
    from birdassets.export.from_checkpoint import ProbeChoice

    task, name = parse_probe(settings, probe)
    params, classes = artifacts.load_probe(settings.layout.probes_dir(task, key), name, f"{task} x {key}")
    return ProbeChoice(task, name, params, tuple(classes))


def export_lineage(settings: Settings, ref: EncoderRef, train_config: dict, preset: MelPreset) -> dict:
    """Where an exported checkpoint came from: its training task's manifest hash (when the task's manifest is
    on this machine), the preset's hash, the code version, the checkpoint and its training config."""
    task = train_config.get("task", "")
    manifest = settings.layout.manifest_path(task) if task else None
    manifest_hash = Manifest.read(manifest).content_hash() if manifest is not None and manifest.exists() else ""
    return {"task": task, "manifest_hash": manifest_hash, "preset_name": preset.name,
            "preset_hash": preset.content_hash(), "checkpoint": ref.key, "step": ref.step,
            "code_version": code_version(), "train_config": train_config}


def checkpoint_metrics(settings: Settings, key: str) -> pd.DataFrame:
    """The DuckDB leaderboard rows of ``key`` (empty when the database does not exist yet)."""
    from birdassets.store import query_readonly

    if not settings.layout.db_path.exists():
        return pd.DataFrame(columns=["task", "probe", "split", "metric", "mean", "std", "n_folds"])
    sql = ("select task, probe, split, metric, mean, coalesce(std, 0) as std, n_folds from leaderboard "
           "where checkpoint = ? order by task, probe, split, metric")
    return query_readonly(settings.layout.db_path, sql, [key])


# ---------------------------------------------------------------------------------- the demo's detector


@dataclass(frozen=True)
class DemoDetectionReport:
    """The demo detector on ``demo-orca``'s held-out recordings: its detections and their agreement with the
    generator's truth."""

    detections: DetectionReport
    truth: dict[str, int]
    confusion: Any


def detect_demo_recordings(settings: Settings, checkpoint: str, run_id: str) -> DemoDetectionReport:
    """Run the detector ``checkpoint`` (``--target call``, OrcaHello's rule) over the ``recordings/`` of
    ``demo-orca`` (never trained on), file its detections under that data set, compare with the truth."""
    from birdassets.detection.agreement import confusion
    from birdassets.settings import DEMO_ORCA
    from birdassets.sources.demo.orca_clips import RECORDINGS_DIR, read_recording_truth
    from birdassets.sources.folder import find_audio

    root = settings.dataset(DEMO_ORCA).root
    request = DetectionRequest(checkpoint, ("call",), None, DetectionConfig())
    report = detect(settings, DEMO_ORCA, request, run_id, find_audio(root / RECORDINGS_DIR)[0])
    truth = read_recording_truth(root)
    decided = {r.file: r.global_prediction for r in report.result.recordings}
    return DemoDetectionReport(report, truth, confusion(decided, truth))
