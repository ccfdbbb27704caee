"""DrillWorkflow on the real dev server against the simulator over HTTP."""

from __future__ import annotations

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from srmflow.report import render_drill
from tests.drill_support import drill_worker, sim_sites, sim_statuses, start_drill
from tests.reprotect_support import eventually, unique_site
from tests.simfixture import MakeSim
from workflows.drill import DrillWorkflow
from workflows.drill_models import DrillApproval, DrillInput, DrillMode, PlanDrillState


async def test_test_drill_20_plans_back_to_ready_with_rto(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=20, status="READY_STATE", task_seconds=(0.2, 0.5))
    site = unique_site()
    inp = DrillInput(
        site=site,
        plan_name_glob="plan-*",
        mode=DrillMode.TEST,
        max_concurrency=5,
        rto_target_seconds=600,
        poll_interval_seconds=1,
    )
    async with drill_worker(client, task_queue, sim, site):
        handle = await start_drill(client, task_queue, inp, f"drill/{site}")
        result = await handle.result()

    assert len(result.plans) == 20
    assert result.passed, [r.reason for r in result.plans if r.reason]
    assert result.counts["PASSED"] == 20
    assert set(sim_statuses(sim).values()) == {"READY_STATE"}
    for row in result.plans:
        assert row.rto_seconds is not None
        assert 0 < row.rto_seconds < 600
        assert row.rto_passed is True
        assert row.verdict == "pass"
        assert row.last_completed_step == "cleanup"
        assert row.plan_status == "READY_STATE"
    assert result.max_rto_seconds == max(r.rto_seconds or 0 for r in result.plans)
    state = await sim.admin("GET", "state")
    assert state["max_in_flight"] <= 5
    for fmt in ("md", "json", "csv", "html"):
        text = render_drill(result, fmt)
        first = result.plans[0]
        assert (first.plan_name or first.plan_id) in text
    assert "RTO" in render_drill(result, "md")


async def test_test_drill_hold_until_approval_and_rto_target_fail(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=3, status="READY_STATE", task_seconds=(0.2, 0.3))
    site = unique_site()
    inp = DrillInput(
        site=site,
        plan_ids=list(sim.state.plans),
        require_approval=True,
        rto_target_seconds=0.001,
        poll_interval_seconds=1,
    )
    async with drill_worker(client, task_queue, sim, site):
        handle = await start_drill(client, task_queue, inp, f"drill/{site}")

        async def all_holding() -> bool:
            prog = await handle.query(DrillWorkflow.progress)
            return len(prog.waiting_for_approval) == 3

        await eventually(all_holding, within=60)
        assert set(sim_statuses(sim).values()) == {"TEST_COMPLETE"}
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(
                DrillWorkflow.approve, DrillApproval(approver="ops", plan_ids=["nope"])
            )
        ack = await handle.execute_update(DrillWorkflow.approve, DrillApproval(approver="ops"))
        assert sorted(ack.released) == sorted(sim.state.plans)
        result = await handle.result()

    assert set(sim_statuses(sim).values()) == {"READY_STATE"}
    assert not result.passed
    assert all(r.approved_by == "ops" for r in result.plans)
    assert all(r.rto_passed is False and r.verdict.startswith("fail") for r in result.plans)


async def test_failback_requires_allow_disruptive(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=1, status="READY_STATE")
    site = unique_site()
    inp = DrillInput(site=site, plan_name_glob="plan-*", mode=DrillMode.FAILBACK)
    assert inp.problem() is not None
    assert "allow_disruptive" in (inp.problem() or "")
    async with drill_worker(client, task_queue, sim, site):
        handle = await start_drill(client, task_queue, inp, f"drill/{site}")
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
    assert isinstance(info.value.cause, ApplicationError)
    assert info.value.cause.type == "DrillNotAllowed"
    assert await sim.journal() == []


async def test_failback_drill_10_plans_returns_to_original_direction(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=10, status="READY_STATE", task_seconds=(0.2, 0.5))
    before = sim_sites(sim)
    site = unique_site()
    inp = DrillInput(
        site=site,
        plan_name_glob="plan-*",
        mode=DrillMode.FAILBACK,
        allow_disruptive=True,
        max_concurrency=10,
        rto_target_seconds=600,
        poll_interval_seconds=1,
    )
    async with drill_worker(client, task_queue, sim, site):
        handle = await start_drill(client, task_queue, inp, f"drill/{site}")
        result = await handle.result()

    assert result.passed, [r.reason for r in result.plans if r.reason]
    assert sim_sites(sim) == before
    assert set(sim_statuses(sim).values()) == {"READY_STATE"}
    for row in result.plans:
        assert row.in_original_direction is True
        assert row.last_completed_step == "verify_direction"
        assert row.rto_seconds is not None
        assert row.return_rto_seconds is not None
        assert len(row.srm_task_ids) == 4
    posts = [e for e in await sim.journal() if e["method"] == "POST" and "/actions/" in e["path"]]
    assert len(posts) == 40


async def test_failback_failure_stops_safely_with_precise_report(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=10, status="READY_STATE", task_seconds=(0.2, 0.5))
    ids = list(sim.state.plans)
    broken = ids[0]
    await sim.set_faults(incomplete_plans=[broken])
    before = sim_sites(sim)
    site = unique_site()
    inp = DrillInput(
        site=site,
        plan_ids=ids,
        mode=DrillMode.FAILBACK,
        allow_disruptive=True,
        max_concurrency=2,
        poll_interval_seconds=1,
    )
    async with drill_worker(client, task_queue, sim, site):
        handle = await start_drill(client, task_queue, inp, f"drill/{site}")
        result = await handle.result()

    rows = {r.plan_id: r for r in result.plans}
    failed = rows[broken]
    assert not result.passed
    assert failed.state == PlanDrillState.FAILED
    assert failed.failed_step == "reprotect"
    assert failed.last_completed_step == "recovery"
    assert failed.plan_status == "INCOMPLETE_REPROTECT" == sim_statuses(sim)[broken]
    assert failed.next_action
    assert "reprotect" in failed.next_action
    assert failed.rto_seconds is not None
    assert result.stop_reason
    assert "failed at reprotect" in result.stop_reason
    not_started = [r for r in result.plans if r.state == PlanDrillState.NOT_STARTED]
    assert not_started, "plans queued behind the failure are not started"
    for row in result.plans:
        if row.plan_id == broken:
            continue
        assert row.state in (PlanDrillState.PASSED, PlanDrillState.NOT_STARTED)
        assert sim_sites(sim)[row.plan_id] == before[row.plan_id]
        assert sim_statuses(sim)[row.plan_id] == "READY_STATE"
    touched = {e["plan_id"] for e in await sim.journal() if e["method"] == "POST"}
    assert not touched & {r.plan_id for r in not_started}
    assert "INCOMPLETE_REPROTECT" in render_drill(result, "md")
