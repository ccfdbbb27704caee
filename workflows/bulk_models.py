"""Inputs, results, control messages and carried state of BulkReprotectWorkflow.

Like workflows/models.py: pydantic, JSON-friendly, no I/O, no credentials, every field has a
default so that recorded histories and continue-as-new payloads keep loading.

Per-plan rows are compact (reasons capped, the full detail stays in each plan's workflow) and
no payload holds every row of a large run: a run records a segment of at most SEGMENT_ROWS
rows, kept small enough for its continue-as-new input to stay within CARRY_BUDGET bytes, and
hands them to the next run in that input (where they stay, in the next run's first event);
the final result holds every row only when they fit. ``srmflow report`` gathers the segments
(srmflow/report.py ``bulk_rows``).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum

from pydantic import Field, model_validator

from workflows.drill_models import WebhookTarget
from workflows.models import DEFAULT_SITE, ReprotectOutcome, _Model
from workflows.policies import SRM_NOT_FOUND

BULK_WORKFLOW_ID_PREFIX = "bulk-reprotect"
MAX_CONCURRENCY = 1000
# One run of the workflow records at most SEGMENT_ROWS rows (plans in flight included), and
# starts no plan that could take what it carries into continue-as-new (queue, totals, rows)
# past CARRY_BUDGET bytes, reserving ROW_RESERVE bytes per plan in flight; Temporal refuses a
# payload over 2 MB. A run always starts MIN_SEGMENT_ROWS plans, so a huge queue still moves.
SEGMENT_ROWS = 1000
CARRY_BUDGET = 1_300_000
ROW_RESERVE = 1_000
MIN_SEGMENT_ROWS = 100
REASON_MAX = 200
SRM_ERROR_MAX = 160
TRUNCATED = " [truncated]"
RECENT_ROWS = 50
DRY_RUN_BUDGET = 1_000_000
PAGE_MAX = 500
NOT_FOUND_REASON = "not found: SRM has no such plan in this pairing"
GROUP_TOKEN_CHARS = 16


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
    max_concurrency: int = Field(
        10, ge=1, le=MAX_CONCURRENCY, description="Plans in flight at most"
    )
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
        # A continued run works from its state; it drops plan_ids (thousands of ids, maybe).
        if sum(chosen) == 0 and self.state is not None:
            return self
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
    """Compact per-plan row of a bulk run; the full detail stays in the plan's workflow.

    The plan's workflow id is ``reprotect/<site>/<pairing_id>/<plan_id>`` with the run's site
    and pairing (``reprotect_workflow_id``). ``reason`` is capped at 200 characters and
    ``srm_error`` at 160 (both end with " [truncated]" when cut); ``srm_error`` is left out
    when the reason already quotes it.
    """

    plan_id: str
    plan_name: str | None = None
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


def cap_text(text: str | None, limit: int) -> str | None:
    """``text``, or its beginning and the TRUNCATED marker, in at most ``limit`` characters."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATED)] + TRUNCATED


def is_truncated(text: str | None) -> bool:
    """Whether ``text`` was cut by cap_text."""
    return bool(text) and str(text).endswith(TRUNCATED)


def compact_row(row: PlanSummary) -> PlanSummary:
    """The row as a bulk run keeps it: capped reason, SRM's message only when not quoted."""
    srm_error = row.srm_error
    if srm_error and srm_error in (row.reason or ""):
        srm_error = None
    return row.model_copy(
        update={
            "reason": cap_text(row.reason, REASON_MAX),
            "srm_error": cap_text(srm_error, SRM_ERROR_MAX),
        }
    )


def not_found_row(plan_id: str, at: datetime | None) -> PlanSummary:
    """Row of a selected plan id that SRM does not know."""
    return PlanSummary(
        plan_id=plan_id,
        reason=NOT_FOUND_REASON,
        error_type=SRM_NOT_FOUND,
        started_at=at,
        ended_at=at,
    )


def skipped_row(plan_id: str, plan_name: str | None, stop_reason: str | None) -> PlanSummary:
    """Row of a plan the run never started."""
    return PlanSummary(
        plan_id=plan_id,
        plan_name=plan_name,
        outcome=ReprotectOutcome.SKIPPED,
        reason=f"not started: {stop_reason or 'not started'}",
    )


def json_size(model: _Model) -> int:
    """Bytes of the model as the pydantic data converter stores it (compact JSON)."""
    return len(model.model_dump_json().encode())


def group_token(group_id: str) -> str:
    """A short stand-in for a protection group id in the carried queue.

    Only equality matters to the scheduler; two groups sharing a token (odds ~1e-12 at 10^4
    groups) would only run their plans one after another, never together.
    """
    if len(group_id) <= GROUP_TOKEN_CHARS:
        return group_id
    return hashlib.blake2b(group_id.encode(), digest_size=GROUP_TOKEN_CHARS // 2).hexdigest()


def carried_ref(plan: PlanRef) -> PlanRef:
    """A queued plan as the next run needs it: id, name and group tokens."""
    return PlanRef(
        plan_id=plan.plan_id,
        plan_name=plan.plan_name,
        group_ids=sorted({group_token(g) for g in plan.group_ids}),
    )


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
    counts: dict[str, int] = Field(
        default_factory=dict, description="Length of each list above, whether listed in full"
    )
    unlisted: int = Field(
        0, description="Plans counted but not listed: the lists stop at 1 MB, blocked plans first"
    )


def listed_within_budget(report: DryRunReport) -> DryRunReport:
    """The report with its lists cut once they pass DRY_RUN_BUDGET bytes (blocked plans and
    conflicts first); ``counts`` keeps the full numbers."""
    order = ("blocked", "conflicts", "already_protected", "would_reprotect")
    report.counts = {name: len(getattr(report, name)) for name in order}
    room = DRY_RUN_BUDGET
    for name in order:
        entries = getattr(report, name)
        kept: list[_Model] = []
        for entry in entries:
            room -= json_size(entry) + 1
            if room < 0:
                break
            kept.append(entry)
        if name != "conflicts":
            report.unlisted += len(entries) - len(kept)
        setattr(report, name, kept)
    return report


class RunState(StrEnum):
    """Lifecycle of a bulk run as the progress query shows it."""

    RESOLVING = "resolving"
    RUNNING = "running"
    PAUSED = "paused"
    DRAINING = "draining"
    STOPPING = "stopping"
    DONE = "done"


def _zero_counts() -> dict[str, int]:
    return {outcome.value: 0 for outcome in ReprotectOutcome}


class BulkTotals(_Model):
    """Figures over every plan finished so far in all runs (selected ids SRM lacks excluded)."""

    finished: int = 0
    counts: dict[str, int] = Field(default_factory=_zero_counts)
    failures_by_cause: dict[str, list[str]] = Field(default_factory=dict)
    reprotected: int = 0
    reprotected_seconds: float = 0.0

    def add(self, row: PlanSummary) -> None:
        """Count one finished plan."""
        self.finished += 1
        self.counts[row.outcome.value] = self.counts.get(row.outcome.value, 0) + 1
        if row.outcome == ReprotectOutcome.FAILED:
            self.failures_by_cause.setdefault(failure_cause(row), []).append(row.plan_id)
        if row.outcome == ReprotectOutcome.REPROTECTED and row.started_at and row.ended_at:
            self.reprotected += 1
            self.reprotected_seconds += (row.ended_at - row.started_at).total_seconds()


def failure_cause(row: PlanSummary) -> str:
    """What a failed plan is grouped under: its error type, else its reason up to the colon."""
    return row.error_type or (row.reason or "unknown").split(":")[0]


class BulkState(_Model):
    """What a bulk run carries across continue-as-new: the queue, totals, the last segment."""

    pairing_id: str | None = None
    queue: list[PlanRef] = Field(default_factory=list)
    unknown_plan_ids: list[str] = Field(default_factory=list)
    totals: BulkTotals | None = Field(
        None, description="Unset only in a state carried by a run from before segments"
    )
    previous: list[PlanSummary] = Field(
        default_factory=list, description="Rows the run before this one recorded"
    )
    results: list[PlanSummary] = Field(
        default_factory=list, description="Before segments: every row so far; no longer written"
    )
    started_at: datetime | None = None
    concurrency: int = 10
    paused: bool = False
    stop_reason: str | None = None
    cancel_running: bool = False
    selected: int = 0
    runs: int = 1


class BulkReprotectResult(_Model):
    """Counts, failure causes, timings and (when they fit) every plan's row of a bulk run."""

    site: str = DEFAULT_SITE
    pairing_id: str | None = None
    dry_run: bool = False
    plans: list[PlanSummary] = Field(
        default_factory=list,
        description="Per-plan rows: every plan when plans_complete, else only the plans finished "
        "in the run's last segment (`srmflow report` gathers every row from the earlier runs)",
    )
    plans_complete: bool = Field(
        True, description="Whether plans lists every selected plan (runs of up to 1,000 plans)"
    )
    counts: dict[str, int] = Field(default_factory=dict)
    failures_by_cause: dict[str, list[str]] = Field(default_factory=dict)
    not_started: list[str] = Field(default_factory=list)
    unknown_plan_ids: list[str] = Field(
        default_factory=list, description="Selected plan ids SRM does not know (FAILED)"
    )
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
    results: list[PlanSummary] = Field(
        default_factory=list, description="The last RECENT_ROWS plans finished, oldest first"
    )
    finished: int = Field(0, description="Plans with a result so far (unknown ids included)")
    eta_seconds: float | None = None
    stop_reason: str | None = None
    started_at: datetime | None = None


class ResultsPageRequest(_Model):
    """``results_page`` query argument."""

    offset: int = Field(0, ge=0)
    limit: int = Field(100, ge=1, le=PAGE_MAX)


class ResultsPage(_Model):
    """Rows the current run holds (unknown ids, the previous segment, its own), in order.

    ``earlier`` plans finished in runs before the previous one; their rows are in those runs'
    inputs (``srmflow report`` reads them).
    """

    offset: int = 0
    total: int = 0
    earlier: int = 0
    rows: list[PlanSummary] = Field(default_factory=list)


class ConcurrencyChange(_Model):
    """``set_concurrency`` update argument."""

    max_concurrency: int = Field(ge=1, le=MAX_CONCURRENCY)


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
