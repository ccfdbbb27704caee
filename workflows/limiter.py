"""SiteLimiterWorkflow: at most N SRM operations at a time per site, across workers and runs.

One long-lived workflow per SRM site and task queue (id
``srmflow-site-limiter/<site>/<task queue>``, running on that queue) acts as a counting
semaphore. A plan workflow asks for a slot through the ``request_operation_slot`` activity
(signal-with-start, so the limiter starts on first use) and waits for the ``GRANT_SIGNAL``
signal; it gives the slot back with the ``release`` signal once its SRM task has ended.
Because the state lives in Temporal, the limit holds whichever worker runs the plan, however
many bulk runs share the site, and across worker crashes (a crashed worker's plans keep their
slots: their SRM tasks are still running).

Slots of holders that closed without releasing (a terminated workflow) are reclaimed: a grant
that cannot be delivered frees the slot at once, and while plans wait the limiter checks its
holders every ``AUDIT_SECONDS`` with the ``closed_workflows`` activity. The queue is FIFO.

The limiter also splits the site's limit on concurrent HTTP requests (``max_requests``) among
the live worker processes: each worker renews a lease with the ``lease_requests`` update
(``srmflow/leases.py``) and sizes its SRM client to the grant. Leases are strict (a grant never
exceeds what the other leases leave free, see ``share_requests``); a worker that stops
renewing stops sending requests after ``LEASE_TRUST_SECONDS`` and its lease expires later
(its open requests have ended by then).

The limiter continues-as-new carrying its state (past its history threshold, at the first
lull in messages), and ends after ``IDLE_SECONDS`` without
holders, waiters or live leases (the next request starts it again).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, FailureError

with workflow.unsafe.imports_passed_through():
    import workflows.policies as policies
    from workflows.limiter_models import (
        GRANT_SIGNAL,
        LimiterState,
        RequestLease,
        RequestLeaseAsk,
        SlotGrant,
        SlotHolder,
        SlotRelease,
        SlotRequest,
        WorkerLease,
        limiter_workflow_id,
        share_requests,
    )

IDLE_SECONDS = 300.0
AUDIT_SECONDS = 60.0
REQUEST_TIMEOUT = timedelta(seconds=30)
REQUEST_SCHEDULE_TIMEOUT = timedelta(minutes=10)
# Past its history threshold the limiter continues-as-new once no message came for this long,
# or at once past HARD_CONTINUE_FACTOR times the threshold (tests/test_limiter.py).
QUIET_CONTINUE_PATCH = "limiter-continue-as-new-when-quiet"
QUIET_SECONDS = 2.0
HARD_CONTINUE_FACTOR = 5
# A worker renews its request lease this often, or after REBALANCE_SECONDS while shares move.
RENEW_SECONDS = 10.0
REBALANCE_SECONDS = 1.0


def _same(a: SlotHolder, workflow_id: str, run_id: str) -> bool:
    return a.workflow_id == workflow_id and a.run_id == run_id


@workflow.defn
class SiteLimiterWorkflow:
    """Counting semaphore of one SRM site's concurrent operations."""

    @workflow.init
    def __init__(self, state: LimiterState) -> None:
        self._state = state.model_copy(deep=True)
        self._changed = False
        self._sending = 0

    @workflow.run
    async def run(self, state: LimiterState) -> LimiterState:
        """Grant slots as they free up until idle; continue-as-new when history grows."""
        while True:
            self._changed = False
            self._grant()
            if self._history_long():
                if not workflow.patched(QUIET_CONTINUE_PATCH):
                    await self._continue_as_new()
                # Continue at a lull: a message arriving while the run closes fails its
                # workflow task, and the replay that follows gives the next one time to come
                # (a run fed many messages a second could retry for minutes, its lease
                # updates unanswered). Past HARD_CONTINUE_FACTOR times the threshold, at once.
                self._expire_leases()
                if self._history_too_long() or not await self._wait_change(QUIET_SECONDS):
                    await self._continue_as_new()
                continue
            st = self._state
            self._expire_leases()
            if not st.holders and not st.waiting and st.leases:
                # Idle but for leases: wake when the first one expires.
                first = min(lease.expires for lease in st.leases)
                await self._wait_change(max(1.0, (first - workflow.now()).total_seconds()))
            elif not st.holders and not st.waiting:
                if not await self._wait_change(IDLE_SECONDS):
                    await workflow.wait_condition(lambda: self._sending == 0)
                    if not st.holders and not st.waiting and not st.leases:
                        return self._state
            elif st.waiting and not await self._wait_change(AUDIT_SECONDS):
                await self._audit()
            elif not st.waiting:
                await workflow.wait_condition(lambda: self._changed)

    @workflow.signal
    def acquire(self, req: SlotRequest) -> None:
        """Queue ``req`` (idempotent: a holder asking again gets its grant again)."""
        st = self._state
        if req.capacity is not None:
            st.capacity = req.capacity
        self._changed = True
        for holder in st.holders:
            if _same(holder, req.workflow_id, req.run_id):
                self._deliver(holder)
                return
        if any(_same(w, req.workflow_id, req.run_id) for w in st.waiting):
            return
        st.waiting.append(
            SlotHolder(
                workflow_id=req.workflow_id,
                run_id=req.run_id,
                label=req.label,
                since=workflow.now(),
            )
        )

    @workflow.signal
    def release(self, rel: SlotRelease) -> None:
        """Free the slot of ``rel`` (or take it out of the queue)."""
        self._drop(rel.workflow_id, rel.run_id)

    @workflow.update
    def lease_requests(self, ask: RequestLeaseAsk) -> RequestLease:
        """Grant (or renew) the asking worker's share of the site's concurrent requests."""
        st = self._state
        st.request_capacity = ask.capacity
        self._expire_leases()
        others = [lease for lease in st.leases if lease.worker != ask.worker]
        granted, fair, held = share_requests(ask, others)
        expires = workflow.now() + timedelta(seconds=ask.hold_seconds)
        lease = WorkerLease(
            worker=ask.worker, want=ask.want, granted=granted, held=held, expires=expires
        )
        st.leases = [*others, lease]
        self._changed = True
        settling = granted < fair or held > granted
        return RequestLease(
            granted=granted,
            fair=fair,
            workers=len(st.leases),
            capacity=ask.capacity,
            renew_in_seconds=REBALANCE_SECONDS if settling else RENEW_SECONDS,
        )

    @workflow.signal
    def drop_lease(self, worker: str) -> None:
        """A worker stopped and has no request open: its share is free."""
        self._state.leases = [lease for lease in self._state.leases if lease.worker != worker]
        self._changed = True

    @workflow.query
    def status(self) -> LimiterState:
        """Capacity, holders, the queue and totals."""
        return self._state

    # --- internals ----------------------------------------------------------------------------

    def _grant(self) -> None:
        st = self._state
        while st.waiting and len(st.holders) < st.capacity:
            holder = st.waiting.pop(0)
            holder.since = workflow.now()
            st.holders.append(holder)
            st.granted_total += 1
            st.max_held = max(st.max_held, len(st.holders))
            self._deliver(holder)

    def _deliver(self, holder: SlotHolder) -> None:
        self._sending += 1
        asyncio.get_running_loop().create_task(self._send_grant(holder))

    async def _send_grant(self, holder: SlotHolder) -> None:
        handle = workflow.get_external_workflow_handle(holder.workflow_id, run_id=holder.run_id)
        try:
            grant = SlotGrant(site=self._state.site, run_id=holder.run_id)
            await handle.signal(GRANT_SIGNAL, grant)
        except FailureError:
            # The holder has closed: its slot is free again.
            workflow.logger.info(
                "slot holder gone", extra={"workflow_id": holder.workflow_id, "site": self._site}
            )
            self._drop(holder.workflow_id, holder.run_id)
        finally:
            self._sending -= 1

    def _drop(self, workflow_id: str, run_id: str) -> None:
        st = self._state
        st.holders = [h for h in st.holders if not _same(h, workflow_id, run_id)]
        st.waiting = [w for w in st.waiting if not _same(w, workflow_id, run_id)]
        self._changed = True

    def _expire_leases(self) -> None:
        now = workflow.now()
        st = self._state
        live = [lease for lease in st.leases if lease.expires > now]
        for lease in st.leases:
            if lease.expires <= now:
                workflow.logger.warning(
                    "request lease expired", extra={"worker": lease.worker, "site": self._site}
                )
        st.leases = live

    async def _wait_change(self, seconds: float) -> bool:
        """Wait for a signal to change the state; False when ``seconds`` passed without one."""
        try:
            await workflow.wait_condition(lambda: self._changed, timeout=seconds)
        except TimeoutError:
            return False
        return True

    async def _audit(self) -> None:
        """Free the slots of holders that closed without releasing them."""
        holders = [
            SlotRelease(workflow_id=h.workflow_id, run_id=h.run_id) for h in self._state.holders
        ]
        if not holders:
            return
        closed: list[SlotRelease] = await workflow.execute_activity(
            "closed_workflows",
            holders,
            result_type=list[SlotRelease],
            start_to_close_timeout=REQUEST_TIMEOUT,
            retry_policy=policies.SRM_CALL_RETRY,
        )
        for gone in closed:
            workflow.logger.warning(
                "slot holder closed without releasing",
                extra={"workflow_id": gone.workflow_id, "site": self._site},
            )
            self._drop(gone.workflow_id, gone.run_id)

    async def _continue_as_new(self) -> None:
        await workflow.wait_condition(
            lambda: self._sending == 0 and workflow.all_handlers_finished()
        )
        workflow.continue_as_new(self._state)

    def _history_too_long(self) -> bool:
        events = workflow.info().get_current_history_length()
        return events >= HARD_CONTINUE_FACTOR * self._state.continue_as_new_events

    def _history_long(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= self._state.continue_as_new_events
        )

    @property
    def _site(self) -> str:
        return self._state.site


class OperationSlot:
    """A plan workflow's side of the limiter: ask, wait for the grant, give back.

    ``ask`` sends the request at once (a local activity: one signal-with-start, no task-queue
    round trip), so it can overlap the precheck; ``acquire`` waits for the grant, which the
    plan workflow's ``GRANT_SIGNAL`` handler forwards to ``on_grant``. ``release`` is safe to
    call at any time and more than once.
    """

    def __init__(self, site: str) -> None:
        self.site = site
        self.requested = False
        self.granted = False
        self._asking: asyncio.Task[Any] | None = None

    def ask(self, label: str | None) -> None:
        """Queue this run at the site's limiter without waiting for the grant."""
        info = workflow.info()
        self.requested = True
        self._asking = asyncio.ensure_future(
            workflow.execute_local_activity(
                "request_operation_slot",
                SlotRequest(
                    site=self.site,
                    task_queue=info.task_queue,
                    workflow_id=info.workflow_id,
                    run_id=info.run_id,
                    label=label,
                ),
                start_to_close_timeout=REQUEST_TIMEOUT,
                schedule_to_close_timeout=REQUEST_SCHEDULE_TIMEOUT,
                retry_policy=policies.SRM_CALL_RETRY,
            )
        )

    async def acquire(self, label: str | None, wait_at_most: timedelta | None) -> bool:
        """Ask (unless ``ask`` did) and wait for the slot; False when ``wait_at_most`` passed."""
        if self._asking is None:
            self.ask(label)
        assert self._asking is not None
        await self._asking
        try:
            await workflow.wait_condition(lambda: self.granted, timeout=wait_at_most)
        except TimeoutError:
            return False
        return True

    def on_grant(self, grant: SlotGrant) -> None:
        """Record a grant addressed to this run."""
        if self.requested and grant.run_id == workflow.info().run_id:
            self.granted = True

    async def release(self) -> None:
        """Give the slot back (or leave the queue); a limiter that has ended holds nothing."""
        if self._asking is not None and not self._asking.done():
            self._asking.cancel()
            with contextlib.suppress(asyncio.CancelledError, ActivityError):
                await self._asking
        if not self.requested:
            return
        info = workflow.info()
        handle = workflow.get_external_workflow_handle(
            limiter_workflow_id(self.site, info.task_queue)
        )
        try:
            await handle.signal(
                SiteLimiterWorkflow.release,
                SlotRelease(workflow_id=info.workflow_id, run_id=info.run_id),
            )
        except FailureError:
            workflow.logger.info("site limiter gone; nothing to release", extra={"site": self.site})
        self.requested = self.granted = False


class HoldsOperationSlot:
    """Base of the plan workflows that take a slot: forwards the limiter's grant to ``_slot``."""

    _slot: OperationSlot

    @workflow.signal(name=GRANT_SIGNAL)
    def operation_slot_granted(self, grant: SlotGrant) -> None:
        """The site limiter granted this run an SRM operation slot."""
        self._slot.on_grant(grant)
