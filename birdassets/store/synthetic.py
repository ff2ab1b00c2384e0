"""Synthetic scores for load tests: a metrics DB the size of a lab's, written in one statement per table.

Every (task, checkpoint) pair gets a lineage row and the score rows of a real evaluation's shape: 5 folds x 2
splits x 4 probes x 5 metrics = 200 rows, values uniform in [0, 1) from ``seed`` (DuckDB's ``setseed``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from birdassets.store.connection import DEFAULT_LOCK_TIMEOUT_S, utc_now, write_transaction

FOLDS = 5
PROBES = ("linear", "mlp", "centroid", "chance")
METRICS = ("cmAP", "class_auc", "top1", "cmAP5", "macro_f1")
ROWS_PER_EVALUATION = FOLDS * 2 * len(PROBES) * len(METRICS)
"""Score rows per (task, checkpoint): 200."""

_PAIRS = "(SELECT unnest(?) AS task) t CROSS JOIN (SELECT unnest(?) AS checkpoint) c"
_STEP = "try_cast(regexp_extract(checkpoint, '@([0-9]+)$', 1) AS BIGINT)"


def write_synthetic_scores(path: Path, tasks: Sequence[str], checkpoints: Sequence[str], seed: float = 0.5) -> int:
    """Write lineage and score rows of every task x checkpoint into the metrics DB at ``path`` (replacing any of
    those pairs); returns the score rows written."""
    now, run_id = utc_now(), "synthetic-load-test"
    key = [list(tasks), list(checkpoints)]
    with write_transaction(Path(path), "write synthetic scores", lock_timeout_s=DEFAULT_LOCK_TIMEOUT_S) as con:
        for table in ("scores", "lineage"):
            con.execute(f"DELETE FROM {table} WHERE list_contains(?, task) AND list_contains(?, checkpoint)", key)
        con.execute("SELECT setseed(?)", [seed])
        con.execute(f"INSERT INTO lineage SELECT task, checkpoint, {_STEP}, 'synthetic', 'synthetic', 'synthetic', "
                    f"'synthetic', checkpoint, 'synthetic', 'synthetic', ?, ?, '{{}}' FROM {_PAIRS}",
                    [run_id, now, *key])
        con.execute(
            f"INSERT INTO scores SELECT task, checkpoint, {_STEP}, fold, split, probe, metric, random(), 12, ?, ? "
            f"FROM {_PAIRS} CROSS JOIN range({FOLDS}) f(fold) CROSS JOIN (SELECT unnest(['valid', 'test']) AS split) "
            "CROSS JOIN (SELECT unnest(?) AS probe) CROSS JOIN (SELECT unnest(?) AS metric)",
            [run_id, now, *key, list(PROBES), list(METRICS)])
    return len(tasks) * len(checkpoints) * ROWS_PER_EVALUATION
