"""Issue 4: a worker killed twice and the dev server restarted once during a 100-plan bulk run.

Real processes: a Temporal dev server with SQLite file persistence and ``srmflow worker``
subprocesses (srmflow.demo.DemoStack); the simulator runs in the test process so that the
first kill can happen inside the reprotect POST handler — SRM has started the task, the worker
never sees the answer. The run must still end with one result per plan, every plan
REPROTECTED, exactly one reprotect POST per plan, no group overlap and the concurrency bound
kept.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError

from srmflow.demo import SIM_PASSWORD, SIM_REMOTE_PASSWORD, SIM_REMOTE_USER, SIM_USER, DemoStack
from tests.reprotect_support import eventually
from tests.simfixture import MakeSim, SimHandle
from workflows.bulk import BulkReprotectWorkflow
from workflows.bulk_models import BulkReprotectInput, BulkReprotectResult
from workflows.models import ReprotectOutcome

PLANS = 100
CONCURRENCY = 20
WORKER_ENV = {
    "SRMFLOW_GRACEFUL_SHUTDOWN_SECONDS": "5",
    "SRMFLOW_LOG_LEVEL": "INFO",
    # The site's operation limit (default 10) would hold the run below its concurrency.
    "SRMFLOW_SRM_MAX_OPERATIONS": str(CONCURRENCY),
    # A killed worker's workflows move to the next worker after this, not the default 10 s.
    "SRMFLOW_STICKY_QUEUE_TIMEOUT_SECONDS": "2",
}

Handle = WorkflowHandle[BulkReprotectWorkflow, BulkReprotectResult]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[DemoStack]:
    """A DemoStack whose processes are always stopped, pass or fail."""
    demo = DemoStack(state_dir=tmp_path / "stack", task_queue="bulk-restart")
    try:
        yield demo
    finally:
        left = demo.stop()
        assert not left, f"could not stop: {left}"


async def _results(handle: Handle) -> int:
    """Plans with a recorded result, or -1 while no worker can answer the query."""
    try:
        progress = await asyncio.wait_for(handle.query(BulkReprotectWorkflow.progress), 5)
    except (RPCError, TimeoutError):
        return -1
    return progress.finished


async def _wait_results(handle: Handle, count: int, within: float = 120) -> None:
    async def reached() -> bool:
        return await _results(handle) >= count

    await eventually(reached, within=within, interval=0.2)


def _kill_on_next_reprotect_post(sim: SimHandle, pid: int) -> list[str]:
    """SIGKILL ``pid`` inside the next reprotect POST, after SRM has started the task."""
    original = sim.state.start
    started: list[str] = []

    def start_then_kill(*args: Any, **kwargs: Any) -> str:
        task_id = original(*args, **kwargs)
        if args[2] == "reprotect" and not started:
            started.append(task_id)
            os.kill(pid, signal.SIGKILL)
            sim.state.start = original  # type: ignore[method-assign]
        return task_id

    sim.state.start = start_then_kill  # type: ignore[method-assign]
    return started


async def _replace_worker(stack: DemoStack, name: str, new_name: str) -> None:
    proc = stack.procs[name]

    async def exited() -> bool:
        return proc.poll() is not None

    await eventually(exited, within=30)
    assert stack.kill(name) == proc.pid
    assert proc.returncode == -signal.SIGKILL
    stack.start_worker(new_name, WORKER_ENV)


async def test_worker_killed_twice_and_server_restarted(
    stack: DemoStack, make_sim: MakeSim
) -> None:
    sim = await make_sim(
        plans=PLANS,
        shared_pairs=10,
        task_seconds=(0.5, 1.5),
        enforce_group_conflicts=False,
        username=SIM_USER,
        password=SIM_PASSWORD,
        remote_username=SIM_REMOTE_USER,
        remote_password=SIM_REMOTE_PASSWORD,
    )
    stack.sim_port = int(sim.root_url.rsplit(":", 1)[1])
    stack.start_temporal()
    stack.start_worker("worker-1", WORKER_ENV)
    client: Client = await stack.wait_ready()
    handle: Handle = await client.start_workflow(
        BulkReprotectWorkflow.run,
        BulkReprotectInput(
            all_recovered=True,
            max_concurrency=CONCURRENCY,
            poll_interval_seconds=1,
            retry_incomplete=False,
        ),
        id="bulk-reprotect/default/restart",
        task_queue=stack.task_queue,
        execution_timeout=timedelta(minutes=5),
    )

    # Kill 1: inside a reprotect POST, once 20 plans have results.
    await _wait_results(handle, 20)
    posted = _kill_on_next_reprotect_post(sim, stack.procs["worker-1"].pid)
    await _replace_worker(stack, "worker-1", "worker-2")
    assert len(posted) == 1

    # The dev server restarts on the same port and SQLite file.
    await _wait_results(handle, 35)
    stack.restart_temporal()
    await stack.wait_ready()

    # Kill 2: mid-run, whatever the worker is doing, once 50 plans have results.
    await _wait_results(handle, 50)
    os.kill(stack.procs["worker-2"].pid, signal.SIGKILL)
    await _replace_worker(stack, "worker-2", "worker-3")

    result = await asyncio.wait_for(handle.result(), 180)

    per_plan = Counter(p.plan_id for p in result.plans)
    assert set(per_plan) == set(sim.state.plans)
    assert set(per_plan.values()) == {1}, "every plan has exactly one result"
    not_ok = {
        p.plan_id: p.reason for p in result.plans if p.outcome != ReprotectOutcome.REPROTECTED
    }
    assert not not_ok
    state = await sim.admin("GET", "state")
    assert state["reprotect_posts"] == dict.fromkeys(sim.state.plans, 1)
    assert state["group_overlaps"] == []
    assert state["max_in_flight"] <= CONCURRENCY
    adopted = next(p for p in result.plans if p.srm_task_id == posted[0])
    assert adopted.outcome == ReprotectOutcome.REPROTECTED
