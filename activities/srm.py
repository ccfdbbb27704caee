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
    TaskStatus,
    VmProtectionStatus,
)
from srmflow.srm.watcher import TaskWatcher
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
    WaitOptions,
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
MAX_QUOTED_ISSUES = 5
EARLY_POLL_MARGIN_SECONDS = 0.25
EARLY_POLL_MAX_MISSES = 2
# A regular poll may be answered this share of the interval early, by a GET /tasks that reads
# other activities' tasks too (srmflow.srm.watcher): one request then serves many polls.
POLL_SLACK_FRACTION = 0.25


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


def _recovered_at_precheck(inp: StartReprotectInput) -> bool:
    """Precheck found the plan RECOVERY_COMPLETE (workflow's first reprotect attempt only)."""
    return inp.precheck_status == PlanStatus.RECOVERY_COMPLETE


def _adopt_seen(
    task: Task,
    plan: RecoveryPlan,
    *,
    posted: bool,
    make: Callable[..., Any] = StartReprotectResult,
    logger: Any = log,
    event: str = "start_adopted",
) -> Any:
    """The start result for ``task`` on ``plan`` as just read (``make`` builds it)."""
    logger.info(event, task_id=task.id, task_status=task.status, posted=posted)
    return make(
        task_id=task.id,
        adopted=not posted,
        posted=posted,
        plan_status=plan.status,
        sites=_sites(plan),
    )


def _since_recovered(plan: RecoveryPlan, tasks: list[Task]) -> StartReprotectResult | RecoveryPlan:
    """Precheck found RECOVERY_COMPLETE and no reprotect task runs now: did one run since?

    A reprotect moves a plan out of RECOVERY_COMPLETE for good (to READY_STATE, or to a re-run
    status when it fails or is cancelled), so the plan's status alone answers: still
    RECOVERY_COMPLETE means no (the plan is returned, to POST); READY_STATE or a re-run status
    means yes, and the newest reprotect task SRM lists is adopted, or without one the run is
    reported as adopted and finished. Anything else is not eligible.
    """
    if plan.status == PlanStatus.RECOVERY_COMPLETE:
        return plan
    if plan.status != PlanStatus.READY_STATE and plan.status not in RERUN_STATUSES:
        raise _not_eligible(plan)
    if tasks:
        return _adopt_seen(max(tasks, key=lambda t: t.queued_time or 0), plan, posted=False)
    log.warning("start_adopted_finished_without_task", plan_status=plan.status)
    return StartReprotectResult(adopted=True, plan_status=plan.status, sites=_sites(plan))


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
        # The first tick after one interval: the heartbeat timeout runs from the activity's
        # start, and a short activity (most reads take milliseconds) then sends no heartbeat.
        while True:
            await asyncio.sleep(interval)
            if holder[0] is None:
                activity.heartbeat()
            else:
                activity.heartbeat(holder[0])

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


async def _read_or_shutdown(watcher: TaskWatcher, task_id: str, due: float, slack: float) -> Task:
    """The task, read at ``due`` or up to ``slack`` seconds before, with other activities' polls.

    Leaves early with a retryable error when the worker starts draining: a drained
    wait_for_task is picked up by another worker at once, resuming from its heartbeat, instead
    of holding this worker's shutdown for the whole grace period.
    """
    reading = watcher.request(task_id, due=due, slack=slack)
    shutdown = asyncio.ensure_future(activity.wait_for_worker_shutdown())
    try:
        waiting: set[asyncio.Future[Any]] = {reading, shutdown}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        shutdown.cancel()
        reading.cancel()
    if reading.cancelled():
        raise ApplicationError("worker is shutting down", type=policies.WORKER_SHUTDOWN)
    return reading.result()


class _PollPacer:
    """When to poll a running task next: one interval later, or sooner if it ends sooner.

    The task's progress rate is measured between this activity's own polls (worker clock;
    SRM's clock is never compared with ours). When the estimated remaining time plus a small
    margin is shorter than the interval, the next poll comes then, but never sooner than a
    quarter interval. So completion is seen within about the margin instead of up to one
    interval, while a task whose progress rises steadily costs no extra poll. An early poll
    that finds the task still running is a miss; after ``EARLY_POLL_MAX_MISSES`` the pacer
    keeps to the interval, so a task with uneven progress costs at most that many extra polls.
    """

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._first: tuple[float, int] | None = None
        self._early = False
        self._misses = 0

    @property
    def early(self) -> bool:
        """Whether the last delay was shortened because the task should end before then."""
        return self._early

    def next_delay(self, task: Task, now: float) -> float:
        """Seconds to wait before the next poll of ``task``, just polled at ``now``."""
        if self._early:
            self._misses += 1
            self._early = False
        progress = task.progress
        if task.status != TaskStatus.RUNNING or progress is None:
            return self._interval
        if self._first is None or progress < self._first[1]:
            self._first = (now, progress)
            return self._interval
        since, start = self._first
        if progress <= start or now <= since or self._misses >= EARLY_POLL_MAX_MISSES:
            return self._interval
        rate = (progress - start) / (now - since)
        wanted = (100 - progress) / rate + max(EARLY_POLL_MARGIN_SECONDS, 0.05 * self._interval)
        if wanted >= self._interval:
            return self._interval
        self._early = True
        return max(self._interval / 4, wanted)


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
    return _adopt_seen(task, plan, posted=posted, make=make, logger=logger, event=event)


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
        self,
        clients: Mapping[str, SrmClient],
        metrics: SrmflowMetrics | None = None,
        *,
        watchers: Mapping[str, TaskWatcher] | None = None,
    ) -> None:
        self._clients = dict(clients)
        self._metrics = metrics
        # One per site (built here unless given): the wait_for_task polls of this process
        # share their GET /tasks.
        self._watchers = dict(watchers or {})
        for site, client in self._clients.items():
            self._watchers.setdefault(site, TaskWatcher(client))

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
        if inp.pairing_checked and inp.pairing_id is not None:
            # The bulk run checked pairing health and the remote session once for all its plans.
            pairing_id, warnings = inp.pairing_id, []
        else:
            pairing_id = await self.resolve_pairing(client, inp.pairing_id)
            warnings = await self.check_pairing_health(client, pairing_id)
        plan = await client.get_plan(pairing_id, inp.plan_id)
        action = await self._classify_or_explain(client, pairing_id, plan, inp.allow_rerun)
        result = PrecheckResult(
            pairing_id=pairing_id,
            plan_id=plan.id,
            plan_name=plan.name,
            plan_status=plan.status,
            action=action,
            sites=_sites(plan),
            warnings=warnings,
            wait_options=WaitOptions(
                first_poll_after_interval=action is PlanAction.START,
                read_plan_on_success=not inp.verify_after,
            ),
        )
        if action is PlanAction.ALREADY_PROTECTED:
            log.info("precheck_already_protected", plan_status=plan.status)
            return result
        if plan.status == PlanStatus.RECOVERY_COMPLETE:
            # No baseline: a reprotect moves the plan out of RECOVERY_COMPLETE for good, so a
            # later start attempt tells "a reprotect ran since" from the plan's status alone.
            log.info("precheck_done", plan_status=plan.status, action=action.value)
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

    async def check_pairing_health(self, client: SrmClient, pairing_id: str) -> list[str]:
        """Both SRM servers up (else PairingUnhealthy), the remote session proven; issues.

        Precheck runs it for a single plan; a bulk run's resolve_selection once for all plans.
        """
        warnings = await self._check_pairing(client, pairing_id)
        # Proves the remote credentials and the remote site before anything is started.
        await client.ensure_remote_session(pairing_id)
        return warnings

    async def _check_pairing(self, client: SrmClient, pairing_id: str) -> list[str]:
        await self._require_pairing_up(client, pairing_id)
        issues = await client.list_pairing_issues(pairing_id)
        return [_issue_text(i) for i in issues]

    @staticmethod
    async def _require_pairing_up(client: SrmClient, pairing_id: str) -> None:
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

    async def _classify_or_explain(
        self, client: SrmClient, pairing_id: str, plan: RecoveryPlan, allow_rerun: bool
    ) -> PlanAction:
        """The action for the plan; a blocked plan's error also quotes SRM's plan issues.

        Plan issues are read only here: for an eligible plan verification reports them.
        """
        try:
            return self._classify(plan, allow_rerun)
        except ApplicationError as err:
            try:
                issues = await client.list_plan_issues(pairing_id, plan.id)
            except SrmError:
                raise err from None
            if not issues:
                raise
            text = "; ".join(_issue_text(i) for i in issues[:MAX_QUOTED_ISSUES])
            raise ApplicationError(
                f"{err.message} SRM plan issues: {text}",
                type=err.type,
                non_retryable=err.non_retryable,
            ) from None

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
        """Adopt a reprotect already running (or run since precheck), else POST once."""
        client = self.client(inp.site)
        with _bound_log(site=inp.site, plan_id=inp.plan_id), _srm_errors("start_reprotect"):
            async with _heartbeat_ticker():
                return await self._start_or_adopt(client, inp)

    async def _start_or_adopt(
        self, client: SrmClient, inp: StartReprotectInput
    ) -> StartReprotectResult:
        if _recovered_at_precheck(inp) and activity.info().attempt == 1:
            # No earlier attempt can have posted: POST without re-reading. SRM refuses (400) a
            # plan that is no longer eligible, and _post then looks for a reprotect to adopt.
            return await self._post(client, inp, None)
        found = await self._look(client, inp)
        if isinstance(found, StartReprotectResult):
            return found
        plan = found
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
        if activity.info().attempt > 1:
            # A retry may come after a long outage: never POST into a pairing that went down
            # (a bulk run checked it only once, when the run began).
            await self._require_pairing_up(client, inp.pairing_id)
        return await self._post(client, inp, plan)

    async def _look(
        self, client: SrmClient, inp: StartReprotectInput, *, skip: frozenset[str] = frozenset()
    ) -> StartReprotectResult | RecoveryPlan:
        """A reprotect to adopt instead of POSTing, else the plan as read now.

        Covers the crash window between a POST and the activity's completion: the previous
        attempt's heartbeat names the task if it got that far; otherwise SRM's state shows that
        a reprotect ran since precheck (``_since_recovered``, ``_since_baseline``). ``skip``:
        task ids that are not candidates (a refusal answered as a failing task).
        """
        task = await _hinted_task(client, inp.plan_id)
        if task is not None:
            return await self._adopt(client, inp, task, posted=True)
        plan = await client.get_plan(inp.pairing_id, inp.plan_id)
        tasks = [
            t
            for t in await _plan_tasks(client, inp.plan_id)
            if _is_reprotect_task(t) and t.id not in skip
        ]
        running = [t for t in tasks if not t.is_terminal]
        if running:
            return _adopt_seen(running[0], plan, posted=False)
        if plan.status == PlanStatus.REPROTECT_IN_PROGRESS:
            # Plan and task list disagree for a moment; re-read on the next attempt.
            raise ApplicationError(
                f"plan {plan.name!r} is REPROTECT_IN_PROGRESS but SRM lists no running "
                "reprotect task yet",
                type=policies.PLAN_BUSY,
            )
        if _recovered_at_precheck(inp):
            return _since_recovered(plan, tasks)
        return await self._since_baseline(client, inp, plan, tasks)

    async def _since_baseline(
        self, client: SrmClient, inp: StartReprotectInput, plan: RecoveryPlan, tasks: list[Task]
    ) -> StartReprotectResult | RecoveryPlan:
        """Adopt a reprotect task newer than the baseline (precheck's, or the previous run's)."""
        baseline = set(inp.baseline_task_ids)
        since = inp.last_reprotect_report_ms
        fresh = [
            t
            for t in tasks
            if t.id not in baseline
            # An older reprotect (an earlier failover cycle) is never this attempt's own.
            and (since is None or t.queued_time is None or t.queued_time > since)
        ]
        if fresh:
            newest = max(fresh, key=lambda t: t.queued_time or 0)
            return _adopt_seen(newest, plan, posted=False)
        if activity.info().attempt > 1 and await self._newer_report(client, inp, plan):
            # A reprotect finished since the baseline but its task is no longer listed.
            log.warning("start_adopted_finished_without_task", plan_status=plan.status)
            return StartReprotectResult(adopted=True, plan_status=plan.status, sites=_sites(plan))
        return plan

    async def _newer_report(
        self, client: SrmClient, inp: StartReprotectInput, plan: RecoveryPlan
    ) -> bool:
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
        self, client: SrmClient, inp: StartReprotectInput, plan: RecoveryPlan | None
    ) -> StartReprotectResult:
        """The one POST of this attempt; an ambiguous failure is settled by re-reading SRM.

        ``plan`` is None on the direct path (precheck's RECOVERY_COMPLETE, first attempt).
        """
        try:
            task = await client.reprotect(inp.pairing_id, inp.plan_id, forced=inp.forced)
        except SrmHttpError as exc:
            if exc.status == 400 and exc.method == "POST" and "actions" in exc.path:
                # Not eligible (any more): someone may have started it since precheck.
                again = await self._look(client, inp)
                if isinstance(again, StartReprotectResult):
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
        log.info("reprotect_posted", task_id=task.id, forced=inp.forced, direct=plan is None)
        if plan is None and task.status == TaskStatus.ERROR:
            # SRM may refuse an ineligible plan with a task that fails at once instead of a
            # 400; look as the 400 path does. Nothing to adopt: follow the failing task.
            again = await self._look(client, inp, skip=frozenset({task.id}))
            if isinstance(again, StartReprotectResult):
                return again
        if plan is None:
            status = inp.precheck_status or PlanStatus.RECOVERY_COMPLETE
            return StartReprotectResult(task_id=task.id, posted=True, plan_status=status)
        return StartReprotectResult(
            task_id=task.id, posted=True, plan_status=plan.status, sites=_sites(plan)
        )

    async def _settle_ambiguous(
        self, client: SrmClient, inp: StartReprotectInput, exc: SrmError
    ) -> StartReprotectResult:
        """The POST may or may not have started a task: look, never POST blindly again."""
        log.warning("reprotect_post_ambiguous", error=str(exc))
        try:
            found = await self._look(client, inp)
        except SrmError:
            found = None
        if isinstance(found, StartReprotectResult):
            return found
        # Nothing visible: fail this attempt; the retry re-reads state (and history) first.
        raise exc

    # --- wait ---------------------------------------------------------------------------------

    @activity.defn
    async def wait_for_task(self, inp: WaitForTaskInput) -> TaskOutcome:
        """Poll the SRM task until it ends, heartbeating its progress; resumes after a crash.

        A task the start step has just POSTed is first polled one interval later (nothing can
        be seen sooner); a resumed or adopted task at once. Between polls ``_PollPacer`` waits
        one interval, or less when the task's progress says it ends before the next poll; a
        regular poll may come up to ``POLL_SLACK_FRACTION`` of the interval early, to share a
        ``GET /tasks`` with other tasks followed by this worker on the same site. The plan is
        read at the end unless the task ended SUCCESS and verification re-reads it.
        """
        client = self.client(inp.site)
        previous = _previous_progress(inp.task_id)
        interval = max(1.0, inp.poll_interval_seconds)
        fresh = previous is None and activity.info().attempt == 1
        first_delay = interval if fresh and inp.options.first_poll_after_interval else 0.0
        with (
            _bound_log(site=inp.site, plan_id=inp.plan_id, task_id=inp.task_id),
            self._following(inp.site) as finished,
        ):
            if previous is not None:
                log.info("wait_resumed", progress=previous.progress, polls=previous.polls)
            async with _heartbeat_ticker():
                _set_heartbeat(previous or TaskProgress(task_id=inp.task_id))
                task = await self._poll_until_terminal(client, inp, previous, interval, first_delay)
                finished.append(task)
                plan = None
                succeeded = task is not None and task.status == TaskStatus.SUCCESS
                if inp.options.read_plan_on_success or not succeeded:
                    with _srm_errors("wait_for_task"):
                        plan = await client.get_plan(inp.pairing_id, inp.plan_id)
            message = None
            if task is not None and task.error is not None:
                message = task.error.message or task.error.details
            plan_status = plan.status if plan is not None else None
            log.info("srm_task_finished", status=task.status if task else None, plan=plan_status)
            return TaskOutcome(
                task_id=inp.task_id,
                status=task.status if task is not None else "UNKNOWN",
                progress=task.progress if task is not None else None,
                error_message=message,
                plan_status=plan_status,
                sites=_sites(plan) if plan is not None else Sites(),
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
        first_delay: float = 0.0,
    ) -> Task | None:
        """The poll loop; absorbs a bounded run of transient SRM errors with backoff.

        Returns None when SRM no longer knows the task but the plan has left
        REPROTECT_IN_PROGRESS (tasks are forgotten, e.g. across an SRM restart).
        """
        failures = 0
        current = previous or TaskProgress(task_id=inp.task_id)
        pacer = _PollPacer(interval)
        watcher = self._watchers[inp.site]
        loop = asyncio.get_running_loop()
        # Polls after errors come no earlier than asked (Retry-After); the first one (one
        # interval after the POST) and regular ones may share a batch due a little earlier.
        delay, slack = first_delay, interval * POLL_SLACK_FRACTION if first_delay else 0.0
        while True:
            try:
                task = await _read_or_shutdown(watcher, inp.task_id, loop.time() + delay, slack)
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
                delay, slack = self._backoff(exc, failures, interval), 0.0
                log.info("srm_poll_failed", error=str(exc), failures=failures, retry_in=delay)
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
            delay = pacer.next_delay(task, loop.time())
            # An early poll aims at the task's estimated end: reading it sooner would miss.
            slack = 0.0 if pacer.early else interval * POLL_SLACK_FRACTION

    @staticmethod
    def _backoff(exc: SrmError, failures: int, interval: float) -> float:
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return float(min(retry_after, policies.WAIT_MAX_BACKOFF_SECONDS))
        return float(min(interval * 2 ** (failures - 1), policies.WAIT_MAX_BACKOFF_SECONDS))

    # --- verify -------------------------------------------------------------------------------

    @activity.defn
    async def verify(self, inp: VerifyInput) -> VerifyResult:
        """Check the plan (READY_STATE, sites swapped) and the newest history report.

        Two reads when all is well. Groups, their VMs and plan issues are read only to explain
        a problem, or the warnings of a reprotect that finished with WARNINGS. SRM updates the
        plan and history a little after the task ends, so mismatches are re-checked for
        ``settle_seconds`` before they count.
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
        reports = await client.list_history_reports(pid, plan_id)
        result.report_result = self._inspect_history(reports, problems, warnings)
        if problems or result.report_result == ResultState.WARNINGS:
            # Which group, VM or plan issue is behind the problem or the warnings.
            await self._inspect_groups(client, pid, plan_id, problems)
            await _add_plan_issues(client, pid, plan_id, problems, warnings)
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
