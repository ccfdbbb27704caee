"""Helpers shared by the reprotect tests: an in-process worker on the simulator, waits."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.worker import Worker

from srmflow.settings import SrmSiteSettings
from srmflow.srm.client import SrmClient
from tests.simfixture import SimHandle
from worker import WORKFLOWS, build_activities
from workflows.models import ReprotectPlanInput, ReprotectPlanResult, reprotect_workflow_id
from workflows.reprotect import ReprotectPlanWorkflow

T = TypeVar("T")


def unique_site() -> str:
    """A site name unique to the test, so workflow ids never collide across tests."""
    return f"t{uuid.uuid4().hex[:10]}"


def site_settings(sim: SimHandle, name: str, **overrides: Any) -> SrmSiteSettings:
    """SrmSiteSettings pointing at the simulator."""
    values: dict[str, Any] = {
        "name": name,
        "url": sim.base_url,
        "username": sim.username,
        "password": sim.password,
        "remote_username": sim.remote_username,
        "remote_password": sim.remote_password,
        "request_timeout": 5.0,
        "connect_timeout": 2.0,
    }
    values.update(overrides)
    return SrmSiteSettings(**values)


@asynccontextmanager
async def sim_worker(
    client: Client, task_queue: str, sim: SimHandle, site: str
) -> AsyncIterator[Worker]:
    """The real workflow and SrmActivities against the simulator, in this process."""
    async with aiohttp.ClientSession() as http:
        srm = SrmClient(site_settings(sim, site), session=http)
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=WORKFLOWS,
            activities=build_activities({site: srm}, client),
            graceful_shutdown_timeout=timedelta(seconds=5),
        ) as worker:
            yield worker
        await srm.close()


def plan_ids(sim: SimHandle) -> list[str]:
    """Plan ids of the simulator, in inventory order."""
    return list(sim.state.plans)


async def start(
    client: Client, task_queue: str, inp: ReprotectPlanInput, pairing_id: str
) -> WorkflowHandle[ReprotectPlanWorkflow, ReprotectPlanResult]:
    """Start (or attach to) the reprotect workflow by its business-key id."""
    return await client.start_workflow(
        ReprotectPlanWorkflow.run,
        inp,
        id=reprotect_workflow_id(inp.site, pairing_id, inp.plan_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        execution_timeout=timedelta(minutes=5),
    )


async def run(
    client: Client, task_queue: str, inp: ReprotectPlanInput, pairing_id: str
) -> ReprotectPlanResult:
    """Start the workflow and wait for its result."""
    handle = await start(client, task_queue, inp, pairing_id)
    return await handle.result()


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, within: float = 20.0, interval: float = 0.05
) -> T:
    """Poll ``probe`` until it returns something truthy, or fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)


async def reprotect_posts(sim: SimHandle, plan_id: str) -> list[dict[str, Any]]:
    """Journal entries of reprotect POSTs for the plan."""
    return [
        e
        for e in await sim.journal()
        if e["method"] == "POST"
        and e["path"].endswith("/actions/reprotect")
        and e["plan_id"] == plan_id
    ]


async def history_events(handle: WorkflowHandle[Any, Any]) -> int:
    """Number of events in the workflow's history."""
    history = await handle.fetch_history()
    return len(history.events)


HISTORIES = Path(__file__).resolve().parent / "histories"


async def maybe_record(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """Save the workflow's history as tests/histories/<set>/<name>.json when asked to.

    After a deliberate workflow change (a new ``workflow.patched`` branch), run the suite with
    ``SRMFLOW_RECORD_HISTORIES=<set>``, a new folder named after the change (e.g.
    ``3-limiter-quiet``), review the files and commit them next to the older sets;
    test_replay.py replays every set against the current code.
    """
    folder = os.environ.get("SRMFLOW_RECORD_HISTORIES")
    if not folder:
        return
    history = await handle.fetch_history()
    (HISTORIES / folder).mkdir(parents=True, exist_ok=True)
    text = json.dumps(json.loads(history.to_json()), indent=1, sort_keys=True)
    (HISTORIES / folder / f"{name}.json").write_text(text + "\n", encoding="utf-8")
