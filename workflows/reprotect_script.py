"""The reprotect plan workflow's script, passed through the workflow sandbox.

Steps: precheck -> queued (one of the site's SRM operation slots, ``workflows/limiter.py``)
-> start (start-or-adopt) -> srm_task (one heartbeating activity follows the SRM task, so
history stays a few dozen events however long the task runs) -> verify. The slot is held from
start until the task has ended. A plan left INCOMPLETE_REPROTECT is re-run once when the input
allows. Cancelling the workflow asks SRM to cancel the task and returns outcome CANCELLED.

``workflows/reprotect.py`` defines the workflow on this class. The sandbox loads that module
afresh for every run and each cached run keeps its copy; this module is loaded once per worker
(about 40 KiB less per plan in flight: docs/benchmarks.md). Being passed through, it skips
the sandbox's import checks, so it imports only deterministic modules and never reads the clock
except through ``workflow.now()`` (tests/test_sandbox_imports.py checks both).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as TimeoutFailure

import workflows.plan_steps as plan_steps
import workflows.policies as policies
from activities.srm import SrmActivities
from workflows.limiter import HoldsOperationSlot, OperationSlot
from workflows.models import (
    CancelTaskInput,
    PlanAction,
    PrecheckInput,
    PrecheckResult,
    ReprotectOutcome,
    ReprotectPlanInput,
    ReprotectPlanResult,
    ReprotectProgress,
    StartReprotectInput,
    StartReprotectResult,
    Step,
    StepTiming,
    TaskOutcome,
    VerifyInput,
)

READY_STATE = "READY_STATE"
# Workflows started before the site limiter existed replay without it.
SITE_LIMITER_PATCH = "site-limiter"
INCOMPLETE_STATUSES = frozenset({"INCOMPLETE_REPROTECT", "PARTIAL_REPROTECT"})


class ReprotectScript(HoldsOperationSlot):
    """Reprotect one recovery plan: precheck, start or adopt, wait, verify."""

    def __init__(self) -> None:
        self._inp: ReprotectPlanInput | None = None
        self._result = ReprotectPlanResult()
        self._step = Step.PENDING
        self._task_progress: int | None = None
        self._deadline: datetime | None = None
        self._start_handle: asyncio.Future[StartReprotectResult] | None = None
        self._pre: PrecheckResult | None = None
        self._slot = OperationSlot("")

    async def execute(self, inp: ReprotectPlanInput) -> ReprotectPlanResult:
        """Run the steps and return how the plan ended."""
        self._inp = inp
        self._result = ReprotectPlanResult(
            site=inp.site, pairing_id=inp.pairing_id, plan_id=inp.plan_id
        )
        self._slot = OperationSlot(inp.site)
        if inp.deadline_seconds is not None:
            self._deadline = workflow.now() + timedelta(seconds=inp.deadline_seconds)
        try:
            await self._script(inp)
        except plan_steps.Stop:
            pass
        except asyncio.CancelledError:
            await self._on_cancel(inp)
        await self._slot.release()
        self._step = Step.DONE
        # Metrics are not commands: recording them changes nothing in history or on replay.
        workflow.metric_meter().create_counter(
            "srmflow_plans_finished", "Plans whose reprotect workflow ended, by outcome"
        ).add(1, {"site": inp.site, "outcome": self._result.outcome.value})
        workflow.logger.info(
            "reprotect finished",
            extra={"plan_id": inp.plan_id, "outcome": self._result.outcome.value},
        )
        return self._result

    def current_progress(self) -> ReprotectProgress:
        """Current step, SRM task, last known task progress and step timings."""
        return ReprotectProgress(
            step=self._step,
            plan_id=self._result.plan_id,
            plan_name=self._result.plan_name,
            srm_task_id=self._result.srm_task_id,
            task_progress=self._task_progress,
            attempts=self._result.attempts,
            steps=list(self._result.steps),
            outcome=self._result.outcome if self._step == Step.DONE else None,
        )

    # --- the script ---------------------------------------------------------------------------

    async def _script(self, inp: ReprotectPlanInput) -> None:
        limited = workflow.patched(SITE_LIMITER_PATCH)
        if limited:
            # Queue for the site's operation slot while the precheck runs.
            self._slot.ask(inp.plan_id)
        pre = await self._precheck(inp)
        if pre.action is PlanAction.ALREADY_PROTECTED:
            self._finish(ReprotectOutcome.ALREADY_PROTECTED, sites_after=pre.sites)
            return
        if limited:
            await self._acquire_slot(inp)
        attempts = 2 if inp.retry_incomplete else 1
        outcome: TaskOutcome | None = None
        for attempt in range(1, attempts + 1):
            forced = inp.forced or (attempt > 1 and inp.allow_forced_retry)
            started = await self._start(inp, pre, forced, attempt, outcome)
            if started.already_protected:
                self._finish(ReprotectOutcome.ALREADY_PROTECTED, sites_after=started.sites)
                return
            outcome = await self._wait(inp, pre, started)
            if not self._should_rerun(outcome, attempt, attempts):
                break
            workflow.logger.info(
                "plan incomplete after reprotect; running it again",
                extra={"plan_id": inp.plan_id, "plan_status": outcome.plan_status},
            )
        assert outcome is not None
        await self._slot.release()
        self._judge_task(outcome)
        await self._verify(inp, pre, outcome)

    async def _acquire_slot(self, inp: ReprotectPlanInput) -> None:
        """Wait for one of the site's operation slots (bounded by the deadline, if any)."""
        timeout = None
        if self._deadline is not None:
            timeout = self._timeouts(policies.WAIT_SCHEDULE_TO_CLOSE)
        with self._timed(Step.QUEUED):
            granted = await self._guard(self._slot.acquire(inp.plan_id, timeout))
        if not granted:
            self._finish(
                ReprotectOutcome.FAILED,
                reason=f"deadline exceeded while waiting for an SRM operation slot on site "
                f"{inp.site!r} (raise its max_operations or the deadline)",
                error_type="Deadline",
            )
            raise plan_steps.Stop

    def _should_rerun(self, outcome: TaskOutcome, attempt: int, attempts: int) -> bool:
        return (
            attempt < attempts
            and outcome.status != "CANCELLED"
            and outcome.plan_status in INCOMPLETE_STATUSES
        )

    async def _precheck(self, inp: ReprotectPlanInput) -> PrecheckResult:
        with self._timed(Step.PRECHECK):
            pre = await self._activity(
                SrmActivities.precheck,
                PrecheckInput(
                    site=inp.site,
                    pairing_id=inp.pairing_id,
                    plan_id=inp.plan_id,
                    allow_rerun=inp.rerun_incomplete_plans,
                    pairing_checked=inp.pairing_checked,
                    verify_after=inp.verify,
                ),
                start_to_close=policies.PRECHECK_START_TO_CLOSE,
                schedule_to_close=policies.PRECHECK_SCHEDULE_TO_CLOSE,
            )
        self._pre = pre
        plan_steps.record_precheck(self._result, pre)
        return pre

    async def _start(
        self,
        inp: ReprotectPlanInput,
        pre: PrecheckResult,
        forced: bool,
        attempt: int,
        previous: TaskOutcome | None,
    ) -> StartReprotectResult:
        """Start or adopt; shielded so a cancel never leaves a POST in flight unseen."""
        baseline_ms = pre.last_reprotect_report_ms
        if previous is not None and previous.complete_time_ms is not None:
            baseline_ms = max(baseline_ms or 0, previous.complete_time_ms)
        request = StartReprotectInput(
            site=inp.site,
            pairing_id=pre.pairing_id,
            plan_id=pre.plan_id,
            forced=forced,
            allow_rerun=inp.rerun_incomplete_plans or attempt > 1,
            baseline_task_ids=[*pre.baseline_task_ids, *self._result.srm_task_ids],
            last_reprotect_report_ms=baseline_ms,
            precheck_status=pre.plan_status if attempt == 1 else None,
        )
        self._result.attempts = attempt
        with self._timed(Step.START, attempt):
            self._start_handle = self._start_activity(
                SrmActivities.start_reprotect,
                request,
                start_to_close=policies.START_START_TO_CLOSE,
                schedule_to_close=policies.START_SCHEDULE_TO_CLOSE,
            )
            started = await self._guard(asyncio.shield(self._start_handle))
        self._record_start(started, forced)
        return started

    def _record_start(self, started: StartReprotectResult, forced: bool) -> None:
        res = self._result
        res.final_plan_status = started.plan_status
        if started.task_id is not None:
            res.srm_task_id = started.task_id
            if started.task_id not in res.srm_task_ids:
                res.srm_task_ids.append(started.task_id)
        res.adopted = res.adopted or started.adopted
        res.forced_used = res.forced_used or (forced and started.posted)

    async def _wait(
        self, inp: ReprotectPlanInput, pre: PrecheckResult, started: StartReprotectResult
    ) -> TaskOutcome:
        if started.task_id is None:
            return plan_steps.no_task_outcome(started.plan_status)
        with self._timed(Step.SRM_TASK, self._result.attempts):
            outcome = await self._activity(
                SrmActivities.wait_for_task,
                plan_steps.wait_input(inp.site, pre, started.task_id, inp.poll_interval_seconds),
                **plan_steps.wait_options(inp.poll_interval_seconds),
            )
        self._task_progress = outcome.progress
        plan_steps.record_outcome(self._result, outcome)
        return outcome

    def _judge_task(self, outcome: TaskOutcome) -> None:
        """Stop with FAILED/CANCELLED unless the task left the plan reprotected."""
        res = self._result
        if outcome.status == "CANCELLED":
            res.srm_error = outcome.error_message
            self._finish(
                ReprotectOutcome.CANCELLED,
                reason=f"SRM task {outcome.task_id} was cancelled outside srmflow; the plan is "
                f"{outcome.plan_status}",
            )
            raise plan_steps.Stop
        succeeded = outcome.status in ("SUCCESS", "UNKNOWN") and outcome.plan_status == READY_STATE
        if succeeded or (outcome.status == "SUCCESS" and self._inputs.verify):
            return
        res.srm_error = outcome.error_message
        srm_says = f": SRM says {outcome.error_message!r}" if outcome.error_message else ""
        if outcome.plan_status in INCOMPLETE_STATUSES:
            reason = (
                f"reprotect left the plan {outcome.plan_status} after {res.attempts} "
                f"attempt(s){srm_says}. Fix the cause, then run reprotect again"
                + ("" if self._inputs.allow_forced_retry else " (or allow a forced re-run)")
            )
        else:
            reason = (
                f"SRM task {outcome.task_id} ended {outcome.status} and the plan is "
                f"{outcome.plan_status}{srm_says}"
            )
        self._finish(ReprotectOutcome.FAILED, reason=reason)
        raise plan_steps.Stop

    async def _verify(
        self, inp: ReprotectPlanInput, pre: PrecheckResult, outcome: TaskOutcome
    ) -> None:
        if not inp.verify:
            self._finish(ReprotectOutcome.REPROTECTED, sites_after=outcome.sites)
            return
        with self._timed(Step.VERIFY):
            found = await self._activity(
                SrmActivities.verify,
                VerifyInput(
                    site=inp.site,
                    pairing_id=pre.pairing_id,
                    plan_id=pre.plan_id,
                    expected_sites=pre.sites.swapped() if pre.action is PlanAction.START else None,
                    settle_seconds=plan_steps.verify_settle_seconds(inp.poll_interval_seconds),
                ),
                start_to_close=policies.VERIFY_START_TO_CLOSE,
                schedule_to_close=policies.VERIFY_SCHEDULE_TO_CLOSE,
            )
        plan_steps.record_verify(self._result, found)
        if found.ok:
            self._finish(ReprotectOutcome.REPROTECTED, sites_after=found.sites)
            return
        self._finish(
            ReprotectOutcome.FAILED,
            sites_after=found.sites,
            reason=plan_steps.verification_failed(found.problems),
            error_type="VerificationFailed",
        )

    # --- cancellation -------------------------------------------------------------------------

    async def _on_cancel(self, inp: ReprotectPlanInput) -> None:
        """Cancel the SRM task, if one may be running, then report CANCELLED."""
        self._step = Step.CANCEL
        if self._start_handle is not None and not self._start_handle.done():
            # The POST may be in flight: learn its task id before cancelling anything.
            with suppress(ActivityError):
                self._record_start(await self._start_handle, False)
        pre = self._pre
        reason = "cancelled before any reprotect was started"
        if pre is not None and self._start_handle is not None:
            with self._timed(Step.CANCEL):
                result = await plan_steps.start_activity(
                    SrmActivities.cancel_task,
                    CancelTaskInput(
                        site=inp.site,
                        pairing_id=pre.pairing_id,
                        plan_id=pre.plan_id,
                        task_id=self._result.srm_task_id,
                        poll_interval_seconds=plan_steps.cancel_poll_seconds(
                            inp.poll_interval_seconds
                        ),
                    ),
                    start_to_close=policies.CANCEL_START_TO_CLOSE,
                    schedule_to_close=policies.CANCEL_SCHEDULE_TO_CLOSE,
                    heartbeat=self._heartbeat_timeout(),
                )
            self._result.final_plan_status = result.plan_status or self._result.final_plan_status
            reason = (
                f"cancelled; SRM task {self._result.srm_task_id} ended {result.task_status}"
                if result.requested
                else f"cancelled; {result.message}"
            )
        self._finish(ReprotectOutcome.CANCELLED, reason=reason)

    # --- helpers ------------------------------------------------------------------------------

    @property
    def _inputs(self) -> ReprotectPlanInput:
        assert self._inp is not None
        return self._inp

    def _finish(
        self,
        outcome: ReprotectOutcome,
        *,
        sites_after: Any = None,
        reason: str | None = None,
        error_type: str | None = None,
    ) -> None:
        res = self._result
        res.outcome = outcome
        if sites_after is not None:
            res.sites_after = sites_after
        if reason is not None:
            res.reason = reason
        if error_type is not None:
            res.error_type = error_type

    @contextmanager
    def _timed(self, step: Step, attempt: int = 1) -> Iterator[None]:
        self._step = step
        timing = StepTiming(step=step, started_at=workflow.now(), attempt=attempt)
        self._result.steps.append(timing)
        try:
            yield
        finally:
            timing.ended_at = workflow.now()

    def _heartbeat_timeout(self) -> timedelta:
        """Every activity heartbeats, so a crashed worker is noticed in seconds."""
        return policies.heartbeat_timeout(self._inputs.poll_interval_seconds)

    def _timeouts(self, schedule_to_close: timedelta) -> timedelta:
        """Cap an activity's total time by what is left of the input's deadline."""
        if self._deadline is None:
            return schedule_to_close
        left = self._deadline - workflow.now()
        if left <= timedelta(0):
            self._finish(ReprotectOutcome.FAILED, reason="deadline exceeded", error_type="Deadline")
            raise plan_steps.Stop
        return min(schedule_to_close, left)

    def _start_activity(
        self,
        method: Any,
        arg: Any,
        *,
        schedule_to_close: timedelta,
        start_to_close: timedelta | None = None,
        heartbeat: timedelta | None = None,
        retry: Any = policies.SRM_CALL_RETRY,
    ) -> Any:
        return plan_steps.start_activity(
            method,
            arg,
            start_to_close=start_to_close,
            schedule_to_close=self._timeouts(schedule_to_close),
            heartbeat=heartbeat or self._heartbeat_timeout(),
            retry=retry,
        )

    async def _activity(self, method: Any, arg: Any, **options: Any) -> Any:
        return await self._guard(self._start_activity(method, arg, **options))

    async def _guard(self, awaitable: Any) -> Any:
        """Await an activity; its final failure becomes outcome FAILED with a reason."""
        return await plan_steps.guarded(awaitable, self._fail_from)

    def _fail_from(self, err: ActivityError) -> None:
        cause = err.cause
        step = self._step.value
        if isinstance(cause, ApplicationError):
            self._finish(
                ReprotectOutcome.FAILED, reason=f"{step}: {cause.message}", error_type=cause.type
            )
            return
        if isinstance(cause, TimeoutFailure):
            what = "deadline exceeded" if self._deadline is not None else "timed out"
            left = f"; SRM task {self._result.srm_task_id} may still be running (re-run to adopt)"
            self._finish(
                ReprotectOutcome.FAILED,
                reason=f"{step}: {what}" + (left if self._result.srm_task_id else ""),
                error_type="Timeout",
            )
            return
        self._finish(
            ReprotectOutcome.FAILED, reason=f"{step}: {cause or err}", error_type="ActivityFailed"
        )
