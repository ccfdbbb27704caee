"""SRM requests per plan (issue 8), and the safety of the direct reprotect POST.

The simulator counts every API request by route (``requests`` in ``GET /_sim/state``). A plan
that precheck finds RECOVERY_COMPLETE costs: the plan (precheck), the POST, the task polls
(``GET /tasks`` filtered by id, shared by the plans a worker follows on the site; never
``GET /tasks/{task_id}`` while SRM lists the task), and the plan plus its history reports
(verify). A single reprotect also checks the pairing; a bulk run checks it once for all its
plans. The direct POST (no re-read before it) stays exactly-once: a POST that SRM executed
but whose answer was lost, or a POST that SRM refused because someone else reprotected the
plan first, ends in adoption, never in a second POST.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from activities.srm import EARLY_POLL_MAX_MISSES, _PollPacer
from srmflow.simulator.state import SimError
from srmflow.srm.client import SrmClient
from srmflow.srm.models import Task
from tests.bulk_support import bulk_worker, start_bulk
from tests.reprotect_support import (
    eventually,
    plan_ids,
    reprotect_posts,
    run,
    sim_worker,
    site_settings,
    unique_site,
)
from tests.simfixture import MakeSim, SimHandle
from workflows.bulk_models import BulkReprotectInput
from workflows.models import ReprotectOutcome, ReprotectPlanInput

PLAN = "/pairings/{pairing_id}/recovery-management/plans/{plan_id}"
POLL = "GET /tasks"
PAIRING_CHECK = {
    "GET /pairings": 1,
    "GET /pairings/{pairing_id}": 1,
    "GET /pairings/{pairing_id}/issues": 1,
    "POST /pairings/{pairing_id}/remote-session": 1,
}


def _requests(sim: SimHandle) -> Counter[str]:
    return Counter(sim.state.requests)


def _input(site: str, plan_id: str, **extra: Any) -> ReprotectPlanInput:
    return ReprotectPlanInput(site=site, plan_id=plan_id, poll_interval_seconds=1, **extra)


def _max_polls(sim: SimHandle, poll_seconds: float) -> int:
    """ceil(task duration / poll interval): the first poll one interval after the POST."""
    ops = [t for t in sim.state.tasks.values() if t.kind == "reprotect"]
    longest = max(t.end - t.created for t in ops)
    return math.ceil(longest / poll_seconds)


async def test_single_plan_reads_pairing_plan_polls_and_verify(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=2, task_seconds=(3.0, 3.0))
    site, plan = unique_site(), plan_ids(sim)[0]
    async with sim_worker(client, task_queue, sim, site):
        result = await run(client, task_queue, _input(site, plan), sim.pairing_id)
        counts = _requests(sim)  # before the worker's logout at exit
    assert result.outcome is ReprotectOutcome.REPROTECTED, result.reason
    polls = counts.pop(POLL)
    assert dict(counts) == {
        "POST /session": 1,
        **PAIRING_CHECK,
        f"GET {PLAN}": 2,  # precheck, verify
        f"POST {PLAN}/actions/reprotect": 1,
        f"GET {PLAN}/history-reports": 1,  # verify
    }
    assert 2 <= polls <= _max_polls(sim, 1.0)


async def test_bulk_plan_costs_its_groups_plan_post_polls_and_verify(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    plans = 4
    sim = await make_sim(plans=plans, task_seconds=(2.0, 2.0))
    site = unique_site()
    inp = BulkReprotectInput(
        site=site, all_recovered=True, max_concurrency=plans, poll_interval_seconds=1
    )
    async with bulk_worker(client, task_queue, sim, site):
        handle = await start_bulk(client, task_queue, inp, f"bulk/{site}")
        result = await handle.result()
        counts = _requests(sim)
    assert result.counts.get("REPROTECTED") == plans, result
    polls = counts.pop(POLL)
    assert dict(counts) == {
        # Once per run: login, the pairing check, the plan list.
        "POST /session": 1,
        **PAIRING_CHECK,
        "GET /pairings/{pairing_id}/recovery-management/plans": 1,
        # Per plan: its groups (selection), the plan (precheck and verify), the POST and the
        # newest history report (verify).
        f"GET {PLAN}/protection-groups": plans,
        f"GET {PLAN}": 2 * plans,
        f"POST {PLAN}/actions/reprotect": plans,
        f"GET {PLAN}/history-reports": plans,
    }
    # One GET /tasks may answer the polls of every plan: at least one, at most one per poll.
    assert 1 <= polls <= plans * _max_polls(sim, 1.0)
    assert (await sim.admin("GET", "state"))["reprotect_posts"] == dict.fromkeys(sim.state.plans, 1)


async def test_bulk_run_fails_before_any_post_when_the_pairing_is_down(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=3, remote_site_down=True)
    site = unique_site()
    inp = BulkReprotectInput(site=site, all_recovered=True, poll_interval_seconds=1)
    async with bulk_worker(client, task_queue, sim, site):
        handle = await start_bulk(client, task_queue, inp, f"bulk/{site}")
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    cause: BaseException | None = failure.value.cause
    while cause is not None and not isinstance(cause, ApplicationError):
        cause = getattr(cause, "cause", None)
    assert isinstance(cause, ApplicationError)
    assert cause.type == "PairingUnhealthy"
    assert not [e for e in await sim.journal() if e["path"].endswith("/actions/reprotect")]


async def test_warnings_are_explained_by_groups_vms_and_issues(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    # A forced reprotect ignores SRM's error: the task succeeds, the history says WARNINGS.
    sim = await make_sim(plans=1, task_seconds=(1.0, 1.0), vms_per_group=2)
    site, plan = unique_site(), plan_ids(sim)[0]
    await sim.set_faults(fail_plans={plan: "Failed to delete old shadow VM 'vm-7'"})
    async with sim_worker(client, task_queue, sim, site):
        result = await run(client, task_queue, _input(site, plan, forced=True), sim.pairing_id)
    assert result.outcome is ReprotectOutcome.REPROTECTED, result.reason
    assert any("vm-7" in w for w in result.warnings), result.warnings
    counts = _requests(sim)
    assert counts[f"GET {PLAN}/protection-groups"] == 1
    assert counts["GET /pairings/{pairing_id}/protection-management/groups/{group_id}/vms"] == 1
    assert counts[f"GET {PLAN}/issues"] == 1


def _post_then(sim: SimHandle, after: str) -> list[str]:
    """Wrap the simulator's start: the next reprotect POST is executed, then ``after`` happens.

    ``lost``: SRM runs the reprotect but answers 500, as if the answer was lost on the way.
    ``outside``: someone else's reprotect starts just before ours, which SRM then refuses.
    """
    original = sim.state.start
    started: list[str] = []

    def start(*args: Any, **kwargs: Any) -> str:
        if args[2] != "reprotect" or started:
            return original(*args, **kwargs)
        if after == "outside":
            started.append(original(*args, **kwargs))
            return original(*args, **kwargs)
        started.append(original(*args, **kwargs))
        raise SimError(500, "INTERNAL_ERROR", "the answer was lost")

    sim.state.start = start  # type: ignore[method-assign]
    return started


@pytest.mark.parametrize("task_seconds", [3.0, 0.0], ids=["task-running", "task-finished"])
async def test_direct_post_answer_lost_is_adopted_not_reposted(
    client: Client, task_queue: str, make_sim: MakeSim, task_seconds: float
) -> None:
    sim = await make_sim(plans=1, task_seconds=(task_seconds, task_seconds))
    site, plan = unique_site(), plan_ids(sim)[0]
    started = _post_then(sim, "lost")
    async with sim_worker(client, task_queue, sim, site):
        result = await run(client, task_queue, _input(site, plan), sim.pairing_id)
    assert result.outcome is ReprotectOutcome.REPROTECTED, result.reason
    assert result.srm_task_id == started[0]
    assert result.adopted
    assert [p["status"] for p in await reprotect_posts(sim, plan)] == [500]
    assert [t.id for t in sim.state.tasks.values() if t.kind == "reprotect"] == started


@pytest.mark.parametrize("refusal", ["http400", "task_error"])
async def test_direct_post_refused_after_outside_start_adopts_it(
    client: Client, task_queue: str, make_sim: MakeSim, refusal: str
) -> None:
    sim = await make_sim(plans=1, task_seconds=(2.0, 2.0), wrong_status=refusal)
    site, plan = unique_site(), plan_ids(sim)[0]
    outside = _post_then(sim, "outside")
    async with sim_worker(client, task_queue, sim, site):
        result = await run(client, task_queue, _input(site, plan), sim.pairing_id)
    assert result.outcome is ReprotectOutcome.REPROTECTED, result.reason
    assert result.adopted
    assert result.srm_task_id == outside[0]
    running = [t for t in sim.state.tasks.values() if t.kind == "reprotect" and not t.rejected]
    assert [t.id for t in running] == outside


async def test_rerun_after_a_recovered_precheck_never_adopts_an_older_cycle(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    # The plan went round once before (reprotect, then recovery): SRM still lists that
    # reprotect task. Precheck finds RECOVERY_COMPLETE and records no baseline; the re-run
    # after an incomplete reprotect must POST again rather than adopt the old task.
    sim = await make_sim(plans=1, task_seconds=(0.3, 0.3))
    site, plan = unique_site(), plan_ids(sim)[0]

    async def status_is(wanted: str) -> bool:
        sim.state.tick()  # settle what has finished by now, as any API request would
        return sim.state.plan_status(sim.state.plans[plan]) == wanted

    async with SrmClient(site_settings(sim, "outside")) as outside:
        old = await outside.reprotect(sim.pairing_id, plan)
        await eventually(lambda: status_is("READY_STATE"))
        await outside.recover(sim.pairing_id, plan)
        await eventually(lambda: status_is("RECOVERY_COMPLETE"))
    await sim.set_faults(incomplete_plans=[plan])
    async with sim_worker(client, task_queue, sim, site):
        result = await run(client, task_queue, _input(site, plan), sim.pairing_id)
    assert result.outcome is ReprotectOutcome.FAILED
    assert result.final_plan_status == "INCOMPLETE_REPROTECT"
    assert result.attempts == 2
    assert old.id not in result.srm_task_ids
    ours = [p for p in await reprotect_posts(sim, plan) if p["task_id"] != old.id]
    assert sorted(p["task_id"] for p in ours) == sorted(result.srm_task_ids)


def _task(progress: int, status: str = "RUNNING") -> Task:
    return Task(id="t", status=status, progress=progress)


def test_pacer_polls_early_when_the_task_ends_before_the_next_poll() -> None:
    pacer = _PollPacer(2.0)
    assert pacer.next_delay(_task(15), 2.0) == 2.0  # no rate yet
    assert pacer.next_delay(_task(35), 4.0) == 2.0  # 10 %/s: 6.5 s left
    assert pacer.next_delay(_task(75), 8.0) == 2.0  # 2.5 s left: not before the next poll
    assert pacer.next_delay(_task(95), 10.0) == pytest.approx(0.75)  # 0.5 s left + margin
    # Never sooner than a quarter interval, even when the task should be done already.
    fresh = _PollPacer(2.0)
    fresh.next_delay(_task(10), 0.0)
    assert fresh.next_delay(_task(99), 1.0) == 0.5


def test_pacer_keeps_to_the_interval_after_early_polls_miss() -> None:
    pacer = _PollPacer(2.0)
    pacer.next_delay(_task(50), 0.0)
    now, delays = 2.0, []
    for _ in range(EARLY_POLL_MAX_MISSES + 3):
        delay = pacer.next_delay(_task(99), now)  # stuck at 99 %
        delays.append(delay)
        now += delay
    assert delays[:EARLY_POLL_MAX_MISSES] == [0.5] * EARLY_POLL_MAX_MISSES
    assert delays[EARLY_POLL_MAX_MISSES:] == [2.0] * 3


def test_pacer_waits_the_interval_while_queued_or_without_progress() -> None:
    pacer = _PollPacer(5.0)
    assert pacer.next_delay(_task(0, "QUEUED"), 0.0) == 5.0
    assert pacer.next_delay(Task(id="t", status="RUNNING"), 5.0) == 5.0
    assert pacer.next_delay(_task(40), 10.0) == 5.0
    assert pacer.next_delay(_task(40), 15.0) == 5.0  # no progress: no rate
