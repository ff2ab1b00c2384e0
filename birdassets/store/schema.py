"""DDL and views of the birdassets metrics database (DuckDB), as SQL strings.

Tables
------
``schema_version``  one row per schema version applied to the file (``version``, ``applied_at``).
``runs``            one row per pipeline run that wrote to the file (``run_id`` PK).
``checkpoints``     registered encoder checkpoints (``checkpoint`` PK, e.g. ``"demo-vit@200"``).
``datasets``        one row per task/dataset (``task`` PK) with its manifest hash and sizes.
``lineage``         one row per evaluated (task, checkpoint): every hash and version that produced
                    its scores, plus ``extra`` JSON (seeds, probe configs, ...).
``scores``          one row per (task, checkpoint, fold, split, probe, metric). ``value`` is NULL
                    where the metric was undefined (nothing could be scored, ``n_classes_scored``
                    = 0), so SQL aggregates skip it.
``class_scores``    one row per (task, checkpoint, fold, split, probe, class_name): ``support``
                    (positive rows), ``n_negatives`` (may be NULL), ``ap`` and ``auc`` (NULL where
                    undefined).
``quarantine``      (version 2) one row per (task, path): an audio file the task's source found
                    but could not use; ``reason`` is a code of
                    :data:`birdassets.sources.ingest.REASONS`, ``detail`` the message,
                    ``size_bytes``/``sha256`` NULL where the file could not be stat'ed/read,
                    ``found_at`` when it was first quarantined for this reason and content,
                    ``run_id`` the latest run that (re)confirmed it.
``detections``      (version 3) one row per (task, scorer, path, start_s): a sliding window's confidence
                    and ``local_prediction`` (confidence > threshold).
``detection_files`` (version 3) one row per (task, scorer, path): OrcaHello's ``global_prediction``
                    and ``global_confidence``, the window count and the decision rule (``config`` JSON).
``supervised_models`` (version 4) one row per supervised Keras model (task, checkpoint =
                    ``"birdclef-<family>.<task>"``): family, config hashes, loss, precision, epochs, seed,
                    debug, augmented, parameter count and training seconds. Its scores are ordinary
                    ``scores``/``class_scores`` rows with ``probe = 'supervised'``.
``supervised_epochs`` (version 4) one row per (task, checkpoint, fold, epoch): train loss, validation
                    BCE and class-wise AUC (NULL where undefined), seconds.
``submission_speed`` (version 4) one row per (task, checkpoint): the timed submission path (audio
                    seconds per second, projected wall time of the Kaggle test set in seconds, what
                    was timed).
``exports``         (version 5) one row per exported model folder (``export_dir`` PK): the checkpoint it
                    came from, family, ``lineage_hash`` (as in its ``config.json``), total size, the
                    files with their sha256 and size (``files`` JSON) and the TFLite file's largest
                    difference from the JAX forward (NULL when no TFLite file was written).

A score row joins its lineage on ``(task, checkpoint)``; both carry the same ``run_id``.
Timestamps are UTC, stored as naive ``TIMESTAMP``.

Views
-----
``leaderboard``     per task x checkpoint x probe x split x metric: mean/std over folds.
``score_by_step``   the same per training run (checkpoint key before its last ``'@'``) and step,
                    ordered by step, i.e. the score curve over training.
``latest_lineage``  lineage rows, newest first.
``supervised_leaderboard`` (version 4) each supervised model with its validation class-wise AUC and
                    cmAP (mean/std over folds, from ``leaderboard``) and its submission speed (NULL
                    until timed).

Later schema versions may add tables (``recordings``); changes must stay additive
(new tables/views, ``CREATE OR REPLACE VIEW``) so :data:`SCHEMA_SQL` can be re-applied to an older
file.
"""

from __future__ import annotations

SCHEMA_VERSION = 5
"""Version written to ``schema_version``; bump on every schema change (additive only).
1: runs, checkpoints, datasets, lineage, scores, class_scores and their views; 2: + quarantine;
3: + detections, detection_files; 4: + supervised_models, supervised_epochs, submission_speed,
supervised_leaderboard; 5: + exports."""

SPLITS = ("valid", "test")
"""Allowed values of the ``split`` column."""

SCHEMA_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER   NOT NULL PRIMARY KEY,
    applied_at  TIMESTAMP NOT NULL
)
"""

RUNS_TABLE = """
CREATE TABLE IF NOT EXISTS runs (
    run_id      VARCHAR   NOT NULL PRIMARY KEY,
    kind        VARCHAR   NOT NULL,
    note        VARCHAR   NOT NULL DEFAULT '',
    started_at  TIMESTAMP NOT NULL,
    created_at  TIMESTAMP NOT NULL
)
"""

CHECKPOINTS_TABLE = """
CREATE TABLE IF NOT EXISTS checkpoints (
    checkpoint     VARCHAR   NOT NULL PRIMARY KEY,
    run            VARCHAR   NOT NULL,
    step           BIGINT,
    path           VARCHAR   NOT NULL,
    family         VARCHAR   NOT NULL,
    registered_at  TIMESTAMP NOT NULL,
    updated_at     TIMESTAMP NOT NULL
)
"""

DATASETS_TABLE = """
CREATE TABLE IF NOT EXISTS datasets (
    task           VARCHAR   NOT NULL PRIMARY KEY,
    source         VARCHAR   NOT NULL,
    root           VARCHAR   NOT NULL,
    manifest_hash  VARCHAR   NOT NULL,
    n_recordings   BIGINT    NOT NULL CHECK (n_recordings >= 0),
    n_classes      INTEGER   NOT NULL CHECK (n_classes >= 0),
    updated_at     TIMESTAMP NOT NULL
)
"""

LINEAGE_TABLE = """
CREATE TABLE IF NOT EXISTS lineage (
    task             VARCHAR   NOT NULL,
    checkpoint       VARCHAR   NOT NULL,
    step             BIGINT,
    manifest_hash    VARCHAR   NOT NULL,
    preset_name      VARCHAR   NOT NULL,
    preset_hash      VARCHAR   NOT NULL,
    folds_hash       VARCHAR   NOT NULL,
    checkpoint_path  VARCHAR   NOT NULL,
    encoder_family   VARCHAR   NOT NULL,
    code_version     VARCHAR   NOT NULL,
    run_id           VARCHAR   NOT NULL,
    created_at       TIMESTAMP NOT NULL,
    extra            JSON      NOT NULL,
    PRIMARY KEY (task, checkpoint)
)
"""

SCORES_TABLE = """
CREATE TABLE IF NOT EXISTS scores (
    task              VARCHAR   NOT NULL,
    checkpoint        VARCHAR   NOT NULL,
    step              BIGINT,
    fold              INTEGER   NOT NULL,
    split             VARCHAR   NOT NULL CHECK (split IN ('valid', 'test')),
    probe             VARCHAR   NOT NULL,
    metric            VARCHAR   NOT NULL,
    value             DOUBLE,
    n_classes_scored  INTEGER   NOT NULL CHECK (n_classes_scored >= 0),
    run_id            VARCHAR   NOT NULL,
    created_at        TIMESTAMP NOT NULL,
    PRIMARY KEY (task, checkpoint, fold, split, probe, metric)
)
"""

CLASS_SCORES_TABLE = """
CREATE TABLE IF NOT EXISTS class_scores (
    task         VARCHAR   NOT NULL,
    checkpoint   VARCHAR   NOT NULL,
    step         BIGINT,
    fold         INTEGER   NOT NULL,
    split        VARCHAR   NOT NULL CHECK (split IN ('valid', 'test')),
    probe        VARCHAR   NOT NULL,
    class_name   VARCHAR   NOT NULL,
    support      INTEGER   NOT NULL CHECK (support >= 0),
    n_negatives  INTEGER   CHECK (n_negatives >= 0),
    ap           DOUBLE,
    auc          DOUBLE,
    run_id       VARCHAR   NOT NULL,
    created_at   TIMESTAMP NOT NULL,
    PRIMARY KEY (task, checkpoint, fold, split, probe, class_name)
)
"""

QUARANTINE_TABLE = """
CREATE TABLE IF NOT EXISTS quarantine (
    task        VARCHAR   NOT NULL,
    path        VARCHAR   NOT NULL,
    reason      VARCHAR   NOT NULL,
    detail      VARCHAR   NOT NULL,
    size_bytes  BIGINT    CHECK (size_bytes >= 0),
    sha256      VARCHAR,
    found_at    TIMESTAMP NOT NULL,
    run_id      VARCHAR   NOT NULL,
    PRIMARY KEY (task, path)
)
"""

DETECTIONS_TABLE = """
CREATE TABLE IF NOT EXISTS detections (
    task              VARCHAR   NOT NULL,
    scorer            VARCHAR   NOT NULL,
    path              VARCHAR   NOT NULL,
    start_s           DOUBLE    NOT NULL,
    duration_s        DOUBLE    NOT NULL,
    confidence        DOUBLE    NOT NULL CHECK (confidence >= 0 AND confidence <= 1),
    local_prediction  INTEGER   NOT NULL CHECK (local_prediction IN (0, 1)),
    run_id            VARCHAR   NOT NULL,
    created_at        TIMESTAMP NOT NULL,
    PRIMARY KEY (task, scorer, path, start_s)
)
"""

DETECTION_FILES_TABLE = """
CREATE TABLE IF NOT EXISTS detection_files (
    task               VARCHAR   NOT NULL,
    scorer             VARCHAR   NOT NULL,
    path               VARCHAR   NOT NULL,
    duration_s         DOUBLE    NOT NULL,
    n_windows          INTEGER   NOT NULL,
    n_positive         INTEGER   NOT NULL,
    global_prediction  INTEGER   NOT NULL CHECK (global_prediction IN (0, 1)),
    global_confidence  DOUBLE    NOT NULL,
    config             JSON      NOT NULL,
    run_id             VARCHAR   NOT NULL,
    created_at         TIMESTAMP NOT NULL,
    PRIMARY KEY (task, scorer, path)
)
"""

SUPERVISED_MODELS_TABLE = """
CREATE TABLE IF NOT EXISTS supervised_models (
    task               VARCHAR   NOT NULL,
    checkpoint         VARCHAR   NOT NULL,
    model_family       VARCHAR   NOT NULL,
    model_config_hash  VARCHAR   NOT NULL,
    augment_hash       VARCHAR   NOT NULL,
    train_config_hash  VARCHAR   NOT NULL,
    loss               VARCHAR   NOT NULL,
    precision          VARCHAR   NOT NULL,
    epochs             INTEGER   NOT NULL CHECK (epochs > 0),
    seed               BIGINT    NOT NULL,
    debug              BOOLEAN   NOT NULL,
    augmented          BOOLEAN   NOT NULL,
    n_params           BIGINT    NOT NULL CHECK (n_params >= 0),
    train_seconds      DOUBLE    NOT NULL CHECK (train_seconds >= 0),
    run_id             VARCHAR   NOT NULL,
    created_at         TIMESTAMP NOT NULL,
    PRIMARY KEY (task, checkpoint)
)
"""

SUPERVISED_EPOCHS_TABLE = """
CREATE TABLE IF NOT EXISTS supervised_epochs (
    task        VARCHAR   NOT NULL,
    checkpoint  VARCHAR   NOT NULL,
    fold        INTEGER   NOT NULL CHECK (fold >= 0),
    epoch       INTEGER   NOT NULL CHECK (epoch >= 0),
    train_loss  DOUBLE,
    val_loss    DOUBLE,
    val_auc     DOUBLE    CHECK (val_auc >= 0 AND val_auc <= 1),
    seconds     DOUBLE    NOT NULL CHECK (seconds >= 0),
    run_id      VARCHAR   NOT NULL,
    created_at  TIMESTAMP NOT NULL,
    PRIMARY KEY (task, checkpoint, fold, epoch)
)
"""

SUBMISSION_SPEED_TABLE = """
CREATE TABLE IF NOT EXISTS submission_speed (
    task           VARCHAR   NOT NULL,
    checkpoint     VARCHAR   NOT NULL,
    audio_s_per_s  DOUBLE    NOT NULL CHECK (audio_s_per_s > 0),
    projected_s    DOUBLE    NOT NULL CHECK (projected_s >= 0),
    soundscapes    INTEGER   NOT NULL CHECK (soundscapes >= 0),
    audio_seconds  DOUBLE    NOT NULL CHECK (audio_seconds >= 0),
    n_folds        INTEGER   NOT NULL CHECK (n_folds > 0),
    batch_size     INTEGER   NOT NULL CHECK (batch_size > 0),
    run_id         VARCHAR   NOT NULL,
    created_at     TIMESTAMP NOT NULL,
    PRIMARY KEY (task, checkpoint)
)
"""

EXPORTS_TABLE = """
CREATE TABLE IF NOT EXISTS exports (
    export_dir           VARCHAR   NOT NULL PRIMARY KEY,
    checkpoint           VARCHAR   NOT NULL,
    family               VARCHAR   NOT NULL,
    lineage_hash         VARCHAR   NOT NULL,
    size_bytes           BIGINT    NOT NULL CHECK (size_bytes >= 0),
    files                VARCHAR   NOT NULL,
    tflite_max_abs_diff  DOUBLE    CHECK (tflite_max_abs_diff >= 0),
    run_id               VARCHAR   NOT NULL,
    created_at           TIMESTAMP NOT NULL
)
"""

TABLES = (
    SCHEMA_VERSION_TABLE,
    RUNS_TABLE,
    CHECKPOINTS_TABLE,
    DATASETS_TABLE,
    LINEAGE_TABLE,
    SCORES_TABLE,
    CLASS_SCORES_TABLE,
    QUARANTINE_TABLE,
    DETECTIONS_TABLE,
    DETECTION_FILES_TABLE,
    SUPERVISED_MODELS_TABLE,
    SUPERVISED_EPOCHS_TABLE,
    SUBMISSION_SPEED_TABLE,
    EXPORTS_TABLE,
)

# The run of a checkpoint key "<run>@<step>" is everything before the LAST '@'; a key without '@'
# is its own run.
CHECKPOINT_RUN_SQL = (
    "CASE WHEN contains(checkpoint, '@') "
    "THEN regexp_extract(checkpoint, '^(.*)@[^@]*$', 1) ELSE checkpoint END"
)

LEADERBOARD_VIEW = """
CREATE OR REPLACE VIEW leaderboard AS
SELECT
    task,
    checkpoint,
    step,
    probe,
    split,
    metric,
    avg(value)               AS mean,
    stddev_samp(value)       AS std,
    count(*)                 AS n_folds,
    count(value)             AS n_folds_scored,
    min(n_classes_scored)    AS min_classes_scored,
    max(n_classes_scored)    AS max_classes_scored,
    run_id,
    max(created_at)          AS updated_at
FROM scores
GROUP BY task, checkpoint, step, probe, split, metric, run_id
"""

SCORE_BY_STEP_VIEW = f"""
CREATE OR REPLACE VIEW score_by_step AS
SELECT
    task,
    {CHECKPOINT_RUN_SQL}     AS run,
    step,
    checkpoint,
    probe,
    split,
    metric,
    avg(value)               AS mean,
    stddev_samp(value)       AS std,
    count(*)                 AS n_folds,
    count(value)             AS n_folds_scored,
    max(created_at)          AS updated_at
FROM scores
GROUP BY task, run, step, checkpoint, probe, split, metric
ORDER BY task, run, probe, split, metric, step NULLS LAST, checkpoint
"""

LATEST_LINEAGE_VIEW = """
CREATE OR REPLACE VIEW latest_lineage AS
SELECT * FROM lineage ORDER BY created_at DESC, task, checkpoint
"""

SUPERVISED_LEADERBOARD_VIEW = """
CREATE OR REPLACE VIEW supervised_leaderboard AS
SELECT
    m.task,
    m.checkpoint,
    m.model_family,
    m.augmented,
    m.loss,
    m.precision,
    m.epochs,
    m.debug,
    auc.mean                 AS auc_mean,
    auc.std                  AS auc_std,
    cmap.mean                AS cmap_mean,
    cmap.std                 AS cmap_std,
    auc.n_folds              AS n_folds,
    m.n_params,
    m.train_seconds,
    speed.audio_s_per_s,
    speed.projected_s,
    m.run_id,
    m.created_at
FROM supervised_models AS m
LEFT JOIN leaderboard AS auc
    ON auc.task = m.task AND auc.checkpoint = m.checkpoint AND auc.probe = 'supervised'
    AND auc.split = 'valid' AND auc.metric = 'AUC'
LEFT JOIN leaderboard AS cmap
    ON cmap.task = m.task AND cmap.checkpoint = m.checkpoint AND cmap.probe = 'supervised'
    AND cmap.split = 'valid' AND cmap.metric = 'cmAP'
LEFT JOIN submission_speed AS speed
    ON speed.task = m.task AND speed.checkpoint = m.checkpoint
ORDER BY m.task, auc.mean DESC NULLS LAST, m.checkpoint
"""

VIEWS = (LEADERBOARD_VIEW, SCORE_BY_STEP_VIEW, LATEST_LINEAGE_VIEW, SUPERVISED_LEADERBOARD_VIEW)

VERSION_4_SQL = (
    SUPERVISED_MODELS_TABLE,
    SUBMISSION_SPEED_TABLE,
    SUPERVISED_EPOCHS_TABLE,
    SUPERVISED_LEADERBOARD_VIEW,
)
"""What version 4 added (re-applying :data:`SCHEMA_SQL` to a version-3 file creates these and :data:`VERSION_5_SQL`)."""

VERSION_5_SQL = (EXPORTS_TABLE,)
"""What version 5 added: the ``exports`` table (one row per exported model bundle)."""

SCHEMA_SQL = TABLES + VIEWS
"""Every statement that creates the schema, in order; each is idempotent."""
