"""Activities of the per-site operation limiter: ask for a slot, find holders that have closed."""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from workflows.limiter import SiteLimiterWorkflow
from workflows.limiter_models import (
    DEFAULT_MAX_OPERATIONS,
    LimiterState,
    SlotRelease,
    SlotRequest,
    limiter_workflow_id,
)

log = structlog.get_logger(__name__)


class LimiterActivities:
    """Talks to the site limiters through the worker's Temporal client.

    ``capacities`` maps each configured site to its ``max_operations`` setting; the limiter
    adopts the value carried by the latest request, so set it alike on every worker.
    """

    def __init__(self, temporal: Client, capacities: Mapping[str, int]) -> None:
        self._temporal = temporal
        self._capacities = dict(capacities)

    @activity.defn
    async def request_operation_slot(self, req: SlotRequest) -> int:
        """Queue ``req`` at the site's limiter, starting the limiter if needed (signal-with-start).

        Returns the capacity sent. Idempotent: a retried request never takes a second slot.
        """
        capacity = self._capacities.get(req.site, DEFAULT_MAX_OPERATIONS)
        request = req.model_copy(update={"capacity": capacity})
        await self._temporal.start_workflow(
            SiteLimiterWorkflow.run,
            LimiterState(site=req.site, capacity=capacity),
            id=limiter_workflow_id(req.site, req.task_queue),
            task_queue=req.task_queue,
            start_signal="acquire",
            start_signal_args=[request],
        )
        log.info(
            "operation_slot_requested",
            site=req.site,
            workflow_id=req.workflow_id,
            capacity=capacity,
        )
        return capacity

    @activity.defn
    async def closed_workflows(self, refs: list[SlotRelease]) -> list[SlotRelease]:
        """The workflow runs among ``refs`` that are no longer running (or no longer exist)."""
        closed: list[SlotRelease] = []
        for ref in refs:
            handle = self._temporal.get_workflow_handle(ref.workflow_id, run_id=ref.run_id)
            try:
                desc = await handle.describe()
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
                closed.append(ref)
                continue
            if desc.status != WorkflowExecutionStatus.RUNNING:
                closed.append(ref)
        return closed
