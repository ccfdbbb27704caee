"""Pure scheduling rules of a bulk run: who may start next, conflicts, and estimates.

Kept free of Temporal so the rules are unit-tested directly and the workflow stays a script.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping

from workflows.bulk_models import GroupConflict, PlanRef


def startable(
    queue: Iterable[PlanRef], held_groups: Mapping[str, str], free_slots: int
) -> list[PlanRef]:
    """Plans to start now, in queue order: at most ``free_slots``, none sharing a group.

    A plan is skipped (not blocked behind) while one of its protection groups is held by a
    running plan or by a plan picked earlier in this call, because SRM would answer
    PROTECTION_GROUPS_IN_USE.
    """
    picked: list[PlanRef] = []
    taken = set(held_groups)
    for plan in queue:
        if len(picked) >= free_slots:
            break
        if taken.isdisjoint(plan.group_ids):
            picked.append(plan)
            taken.update(plan.group_ids)
    return picked


def group_conflicts(plans: Iterable[PlanRef]) -> list[GroupConflict]:
    """Protection groups shared by more than one plan, with the plans that share them."""
    by_group: dict[str, list[str]] = {}
    for plan in plans:
        for group in plan.group_ids:
            by_group.setdefault(group, []).append(plan.plan_id)
    return [
        GroupConflict(group_id=group, plan_ids=ids)
        for group, ids in sorted(by_group.items())
        if len(ids) > 1
    ]


def estimate_makespan(plans: list[PlanRef], concurrency: int, plan_seconds: float) -> float:
    """Seconds the scheduler would take if every plan took ``plan_seconds``."""
    queue = list(plans)
    running: list[tuple[float, int, PlanRef]] = []
    held: dict[str, str] = {}
    now = 0.0
    seq = 0
    while queue or running:
        for plan in startable(queue, held, concurrency - len(running)):
            queue.remove(plan)
            held.update(dict.fromkeys(plan.group_ids, plan.plan_id))
            heapq.heappush(running, (now + plan_seconds, seq, plan))
            seq += 1
        if not running:
            break
        now, _, done = heapq.heappop(running)
        for group in done.group_ids:
            held.pop(group, None)
    return now


def eta_seconds(
    durations: list[float], remaining: int, in_flight: int, concurrency: int
) -> float | None:
    """Estimated seconds left from the mean measured plan duration; None before any."""
    if remaining == 0 and in_flight == 0:
        return 0.0
    if not durations:
        return None
    mean = sum(durations) / len(durations)
    waves = remaining / max(concurrency, 1)
    return round(mean * waves + (mean / 2 if in_flight else 0.0), 1)
