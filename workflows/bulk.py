"""BulkReprotectWorkflow: many plans through ReprotectPlanWorkflow children, safely.

A sliding window keeps at most ``max_concurrency`` plans in flight and never runs two plans that
share a protection group at once. Children use the single-plan workflow ids, so a plan already
being reprotected elsewhere is awaited, not started twice. Long runs drain and continue as new
with the queue, the totals and the compact rows of the run that ends (a segment, bounded in
rows and bytes), so no payload holds every row of a large run.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

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
    import workflows.plan_steps as plan_steps
    import workflows.policies as policies
    from workflows.bulk_models import (
        CARRY_BUDGET,
        MIN_SEGMENT_ROWS,
        NOT_FOUND_REASON,
        REASON_MAX,
        RECENT_ROWS,
        ROW_RESERVE,
        SEGMENT_ROWS,
        SRM_ERROR_MAX,
        AwaitWorkflowInput,
        BulkProgress,
        BulkReprotectInput,
        BulkReprotectResult,
        BulkState,
        BulkTotals,
        CancelRemaining,
        ConcurrencyChange,
        ControlAck,
        DryRunPlan,
        DryRunReport,
        ForcedApproval,
        InFlightPlan,
        PlanRef,
        PlanSummary,
        ResultsPage,
        ResultsPageRequest,
        RunState,
        SelectionInput,
        cap_text,
        carried_ref,
        compact_row,
        json_size,
        listed_within_budget,
        not_found_row,
        skipped_row,
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
# Runs started before segments replay without the SEGMENT_ROWS limit on starting plans.
SEGMENTS_PATCH = "bulk-result-segments"
WEBHOOK_PLAN_IDS = 200
AWAIT_HEARTBEAT = timedelta(seconds=60)
# A plan's workflow may legitimately run for many hours; the activity only waits on it.
AWAIT_TIMEOUT = timedelta(days=2)


@workflow.defn
class BulkReprotectWorkflow:
    """Reprotect a selection of plans with bounded, conflict-aware concurrency."""

    @workflow.init
    def __init__(self, input: BulkReprotectInput) -> None:
        self._input = input
        self._state = _upgraded(input.state or BulkState(concurrency=input.max_concurrency))
        self._totals = self._state.totals or BulkTotals()
        # Rows recorded by this run; the previous run's rows are kept for the queries only.
        self._rows: list[PlanSummary] = []
        self._segmented = False
        # Bytes the next run's input would carry: queue, totals, unknown ids, this run's rows.
        self._carry = 0
        self._run_state = RunState.RESOLVING if input.state is None else RunState.RUNNING
        self._in_flight: dict[str, InFlightPlan] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._held: dict[str, str] = {}
        self._approvals: dict[str, str] = {}
        self._dirty = False

    @workflow.run
    async def run(self, input: BulkReprotectInput) -> BulkReprotectResult:
        """Resolve the selection, run the window until done, drain and continue when long."""
        self._segmented = workflow.patched(SEGMENTS_PATCH)
        if self._state.pairing_id is None:
            await self._resolve()
        if input.dry_run:
            return await self._dry_run()
        if self._segmented:
            self._carry = self._carry_base()
        try:
            await self._schedule()
        except asyncio.CancelledError:
            await self._stop_all(CancelRemaining(cancel_running=True, reason="run cancelled"))
            raise
        if self._state.queue and not self._state.stop_reason:
            await workflow.wait_condition(workflow.all_handlers_finished)
            workflow.continue_as_new(self._next_input())
        self._run_state = RunState.DONE
        await workflow.wait_condition(workflow.all_handlers_finished)
        result = self._result(workflow.now())
        if input.webhook is not None and input.webhook.on_completion:
            notice = _completion(result, workflow.info().workflow_id)
            await notify_webhook(input.webhook, "bulk.completed", notice)
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
        self._state.unknown_plan_ids = list(selection.unknown_plan_ids)
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
        full = self._segment_room() <= 0
        return bool(self._state.queue) and (long or full or info.is_continue_as_new_suggested())

    def _segment_room(self) -> int:
        """Plans this run may still start: its segment holds SEGMENT_ROWS rows at most and what
        it carries into continue-as-new stays within CARRY_BUDGET bytes."""
        if not self._segmented:
            return self._state.concurrency
        running = len(self._in_flight)
        by_bytes = (CARRY_BUDGET - self._carry) // ROW_RESERVE - running
        if not self._rows and not running:
            # A selection too large for the budget still moves on, a small segment at a time.
            by_bytes = max(by_bytes, MIN_SEGMENT_ROWS)
        return min(SEGMENT_ROWS - len(self._rows) - running, by_bytes)

    def _carry_base(self) -> int:
        queue = sum(json_size(carried_ref(plan)) for plan in self._state.queue)
        unknown = sum(len(plan_id) + 3 for plan_id in self._state.unknown_plan_ids)
        return queue + unknown + json_size(self._totals)

    def _start_eligible(self) -> None:
        if self._state.paused or self._state.stop_reason or self._draining():
            self._run_state = self._current_run_state()
            return
        free = min(self._state.concurrency - len(self._in_flight), self._segment_room())
        for plan in startable(self._state.queue, self._held, free):
            self._take(plan, workflow.now())
            self._tasks[plan.plan_id] = asyncio.create_task(self._run_plan(plan))
        self._run_state = self._current_run_state()

    def _take(self, plan: PlanRef, now: datetime) -> None:
        """Move a plan from the queue to the plans in flight, holding its groups."""
        self._state.queue.remove(plan)
        self._carry -= json_size(carried_ref(plan))
        self._held.update(dict.fromkeys(plan.group_ids, plan.plan_id))
        self._in_flight[plan.plan_id] = InFlightPlan(
            plan_id=plan.plan_id,
            plan_name=plan.plan_name,
            workflow_id=self._workflow_id(plan.plan_id),
            started_at=now,
        )

    def _finish(self, plan: PlanRef, summary: PlanSummary) -> PlanSummary:
        """Keep a finished plan's compact row in this run's segment, count it, free its groups."""
        row = compact_row(summary)
        self._rows.append(row)
        self._totals.add(row)
        failed = row.outcome == ReprotectOutcome.FAILED
        self._carry += json_size(row) + (len(row.plan_id) + 3 if failed else 0)
        for group in plan.group_ids:
            self._held.pop(group, None)
        self._in_flight.pop(plan.plan_id, None)
        return row

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
        summary.started_at, summary.ended_at = started, workflow.now()
        row = self._finish(plan, summary)
        self._tasks.pop(plan.plan_id, None)
        self._check_failure_budget()
        self._dirty = True
        target = self._input.webhook
        if target is not None and target.on_failure and row.outcome == ReprotectOutcome.FAILED:
            payload = row.model_dump(mode="json")
            payload["srm_error"] = cap_text(summary.srm_error, SRM_ERROR_MAX)
            payload["workflow_id"] = self._workflow_id(plan.plan_id)
            await notify_webhook(target, "bulk.plan_failed", payload)

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
        failed = self._counts()[ReprotectOutcome.FAILED.value]
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
        report = listed_within_budget(report)
        self._run_state = RunState.DONE
        result = self._result(workflow.now())
        # Nothing ran: the dry-run report lists the plans, the rows only the ids SRM lacks.
        result.plans = self._held_rows()[:SEGMENT_ROWS]
        result.plans_complete = len(self._state.unknown_plan_ids) <= SEGMENT_ROWS
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
            verdict.blocked_reason = cap_text(
                str(cause.message if isinstance(cause, ApplicationError) else err), REASON_MAX
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
        """Counts by outcome, plans in flight, ETA and the plans finished last."""
        totals = self._totals
        mean = [totals.reprotected_seconds / totals.reprotected] if totals.reprotected else []
        return BulkProgress(
            state=self._run_state,
            selected=self._state.selected,
            queued=len(self._state.queue),
            concurrency=self._state.concurrency,
            counts=self._counts(),
            in_flight=sorted(self._in_flight.values(), key=lambda p: p.started_at),
            results=self._held_rows()[-RECENT_ROWS:],
            finished=totals.finished + len(self._state.unknown_plan_ids),
            eta_seconds=eta_seconds(
                mean,
                len(self._state.queue),
                len(self._in_flight),
                self._state.concurrency,
            ),
            stop_reason=self._state.stop_reason,
            started_at=self._state.started_at,
        )

    @workflow.query
    def results_page(self, request: ResultsPageRequest) -> ResultsPage:
        """A page of the rows this run holds: unknown ids, the previous segment, its own."""
        rows = self._held_rows()
        held = len(self._state.previous) + len(self._rows)
        return ResultsPage(
            offset=request.offset,
            total=len(rows),
            earlier=self._totals.finished - held,
            rows=rows[request.offset : request.offset + request.limit],
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

    def _held_rows(self) -> list[PlanSummary]:
        """Rows in memory, in finishing order: unknown ids, the previous segment, this run's."""
        unknown = [not_found_row(i, self._state.started_at) for i in self._state.unknown_plan_ids]
        return unknown + self._state.previous + self._rows

    def _counts(self) -> dict[str, int]:
        counts = dict(self._totals.counts)
        failed = ReprotectOutcome.FAILED.value
        counts[failed] = counts.get(failed, 0) + len(self._state.unknown_plan_ids)
        return counts

    def _failures_by_cause(self) -> dict[str, list[str]]:
        causes = {policies.SRM_NOT_FOUND: list(self._state.unknown_plan_ids)}
        for cause, plan_ids in self._totals.failures_by_cause.items():
            causes.setdefault(cause, []).extend(plan_ids)
        return {cause: ids for cause, ids in causes.items() if ids}

    def _next_input(self) -> BulkReprotectInput:
        """The next run's input: the state (the queue compacted, the totals and this run's rows
        only) instead of the selection, which is resolved once (plan_ids may be thousands)."""
        state = self._state.model_copy(
            update={
                "queue": [carried_ref(p) for p in self._state.queue],
                "totals": self._totals,
                "previous": self._rows,
                "results": [],
                "runs": self._state.runs + 1,
            }
        )
        return self._input.model_copy(update={"state": state, "plan_ids": []})

    def _result(self, now: datetime) -> BulkReprotectResult:
        started = self._state.started_at or now
        queue = self._state.queue
        held = len(self._state.previous) + len(self._rows)
        skipped = [skipped_row(p.plan_id, p.plan_name, self._state.stop_reason) for p in queue]
        rows = self._held_rows() + skipped
        complete = self._totals.finished == held and len(rows) <= SEGMENT_ROWS
        counts = self._counts()
        skipped_key = ReprotectOutcome.SKIPPED.value
        counts[skipped_key] = counts.get(skipped_key, 0) + len(queue)
        return BulkReprotectResult(
            site=self._input.site,
            pairing_id=self._state.pairing_id,
            plans=rows if complete else list(self._rows),
            plans_complete=complete,
            counts=counts,
            failures_by_cause=self._failures_by_cause(),
            not_started=[p.plan_id for p in queue],
            unknown_plan_ids=list(self._state.unknown_plan_ids),
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


def _completion(result: BulkReprotectResult, workflow_id: str) -> dict[str, object]:
    """The completion notice: totals and failures, not every plan (the report has those).

    The plan id lists stop after WEBHOOK_PLAN_IDS ids in all; the ``*_count`` fields keep the
    full numbers, so a run of thousands of plans still sends a small notice.
    """
    room = WEBHOOK_PLAN_IDS
    failures: dict[str, list[str]] = {}
    for cause, plan_ids in result.failures_by_cause.items():
        failures[cause], room = plan_ids[: max(room, 0)], room - len(plan_ids)
    return {
        "workflow_id": workflow_id,
        "site": result.site,
        "counts": result.counts,
        "failures_by_cause": failures,
        "failures_count_by_cause": {c: len(ids) for c, ids in result.failures_by_cause.items()},
        "not_started": result.not_started[:WEBHOOK_PLAN_IDS],
        "not_started_count": len(result.not_started),
        "stop_reason": result.stop_reason,
        "duration_seconds": result.duration_seconds,
        "requested_by": result.requested_by,
    }


def _upgraded(state: BulkState) -> BulkState:
    """A state as this code carries it; one from a run before segments holds every row in
    ``results`` (unknown ids included), which become the totals and the previous segment."""
    if state.totals is not None:
        return state
    totals, previous, unknown = BulkTotals(), [], list(state.unknown_plan_ids)
    for row in state.results:
        if row.error_type == policies.SRM_NOT_FOUND and row.reason == NOT_FOUND_REASON:
            unknown.append(row.plan_id)
        else:
            previous.append(row)
            totals.add(row)
    return state.model_copy(
        update={"totals": totals, "previous": previous, "results": [], "unknown_plan_ids": unknown}
    )
