"""When Dagster materializes assets by itself: eagerly after their parents, never past a failed blocking check.

``AutomationCondition.eager()`` alone ignores blocking asset checks: a ``folds`` partition whose leak check
failed would still be carried to embeddings and scores by the next tick. :data:`EAGER` adds the condition that
every upstream blocking check passed, so a check failure stops the chain in automation as it does in a run.
"""

import dagster as dg

WEEKLY_CRON = "0 3 * * 0"
"""The weekly re-benchmark: Sunday 03:00 (the schedule and the ``scores`` automation condition)."""

EAGER = (dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()).with_label(
    "eager, upstream checks passed"
)
"""Materialize after any parent updates, once all parents exist and their blocking checks passed."""

REBENCHMARK = EAGER | (
    dg.AutomationCondition.cron_tick_passed(WEEKLY_CRON).since_last_handled()
    & ~dg.AutomationCondition.in_progress()
    & ~dg.AutomationCondition.any_deps_missing()
    & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("weekly re-benchmark")
""":data:`EAGER`, plus the weekly re-benchmark even when nothing upstream changed."""
