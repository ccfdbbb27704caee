"""Helpers of the drill tests: a worker with every workflow and activity, run helpers."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import timedelta

from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from tests.bulk_support import bulk_worker
from tests.simfixture import SimHandle
from workflows.drill import DrillWorkflow
from workflows.drill_models import DrillInput, DrillResult


def drill_worker(
    client: Client, task_queue: str, sim: SimHandle, site: str, *, secret: str | None = None
) -> AbstractAsyncContextManager[Worker]:
    """The bulk tests' worker (every workflow and activity), with a webhook secret."""
    return bulk_worker(client, task_queue, sim, site, webhook_secret=secret)


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
