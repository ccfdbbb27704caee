"""PlanOperationWorkflow: one SRM plan action (test, cleanup, recovery, reprotect, cancel).

The reprotect pattern generalised: precheck -> start (start-or-adopt) -> srm_task (the shared
heartbeating ``wait_for_task``) -> verify, with the rules of each action in the table of
``activities/operations.py``. Cancelling the workflow asks SRM to cancel the running task.
Also home of ``notify_webhook``, the workflow-side helper every run uses to send notifications.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    import workflows.plan_steps as plan_steps
    import workflows.policies as policies
    from activities.operations import OperationActivities
    from activities.srm import SrmActivities
    from workflows.drill_models import (
        CancelOperationInput,
        Operation,
        OperationAction,
        OperationOutcome,
        OperationPrecheckInput,
        OperationPrecheckResult,
        OperationProgress,
        OperationResult,
        PlanOperationInput,
        StartOperationInput,
        StartOperationResult,
        VerifyOperationInput,
        WebhookInput,
        WebhookTarget,
    )
    from workflows.limiter import HoldsOperationSlot, OperationSlot
    from workflows.models import Sites, TaskOutcome
    from workflows.plan_steps import Stop as _Stop

# What a finished SRM task must leave behind for each action to count as done.
DONE_STATUS: dict[Operation, str | None] = {
    Operation.TEST: "TEST_COMPLETE",
    Operation.CLEANUP: "READY_STATE",
    Operation.RECOVERY: "RECOVERY_COMPLETE",
    Operation.REPROTECT: "READY_STATE",
    Operation.CANCEL: None,
}
# Workflows started before the site limiter existed replay without it.
SITE_LIMITER_PATCH = "site-limiter"
WEBHOOK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=6,
    non_retryable_error_types=["WebhookRejected", "WebhookNotConfigured"],
)


async def notify_webhook(target: WebhookTarget | None, event: str, payload: dict[str, Any]) -> bool:
    """POST ``payload`` to the target through the retried ``send_webhook`` activity.

    A notification never fails the run: after the last retry it is logged and dropped.
    """
    if target is None:
        return False
    delivery = f"{workflow.info().workflow_id}/{workflow.info().run_id}/{event}"
    try:
        await workflow.execute_activity(
            "send_webhook",
            WebhookInput(url=target.url, event=event, delivery_id=delivery, payload=payload),
            start_to_close_timeout=timedelta(seconds=30),
            schedule_to_close_timeout=timedelta(minutes=10),
            retry_policy=WEBHOOK_RETRY,
        )
    except ActivityError as err:
        workflow.logger.warning("webhook not delivered", extra={"event": event, "error": str(err)})
        return False
    return True


@workflow.defn
class PlanOperationWorkflow(HoldsOperationSlot):
    """Run one action on one recovery plan: precheck, start or adopt, wait, verify."""

    def __init__(self) -> None:
        self._result = OperationResult()
        self._step = "pending"
        self._pre: OperationPrecheckResult | None = None
        self._start: asyncio.Future[StartOperationResult] | None = None
        self._poll = 5.0
        self._slot = OperationSlot("")

    @workflow.run
    async def run(self, inp: PlanOperationInput) -> OperationResult:
        """Run the steps and return how the plan ended."""
        self._poll = inp.poll_interval_seconds
        self._slot = OperationSlot(inp.site)
        self._result = OperationResult(
            site=inp.site,
            pairing_id=inp.pairing_id,
            plan_id=inp.plan_id,
            operation=inp.operation,
            started_at=workflow.now(),
        )
        try:
            await self._script(inp)
        except _Stop:
            pass
        except asyncio.CancelledError:
            await self._on_cancel(inp)
        await self._slot.release()
        self._step = "done"
        self._result.ended_at = workflow.now()
        workflow.logger.info(
            "operation finished",
            extra={"plan_id": inp.plan_id, "outcome": self._result.outcome.value},
        )
        return self._result

    @workflow.query
    def progress(self) -> OperationProgress:
        """Current step, SRM task and (when finished) the outcome."""
        return OperationProgress(
            operation=self._result.operation,
            step=self._step,
            plan_id=self._result.plan_id,
            srm_task_id=self._result.srm_task_id,
            outcome=self._result.outcome if self._step == "done" else None,
        )

    async def _script(self, inp: PlanOperationInput) -> None:
        limited = inp.operation is not Operation.CANCEL and workflow.patched(SITE_LIMITER_PATCH)
        if limited:
            # Queue for the site's operation slot while the precheck runs.
            self._slot.ask(inp.plan_id)
        pre = await self._precheck(inp)
        if pre.action is OperationAction.ALREADY_DONE:
            self._finish(OperationOutcome.ALREADY_DONE, sites=pre.sites)
            return
        if limited:
            self._step = "queued"
            await self._guard(self._slot.acquire(inp.plan_id, None))
        started = await self._begin(inp, pre)
        if started.already_done:
            self._finish(OperationOutcome.ALREADY_DONE, sites=started.sites)
            return
        outcome = await self._wait(inp, pre, started)
        await self._slot.release()
        self._judge(inp.operation, outcome)
        if not inp.verify:
            self._result.verified_at = workflow.now()
            self._finish(OperationOutcome.DONE, sites=outcome.sites)
            return
        await self._verify(inp, pre)

    async def _precheck(self, inp: PlanOperationInput) -> OperationPrecheckResult:
        self._step = "precheck"
        pre: OperationPrecheckResult = await self._activity(
            OperationActivities.precheck_operation,
            OperationPrecheckInput(
                site=inp.site,
                pairing_id=inp.pairing_id,
                plan_id=inp.plan_id,
                operation=inp.operation,
            ),
            start_to_close=policies.PRECHECK_START_TO_CLOSE,
            schedule_to_close=policies.PRECHECK_SCHEDULE_TO_CLOSE,
        )
        self._pre = pre
        plan_steps.record_precheck(self._result, pre)
        return pre

    async def _begin(
        self, inp: PlanOperationInput, pre: OperationPrecheckResult
    ) -> StartOperationResult:
        """Start or adopt; shielded so a cancel never leaves a POST in flight unseen."""
        self._step = "start"
        self._result.task_started_at = workflow.now()
        self._start = self._start_activity(
            OperationActivities.start_operation,
            StartOperationInput(
                site=inp.site,
                pairing_id=pre.pairing_id,
                plan_id=pre.plan_id,
                operation=inp.operation,
                forced=inp.forced,
                sync_data=inp.sync_data,
                planned_failover=inp.planned_failover,
                baseline_task_ids=pre.baseline_task_ids,
            ),
            start_to_close=policies.START_START_TO_CLOSE,
            schedule_to_close=policies.START_SCHEDULE_TO_CLOSE,
        )
        started: StartOperationResult = await self._guard(asyncio.shield(self._start))
        self._record_start(started)
        return started

    def _record_start(self, started: StartOperationResult) -> None:
        self._result.final_plan_status = started.plan_status
        self._result.srm_task_id = started.task_id or self._result.srm_task_id
        self._result.adopted = self._result.adopted or started.adopted

    async def _wait(
        self, inp: PlanOperationInput, pre: OperationPrecheckResult, started: StartOperationResult
    ) -> TaskOutcome:
        if started.task_id is None:
            return plan_steps.no_task_outcome(started.plan_status)
        self._step = "srm_task"
        outcome: TaskOutcome = await self._activity(
            SrmActivities.wait_for_task,
            plan_steps.wait_input(inp.site, pre, started.task_id, inp.poll_interval_seconds),
            **plan_steps.wait_options(inp.poll_interval_seconds),
        )
        plan_steps.record_outcome(self._result, outcome)
        return outcome

    def _judge(self, operation: Operation, outcome: TaskOutcome) -> None:
        """Stop with FAILED/CANCELLED unless the task left the plan where the action leads."""
        res = self._result
        if operation is Operation.CANCEL:
            return
        done = DONE_STATUS[operation]
        if outcome.status in ("SUCCESS", "UNKNOWN") and outcome.plan_status == done:
            return
        res.srm_error = outcome.error_message
        srm_says = f": SRM says {outcome.error_message!r}" if outcome.error_message else ""
        if outcome.status == "CANCELLED":
            reason = f"SRM task {outcome.task_id} was cancelled outside srmflow"
            self._finish(OperationOutcome.CANCELLED, reason=f"{reason}; plan {outcome.plan_status}")
        else:
            self._finish(
                OperationOutcome.FAILED,
                reason=f"{operation} task {outcome.task_id} ended {outcome.status} and the plan "
                f"is {outcome.plan_status}{srm_says}",
                error_type="TaskFailed",
            )
        raise _Stop

    async def _verify(self, inp: PlanOperationInput, pre: OperationPrecheckResult) -> None:
        self._step = "verify"
        expected = inp.expected_sites or self._expected_sites(inp.operation, pre)
        found = await self._activity(
            OperationActivities.verify_operation,
            VerifyOperationInput(
                site=inp.site,
                pairing_id=pre.pairing_id,
                plan_id=pre.plan_id,
                operation=inp.operation,
                expected_sites=expected,
                settle_seconds=plan_steps.verify_settle_seconds(inp.poll_interval_seconds),
            ),
            start_to_close=policies.VERIFY_START_TO_CLOSE,
            schedule_to_close=policies.VERIFY_SCHEDULE_TO_CLOSE,
        )
        plan_steps.record_verify(self._result, found)
        if found.ok:
            self._result.verified_at = workflow.now()
            self._finish(OperationOutcome.DONE, sites=found.sites)
            return
        self._finish(
            OperationOutcome.FAILED,
            sites=found.sites,
            reason=plan_steps.verification_failed(found.problems),
            error_type="VerificationFailed",
        )

    @staticmethod
    def _expected_sites(operation: Operation, pre: OperationPrecheckResult) -> Sites | None:
        if operation is Operation.REPROTECT:
            return pre.sites.swapped() if pre.action is OperationAction.START else None
        return pre.sites

    async def _on_cancel(self, inp: PlanOperationInput) -> None:
        """Cancel the SRM task, if one may be running, then report CANCELLED."""
        self._step = "cancel"
        if self._start is not None and not self._start.done():
            with suppress(ActivityError):
                self._record_start(await self._start)
        pre, reason = self._pre, "cancelled before the operation was started"
        if pre is not None and self._start is not None:
            result = await self._start_activity(
                OperationActivities.cancel_operation,
                CancelOperationInput(
                    site=inp.site,
                    pairing_id=pre.pairing_id,
                    plan_id=pre.plan_id,
                    operation=inp.operation,
                    task_id=self._result.srm_task_id,
                    poll_interval_seconds=plan_steps.cancel_poll_seconds(inp.poll_interval_seconds),
                ),
                start_to_close=policies.CANCEL_START_TO_CLOSE,
                schedule_to_close=policies.CANCEL_SCHEDULE_TO_CLOSE,
            )
            self._result.final_plan_status = result.plan_status or self._result.final_plan_status
            reason = (
                f"cancelled; SRM task ended {result.task_status}"
                if result.requested
                else (f"cancelled; {result.message}")
            )
        self._finish(OperationOutcome.CANCELLED, reason=reason)

    def _finish(
        self,
        outcome: OperationOutcome,
        *,
        sites: Sites | None = None,
        reason: str | None = None,
        error_type: str | None = None,
    ) -> None:
        res = self._result
        res.outcome = outcome
        res.sites_after = sites or res.sites_after
        res.reason = reason or res.reason
        res.error_type = error_type or res.error_type

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
            schedule_to_close=schedule_to_close,
            heartbeat=heartbeat or policies.heartbeat_timeout(self._poll),
            retry=retry,
        )

    async def _activity(self, method: Any, arg: Any, **options: Any) -> Any:
        return await self._guard(self._start_activity(method, arg, **options))

    async def _guard(self, awaitable: Any) -> Any:
        """Await an activity; its final failure becomes outcome FAILED with a reason."""
        return await plan_steps.guarded(awaitable, self._fail_from)

    def _fail_from(self, err: ActivityError) -> None:
        cause = err.cause
        step = self._step
        if isinstance(cause, ApplicationError):
            self._finish(
                OperationOutcome.FAILED,
                reason=f"{step}: {cause.message}",
                error_type=cause.type,
            )
        else:
            self._finish(
                OperationOutcome.FAILED,
                reason=f"{step}: {cause or err}",
                error_type="ActivityFailed",
            )
