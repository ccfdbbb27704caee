"""Simulator state: inventory, sessions, tasks, journal and the table-driven plan state machine.

Task progress is computed lazily from a clock, and finished tasks are settled (their effects on
plans, groups and history applied) on every read, so no background timer is needed and a
`ManualClock` makes tests instant.
"""

from __future__ import annotations

import contextlib
import math
import random
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import structlog

from srmflow.simulator.faults import FaultConfig, FaultInjector
from srmflow.simulator.scenario import PlanOverride, Scenario

log = structlog.get_logger(__name__)

Action = Literal["test", "cleanup", "recovery", "reprotect"]


class Clock(Protocol):
    """Time source: monotonic seconds for durations, epoch milliseconds for the wire."""

    def monotonic(self) -> float: ...

    def time_ms(self) -> int: ...


class SystemClock:
    """Real time."""

    def monotonic(self) -> float:
        """Monotonic seconds."""
        return time.monotonic()

    def time_ms(self) -> int:
        """Epoch milliseconds."""
        return int(time.time() * 1000)


class ManualClock:
    """A clock that only moves when told to, for instant tests and scripted demos."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now = 0.0
        self._start_ms = start_ms

    def monotonic(self) -> float:
        """Seconds advanced so far."""
        return self._now

    def time_ms(self) -> int:
        """Epoch milliseconds."""
        return self._start_ms + int(self._now * 1000)

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self._now += seconds


@dataclass(frozen=True)
class Transition:
    """One row of the plan state machine."""

    action: Action
    sources: frozenset[str]
    running: str
    success: str
    failure: str
    forced_failure: str | None  # status when `forced` makes SRM ignore the failure
    history_type: str
    group_running: tuple[str, str]  # (group status, group recovery_status) while running
    group_success: tuple[str, str]
    group_failure: tuple[str, str]
    swap_sites: bool = False


# Derived from the status enums; see docs in NOTES.md ("Simulator state machine").
# TEST_INTERRUPTED is accepted by cleanup as well, since an interrupted test leaves a test
# environment behind that only cleanup removes.
TRANSITIONS: dict[Action, Transition] = {
    t.action: t
    for t in (
        Transition(
            "test",
            frozenset({"READY_STATE"}),
            "TEST_IN_PROGRESS",
            "TEST_COMPLETE",
            "TEST_INTERRUPTED",
            None,
            "TEST",
            ("TESTING", "TEST_IN_PROGRESS"),
            ("TEST_COMPLETE", "TEST_COMPLETE"),
            ("TEST_COMPLETE", "TEST_COMPLETE"),
        ),
        Transition(
            "cleanup",
            frozenset(
                {"TEST_COMPLETE", "CLEANUP_INCOMPLETE", "CLEANUP_INTERRUPTED", "TEST_INTERRUPTED"}
            ),
            "CLEANUP_IN_PROGRESS",
            "READY_STATE",
            "CLEANUP_INCOMPLETE",
            "READY_STATE",
            "CLEANUP",
            ("CLEANING_UP", "CLEANUP"),
            ("OK", "READY"),
            ("TEST_COMPLETE", "TEST_COMPLETE"),
        ),
        Transition(
            "recovery",
            frozenset({"READY_STATE", "INCOMPLETE_RECOVERY", "RECOVERY_INTERRUPTED"}),
            "RECOVERY_IN_PROGRESS",
            "RECOVERY_COMPLETE",
            "INCOMPLETE_RECOVERY",
            None,
            "FAILOVER",
            ("RECOVERING", "RECOVERY_IN_PROGRESS"),
            ("RECOVERED", "RECOVERY_COMPLETE"),
            ("PARTIALLY_RECOVERED", "PARTIALLY_RECOVERED"),
        ),
        Transition(
            "reprotect",
            frozenset(
                {
                    "RECOVERY_COMPLETE",
                    "INCOMPLETE_REPROTECT",
                    "REPROTECT_INTERRUPTED",
                    "PARTIAL_REPROTECT",
                }
            ),
            "REPROTECT_IN_PROGRESS",
            "READY_STATE",
            "INCOMPLETE_REPROTECT",
            "READY_STATE",
            "REPROTECT",
            ("REPROTECTING", "REPROTECT_IN_PROGRESS"),
            ("OK", "READY"),
            ("PARTIALLY_REPROTECTED", "PARTIALLY_REPROTECTED"),
            swap_sites=True,
        ),
    )
}

# Status a plan lands in when the SRM server restarts under a running operation.
INTERRUPTED: dict[Action, str] = {
    "test": "TEST_INTERRUPTED",
    "cleanup": "CLEANUP_INTERRUPTED",
    "recovery": "RECOVERY_INTERRUPTED",
    "reprotect": "REPROTECT_INTERRUPTED",
}

# Group and VM look for plans that start in a given status.
INITIAL_GROUP: dict[str, tuple[str, str]] = {
    "READY_STATE": ("OK", "READY"),
    "RECOVERY_COMPLETE": ("RECOVERED", "RECOVERY_COMPLETE"),
    "INCOMPLETE_REPROTECT": ("PARTIALLY_REPROTECTED", "PARTIALLY_REPROTECTED"),
    "PARTIAL_REPROTECT": ("PARTIALLY_REPROTECTED", "PARTIALLY_REPROTECTED"),
    "TEST_COMPLETE": ("TEST_COMPLETE", "TEST_COMPLETE"),
    "INCOMPLETE_RECOVERY": ("PARTIALLY_RECOVERED", "PARTIALLY_RECOVERED"),
}
VM_STATUS_FOR_GROUP: dict[str, str] = {
    "OK": "OK",
    "READY": "OK",
    "TEST_COMPLETE": "OK",
    "TESTING": "OK",
    "CLEANING_UP": "OK",
    "RECOVERED": "NOT_CONFIGURED",
    "RECOVERING": "OK",
    "PARTIALLY_RECOVERED": "REPLICATION_ERROR",
    "REPROTECTING": "CONFIGURING_PROTECTION",
    "PARTIALLY_REPROTECTED": "REPLICATION_ERROR",
}
PLAN_VM_STATUS: dict[str, str] = {
    "READY_STATE": "READY_TO_RECOVER",
    "TEST_IN_PROGRESS": "TEST_IN_PROGRESS",
    "TEST_COMPLETE": "TEST_SUCCEEDED",
    "TEST_INTERRUPTED": "TEST_INCOMPLETE",
    "CLEANUP_IN_PROGRESS": "CLEANUP_IN_PROGRESS",
    "CLEANUP_INCOMPLETE": "CLEANUP_INCOMPLETE",
    "RECOVERY_IN_PROGRESS": "RECOVERY_IN_PROGRESS",
    "RECOVERY_COMPLETE": "RECOVERY_SUCCEEDED",
    "INCOMPLETE_RECOVERY": "RECOVERY_INCOMPLETE",
    "REPROTECT_IN_PROGRESS": "REPROTECT_IN_PROGRESS",
    "INCOMPLETE_REPROTECT": "REPROTECT_INCOMPLETE",
}
FAILURE_MESSAGES: dict[Action, str] = {
    "test": "Failed to create snapshots of replica devices for group '{group}': "
    "storage array timed out",
    "cleanup": "Failed to discard test snapshots for device 'naa.{device}': device is busy",
    "recovery": "Failed to promote replica devices for group '{group}': "
    "array pair is not reachable",
    "reprotect": "Failed to reverse replication for device 'naa.{device}': "
    "array pair is not reachable",
}


class SimError(Exception):
    """An API answer other than success: `code` None means no body (401, 404)."""

    def __init__(self, status: int, code: str | None = None, message: str = "") -> None:
        super().__init__(message or str(status))
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Vm:
    """A protected VM."""

    id: str
    name: str


@dataclass
class Group:
    """A protection group; `forward` says whether it replicates site A -> site B."""

    id: str
    name: str
    vms: list[Vm]
    status: str
    recovery_status: str
    forward: bool = True
    vm_errors: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """A recovery plan; its reported status also depends on its active task."""

    id: str
    name: str
    status: str
    group_ids: list[str]
    forward: bool = True
    fail: str | None = None
    incomplete: bool = False
    extra_issues: list[dict[str, str]] = field(default_factory=list)
    active_task: str | None = None
    last_error: str | None = None


@dataclass
class Session:
    """A local API session and the pairings it has remote sessions for."""

    username: str
    created: float
    remote: set[str] = field(default_factory=set)


@dataclass
class SimTask:
    """A task whose status is a function of the clock until it is settled."""

    id: str
    kind: str  # an Action, or "history"
    plan_id: str
    description: str
    username: str
    created: float
    created_ms: int
    queue_s: float
    run_s: float
    error: str | None = None  # final ERROR message, decided at start
    incomplete: bool = False
    forced: bool = False
    rejected: bool = False  # a refused action answered as a failing task
    groups: tuple[str, ...] = ()
    cancel_at: float | None = None
    cancel_s: float = 0.0
    settled: bool = False
    result: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def end(self) -> float:
        """Monotonic time at which the task reaches its final status."""
        natural = self.created + self.queue_s + self.run_s
        if self.cancel_at is not None:
            return min(natural, self.cancel_at + self.cancel_s)
        return natural

    @property
    def cancelled(self) -> bool:
        """Whether the task ends CANCELLED rather than naturally."""
        if self.cancel_at is None:
            return False
        return self.cancel_at + self.cancel_s < self.created + self.queue_s + self.run_s

    def status(self, now: float) -> str:
        """Wire status at `now`."""
        if now >= self.end:
            if self.cancelled:
                return "CANCELLED"
            return "ERROR" if self.error else "SUCCESS"
        return "RUNNING" if now >= self.created + self.queue_s else "QUEUED"

    def progress(self, now: float) -> int:
        """0..100, rising linearly while running."""
        status = self.status(now)
        if status in ("SUCCESS", "ERROR"):
            return 100
        if status == "QUEUED" or self.run_s <= 0:
            return 0
        done = (min(now, self.end) - self.created - self.queue_s) / self.run_s
        return max(0, min(99, int(done * 100)))


@dataclass
class JournalEntry:
    """One mutating API request and what the simulator answered."""

    time: int
    method: str
    path: str
    status: int
    plan_id: str | None = None
    task_id: str | None = None
    fault: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "time": self.time,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "plan_id": self.plan_id,
            "task_id": self.task_id,
            "fault": self.fault,
        }


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _duration_text(ms: int) -> str:
    seconds = ms // 1000
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m")]
    text = " ".join(f"{value}{unit}" for value, unit in parts if value)
    return f"{text} {secs}s".strip()


class SimState:
    """The whole simulated SRM pair, seen from the local site."""

    def __init__(self, scenario: Scenario | None = None, clock: Clock | None = None) -> None:
        self.scenario = scenario or Scenario()
        self.clock: Clock = clock or SystemClock()
        seed = self.scenario.seed
        self._ids = random.Random(seed)
        self._durations = random.Random(seed + 1)
        self._outcomes = random.Random(seed + 2)
        self.faults = FaultInjector(self.scenario.faults.model_copy(deep=True), seed + 3)
        self.pairing_id = _uuid(self._ids)
        self.local_srm_guid = _uuid(self._ids)
        self.remote_srm_guid = _uuid(self._ids)
        self.vc_guids = (_uuid(self._ids), _uuid(self._ids))
        self.srm_guids = (self.local_srm_guid, self.remote_srm_guid)
        self.sessions: dict[str, Session] = {}
        self.plans: dict[str, Plan] = {}
        self.groups: dict[str, Group] = {}
        self.tasks: dict[str, SimTask] = {}
        self.history: dict[str, list[dict[str, Any]]] = {}
        self.journal: list[JournalEntry] = []
        self.reprotect_posts: dict[str, int] = {}
        # Every API request (reads too) by "METHOD /route/{template}", for request budgets.
        self.requests: dict[str, int] = {}
        # API requests being answered right now, and the most ever answered at once.
        self.requests_open = 0
        self.max_concurrent_requests = 0
        self.faults_injected: dict[str, int] = {}
        self.conflicts_rejected = 0
        self._run_key = 1000
        self._vm_seq = 1000
        self._build_inventory()

    # ----- inventory -----------------------------------------------------------------------

    def _moref(self, kind: str) -> str:
        return f"{kind}:{_uuid(self._ids)}:{self.local_srm_guid}"

    def _new_group(self, name: str, status: str) -> Group:
        vms: list[Vm] = []
        for _ in range(self.scenario.vms_per_group):
            self._vm_seq += 1
            vms.append(Vm(id=f"vm-{self._vm_seq}", name=f"{name}-vm{len(vms) + 1:02d}"))
        group_status, recovery_status = INITIAL_GROUP.get(status, ("OK", "READY"))
        group = Group(
            self._moref("DrReplicationVmProtectionGroup"), name, vms, group_status, recovery_status
        )
        self.groups[group.id] = group
        return group

    def _override(self, index: int, name: str) -> PlanOverride:
        overrides = self.scenario.plan_overrides
        return overrides.get(name) or overrides.get(str(index)) or PlanOverride()

    def _build_inventory(self) -> None:
        sc = self.scenario
        for index in range(sc.plans):
            name = f"plan-{index + 1:03d}"
            override = self._override(index, name)
            status = override.status or sc.status
            groups = [
                self._new_group(f"pg-{index + 1:03d}-{g + 1}", status).id
                for g in range(sc.groups_per_plan)
            ]
            plan = Plan(
                self._moref("DrRecoveryRecoveryPlan"),
                name,
                status,
                groups,
                fail=override.fail,
                incomplete=override.incomplete,
                extra_issues=list(override.issues),
            )
            self.plans[plan.id] = plan
            self.history[plan.id] = []
        plan_list = list(self.plans.values())
        for pair in range(sc.shared_pairs):
            first, second = 2 * pair, 2 * pair + 1
            if second >= len(plan_list):
                break
            shared = self._new_group(f"pg-shared-{pair + 1}", plan_list[first].status)
            plan_list[first].group_ids.append(shared.id)
            plan_list[second].group_ids.append(shared.id)

    def find_plan(self, key: str) -> Plan | None:
        """A plan by id or name."""
        if key in self.plans:
            return self.plans[key]
        return next((p for p in self.plans.values() if p.name == key), None)

    # ----- sessions ------------------------------------------------------------------------

    def login(self, username: str, password: str) -> str:
        """Create a session for the local user, or raise 401."""
        if (username, password) != (self.scenario.username, self.scenario.password):
            raise SimError(401)
        session_id = secrets.token_urlsafe(24)
        self.sessions[session_id] = Session(username, self.clock.monotonic())
        log.info("sim_login", username=username)
        return session_id

    def session(self, session_id: str | None) -> Session:
        """The live session for a header value, or raise 401 (expired sessions are dropped)."""
        sess = self.sessions.get(session_id or "")
        if sess is None:
            raise SimError(401)
        ttl = self.faults.config.session_ttl_s
        if ttl is not None and self.clock.monotonic() - sess.created >= ttl:
            del self.sessions[session_id or ""]
            raise SimError(401)
        return sess

    def logout(self, session_id: str) -> None:
        """Drop a session."""
        self.sessions.pop(session_id, None)

    def remote_login(self, sess: Session, pairing_id: str, username: str, password: str) -> None:
        """Create the remote session for `pairing_id`."""
        self.require_pairing(pairing_id)
        if self.faults.config.remote_site_down:
            raise self._remote_down()
        expected = (self.scenario.remote_username, self.scenario.remote_password)
        if (username, password) != expected:
            raise SimError(401)
        sess.remote.add(pairing_id)

    def restart(self, *, interrupt_tasks: bool = False) -> None:
        """Simulate an SRM service restart: every session is gone."""
        self.tick()
        self.sessions.clear()
        if interrupt_tasks:
            now = self.clock.monotonic()
            for task in self.tasks.values():
                if not task.settled and task.kind != "history" and not task.rejected:
                    self._interrupt(task, now)
        log.info("sim_restart", interrupt_tasks=interrupt_tasks)

    def _interrupt(self, task: SimTask, now: float) -> None:
        plan = self.plans[task.plan_id]
        task.error = "Operation interrupted: Site Recovery Manager server restarted"
        task.run_s = max(0.0, now - task.created - task.queue_s)
        task.queue_s = min(task.queue_s, now - task.created)
        task.settled = True
        plan.status = INTERRUPTED[task.kind]  # type: ignore[index]
        plan.active_task = None
        self._add_history(task, plan, "ERRORS", [task.error])

    # ----- lookups -------------------------------------------------------------------------

    def require_pairing(self, pairing_id: str) -> None:
        """404 unless this is the pairing."""
        if pairing_id != self.pairing_id:
            raise SimError(404)

    def require_plan(self, pairing_id: str, plan_id: str) -> Plan:
        """The plan, or 404."""
        self.require_pairing(pairing_id)
        plan = self.plans.get(plan_id)
        if plan is None:
            raise SimError(404)
        return plan

    def _remote_down(self) -> SimError:
        status = self.faults.config.remote_down_status
        return SimError(
            status,
            "REMOTE_SITE_UNREACHABLE",
            f"Site Recovery Manager server at remote site '{self.scenario.sites[1]}' "
            "is not reachable",
        )

    # ----- clock-driven settlement ---------------------------------------------------------

    def tick(self) -> None:
        """Apply the effects of every task that has finished by now, in finishing order."""
        now = self.clock.monotonic()
        due = [t for t in self.tasks.values() if not t.settled and t.end <= now]
        for task in sorted(due, key=lambda t: t.end):
            self._settle(task)

    def _settle(self, task: SimTask) -> None:
        task.settled = True
        if task.kind == "history" or task.rejected:
            return
        plan = self.plans[task.plan_id]
        plan.active_task = None
        row = TRANSITIONS[task.kind]  # type: ignore[index]
        groups = [self.groups[g] for g in plan.group_ids]
        if task.cancelled:
            plan.status = row.failure
            self._set_groups(groups, row.group_failure, None)
            self._add_history(task, plan, "CANCELLED", [])
        elif task.error and task.forced and row.forced_failure:
            plan.status = row.forced_failure
            task.warnings.append(f"Ignored because forced: {task.error}")
            task.error = None
            self._succeed(row, plan, groups)
            self._add_history(task, plan, "WARNINGS", [])
        elif task.error:
            plan.status = row.failure
            plan.last_error = task.error
            if task.incomplete and row.swap_sites:
                # Arrays reversed for the first half only; a re-run touches the rest.
                done = groups[: math.ceil(len(groups) / 2)] if len(groups) > 1 else []
                target = not plan.forward
                for group in done:
                    group.forward = target
                self._set_groups(done, row.group_success, None)
                self._set_groups(groups[len(done) :], row.group_failure, task.error)
            else:
                self._set_groups(groups, row.group_failure, task.error)
            self._add_history(task, plan, "ERRORS", [task.error])
        else:
            plan.status = row.success
            self._succeed(row, plan, groups)
            self._add_history(task, plan, "SUCCESS", [])
        log.info("sim_task_finished", task_id=task.id, plan=plan.name, status=task.status(task.end))

    def _succeed(self, row: Transition, plan: Plan, groups: list[Group]) -> None:
        plan.last_error = None
        if row.swap_sites:
            plan.forward = not plan.forward
            for group in groups:
                group.forward = plan.forward
        self._set_groups(groups, row.group_success, None)

    def _set_groups(self, groups: list[Group], look: tuple[str, str], error: str | None) -> None:
        for group in groups:
            group.status, group.recovery_status = look
            group.vm_errors = [error] if error else []

    def _add_history(self, task: SimTask, plan: Plan, result: str, errors: list[str]) -> None:
        self._run_key += 1
        start_ms = task.created_ms + int(task.queue_s * 1000)
        duration_ms = max(0, int((task.end - task.created - task.queue_s) * 1000))
        row = TRANSITIONS[task.kind]  # type: ignore[index]
        self.history[plan.id].append(
            {
                "plan_name": plan.name,
                "username": task.username,
                "operation_type": row.history_type,
                "start_time_ms": start_ms,
                "human_friendly_duration": _duration_text(duration_ms),
                "duration_ms": duration_ms,
                "result_state": result,
                "error_count": len(errors),
                "warning_count": len(task.warnings),
                "run_key": self._run_key,
                "errors_list": errors,
                "warnings_list": list(task.warnings),
            }
        )

    # ----- operations ----------------------------------------------------------------------

    def _busy_groups(self, exclude: str) -> dict[str, str]:
        """Group id -> plan name holding it: plans running, or with a test environment up."""
        busy: dict[str, str] = {}
        for plan in self.plans.values():
            if plan.id != exclude and (plan.active_task or plan.status == "TEST_COMPLETE"):
                for gid in plan.group_ids:
                    busy[gid] = plan.name
        return busy

    def _new_task_id(self) -> str:
        return f"DrTask:{_uuid(self._ids)}:{self.local_srm_guid}"

    def _outcome(self, plan: Plan, action: Action) -> tuple[str | None, bool]:
        """Decide (error message, incomplete) for a new operation, deterministically."""
        cfg = self.faults.config
        draw_error, draw_incomplete = self._outcomes.random(), self._outcomes.random()
        group = self.groups[plan.group_ids[0]].name if plan.group_ids else plan.name
        device = f"{self._outcomes.getrandbits(64):016x}"
        message = cfg.fail_plans.get(plan.id) or cfg.fail_plans.get(plan.name) or plan.fail
        if message is None and draw_error < cfg.task_error_rate:
            message = FAILURE_MESSAGES[action].format(group=group, device=device)
        incomplete = action == "reprotect" and (
            plan.incomplete
            or plan.id in cfg.incomplete_plans
            or plan.name in cfg.incomplete_plans
            or draw_incomplete < cfg.incomplete_rate
        )
        if incomplete and message is None:
            message = "Reprotect completed with errors: " + FAILURE_MESSAGES["reprotect"].format(
                group=group, device=device
            )
        return message, incomplete

    def _make_task(self, plan: Plan, kind: str, username: str, run_s: float) -> SimTask:
        now = self.clock.monotonic()
        task = SimTask(
            id=self._new_task_id(),
            kind=kind,
            plan_id=plan.id,
            description=f"{kind.capitalize()} recovery plan '{plan.name}'",
            username=username,
            created=now,
            created_ms=self.clock.time_ms(),
            queue_s=min(0.5, run_s * 0.05),
            run_s=run_s,
        )
        self.tasks[task.id] = task
        return task

    def _reject(self, plan: Plan, action: Action, sess: Session, mode: str, err: SimError) -> str:
        """Refuse an action either synchronously or as a task that fails at once."""
        if mode == "task_error":
            task = self._make_task(plan, action, sess.username, 0.0)
            task.queue_s = 0.0
            task.rejected = True
            task.error = err.message
            return task.id
        raise SimError(500 if mode == "http500" else err.status, err.code, err.message)

    def start(
        self, pairing_id: str, plan_id: str, action: Action, sess: Session, *, forced: bool = False
    ) -> str:
        """Start an operation on a plan; returns the task id or raises SimError."""
        self.tick()
        plan = self.require_plan(pairing_id, plan_id)
        cfg = self.faults.config
        if pairing_id not in sess.remote:
            raise SimError(
                400,
                "REMOTE_SESSION_REQUIRED",
                "Not logged in to the remote site: create a remote session first "
                f"(POST /pairings/{pairing_id}/remote-session)",
            )
        if cfg.remote_site_down:
            raise self._remote_down()
        row = TRANSITIONS[action]
        status = self.plan_status(plan)
        if plan.active_task or plan.status not in row.sources:
            err = SimError(
                400,
                "INVALID_PLAN_STATE",
                f"Cannot run {action} on recovery plan '{plan.name}' in state {status}; "
                f"allowed from: {', '.join(sorted(row.sources))}",
            )
            return self._reject(plan, action, sess, cfg.wrong_status, err)
        busy = self._busy_groups(plan.id)
        clash = sorted({busy[g] for g in plan.group_ids if g in busy})
        if clash and cfg.enforce_group_conflicts:
            self.conflicts_rejected += 1
            err = SimError(
                400,
                "PROTECTION_GROUPS_IN_USE",
                f"Recovery plan '{plan.name}' contains protection groups in use by "
                f"recovery plan(s) {', '.join(clash)}",
            )
            return self._reject(plan, action, sess, cfg.groups_in_use, err)
        low, high = self.scenario.task_seconds
        task = self._make_task(plan, action, sess.username, self._durations.uniform(low, high))
        task.error, task.incomplete = self._outcome(plan, action)
        task.forced = forced
        task.groups = tuple(plan.group_ids)
        plan.active_task = task.id
        self._set_groups([self.groups[g] for g in plan.group_ids], row.group_running, None)
        log.info("sim_task_started", task_id=task.id, plan=plan.name, action=action)
        return task.id

    def cancel(self, pairing_id: str, plan_id: str, sess: Session) -> None:
        """Cancel the running operation of a plan (CANCEL_IN_PROGRESS, then CANCELLED)."""
        self.tick()
        plan = self.require_plan(pairing_id, plan_id)
        if pairing_id not in sess.remote:
            raise SimError(400, "REMOTE_SESSION_REQUIRED", "Not logged in to the remote site")
        task = self.tasks.get(plan.active_task or "")
        if task is None or task.cancel_at is not None:
            raise SimError(
                400,
                "INVALID_PLAN_STATE",
                f"Nothing to cancel: recovery plan '{plan.name}' is {self.plan_status(plan)}",
            )
        task.cancel_at = self.clock.monotonic()
        task.cancel_s = min(2.0, 0.1 * task.run_s)

    def history_task(
        self, pairing_id: str, plan_id: str, sess: Session, since: int | None, until: int | None
    ) -> str:
        """A task whose result holds the plan's history reports."""
        self.tick()
        plan = self.require_plan(pairing_id, plan_id)
        task = self._make_task(plan, "history", sess.username, self.scenario.history_task_seconds)
        task.queue_s = 0.0
        task.description = f"Generate history of recovery plan '{plan.name}'"
        reports = [
            r
            for r in self.history[plan.id]
            if (since is None or r["start_time_ms"] >= since)
            and (until is None or r["start_time_ms"] <= until)
        ]
        task.result = {"list": [dict(r) for r in reports], "total": len(reports)}
        return task.id

    # ----- views ---------------------------------------------------------------------------

    def plan_status(self, plan: Plan) -> str:
        """Status as SRM reports it now."""
        task = self.tasks.get(plan.active_task or "")
        if task is not None:
            if task.cancel_at is not None:
                return "CANCEL_IN_PROGRESS"
            return TRANSITIONS[task.kind].running  # type: ignore[index]
        if self.scenario.show_groups_in_use and plan.status in ("READY_STATE", "RECOVERY_COMPLETE"):
            busy = self._busy_groups(plan.id)
            if any(g in busy for g in plan.group_ids):
                return "PROTECTION_GROUPS_IN_USE"
        return plan.status

    def _sites(self, forward: bool) -> dict[str, str]:
        a, b = self.scenario.sites
        va, vb = self.vc_guids
        if not forward:
            a, b, va, vb = b, a, vb, va
        return {
            "protected_site_name": a,
            "recovery_site_name": b,
            "protected_vc_guid": va,
            "recovery_vc_guid": vb,
        }

    def plan_view(self, plan: Plan) -> dict[str, Any]:
        """RecoveryPlanInfo."""
        now = self.clock.monotonic()
        task = self.tasks.get(plan.active_task or "")
        return {
            "id": plan.id,
            "name": plan.name,
            "status": self.plan_status(plan),
            "location": f"DrFolder:recovery-plans:{self.local_srm_guid}",
            "location_name": "Recovery Plans",
            "description": f"Simulated recovery plan {plan.name}",
            **self._sites(plan.forward),
            "progress": task.progress(now) if task else 0,
            "is_running": task is not None,
        }

    def group_view(self, group: Group) -> dict[str, Any]:
        """ProtectionGroupInfo."""
        return {
            "id": group.id,
            "name": group.name,
            "description": None,
            "location": f"DrFolder:protection-groups:{self.local_srm_guid}",
            "location_name": "Protection Groups",
            **self._sites(group.forward),
            "total_vms": len(group.vms),
            "replication_type": "ABR",
            "recovery_status": group.recovery_status,
            "status": group.status,
            "array_pair": "array-pair-1",
            "domain_id": None,
        }

    def group_vm_view(self, group: Group, vm: Vm) -> dict[str, Any]:
        """ProtectionGroupVmInfo."""
        return {
            "id": vm.id,
            "name": vm.name,
            "template": False,
            "inside_vapp": False,
            "protection_status_details": {
                "status": VM_STATUS_FOR_GROUP.get(group.status, "OK"),
                "errors": list(group.vm_errors) or None,
            },
        }

    def plan_vm_views(self, plan: Plan) -> list[dict[str, Any]]:
        """RecoveryPlanVmInfo for every VM of the plan."""
        status = PLAN_VM_STATUS.get(self.plan_status(plan), "UNKNOWN")
        return [
            {
                "id": vm.id,
                "name": vm.name,
                "template": False,
                "inside_vapp": False,
                "status": status,
                "managing_recovery_plan": plan.id,
                "protection_group_name": group.name,
                "protection_group": group.id,
            }
            for group in (self.groups[g] for g in plan.group_ids)
            for vm in group.vms
        ]

    def plan_issues(self, plan: Plan) -> list[dict[str, Any]]:
        """IssueInfo list: the last failure, a down remote site, scenario extras."""
        now_ms = self.clock.time_ms()
        issues: list[dict[str, Any]] = []

        def add(status: str, description: str, issue_type: str = "RECOVERY_PLAN") -> None:
            issues.append(
                {
                    "entity": plan.id,
                    "entity_name": plan.name,
                    "description": description,
                    "timestamp": now_ms,
                    "status": status,
                    "issue_type": issue_type,
                }
            )

        if plan.last_error and plan.status in (
            "INCOMPLETE_REPROTECT",
            "INCOMPLETE_RECOVERY",
            "CLEANUP_INCOMPLETE",
            "TEST_INTERRUPTED",
        ):
            add("ERROR", plan.last_error)
        if self.faults.config.remote_site_down:
            add("ERROR", "The remote site is not reachable", "SRM")
        for extra in plan.extra_issues:
            add(extra.get("status", "WARNING"), extra.get("description", "Simulated issue"))
        return issues

    def task_view(self, task: SimTask) -> dict[str, Any]:
        """Task."""
        now = self.clock.monotonic()
        status = task.status(now)
        plan = self.plans[task.plan_id]
        started = now >= task.created + task.queue_s
        view: dict[str, Any] = {
            "id": task.id,
            "description": task.description,
            "description_id": f"com.vmware.vcDr.{task.kind}",
            "entity": plan.id,
            "entity_name": plan.name,
            "status": status,
            "progress": task.progress(now),
            "queued_time": task.created_ms,
            "start_time": task.created_ms + int(task.queue_s * 1000) if started else None,
            "complete_time": (
                task.created_ms + int((task.end - task.created) * 1000)
                if status in ("SUCCESS", "ERROR", "CANCELLED")
                else None
            ),
        }
        if status == "ERROR":
            view["error"] = {"message": task.error, "details": f"{task.kind} failed"}
        if status == "SUCCESS":
            view["result"] = task.result
        return view

    def pairing_view(self) -> dict[str, Any]:
        """Pairing."""
        a, b = self.scenario.sites
        remote_status = "ERROR" if self.faults.config.remote_site_down else "OK"

        def server(guid: str, name: str, status: str, vc: bool) -> dict[str, Any]:
            host = f"{'vc' if vc else 'srm'}.{name}.example"
            return {
                "id": guid,
                "name": host,
                "url": f"https://{host}",
                "server_status": status,
                "version": "8.8.0" if vc else "9.0.0",
            }

        return {
            "pairing_id": self.pairing_id,
            "local_vc_server": server(self.vc_guids[0], a, "OK", True),
            "remote_vc_server": server(self.vc_guids[1], b, remote_status, True),
            "local_srm_server": server(self.local_srm_guid, a, "OK", False),
            "remote_srm_server": server(self.remote_srm_guid, b, remote_status, False),
        }

    def pairing_issues(self) -> list[dict[str, Any]]:
        """IssueInfo list for the pairing."""
        if not self.faults.config.remote_site_down:
            return []
        return [
            {
                "entity": self.pairing_id,
                "entity_name": self.scenario.sites[1],
                "description": "The remote site is not reachable",
                "timestamp": self.clock.time_ms(),
                "status": "ERROR",
                "issue_type": "SRM",
            }
        ]

    # ----- admin ---------------------------------------------------------------------------

    def set_faults(self, patch: dict[str, Any]) -> FaultConfig:
        """Replace some fault fields (validated)."""
        self.faults.config = self.faults.config.merged(patch)
        return self.faults.config

    def record(self, entry: JournalEntry) -> None:
        """Append to the journal."""
        self.journal.append(entry)
        # Only accepted POSTs count: a refused one (401, 4xx, injected 5xx) started nothing.
        accepted = 200 <= entry.status < 300
        if (
            accepted
            and entry.method == "POST"
            and entry.path.endswith("/actions/reprotect")
            and entry.plan_id
        ):
            self.reprotect_posts[entry.plan_id] = self.reprotect_posts.get(entry.plan_id, 0) + 1

    def count_request(self, method: str, route: str) -> None:
        """Count one API request, whatever its answer, under ``METHOD route``."""
        key = f"{method} {route}"
        self.requests[key] = self.requests.get(key, 0) + 1

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        """Count one API request as open while it is answered; keep the peak."""
        self.requests_open += 1
        self.max_concurrent_requests = max(self.max_concurrent_requests, self.requests_open)
        try:
            yield
        finally:
            self.requests_open -= 1

    def count_fault(self, kind: str) -> None:
        """Count one injected fault: a status code, or ``reset``."""
        self.faults_injected[kind] = self.faults_injected.get(kind, 0) + 1

    def concurrency(self) -> dict[str, Any]:
        """Evidence for bulk tests: peak operations in flight, and any group-sharing overlap."""
        now = self.clock.monotonic()
        ops = [t for t in self.tasks.values() if t.kind != "history" and not t.rejected]
        events = sorted(
            [(t.created, 1) for t in ops] + [(t.end, -1) for t in ops],
            key=lambda e: (e[0], e[1]),
        )
        peak = current = 0
        for _, delta in events:
            current += delta
            peak = max(peak, current)
        overlaps = []
        for i, first in enumerate(ops):
            for second in ops[i + 1 :]:
                shared = set(first.groups) & set(second.groups)
                if (
                    first.plan_id != second.plan_id
                    and shared
                    and first.created < second.end
                    and second.created < first.end
                ):
                    overlaps.append({"tasks": [first.id, second.id], "groups": sorted(shared)})
        running = sum(1 for t in ops if not t.settled and t.end > now)
        return {"max_in_flight": peak, "in_flight": running, "group_overlaps": overlaps}

    def snapshot(self) -> dict[str, Any]:
        """Compact view for GET /_sim/state."""
        self.tick()
        return {
            "pairing_id": self.pairing_id,
            "plans": [
                {
                    "id": p.id,
                    "name": p.name,
                    "status": self.plan_status(p),
                    "protected_site_name": self._sites(p.forward)["protected_site_name"],
                    "recovery_site_name": self._sites(p.forward)["recovery_site_name"],
                    "groups": list(p.group_ids),
                    "active_task": p.active_task,
                }
                for p in self.plans.values()
            ],
            "tasks": [
                {
                    "id": t.id,
                    "kind": t.kind,
                    "plan_id": t.plan_id,
                    "status": t.status(self.clock.monotonic()),
                    "created_ms": t.created_ms,
                    "end_ms": t.created_ms + int((t.end - t.created) * 1000),
                }
                for t in self.tasks.values()
            ],
            "sessions": len(self.sessions),
            "reprotect_posts": dict(self.reprotect_posts),
            "requests": dict(self.requests),
            "max_concurrent_requests": self.max_concurrent_requests,
            "faults_injected": dict(self.faults_injected),
            "conflicts_rejected": self.conflicts_rejected,
            "faults": self.faults.config.model_dump(),
            **self.concurrency(),
        }
