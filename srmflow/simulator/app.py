"""aiohttp application: the SRM REST API v2 subset srmflow uses, plus the /_sim admin API."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, cast

import structlog
from aiohttp import web
from pydantic import ValidationError

from srmflow.simulator.state import Action, JournalEntry, ManualClock, SimError, SimState

log = structlog.get_logger(__name__)

API_PREFIX = "/api/rest/srm/v2"
ADMIN_PREFIX = "/_sim"
SESSION_HEADER = "x-dr-session"
STATE_KEY = web.AppKey("srmflow_sim_state", SimState)
# Set on requests answered by deliberate fault injection, so contract checks can exempt them.
FAULT_KEY = web.RequestKey("srmflow_sim_fault", str)
TASK_KEY = web.RequestKey("srmflow_sim_task", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PLAN = API_PREFIX + "/pairings/{pairing_id}/recovery-management/plans/{plan_id}"
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _state(request: web.Request) -> SimState:
    return request.app[STATE_KEY]


def error_response(status: int, code: str | None, message: str) -> web.Response:
    """A spec ResponseError, or an empty body where the spec has none (401, 404)."""
    if code is None:
        return web.Response(status=status)
    body = {"error_code": code, "message": message, "op_id": str(uuid.uuid4())}
    return web.json_response(body, status=status)


def _entity(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response({**data, "_meta": {"errors": []}}, status=status)


def _int_param(request: web.Request, name: str, default: int | None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SimError(400, "INVALID_PARAMETER", f"'{name}' must be an integer") from None
    if value < 0:
        raise SimError(400, "INVALID_PARAMETER", f"'{name}' must not be negative")
    return value


def _listing(request: web.Request, items: Iterable[dict[str, Any]]) -> web.Response:
    """The spec's list envelope, with filter_property/filter, sort_by/order_by, limit/offset."""
    rows = list(items)
    prop = request.query.get("filter_property")
    wanted = request.query.getall("filter", [])
    if prop and wanted:
        rows = [r for r in rows if str(r.get(prop)) in wanted]
    sort_by = request.query.get("sort_by")
    if sort_by:
        order = request.query.get("order_by", "asc").lower()
        if order not in ("asc", "desc"):
            raise SimError(400, "INVALID_PARAMETER", "'order_by' must be 'asc' or 'desc'")
        rows.sort(key=lambda r: (r.get(sort_by) is None, str(r.get(sort_by))))
        if order == "desc":
            rows.reverse()
    limit = cast(int, _int_param(request, "limit", 100))
    offset = cast(int, _int_param(request, "offset", 0))
    page = rows[offset : offset + limit]
    url = request.rel_url
    links: dict[str, Any] = {"self": {"href": str(url)}}
    if offset + limit < len(rows):
        links["next"] = {"href": str(url.update_query(offset=str(offset + limit)))}
    if offset > 0:
        links["previous"] = {"href": str(url.update_query(offset=str(max(0, offset - limit))))}
    meta = {"total": len(rows), "offset": offset, "limit": limit, "errors": [], "links": links}
    return web.json_response({"list": page, "_meta": meta})


def _session(request: web.Request) -> Any:
    return _state(request).session(request.headers.get(SESSION_HEADER))


def _basic(request: web.Request) -> tuple[str, str]:
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        raise SimError(401) from None
    if scheme.lower() != "basic" or not sep:
        raise SimError(401)
    return user, password


async def _json_body(request: web.Request) -> dict[str, Any]:
    # read() rather than can_read_body: an outer middleware may already have consumed (and
    # cached) the payload.
    raw = await request.read()
    try:
        data = json.loads(raw) if raw else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SimError(400, "INVALID_REQUEST_BODY", "Request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise SimError(400, "INVALID_REQUEST_BODY", "A JSON object request body is required")
    return data


# ----- sessions and pairings ---------------------------------------------------------------


async def login(request: web.Request) -> web.Response:
    """POST /session: Basic auth -> {session_id}."""
    user, password = _basic(request)
    session_id = _state(request).login(user, password)
    return web.json_response({"session_id": session_id})


async def get_session(request: web.Request) -> web.Response:
    """GET /session."""
    return web.json_response({"username": _session(request).username})


async def logout(request: web.Request) -> web.Response:
    """DELETE /session."""
    _session(request)
    _state(request).logout(request.headers[SESSION_HEADER])
    return web.Response(status=204)


async def pairings(request: web.Request) -> web.Response:
    """GET /pairings."""
    _session(request)
    return _listing(request, [_state(request).pairing_view()])


async def pairing(request: web.Request) -> web.Response:
    """GET /pairings/{pairing_id}."""
    _session(request)
    state = _state(request)
    state.require_pairing(request.match_info["pairing_id"])
    return _entity(state.pairing_view())


async def pairing_issues(request: web.Request) -> web.Response:
    """GET /pairings/{pairing_id}/issues."""
    _session(request)
    state = _state(request)
    state.require_pairing(request.match_info["pairing_id"])
    return _listing(request, state.pairing_issues())


async def create_remote_session(request: web.Request) -> web.Response:
    """POST /pairings/{pairing_id}/remote-session: Basic auth of the remote user -> 204."""
    sess = _session(request)
    user, password = _basic(request)
    _state(request).remote_login(sess, request.match_info["pairing_id"], user, password)
    return web.Response(status=204)


async def get_remote_session(request: web.Request) -> web.Response:
    """GET /pairings/{pairing_id}/remote-session."""
    sess = _session(request)
    state = _state(request)
    pairing_id = request.match_info["pairing_id"]
    state.require_pairing(pairing_id)
    if pairing_id not in sess.remote:
        raise SimError(404)
    return web.json_response({"username": state.scenario.remote_username})


async def server_info(request: web.Request) -> web.Response:
    """GET /server/info."""
    _session(request)
    state = _state(request)
    site = state.scenario.sites[0]
    return _entity(
        {
            "id": state.local_srm_guid,
            "name": f"srm.{site}.example",
            "url": f"https://srm.{site}.example",
            "server_status": "OK",
            "version": "9.0.0",
            "vc_guid": state.vc_guids[0],
            "vc_name": f"vc.{site}.example",
            "extension_key": "com.vmware.vcDr",
        }
    )


# ----- plans, groups, VMs ------------------------------------------------------------------


def _plan(request: web.Request) -> Any:
    _session(request)
    state = _state(request)
    state.tick()
    return state.require_plan(request.match_info["pairing_id"], request.match_info["plan_id"])


async def list_plans(request: web.Request) -> web.Response:
    """GET .../recovery-management/plans."""
    _session(request)
    state = _state(request)
    state.tick()
    state.require_pairing(request.match_info["pairing_id"])
    return _listing(request, [state.plan_view(p) for p in state.plans.values()])


async def get_plan(request: web.Request) -> web.Response:
    """GET .../plans/{plan_id}."""
    return _entity(_state(request).plan_view(_plan(request)))


async def plan_issues(request: web.Request) -> web.Response:
    """GET .../plans/{plan_id}/issues."""
    return _listing(request, _state(request).plan_issues(_plan(request)))


async def plan_groups(request: web.Request) -> web.Response:
    """GET .../plans/{plan_id}/protection-groups."""
    state = _state(request)
    plan = _plan(request)
    return _listing(request, [state.group_view(state.groups[g]) for g in plan.group_ids])


async def plan_vms(request: web.Request) -> web.Response:
    """GET .../plans/{plan_id}/vms."""
    return _listing(request, _state(request).plan_vm_views(_plan(request)))


async def group_vms(request: web.Request) -> web.Response:
    """GET /pairings/{pairing_id}/protection-management/groups/{group_id}/vms."""
    _session(request)
    state = _state(request)
    state.tick()
    state.require_pairing(request.match_info["pairing_id"])
    group = state.groups.get(request.match_info["group_id"])
    if group is None:
        raise SimError(404)
    return _listing(request, [state.group_vm_view(group, vm) for vm in group.vms])


# ----- actions and tasks -------------------------------------------------------------------


def _action(action: Action) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        sess = _session(request)
        body = await _json_body(request)
        forced = body.get("forced", False)
        if not isinstance(forced, bool):
            raise SimError(400, "INVALID_REQUEST_BODY", "'forced' must be a boolean")
        state = _state(request)
        task_id = state.start(
            request.match_info["pairing_id"],
            request.match_info["plan_id"],
            action,
            sess,
            forced=forced,
        )
        request[TASK_KEY] = task_id
        return _entity(state.task_view(state.tasks[task_id]), status=202)

    handler.__doc__ = f"POST .../plans/{{plan_id}}/actions/{action}: 202 + Task."
    return handler


async def cancel(request: web.Request) -> web.Response:
    """POST .../plans/{plan_id}/actions/cancel: 204."""
    sess = _session(request)
    state = _state(request)
    pairing_id, plan_id = request.match_info["pairing_id"], request.match_info["plan_id"]
    state.cancel(pairing_id, plan_id, sess)
    request[TASK_KEY] = state.plans[plan_id].active_task or ""
    return web.Response(status=204)


async def list_tasks(request: web.Request) -> web.Response:
    """GET /tasks: recent tasks, newest first."""
    _session(request)
    state = _state(request)
    state.tick()
    return _listing(request, [state.task_view(t) for t in reversed(state.tasks.values())])


async def get_task(request: web.Request) -> web.Response:
    """GET /tasks/{taskId}."""
    _session(request)
    state = _state(request)
    state.tick()
    task = state.tasks.get(request.match_info["task_id"])
    if task is None:
        raise SimError(404)
    return _entity(state.task_view(task))


async def history_reports(request: web.Request) -> web.Response:
    """GET .../plans/{plan_id}/history-reports: 202 + Task whose result lists the reports."""
    sess = _session(request)
    state = _state(request)
    since = _int_param(request, "start_date", None)
    until = _int_param(request, "end_date", None)
    task_id = state.history_task(
        request.match_info["pairing_id"], request.match_info["plan_id"], sess, since, until
    )
    state.tick()
    return _entity(state.task_view(state.tasks[task_id]), status=202)


async def history_report(request: web.Request) -> web.Response:
    """GET .../plans/{plan_id}/history-reports/{report_id} (the report's run_key)."""
    state = _state(request)
    plan = _plan(request)
    key = request.match_info["report_id"]
    report = next((r for r in state.history[plan.id] if str(r["run_key"]) == key), None)
    if report is None:
        raise SimError(404)
    return _entity(report)


# ----- admin -------------------------------------------------------------------------------


async def admin_state(request: web.Request) -> web.Response:
    """GET /_sim/state."""
    return web.json_response(_state(request).snapshot())


async def admin_journal(request: web.Request) -> web.Response:
    """GET /_sim/journal."""
    return web.json_response({"list": [e.as_dict() for e in _state(request).journal]})


async def admin_reset_journal(request: web.Request) -> web.Response:
    """POST /_sim/reset-journal."""
    state = _state(request)
    state.journal.clear()
    state.reprotect_posts.clear()
    state.requests.clear()
    state.faults_injected.clear()
    return web.Response(status=204)


async def admin_get_faults(request: web.Request) -> web.Response:
    """GET /_sim/faults."""
    return web.json_response(_state(request).faults.config.model_dump())


async def admin_put_faults(request: web.Request) -> web.Response:
    """PUT /_sim/faults: replace the given fields; `{"reset": true}` restores defaults first."""
    body = await _json_body(request)
    state = _state(request)
    try:
        if body.pop("reset", False):
            state.faults.config = state.scenario.faults.model_copy(deep=True)
        config = state.set_faults(body)
    except ValidationError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(config.model_dump())


async def admin_restart(request: web.Request) -> web.Response:
    """POST /_sim/restart: drop every session (optionally interrupt running operations)."""
    body = await _json_body(request) if await request.read() else {}
    _state(request).restart(interrupt_tasks=bool(body.get("interrupt_tasks", False)))
    return web.Response(status=204)


async def admin_advance(request: web.Request) -> web.Response:
    """POST /_sim/clock/advance {"seconds": n}: only with a manual clock."""
    state = _state(request)
    if not isinstance(state.clock, ManualClock):
        return web.json_response({"error": "the simulator runs on the real clock"}, status=409)
    body = await _json_body(request)
    state.clock.advance(float(body.get("seconds", 0)))
    state.tick()
    return web.Response(status=204)


# ----- middlewares -------------------------------------------------------------------------


@web.middleware
async def journal_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every API request by route and while open; record mutating ones with their status."""
    if not request.path.startswith(API_PREFIX):
        return await handler(request)
    state = _state(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    state.count_request(request.method, route.removeprefix(API_PREFIX))
    if request.method not in MUTATING:
        with state.answering():
            return await handler(request)
    status = 0
    try:
        with state.answering():
            response = await handler(request)
        status = 0 if request.get(FAULT_KEY) == "reset" else response.status
        return response
    finally:
        state.record(
            JournalEntry(
                time=state.clock.time_ms(),
                method=request.method,
                path=request.path,
                status=status,
                plan_id=request.match_info.get("plan_id"),
                task_id=request.get(TASK_KEY) or None,
                fault=request.get(FAULT_KEY),
            )
        )


@web.middleware
async def fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Latency, 5xx, 429 and dropped connections, as the fault config says."""
    if not request.path.startswith(API_PREFIX):
        return await handler(request)
    state = _state(request)
    injection = state.faults.decide(request.method, request.path)
    if injection.delay_s:
        await asyncio.sleep(injection.delay_s)
    if injection.status is None:
        return await handler(request)
    request[FAULT_KEY] = "reset" if injection.status == 0 else str(injection.status)
    state.count_fault(request[FAULT_KEY])
    log.info("sim_fault", method=request.method, path=request.path, fault=request[FAULT_KEY])
    if injection.status == 0:
        if request.transport is not None:
            request.transport.abort()
        # Nothing reaches the client: the transport is gone before aiohttp writes this.
        return web.Response(status=599)
    retry = {"Retry-After": str(state.faults.config.retry_after_s)}
    if injection.status == 429:
        return web.Response(status=429, headers=retry)
    response = error_response(
        injection.status, "SIMULATED_FAULT", f"Simulated HTTP {injection.status}"
    )
    if injection.status == 503:
        response.headers.update(retry)
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn SimError into spec-shaped answers; unknown API routes get an empty 404."""
    try:
        return await handler(request)
    except SimError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except web.HTTPNotFound:
        if request.path.startswith(API_PREFIX):
            return web.Response(status=404)
        raise


def create_app(state: SimState, *, extra_middlewares: Sequence[Any] = ()) -> web.Application:
    """Build the simulator app; `extra_middlewares` run outermost (e.g. contract checks)."""
    app = web.Application(
        middlewares=[*extra_middlewares, journal_middleware, fault_middleware, error_middleware]
    )
    app[STATE_KEY] = state
    api = API_PREFIX
    r = app.router
    r.add_post(api + "/session", login)
    r.add_get(api + "/session", get_session)
    r.add_delete(api + "/session", logout)
    r.add_get(api + "/server/info", server_info)
    r.add_get(api + "/pairings", pairings)
    r.add_get(api + "/pairings/{pairing_id}", pairing)
    r.add_get(api + "/pairings/{pairing_id}/issues", pairing_issues)
    r.add_post(api + "/pairings/{pairing_id}/remote-session", create_remote_session)
    r.add_get(api + "/pairings/{pairing_id}/remote-session", get_remote_session)
    r.add_get(api + "/pairings/{pairing_id}/recovery-management/plans", list_plans)
    r.add_get(PLAN, get_plan)
    r.add_get(PLAN + "/issues", plan_issues)
    r.add_get(PLAN + "/protection-groups", plan_groups)
    r.add_get(PLAN + "/vms", plan_vms)
    for action in ("reprotect", "recovery", "test", "cleanup"):
        r.add_post(PLAN + f"/actions/{action}", _action(cast(Action, action)))
    r.add_post(PLAN + "/actions/cancel", cancel)
    r.add_get(PLAN + "/history-reports", history_reports)
    r.add_get(PLAN + "/history-reports/{report_id}", history_report)
    r.add_get(api + "/pairings/{pairing_id}/protection-management/groups/{group_id}/vms", group_vms)
    r.add_get(api + "/tasks", list_tasks)
    r.add_get(api + "/tasks/{task_id}", get_task)
    r.add_get(ADMIN_PREFIX + "/state", admin_state)
    r.add_get(ADMIN_PREFIX + "/journal", admin_journal)
    r.add_post(ADMIN_PREFIX + "/reset-journal", admin_reset_journal)
    r.add_get(ADMIN_PREFIX + "/faults", admin_get_faults)
    r.add_put(ADMIN_PREFIX + "/faults", admin_put_faults)
    r.add_post(ADMIN_PREFIX + "/restart", admin_restart)
    r.add_post(ADMIN_PREFIX + "/clock/advance", admin_advance)
    return app
