"""Helpers of the bulk tests: a worker with every srmflow workflow and activity, run helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import aiohttp
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from srmflow.srm.client import SrmClient
from tests.reprotect_support import site_settings
from tests.simfixture import SimHandle
from worker import WORKFLOWS, build_activities
from workflows.bulk import BulkReprotectWorkflow
from workflows.bulk_models import BulkProgress, BulkReprotectInput, BulkReprotectResult


@asynccontextmanager
async def bulk_worker(
    client: Client,
    task_queue: str,
    sim: SimHandle,
    site: str,
    *,
    webhook_secret: str | None = None,
    max_cached_workflows: int = 1000,
    **srm_overrides: Any,
) -> AsyncIterator[Worker]:
    """All workflows and activities, as worker.py registers them, against the simulator."""
    async with aiohttp.ClientSession() as http:
        srm = SrmClient(site_settings(sim, site, **srm_overrides), session=http)
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=WORKFLOWS,
            activities=build_activities(
                {site: srm}, client, webhook_secret=webhook_secret, http=http
            ),
            max_concurrent_activities=400,
            max_cached_workflows=max_cached_workflows,
            graceful_shutdown_timeout=timedelta(seconds=5),
        ) as worker:
            yield worker
        await srm.close()


async def start_bulk(
    client: Client, task_queue: str, inp: BulkReprotectInput, run_id: str
) -> WorkflowHandle[BulkReprotectWorkflow, BulkReprotectResult]:
    """Start a bulk run."""
    return await client.start_workflow(
        BulkReprotectWorkflow.run,
        inp,
        id=run_id,
        task_queue=task_queue,
        execution_timeout=timedelta(minutes=10),
    )


async def progress(handle: WorkflowHandle[Any, Any]) -> BulkProgress:
    """The run's progress query."""
    return await handle.query(BulkReprotectWorkflow.progress)


def outcomes(result: BulkReprotectResult) -> dict[str, str]:
    """plan id -> outcome."""
    return {p.plan_id: p.outcome.value for p in result.plans}
