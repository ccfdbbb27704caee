"""Inputs, results and activity payloads of ReprotectPlanWorkflow (pydantic, JSON-friendly).

No I/O and no SRM wire models here: activities translate SRM's JSON into these shapes, so an
SRM API change never reaches workflow history. Every field added later must get a default so
that recorded histories still load. Nothing here may ever hold a credential or session id.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_SITE = "default"
WORKFLOW_ID_PREFIX = "reprotect"


def reprotect_workflow_id(site: str, pairing_id: str, plan_id: str) -> str:
    """Business-key workflow id ``reprotect/<site>/<pairing>/<plan>`` (``/`` in parts escaped)."""
    parts = (quote(part, safe=":-_.") for part in (site, pairing_id, plan_id))
    return "/".join((WORKFLOW_ID_PREFIX, *parts))


class _Model(BaseModel):
    """Base of the workflow models: unknown fields tolerated so old workers read new payloads."""

    model_config = ConfigDict(extra="ignore")


class ReprotectOutcome(StrEnum):
    """How a reprotect request ended."""

    REPROTECTED = "REPROTECTED"
    ALREADY_PROTECTED = "ALREADY_PROTECTED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    SKIPPED = "SKIPPED"


class Step(StrEnum):
    """Named steps of the workflow, as shown by the ``progress`` query."""

    PENDING = "pending"
    PRECHECK = "precheck"
    QUEUED = "queued"  # waiting for one of the site's SRM operation slots
    START = "start"
    SRM_TASK = "srm_task"
    VERIFY = "verify"
    CANCEL = "cancel"
    DONE = "done"


class ReprotectPlanInput(_Model):
    """Request to reprotect one recovery plan; names a site, never carries credentials."""

    site: str = Field(DEFAULT_SITE, description="Configured SRM site name (worker holds creds)")
    pairing_id: str | None = Field(
        None, description="SRM pairing; optional when the site has exactly one pairing"
    )
    plan_id: str = Field(description="Recovery plan id as SRM reports it")
    forced: bool = Field(False, description="Run the first reprotect with forced=true")
    allow_forced_retry: bool = Field(
        False, description="Let the one re-run after INCOMPLETE_REPROTECT use forced=true"
    )
    retry_incomplete: bool = Field(
        True, description="Re-run reprotect once when the plan ends INCOMPLETE_REPROTECT"
    )
    verify: bool = Field(True, description="Verify plan, groups, VMs and history afterwards")
    rerun_incomplete_plans: bool = Field(
        True,
        description="Accept a plan found INCOMPLETE_REPROTECT, PARTIAL_REPROTECT or "
        "REPROTECT_INTERRUPTED and run reprotect again",
    )
    poll_interval_seconds: float = Field(5.0, ge=1, description="Seconds between task polls")
    deadline_seconds: float | None = Field(
        None, gt=0, description="Overall deadline; the workflow stops waiting after it"
    )
    pairing_checked: bool = Field(
        False,
        description="The caller (a bulk run) already checked the pairing's health and the "
        "remote session, so precheck reads only the plan; used only with pairing_id",
    )


class Sites(_Model):
    """Which site protects a plan and which recovers it."""

    protected_site_name: str | None = None
    recovery_site_name: str | None = None

    def swapped(self) -> Sites:
        """The same pair with protected and recovery sides exchanged."""
        return Sites(
            protected_site_name=self.recovery_site_name,
            recovery_site_name=self.protected_site_name,
        )


class StepTiming(_Model):
    """When one workflow step started and ended (workflow time, UTC)."""

    step: Step
    started_at: datetime
    ended_at: datetime | None = None
    attempt: int = 1


class ReprotectPlanResult(_Model):
    """What happened to the plan; failures carry SRM's message and a plain-language reason."""

    site: str = DEFAULT_SITE
    pairing_id: str | None = None
    plan_id: str = ""
    plan_name: str | None = None
    outcome: ReprotectOutcome = ReprotectOutcome.FAILED
    srm_task_id: str | None = None
    srm_task_ids: list[str] = Field(default_factory=list)
    adopted: bool = False
    initial_plan_status: str | None = None
    final_plan_status: str | None = None
    sites_before: Sites | None = None
    sites_after: Sites | None = None
    steps: list[StepTiming] = Field(default_factory=list)
    attempts: int = 0
    forced_used: bool = False
    warnings: list[str] = Field(default_factory=list)
    srm_error: str | None = None
    reason: str | None = None
    error_type: str | None = None


class ReprotectProgress(_Model):
    """Answer of the ``progress`` query.

    ``task_progress`` is the last value the workflow saw; the live percentage of a running SRM
    task is in the heartbeat details of the pending ``wait_for_task`` activity (see the CLI).
    """

    step: Step = Step.PENDING
    plan_id: str = ""
    plan_name: str | None = None
    srm_task_id: str | None = None
    task_progress: int | None = None
    attempts: int = 0
    steps: list[StepTiming] = Field(default_factory=list)
    outcome: ReprotectOutcome | None = None


# Activity payloads ------------------------------------------------------------------------


class PlanAction(StrEnum):
    """What precheck found the workflow should do with the plan."""

    START = "START"
    ADOPT = "ADOPT"
    ALREADY_PROTECTED = "ALREADY_PROTECTED"


class PrecheckInput(_Model):
    """Which plan to check and which re-run statuses policy allows."""

    site: str = DEFAULT_SITE
    pairing_id: str | None = None
    plan_id: str
    allow_rerun: bool = True
    # A bulk run checked the pairing once for all its plans: read the plan only.
    pairing_checked: bool = False
    # The workflow verifies after the task, so wait_for_task need not read the plan on SUCCESS.
    verify_after: bool = False


class WaitOptions(_Model):
    """How ``wait_for_task`` follows a task; the defaults are the cautious behaviour."""

    # The start step is about to POST the task: nothing is to be seen before one interval.
    first_poll_after_interval: bool = False
    # Read the plan once the task ended SUCCESS (not needed when verification re-reads it).
    read_plan_on_success: bool = True


class PrecheckResult(_Model):
    """The resolved pairing, the plan as found, and what to do with it."""

    pairing_id: str
    plan_id: str
    plan_name: str | None = None
    plan_status: str
    action: PlanAction
    sites: Sites = Field(default_factory=Sites)
    running_task_id: str | None = None
    # Tasks already on the plan and the newest REPROTECT report before srmflow acts: anything
    # newer proves a reprotect ran since (srmflow's own, if an attempt crashed after its POST).
    # Only read for a plan found REPROTECT_IN_PROGRESS or in a re-run status: a plan found
    # RECOVERY_COMPLETE leaves that status for good once a reprotect runs, which is proof enough.
    baseline_task_ids: list[str] = Field(default_factory=list)
    last_reprotect_report_ms: int | None = None
    warnings: list[str] = Field(default_factory=list)
    # Passed on to wait_for_task by the workflow (plan_steps.wait_input).
    wait_options: WaitOptions = Field(default_factory=WaitOptions)


class StartReprotectInput(_Model):
    """Start-or-adopt request for one attempt of the reprotect."""

    site: str = DEFAULT_SITE
    pairing_id: str
    plan_id: str
    forced: bool = False
    allow_rerun: bool = True
    # Tasks seen before this attempt (precheck's baseline plus tasks already waited on): only
    # a reprotect task outside this set can be the result of this attempt's earlier POST.
    baseline_task_ids: list[str] = Field(default_factory=list)
    # Newest REPROTECT history report before this attempt; a newer one proves a finished run.
    last_reprotect_report_ms: int | None = None
    # The plan status precheck found, given for the workflow's first reprotect attempt only.
    # RECOVERY_COMPLETE: the plan's status alone shows whether a reprotect ran since (no
    # baseline needed), and the first activity attempt POSTs without re-reading the plan.
    precheck_status: str | None = None


class StartReprotectResult(_Model):
    """The SRM task to wait for, and whether srmflow started it or adopted it."""

    task_id: str | None = None
    adopted: bool = False
    posted: bool = False
    plan_status: str
    already_protected: bool = False
    sites: Sites = Field(default_factory=Sites)


class WaitForTaskInput(_Model):
    """Which SRM task to follow and how often to poll it."""

    site: str = DEFAULT_SITE
    pairing_id: str
    plan_id: str
    task_id: str
    poll_interval_seconds: float = 5.0
    options: WaitOptions = Field(default_factory=WaitOptions)


class TaskProgress(_Model):
    """Heartbeat details of ``wait_for_task``: readable by the CLI through describe()."""

    task_id: str
    status: str | None = None
    progress: int | None = None
    polls: int = 0


class TaskOutcome(_Model):
    """A finished SRM task and the plan status it left behind.

    ``plan_status`` is None (and ``sites`` empty) when the task ended SUCCESS and the plan was
    not read because verification follows (``WaitOptions.read_plan_on_success``).
    """

    task_id: str
    status: str
    progress: int | None = None
    error_message: str | None = None
    plan_status: str | None = None
    sites: Sites = Field(default_factory=Sites)
    queued_time_ms: int | None = None
    complete_time_ms: int | None = None


class VerifyInput(_Model):
    """What the plan should look like after a successful reprotect."""

    site: str = DEFAULT_SITE
    pairing_id: str
    plan_id: str
    expected_sites: Sites | None = None
    settle_seconds: float = 10.0


class VerifyResult(_Model):
    """Verification findings: problems fail the workflow, warnings are reported."""

    ok: bool
    plan_status: str | None = None
    sites: Sites = Field(default_factory=Sites)
    problems: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    report_result: str | None = None


class CancelTaskInput(_Model):
    """Which SRM task (on which plan) to cancel."""

    site: str = DEFAULT_SITE
    pairing_id: str
    plan_id: str
    task_id: str | None = None
    wait_seconds: float = 120.0
    poll_interval_seconds: float = 2.0


class CancelTaskResult(_Model):
    """Whether SRM accepted the cancel, and where the task and plan ended."""

    requested: bool
    task_status: str | None = None
    plan_status: str | None = None
    message: str | None = None
