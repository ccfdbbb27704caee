"""Payloads of the per-site SRM operation limiter (``workflows/limiter.py``).

A slot is held by one plan workflow run (workflow id + run id) while its SRM operation may be
running: from just before the start POST until the task has ended.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

LIMITER_ID_PREFIX = "srmflow-site-limiter"
GRANT_SIGNAL = "operation_slot_granted"
DEFAULT_MAX_OPERATIONS = 10
# Continue-as-new once the limiter's history is this long (and whenever Temporal suggests it).
CONTINUE_AS_NEW_EVENTS = 4000


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


class LimiterState(_Model):
    """The limiter's whole state: its input, its query answer and what continue-as-new carries."""

    site: str
    capacity: int = Field(DEFAULT_MAX_OPERATIONS, ge=1)
    holders: list[SlotHolder] = Field(default_factory=list)
    waiting: list[SlotHolder] = Field(default_factory=list)
    granted_total: int = 0
    max_held: int = 0
    continue_as_new_events: int = CONTINUE_AS_NEW_EVENTS
