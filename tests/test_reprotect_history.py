"""History stays small and clean: a 2-hour SRM task, no secrets anywhere in the history."""

from __future__ import annotations

import asyncio

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory

from srmflow.simulator.state import ManualClock
from tests.reprotect_support import (
    history_events,
    maybe_record,
    plan_ids,
    reprotect_posts,
    sim_worker,
    start,
    unique_site,
)
from tests.simfixture import MakeSim
from workflows.models import ReprotectOutcome, ReprotectPlanInput

TWO_HOURS = 7200.0


async def test_two_hour_task_has_small_clean_history(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    clock = ManualClock()
    sim = await make_sim(plans=1, clock=clock, task_seconds=(TWO_HOURS, TWO_HOURS))
    site, plan = unique_site(), plan_ids(sim)[0]
    inp = ReprotectPlanInput(site=site, plan_id=plan, poll_interval_seconds=1)
    session_ids: set[str] = set()
    async with sim_worker(client, task_queue, sim, site):
        handle = await start(client, task_queue, inp, sim.pairing_id)
        result_task = asyncio.ensure_future(handle.result())
        # SRM's clock runs 2 hours (150 s per 0.1 s) while the worker polls every real second.
        deadline = asyncio.get_running_loop().time() + 60
        while not result_task.done() and asyncio.get_running_loop().time() < deadline:
            session_ids.update(sim.state.sessions)
            if any(t.kind == "reprotect" for t in sim.state.tasks.values()):
                clock.advance(150.0)
            await asyncio.sleep(0.1)
        result = await asyncio.wait_for(result_task, timeout=10)
        session_ids.update(sim.state.sessions)
        await maybe_record(handle, "two_hour_task")
        events = await history_events(handle)
        history = await handle.fetch_history()
        exported = history.to_json()
    assert result.outcome is ReprotectOutcome.REPROTECTED, result.reason
    assert len(await reprotect_posts(sim, plan)) == 1
    assert events < 60, f"{events} history events for one plan"
    assert clock.monotonic() >= TWO_HOURS
    assert session_ids, "the worker never logged in"
    for secret in (sim.password, sim.remote_password, *session_ids):
        assert secret not in exported
    assert "x-dr-session" not in exported.lower()
    assert "authorization" not in exported.lower()
    # The long wait heartbeats less often (six poll intervals) than the short steps (three, at
    # least 5 s): one wait_for_task per running plan is most of a bulk run's heartbeats.
    assert _heartbeat_timeouts(history) == {
        "precheck": 5.0,
        "start_reprotect": 5.0,
        "wait_for_task": 6.0,
        "verify": 5.0,
    }


def _heartbeat_timeouts(history: WorkflowHistory) -> dict[str, float]:
    return {
        e.activity_task_scheduled_event_attributes.activity_type.name: (
            e.activity_task_scheduled_event_attributes.heartbeat_timeout.ToTimedelta()
        ).total_seconds()
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
