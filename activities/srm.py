"""SRM activities of the reprotect workflow: precheck, start-or-adopt, wait, verify, cancel.

``SrmActivities`` receives one ``SrmClient`` per configured site from ``worker.py``; activities
never open sessions or clients of their own. SRM client errors leave through
``activities.errors.to_application_error``; decisions the workflow branches on are typed
``ApplicationError``s (``workflows.policies``) or fields of the returned models.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import is_retryable, to_application_error
from srmflow.metrics import SrmflowMetrics
from srmflow.srm.client import SrmClient
from srmflow.srm.errors import SrmError, SrmHttpError, SrmNotFoundError
from srmflow.srm.models import (
    TERMINAL_TASK_STATUSES,
    GroupRecoveryStatus,
    GroupStatus,
    HistoryReport,
    Issue,
    IssueStatus,
    OperationType,
    PlanStatus,
    RecoveryPlan,
    ResultState,
    ServerStatus,
    Task,
    VmProtectionStatus,
)
from workflows import policies
from workflows.models import (
    CancelTaskInput,
    CancelTaskResult,
    PlanAction,
    PrecheckInput,
    PrecheckResult,
    Sites,
    StartReprotectInput,
    StartReprotectResult,
    TaskOutcome,
    TaskProgress,
    VerifyInput,
    VerifyResult,
    WaitForTaskInput,
)

log = structlog.get_logger(__name__)
_R = TypeVar("_R")

RERUN_STATUSES = frozenset(
    {
        PlanStatus.INCOMPLETE_REPROTECT,
        PlanStatus.PARTIAL_REPROTECT,
        PlanStatus.REPROTECT_INTERRUPTED,
    }
)

# Why each non-eligible status blocks a reprotect, and what the operator should do.
BLOCKED_ADVICE: dict[str, str] = {
    PlanStatus.PROTECTION_GROUPS_IN_USE: "another plan is operating on a shared protection "
    "group; wait for it to finish, then retry",
    PlanStatus.DIRECTION_ERROR: "protection groups replicate in different directions; fix "
    "the replication direction in SRM first",
    PlanStatus.WAITING_FOR_USER_INPUT: "a running operation waits for an answer in the SRM "
    "UI; answer it first",
    PlanStatus.CANCEL_IN_PROGRESS: "an operation is being cancelled; retry once the plan settles",
    PlanStatus.TEST_IN_PROGRESS: "a test is running; wait for it and run cleanup first",
    PlanStatus.TEST_COMPLETE: "a test environment is up; run cleanup first",
    PlanStatus.TEST_INTERRUPTED: "an interrupted test left a test environment; run cleanup first",
    PlanStatus.CLEANUP_IN_PROGRESS: "a cleanup is running; retry once it finishes",
    PlanStatus.CLEANUP_INCOMPLETE: "the last cleanup did not finish; run cleanup (forced if "
    "needed) first",
    PlanStatus.CLEANUP_INTERRUPTED: "the last cleanup was interrupted; run cleanup first",
    PlanStatus.RECOVERY_IN_PROGRESS: "a recovery is running; reprotect after it completes",
    PlanStatus.RECOVERY_STARTED: "a recovery has started; reprotect after it completes",
    PlanStatus.PARTIAL_RECOVERY: "the recovery is partial; finish the recovery first",
    PlanStatus.INCOMPLETE_RECOVERY: "the recovery did not complete; re-run the recovery first",
    PlanStatus.RECOVERY_INTERRUPTED: "the recovery was interrupted; re-run the recovery first",
    PlanStatus.DISASTER_RECOVERY_COMPLETE: "a disaster recovery completed without the "
    "protected site; re-run recovery as a planned migration once the site is back",
    PlanStatus.RECOVERY_SPLIT_BRAIN: "both sites run the VMs (split brain); resolve it in SRM "
    "first",
    PlanStatus.NO_PROTECTION_GROUPS: "the plan has no protection groups; nothing to reprotect",
    PlanStatus.DELETING: "the plan is being deleted",
    PlanStatus.UNKNOWN_STATE: "SRM cannot tell the plan's state; check both SRM servers",
    PlanStatus.SYNC_CONFLICT: "the sites disagree about the plan; resolve the sync conflict "
    "in SRM first",
}

BUSY_STATUSES = frozenset({PlanStatus.REPROTECT_IN_PROGRESS, PlanStatus.CANCEL_IN_PROGRESS})
HISTORY_MARKER = "history"
REPROTECT_MARKER = "reprotect"
VERIFY_RECHECK_SECONDS = 1.0


def _is_reprotect_task(task: Task) -> bool:
    """SRM marks the operation in description_id/description; the simulator does the same."""
    text = f"{task.description_id or ''} {task.description or ''}".lower()
    return REPROTECT_MARKER in text and HISTORY_MARKER not in text


def _sites(plan: RecoveryPlan) -> Sites:
    return Sites(
        protected_site_name=plan.protected_site_name,
        recovery_site_name=plan.recovery_site_name,
    )


def _issue_text(issue: Issue) -> str:
    name = issue.entity_name or issue.entity or "?"
    return f"{issue.status} {issue.issue_type or 'issue'} on {name}: {issue.description or ''}"


def blocked_message(plan_name: str, status: str) -> str:
    """Plain-language reason a plan in ``status`` cannot be reprotected now."""
    advice = BLOCKED_ADVICE.get(status, "this status is not eligible for reprotect")
    return (
        f"recovery plan {plan_name!r} is {status}: {advice}. Reprotect needs RECOVERY_COMPLETE "
        "(or INCOMPLETE_REPROTECT/PARTIAL_REPROTECT/REPROTECT_INTERRUPTED for a re-run)"
    )


def _not_eligible(plan: RecoveryPlan) -> ApplicationError:
    return ApplicationError(
        blocked_message(plan.name, plan.status),
        type=policies.PLAN_NOT_ELIGIBLE,
        non_retryable=True,
    )


@contextlib.contextmanager
def _srm_errors(context: str) -> Iterator[None]:
    """Translate SRM client errors into typed ApplicationErrors at the activity boundary."""
    try:
        yield
    except SrmError as exc:
        raise to_application_error(exc, context) from None


@contextlib.contextmanager
def _bound_log(**values: Any) -> Iterator[None]:
    """Bind workflow id, activity and attempt (plus ``values``) to every log line."""
    info = activity.info()
    with structlog.contextvars.bound_contextvars(
        workflow_id=info.workflow_id,
        activity=info.activity_type,
        attempt=info.attempt,
        **values,
    ):
        yield


# Details the heartbeat ticker of the current activity sends; code deeper in the call stack
# (e.g. right after the reprotect POST) replaces them through this holder.
_HEARTBEAT: contextvars.ContextVar[list[TaskProgress | None]] = contextvars.ContextVar(
    "srmflow_heartbeat"
)
DEFAULT_TICK_SECONDS = 10.0


def _set_heartbeat(details: TaskProgress) -> None:
    """Record ``details`` as this activity's heartbeat now and for every later tick."""
    holder = _HEARTBEAT.get(None)
    if holder is not None:
        holder[0] = details
    activity.heartbeat(details)


@contextlib.asynccontextmanager
async def _heartbeat_ticker(interval: float | None = None) -> AsyncIterator[None]:
    """Heartbeat every ``interval`` seconds (a third of the heartbeat timeout by default).

    The heartbeat proves the worker is alive, even while one SRM request hangs: a crashed
    worker is noticed within the heartbeat timeout instead of the start-to-close timeout.
    """
    if interval is None:
        timeout = activity.info().heartbeat_timeout
        interval = timeout.total_seconds() / 3 if timeout else DEFAULT_TICK_SECONDS
    holder: list[TaskProgress | None] = [None]
    token = _HEARTBEAT.set(holder)

    async def tick() -> None:
        while True:
            if holder[0] is None:
                activity.heartbeat()
            else:
                activity.heartbeat(holder[0])
            await asyncio.sleep(interval)

    ticker = asyncio.create_task(tick())
    try:
        yield
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        _HEARTBEAT.reset(token)


def _previous_progress(task_id: str | None = None) -> TaskProgress | None:
    """Heartbeat details of the previous attempt, if any (a crash or drain ended it)."""
    details = activity.info().heartbeat_details
    if not details:
        return None
    try:
        progress = TaskProgress.model_validate(details[0])
    except ValueError:
        return None
    if task_id is not None and progress.task_id != task_id:
        return None
    return progress


async def _sleep_or_shutdown(seconds: float) -> None:
    """Sleep, but leave early with a retryable error when the worker starts draining.

    A drained wait_for_task is picked up by another worker at once, resuming from its
    heartbeat, instead of holding this worker's shutdown for the whole grace period.
    """
    shutdown = asyncio.ensure_future(activity.wait_for_worker_shutdown())
    try:
        await asyncio.wait_for(asyncio.shield(shutdown), timeout=seconds)
    except TimeoutError:
        return
    finally:
        shutdown.cancel()
    raise ApplicationError("worker is shutting down", type=policies.WORKER_SHUTDOWN)


# --- helpers shared with activities.operations ------------------------------------------------


async def _plan_tasks(client: SrmClient, plan_id: str) -> list[Task]:
    """The SRM tasks whose entity is the plan."""
    tasks = await client.list_tasks(filter_property="entity", filters=[plan_id])
    return [t for t in tasks if t.entity == plan_id]


async def _hinted_task(client: SrmClient, plan_id: str) -> Task | None:
    """The task the previous attempt's heartbeat names, if SRM still has it for this plan."""
    hint = _previous_progress()
    if hint is None:
        return None
    try:
        task = await client.get_task(hint.task_id)
    except SrmNotFoundError:
        return None
    return task if task.entity == plan_id else None


async def _adopted(
    client: SrmClient,
    pairing_id: str,
    plan_id: str,
    task: Task,
    *,
    posted: bool,
    make: Callable[..., _R],
    logger: Any,
    event: str,
) -> _R:
    """The start result for ``task``: adopted (found) or posted by an earlier attempt."""
    plan = await client.get_plan(pairing_id, plan_id)
    logger.info(event, task_id=task.id, task_status=task.status, posted=posted)
    return make(
        task_id=task.id,
        adopted=not posted,
        posted=posted,
        plan_status=plan.status,
        sites=_sites(plan),
    )


async def _settled_verify(
    inspect: Callable[[], Awaitable[VerifyResult]],
    give_up: float,
    *,
    recheck_seconds: float,
    logger: Any,
    event: str,
) -> VerifyResult:
    """Inspect until the result is ok or the loop time passes ``give_up``."""
    loop = asyncio.get_running_loop()
    while True:
        result = await inspect()
        if result.ok or loop.time() >= give_up:
            logger.info(event, ok=result.ok, problems=result.problems)
            return result
        await asyncio.sleep(recheck_seconds)


async def _add_plan_issues(
    client: SrmClient, pairing_id: str, plan_id: str, problems: list[str], warnings: list[str]
) -> None:
    """Plan issues of status ERROR are problems, the others warnings."""
    for issue in await client.list_plan_issues(pairing_id, plan_id):
        target = problems if issue.status == IssueStatus.ERROR else warnings
        target.append(f"plan issue: {_issue_text(issue)}")


class SrmActivities:
    """Activities driving SRM reprotects; one SrmClient per configured site is injected."""

    def __init__(
        self, clients: Mapping[str, SrmClient], metrics: SrmflowMetrics | None = None
    ) -> None:
        self._clients = dict(clients)
        self._metrics = metrics

    def client(self, site: str) -> SrmClient:
        """The SrmClient of ``site``, or a non-retryable UnknownSite error."""
        try:
            return self._clients[site]
        except KeyError:
            known = ", ".join(sorted(self._clients)) or "none"
            raise ApplicationError(
                f"this worker has no settings for SRM site {site!r} (configured: {known})",
                type=policies.UNKNOWN_SITE,
                non_retryable=True,
            ) from None

    # --- precheck -----------------------------------------------------------------------------

    @activity.defn
    async def precheck(self, inp: PrecheckInput) -> PrecheckResult:
        """Check pairing health and plan status; say whether to start, adopt or stop."""
        client = self.client(inp.site)
        with _bound_log(site=inp.site, plan_id=inp.plan_id), _srm_errors("precheck"):
            async with _heartbeat_ticker():
                return await self._precheck(client, inp)

    async def _precheck(self, client: SrmClient, inp: PrecheckInput) -> PrecheckResult:
        pairing_id = await self.resolve_pairing(client, inp.pairing_id)
        warnings = await self._check_pairing(client, pairing_id)
        # Proves the remote credentials and the remote site before anything is started.
        await client.ensure_remote_session(pairing_id)
        plan = await client.get_plan(pairing_id, inp.plan_id)
        issues = await client.list_plan_issues(pairing_id, inp.plan_id)
        warnings += [_issue_text(i) for i in issues]
        action = self._classify(plan, inp.allow_rerun)
        result = PrecheckResult(
            pairing_id=pairing_id,
            plan_id=plan.id,
            plan_name=plan.name,
            plan_status=plan.status,
            action=action,
            sites=_sites(plan),
            warnings=warnings,
        )
        if action is PlanAction.ALREADY_PROTECTED:
            log.info("precheck_already_protected", plan_status=plan.status)
            return result
        tasks = await _plan_tasks(client, plan.id)
        result.baseline_task_ids = [t.id for t in tasks]
        running = [t for t in tasks if not t.is_terminal and _is_reprotect_task(t)]
        if running:
            result.running_task_id = running[0].id
        last = await self._last_reprotect_ms(client, pairing_id, plan)
        result.last_reprotect_report_ms = last
        log.info("precheck_done", plan_status=plan.status, action=action.value)
        return result

    async def resolve_pairing(self, client: SrmClient, pairing_id: str | None) -> str:
        """The given pairing if it exists, else the site's only pairing; typed errors otherwise."""
        pairings = await client.list_pairings()
        ids = [p.pairing_id for p in pairings]
        if pairing_id is not None:
            if pairing_id not in ids:
                raise ApplicationError(
                    f"pairing {pairing_id!r} does not exist on site {client.site_name!r}; "
                    f"pairings: {', '.join(ids) or 'none'}",
                    type=policies.SRM_NOT_FOUND,
                    non_retryable=True,
                )
            return pairing_id
        if len(ids) == 1:
            return ids[0]
        raise ApplicationError(
            f"site {client.site_name!r} has {len(ids)} pairings; name one with pairing_id: "
            f"{', '.join(ids) or 'none'}",
            type=policies.PAIRING_AMBIGUOUS,
            non_retryable=True,
        )

    async def _check_pairing(self, client: SrmClient, pairing_id: str) -> list[str]:
        pairing = await client.get_pairing(pairing_id)
        servers = {
            "local SRM": pairing.local_srm_server,
            "remote SRM": pairing.remote_srm_server,
        }
        for label, server in servers.items():
            if server is not None and server.server_status == ServerStatus.ERROR:
                raise ApplicationError(
                    f"pairing {pairing_id}: {label} server {server.name or server.id} reports "
                    "ERROR; reprotect needs both sites up. Fix the site connection and retry",
                    type=policies.PAIRING_UNHEALTHY,
                    non_retryable=True,
                )
        issues = await client.list_pairing_issues(pairing_id)
        return [_issue_text(i) for i in issues]

    @staticmethod
    def _classify(plan: RecoveryPlan, allow_rerun: bool) -> PlanAction:
        status = plan.status
        if status == PlanStatus.READY_STATE:
            return PlanAction.ALREADY_PROTECTED
        if status == PlanStatus.REPROTECT_IN_PROGRESS:
            return PlanAction.ADOPT
        if status == PlanStatus.RECOVERY_COMPLETE or (allow_rerun and status in RERUN_STATUSES):
            return PlanAction.START
        raise _not_eligible(plan)

    @staticmethod
    async def _last_reprotect_ms(
        client: SrmClient, pairing_id: str, plan: RecoveryPlan
    ) -> int | None:
        reports = await client.list_history_reports(pairing_id, plan.id)
        times = [
            r.start_time_ms
            for r in reports
            if r.operation_type == OperationType.REPROTECT and r.start_time_ms is not None
        ]
        return max(times, default=None)

    # --- start or adopt -----------------------------------------------------------------------

    @activity.defn
    async def start_reprotect(self, inp: StartReprotectInput) -> StartReprotectResult:
        """Adopt a reprotect already running (or finished since the baseline), else POST once."""
        client = self.client(inp.site)
        with _bound_log(site=inp.site, plan_id=inp.plan_id), _srm_errors("start_reprotect"):
            async with _heartbeat_ticker():
                return await self._start_or_adopt(client, inp)

    async def _start_or_adopt(
        self, client: SrmClient, inp: StartReprotectInput
    ) -> StartReprotectResult:
        adopted = await self._find_ours(client, inp)
        if adopted is not None:
            return adopted
        plan = await client.get_plan(inp.pairing_id, inp.plan_id)
        if plan.status == PlanStatus.READY_STATE:
            log.info("start_found_protected")
            return StartReprotectResult(
                plan_status=plan.status, already_protected=True, sites=_sites(plan)
            )
        eligible = plan.status == PlanStatus.RECOVERY_COMPLETE or (
            inp.allow_rerun and plan.status in RERUN_STATUSES
        )
        if not eligible:
            raise _not_eligible(plan)
        return await self._post(client, inp, plan)

    async def _find_ours(
        self, client: SrmClient, inp: StartReprotectInput
    ) -> StartReprotectResult | None:
        """A reprotect this attempt must adopt instead of POSTing: running, or new since baseline.

        Covers the crash window between a POST and the activity's completion: the previous
        attempt's heartbeat names the task if it got that far; otherwise the task list and the
        history reports show a reprotect newer than the baseline.
        """
        task = await _hinted_task(client, inp.plan_id)
        if task is not None:
            return await self._adopt(client, inp, task, posted=True)
        plan = await client.get_plan(inp.pairing_id, inp.plan_id)
        tasks = [t for t in await _plan_tasks(client, inp.plan_id) if _is_reprotect_task(t)]
        running = [t for t in tasks if not t.is_terminal]
        if running:
            return await self._adopt(client, inp, running[0], posted=False)
        if plan.status == PlanStatus.REPROTECT_IN_PROGRESS:
            # Plan and task list disagree for a moment; re-read on the next attempt.
            raise ApplicationError(
                f"plan {plan.name!r} is REPROTECT_IN_PROGRESS but SRM lists no running "
                "reprotect task yet",
                type=policies.PLAN_BUSY,
            )
        baseline = set(inp.baseline_task_ids)
        fresh = [t for t in tasks if t.id not in baseline]
        if fresh:
            newest = max(fresh, key=lambda t: t.queued_time or 0)
            return await self._adopt(client, inp, newest, posted=False)
        if activity.info().attempt > 1 and await self._newer_report(client, inp):
            # A reprotect finished since the baseline but its task is no longer listed.
            log.warning("start_adopted_finished_without_task", plan_status=plan.status)
            return StartReprotectResult(adopted=True, plan_status=plan.status, sites=_sites(plan))
        return None

    async def _newer_report(self, client: SrmClient, inp: StartReprotectInput) -> bool:
        plan = await client.get_plan(inp.pairing_id, inp.plan_id)
        newest = await self._last_reprotect_ms(client, inp.pairing_id, plan)
        baseline = inp.last_reprotect_report_ms
        return newest is not None and (baseline is None or newest > baseline)

    async def _adopt(
        self, client: SrmClient, inp: StartReprotectInput, task: Task, *, posted: bool
    ) -> StartReprotectResult:
        return await _adopted(
            client,
            inp.pairing_id,
            inp.plan_id,
            task,
            posted=posted,
            make=StartReprotectResult,
            logger=log,
            event="start_adopted",
        )

    async def _post(
        self, client: SrmClient, inp: StartReprotectInput, plan: RecoveryPlan
    ) -> StartReprotectResult:
        """The one POST of this attempt; an ambiguous failure is settled by re-reading SRM."""
        try:
            task = await client.reprotect(inp.pairing_id, inp.plan_id, forced=inp.forced)
        except SrmHttpError as exc:
            if exc.status == 400 and exc.method == "POST" and "actions" in exc.path:
                # Someone may have started it between our read and our POST.
                again = await self._find_ours(client, inp)
                if again is not None:
                    return again
            if not is_retryable(exc):
                raise
            return await self._settle_ambiguous(client, inp, exc)
        except SrmError as exc:
            if not is_retryable(exc):
                raise
            return await self._settle_ambiguous(client, inp, exc)
        # Recorded at once so a crash before completion lets the next attempt adopt by id.
        _set_heartbeat(TaskProgress(task_id=task.id, status=task.status, progress=0))
        log.info("reprotect_posted", task_id=task.id, forced=inp.forced)
        return StartReprotectResult(
            task_id=task.id, posted=True, plan_status=plan.status, sites=_sites(plan)
        )

    async def _settle_ambiguous(
        self, client: SrmClient, inp: StartReprotectInput, exc: SrmError
    ) -> StartReprotectResult:
        """The POST may or may not have started a task: look, never POST blindly again."""
        log.warning("reprotect_post_ambiguous", error=str(exc))
        try:
            found = await self._find_ours(client, inp)
        except SrmError:
            found = None
        if found is not None:
            return found
        # Nothing visible: fail this attempt; the retry re-reads state (and history) first.
        raise exc

    # --- wait ---------------------------------------------------------------------------------

    @activity.defn
    async def wait_for_task(self, inp: WaitForTaskInput) -> TaskOutcome:
        """Poll the SRM task until it ends, heartbeating its progress; resumes after a crash."""
        client = self.client(inp.site)
        previous = _previous_progress(inp.task_id)
        interval = max(1.0, inp.poll_interval_seconds)
        with (
            _bound_log(site=inp.site, plan_id=inp.plan_id, task_id=inp.task_id),
            self._following(inp.site) as finished,
        ):
            if previous is not None:
                log.info("wait_resumed", progress=previous.progress, polls=previous.polls)
            async with _heartbeat_ticker():
                _set_heartbeat(previous or TaskProgress(task_id=inp.task_id))
                task = await self._poll_until_terminal(client, inp, previous, interval)
                finished.append(task)
                with _srm_errors("wait_for_task"):
                    plan = await client.get_plan(inp.pairing_id, inp.plan_id)
            message = None
            if task is not None and task.error is not None:
                message = task.error.message or task.error.details
            log.info("srm_task_finished", status=task.status if task else None, plan=plan.status)
            return TaskOutcome(
                task_id=inp.task_id,
                status=task.status if task is not None else "UNKNOWN",
                progress=task.progress if task is not None else None,
                error_message=message,
                plan_status=plan.status,
                sites=_sites(plan),
                queued_time_ms=task.queued_time if task is not None else None,
                complete_time_ms=task.complete_time if task is not None else None,
            )

    @contextlib.contextmanager
    def _following(self, site: str) -> Iterator[list[Task | None]]:
        """Count the SRM task as in flight while followed; record its duration when it ends."""
        finished: list[Task | None] = []
        if self._metrics is not None:
            self._metrics.task_started(site)
        try:
            yield finished
        finally:
            if self._metrics is not None:
                task = finished[0] if finished else None
                seconds = None
                if task is not None and task.queued_time and task.complete_time:
                    seconds = (task.complete_time - task.queued_time) / 1000
                status = task.status if task is not None else None
                self._metrics.task_finished(site, status=status, seconds=seconds)

    async def _poll_until_terminal(
        self,
        client: SrmClient,
        inp: WaitForTaskInput,
        previous: TaskProgress | None,
        interval: float,
    ) -> Task | None:
        """The poll loop; absorbs a bounded run of transient SRM errors with backoff.

        Returns None when SRM no longer knows the task but the plan has left
        REPROTECT_IN_PROGRESS (tasks are forgotten, e.g. across an SRM restart).
        """
        failures = 0
        current = previous or TaskProgress(task_id=inp.task_id)
        while True:
            try:
                task = await client.get_task(inp.task_id)
            except SrmNotFoundError as exc:
                with _srm_errors("wait_for_task"):
                    plan = await client.get_plan(inp.pairing_id, inp.plan_id)
                if plan.status == PlanStatus.REPROTECT_IN_PROGRESS:
                    raise ApplicationError(
                        f"SRM task {inp.task_id} is gone while the plan is still running",
                        type=policies.SRM_TASK_LOST,
                    ) from exc
                log.warning("srm_task_forgotten", plan_status=plan.status)
                return None
            except SrmError as exc:
                failures += 1
                if not is_retryable(exc) or failures > policies.WAIT_MAX_CONSECUTIVE_ERRORS:
                    raise to_application_error(exc, "wait_for_task") from None
                delay = self._backoff(exc, failures, interval)
                log.info("srm_poll_failed", error=str(exc), failures=failures, retry_in=delay)
                await _sleep_or_shutdown(delay)
                continue
            failures = 0
            if task.status != current.status:
                log.info("srm_task_status", status=task.status, progress=task.progress)
            current = TaskProgress(
                task_id=inp.task_id,
                status=task.status,
                progress=task.progress,
                polls=current.polls + 1,
            )
            _set_heartbeat(current)
            if task.is_terminal:
                return task
            await _sleep_or_shutdown(interval)

    @staticmethod
    def _backoff(exc: SrmError, failures: int, interval: float) -> float:
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return float(min(retry_after, policies.WAIT_MAX_BACKOFF_SECONDS))
        return float(min(interval * 2 ** (failures - 1), policies.WAIT_MAX_BACKOFF_SECONDS))

    # --- verify -------------------------------------------------------------------------------

    @activity.defn
    async def verify(self, inp: VerifyInput) -> VerifyResult:
        """Check plan, sites, groups, VMs, issues and the newest history report after reprotect.

        SRM updates groups and history a little after the task ends, so mismatches are
        re-checked for ``settle_seconds`` before they count.
        """
        client = self.client(inp.site)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + inp.settle_seconds
        with _bound_log(site=inp.site, plan_id=inp.plan_id), _srm_errors("verify"):
            async with _heartbeat_ticker():
                return await _settled_verify(
                    lambda: self._inspect(client, inp),
                    give_up,
                    recheck_seconds=VERIFY_RECHECK_SECONDS,
                    logger=log,
                    event="verify_done",
                )

    async def _inspect(self, client: SrmClient, inp: VerifyInput) -> VerifyResult:
        pid, plan_id = inp.pairing_id, inp.plan_id
        plan = await client.get_plan(pid, plan_id)
        result = VerifyResult(ok=False, plan_status=plan.status, sites=_sites(plan))
        problems, warnings = result.problems, result.warnings
        if plan.status != PlanStatus.READY_STATE:
            problems.append(f"plan {plan.name!r} is {plan.status}, expected READY_STATE")
        expected = inp.expected_sites
        if expected is not None and expected.protected_site_name and result.sites != expected:
            problems.append(
                f"plan {plan.name!r} is protected by {plan.protected_site_name!r} with recovery "
                f"at {plan.recovery_site_name!r}; expected the sites swapped to "
                f"{expected.protected_site_name!r} -> {expected.recovery_site_name!r}"
            )
        await self._inspect_groups(client, pid, plan_id, problems)
        await _add_plan_issues(client, pid, plan_id, problems, warnings)
        reports = await client.list_history_reports(pid, plan_id)
        result.report_result = self._inspect_history(reports, problems, warnings)
        result.ok = not problems
        return result

    @staticmethod
    async def _inspect_groups(
        client: SrmClient, pairing_id: str, plan_id: str, problems: list[str]
    ) -> None:
        for group in await client.list_plan_groups(pairing_id, plan_id):
            label = f"protection group {group.name or group.id!r}"
            if group.status != GroupStatus.OK or group.recovery_status != GroupRecoveryStatus.READY:
                problems.append(
                    f"{label} is {group.status}/{group.recovery_status}, expected OK/READY"
                )
            for vm in await client.list_group_vms(pairing_id, group.id):
                details = vm.protection_status_details
                status = details.status if details is not None else None
                if status != VmProtectionStatus.OK:
                    errors = "; ".join(e for e in (details.errors if details else None) or [] if e)
                    suffix = f" ({errors})" if errors else ""
                    problems.append(f"VM {vm.name!r} in {label} is {status}, expected OK{suffix}")

    @staticmethod
    def _inspect_history(
        reports: list[HistoryReport], problems: list[str], warnings: list[str]
    ) -> str | None:
        if not reports:
            problems.append("no history report found for the plan")
            return None
        newest = max(reports, key=lambda r: (r.start_time_ms or 0, r.run_key or 0))
        if newest.operation_type != OperationType.REPROTECT:
            problems.append(f"newest history report is {newest.operation_type}, not REPROTECT")
        elif newest.result_state == ResultState.WARNINGS:
            warnings.extend(f"history: {w}" for w in newest.warnings_list or [] if w)
            if not newest.warnings_list:
                warnings.append("history: reprotect finished with warnings")
        elif newest.result_state != ResultState.SUCCESS:
            errors = "; ".join(e for e in newest.errors_list or [] if e)
            problems.append(f"newest reprotect report is {newest.result_state}: {errors}")
        return newest.result_state

    # --- cancel -------------------------------------------------------------------------------

    @activity.defn
    async def cancel_task(self, inp: CancelTaskInput) -> CancelTaskResult:
        """Ask SRM to cancel the plan's running reprotect, then wait briefly for it to stop."""
        client = self.client(inp.site)
        with _bound_log(site=inp.site, plan_id=inp.plan_id, task_id=inp.task_id):
            async with _heartbeat_ticker():
                return await self._cancel(client, inp)

    async def _cancel(self, client: SrmClient, inp: CancelTaskInput) -> CancelTaskResult:
        with _srm_errors("cancel_task"):
            plan = await client.get_plan(inp.pairing_id, inp.plan_id)
        if plan.status != PlanStatus.REPROTECT_IN_PROGRESS:
            return CancelTaskResult(
                requested=False,
                plan_status=plan.status,
                message=f"nothing to cancel: plan is {plan.status}",
            )
        try:
            await client.cancel(inp.pairing_id, inp.plan_id)
        except SrmHttpError as exc:
            if exc.status != 400:
                raise to_application_error(exc, "cancel_task") from None
            # SRM refuses to cancel in some phases; report it rather than fail cleanup.
            log.warning("srm_cancel_refused", error=str(exc))
            return CancelTaskResult(requested=False, plan_status=plan.status, message=str(exc))
        except SrmError as exc:
            raise to_application_error(exc, "cancel_task") from None
        log.info("srm_cancel_requested")
        return await self._await_cancel(client, inp)

    async def _await_cancel(self, client: SrmClient, inp: CancelTaskInput) -> CancelTaskResult:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + inp.wait_seconds
        task_status: str | None = None
        with _srm_errors("cancel_task"):
            while True:
                if inp.task_id is not None:
                    task = await client.get_task(inp.task_id)
                    task_status = task.status
                plan = await client.get_plan(inp.pairing_id, inp.plan_id)
                if inp.task_id is not None:
                    settled = task_status in TERMINAL_TASK_STATUSES
                else:
                    settled = plan.status not in BUSY_STATUSES
                if settled or loop.time() >= give_up:
                    return CancelTaskResult(
                        requested=True, task_status=task_status, plan_status=plan.status
                    )
                await asyncio.sleep(inp.poll_interval_seconds)
