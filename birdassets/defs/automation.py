"""When Dagster materializes assets by itself: eagerly after their parents, never past a failed blocking check.

``AutomationCondition.eager()`` alone ignores blocking asset checks: a ``folds`` partition whose leak check
failed would still be carried to embeddings and scores by the next tick. :data:`EAGER` adds the condition that
every upstream blocking check passed, so a check failure stops the chain in automation as it does in a run.
"""

import dagster as dg

WEEKLY_CRON = "0 3 * * 0"
"""The weekly re-benchmark: Sunday 03:00 (the schedule and the ``scores`` automation condition)."""

CHECKED_OR_COMING = dg.AutomationCondition.all_deps_match(
    dg.AutomationCondition.all_checks_match(dg.AutomationCondition.check_passed(), blocking_only=True)
    | dg.AutomationCondition.will_be_requested()
).with_label("upstream checks passed, or upstream runs with it")
"""Every parent's blocking checks passed, or the parent is requested in this tick: it then runs in the same run,
its checks with it, and a check failing there stops the run before this asset. So automation puts a chain
(embeddings -> probe -> scores -> metrics_db) in one run, where ``all_deps_blocking_checks_passed`` waits for
each parent's checks in a run of their own (a run per link)."""

EAGER = (dg.AutomationCondition.eager() & CHECKED_OR_COMING).with_label("eager, upstream checks passed")
"""Materialize after any parent updates, once all parents exist and their blocking checks passed (or they run
first in the same run)."""


ON_TASK_DATA = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
    & CHECKED_OR_COMING
).with_label("task data updated, upstream checks passed")
"""The ``encoder`` of a task x checkpoint: requested when the task's data is (re)built (its ``folds``, the data
run's last asset, so the whole chain goes in one run), so a new task is scored on every registered checkpoint.
Unlike :data:`EAGER` it does not fire for a new (missing) checkpoint partition: the checkpoint sensor requests those
runs in the tick that registers the checkpoint, and automation must not race it for the same partitions."""


REBENCHMARK = EAGER | (
    dg.AutomationCondition.cron_tick_passed(WEEKLY_CRON).since_last_handled()
    & ~dg.AutomationCondition.in_progress()
    & ~dg.AutomationCondition.any_deps_missing()
    & CHECKED_OR_COMING
).with_label("weekly re-benchmark")
""":data:`EAGER`, plus the weekly re-benchmark even when nothing upstream changed."""
