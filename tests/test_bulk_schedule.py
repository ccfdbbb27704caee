"""The pure scheduling rules of a bulk run."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from workflows.bulk_models import BulkReprotectInput, PlanRef
from workflows.bulk_schedule import estimate_makespan, eta_seconds, group_conflicts, startable


def plan(plan_id: str, *groups: str) -> PlanRef:
    return PlanRef(plan_id=plan_id, group_ids=list(groups))


def test_startable_respects_slots_and_queue_order() -> None:
    queue = [plan("a", "g1"), plan("b", "g2"), plan("c", "g3")]
    assert [p.plan_id for p in startable(queue, {}, 2)] == ["a", "b"]
    assert startable(queue, {}, 0) == []


def test_startable_skips_plans_whose_groups_are_held_or_picked() -> None:
    queue = [plan("a", "g1"), plan("b", "g1", "g2"), plan("c", "g3"), plan("d", "g2")]
    picked = startable(queue, {"g3": "running"}, 10)
    # b shares g1 with a; c's group is held by a running plan; d is free once b is skipped.
    assert [p.plan_id for p in picked] == ["a", "d"]


def test_group_conflicts_lists_shared_groups_only() -> None:
    conflicts = group_conflicts([plan("a", "g1", "g2"), plan("b", "g2"), plan("c", "g3")])
    assert [(c.group_id, c.plan_ids) for c in conflicts] == [("g2", ["a", "b"])]


def test_estimate_makespan_serialises_conflicts() -> None:
    independent = [plan(str(i), f"g{i}") for i in range(4)]
    assert estimate_makespan(independent, 2, 10.0) == 20.0
    assert estimate_makespan(independent, 4, 10.0) == 10.0
    shared = [plan(str(i), "g") for i in range(3)]
    assert estimate_makespan(shared, 10, 10.0) == 30.0
    assert estimate_makespan([], 10, 10.0) == 0.0


def test_eta() -> None:
    assert eta_seconds([], 0, 0, 5) == 0.0
    assert eta_seconds([10.0, 30.0], 10, 0, 5) == 40.0
    assert eta_seconds([10.0], 5, 5, 5) == 15.0
    assert eta_seconds([], 5, 5, 5) is None


@pytest.mark.parametrize(
    "selection",
    [{}, {"plan_ids": ["a"], "all_recovered": True}, {"plan_name_glob": "x*", "plan_ids": ["a"]}],
)
def test_input_needs_exactly_one_selection(selection: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="exactly one selection"):
        BulkReprotectInput.model_validate(selection)
