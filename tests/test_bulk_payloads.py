"""A bulk run of 5,000 plans keeps every payload well under Temporal's limits.

The sizes are real serialised sizes through the project's data converter (pydantic JSON, as
srmflow.temporal.converter builds it without encryption) of what the workflow itself builds:
the continue-as-new input, the final result, the query answers and the completion notice, for
5,000 synthetic plans with SRM-style ids and long failure reasons. Temporal refuses a payload
over 2 MB (and warns above 512 KiB); the assertions keep each one below 1.5 MB in the worst
case and, where a run is ordinary, below the warning.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.client import Client

from srmflow.codec import data_converter
from srmflow.report import bulk_rows, collect_report
from tests.bulk_support import bulk_worker, progress, start_bulk
from tests.reprotect_support import unique_site
from tests.simfixture import MakeSim
from workflows import bulk_models
from workflows.bulk import BulkReprotectWorkflow, _completion
from workflows.bulk_models import (
    PAGE_MAX,
    REASON_MAX,
    SEGMENT_ROWS,
    SRM_ERROR_MAX,
    TRUNCATED,
    BulkProgress,
    BulkReprotectInput,
    DryRunPlan,
    DryRunReport,
    GroupConflict,
    InFlightPlan,
    PlanRef,
    PlanSummary,
    ResultsPageRequest,
    cap_text,
    compact_row,
    listed_within_budget,
)
from workflows.bulk_schedule import startable
from workflows.models import ReprotectOutcome

PLANS = 5000
LIMIT = 1_500_000  # bytes; Temporal's hard limit is 2 MiB
WARN = 512 * 1024  # Temporal's payload warning
T0 = datetime(2026, 11, 27, 6, 41, 7, 123456, tzinfo=UTC)
CONVERTER = data_converter(None).payload_converter


def size(value: Any) -> int:
    """Bytes of the payload Temporal would store for ``value``."""
    return len(CONVERTER.to_payloads([value])[0].data)


class Inventory:
    """SRM-style ids (``Kind:<uuid>:<srm guid>``, ~100 characters) as the simulator makes."""

    def __init__(self, seed: int = 5) -> None:
        self._rng = random.Random(seed)
        self.srm_guid = self.uuid()
        self.pairing_id = self.uuid()

    def uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def moref(self, kind: str) -> str:
        return f"{kind}:{self.uuid()}:{self.srm_guid}"

    def plan(self, index: int) -> PlanRef:
        return PlanRef(
            plan_id=self.moref("DrRecoveryRecoveryPlan"),
            plan_name=f"app-{index:04d}-finance-prod-eu-west-tier1",
            status="RECOVERY_COMPLETE",
            group_ids=[self.moref("DrReplicationVmProtectionGroup") for _ in range(2)],
        )


def srm_message(index: int) -> str:
    """A long SRM error: the kind of text a task failure carries, distinct per plan."""
    return (
        f"Failed to create placeholder VM 'app-{index:04d}-vm-02' on host "
        f"'esx-{index % 40:02d}.dr.example.com': placeholder datastore 'ph-ds-{index % 9:02d}' "
        "is full (free 1.2 GB, needed 40.0 GB). Check the placeholder datastore mappings of "
        f"protection group 'pg-{index:04d}-1' and the inventory mappings, then retry. " * 4
    )


def failed_summary(inv: Inventory, plan: PlanRef, index: int) -> PlanSummary:
    """A failed plan's summary as the workflow builds it, before compaction.

    Every other plan ends like the remediation ladder's timeout: the run's own reason plus
    SRM's message unquoted, the largest row there is; the rest quote SRM's message in a long
    reason, as ReprotectPlanWorkflow does for a task that fails.
    """
    message = srm_message(index)
    if index % 2:
        reason = (
            "plan stayed INCOMPLETE_REPROTECT after a re-run and a forced reprotect was not "
            "approved within 3600 s"
        )
    else:
        reason = (
            f"reprotect left the plan INCOMPLETE_REPROTECT after 2 attempt(s): SRM says "
            f"{message!r}. Fix the cause, then run reprotect again (or allow a forced re-run)"
        )
    return PlanSummary(
        plan_id=plan.plan_id,
        plan_name=plan.plan_name,
        outcome=ReprotectOutcome.FAILED,
        srm_task_id=inv.moref("DrTask"),
        final_plan_status="INCOMPLETE_REPROTECT",
        reason=reason,
        error_type="SrmTaskFailed" if index % 3 else None,
        srm_error=message,
        attempts=2,
        approved_by=None,
        started_at=T0 + timedelta(seconds=index),
        ended_at=T0 + timedelta(seconds=index + 1800),
    )


def fresh(inv: Inventory, plans: list[PlanRef]) -> BulkReprotectWorkflow:
    """The workflow object of a new 5,000-plan run right after its selection was resolved."""
    # Selected by id, as `srmflow reprotect --plan ... --plan ...` does: the largest input.
    ids = [plan.plan_id for plan in plans]
    wf = BulkReprotectWorkflow(
        BulkReprotectInput(plan_ids=ids, max_concurrency=bulk_models.MAX_CONCURRENCY)
    )
    wf._state.pairing_id = inv.pairing_id
    wf._state.started_at = T0
    wf._state.selected = len(plans)
    wf._state.queue = list(plans)
    return wf


def continued(wf: BulkReprotectWorkflow) -> BulkReprotectWorkflow:
    """The next run, from the input the run continues as new with (as Temporal stores it)."""
    [stored] = CONVERTER.from_payloads(
        CONVERTER.to_payloads([wf._next_input()]), [BulkReprotectInput]
    )
    return BulkReprotectWorkflow(stored)


def run_segment(wf: BulkReprotectWorkflow, finish: Callable[[PlanRef], PlanSummary]) -> None:
    """The scheduler's bookkeeping until the run would continue as new or end: start what the
    concurrency and the segment's room allow, finish the oldest plan, again."""
    wf._segmented = True
    wf._carry = wf._carry_base()
    taken: dict[str, PlanRef] = {}
    while True:
        free = min(wf._state.concurrency - len(wf._in_flight), wf._segment_room())
        for plan in startable(wf._state.queue, wf._held, free):
            wf._take(plan, T0)
            taken[plan.plan_id] = plan
        if not wf._in_flight:
            return
        oldest = taken.pop(next(iter(wf._in_flight)))
        wf._finish(oldest, finish(oldest))


@dataclass
class Run:
    """A simulated bulk run: each continue-as-new input, the last run, most plans in a run."""

    inputs: list[BulkReprotectInput]
    last: BulkReprotectWorkflow
    most_per_run: int


def simulate(inv: Inventory, plans: list[PlanRef], finish: Callable[[PlanRef], PlanSummary]) -> Run:
    wf, inputs, most = fresh(inv, plans), [], 0
    while True:
        before = len(wf._state.queue)
        run_segment(wf, finish)
        most = max(most, before - len(wf._state.queue))
        if not wf._state.queue:
            return Run(inputs, wf, most)
        wf = continued(wf)
        inputs.append(wf._input.model_copy(deep=True))


@pytest.fixture(scope="module")
def inventory() -> tuple[Inventory, list[PlanRef]]:
    inv = Inventory()
    return inv, [inv.plan(i) for i in range(PLANS)]


@pytest.fixture(scope="module")
def failing(inventory: tuple[Inventory, list[PlanRef]]) -> Run:
    """Every one of 5,000 plans fails with a long reason: the largest rows there are."""
    inv, plans = inventory
    index = {plan.plan_id: i for i, plan in enumerate(plans)}
    return simulate(inv, plans, lambda plan: failed_summary(inv, plan, index[plan.plan_id]))


def test_rows_cap_long_reasons_with_a_marker(inventory: tuple[Inventory, list[PlanRef]]) -> None:
    inv, plans = inventory
    quoted = compact_row(failed_summary(inv, plans[0], 0))
    assert quoted.reason is not None
    assert len(quoted.reason) == REASON_MAX
    assert quoted.reason.endswith(TRUNCATED)
    assert quoted.srm_error is None, "SRM's message is left out when the reason quotes it"
    unquoted = compact_row(failed_summary(inv, plans[1], 1))
    assert unquoted.reason is not None
    assert not unquoted.reason.endswith(TRUNCATED)
    assert unquoted.srm_error is not None
    assert len(unquoted.srm_error) == SRM_ERROR_MAX
    assert cap_text("short", REASON_MAX) == "short"
    assert cap_text(None, REASON_MAX) is None


def test_every_continue_as_new_input_stays_small(failing: Run) -> None:
    assert failing.inputs, "5,000 plans take more than one run"
    sizes = [size(inp) for inp in failing.inputs]
    assert max(sizes) < LIMIT, sizes
    assert not failing.inputs[0].plan_ids, "the selection is not carried, only the queue"
    first = failing.inputs[0].state
    assert first is not None
    assert first.totals is not None
    assert 0 < len(first.previous) <= SEGMENT_ROWS
    assert len(first.queue[0].group_ids) == 2
    assert all(len(g) == 16 for g in first.queue[0].group_ids), "group ids carried as tokens"
    assert len(first.previous) + len(first.queue) == PLANS
    assert failing.most_per_run <= SEGMENT_ROWS


def test_final_result_stays_small_and_counts_every_plan(failing: Run) -> None:
    result = failing.last._result(T0 + timedelta(hours=3))
    assert not result.plans_complete
    assert 0 < len(result.plans) <= SEGMENT_ROWS
    assert result.counts["FAILED"] == PLANS
    assert sum(len(ids) for ids in result.failures_by_cause.values()) == PLANS
    assert result.continued_as_new == len(failing.inputs)
    assert size(result) < LIMIT
    segments = [inp.state.previous for inp in failing.inputs if inp.state is not None]
    assert sum(map(len, segments)) + len(result.plans) == PLANS


def test_a_stopped_run_lists_unstarted_plans_by_id(
    inventory: tuple[Inventory, list[PlanRef]],
) -> None:
    inv, plans = inventory
    wf = fresh(inv, plans)
    run_segment(wf, lambda plan: failed_summary(inv, plan, 1))
    wf._state.stop_reason = "change freeze"
    result = wf._result(T0 + timedelta(hours=1))
    assert len(result.not_started) == len(wf._state.queue) > PLANS / 2
    assert result.counts["SKIPPED"] == len(result.not_started)
    assert not result.plans_complete
    assert size(result) < LIMIT


def test_successful_runs_take_few_segments(inventory: tuple[Inventory, list[PlanRef]]) -> None:
    inv, plans = inventory

    def reprotected(plan: PlanRef) -> PlanSummary:
        return PlanSummary(
            plan_id=plan.plan_id,
            plan_name=plan.plan_name,
            outcome=ReprotectOutcome.REPROTECTED,
            srm_task_id=inv.moref("DrTask"),
            final_plan_status="READY_STATE",
            attempts=1,
            started_at=T0,
            ended_at=T0 + timedelta(minutes=20),
        )

    run = simulate(inv, plans, reprotected)
    assert len(run.inputs) <= 8
    assert max(size(inp) for inp in run.inputs) < LIMIT
    assert run.most_per_run == SEGMENT_ROWS


def test_small_runs_keep_every_row_in_the_result(
    inventory: tuple[Inventory, list[PlanRef]],
) -> None:
    inv, plans = inventory
    wf = fresh(inv, plans[:600])
    wf._segmented = True
    wf._carry = wf._carry_base()
    wf._state.unknown_plan_ids = ["DrRecoveryRecoveryPlan:gone"]
    for index, plan in enumerate(plans[:500]):
        wf._take(plan, T0)
        wf._finish(plan, failed_summary(inv, plan, index))
    result = wf._result(T0 + timedelta(hours=1))
    assert result.plans_complete
    assert [p.outcome.value for p in result.plans].count("SKIPPED") == 100
    assert result.plans[0].plan_id == "DrRecoveryRecoveryPlan:gone"
    assert len(result.plans) == 601
    assert result.failures_by_cause["SrmNotFound"] == ["DrRecoveryRecoveryPlan:gone"]
    assert size(result) < WARN


def test_queries_and_notices_stay_small(
    inventory: tuple[Inventory, list[PlanRef]], failing: Run
) -> None:
    _, plans = inventory
    wf = BulkReprotectWorkflow(failing.inputs[-1])
    running = plans[: bulk_models.MAX_CONCURRENCY]
    for plan in running:
        wf._in_flight[plan.plan_id] = InFlightPlan(
            plan_id=plan.plan_id,
            plan_name=plan.plan_name,
            workflow_id=wf._workflow_id(plan.plan_id),
            started_at=T0,
        )
    answer: BulkProgress = wf.progress()
    previous = failing.inputs[-1].state.previous  # type: ignore[union-attr]
    assert answer.finished == PLANS - len(wf._state.queue)
    assert answer.results == previous[-bulk_models.RECENT_ROWS :]
    assert size(answer) < WARN

    page = wf.results_page(ResultsPageRequest(offset=0, limit=PAGE_MAX))
    assert page.rows == previous[:PAGE_MAX]
    assert page.earlier == answer.finished - len(previous)
    assert size(page) < WARN

    notice = _completion(failing.last._result(T0), "bulk-reprotect/default/x")
    assert sum(notice["failures_count_by_cause"].values()) == PLANS  # type: ignore[attr-defined]
    assert size(notice) < 64 * 1024


@pytest.mark.parametrize("blocked_every", [10, 1])
def test_dry_run_report_of_5000_plans_fits(
    inventory: tuple[Inventory, list[PlanRef]], blocked_every: int
) -> None:
    _, plans = inventory
    report = DryRunReport(
        conflicts=[
            GroupConflict(group_id=a.group_ids[0], plan_ids=[a.plan_id, b.plan_id])
            for a, b in zip(plans[::2], plans[1::2], strict=True)
        ]
    )
    for index, plan in enumerate(plans):
        verdict = DryRunPlan(plan_id=plan.plan_id, plan_name=plan.plan_name, status=plan.status)
        if index % blocked_every == 0:
            verdict.blocked_reason = cap_text(srm_message(index), REASON_MAX)
            verdict.error_type = "PlanNotEligible"
            report.blocked.append(verdict)
        else:
            verdict.action = "REPROTECT"
            report.would_reprotect.append(verdict)
    listed = listed_within_budget(report)
    assert sum(listed.counts[k] for k in ("blocked", "would_reprotect")) == PLANS
    assert listed.counts["conflicts"] == PLANS // 2
    listed_plans = len(listed.blocked) + len(listed.would_reprotect)
    assert listed.unlisted == PLANS - listed_plans > 0
    assert listed.blocked, "blocked plans are listed first"
    assert size(listed) < LIMIT


async def test_segments_bound_each_run_and_the_report_gathers_them(
    client: Client, task_queue: str, make_sim: MakeSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A segment of 4 rows stands in for SEGMENT_ROWS: 11 plans take at least three runs.
    monkeypatch.setattr(bulk_models, "SEGMENT_ROWS", 4)
    monkeypatch.setattr("workflows.bulk.SEGMENT_ROWS", 4)
    sim = await make_sim(
        plans=11, task_seconds=(0.2, 0.3), fail_plans={"plan-005": "LUN gone " * 40}
    )
    site = unique_site()
    run_id = f"bulk-reprotect/{site}/segments"
    inp = BulkReprotectInput(
        site=site,
        plan_ids=[*sim.state.plans, "DrRecoveryRecoveryPlan:missing"],
        max_concurrency=6,
        poll_interval_seconds=1,
        retry_incomplete=False,
    )
    async with bulk_worker(client, task_queue, sim, site):
        handle = await start_bulk(client, task_queue, inp, run_id)
        result = await handle.result()
        final = await progress(handle)
        page = await handle.query(
            BulkReprotectWorkflow.results_page, ResultsPageRequest(offset=1, limit=3)
        )
        report = await collect_report(client, run_id)

    assert result.continued_as_new >= 2
    assert not result.plans_complete
    assert 0 < len(result.plans) <= 4
    assert result.counts["REPROTECTED"] == 10
    assert result.counts["FAILED"] == 2
    assert result.unknown_plan_ids == ["DrRecoveryRecoveryPlan:missing"]
    assert (await sim.admin("GET", "state"))["max_in_flight"] <= 4

    rows = await bulk_rows(client, run_id, result)
    assert sorted(r.plan_id for r in rows) == sorted([*sim.state.plans, *result.unknown_plan_ids])
    assert final.finished == 12
    assert page.offset == 1
    assert len(page.rows) == 3
    assert page.earlier == 11 - (page.total - 1)

    by_name = {r.plan_name: r for r in report.plans}
    assert len(report.plans) == 12
    failed = by_name["plan-005"]
    assert failed.outcome == "FAILED"
    assert (failed.srm_error or "").count("LUN gone") == 40
    assert (failed.workflow_id or "").startswith(f"reprotect/{site}/")
    assert by_name[None].plan_id == "DrRecoveryRecoveryPlan:missing"
    assert by_name[None].workflow_id is None
    assert all(r.steps for r in report.plans if r.outcome == "REPROTECTED")
