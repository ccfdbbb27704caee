"""SiteLimiterWorkflow on the time-skipping server: order, reuse, reclaim, cancel, carry-over."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import CancelledError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.limits import LimiterActivities
from tests.limiter_holder import HolderWorkflow
from tests.reprotect_support import eventually, maybe_record
from tests.test_reprotect_standins import precheck, start_reprotect, verify, wait_many_heartbeats
from workflows.limiter import IDLE_SECONDS, SiteLimiterWorkflow
from workflows.limiter_models import LimiterState, SlotRelease, limiter_workflow_id
from workflows.models import ReprotectOutcome, ReprotectPlanInput
from workflows.reprotect import ReprotectPlanWorkflow


class Bench:
    """A worker with the limiter, the holder workflow and the reprotect stand-ins."""

    def __init__(self, client: Client, queue: str, site: str) -> None:
        self.client, self.queue, self.site = client, queue, site

    async def holder(self, name: str) -> WorkflowHandle[HolderWorkflow, str]:
        return await self.client.start_workflow(
            HolderWorkflow.run, self.site, id=f"{self.site}-{name}", task_queue=self.queue
        )

    def limiter(self) -> WorkflowHandle[SiteLimiterWorkflow, LimiterState]:
        return self.client.get_workflow_handle_for(
            SiteLimiterWorkflow.run, limiter_workflow_id(self.site, self.queue)
        )

    async def start_limiter(self, continue_as_new_events: int) -> str:
        """Start the limiter with a short history threshold; its first run id."""
        handle = await self.client.start_workflow(
            SiteLimiterWorkflow.run,
            LimiterState(site=self.site, capacity=2, continue_as_new_events=continue_as_new_events),
            id=limiter_workflow_id(self.site, self.queue),
            task_queue=self.queue,
        )
        assert handle.result_run_id is not None
        return handle.result_run_id

    async def status(self) -> LimiterState:
        return await self.limiter().query(SiteLimiterWorkflow.status)

    async def until(self, holders: list[str], waiting: list[str]) -> None:
        want = ([f"{self.site}-{h}" for h in holders], [f"{self.site}-{w}" for w in waiting])

        async def reached() -> bool:
            try:
                st = await self.status()
            except Exception:
                return False
            # Holders in any order (they may ask at the same moment), the queue in FIFO order.
            got = (sorted(h.workflow_id for h in st.holders), [w.workflow_id for w in st.waiting])
            return got == (sorted(want[0]), want[1])

        await eventually(reached, within=30)


@asynccontextmanager
async def _bench(client: Client) -> AsyncIterator[Bench]:
    queue, site = f"lim-{uuid.uuid4()}", f"site-{uuid.uuid4().hex[:8]}"
    limits = LimiterActivities(client, {site: 2})
    async with Worker(
        client,
        task_queue=queue,
        workflows=[SiteLimiterWorkflow, HolderWorkflow, ReprotectPlanWorkflow],
        activities=[
            limits.request_operation_slot,
            limits.closed_workflows,
            precheck,
            start_reprotect,
            wait_many_heartbeats,
            verify,
        ],
    ):
        yield Bench(client, queue, site)


@pytest.fixture
async def bench(dev_env: WorkflowEnvironment) -> AsyncIterator[Bench]:
    """On the dev server: real time, nothing skips ahead while the test waits."""
    async with _bench(dev_env.client) as made:
        yield made


@pytest.fixture
async def ts_bench(ts_env: WorkflowEnvironment) -> AsyncIterator[Bench]:
    """On the time-skipping server, for the limiter's own timers (audit, idle end)."""
    async with _bench(ts_env.client) as made:
        yield made


async def test_slots_are_granted_in_order_and_reused(bench: Bench) -> None:
    a, b = await bench.holder("a"), await bench.holder("b")
    await bench.until(["a", "b"], [])
    c = await bench.holder("c")
    await bench.until(["a", "b"], ["c"])
    d = await bench.holder("d")
    await bench.until(["a", "b"], ["c", "d"])
    await b.signal(HolderWorkflow.finish)
    assert await b.result() == "done"
    await bench.until(["a", "c"], ["d"])
    for handle in (a, c, d):
        await handle.signal(HolderWorkflow.finish)
    assert await asyncio.gather(a.result(), c.result(), d.result()) == ["done"] * 3
    status = await bench.status()
    await maybe_record(bench.limiter(), "limiter_granted_in_order")
    assert (status.capacity, status.granted_total, status.max_held) == (2, 4, 2)
    assert status.holders == []
    assert status.waiting == []


async def test_idle_limiter_ends_with_its_totals(
    ts_bench: Bench, ts_env: WorkflowEnvironment
) -> None:
    a = await ts_bench.holder("a")
    await ts_bench.until(["a"], [])
    await a.signal(HolderWorkflow.finish)
    with ts_env.auto_time_skipping_disabled():
        assert await a.result() == "done"
    # Idle for IDLE_SECONDS, the limiter ends; its result is its final state.
    await ts_env.sleep(IDLE_SECONDS + 1)
    final = await ts_bench.limiter().result()
    await maybe_record(ts_bench.limiter(), "limiter_idle_end")
    assert (final.capacity, final.granted_total, final.max_held) == (2, 1, 1)
    assert final.holders == []
    assert final.waiting == []


async def test_slot_of_a_terminated_holder_is_reclaimed(
    ts_bench: Bench, ts_env: WorkflowEnvironment
) -> None:
    bench = ts_bench
    a, b = await bench.holder("a"), await bench.holder("b")
    await bench.until(["a", "b"], [])
    c = await bench.holder("c")
    await bench.until(["a", "b"], ["c"])
    await a.terminate("operator terminated the run")
    # While plans wait, the limiter checks its holders every AUDIT_SECONDS.
    await ts_env.sleep(61)
    await bench.until(["b", "c"], [])
    for handle in (b, c):
        await handle.signal(HolderWorkflow.finish)
    # No skipping ahead while awaiting results: it would run the holders into timeouts.
    with ts_env.auto_time_skipping_disabled():
        assert await asyncio.gather(b.result(), c.result()) == ["done", "done"]
    await maybe_record(bench.limiter(), "limiter_reclaimed")


async def test_cancelled_waiter_leaves_the_queue(bench: Bench) -> None:
    a, b = await bench.holder("a"), await bench.holder("b")
    await bench.until(["a", "b"], [])
    c = await bench.holder("c")
    await bench.until(["a", "b"], ["c"])
    await c.cancel()
    with pytest.raises(WorkflowFailureError) as ended:
        await c.result()
    assert isinstance(ended.value.cause, CancelledError)
    await bench.until(["a", "b"], [])
    for handle in (a, b):
        await handle.signal(HolderWorkflow.finish)
        assert await handle.result() == "done"


async def test_continue_as_new_carries_holders_and_totals(bench: Bench) -> None:
    # A short history threshold, so that a few grants already make the limiter carry over.
    first_run = await bench.start_limiter(continue_as_new_events=25)
    keep = await bench.holder("keep")
    for n in range(6):
        handle = await bench.holder(f"h{n}")
        await bench.until(["keep", f"h{n}"], [])
        await handle.signal(HolderWorkflow.finish)
        assert await handle.result() == "done"

    async def continued() -> bool:
        # At the first lull (QUIET_SECONDS without a message) past the threshold.
        return (await bench.limiter().describe()).run_id != first_run

    await eventually(continued, within=20)
    first = bench.client.get_workflow_handle(bench.limiter().id, run_id=first_run)
    await maybe_record(first, "limiter_continued_as_new")
    status = await bench.status()
    assert status.granted_total == 7
    assert [h.workflow_id for h in status.holders] == [f"{bench.site}-keep"]
    await keep.signal(HolderWorkflow.finish)
    assert await keep.result() == "done"


async def test_reprotect_deadline_runs_out_while_queued(bench: Bench) -> None:
    holders = [await bench.holder("a"), await bench.holder("b")]
    await bench.until(["a", "b"], [])
    result = await bench.client.execute_workflow(
        ReprotectPlanWorkflow.run,
        ReprotectPlanInput(
            site=bench.site, plan_id="plan", poll_interval_seconds=1, deadline_seconds=3
        ),
        id=f"{bench.site}-reprotect",
        task_queue=bench.queue,
        execution_timeout=timedelta(hours=1),
    )
    assert result.outcome is ReprotectOutcome.FAILED
    assert result.error_type == "Deadline"
    assert "waiting for an SRM operation slot" in (result.reason or "")
    assert result.srm_task_ids == []
    await bench.until(["a", "b"], [])
    for handle in holders:
        await handle.signal(HolderWorkflow.finish)
        assert await handle.result() == "done"


async def test_continue_as_new_waits_out_a_stream_of_messages(bench: Bench) -> None:
    # A limiter past its history threshold while messages stream in: closing the run then
    # would fail its workflow task on every message that lands meanwhile (UnhandledCommand)
    # and replay it from the start, again and again. It continues at the first lull instead.
    first_run = await bench.start_limiter(continue_as_new_events=150)
    limiter = bench.limiter()
    stream = [SlotRelease(workflow_id=f"nobody-{n}", run_id="r") for n in range(300)]

    async def sender(lane: int) -> None:
        for release in stream[lane::10]:
            await limiter.signal(SiteLimiterWorkflow.release, release)

    await asyncio.gather(*(sender(lane) for lane in range(10)))

    async def continued() -> bool:
        return (await limiter.describe()).run_id != first_run

    await eventually(continued, within=30)
    first = bench.client.get_workflow_handle(limiter.id, run_id=first_run)
    await maybe_record(first, "limiter_quiet_continue")
    history = await first.fetch_history()
    failed = [
        e.workflow_task_failed_event_attributes.cause
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]
    signals = sum(
        e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED for e in history.events
    )
    assert failed == [], "no attempt to continue while messages kept coming"
    assert signals == len(stream), "the first run served the whole stream"
