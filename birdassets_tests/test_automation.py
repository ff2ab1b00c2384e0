"""Automation never carries a partition past a failed blocking check (``eager()`` alone would)."""

from __future__ import annotations

import dagster as dg
import pytest

from birdassets.defs.automation import EAGER, REBENCHMARK


def chain(check_passes: bool, condition: dg.AutomationCondition) -> dg.Definitions:
    """``parent`` (with a blocking check that passes or fails) -> ``child`` automated by ``condition``."""

    @dg.asset
    def parent() -> int:
        return 1

    @dg.asset_check(asset=parent, blocking=True)
    def parent_is_good() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=check_passes)

    @dg.asset(deps=[parent], automation_condition=condition)
    def child() -> None:
        return None

    return dg.Definitions(assets=[parent, child], asset_checks=[parent_is_good])


def child_requested(check_passes: bool, condition: dg.AutomationCondition) -> bool:
    """Materialize ``parent`` with its check, then ask automation whether ``child`` would run now."""
    defs = chain(check_passes, condition)
    with dg.instance_for_test() as instance:
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)  # child is missing, parent too
        check = defs.get_asset_checks_def(dg.AssetCheckKey(dg.AssetKey("parent"), "parent_is_good"))
        run = dg.materialize([defs.get_assets_def("parent"), check], instance=instance, raise_on_error=False)
        assert [e.passed for e in run.get_asset_check_evaluations()] == [check_passes]
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        return result.get_num_requested(dg.AssetKey("child")) == 1


@pytest.mark.parametrize("condition", [EAGER, REBENCHMARK], ids=["eager", "rebenchmark"])
def test_a_failed_blocking_check_stops_automation_downstream(condition):
    assert child_requested(check_passes=True, condition=condition)  # control: a passed check lets it run
    assert not child_requested(check_passes=False, condition=condition)


def test_plain_eager_would_have_carried_on():
    """Why :data:`EAGER` exists: Dagster's own eager condition requests the child after a failed check."""
    assert child_requested(check_passes=False, condition=dg.AutomationCondition.eager())
