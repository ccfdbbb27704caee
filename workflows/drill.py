"""DrillWorkflow: scheduled test drills and failback round trips with measured RTO.

A ``test`` drill (non-disruptive) runs test -> hold -> cleanup per plan; a ``failback`` drill
(disruptive, needs ``allow_disruptive``) runs recovery -> reprotect -> hold -> recovery back ->
reprotect back -> verify the original direction. Steps are PlanOperationWorkflow children
(reprotect: the existing ReprotectPlanWorkflow). A sliding window bounded by
``max_concurrency`` never runs two plans sharing a protection group. After a failure no further
plan starts (``stop_on_failure``); running plans finish, and every row says where its plan was
left and what to do next.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, NoReturn

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    WorkflowAlreadyStartedError,
)

with workflow.unsafe.imports_passed_through():
    import workflows.plan_steps as plan_steps
    import workflows.policies as policies
    from workflows.bulk_models import PlanRef, SelectionInput
    from workflows.bulk_schedule import startable
    from workflows.drill_models import (
        DrillAck,
        DrillApproval,
        DrillInput,
        DrillMode,
        DrillProgress,
        DrillResult,
        DrillStep,
        Operation,
        OperationOutcome,
        OperationResult,
        PlanDrillRow,
        PlanDrillState,
        PlanOperationInput,
        operation_workflow_id,
    )
    from workflows.models import (
        ReprotectOutcome,
        ReprotectPlanInput,
        ReprotectPlanResult,
        Sites,
        reprotect_workflow_id,
    )
    from workflows.operation import PlanOperationWorkflow, notify_webhook
    from workflows.reprotect import ReprotectPlanWorkflow

DRILL_NOT_ALLOWED = "DrillNotAllowed"
OK_OUTCOMES = (OperationOutcome.DONE, OperationOutcome.ALREADY_DONE)

# What the operator should do when a plan stops after (or in) a step; {p} is the protected
# site at the start, {r} the recovery site at the start.
NEXT_ACTION: dict[DrillStep, str] = {
    DrillStep.TEST: "run cleanup on the plan (if a test environment is left), fix the cause "
    "and run the drill again",
    DrillStep.CLEANUP: "fix the cause and run cleanup again (forced cleanup only if the "
    "storage errors are understood)",
    DrillStep.RECOVERY: "production is still at {p} if the plan is READY_STATE; otherwise "
    "re-run the recovery (planned migration) to finish moving to {r}, then reprotect",
    DrillStep.REPROTECT: "production runs at {r} without protection: fix the cause and run "
    "reprotect, then recovery back to {p} and reprotect again",
    DrillStep.RECOVERY_BACK: "production is protected at {r}: re-run the recovery (planned "
    "migration) back to {p}, then reprotect",
    DrillStep.REPROTECT_BACK: "production is back at {p} without protection: fix the cause and "
    "run reprotect",
    DrillStep.VERIFY_DIRECTION: "check the plan's sites in SRM; it should be protected at {p} "
    "with recovery at {r}",
}


class _StepFailed(Exception):
    """A plan's step did not succeed; the row already says where the plan stands."""


@workflow.defn
class DrillWorkflow:
    """Test or failback drill over a plan selection, with bounded concurrency and RTO."""

    @workflow.init
    def __init__(self, input: DrillInput) -> None:
        self._input = input
        self._pairing_id: str | None = None
        self._queue: list[PlanRef] = []
        self._rows: dict[str, PlanDrillRow] = {}
        self._unknown: list[str] = []
        self._held: dict[str, str] = {}
        self._running = 0
        self._dirty = False
        self._stop_reason: str | None = None
        self._approvals: dict[str, str] = {}
        self._approve_all: str | None = None
        self._waiting: set[str] = set()
        self._done = False

    @workflow.run
    async def run(self, input: DrillInput) -> DrillResult:
        """Resolve the selection, run each plan's drill in the window, report and notify."""
        problem = input.problem()
        if problem is not None:
            raise ApplicationError(problem, type=DRILL_NOT_ALLOWED, non_retryable=True)
        started = workflow.now()
        await self._resolve()
        await self._schedule()
        result = self._result(started)
        self._done = True
        if input.webhook is not None and input.webhook.on_completion:
            await notify_webhook(input.webhook, "drill.completed", _payload(result))
        await workflow.wait_condition(workflow.all_handlers_finished)
        return result

    # Steps ------------------------------------------------------------------------------

    async def _resolve(self) -> None:
        selection = await plan_steps.resolve_selection(
            SelectionInput(
                site=self._input.site,
                pairing_id=self._input.pairing_id,
                plan_ids=self._input.plan_ids,
                plan_name_glob=self._input.plan_name_glob,
            )
        )
        self._pairing_id = selection.pairing_id
        self._queue = list(selection.plans)
        self._unknown = list(selection.unknown_plan_ids)
        for plan in selection.plans:
            self._rows[plan.plan_id] = PlanDrillRow(
                plan_id=plan.plan_id,
                plan_name=plan.plan_name,
                plan_status=plan.status,
                rto_target_seconds=self._input.rto_target_seconds,
            )
        if not selection.plans:
            self._stop_reason = "empty selection: no plan matches"

    async def _schedule(self) -> None:
        tasks: list[asyncio.Task[None]] = []
        while True:
            if not self._stop_reason:
                free = self._input.max_concurrency - self._running
                for plan in startable(self._queue, self._held, free):
                    self._queue.remove(plan)
                    self._held.update(dict.fromkeys(plan.group_ids, plan.plan_id))
                    self._running += 1
                    tasks.append(asyncio.create_task(self._run_plan(plan)))
            if self._running == 0 and (self._stop_reason or not self._queue):
                break
            await workflow.wait_condition(lambda: self._dirty)
            self._dirty = False
        await asyncio.gather(*tasks)

    async def _run_plan(self, plan: PlanRef) -> None:
        row = self._rows[plan.plan_id]
        row.state, row.started_at = PlanDrillState.RUNNING, workflow.now()
        try:
            if self._input.mode == DrillMode.TEST:
                await self._test_drill(plan, row)
            else:
                await self._failback_drill(plan, row)
            self._judge_rto(row)
        except _StepFailed:
            row.state = PlanDrillState.FAILED
            row.verdict = "fail"
            row.next_action = self._next_action(row)
        except asyncio.CancelledError:
            row.state, row.verdict = PlanDrillState.CANCELLED, "cancelled"
            raise
        finally:
            row.current_step, row.ended_at = None, workflow.now()
            for group in plan.group_ids:
                self._held.pop(group, None)
            self._running -= 1
            self._dirty = True
        if row.state == PlanDrillState.FAILED:
            await self._on_plan_failure(row)

    async def _test_drill(self, plan: PlanRef, row: PlanDrillRow) -> None:
        test = await self._operation(plan, row, DrillStep.TEST, Operation.TEST)
        row.rto_seconds = test.seconds_to_verified
        await self._hold(row)
        await self._operation(
            plan, row, DrillStep.CLEANUP, Operation.CLEANUP, forced=self._input.forced_cleanup
        )

    async def _failback_drill(self, plan: PlanRef, row: PlanDrillRow) -> None:
        recovery = await self._operation(plan, row, DrillStep.RECOVERY, Operation.RECOVERY)
        row.rto_seconds = recovery.seconds_to_verified
        await self._reprotect(plan, row, DrillStep.REPROTECT)
        await self._hold(row)
        back = await self._operation(plan, row, DrillStep.RECOVERY_BACK, Operation.RECOVERY)
        row.return_rto_seconds = back.seconds_to_verified
        await self._reprotect(plan, row, DrillStep.REPROTECT_BACK)
        row.current_step = DrillStep.VERIFY_DIRECTION
        row.in_original_direction = row.sites_now == row.sites_before
        if not row.in_original_direction:
            row.failed_step = DrillStep.VERIFY_DIRECTION
            row.reason = "the plan did not end in its original direction"
            raise _StepFailed
        row.last_completed_step = DrillStep.VERIFY_DIRECTION

    async def _operation(
        self,
        plan: PlanRef,
        row: PlanDrillRow,
        step: DrillStep,
        operation: Operation,
        *,
        forced: bool = False,
    ) -> OperationResult:
        row.current_step = step
        child = PlanOperationInput(
            site=self._input.site,
            pairing_id=self._pairing_id,
            plan_id=plan.plan_id,
            operation=operation,
            forced=forced,
            sync_data=self._input.sync_data,
            poll_interval_seconds=self._input.poll_interval_seconds,
        )
        try:
            result = await workflow.execute_child_workflow(
                PlanOperationWorkflow.run,
                child,
                id=operation_workflow_id(self._input.site, self._pairing_id or "", plan.plan_id),
            )
        except (WorkflowAlreadyStartedError, ChildWorkflowError) as err:
            self._fail_step(row, step, _error_text(err), _error_type(err))
        self._record(row, result.final_plan_status, result.sites_before, result.sites_after)
        row.srm_task_ids += [result.srm_task_id] if result.srm_task_id else []
        row.warnings += result.warnings
        if result.outcome not in OK_OUTCOMES:
            self._fail_step(row, step, result.reason or result.outcome.value, result.error_type)
        row.last_completed_step = step
        return result

    async def _reprotect(self, plan: PlanRef, row: PlanDrillRow, step: DrillStep) -> None:
        row.current_step = step
        child = ReprotectPlanInput(
            site=self._input.site,
            pairing_id=self._pairing_id,
            plan_id=plan.plan_id,
            poll_interval_seconds=self._input.poll_interval_seconds,
        )
        try:
            result: ReprotectPlanResult = await workflow.execute_child_workflow(
                ReprotectPlanWorkflow.run,
                child,
                id=reprotect_workflow_id(self._input.site, self._pairing_id or "", plan.plan_id),
            )
        except (WorkflowAlreadyStartedError, ChildWorkflowError) as err:
            self._fail_step(row, step, _error_text(err), _error_type(err))
        self._record(row, result.final_plan_status, result.sites_before, result.sites_after)
        row.srm_task_ids += result.srm_task_ids
        row.warnings += result.warnings
        if result.outcome != ReprotectOutcome.REPROTECTED:
            reason = result.reason or result.outcome.value
            self._fail_step(row, step, reason, result.error_type or result.outcome.value)
        row.last_completed_step = step

    def _record(
        self, row: PlanDrillRow, status: str | None, before: Sites | None, after: Sites | None
    ) -> None:
        row.plan_status = status or row.plan_status
        if row.sites_before is None and before is not None and before.protected_site_name:
            row.sites_before = before
        if after is not None and after.protected_site_name:
            row.sites_now = after

    def _fail_step(
        self, row: PlanDrillRow, step: DrillStep, reason: str, error_type: str | None
    ) -> NoReturn:
        row.failed_step, row.reason, row.error_type = step, f"{step}: {reason}", error_type
        raise _StepFailed

    async def _hold(self, row: PlanDrillRow) -> None:
        inp = self._input
        if not inp.require_approval and not inp.hold_seconds:
            return
        row.current_step = DrillStep.HOLD
        if not inp.require_approval:
            await workflow.sleep(timedelta(seconds=inp.hold_seconds or 0))
            return
        limit = inp.hold_seconds if inp.hold_seconds is not None else inp.approval_timeout_seconds
        self._waiting.add(row.plan_id)
        try:
            await workflow.wait_condition(
                lambda: self._approved_by(row.plan_id) is not None,
                timeout=timedelta(seconds=limit),
            )
            row.approved_by = self._approved_by(row.plan_id)
        except TimeoutError:
            row.warnings.append(f"hold ended after {limit:.0f} s without approval")
        finally:
            self._waiting.discard(row.plan_id)

    def _approved_by(self, plan_id: str) -> str | None:
        return self._approvals.get(plan_id) or self._approve_all

    def _judge_rto(self, row: PlanDrillRow) -> None:
        row.state = PlanDrillState.PASSED
        target = self._input.rto_target_seconds
        if target is None or row.rto_seconds is None:
            row.verdict = "pass" if row.rto_seconds is not None else "pass (RTO not measured)"
            return
        row.rto_passed = row.rto_seconds <= target
        row.verdict = "pass" if row.rto_passed else "fail: RTO above target"

    def _next_action(self, row: PlanDrillRow) -> str:
        sites = row.sites_before or Sites()
        template = NEXT_ACTION.get(row.failed_step or DrillStep.TEST, "inspect the plan in SRM")
        return template.format(
            p=sites.protected_site_name or "the protected site",
            r=sites.recovery_site_name or "the recovery site",
        )

    async def _on_plan_failure(self, row: PlanDrillRow) -> None:
        if self._input.stop_on_failure and not self._stop_reason:
            self._stop_reason = (
                f"stopped after plan {row.plan_name or row.plan_id} failed at {row.failed_step}"
            )
            self._dirty = True
        webhook = self._input.webhook
        if webhook is not None and webhook.on_failure:
            await notify_webhook(webhook, "drill.plan_failed", _row_payload(row))

    # Control ------------------------------------------------------------------------------

    @workflow.update
    def approve(self, approval: DrillApproval) -> DrillAck:
        """End the hold of the named plans (all plans, now and later, when none is named)."""
        if approval.plan_ids:
            self._approvals.update(dict.fromkeys(approval.plan_ids, approval.approver))
            released = [p for p in approval.plan_ids if p in self._waiting]
        else:
            self._approve_all = approval.approver
            released = sorted(self._waiting)
        return DrillAck(released=released, message=f"approved by {approval.approver}")

    @approve.validator
    def _validate_approve(self, approval: DrillApproval) -> None:
        if self._done:
            raise ValueError("the drill has finished; nothing to approve")
        unknown = [p for p in approval.plan_ids if p not in self._rows]
        if unknown:
            raise ValueError(f"plans not in this drill: {', '.join(unknown)}")

    @workflow.query
    def progress(self) -> DrillProgress:
        """Per-plan rows so far, what runs, what waits for approval."""
        return DrillProgress(
            mode=self._input.mode,
            selected=len(self._rows) + len(self._unknown),
            queued=len(self._queue),
            running=self._running,
            done=self._done,
            waiting_for_approval=sorted(self._waiting),
            plans=list(self._rows.values()),
            stop_reason=self._stop_reason,
        )

    # Result -------------------------------------------------------------------------------

    def _result(self, started: Any) -> DrillResult:
        now = workflow.now()
        for plan in self._queue:
            row = self._rows[plan.plan_id]
            row.state, row.verdict = PlanDrillState.NOT_STARTED, "not started"
            row.reason = f"not started: {self._stop_reason or 'drill ended'}"
            row.next_action = "nothing was done to this plan; run the drill again for it"
        rows = list(self._rows.values())
        counts = {state.value: 0 for state in PlanDrillState}
        for row in rows:
            counts[row.state.value] += 1
        rtos = [r.rto_seconds for r in rows if r.rto_seconds is not None]
        passed = (
            bool(rows) and not self._unknown and all(r.verdict.startswith("pass") for r in rows)
        )
        return DrillResult(
            site=self._input.site,
            pairing_id=self._pairing_id,
            mode=self._input.mode,
            plans=rows,
            counts=counts,
            passed=passed,
            rto_target_seconds=self._input.rto_target_seconds,
            max_rto_seconds=max(rtos, default=None),
            stop_reason=self._stop_reason,
            unknown_plan_ids=self._unknown,
            started_at=started,
            ended_at=now,
            duration_seconds=(now - started).total_seconds(),
            requested_by=self._input.requested_by,
        )


def _error_text(err: Exception) -> str:
    if isinstance(err, WorkflowAlreadyStartedError):
        return "another srmflow operation is running on this plan; try again after it ends"
    cause: BaseException | None = err
    while isinstance(cause, ActivityError | ChildWorkflowError) and cause.cause is not None:
        cause = cause.cause
    return cause.message if isinstance(cause, ApplicationError) else str(cause)


def _error_type(err: Exception) -> str | None:
    if isinstance(err, WorkflowAlreadyStartedError):
        return policies.PLAN_BUSY
    cause: BaseException | None = err
    while isinstance(cause, ActivityError | ChildWorkflowError) and cause.cause is not None:
        cause = cause.cause
    return cause.type if isinstance(cause, ApplicationError) else None


def _row_payload(row: PlanDrillRow) -> dict[str, Any]:
    keep = {
        "plan_id",
        "plan_name",
        "state",
        "last_completed_step",
        "failed_step",
        "plan_status",
        "rto_seconds",
        "return_rto_seconds",
        "verdict",
        "reason",
        "next_action",
    }
    return row.model_dump(mode="json", include=keep)


def _payload(result: DrillResult) -> dict[str, Any]:
    info = workflow.info()
    return {
        "workflow_id": info.workflow_id,
        "run_id": info.run_id,
        "mode": result.mode.value,
        "site": result.site,
        "passed": result.passed,
        "counts": result.counts,
        "max_rto_seconds": result.max_rto_seconds,
        "rto_target_seconds": result.rto_target_seconds,
        "stop_reason": result.stop_reason,
        "plans": [_row_payload(row) for row in result.plans],
    }
