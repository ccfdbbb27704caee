"""Payloads of the per-site SRM limiter (``workflows/limiter.py``).

Operation slots: a slot is held by one plan workflow run (workflow id + run id) while its SRM
operation may be running, from just before the start POST until the task has ended.

Request leases: each worker process leases a share of the site's limit on concurrent HTTP
requests (``max_requests``); ``share_requests`` decides the shares.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

LIMITER_ID_PREFIX = "srmflow-site-limiter"
GRANT_SIGNAL = "operation_slot_granted"
DEFAULT_MAX_OPERATIONS = 10
# Continue-as-new at the first lull once the limiter's history is this long (or Temporal
# suggests it); a short history keeps the replay after a failed attempt short.
CONTINUE_AS_NEW_EVENTS = 2000


def limiter_workflow_id(site: str, task_queue: str) -> str:
    """Id of the limiter of ``site`` for the workers of ``task_queue``.

    ``srmflow-site-limiter/<site>/<task queue>``: the limiter runs on that queue, so it is
    served exactly as long as the plans that use it are (a queue retired after an upgrade
    takes its limiter along instead of leaving it without a worker).
    """
    parts = (quote(part, safe=":-_.") for part in (site, task_queue))
    return "/".join((LIMITER_ID_PREFIX, *parts))


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SlotHolder(_Model):
    """One plan workflow run that holds, or waits for, an operation slot."""

    workflow_id: str
    run_id: str
    label: str | None = Field(None, description="What the holder operates on (plan id)")
    since: datetime | None = Field(None, description="When it was granted (or asked)")


class SlotRequest(_Model):
    """Ask the site's limiter for a slot; the grant arrives as signal ``GRANT_SIGNAL``."""

    site: str
    task_queue: str = Field(description="The plan workflow's task queue; the limiter's too")
    workflow_id: str
    run_id: str
    label: str | None = None
    capacity: int | None = Field(
        None, ge=1, description="The site's limit as the requesting worker is configured"
    )


class SlotRelease(_Model):
    """Give a slot back (or stop waiting for one)."""

    workflow_id: str
    run_id: str


class SlotGrant(_Model):
    """Sent by the limiter to the holder when its slot is free."""

    site: str
    run_id: str


class RequestLeaseAsk(_Model):
    """A worker process asks for (or renews) its share of the site's concurrent requests."""

    site: str
    task_queue: str
    worker: str = Field(description="Unique per worker process start")
    capacity: int = Field(ge=1, description="The site's max_requests as this worker has it")
    want: int = Field(ge=0, description="The most this worker would use (its max_in_flight)")
    limit: int = Field(0, ge=0, description="The worker's limit in force while it asks")
    in_use: int = Field(0, ge=0, description="Requests the worker had open when it asked")
    hold_seconds: float = Field(
        gt=0, description="Keep the lease this long without renewal (covers open requests)"
    )


class RequestLease(_Model):
    """The limiter's answer: how many requests the worker may keep open, and when to ask again."""

    granted: int
    fair: int = Field(description="The worker's fair share; granted is lower while others shrink")
    workers: int
    capacity: int
    renew_in_seconds: float


class WorkerLease(_Model):
    """A worker's lease as the limiter keeps it."""

    worker: str
    want: int
    granted: int
    held: int = Field(description="What the limiter counts against the site until renewal")
    expires: datetime


class LimiterState(_Model):
    """The limiter's whole state: its input, its query answer and what continue-as-new carries."""

    site: str
    capacity: int = Field(DEFAULT_MAX_OPERATIONS, ge=1)
    holders: list[SlotHolder] = Field(default_factory=list)
    waiting: list[SlotHolder] = Field(default_factory=list)
    granted_total: int = 0
    max_held: int = 0
    continue_as_new_events: int = CONTINUE_AS_NEW_EVENTS
    request_capacity: int | None = Field(None, description="The site's max_requests")
    leases: list[WorkerLease] = Field(default_factory=list)


def fair_shares(capacity: int, wants: Mapping[str, int]) -> dict[str, int]:
    """Split ``capacity`` among workers by water-filling: nobody gets more than it wants, the
    rest is split evenly (ties broken by worker name, so the answer is deterministic).
    The shares never add up to more than ``capacity``.
    """
    shares: dict[str, int] = {}
    remaining = capacity
    order = sorted(wants, key=lambda name: (wants[name], name))
    for index, name in enumerate(order):
        left = len(order) - index
        share = min(wants[name], -(-remaining // left))
        shares[name] = share
        remaining -= share
    return shares


def share_requests(ask: RequestLeaseAsk, others: list[WorkerLease]) -> tuple[int, int, int]:
    """``(granted, fair, held)`` for ``ask`` given the other workers' live leases.

    Strict: the grant never exceeds what the others' ``held`` counts leave free. ``held`` is
    what the asking worker may still have open until its next renewal: its new grant, the
    limit it had while asking, or the requests it had open, whichever is largest (a worker
    whose share shrinks keeps its open requests; they count until it reports them closed).
    """
    wants = {lease.worker: lease.want for lease in others}
    wants[ask.worker] = ask.want
    fair = fair_shares(ask.capacity, wants)[ask.worker]
    free = ask.capacity - sum(lease.held for lease in others)
    granted = max(0, min(fair, free))
    held = max(granted, ask.limit, ask.in_use)
    return granted, fair, held
