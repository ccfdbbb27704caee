"""Request leases: each worker process's share of a site's limit on concurrent SRM requests.

``SRMFLOW_SRM_MAX_REQUESTS`` bounds the HTTP requests open against one SRM at once, across all
workers. The site limiter workflow (``workflows/limiter.py``) keeps one lease per live worker
process; ``RequestLeaseKeeper`` renews this worker's lease with the limiter's
``lease_requests`` update and resizes the SRM client's ``RequestGate`` to the grant.

Safety rests on three rules. The limiter never grants more than the other leases leave free,
counting a worker that shrinks at its old size until it reports its open requests closed. A
worker that has not renewed for ``LEASE_TRUST_SECONDS`` (Temporal unreachable) stops opening
requests. The limiter keeps a silent worker's lease for that long plus the SRM request
timeout, so whatever the worker still had open has ended before the share is handed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import timedelta

import structlog
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from srmflow.metrics import SrmflowMetrics
from srmflow.settings import SrmSiteSettings
from srmflow.srm.gate import RequestGate
from workflows.limiter import SiteLimiterWorkflow
from workflows.limiter_models import (
    LimiterState,
    RequestLease,
    RequestLeaseAsk,
    limiter_workflow_id,
)

log = structlog.get_logger(__name__)

# A grant is used for this long after the request that got it; renewals come far sooner.
LEASE_TRUST_SECONDS = 30.0
# Extra seconds the limiter holds a silent worker's lease beyond trust + request timeout.
HOLD_MARGIN_SECONDS = 5.0
UPDATE_TIMEOUT = timedelta(seconds=10)
MAX_RETRY_SECONDS = 5.0


def new_worker_id(temporal: Client) -> str:
    """A lease holder name unique to this process start (``pid@host`` plus a random suffix)."""
    return f"{temporal.identity}/{uuid.uuid4().hex[:8]}"


class RequestLeaseKeeper:
    """Keeps one worker's request lease for one site; ``run`` until ``stop`` is set."""

    def __init__(
        self,
        temporal: Client,
        task_queue: str,
        site: SrmSiteSettings,
        gate: RequestGate,
        *,
        worker_id: str,
        trust_seconds: float = LEASE_TRUST_SECONDS,
        metrics: SrmflowMetrics | None = None,
    ) -> None:
        self._temporal = temporal
        self._task_queue = task_queue
        self._site = site
        self._gate = gate
        self._worker = worker_id
        self._trust = trust_seconds
        self._metrics = metrics
        self._lease: RequestLease | None = None
        self._workflow_id = limiter_workflow_id(site.name, task_queue)

    @property
    def lease(self) -> RequestLease | None:
        """The last grant received (None before the first)."""
        return self._lease

    async def run(self, stop: asyncio.Event) -> None:
        """Renew the lease as the limiter asks; on lapse, hold every new request."""
        loop = asyncio.get_running_loop()
        trusted_until: float | None = None
        failures = 0
        while not stop.is_set():
            asked = loop.time()
            # An answer that comes after the trust ran out is of no use: stop waiting then.
            budget = UPDATE_TIMEOUT.total_seconds()
            if trusted_until is not None:
                budget = max(0.1, min(budget, trusted_until - asked))
            delay: float
            try:
                lease = await asyncio.wait_for(self._ask(), budget)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = min(MAX_RETRY_SECONDS, 0.5 * 2**failures)
                log.warning(
                    "request_lease_failed",
                    site=self._site.name,
                    error=str(exc) or type(exc).__name__,
                    error_type=type(exc).__name__,
                    retry_in=delay,
                )
            else:
                failures = 0
                trusted_until = asked + self._trust
                await self._apply(lease)
                delay = lease.renew_in_seconds
            now = loop.time()
            if trusted_until is None or now >= trusted_until:
                await self._lapse()
            else:
                # Renew well before the trust runs out, even if the limiter said later.
                delay = min(delay, (trusted_until - now) / 2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def release(self) -> None:
        """Give the share back (best effort); call once this worker has no request open."""
        await self._gate.resize(0)
        if self._lease is None:
            return
        handle = self._temporal.get_workflow_handle(self._workflow_id)
        try:
            await handle.signal(SiteLimiterWorkflow.drop_lease, self._worker)
        except RPCError as exc:
            log.info("request_lease_not_released", site=self._site.name, error=exc.message)

    async def _ask(self) -> RequestLease:
        ask = RequestLeaseAsk(
            site=self._site.name,
            task_queue=self._task_queue,
            worker=self._worker,
            capacity=self._site.max_requests,
            want=self._site.max_in_flight,
            limit=self._gate.limit,
            in_use=self._gate.open,
            hold_seconds=self._trust + self._site.request_timeout + HOLD_MARGIN_SECONDS,
        )
        handle = self._temporal.get_workflow_handle(self._workflow_id)
        try:
            return await handle.execute_update(
                SiteLimiterWorkflow.lease_requests, ask, rpc_timeout=UPDATE_TIMEOUT
            )
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
        # No limiter running for this site yet (or it ended while idle): start it.
        await self._temporal.start_workflow(
            SiteLimiterWorkflow.run,
            LimiterState(site=self._site.name, capacity=self._site.max_operations),
            id=self._workflow_id,
            task_queue=self._task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        return await handle.execute_update(
            SiteLimiterWorkflow.lease_requests, ask, rpc_timeout=UPDATE_TIMEOUT
        )

    async def _apply(self, lease: RequestLease) -> None:
        previous, self._lease = self._lease, lease
        await self._gate.resize(lease.granted)
        if self._metrics is not None:
            self._metrics.request_lease(self._site.name, lease.granted)
        if previous is None or (previous.granted, previous.workers) != (
            lease.granted,
            lease.workers,
        ):
            log.info(
                "request_lease",
                site=self._site.name,
                granted=lease.granted,
                fair=lease.fair,
                workers=lease.workers,
                max_requests=lease.capacity,
            )
            if lease.fair == 0:
                log.warning(
                    "request_lease_empty",
                    site=self._site.name,
                    workers=lease.workers,
                    hint="more workers than SRMFLOW_SRM_MAX_REQUESTS; raise it or run fewer",
                )

    async def _lapse(self) -> None:
        if self._gate.limit == 0:
            return
        log.error(
            "request_lease_lapsed",
            site=self._site.name,
            hint="Temporal unreachable; SRM requests wait until the lease is renewed",
        )
        await self._gate.resize(0)
        if self._metrics is not None:
            self._metrics.request_lease(self._site.name, 0)
