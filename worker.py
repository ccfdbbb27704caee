"""srmflow worker: settings -> logging -> Temporal client -> one aiohttp session -> SrmClients
-> SrmActivities -> Worker.run(). Wiring only; SIGTERM/SIGINT drain it gracefully.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import aiohttp
import structlog
from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.worker import Worker

from activities.bulk import BulkActivities
from activities.limits import LimiterActivities
from activities.notify import NotifyActivities
from activities.operations import OperationActivities
from activities.srm import SrmActivities
from srmflow.entry import hard_exit
from srmflow.leases import RequestLeaseKeeper, new_worker_id
from srmflow.log import configure_logging
from srmflow.metrics import SrmflowMetrics
from srmflow.settings import ConfigError, Settings, load_settings
from srmflow.srm.client import SrmClient
from srmflow.srm.gate import RequestGate
from srmflow.temporal import build_runtime, connect
from srmflow.tracing import shutdown_tracing, start_tracing
from workflows.bulk import BulkReprotectWorkflow
from workflows.drill import DrillWorkflow
from workflows.limiter import SiteLimiterWorkflow
from workflows.operation import PlanOperationWorkflow
from workflows.reprotect import ReprotectPlanWorkflow

log = structlog.get_logger("srmflow.worker")

WORKFLOWS: list[type] = [
    ReprotectPlanWorkflow,
    BulkReprotectWorkflow,
    PlanOperationWorkflow,
    DrillWorkflow,
    SiteLimiterWorkflow,
]


def build_activities(
    srm: dict[str, SrmClient],
    temporal: Client,
    *,
    webhook_secret: str | None = None,
    http: aiohttp.ClientSession | None = None,
    metrics: SrmflowMetrics | None = None,
    max_operations: Mapping[str, int] | None = None,
) -> list[Callable[..., Any]]:
    """Every activity method this worker registers, bound to the injected clients.

    ``max_operations`` is each site's limit on concurrent SRM operations (default 10).
    """
    acts = SrmActivities(srm, metrics)
    limits = LimiterActivities(temporal, max_operations or {})
    bulk = BulkActivities(acts, temporal)
    ops = OperationActivities(acts)
    notify = NotifyActivities(webhook_secret, http)
    return [
        acts.precheck,
        acts.start_reprotect,
        acts.wait_for_task,
        acts.verify,
        acts.cancel_task,
        bulk.resolve_selection,
        bulk.await_reprotect_workflow,
        ops.precheck_operation,
        ops.start_operation,
        ops.verify_operation,
        ops.cancel_operation,
        notify.send_webhook,
        limits.request_operation_slot,
        limits.closed_workflows,
    ]


def _webhook_secret(settings: Settings) -> str | None:
    """SRMFLOW_WEBHOOK_SECRET in clear, for the notify activity only."""
    secret = settings.webhook_secret
    return secret.get_secret_value() if secret is not None else None


def _connector_limit(settings: Settings) -> int:
    return max(8, sum(site.max_in_flight for site in settings.sites.values()) * 2)


async def run_worker(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run the worker until ``stop`` is set (or SIGTERM/SIGINT when no event is given)."""
    stop = stop or _signal_event()
    tracing = start_tracing(settings)
    runtime = build_runtime(settings.metrics_bind)
    client = await _connect_patiently(settings, runtime, stop)
    metrics = SrmflowMetrics((runtime or Runtime.default()).metric_meter)
    observer = tracing.srm_observer(metrics.srm_request) if tracing else metrics.srm_request
    connector = aiohttp.TCPConnector(limit=_connector_limit(settings))
    async with aiohttp.ClientSession(connector=connector) as http:
        # Each client opens no request until its first lease arrives (RequestLeaseKeeper).
        srm = {
            name: SrmClient(site, session=http, observer=observer, gate=RequestGate(0))
            for name, site in settings.sites.items()
        }
        worker_id = new_worker_id(client)
        keepers = [
            RequestLeaseKeeper(
                client,
                settings.task_queue,
                site,
                srm[name].gate,
                worker_id=worker_id,
                metrics=metrics,
            )
            for name, site in settings.sites.items()
        ]
        leasing = asyncio.Event()
        worker = Worker(
            client,
            task_queue=settings.task_queue,
            workflows=WORKFLOWS,
            activities=build_activities(
                srm,
                client,
                webhook_secret=_webhook_secret(settings),
                http=http,
                metrics=metrics,
                max_operations={name: site.max_operations for name, site in settings.sites.items()},
            ),
            max_concurrent_activities=settings.max_concurrent_activities,
            max_concurrent_workflow_tasks=settings.max_concurrent_workflow_tasks,
            max_cached_workflows=settings.max_cached_workflows,
            graceful_shutdown_timeout=timedelta(seconds=settings.graceful_shutdown_seconds),
            sticky_queue_schedule_to_start_timeout=timedelta(
                seconds=settings.sticky_queue_timeout_seconds
            ),
        )
        renewals: list[asyncio.Task[None]] = []
        try:
            async with worker:
                renewals = [asyncio.create_task(keeper.run(leasing)) for keeper in keepers]
                log.info(
                    "worker_started",
                    task_queue=settings.task_queue,
                    namespace=settings.temporal_namespace,
                    sites=sorted(srm),
                    metrics=settings.metrics_bind,
                    tracing=settings.tracing,
                    worker_id=worker_id,
                )
                await stop.wait()
                log.info("worker_draining", grace_seconds=settings.graceful_shutdown_seconds)
        finally:
            # Drained: log out while the lease still allows it, then give the shares back.
            for site_client in srm.values():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(site_client.close(), LOGOUT_SECONDS)
            leasing.set()
            await asyncio.gather(*renewals, return_exceptions=True)
            for keeper in keepers:
                with contextlib.suppress(Exception):
                    await keeper.release()
    log.info("worker_stopped")


# Logging out of SRM at shutdown waits no longer than this (e.g. when the lease has lapsed).
LOGOUT_SECONDS = 10.0

# A worker often starts before the Temporal frontend answers (compose, Kubernetes, the demo):
# it retries for this long before giving up with exit code 1.
CONNECT_PATIENCE_SECONDS = 60.0


async def _connect_patiently(
    settings: Settings, runtime: Runtime | None, stop: asyncio.Event
) -> Client:
    """Connect to Temporal, retrying an unreachable frontend for CONNECT_PATIENCE_SECONDS."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + CONNECT_PATIENCE_SECONDS
    delay = 0.5
    while True:
        try:
            return await connect(settings, runtime=runtime)
        except RuntimeError as exc:
            # Client.connect raises RuntimeError when the frontend cannot be reached.
            if loop.time() + delay > give_up or stop.is_set():
                raise
            log.warning("temporal_unreachable", error=str(exc), retry_in=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 5.0)


def _signal_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def main_async(settings: Settings) -> int:
    """Entry for ``srmflow worker``: configure logging, run until signalled, return exit code."""
    configure_logging(settings.log_level, settings.log_format)
    try:
        await run_worker(settings)
    except ConfigError as exc:
        log.error("worker_config_error", error=str(exc))
        return 2
    except Exception as exc:
        # Unreachable Temporal and the like: one clear line, not a traceback, and exit 1.
        log.error("worker_failed", error=str(exc), error_type=type(exc).__name__)
        return 1
    finally:
        # Before hard_exit: os._exit would drop the spans still in the export buffer.
        shutdown_tracing()
    return 0


async def _main_async() -> int:
    try:
        settings = load_settings(require_site=True)
    except ConfigError as exc:
        print(f"srmflow worker: {exc}", file=sys.stderr)
        return 2
    return await main_async(settings)


def main() -> None:
    """Run the worker process and exit without interpreter finalisation."""
    hard_exit(asyncio.run(_main_async()))


if __name__ == "__main__":
    main()
