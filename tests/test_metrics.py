"""srmflow's Prometheus metrics, scraped from a worker's endpoint after real runs."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import aiohttp
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from srmflow.converter import DATA_CONVERTER
from srmflow.demo import free_port
from srmflow.leases import RequestLeaseKeeper
from srmflow.metrics import SrmflowMetrics, endpoint_template
from srmflow.srm.client import SrmClient
from srmflow.temporal import build_runtime
from tests.reprotect_support import eventually, run, site_settings, unique_site
from tests.simfixture import MakeSim
from worker import WORKFLOWS, build_activities
from workflows.models import ReprotectPlanInput


def test_endpoint_template_folds_ids() -> None:
    path = "/pairings/6513270e-269e-4d37-b2a7-4de452e6b438/recovery-management/plans/Dr%3Aa%3Ab"
    assert endpoint_template(path) == "/pairings/{id}/recovery-management/plans/{id}"
    assert endpoint_template("/tasks/DrTask%3A1%3A2?limit=5") == "/tasks/{id}"
    assert endpoint_template("/session") == "/session"


def _value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? ([0-9.e+-]+)$", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


async def test_worker_exports_srmflow_metrics(
    dev_env: WorkflowEnvironment, task_queue: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=3, fail_plans={"plan-003": "array pair unreachable"})
    site = unique_site()
    port = free_port()
    runtime = build_runtime(f"127.0.0.1:{port}")
    assert runtime is not None
    client = await Client.connect(
        dev_env.client.service_client.config.target_host,
        data_converter=DATA_CONVERTER,
        runtime=runtime,
    )
    metrics = SrmflowMetrics(runtime.metric_meter)
    plans = list(sim.state.plans)
    settings = site_settings(sim, site)
    stop_leasing = asyncio.Event()
    async with aiohttp.ClientSession() as http:
        srm = SrmClient(settings, session=http, observer=metrics.srm_request)
        keeper = RequestLeaseKeeper(
            client, task_queue, settings, srm.gate, worker_id="metrics-test", metrics=metrics
        )
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=WORKFLOWS,
            activities=build_activities({site: srm}, client, metrics=metrics),
            graceful_shutdown_timeout=timedelta(seconds=5),
        ):
            leasing = asyncio.create_task(keeper.run(stop_leasing))

            async def leased() -> bool:
                return keeper.lease is not None

            await eventually(leased)
            for plan_id in plans:
                inp = ReprotectPlanInput(
                    site=site, plan_id=plan_id, poll_interval_seconds=1, retry_incomplete=False
                )
                await run(client, task_queue, inp, sim.pairing_id)
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                text = await response.text()
            stop_leasing.set()
            await leasing
        await srm.close()

    assert _value(text, "srmflow_plans_finished", site=site, outcome="REPROTECTED") == 2
    assert _value(text, "srmflow_plans_finished", site=site, outcome="FAILED") == 1
    reprotect = "/pairings/{id}/recovery-management/plans/{id}/actions/reprotect"
    assert _value(text, "srmflow_srm_requests", site=site, endpoint=reprotect, status="202") == 3
    assert _value(text, "srmflow_srm_requests", site=site, endpoint="/session", method="POST") >= 1
    assert _value(text, "srmflow_srm_request_latency_count", site=site) > 0
    assert _value(text, "srmflow_srm_task_duration_count", site=site, status="SUCCESS") == 2
    assert _value(text, "srmflow_srm_task_duration_count", site=site, status="ERROR") == 1
    assert _value(text, "srmflow_srm_operations_in_flight", site=site) == 0
    # The worker's share of the site's requests: alone, its own max_in_flight (8 < 16).
    assert _value(text, "srmflow_srm_request_lease", site=site) == settings.max_in_flight
