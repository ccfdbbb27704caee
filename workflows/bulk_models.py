"""Inputs, results, control messages and carried state of BulkReprotectWorkflow.

Like workflows/models.py: pydantic, JSON-friendly, no I/O, no credentials, every field has a
default so that recorded histories and continue-as-new payloads keep loading.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field, model_validator

from workflows.drill_models import WebhookTarget
from workflows.models import DEFAULT_SITE, ReprotectOutcome, _Model

BULK_WORKFLOW_ID_PREFIX = "bulk-reprotect"


def bulk_workflow_id(site: str, stamp: str) -> str:
    """Workflow id of a bulk run: ``bulk-reprotect/<site>/<stamp>``."""
    return f"{BULK_WORKFLOW_ID_PREFIX}/{site}/{stamp}"


class BulkReprotectInput(_Model):
    """Which plans to reprotect and how; names a site, never carries credentials."""

    site: str = Field(DEFAULT_SITE, description="Configured SRM site name (worker holds creds)")
    pairing_id: str | None = Field(
        None, description="SRM pairing; optional when the site has exactly one pairing"
    )
    plan_ids: list[str] = Field(default_factory=list, description="Plans by id")
    plan_name_glob: str | None = Field(None, description="Plans whose name matches (fnmatch)")
    all_recovered: bool = Field(
        False, description="Every plan whose status needs reprotect (RECOVERY_COMPLETE etc.)"
    )
    max_concurrency: int = Field(10, ge=1, le=500, description="Plans in flight at most")
    forced: bool = Field(
        False, description="Pre-approve forced reprotect for plans that stay incomplete"
    )
    dry_run: bool = Field(False, description="Prechecks only: report what would happen")
    stop_after_failures: int | None = Field(
        None, ge=1, description="Stop starting new plans after this many failures"
    )
    retry_incomplete: bool = Field(
        True, description="Re-run a plan once when it ends INCOMPLETE_REPROTECT"
    )
    approval_timeout_seconds: float = Field(
        3600.0, gt=0, description="How long to wait for approve_forced before failing the plan"
    )
    verify: bool = Field(True, description="Verify each plan after its reprotect")
    poll_interval_seconds: float = Field(5.0, ge=1, description="SRM task poll interval")
    plan_deadline_seconds: float | None = Field(
        None, gt=0, description="Deadline of each plan's workflow"
    )
    estimate_plan_seconds: float = Field(
        900.0, gt=0, description="Assumed plan duration for the dry-run duration estimate"
    )
    continue_as_new_after_events: int = Field(
        8000, ge=50, description="History length at which the run drains and continues as new"
    )
    requested_by: str | None = Field(None, description="Who or what started the run (audit)")
    webhook: WebhookTarget | None = Field(
        None, description="Signed JSON POSTs when a plan fails and when the run completes"
    )
    state: BulkState | None = Field(
        None, description="Carried across continue-as-new by the workflow itself; leave unset"
    )

    @model_validator(mode="after")
    def _one_selection(self) -> BulkReprotectInput:
        chosen = [bool(self.plan_ids), bool(self.plan_name_glob), self.all_recovered]
        if sum(chosen) != 1:
            raise ValueError(
                "choose exactly one selection: plan_ids, plan_name_glob or all_recovered"
            )
        return self


class PlanRef(_Model):
    """A selected plan with what the scheduler needs: its protection groups."""

    plan_id: str
    plan_name: str | None = None
    status: str | None = None
    group_ids: list[str] = Field(default_factory=list)


class SelectionInput(_Model):
    """Selection to resolve against SRM."""

    site: str = DEFAULT_SITE
    pairing_id: str | None = None
    plan_ids: list[str] = Field(default_factory=list)
    plan_name_glob: str | None = None
    all_recovered: bool = False


class Selection(_Model):
    """Resolved selection: the pairing, the plans in order, and ids SRM does not know."""

    pairing_id: str
    plans: list[PlanRef] = Field(default_factory=list)
    unknown_plan_ids: list[str] = Field(default_factory=list)


class AwaitWorkflowInput(_Model):
    """A reprotect workflow started elsewhere, to be awaited rather than started twice."""

    workflow_id: str


class PlanSummary(_Model):
    """Compact per-plan line of a bulk result; the full detail stays in the plan's workflow."""

    plan_id: str
    plan_name: str | None = None
    workflow_id: str | None = None
    outcome: ReprotectOutcome = ReprotectOutcome.FAILED
    srm_task_id: str | None = None
    final_plan_status: str | None = None
    reason: str | None = None
    error_type: str | None = None
    srm_error: str | None = None
    attempts: int = 0
    forced_used: bool = False
    approved_by: str | None = None
    attached: bool = False
    started_at: datetime | None = None
    ended_at: datetime | None = None


class InFlightPlan(_Model):
    """A plan whose workflow is running now."""

    plan_id: str
    plan_name: str | None = None
    workflow_id: str
    started_at: datetime
    waiting_for_approval: bool = False


class DryRunPlan(_Model):
    """Precheck verdict of one plan in a dry run."""

    plan_id: str
    plan_name: str | None = None
    status: str | None = None
    action: str | None = None
    blocked_reason: str | None = None
    error_type: str | None = None


class GroupConflict(_Model):
    """Plans that share a protection group and so run one after another."""

    group_id: str
    plan_ids: list[str] = Field(default_factory=list)


class DryRunReport(_Model):
    """What a real run would do."""

    would_reprotect: list[DryRunPlan] = Field(default_factory=list)
    already_protected: list[DryRunPlan] = Field(default_factory=list)
    blocked: list[DryRunPlan] = Field(default_factory=list)
    conflicts: list[GroupConflict] = Field(default_factory=list)
    estimated_seconds: float = 0.0


class RunState(StrEnum):
    """Lifecycle of a bulk run as the progress query shows it."""

    RESOLVING = "resolving"
    RUNNING = "running"
    PAUSED = "paused"
    DRAINING = "draining"
    STOPPING = "stopping"
    DONE = "done"


class BulkState(_Model):
    """Everything a bulk run carries across continue-as-new."""

    pairing_id: str | None = None
    queue: list[PlanRef] = Field(default_factory=list)
    results: list[PlanSummary] = Field(default_factory=list)
    started_at: datetime | None = None
    concurrency: int = 10
    paused: bool = False
    stop_reason: str | None = None
    cancel_running: bool = False
    selected: int = 0
    runs: int = 1


class BulkReprotectResult(_Model):
    """Per-plan outcomes, counts, timings and failure causes of a bulk run."""

    site: str = DEFAULT_SITE
    pairing_id: str | None = None
    dry_run: bool = False
    plans: list[PlanSummary] = Field(default_factory=list)
    counts: dict[str, int] = Field(default_factory=dict)
    failures_by_cause: dict[str, list[str]] = Field(default_factory=dict)
    not_started: list[str] = Field(default_factory=list)
    stop_reason: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_seconds: float = 0.0
    continued_as_new: int = 0
    dry_run_report: DryRunReport | None = None
    requested_by: str | None = None


class BulkProgress(_Model):
    """Answer of the bulk ``progress`` query."""

    state: RunState = RunState.RESOLVING
    selected: int = 0
    queued: int = 0
    concurrency: int = 0
    counts: dict[str, int] = Field(default_factory=dict)
    in_flight: list[InFlightPlan] = Field(default_factory=list)
    results: list[PlanSummary] = Field(default_factory=list)
    eta_seconds: float | None = None
    stop_reason: str | None = None
    started_at: datetime | None = None


class ConcurrencyChange(_Model):
    """``set_concurrency`` update argument."""

    max_concurrency: int = Field(ge=1, le=500)


class CancelRemaining(_Model):
    """``cancel_remaining`` update argument."""

    cancel_running: bool = Field(False, description="Also cancel plans already running")
    reason: str | None = None


class ForcedApproval(_Model):
    """``approve_forced`` update argument: who approves a forced reprotect of which plan."""

    plan_id: str
    approver: str = Field(min_length=1)


class ControlAck(_Model):
    """What a control update changed."""

    state: RunState
    concurrency: int
    message: str = ""
