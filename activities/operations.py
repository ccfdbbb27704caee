"""Generic plan-operation activities: precheck, start-or-adopt, verify and cancel, per a table.

One ``OperationSpec`` per SRM plan action (test, cleanup, recovery, reprotect, cancel) says
which statuses allow it, which status means it runs (adopt) or is done, and what verification
expects. Following the SRM task reuses ``SrmActivities.wait_for_task``; the SRM clients, pairing
checks, heartbeats and error mapping are the ones of ``activities.srm``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import is_retryable, to_application_error
from activities.srm import (
    BLOCKED_ADVICE,
    SrmActivities,
    _add_plan_issues,
    _adopted,
    _bound_log,
    _heartbeat_ticker,
    _hinted_task,
    _issue_text,
    _plan_tasks,
    _set_heartbeat,
    _settled_verify,
    _sites,
    _srm_errors,
)
from srmflow.srm.client import SrmClient
from srmflow.srm.errors import SrmError, SrmHttpError
from srmflow.srm.models import (
    TERMINAL_TASK_STATUSES,
    HistoryReport,
    OperationType,
    PlanStatus,
    RecoveryPlan,
    ResultState,
    Task,
)
from workflows import policies
from workflows.drill_models import (
    CancelOperationInput,
    Operation,
    OperationAction,
    OperationPrecheckInput,
    OperationPrecheckResult,
    StartOperationInput,
    StartOperationResult,
    VerifyOperationInput,
)
from workflows.models import CancelTaskResult, TaskProgress, VerifyResult

log = structlog.get_logger(__name__)

VERIFY_RECHECK_SECONDS = 1.0
IN_PROGRESS_STATUSES = frozenset(
    {
        PlanStatus.TEST_IN_PROGRESS,
        PlanStatus.CLEANUP_IN_PROGRESS,
        PlanStatus.RECOVERY_IN_PROGRESS,
        PlanStatus.RECOVERY_STARTED,
        PlanStatus.REPROTECT_IN_PROGRESS,
    }
)


@dataclass(frozen=True)
class OperationSpec:
    """Eligibility, adoption and verification rules of one plan action."""

    eligible: frozenset[str]
    running: str
    done: str | None
    task_markers: frozenset[str]
    history_type: str | None
    groups_ready: bool
    needs: str


OPERATIONS: dict[Operation, OperationSpec] = {
    Operation.TEST: OperationSpec(
        eligible=frozenset({PlanStatus.READY_STATE}),
        running=PlanStatus.TEST_IN_PROGRESS,
        done=PlanStatus.TEST_COMPLETE,
        task_markers=frozenset({"test"}),
        history_type=OperationType.TEST,
        groups_ready=False,
        needs="READY_STATE",
    ),
    Operation.CLEANUP: OperationSpec(
        eligible=frozenset(
            {
                PlanStatus.TEST_COMPLETE,
                PlanStatus.CLEANUP_INCOMPLETE,
                PlanStatus.CLEANUP_INTERRUPTED,
                PlanStatus.TEST_INTERRUPTED,
            }
        ),
        running=PlanStatus.CLEANUP_IN_PROGRESS,
        done=PlanStatus.READY_STATE,
        task_markers=frozenset({"cleanup"}),
        history_type=OperationType.CLEANUP,
        groups_ready=True,
        needs="TEST_COMPLETE (or CLEANUP_INCOMPLETE/CLEANUP_INTERRUPTED/TEST_INTERRUPTED)",
    ),
    Operation.RECOVERY: OperationSpec(
        eligible=frozenset(
            {
                PlanStatus.READY_STATE,
                PlanStatus.INCOMPLETE_RECOVERY,
                PlanStatus.RECOVERY_INTERRUPTED,
            }
        ),
        running=PlanStatus.RECOVERY_IN_PROGRESS,
        done=PlanStatus.RECOVERY_COMPLETE,
        task_markers=frozenset({"recovery", "recover", "failover"}),
        history_type=OperationType.FAILOVER,
        groups_ready=False,
        needs="READY_STATE (or INCOMPLETE_RECOVERY/RECOVERY_INTERRUPTED for a re-run)",
    ),
    Operation.REPROTECT: OperationSpec(
        eligible=frozenset(
            {
                PlanStatus.RECOVERY_COMPLETE,
                PlanStatus.INCOMPLETE_REPROTECT,
                PlanStatus.PARTIAL_REPROTECT,
                PlanStatus.REPROTECT_INTERRUPTED,
            }
        ),
        running=PlanStatus.REPROTECT_IN_PROGRESS,
        done=PlanStatus.READY_STATE,
        task_markers=frozenset({"reprotect"}),
        history_type=OperationType.REPROTECT,
        groups_ready=True,
        needs="RECOVERY_COMPLETE (or an incomplete reprotect for a re-run)",
    ),
    Operation.CANCEL: OperationSpec(
        eligible=IN_PROGRESS_STATUSES,
        running=PlanStatus.CANCEL_IN_PROGRESS,
        done=None,
        task_markers=frozenset(),
        history_type=None,
        groups_ready=False,
        needs="an operation in progress",
    ),
}


def task_kind(task: Task) -> str:
    """The operation a task performs: last part of description_id, else the description's verb."""
    if task.description_id:
        return task.description_id.rsplit(".", 1)[-1].lower()
    return (task.description or "").split(" ", 1)[0].lower()


def _is_ours(task: Task, spec: OperationSpec) -> bool:
    if not spec.task_markers:
        return not task.is_terminal and task_kind(task) != "history"
    return task_kind(task) in spec.task_markers


def blocked_message(operation: Operation, plan: RecoveryPlan) -> str:
    """Plain-language reason the plan's status blocks ``operation``."""
    spec = OPERATIONS[operation]
    advice = BLOCKED_ADVICE.get(plan.status, f"this status is not eligible for {operation}")
    return (
        f"recovery plan {plan.name!r} is {plan.status}: {advice}. "
        f"{operation.capitalize()} needs {spec.needs}"
    )


def _not_eligible(operation: Operation, plan: RecoveryPlan) -> ApplicationError:
    return ApplicationError(
        blocked_message(operation, plan), type=policies.PLAN_NOT_ELIGIBLE, non_retryable=True
    )


def classify(operation: Operation, status: str) -> OperationAction | None:
    """START, ADOPT or ALREADY_DONE for a plan in ``status``; None when it is not eligible."""
    spec = OPERATIONS[operation]
    if operation is Operation.CANCEL:
        if status == spec.running:
            return OperationAction.ADOPT
        return OperationAction.START if status in spec.eligible else OperationAction.ALREADY_DONE
    if status == spec.running:
        return OperationAction.ADOPT
    if status in spec.eligible:
        return OperationAction.START
    if status == spec.done:
        return OperationAction.ALREADY_DONE
    return None


class OperationActivities:
    """Table-driven activities for every plan action; shares SrmActivities' clients."""

    def __init__(self, srm: SrmActivities) -> None:
        self._srm = srm

    # --- precheck -----------------------------------------------------------------------------

    @activity.defn
    async def precheck_operation(self, inp: OperationPrecheckInput) -> OperationPrecheckResult:
        """Check pairing health and plan status; say whether to start, adopt or stop."""
        client = self._srm.client(inp.site)
        bound = _bound_log(site=inp.site, plan_id=inp.plan_id, operation=inp.operation.value)
        with bound, _srm_errors(f"precheck {inp.operation}"):
            async with _heartbeat_ticker():
                return await self._precheck(client, inp)

    async def _precheck(
        self, client: SrmClient, inp: OperationPrecheckInput
    ) -> OperationPrecheckResult:
        pairing_id = await self._srm.resolve_pairing(client, inp.pairing_id)
        warnings = await self._srm._check_pairing(client, pairing_id)
        await client.ensure_remote_session(pairing_id)
        plan = await client.get_plan(pairing_id, inp.plan_id)
        warnings += [_issue_text(i) for i in await client.list_plan_issues(pairing_id, plan.id)]
        action = classify(inp.operation, plan.status)
        if action is None:
            raise _not_eligible(inp.operation, plan)
        result = OperationPrecheckResult(
            pairing_id=pairing_id,
            plan_id=plan.id,
            plan_name=plan.name,
            plan_status=plan.status,
            action=action,
            sites=_sites(plan),
            warnings=warnings,
        )
        if action is not OperationAction.ALREADY_DONE:
            tasks = await _plan_tasks(client, plan.id)
            result.baseline_task_ids = [t.id for t in tasks]
            spec = OPERATIONS[inp.operation]
            running = [t for t in tasks if not t.is_terminal and _is_ours(t, spec)]
            result.running_task_id = running[0].id if running else None
        log.info("operation_precheck_done", plan_status=plan.status, action=action.value)
        return result

    # --- start or adopt -----------------------------------------------------------------------

    @activity.defn
    async def start_operation(self, inp: StartOperationInput) -> StartOperationResult:
        """Adopt the operation if it runs (or ran since the baseline), else POST it once."""
        client = self._srm.client(inp.site)
        bound = _bound_log(site=inp.site, plan_id=inp.plan_id, operation=inp.operation.value)
        with bound, _srm_errors(f"start {inp.operation}"):
            async with _heartbeat_ticker():
                return await self._start_or_adopt(client, inp)

    async def _start_or_adopt(
        self, client: SrmClient, inp: StartOperationInput
    ) -> StartOperationResult:
        found = await self._find_ours(client, inp)
        if found is not None:
            return found
        plan = await client.get_plan(inp.pairing_id, inp.plan_id)
        action = classify(inp.operation, plan.status)
        if action is OperationAction.ALREADY_DONE:
            return StartOperationResult(
                plan_status=plan.status, already_done=True, sites=_sites(plan)
            )
        if action is OperationAction.ADOPT and inp.operation is Operation.CANCEL:
            running = await self._running_tasks(client, inp.plan_id)
            if running:
                return await self._adopt(client, inp, running[0], posted=False)
            return StartOperationResult(
                plan_status=plan.status, already_done=True, sites=_sites(plan)
            )
        if action is not OperationAction.START:
            raise _not_eligible(inp.operation, plan)
        return await self._post(client, inp, plan)

    async def _running_tasks(self, client: SrmClient, plan_id: str) -> list[Task]:
        tasks = await _plan_tasks(client, plan_id)
        return [t for t in tasks if not t.is_terminal and task_kind(t) != "history"]

    async def _find_ours(
        self, client: SrmClient, inp: StartOperationInput
    ) -> StartOperationResult | None:
        """A task this attempt must adopt instead of POSTing: running, or new since baseline."""
        spec = OPERATIONS[inp.operation]
        task = await _hinted_task(client, inp.plan_id)
        if task is not None:
            return await self._adopt(client, inp, task, posted=True)
        if inp.operation is Operation.CANCEL:
            return None
        plan = await client.get_plan(inp.pairing_id, inp.plan_id)
        tasks = [t for t in await _plan_tasks(client, inp.plan_id) if _is_ours(t, spec)]
        running = [t for t in tasks if not t.is_terminal]
        if running:
            return await self._adopt(client, inp, running[0], posted=False)
        if plan.status == spec.running:
            raise ApplicationError(
                f"plan {plan.name!r} is {plan.status} but SRM lists no running task yet",
                type=policies.PLAN_BUSY,
            )
        fresh = [t for t in tasks if t.id not in set(inp.baseline_task_ids)]
        if fresh:
            newest = max(fresh, key=lambda t: t.queued_time or 0)
            return await self._adopt(client, inp, newest, posted=False)
        return None

    async def _adopt(
        self, client: SrmClient, inp: StartOperationInput, task: Task, *, posted: bool
    ) -> StartOperationResult:
        return await _adopted(
            client,
            inp.pairing_id,
            inp.plan_id,
            task,
            posted=posted,
            make=StartOperationResult,
            logger=log,
            event="operation_adopted",
        )

    async def _post(
        self, client: SrmClient, inp: StartOperationInput, plan: RecoveryPlan
    ) -> StartOperationResult:
        """The one POST of this attempt; an ambiguous failure is settled by re-reading SRM."""
        try:
            task = await self._call(client, inp)
        except SrmError as exc:
            if isinstance(exc, SrmHttpError) and exc.status == 400:
                again = await self._find_ours(client, inp)
                if again is not None:
                    return again
            if not is_retryable(exc):
                raise
            log.warning("operation_post_ambiguous", error=str(exc))
            with _srm_errors(f"start {inp.operation}"):
                found = await self._find_ours(client, inp)
            if found is not None:
                return found
            raise
        _set_heartbeat(TaskProgress(task_id=task.id, status=task.status, progress=0))
        log.info("operation_posted", task_id=task.id)
        return StartOperationResult(
            task_id=task.id, posted=True, plan_status=plan.status, sites=_sites(plan)
        )

    async def _call(self, client: SrmClient, inp: StartOperationInput) -> Task:
        """The SRM call of the operation (cancel answers 204: follow the task it cancels)."""
        pid, plan_id = inp.pairing_id, inp.plan_id
        calls: dict[Operation, Callable[[], Awaitable[Task]]] = {
            Operation.TEST: lambda: client.test_plan(pid, plan_id, sync_data=inp.sync_data),
            Operation.CLEANUP: lambda: client.cleanup(pid, plan_id, forced=inp.forced),
            Operation.RECOVERY: lambda: client.recover(
                pid, plan_id, planned_failover=inp.planned_failover, sync_data=inp.sync_data
            ),
            Operation.REPROTECT: lambda: client.reprotect(pid, plan_id, forced=inp.forced),
        }
        if inp.operation is not Operation.CANCEL:
            return await calls[inp.operation]()
        running = await self._running_tasks(client, plan_id)
        if not running:
            raise ApplicationError(
                f"plan {plan_id!r} shows no running task to cancel", type=policies.PLAN_BUSY
            )
        await client.cancel(pid, plan_id)
        return running[0]

    # --- verify -------------------------------------------------------------------------------

    @activity.defn
    async def verify_operation(self, inp: VerifyOperationInput) -> VerifyResult:
        """Check plan status, sites, groups, issues and the newest history report.

        Mismatches are re-checked for ``settle_seconds`` (SRM updates groups and history a
        little after the task ends) before they count.
        """
        client = self._srm.client(inp.site)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + inp.settle_seconds
        bound = _bound_log(site=inp.site, plan_id=inp.plan_id, operation=inp.operation.value)
        with bound, _srm_errors(f"verify {inp.operation}"):
            async with _heartbeat_ticker():
                return await _settled_verify(
                    lambda: self._inspect(client, inp),
                    give_up,
                    recheck_seconds=VERIFY_RECHECK_SECONDS,
                    logger=log,
                    event="operation_verified",
                )

    async def _inspect(self, client: SrmClient, inp: VerifyOperationInput) -> VerifyResult:
        spec = OPERATIONS[inp.operation]
        pid, plan_id = inp.pairing_id, inp.plan_id
        plan = await client.get_plan(pid, plan_id)
        result = VerifyResult(ok=False, plan_status=plan.status, sites=_sites(plan))
        problems, warnings = result.problems, result.warnings
        if spec.done is not None and plan.status != spec.done:
            problems.append(f"plan {plan.name!r} is {plan.status}, expected {spec.done}")
        if spec.done is None and plan.status in IN_PROGRESS_STATUSES | {spec.running}:
            problems.append(f"plan {plan.name!r} is still {plan.status}")
        expected = inp.expected_sites
        if expected is not None and expected.protected_site_name and result.sites != expected:
            problems.append(
                f"plan {plan.name!r} is protected by {plan.protected_site_name!r} with recovery "
                f"at {plan.recovery_site_name!r}; expected {expected.protected_site_name!r} -> "
                f"{expected.recovery_site_name!r}"
            )
        if spec.groups_ready:
            await SrmActivities._inspect_groups(client, pid, plan_id, problems)
        await _add_plan_issues(client, pid, plan_id, problems, warnings)
        if spec.history_type is not None:
            reports = await client.list_history_reports(pid, plan_id)
            result.report_result = _check_history(spec.history_type, reports, problems, warnings)
        result.ok = not problems
        return result

    # --- cancel -------------------------------------------------------------------------------

    @activity.defn
    async def cancel_operation(self, inp: CancelOperationInput) -> CancelTaskResult:
        """Cancel the plan's running operation of this kind, then wait briefly for it to stop."""
        client = self._srm.client(inp.site)
        spec = OPERATIONS[inp.operation]
        with _bound_log(site=inp.site, plan_id=inp.plan_id, task_id=inp.task_id):
            async with _heartbeat_ticker():
                with _srm_errors("cancel_operation"):
                    plan = await client.get_plan(inp.pairing_id, inp.plan_id)
                if plan.status != spec.running or inp.operation is Operation.CANCEL:
                    return CancelTaskResult(
                        requested=False,
                        plan_status=plan.status,
                        message=f"nothing to cancel: plan is {plan.status}",
                    )
                try:
                    await client.cancel(inp.pairing_id, inp.plan_id)
                except SrmHttpError as exc:
                    if exc.status != 400:
                        raise to_application_error(exc, "cancel_operation") from None
                    return CancelTaskResult(
                        requested=False, plan_status=plan.status, message=str(exc)
                    )
                except SrmError as exc:
                    raise to_application_error(exc, "cancel_operation") from None
                with _srm_errors("cancel_operation"):
                    return await self._await_cancel(client, inp)

    @staticmethod
    async def _await_cancel(client: SrmClient, inp: CancelOperationInput) -> CancelTaskResult:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + inp.wait_seconds
        while True:
            status = None
            if inp.task_id is not None:
                status = (await client.get_task(inp.task_id)).status
            plan = await client.get_plan(inp.pairing_id, inp.plan_id)
            settled = (
                status in TERMINAL_TASK_STATUSES
                if inp.task_id is not None
                else plan.status not in IN_PROGRESS_STATUSES | {PlanStatus.CANCEL_IN_PROGRESS}
            )
            if settled or loop.time() >= give_up:
                return CancelTaskResult(requested=True, task_status=status, plan_status=plan.status)
            await asyncio.sleep(inp.poll_interval_seconds)


def _check_history(
    expected: str, reports: list[HistoryReport], problems: list[str], warnings: list[str]
) -> str | None:
    """The newest report must be ``expected`` and SUCCESS (WARNINGS are reported)."""
    if not reports:
        problems.append("no history report found for the plan")
        return None
    newest = max(reports, key=lambda r: (r.start_time_ms or 0, r.run_key or 0))
    if newest.operation_type != expected:
        problems.append(f"newest history report is {newest.operation_type}, not {expected}")
    elif newest.result_state == ResultState.WARNINGS:
        warnings.extend(f"history: {w}" for w in newest.warnings_list or [] if w)
    elif newest.result_state != ResultState.SUCCESS:
        errors = "; ".join(e for e in newest.errors_list or [] if e)
        problems.append(f"newest {expected} report is {newest.result_state}: {errors}")
    return newest.result_state
