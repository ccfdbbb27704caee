"""ReprotectPlanWorkflow end to end: real dev server, real SrmClient, the SRM simulator."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.client import Client

from srmflow.simulator.state import ManualClock
from srmflow.srm.client import SrmClient
from tests.reprotect_support import (
    eventually,
    history_events,
    maybe_record,
    plan_ids,
    reprotect_posts,
    run,
    sim_worker,
    site_settings,
    start,
    unique_site,
)
from tests.simfixture import MakeSim
from workflows.models import ReprotectOutcome, ReprotectPlanInput, Step
from workflows.reprotect import ReprotectPlanWorkflow


def _input(site: str, plan_id: str, **extra: object) -> ReprotectPlanInput:
    return ReprotectPlanInput(site=site, plan_id=plan_id, poll_interval_seconds=1, **extra)


async def test_happy_path_reprotects_once(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=2)
    site, plan = unique_site(), plan_ids(sim)[0]
    before = sim.state.plan_view(sim.state.plans[plan])
    async with sim_worker(client, task_queue, sim, site):
        handle = await start(client, task_queue, _input(site, plan), sim.pairing_id)
        result = await handle.result()
        events = await history_events(handle)
        progress = await handle.query(ReprotectPlanWorkflow.progress)
        await maybe_record(handle, "happy_path")
    assert result.outcome is ReprotectOutcome.REPROTECTED, result.reason
    assert result.final_plan_status == "READY_STATE"
    assert result.pairing_id == sim.pairing_id
    assert result.srm_task_id
    assert not result.adopted
    assert result.sites_before is not None
    assert result.sites_after is not None
    assert result.sites_before.protected_site_name == before["protected_site_name"]
    assert result.sites_after.protected_site_name == before["recovery_site_name"]
    assert [s.step for s in result.steps] == [
        Step.PRECHECK,
        Step.QUEUED,
        Step.START,
        Step.SRM_TASK,
        Step.VERIFY,
    ]
    assert all(s.ended_at is not None for s in result.steps)
    assert progress.step is Step.DONE
    assert progress.outcome is ReprotectOutcome.REPROTECTED
    assert len(await reprotect_posts(sim, plan)) == 1
    assert events < 60


async def test_repeat_on_protected_plan_is_harmless(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=1)
    site, plan = unique_site(), plan_ids(sim)[0]
    async with sim_worker(client, task_queue, sim, site):
        first = await run(client, task_queue, _input(site, plan), sim.pairing_id)
        handle = await start(client, task_queue, _input(site, plan), sim.pairing_id)
        second = await handle.result()
        await maybe_record(handle, "already_protected")
    assert first.outcome is ReprotectOutcome.REPROTECTED
    assert second.outcome is ReprotectOutcome.ALREADY_PROTECTED
    assert second.sites_after == first.sites_after
    assert len(await reprotect_posts(sim, plan)) == 1


async def test_adopts_reprotect_started_outside(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    # SRM's clock stands still until the workflow follows the task, so the outside reprotect
    # is still running when precheck looks, however slow the machine is.
    clock = ManualClock()
    sim = await make_sim(plans=1, clock=clock, task_seconds=(2.0, 2.0))
    site, plan = unique_site(), plan_ids(sim)[0]
    async with SrmClient(site_settings(sim, "outside")) as outside:
        external = await outside.reprotect(sim.pairing_id, plan)
    async with sim_worker(client, task_queue, sim, site):
        handle = await start(client, task_queue, _input(site, plan), sim.pairing_id)
        await eventually(lambda: _following_task(handle))
        clock.advance(5.0)
        result = await handle.result()
        await maybe_record(handle, "adopted")
    assert result.outcome is ReprotectOutcome.REPROTECTED, result.reason
    assert result.adopted
    assert result.srm_task_id == external.id
    assert result.initial_plan_status == "REPROTECT_IN_PROGRESS"
    assert len(await reprotect_posts(sim, plan)) == 1


async def _following_task(handle: Any) -> bool:
    progress = await handle.query(ReprotectPlanWorkflow.progress)
    return bool(progress.step == Step.SRM_TASK)


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        ("TEST_COMPLETE", "run cleanup first"),
        ("INCOMPLETE_RECOVERY", "re-run the recovery"),
        ("PROTECTION_GROUPS_IN_USE", "shared protection group"),
        ("CANCEL_IN_PROGRESS", "being cancelled"),
        ("DIRECTION_ERROR", "replication direction"),
        ("NO_PROTECTION_GROUPS", "nothing to reprotect"),
    ],
)
async def test_wrong_status_fails_fast_without_post(
    client: Client, task_queue: str, make_sim: MakeSim, status: str, hint: str
) -> None:
    sim = await make_sim(plans=1, plan_overrides={"0": {"status": status}})
    site, plan = unique_site(), plan_ids(sim)[0]
    async with sim_worker(client, task_queue, sim, site):
        handle = await start(client, task_queue, _input(site, plan), sim.pairing_id)
        result = await handle.result()
        if status == "TEST_COMPLETE":
            await maybe_record(handle, "not_eligible")
    assert result.outcome is ReprotectOutcome.FAILED
    assert result.error_type == "PlanNotEligible"
    assert status in (result.reason or "")
    assert hint in (result.reason or "")
    assert [s.step for s in result.steps] == [Step.PRECHECK]
    assert await reprotect_posts(sim, plan) == []


async def test_task_error_reports_srm_message(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=1)
    site, plan = unique_site(), plan_ids(sim)[0]
    await sim.set_faults(fail_plans={plan: "Placeholder datastore 'ds-7' is not accessible"})
    inp = _input(site, plan, retry_incomplete=False)
    async with sim_worker(client, task_queue, sim, site):
        handle = await start(client, task_queue, inp, sim.pairing_id)
        result = await handle.result()
        await maybe_record(handle, "task_error")
    assert result.outcome is ReprotectOutcome.FAILED
    assert result.srm_error == "Placeholder datastore 'ds-7' is not accessible"
    assert "Placeholder datastore 'ds-7'" in (result.reason or "")
    assert len(await reprotect_posts(sim, plan)) == 1


async def test_incomplete_reprotect_is_rerun_once(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=1, groups_per_plan=2, task_seconds=(1.0, 1.0))
    site, plan = unique_site(), plan_ids(sim)[0]
    await sim.set_faults(incomplete_plans=[plan])
    async with sim_worker(client, task_queue, sim, site):
        handle = await start(client, task_queue, _input(site, plan), sim.pairing_id)
        await eventually(lambda: reprotect_posts(sim, plan))
        # The first run is decided incomplete at its start; the cause is then "fixed".
        await sim.set_faults(incomplete_plans=[])
        result = await handle.result()
        await maybe_record(handle, "incomplete_rerun")
    assert result.outcome is ReprotectOutcome.REPROTECTED, result.reason
    assert result.attempts == 2
    assert len(result.srm_task_ids) == 2
    assert not result.forced_used
    assert len(await reprotect_posts(sim, plan)) == 2


async def test_incomplete_twice_fails_without_forced(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=1, plan_overrides={"0": {"incomplete": True}})
    site, plan = unique_site(), plan_ids(sim)[0]
    async with sim_worker(client, task_queue, sim, site):
        result = await run(client, task_queue, _input(site, plan), sim.pairing_id)
    assert result.outcome is ReprotectOutcome.FAILED
    assert result.final_plan_status == "INCOMPLETE_REPROTECT"
    assert "Reprotect completed with errors" in (result.srm_error or "")
    assert result.attempts == 2
    assert not result.forced_used
    assert len(await reprotect_posts(sim, plan)) == 2


async def test_forced_rerun_when_allowed(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=1, plan_overrides={"0": {"incomplete": True}})
    site, plan = unique_site(), plan_ids(sim)[0]
    inp = _input(site, plan, allow_forced_retry=True)
    async with sim_worker(client, task_queue, sim, site):
        result = await run(client, task_queue, inp, sim.pairing_id)
    assert result.outcome is ReprotectOutcome.REPROTECTED, result.reason
    assert result.forced_used
    assert result.attempts == 2
    posts = [e for e in await sim.journal() if e["path"].endswith("/actions/reprotect")]
    assert len(posts) == 2


async def test_503_bursts_and_session_expiry_absorbed(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=1, task_seconds=(3.0, 3.0), session_ttl_s=1.0)
    site, plan = unique_site(), plan_ids(sim)[0]
    async with sim_worker(client, task_queue, sim, site):
        handle = await start(client, task_queue, _input(site, plan), sim.pairing_id)
        await eventually(lambda: reprotect_posts(sim, plan))
        await sim.set_faults(inject=[503, 503, 503, 503], retry_after_s=0)
        result = await handle.result()
    assert result.outcome is ReprotectOutcome.REPROTECTED, result.reason
    posts = await reprotect_posts(sim, plan)
    # A POST answered 401 (session expired just then) was refused, not run: the client logs
    # in again and sends it once more. SRM must have accepted exactly one.
    assert [p["status"] for p in posts if p["status"] != 401] == [202]


async def test_503_on_precheck_and_post_retried(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=1, inject=[503, 503], retry_after_s=1)
    site, plan = unique_site(), plan_ids(sim)[0]
    async with sim_worker(client, task_queue, sim, site):
        result = await run(client, task_queue, _input(site, plan), sim.pairing_id)
    assert result.outcome is ReprotectOutcome.REPROTECTED, result.reason
    assert len(await reprotect_posts(sim, plan)) == 1


async def test_ambiguous_post_500_is_resolved_by_reading_state(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=1)
    site, plan = unique_site(), plan_ids(sim)[0]
    # The POST is refused before reaching SRM logic: nothing started, so a retry posts once.
    await sim.set_faults(inject=[500], method="POST", path_pattern="actions/reprotect$")
    async with sim_worker(client, task_queue, sim, site):
        result = await run(client, task_queue, _input(site, plan), sim.pairing_id)
    assert result.outcome is ReprotectOutcome.REPROTECTED, result.reason
    posts = await reprotect_posts(sim, plan)
    assert [p["status"] for p in posts] == [500, 202]


async def test_cancel_cancels_srm_task(client: Client, task_queue: str, make_sim: MakeSim) -> None:
    sim = await make_sim(plans=1, task_seconds=(30.0, 30.0))
    site, plan = unique_site(), plan_ids(sim)[0]
    async with sim_worker(client, task_queue, sim, site):
        handle = await start(client, task_queue, _input(site, plan), sim.pairing_id)

        async def waiting() -> bool:
            progress = await handle.query(ReprotectPlanWorkflow.progress)
            return progress.step is Step.SRM_TASK

        await eventually(waiting)
        await handle.cancel()
        result = await handle.result()
        await maybe_record(handle, "cancelled")
    assert result.outcome is ReprotectOutcome.CANCELLED, result.reason
    cancels = [e for e in await sim.journal() if e["path"].endswith("/actions/cancel")]
    assert len(cancels) == 1
    assert cancels[0]["status"] == 204
    task = sim.state.tasks[result.srm_task_id or ""]
    assert task.status(sim.state.clock.monotonic()) == "CANCELLED"


async def test_unknown_pairing_and_ambiguous_site(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=1)
    site, plan = unique_site(), plan_ids(sim)[0]
    async with sim_worker(client, task_queue, sim, site):
        result = await run(
            client, task_queue, _input(site, plan, pairing_id="nope"), sim.pairing_id + "x"
        )
    assert result.outcome is ReprotectOutcome.FAILED
    assert result.error_type == "SrmNotFound"
    assert sim.pairing_id in (result.reason or "")
