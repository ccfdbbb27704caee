"""Workflow-side bookkeeping shared by the plan workflows (reprotect and plan operations).

Pure helpers: they schedule nothing themselves beyond the activity the caller asks for, with
exactly the options the caller passes, so moving code here changes no workflow command.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError
from temporalio.exceptions import CancelledError as CancelledFailure

with workflow.unsafe.imports_passed_through():
    import workflows.policies as policies
    from workflows.bulk_models import Selection, SelectionInput
    from workflows.models import TaskOutcome, WaitForTaskInput, WaitOptions


class Stop(Exception):
    """Ends the script early with the outcome already recorded in the result."""


def start_activity(
    method: Any,
    arg: Any,
    *,
    schedule_to_close: timedelta,
    heartbeat: timedelta,
    start_to_close: timedelta | None = None,
    retry: Any = policies.SRM_CALL_RETRY,
) -> Any:
    """Schedule one activity with the plan workflows' usual options."""
    return workflow.start_activity_method(
        method,
        arg,
        start_to_close_timeout=start_to_close,
        schedule_to_close_timeout=schedule_to_close,
        heartbeat_timeout=heartbeat,
        retry_policy=retry,
    )


async def guarded(awaitable: Any, on_failure: Callable[[ActivityError], None]) -> Any:
    """Await an activity; its final failure is recorded by ``on_failure`` and ends the script.

    Only a workflow cancel cancels these activities, so a cancelled activity takes the
    workflow's cancel path.
    """
    try:
        return await awaitable
    except ActivityError as err:
        if isinstance(err.cause, CancelledFailure):
            raise asyncio.CancelledError from None
        on_failure(err)
        raise Stop from None


def record_precheck(res: Any, pre: Any) -> None:
    """Copy a precheck's plan identity, status, sites and warnings into the result."""
    res.pairing_id, res.plan_id, res.plan_name = pre.pairing_id, pre.plan_id, pre.plan_name
    res.initial_plan_status = res.final_plan_status = pre.plan_status
    res.sites_before = pre.sites
    res.warnings.extend(pre.warnings)


def record_verify(res: Any, found: Any) -> None:
    """Copy what verification found about the plan into the result."""
    res.final_plan_status = found.plan_status
    res.warnings.extend(found.warnings)


def record_outcome(res: Any, outcome: TaskOutcome) -> None:
    """Copy where the finished SRM task left the plan into the result."""
    res.final_plan_status = outcome.plan_status
    res.sites_after = outcome.sites


def no_task_outcome(plan_status: str | None) -> TaskOutcome:
    """Outcome of an adopted run that already finished and that SRM no longer lists."""
    return TaskOutcome(task_id="", status="UNKNOWN", plan_status=plan_status)


def wait_input(site: str, pre: Any, task_id: str, poll_interval_seconds: float) -> WaitForTaskInput:
    """Input of ``wait_for_task`` following ``task_id`` on the prechecked plan.

    A reprotect precheck says how to follow the task (``PrecheckResult.wait_options``); other
    prechecks have no such field and get the cautious defaults.
    """
    return WaitForTaskInput(
        site=site,
        pairing_id=pre.pairing_id,
        plan_id=pre.plan_id,
        task_id=task_id,
        poll_interval_seconds=poll_interval_seconds,
        options=getattr(pre, "wait_options", None) or WaitOptions(),
    )


def wait_options(poll_interval_seconds: float) -> dict[str, Any]:
    """Options of the ``wait_for_task`` step, the same in every plan workflow."""
    return {
        "schedule_to_close": policies.WAIT_SCHEDULE_TO_CLOSE,
        "heartbeat": policies.wait_heartbeat_timeout(poll_interval_seconds),
        "retry": policies.WAIT_RETRY,
    }


def verify_settle_seconds(poll_interval_seconds: float) -> float:
    """How long verification re-checks mismatches before they count."""
    return max(10.0, 2 * poll_interval_seconds)


def cancel_poll_seconds(poll_interval_seconds: float) -> float:
    """Poll interval while waiting for a cancelled task to stop."""
    return min(poll_interval_seconds, 5.0)


def verification_failed(problems: list[str]) -> str:
    """Reason of a FAILED outcome after verification."""
    return "verification failed: " + "; ".join(problems)


RESOLVE_TIMEOUT = timedelta(minutes=10)


async def resolve_selection(selection: SelectionInput) -> Selection:
    """Plans (with their protection groups) of a bulk run or drill, via the activity."""
    resolved: Selection = await workflow.execute_activity(
        "resolve_selection",
        selection,
        result_type=Selection,
        start_to_close_timeout=RESOLVE_TIMEOUT,
        retry_policy=policies.SRM_CALL_RETRY,
    )
    return resolved
