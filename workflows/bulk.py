"""BulkReprotectWorkflow: many plans through ReprotectPlanWorkflow children, safely.

A sliding window keeps at most ``max_concurrency`` plans in flight and never runs two plans that
share a protection group at once. Children use the single-plan workflow ids, so a plan already
being reprotected elsewhere is awaited, not started twice. Long runs drain and continue as new
with the queue and the compact results.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    WorkflowAlreadyStartedError,
)

with workflow.unsafe.imports_passed_through():
    from workflows import plan_steps, policies
    from workflows.bulk_models import (
        AwaitWorkflowInput,
        BulkProgress,
        BulkReprotectInput,
        BulkReprotectResult,
        BulkState,
        CancelRemaining,
        ConcurrencyChange,
        ControlAck,
        DryRunPlan,
        DryRunReport,
        ForcedApproval,
        InFlightPlan,
        PlanRef,
        PlanSummary,
        RunState,
        SelectionInput,
    )
    from workflows.bulk_schedule import estimate_makespan, eta_seconds, group_conflicts, startable
    from workflows.models import (
        PlanAction,
        PrecheckInput,
        PrecheckResult,
        ReprotectOutcome,
        ReprotectPlanInput,
        ReprotectPlanResult,
        reprotect_workflow_id,
    )
    from workflows.operation import notify_webhook
    from workflows.reprotect import ReprotectPlanWorkflow

INCOMPLETE = "INCOMPLETE_REPROTECT"
AWAIT_HEARTBEAT = timedelta(seconds=60)
# A plan's workflow may legitimately run for many hours; the activity only waits on it.
AWAIT_TIMEOUT = timedelta(days=2)


@workflow.defn
class BulkReprotectWorkflow:
    """Reprotect a selection of plans with bounded, conflict-aware concurrency."""

    @workflow.init
    def __init__(self, input: BulkReprotectInput) -> None:
        self._input = input
        self._state = input.state or BulkState(concurrency=input.max_concurrency)
        self._run_state = RunState.RESOLVING if input.state is None else RunState.RUNNING
        self._in_flight: dict[str, InFlightPlan] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._held: dict[str, str] = {}
        self._approvals: dict[str, str] = {}
        self._dirty = False

    @workflow.run
    async def run(self, input: BulkReprotectInput) -> BulkReprotectResult:
        """Resolve the selection, run the window until done, drain and continue when long."""
        if self._state.pairing_id is None:
            await self._resolve()
        if input.dry_run:
            return await self._dry_run()
        try:
            await self._schedule()
        except asyncio.CancelledError:
            await self._stop_all(CancelRemaining(cancel_running=True, reason="run cancelled"))
            raise
        if self._state.queue and not self._state.stop_reason:
            await workflow.wait_condition(workflow.all_handlers_finished)
            self._state.runs += 1
            workflow.continue_as_new(self._input.model_copy(update={"state": self._state}))
        self._run_state = RunState.DONE
        await workflow.wait_condition(workflow.all_handlers_finished)
        result = self._result()
        if input.webhook is not None and input.webhook.on_completion:
            await notify_webhook(input.webhook, "bulk.completed", _completion(result))
        return result

    # Steps ------------------------------------------------------------------------------

    async def _resolve(self) -> None:
        selection = await plan_steps.resolve_selection(
            SelectionInput(
                site=self._input.site,
                pairing_id=self._input.pairing_id,
                plan_ids=self._input.plan_ids,
                plan_name_glob=self._input.plan_name_glob,
                all_recovered=self._input.all_recovered,
            )
        )
        now = workflow.now()
        self._state.pairing_id = selection.pairing_id
        self._state.started_at = now
        self._state.queue = list(selection.plans)
        self._state.selected = len(selection.plans) + len(selection.unknown_plan_ids)
        self._state.results = [
            PlanSummary(
                plan_id=plan_id,
                reason="not found: SRM has no such plan in this pairing",
                error_type=policies.SRM_NOT_FOUND,
                started_at=now,
                ended_at=now,
            )
            for plan_id in selection.unknown_plan_ids
        ]
        if not selection.plans and not selection.unknown_plan_ids:
            self._state.stop_reason = f"empty selection: no plan matches {self._describe()}"
        self._run_state = RunState.RUNNING

    def _describe(self) -> str:
        if self._input.plan_name_glob:
            return f"the name pattern {self._input.plan_name_glob!r}"
        if self._input.all_recovered:
            return "'needs reprotect' (RECOVERY_COMPLETE or an incomplete reprotect)"
        return "the given plan ids"

    async def _schedule(self) -> None:
        while True:
            self._start_eligible()
            if not self._in_flight and (self._draining() or not self._can_start_more()):
                return
            await workflow.wait_condition(lambda: self._dirty)
            self._dirty = False

    def _can_start_more(self) -> bool:
        return bool(self._state.queue) and not self._state.stop_reason

    def _draining(self) -> bool:
        info = workflow.info()
        long = info.get_current_history_length() >= self._input.continue_as_new_after_events
        return bool(self._state.queue) and (long or info.is_continue_as_new_suggested())

    def _start_eligible(self) -> None:
        if self._state.paused or self._state.stop_reason or self._draining():
            self._run_state = self._current_run_state()
            return
        free = self._state.concurrency - len(self._in_flight)
        for plan in startable(self._state.queue, self._held, free):
            self._state.queue.remove(plan)
            self._held.update(dict.fromkeys(plan.group_ids, plan.plan_id))
            self._in_flight[plan.plan_id] = InFlightPlan(
                plan_id=plan.plan_id,
                plan_name=plan.plan_name,
                workflow_id=self._workflow_id(plan.plan_id),
                started_at=workflow.now(),
            )
            self._tasks[plan.plan_id] = asyncio.create_task(self._run_plan(plan))
        self._run_state = self._current_run_state()

    def _current_run_state(self) -> RunState:
        if self._state.stop_reason:
            return RunState.STOPPING
        if self._state.paused:
            return RunState.PAUSED
        if self._draining():
            return RunState.DRAINING
        return RunState.RUNNING

    async def _run_plan(self, plan: PlanRef) -> None:
        started = workflow.now()
        try:
            summary = await self._reprotect_with_ladder(plan)
        except asyncio.CancelledError:
            summary = PlanSummary(
                plan_id=plan.plan_id,
                plan_name=plan.plan_name,
                outcome=ReprotectOutcome.CANCELLED,
                reason=self._state.stop_reason or "cancelled",
            )
        summary.workflow_id = self._workflow_id(plan.plan_id)
        summary.started_at, summary.ended_at = started, workflow.now()
        self._state.results.append(summary)
        for group in plan.group_ids:
            self._held.pop(group, None)
        self._in_flight.pop(plan.plan_id, None)
        self._tasks.pop(plan.plan_id, None)
        self._check_failure_budget()
        self._dirty = True
        target = self._input.webhook
        if target is not None and target.on_failure and summary.outcome == ReprotectOutcome.FAILED:
            await notify_webhook(target, "bulk.plan_failed", summary.model_dump(mode="json"))

    async def _reprotect_with_ladder(self, plan: PlanRef) -> PlanSummary:
        """Reprotect; the child re-runs an incomplete reprotect once, then forced needs approval."""
        result, attached = await self._run_child(plan, forced=False)
        summary = _summarise(plan, result, attached)
        if not self._needs_approval(result):
            return summary
        approver = await self._wait_for_approval(plan.plan_id)
        if approver is None:
            summary.reason = (
                f"plan stayed {INCOMPLETE} after a re-run and a forced reprotect was not "
                f"approved within {self._input.approval_timeout_seconds:.0f} s"
            )
            return summary
        forced_result, _ = await self._run_child(plan, forced=True)
        forced = _summarise(plan, forced_result, attached)
        forced.approved_by = approver
        forced.attempts += summary.attempts
        return forced

    def _needs_approval(self, result: ReprotectPlanResult) -> bool:
        return (
            self._input.retry_incomplete
            and result.outcome == ReprotectOutcome.FAILED
            and result.final_plan_status == INCOMPLETE
            and not self._input.forced
            and not result.forced_used
        )

    async def _wait_for_approval(self, plan_id: str) -> str | None:
        self._in_flight[plan_id].waiting_for_approval = True
        try:
            await workflow.wait_condition(
                lambda: plan_id in self._approvals,
                timeout=timedelta(seconds=self._input.approval_timeout_seconds),
            )
        except TimeoutError:
            return None
        finally:
            self._in_flight[plan_id].waiting_for_approval = False
        return self._approvals[plan_id]

    async def _run_child(self, plan: PlanRef, *, forced: bool) -> tuple[ReprotectPlanResult, bool]:
        """Run the plan's workflow, or await it when it already runs under the same id."""
        workflow_id = self._workflow_id(plan.plan_id)
        child_input = ReprotectPlanInput(
            site=self._input.site,
            pairing_id=self._state.pairing_id,
            plan_id=plan.plan_id,
            forced=forced,
            allow_forced_retry=self._input.forced,
            retry_incomplete=self._input.retry_incomplete and not forced,
            verify=self._input.verify,
            poll_interval_seconds=self._input.poll_interval_seconds,
            deadline_seconds=self._input.plan_deadline_seconds,
            pairing_checked=True,  # resolve_selection checked it once for the whole run
        )
        try:
            result = await workflow.execute_child_workflow(
                ReprotectPlanWorkflow.run,
                child_input,
                id=workflow_id,
                # A terminated parent must never interrupt a reprotect mid-flight.
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            )
            return result, False
        except WorkflowAlreadyStartedError:
            return await self._await_existing(workflow_id), True
        except ChildWorkflowError as err:
            return _failed_result(plan, err), False

    async def _await_existing(self, workflow_id: str) -> ReprotectPlanResult:
        try:
            return await workflow.execute_activity(
                "await_reprotect_workflow",
                AwaitWorkflowInput(workflow_id=workflow_id),
                result_type=ReprotectPlanResult,
                start_to_close_timeout=AWAIT_TIMEOUT,
                heartbeat_timeout=AWAIT_HEARTBEAT,
                retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
            )
        except asyncio.CancelledError:
            # Cancelling the wait must cancel the plan's workflow too (cancel_running).
            await workflow.get_external_workflow_handle(workflow_id).cancel()
            raise

    def _check_failure_budget(self) -> None:
        limit = self._input.stop_after_failures
        if limit is None or self._state.stop_reason:
            return
        failed = sum(r.outcome == ReprotectOutcome.FAILED for r in self._state.results)
        if failed >= limit:
            self._stop_starting(f"stopped after {failed} failed plans (stop_after_failures)")

    def _stop_starting(self, reason: str) -> None:
        self._state.stop_reason = reason
        self._run_state = RunState.STOPPING
        self._dirty = True

    async def _stop_all(self, request: CancelRemaining) -> None:
        self._stop_starting(request.reason or "cancelled by operator")
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # Dry run ------------------------------------------------------------------------------

    async def _dry_run(self) -> BulkReprotectResult:
        report = DryRunReport()
        plans = list(self._state.queue)
        size = self._state.concurrency
        for start in range(0, len(plans), size):
            batch = plans[start : start + size]
            verdicts = await asyncio.gather(*(self._precheck(p) for p in batch))
            for verdict in verdicts:
                if verdict.blocked_reason:
                    report.blocked.append(verdict)
                elif verdict.action == PlanAction.ALREADY_PROTECTED:
                    report.already_protected.append(verdict)
                else:
                    report.would_reprotect.append(verdict)
        runnable_ids = {v.plan_id for v in report.would_reprotect}
        runnable = [p for p in plans if p.plan_id in runnable_ids]
        report.conflicts = group_conflicts(runnable)
        report.estimated_seconds = estimate_makespan(
            runnable, self._state.concurrency, self._input.estimate_plan_seconds
        )
        self._run_state = RunState.DONE
        result = self._result()
        result.dry_run, result.dry_run_report, result.not_started = True, report, []
        return result

    async def _precheck(self, plan: PlanRef) -> DryRunPlan:
        verdict = DryRunPlan(plan_id=plan.plan_id, plan_name=plan.plan_name, status=plan.status)
        try:
            found: PrecheckResult = await workflow.execute_activity(
                "precheck",
                PrecheckInput(
                    site=self._input.site,
                    pairing_id=self._state.pairing_id,
                    plan_id=plan.plan_id,
                    allow_rerun=self._input.retry_incomplete,
                ),
                result_type=PrecheckResult,
                start_to_close_timeout=policies.PRECHECK_START_TO_CLOSE,
                schedule_to_close_timeout=policies.PRECHECK_SCHEDULE_TO_CLOSE,
                retry_policy=policies.SRM_CALL_RETRY,
            )
        except ActivityError as err:
            cause = err.cause
            verdict.blocked_reason = str(
                cause.message if isinstance(cause, ApplicationError) else err
            )
            verdict.error_type = cause.type if isinstance(cause, ApplicationError) else None
            return verdict
        verdict.status, verdict.action = found.plan_status, found.action
        return verdict

    # Control ------------------------------------------------------------------------------

    @workflow.update
    def pause(self) -> ControlAck:
        """Start no new plans; running ones finish."""
        self._state.paused = True
        self._dirty = True
        return self._ack("paused: running plans finish, no new plan starts")

    @pause.validator
    def _validate_pause(self) -> None:
        self._reject_when_finished()

    @workflow.update
    def resume(self) -> ControlAck:
        """Start plans again after a pause."""
        self._state.paused = False
        self._dirty = True
        return self._ack("resumed")

    @resume.validator
    def _validate_resume(self) -> None:
        self._reject_when_finished()
        if self._state.stop_reason:
            raise ValueError(f"run is stopping ({self._state.stop_reason}); it cannot resume")

    @workflow.update
    async def cancel_remaining(self, request: CancelRemaining) -> ControlAck:
        """Start no more plans; optionally cancel the running ones."""
        if request.cancel_running:
            await self._stop_all(request)
        else:
            self._stop_starting(request.reason or "cancelled by operator")
        return self._ack(self._state.stop_reason or "")

    @cancel_remaining.validator
    def _validate_cancel(self, request: CancelRemaining) -> None:
        self._reject_when_finished()

    @workflow.update
    def set_concurrency(self, change: ConcurrencyChange) -> ControlAck:
        """Change how many plans may run at once (takes effect as plans finish or start)."""
        self._state.concurrency = change.max_concurrency
        self._dirty = True
        return self._ack(f"concurrency set to {change.max_concurrency}")

    @set_concurrency.validator
    def _validate_concurrency(self, change: ConcurrencyChange) -> None:
        self._reject_when_finished()

    @workflow.update
    def approve_forced(self, approval: ForcedApproval) -> ControlAck:
        """Approve a forced reprotect of one plan (recorded with the approver's name)."""
        self._approvals[approval.plan_id] = approval.approver
        return self._ack(f"forced reprotect of {approval.plan_id} approved by {approval.approver}")

    @approve_forced.validator
    def _validate_approval(self, approval: ForcedApproval) -> None:
        self._reject_when_finished()
        queued = {p.plan_id for p in self._state.queue}
        if approval.plan_id not in self._in_flight and approval.plan_id not in queued:
            raise ValueError(f"plan {approval.plan_id!r} is neither running nor queued in this run")

    @workflow.query
    def progress(self) -> BulkProgress:
        """Counts by outcome, plans in flight, ETA and the per-plan results so far."""
        durations = [
            (r.ended_at - r.started_at).total_seconds()
            for r in self._state.results
            if r.started_at and r.ended_at and r.outcome == ReprotectOutcome.REPROTECTED
        ]
        return BulkProgress(
            state=self._run_state,
            selected=self._state.selected,
            queued=len(self._state.queue),
            concurrency=self._state.concurrency,
            counts=_counts(self._state.results),
            in_flight=sorted(self._in_flight.values(), key=lambda p: p.started_at),
            results=self._state.results,
            eta_seconds=eta_seconds(
                durations,
                len(self._state.queue),
                len(self._in_flight),
                self._state.concurrency,
            ),
            stop_reason=self._state.stop_reason,
            started_at=self._state.started_at,
        )

    def _reject_when_finished(self) -> None:
        if self._run_state == RunState.DONE:
            raise ValueError("the run has finished; nothing to control")

    def _ack(self, message: str) -> ControlAck:
        return ControlAck(
            state=self._current_run_state(), concurrency=self._state.concurrency, message=message
        )

    # Result -------------------------------------------------------------------------------

    def _workflow_id(self, plan_id: str) -> str:
        return reprotect_workflow_id(self._input.site, self._state.pairing_id or "", plan_id)

    def _result(self) -> BulkReprotectResult:
        now = workflow.now()
        started = self._state.started_at or now
        results = list(self._state.results)
        skipped_reason = self._state.stop_reason or "not started"
        results += [
            PlanSummary(
                plan_id=p.plan_id,
                plan_name=p.plan_name,
                outcome=ReprotectOutcome.SKIPPED,
                reason=f"not started: {skipped_reason}",
            )
            for p in self._state.queue
        ]
        return BulkReprotectResult(
            site=self._input.site,
            pairing_id=self._state.pairing_id,
            plans=results,
            counts=_counts(results),
            failures_by_cause=_failures_by_cause(results),
            not_started=[p.plan_id for p in self._state.queue],
            stop_reason=self._state.stop_reason,
            started_at=started,
            ended_at=now,
            duration_seconds=(now - started).total_seconds(),
            continued_as_new=self._state.runs - 1,
            requested_by=self._input.requested_by,
        )


def _summarise(plan: PlanRef, result: ReprotectPlanResult, attached: bool) -> PlanSummary:
    return PlanSummary(
        plan_id=plan.plan_id,
        plan_name=result.plan_name or plan.plan_name,
        outcome=result.outcome,
        srm_task_id=result.srm_task_id,
        final_plan_status=result.final_plan_status,
        reason=result.reason,
        error_type=result.error_type,
        srm_error=result.srm_error,
        attempts=result.attempts,
        forced_used=result.forced_used,
        attached=attached,
    )


def _failed_result(plan: PlanRef, err: ChildWorkflowError) -> ReprotectPlanResult:
    cause = err.cause
    while isinstance(cause, ActivityError | ChildWorkflowError) and cause.cause is not None:
        cause = cause.cause
    outcome = ReprotectOutcome.FAILED
    if isinstance(cause, ApplicationError):
        reason, error_type = cause.message, cause.type
    elif isinstance(cause, CancelledError):
        outcome, reason, error_type = ReprotectOutcome.CANCELLED, "plan workflow cancelled", None
    else:
        reason, error_type = str(cause or err), None
    return ReprotectPlanResult(
        plan_id=plan.plan_id,
        plan_name=plan.plan_name,
        outcome=outcome,
        reason=reason,
        error_type=error_type,
    )


def _completion(result: BulkReprotectResult) -> dict[str, object]:
    """The completion notice: totals and failures, not every plan (the report has those)."""
    return {
        "workflow_id": workflow.info().workflow_id,
        "site": result.site,
        "counts": result.counts,
        "failures_by_cause": result.failures_by_cause,
        "not_started": result.not_started,
        "stop_reason": result.stop_reason,
        "duration_seconds": result.duration_seconds,
        "requested_by": result.requested_by,
    }


def _counts(results: list[PlanSummary]) -> dict[str, int]:
    counts = {outcome.value: 0 for outcome in ReprotectOutcome}
    for result in results:
        counts[result.outcome.value] += 1
    return counts


def _failures_by_cause(results: list[PlanSummary]) -> dict[str, list[str]]:
    causes: dict[str, list[str]] = {}
    for result in results:
        if result.outcome == ReprotectOutcome.FAILED:
            cause = result.error_type or (result.reason or "unknown").split(":")[0]
            causes.setdefault(cause, []).append(result.plan_id)
    return causes
