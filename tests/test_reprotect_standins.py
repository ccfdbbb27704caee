"""Workflow logic on the time-skipping server with stand-in activities (no SRM at all)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from temporalio import activity
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.limits import LimiterActivities
from workflows.limiter import SiteLimiterWorkflow
from workflows.models import (
    PlanAction,
    PrecheckInput,
    PrecheckResult,
    ReprotectOutcome,
    ReprotectPlanInput,
    Sites,
    StartReprotectInput,
    StartReprotectResult,
    TaskOutcome,
    TaskProgress,
    VerifyInput,
    VerifyResult,
    WaitForTaskInput,
)
from workflows.reprotect import ReprotectPlanWorkflow

SITES = Sites(protected_site_name="a", recovery_site_name="b")


@activity.defn(name="precheck")
async def precheck(inp: PrecheckInput) -> PrecheckResult:
    return PrecheckResult(
        pairing_id="p",
        plan_id=inp.plan_id,
        plan_name="plan",
        plan_status="RECOVERY_COMPLETE",
        action=PlanAction.START,
        sites=SITES,
    )


@activity.defn(name="start_reprotect")
async def start_reprotect(inp: StartReprotectInput) -> StartReprotectResult:
    return StartReprotectResult(task_id="task-1", posted=True, plan_status="RECOVERY_COMPLETE")


@activity.defn(name="wait_for_task")
async def wait_forever(inp: WaitForTaskInput) -> TaskOutcome:
    while True:
        activity.heartbeat(TaskProgress(task_id=inp.task_id, status="RUNNING", progress=5))
        await asyncio.sleep(0.2)


@activity.defn(name="wait_for_task")
async def wait_many_heartbeats(inp: WaitForTaskInput) -> TaskOutcome:
    # Two hours of polls every 10 s: heartbeats never become history events.
    for poll in range(720):
        activity.heartbeat(TaskProgress(task_id=inp.task_id, progress=poll * 100 // 720))
    return TaskOutcome(
        task_id=inp.task_id,
        status="SUCCESS",
        progress=100,
        plan_status="READY_STATE",
        sites=SITES.swapped(),
    )


@activity.defn(name="verify")
async def verify(inp: VerifyInput) -> VerifyResult:
    return VerifyResult(ok=True, plan_status="READY_STATE", sites=SITES.swapped())


def _limiter(env: WorkflowEnvironment) -> list[object]:
    """The real site-limiter activities: every plan run waits for an operation slot."""
    limits = LimiterActivities(env.client, {})
    return [limits.request_operation_slot, limits.closed_workflows]


async def _run(env: WorkflowEnvironment, wait: object, inp: ReprotectPlanInput) -> tuple:
    queue = f"ts-{uuid.uuid4()}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[ReprotectPlanWorkflow, SiteLimiterWorkflow],
        activities=[precheck, start_reprotect, wait, verify, *_limiter(env)],  # type: ignore[list-item]
    ):
        handle = await env.client.start_workflow(
            ReprotectPlanWorkflow.run,
            inp,
            id=f"ts-{uuid.uuid4()}",
            task_queue=queue,
            execution_timeout=timedelta(days=1),
        )
        result = await handle.result()
        events = len((await handle.fetch_history()).events)
    return result, events


async def test_deadline_stops_waiting_and_names_the_running_task(
    ts_env: WorkflowEnvironment,
) -> None:
    # A running activity holds the test server's clock, so the deadline is short in real time.
    inp = ReprotectPlanInput(plan_id="plan", poll_interval_seconds=1, deadline_seconds=3)
    result, _ = await _run(ts_env, wait_forever, inp)
    assert result.outcome is ReprotectOutcome.FAILED
    assert result.error_type == "Timeout"
    assert "deadline exceeded" in (result.reason or "")
    assert "task-1" in (result.reason or "")


async def test_heartbeats_do_not_grow_history(ts_env: WorkflowEnvironment) -> None:
    inp = ReprotectPlanInput(plan_id="plan", poll_interval_seconds=10)
    result, events = await _run(ts_env, wait_many_heartbeats, inp)
    assert result.outcome is ReprotectOutcome.REPROTECTED, result.reason
    assert events < 60
