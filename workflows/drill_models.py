"""Inputs, results and activity payloads of PlanOperationWorkflow and DrillWorkflow.

Like workflows/models.py: pydantic, JSON-friendly, no I/O, no credentials (the webhook secret
stays with the worker), and every field has a default where old payloads must keep loading.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from pydantic import Field, model_validator

from workflows.models import DEFAULT_SITE, Sites, _Model

OPERATION_WORKFLOW_ID_PREFIX = "plan-op"
DRILL_WORKFLOW_ID_PREFIX = "drill"


def operation_workflow_id(site: str, pairing_id: str, plan_id: str) -> str:
    """Business-key id ``plan-op/<site>/<pairing>/<plan>``: one operation per plan at a time."""
    parts = (quote(part, safe=":-_.") for part in (site, pairing_id, plan_id))
    return "/".join((OPERATION_WORKFLOW_ID_PREFIX, *parts))


def drill_workflow_id(site: str, stamp: str) -> str:
    """Workflow id of a drill run started by hand: ``drill/<site>/<stamp>``."""
    return f"{DRILL_WORKFLOW_ID_PREFIX}/{site}/{stamp}"


class Operation(StrEnum):
    """The plan actions SRM offers."""

    TEST = "test"
    CLEANUP = "cleanup"
    RECOVERY = "recovery"
    REPROTECT = "reprotect"
    CANCEL = "cancel"


class OperationOutcome(StrEnum):
    """How one plan operation ended."""

    DONE = "DONE"
    ALREADY_DONE = "ALREADY_DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class OperationAction(StrEnum):
    """What the operation precheck found the workflow should do."""

    START = "START"
    ADOPT = "ADOPT"
    ALREADY_DONE = "ALREADY_DONE"


class PlanOperationInput(_Model):
    """Run one operation on one plan; names a site, never carries credentials."""

    site: str = Field(DEFAULT_SITE, description="Configured SRM site name (worker holds creds)")
    pairing_id: str | None = Field(None, description="SRM pairing; optional with one pairing")
    plan_id: str = Field(description="Recovery plan id as SRM reports it")
    operation: Operation = Field(description="test, cleanup, recovery, reprotect or cancel")
    forced: bool = Field(False, description="cleanup/reprotect with forced=true")
    sync_data: bool = Field(True, description="test/recovery: replicate recent changes first")
    planned_failover: bool = Field(True, description="recovery: planned migration (not DR)")
    verify: bool = Field(True, description="Verify the plan afterwards")
    expected_sites: Sites | None = Field(
        None, description="Sites the plan must show afterwards (default: per operation)"
    )
    poll_interval_seconds: float = Field(5.0, ge=1, description="Seconds between task polls")


class OperationResult(_Model):
    """What one operation did, with the times RTO is measured from."""

    site: str = DEFAULT_SITE
    pairing_id: str | None = None
    plan_id: str = ""
    plan_name: str | None = None
    operation: Operation = Operation.TEST
    outcome: OperationOutcome = OperationOutcome.FAILED
    srm_task_id: str | None = None
    adopted: bool = False
    initial_plan_status: str | None = None
    final_plan_status: str | None = None
    sites_before: Sites | None = None
    sites_after: Sites | None = None
    started_at: datetime | None = None
    task_started_at: datetime | None = None
    verified_at: datetime | None = None
    ended_at: datetime | None = None
    warnings: list[str] = Field(default_factory=list)
    srm_error: str | None = None
    reason: str | None = None
    error_type: str | None = None

    @property
    def seconds_to_verified(self) -> float | None:
        """Start of the SRM operation to its verification (the measured RTO of this step)."""
        if self.task_started_at is None or self.verified_at is None:
            return None
        return (self.verified_at - self.task_started_at).total_seconds()


class OperationProgress(_Model):
    """Answer of the operation workflow's ``progress`` query."""

    operation: Operation = Operation.TEST
    step: str = "pending"
    plan_id: str = ""
    srm_task_id: str | None = None
    outcome: OperationOutcome | None = None


# Activity payloads ------------------------------------------------------------------------


class OperationPrecheckInput(_Model):
    """Which plan and which operation to check."""

    site: str = DEFAULT_SITE
    pairing_id: str | None = None
    plan_id: str
    operation: Operation


class OperationPrecheckResult(_Model):
    """The resolved pairing, the plan as found, and whether to start, adopt or stop."""

    pairing_id: str
    plan_id: str
    plan_name: str | None = None
    plan_status: str
    action: OperationAction
    sites: Sites = Field(default_factory=Sites)
    running_task_id: str | None = None
    baseline_task_ids: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


class StartOperationInput(_Model):
    """Start-or-adopt request of one operation."""

    site: str = DEFAULT_SITE
    pairing_id: str
    plan_id: str
    operation: Operation
    forced: bool = False
    sync_data: bool = True
    planned_failover: bool = True
    baseline_task_ids: list[str] = Field(default_factory=list)


class StartOperationResult(_Model):
    """The SRM task to wait for, and whether srmflow started or adopted it."""

    task_id: str | None = None
    adopted: bool = False
    posted: bool = False
    plan_status: str
    already_done: bool = False
    sites: Sites = Field(default_factory=Sites)


class VerifyOperationInput(_Model):
    """What the plan should look like after the operation."""

    site: str = DEFAULT_SITE
    pairing_id: str
    plan_id: str
    operation: Operation
    expected_sites: Sites | None = None
    settle_seconds: float = 10.0


class CancelOperationInput(_Model):
    """Cancel the plan's running operation, if it is the one srmflow runs."""

    site: str = DEFAULT_SITE
    pairing_id: str
    plan_id: str
    operation: Operation
    task_id: str | None = None
    wait_seconds: float = 120.0
    poll_interval_seconds: float = 2.0


# Drill ----------------------------------------------------------------------------------


class DrillMode(StrEnum):
    """Kind of drill: non-disruptive test, or a disruptive failback round trip."""

    TEST = "test"
    FAILBACK = "failback"


class DrillStep(StrEnum):
    """Steps of a drill, in the order a plan goes through them."""

    TEST = "test"
    CLEANUP = "cleanup"
    RECOVERY = "recovery"
    REPROTECT = "reprotect"
    HOLD = "hold"
    RECOVERY_BACK = "recovery_back"
    REPROTECT_BACK = "reprotect_back"
    VERIFY_DIRECTION = "verify_direction"


class PlanDrillState(StrEnum):
    """Where a plan's drill stands."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    PASSED = "PASSED"
    FAILED = "FAILED"
    NOT_STARTED = "NOT_STARTED"
    CANCELLED = "CANCELLED"


class WebhookTarget(_Model):
    """Where to POST notifications; the HMAC secret is the worker's, never in here."""

    url: str = Field(description="http(s) URL receiving JSON POSTs")
    on_completion: bool = Field(True, description="Notify when the run completes")
    on_failure: bool = Field(True, description="Notify when a plan fails")


class DrillInput(_Model):
    """A drill over a plan selection; names a site, never carries credentials."""

    site: str = Field(DEFAULT_SITE, description="Configured SRM site name (worker holds creds)")
    pairing_id: str | None = Field(None, description="SRM pairing; optional with one pairing")
    plan_ids: list[str] = Field(default_factory=list, description="Plans by id")
    plan_name_glob: str | None = Field(None, description="Plans whose name matches (fnmatch)")
    mode: DrillMode = Field(DrillMode.TEST, description="test (non-disruptive) or failback")
    allow_disruptive: bool = Field(
        False, description="Required for failback: it moves production to the other site and back"
    )
    max_concurrency: int = Field(5, ge=1, le=200, description="Plans in flight at most")
    rto_target_seconds: float | None = Field(
        None, gt=0, description="Pass when each plan's measured RTO is at most this"
    )
    hold_seconds: float | None = Field(
        None, ge=0, description="Hold after the test/failover before cleanup/failback"
    )
    require_approval: bool = Field(
        False, description="Hold until an `approve` update (at most hold_seconds if given)"
    )
    approval_timeout_seconds: float = Field(
        86400.0, gt=0, description="Without hold_seconds: how long to wait for approval"
    )
    forced_cleanup: bool = Field(False, description="Test drill: cleanup with forced=true")
    sync_data: bool = Field(True, description="Replicate recent changes before test/recovery")
    stop_on_failure: bool = Field(
        True, description="After a plan fails, start no further plans (running ones finish)"
    )
    poll_interval_seconds: float = Field(5.0, ge=1, description="SRM task poll interval")
    webhook: WebhookTarget | None = Field(None, description="Optional notification target")
    requested_by: str | None = Field(None, description="Who or what started the drill (audit)")

    @model_validator(mode="after")
    def _one_selection(self) -> DrillInput:
        if bool(self.plan_ids) == bool(self.plan_name_glob):
            raise ValueError("choose exactly one selection: plan_ids or plan_name_glob")
        return self

    def problem(self) -> str | None:
        """Why this drill must not run, or None (checked by the CLI and the workflow)."""
        if self.mode == DrillMode.FAILBACK and not self.allow_disruptive:
            return (
                "a failback drill is disruptive: it fails production over to the recovery site "
                "and back. Set allow_disruptive (--allow-disruptive) to confirm"
            )
        return None


class PlanDrillRow(_Model):
    """One plan's drill: where it stands, measured RTO, verdict and what to do next."""

    plan_id: str
    plan_name: str | None = None
    state: PlanDrillState = PlanDrillState.PENDING
    current_step: DrillStep | None = None
    last_completed_step: DrillStep | None = None
    failed_step: DrillStep | None = None
    plan_status: str | None = None
    sites_before: Sites | None = None
    sites_now: Sites | None = None
    in_original_direction: bool | None = None
    rto_seconds: float | None = None
    return_rto_seconds: float | None = None
    rto_target_seconds: float | None = None
    rto_passed: bool | None = None
    verdict: str = "pending"
    started_at: datetime | None = None
    ended_at: datetime | None = None
    srm_task_ids: list[str] = Field(default_factory=list)
    approved_by: str | None = None
    warnings: list[str] = Field(default_factory=list)
    reason: str | None = None
    error_type: str | None = None
    next_action: str | None = None


class DrillResult(_Model):
    """Per-plan rows, counts and the overall verdict of a drill."""

    site: str = DEFAULT_SITE
    pairing_id: str | None = None
    mode: DrillMode = DrillMode.TEST
    plans: list[PlanDrillRow] = Field(default_factory=list)
    counts: dict[str, int] = Field(default_factory=dict)
    passed: bool = False
    rto_target_seconds: float | None = None
    max_rto_seconds: float | None = None
    stop_reason: str | None = None
    unknown_plan_ids: list[str] = Field(default_factory=list)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_seconds: float = 0.0
    requested_by: str | None = None


class DrillProgress(_Model):
    """Answer of the drill ``progress`` query."""

    mode: DrillMode = DrillMode.TEST
    selected: int = 0
    queued: int = 0
    running: int = 0
    done: bool = False
    waiting_for_approval: list[str] = Field(default_factory=list)
    plans: list[PlanDrillRow] = Field(default_factory=list)
    stop_reason: str | None = None


class DrillApproval(_Model):
    """``approve`` update argument: end the hold of some plans (all when none named)."""

    approver: str = Field(min_length=1)
    plan_ids: list[str] = Field(default_factory=list)


class DrillAck(_Model):
    """What an ``approve`` update released."""

    released: list[str] = Field(default_factory=list)
    message: str = ""


class WebhookInput(_Model):
    """One notification: event name, delivery id and the JSON document to POST."""

    url: str
    event: str
    delivery_id: str
    payload: dict[str, Any] = Field(default_factory=dict)


class WebhookResult(_Model):
    """How the receiver answered."""

    status: int
    attempt: int = 1
