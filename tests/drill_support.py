"""Helpers of the drill tests: a worker with every workflow and activity, run helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import aiohttp
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from srmflow.srm.client import SrmClient
from tests.reprotect_support import site_settings
from tests.simfixture import SimHandle
from worker import WORKFLOWS, build_activities
from workflows.drill import DrillWorkflow
from workflows.drill_models import DrillInput, DrillResult


@asynccontextmanager
async def drill_worker(
    client: Client, task_queue: str, sim: SimHandle, site: str, *, secret: str | None = None
) -> AsyncIterator[Worker]:
    """All workflows and activities, as worker.py registers them, against the simulator."""
    async with aiohttp.ClientSession() as http:
        srm = SrmClient(site_settings(sim, site), session=http)
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=WORKFLOWS,
            activities=build_activities({site: srm}, client, webhook_secret=secret, http=http),
            max_concurrent_activities=400,
            graceful_shutdown_timeout=timedelta(seconds=5),
        ) as worker:
            yield worker
        await srm.close()


async def start_drill(
    client: Client, task_queue: str, inp: DrillInput, run_id: str
) -> WorkflowHandle[DrillWorkflow, DrillResult]:
    """Start a drill run."""
    return await client.start_workflow(
        DrillWorkflow.run,
        inp,
        id=run_id,
        task_queue=task_queue,
        execution_timeout=timedelta(minutes=10),
    )


def sim_sites(sim: SimHandle) -> dict[str, tuple[str, str]]:
    """plan id -> (protected site, recovery site) as the simulator shows them now."""
    views = (sim.state.plan_view(plan) for plan in sim.state.plans.values())
    return {v["id"]: (v["protected_site_name"], v["recovery_site_name"]) for v in views}


def sim_statuses(sim: SimHandle) -> dict[str, str]:
    """plan id -> status as the simulator reports it now."""
    return {pid: sim.state.plan_status(plan) for pid, plan in sim.state.plans.items()}
