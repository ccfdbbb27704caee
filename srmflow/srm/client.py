"""Async client of the SRM REST API v2 (``/api/rest/srm/v2``).

One private ``_request()`` builds the URL, sends, maps errors and handles session expiry; the
public methods are a few lines each. The client never retries on its own (Temporal owns
retries) with one exception: a 401 means the request was not executed, so after one
single-flight re-login the request is sent once more.
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import json as jsonlib
import ssl
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar
from urllib.parse import quote

import aiohttp
import structlog
from pydantic import BaseModel
from yarl import URL

from srmflow.srm.errors import (
    SrmAuthError,
    SrmConnectionError,
    SrmError,
    SrmHttpError,
    SrmNotFoundError,
    SrmTaskError,
    SrmTimeoutError,
)
from srmflow.srm.gate import RequestGate
from srmflow.srm.models import (
    GroupVm,
    HistoryReport,
    Issue,
    Page,
    Pairing,
    PlanVm,
    ProtectionGroup,
    RecoveryPlan,
    Task,
    TaskStatus,
)

if TYPE_CHECKING:
    from srmflow.settings import SrmSiteSettings

log = structlog.get_logger(__name__)

M = TypeVar("M", bound=BaseModel)
Auth = Literal["session", "remote"]
Query = list[tuple[str, str]]

SESSION_HEADER = "x-dr-session"
PAGE_SIZE = 100
# Paging guard: a server that ignores offset must not make list_plans loop forever.
MAX_PAGES = 10_000
# History-report generation is a read; wait for it briefly, never like an action task.
HISTORY_POLL_DELAYS = (0.1, 0.2, 0.3, 0.5, 0.5, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0)
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class RequestObserver(Protocol):
    """Told about every HTTP exchange with SRM (srmflow.metrics.SrmflowMetrics.srm_request)."""

    def __call__(
        self, *, site: str, method: str, path: str, status: int | str, seconds: float
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


def _segment(value: str) -> str:
    """Percent-encode one path segment: SRM ids contain ':' and may contain '/'."""
    return quote(str(value), safe="")


def _plan_path(pairing_id: str, plan_id: str, *rest: str) -> str:
    base = f"/pairings/{_segment(pairing_id)}/recovery-management/plans/{_segment(plan_id)}"
    return base + "".join(f"/{part}" for part in rest)


def _list_query(
    *,
    limit: int | None = None,
    offset: int | None = None,
    filter_property: str | None = None,
    filters: Iterable[str] = (),
    sort_by: str | None = None,
    order_by: str | None = None,
) -> Query:
    query: Query = []
    if filter_property is not None:
        query.append(("filter_property", filter_property))
        query.extend(("filter", str(value)) for value in filters)
    if sort_by is not None:
        query.append(("sort_by", sort_by))
        if order_by is not None:
            query.append(("order_by", order_by))
    if limit is not None:
        query.append(("limit", str(limit)))
    if offset is not None:
        query.append(("offset", str(offset)))
    return query


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _ssl_setting(site: SrmSiteSettings) -> ssl.SSLContext | bool:
    if not site.verify_tls:
        log.warning("srm_tls_verification_disabled", site=site.name, url=site.url)
        return False
    if site.ca_bundle is not None:
        return ssl.create_default_context(cafile=str(site.ca_bundle))
    return ssl.create_default_context()


def _unwrap_list(data: Any) -> tuple[list[Any], dict[str, Any]]:
    """Split ``{"list": [...], "_meta": {...}}``; tolerate a bare list."""
    if isinstance(data, list):
        return data, {}
    if isinstance(data, dict):
        items = data.get("list") or []
        meta = data.get("_meta") or {}
        return list(items), meta if isinstance(meta, dict) else {}
    return [], {}


def _entity(model: type[M], data: Any) -> M:
    """Parse a single-entity body, dropping its ``_meta`` envelope."""
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k != "_meta"}
    return model.model_validate(data)


def _history_items(result: Any) -> list[Any]:
    """Reports from a history task's ``result`` (the spec only says ``object``)."""
    if isinstance(result, list):
        return result
    if isinstance(result, dict):
        if isinstance(result.get("list"), list):
            return list(result["list"])
        for value in result.values():
            if isinstance(value, list):
                return list(value)
        if "run_key" in result or "operation_type" in result:
            return [result]
    return []


class SrmClient:
    """Client of one SRM site's REST API; use as ``async with SrmClient(site) as srm``."""

    def __init__(
        self,
        site: SrmSiteSettings,
        session: aiohttp.ClientSession | None = None,
        *,
        observer: RequestObserver | None = None,
        gate: RequestGate | None = None,
    ) -> None:
        self._site = site
        self._observer = observer
        self._base = site.url.rstrip("/")
        self._session = session
        self._owns_session = session is None
        self._ssl = _ssl_setting(site)
        self._timeout = aiohttp.ClientTimeout(
            total=site.request_timeout, connect=site.connect_timeout
        )
        # Open requests; a worker resizes it to its leased share of the site's max_requests.
        self._gate = gate or RequestGate(site.max_in_flight)
        self._login_lock = asyncio.Lock()
        self._session_id: str | None = None
        # Pairings with an established remote session, redone after every re-login.
        self._remote_sessions: set[str] = set()

    @property
    def site_name(self) -> str:
        """Name of the configured SRM site."""
        return self._site.name

    @property
    def gate(self) -> RequestGate:
        """The limit on this client's open requests."""
        return self._gate

    @property
    def is_logged_in(self) -> bool:
        """Whether the client holds a session (it may have expired server-side)."""
        return self._session_id is not None

    async def __aenter__(self) -> SrmClient:
        """Enter the context; login happens lazily on the first call."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Log out and close what the client created."""
        await self.close()

    async def close(self) -> None:
        """Log out (best effort) and close the HTTP session if this client created it."""
        if self._session_id is not None and self._session is not None:
            try:
                await self.logout()
            except SrmError as exc:
                log.warning("srm_logout_failed", site=self.site_name, error=exc.message)
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # --- sessions -----------------------------------------------------------------------------

    async def login(self) -> None:
        """Open a new SRM session (POST /session with Basic auth)."""
        async with self._login_lock:
            await self._login_locked()

    async def logout(self) -> None:
        """Close the SRM session (DELETE /session); a session already gone is fine."""
        session_id, self._session_id = self._session_id, None
        self._remote_sessions.clear()
        if session_id is None:
            return
        response = await self._send("DELETE", "/session", session_id=session_id)
        if response.status not in (204, 401):
            raise self._http_error("DELETE", "/session", response)

    async def ensure_remote_session(self, pairing_id: str, *, force: bool = False) -> None:
        """Log in to the pairing's remote SRM unless already done in this session."""
        if pairing_id in self._remote_sessions and not force:
            return
        await self._request("POST", self._remote_session_path(pairing_id), auth="remote")
        self._remote_sessions.add(pairing_id)

    # --- pairings -----------------------------------------------------------------------------

    async def list_pairings(self) -> list[Pairing]:
        """All pairings of this SRM."""
        return await self._list_all("/pairings", Pairing)

    async def get_pairing(self, pairing_id: str) -> Pairing:
        """One pairing."""
        data = await self._request("GET", f"/pairings/{_segment(pairing_id)}")
        return _entity(Pairing, data)

    async def list_pairing_issues(self, pairing_id: str) -> list[Issue]:
        """Health issues of a pairing."""
        return await self._list_all(f"/pairings/{_segment(pairing_id)}/issues", Issue)

    # --- recovery plans -----------------------------------------------------------------------

    async def list_plans_page(
        self,
        pairing_id: str,
        *,
        limit: int = PAGE_SIZE,
        offset: int = 0,
        filter_property: str | None = None,
        filters: Sequence[str] = (),
        sort_by: str | None = None,
        order_by: str | None = None,
    ) -> Page[RecoveryPlan]:
        """One page of the pairing's recovery plans."""
        query = _list_query(
            limit=limit,
            offset=offset,
            filter_property=filter_property,
            filters=filters,
            sort_by=sort_by,
            order_by=order_by,
        )
        return await self._page(self._plans_path(pairing_id), RecoveryPlan, query, limit, offset)

    async def list_plans(
        self,
        pairing_id: str,
        *,
        filter_property: str | None = None,
        filters: Sequence[str] = (),
        sort_by: str | None = None,
        order_by: str | None = None,
    ) -> list[RecoveryPlan]:
        """All recovery plans of the pairing, following the pages."""
        query = _list_query(
            filter_property=filter_property, filters=filters, sort_by=sort_by, order_by=order_by
        )
        return await self._list_all(self._plans_path(pairing_id), RecoveryPlan, query)

    async def get_plan(self, pairing_id: str, plan_id: str) -> RecoveryPlan:
        """One recovery plan."""
        return _entity(RecoveryPlan, await self._request("GET", _plan_path(pairing_id, plan_id)))

    async def list_plan_issues(self, pairing_id: str, plan_id: str) -> list[Issue]:
        """Issues of a recovery plan."""
        return await self._list_all(_plan_path(pairing_id, plan_id, "issues"), Issue)

    async def list_plan_groups(self, pairing_id: str, plan_id: str) -> list[ProtectionGroup]:
        """Protection groups of a recovery plan."""
        path = _plan_path(pairing_id, plan_id, "protection-groups")
        return await self._list_all(path, ProtectionGroup)

    async def list_plan_vms(self, pairing_id: str, plan_id: str) -> list[PlanVm]:
        """VMs of a recovery plan."""
        return await self._list_all(_plan_path(pairing_id, plan_id, "vms"), PlanVm)

    async def list_group_vms(self, pairing_id: str, group_id: str) -> list[GroupVm]:
        """VMs of a protection group; empty where SRM answers 204 (not applicable)."""
        path = (
            f"/pairings/{_segment(pairing_id)}/protection-management/groups/"
            f"{_segment(group_id)}/vms"
        )
        return await self._list_all(path, GroupVm)

    # --- plan actions (each returns the SRM task; none is retried) ----------------------------

    async def reprotect(self, pairing_id: str, plan_id: str, *, forced: bool = False) -> Task:
        """Start a reprotect of the plan."""
        return await self._action(pairing_id, plan_id, "reprotect", {"forced": forced})

    async def recover(
        self,
        pairing_id: str,
        plan_id: str,
        *,
        planned_failover: bool = True,
        sync_data: bool = True,
        skip_protection_site_operations: bool = False,
        migrate_eligible_vms: bool = False,
    ) -> Task:
        """Start a recovery (planned migration by default) of the plan."""
        spec = {
            "planned_failover": planned_failover,
            "sync_data": sync_data,
            "skip_protection_site_operations": skip_protection_site_operations,
            "migrate_eligible_vms": migrate_eligible_vms,
        }
        return await self._action(pairing_id, plan_id, "recovery", spec)

    async def test_plan(self, pairing_id: str, plan_id: str, *, sync_data: bool = False) -> Task:
        """Start a test recovery of the plan."""
        return await self._action(pairing_id, plan_id, "test", {"sync_data": sync_data})

    async def cleanup(self, pairing_id: str, plan_id: str, *, forced: bool = False) -> Task:
        """Start the cleanup after a test of the plan."""
        return await self._action(pairing_id, plan_id, "cleanup", {"forced": forced})

    async def cancel(self, pairing_id: str, plan_id: str) -> None:
        """Cancel the operation running on the plan (204)."""
        await self.ensure_remote_session(pairing_id)
        path = _plan_path(pairing_id, plan_id, "actions", "cancel")
        await self._remote_request(pairing_id, "POST", path)

    # --- tasks --------------------------------------------------------------------------------

    async def get_task(self, task_id: str) -> Task:
        """One task (top level ``/tasks/{id}``, not under the pairing)."""
        return _entity(Task, await self._request("GET", f"/tasks/{_segment(task_id)}"))

    async def list_tasks(
        self,
        *,
        filter_property: str | None = None,
        filters: Sequence[str] = (),
        limit: int = PAGE_SIZE,
    ) -> list[Task]:
        """Recent tasks (one page of at most ``limit``)."""
        query = _list_query(limit=limit, filter_property=filter_property, filters=filters)
        items, _ = _unwrap_list(await self._request("GET", "/tasks", query=query))
        return [_entity(Task, item) for item in items]

    async def running_tasks_for(self, entity_id: str) -> list[Task]:
        """Non-terminal tasks whose entity is ``entity_id`` (e.g. a plan id)."""
        query = _list_query(filter_property="entity", filters=[entity_id])
        tasks = await self._list_all("/tasks", Task, query)
        # Filter again locally: a server that ignores the filter must not cause a false adopt.
        return [t for t in tasks if t.entity == entity_id and not t.is_terminal]

    # --- history ------------------------------------------------------------------------------

    async def list_history_reports(self, pairing_id: str, plan_id: str) -> list[HistoryReport]:
        """History reports of the plan (SRM builds them in a short task that is awaited here)."""
        data = await self._request("GET", _plan_path(pairing_id, plan_id, "history-reports"))
        task = _entity(Task, data)
        for delay in HISTORY_POLL_DELAYS:
            if task.is_terminal:
                break
            await asyncio.sleep(delay)
            task = await self.get_task(task.id)
        if task.status != TaskStatus.SUCCESS:
            reason = task.error.message if task.error and task.error.message else task.status
            raise SrmTaskError(
                f"history report task {task.id} did not succeed: {reason}",
                task_id=task.id,
                status=task.status,
            )
        return [_entity(HistoryReport, item) for item in _history_items(task.result)]

    async def get_history_report(
        self, pairing_id: str, plan_id: str, report_id: str
    ) -> HistoryReport:
        """One history report of the plan."""
        path = _plan_path(pairing_id, plan_id, "history-reports", _segment(report_id))
        report = _entity(HistoryReport, await self._request("GET", path))
        if report.id is None:
            report.id = report_id
        return report

    # --- internals ----------------------------------------------------------------------------

    def _plans_path(self, pairing_id: str) -> str:
        return f"/pairings/{_segment(pairing_id)}/recovery-management/plans"

    def _remote_session_path(self, pairing_id: str) -> str:
        return f"/pairings/{_segment(pairing_id)}/remote-session"

    async def _action(
        self, pairing_id: str, plan_id: str, action: str, spec: dict[str, Any]
    ) -> Task:
        # Every plan action needs the remote site's session (spec: not-authenticated -> ERROR).
        await self.ensure_remote_session(pairing_id)
        path = _plan_path(pairing_id, plan_id, "actions", action)
        task = _entity(Task, await self._remote_request(pairing_id, "POST", path, json=spec))
        log.info(
            "srm_action_started",
            site=self.site_name,
            action=action,
            plan_id=plan_id,
            task_id=task.id,
            task_status=task.status,
        )
        return task

    async def _remote_request(
        self, pairing_id: str, method: str, path: str, *, json: Any = None
    ) -> Any:
        try:
            return await self._request(method, path, json=json)
        except SrmHttpError:
            # An expired remote session looks like any other refusal; redo it next attempt.
            self._remote_sessions.discard(pairing_id)
            raise

    async def _page(
        self, path: str, model: type[M], query: Query, limit: int, offset: int
    ) -> Page[M]:
        data = await self._request("GET", path, query=query)
        items, meta = _unwrap_list(data)
        return Page[model](  # type: ignore[valid-type]
            items=[_entity(model, item) for item in items],
            total=meta.get("total"),
            offset=meta.get("offset", offset),
            limit=meta.get("limit", limit),
        )

    async def _list_all(self, path: str, model: type[M], query: Query | None = None) -> list[M]:
        """Follow ``limit``/``offset`` pages until ``_meta.total`` (or a short page)."""
        results: list[M] = []
        offset = 0
        for _ in range(MAX_PAGES):
            paged = [*(query or []), ("limit", str(PAGE_SIZE)), ("offset", str(offset))]
            items, meta = _unwrap_list(await self._request("GET", path, query=paged))
            results.extend(_entity(model, item) for item in items)
            offset += len(items)
            total = meta.get("total")
            if not items or (total is not None and offset >= total):
                break
            if total is None and len(items) < PAGE_SIZE:
                break
        return results

    async def _ensure_login(self) -> str:
        if self._session_id is None:
            await self._relogin(stale=None)
        if self._session_id is None:  # a concurrent logout() won the race
            raise SrmAuthError("not logged in", status=401, method="POST", path="/session")
        return self._session_id

    async def _relogin(self, stale: str | None) -> None:
        """Single-flight: only the first caller holding a stale session logs in again."""
        async with self._login_lock:
            if self._session_id is not None and self._session_id != stale:
                return
            await self._login_locked()

    async def _login_locked(self) -> None:
        site = self._site
        auth = aiohttp.encode_basic_auth(site.username, site.password.get_secret_value())
        response = await self._send("POST", "/session", auth=auth)
        if response.status != 200:
            error = self._http_error("POST", "/session", response)
            if response.status in (400, 401, 403):
                raise SrmAuthError(
                    f"login rejected for user {site.username!r}: {error.message}",
                    status=response.status,
                    method="POST",
                    path="/session",
                    error_code=error.error_code,
                    op_id=error.op_id,
                ) from None
            raise error
        body = self._json(response, "POST", "/session")
        session_id = body.get("session_id") if isinstance(body, dict) else None
        if not session_id:
            raise SrmAuthError(
                "login response carried no session_id", status=200, method="POST", path="/session"
            )
        self._session_id = str(session_id)
        log.info("srm_logged_in", site=self.site_name)
        await self._redo_remote_sessions()

    async def _redo_remote_sessions(self) -> None:
        """Remote sessions hang off the local one; re-establish them after a re-login."""
        for pairing_id in sorted(self._remote_sessions):
            path = self._remote_session_path(pairing_id)
            error: str | None = None
            try:
                response = await self._send(
                    "POST", path, session_id=self._session_id, auth=self._remote_auth()
                )
            except SrmConnectionError as exc:
                error = exc.message
            else:
                if response.status != 204:
                    error = f"HTTP {response.status}"
            if error is not None:
                # Forget it so the next ensure_remote_session() tries again and surfaces errors.
                self._remote_sessions.discard(pairing_id)
                log.warning(
                    "srm_remote_session_lost",
                    site=self.site_name,
                    pairing_id=pairing_id,
                    error=error,
                )

    def _remote_auth(self) -> str:
        site = self._site
        return aiohttp.encode_basic_auth(
            site.remote_username, site.remote_password.get_secret_value()
        )

    async def _request(
        self,
        method: str,
        path: str,
        *,
        query: Query | None = None,
        json: Any = None,
        auth: Auth = "session",
    ) -> Any:
        """Send with the session header, re-login once on 401, map errors, return JSON."""
        basic = self._remote_auth() if auth == "remote" else None
        session_id = await self._ensure_login()
        response = await self._send(
            method, path, query=query, json=json, session_id=session_id, auth=basic
        )
        if response.status == 401:
            log.info("srm_session_expired", site=self.site_name, method=method, path=path)
            await self._relogin(stale=session_id)
            session_id = await self._ensure_login()
            response = await self._send(
                method, path, query=query, json=json, session_id=session_id, auth=basic
            )
            if response.status == 401:
                raise self._http_error(method, path, response)
        if response.status not in (200, 201, 202, 204):
            raise self._http_error(method, path, response)
        if response.status == 204 or not response.body:
            return None
        return self._json(response, method, path)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: Query | None = None,
        json: Any = None,
        session_id: str | None = None,
        auth: str | None = None,
    ) -> _Response:
        """One HTTP exchange, reported to the observer (metrics) with its status or error."""
        started = time.monotonic()
        try:
            response = await self._exchange(
                method, path, query=query, json=json, session_id=session_id, auth=auth
            )
        except SrmConnectionError as exc:
            self._observe(method, path, exc.kind, started)
            raise
        self._observe(method, path, response.status, started)
        return response

    def _observe(self, method: str, path: str, status: int | str, started: float) -> None:
        if self._observer is not None:
            seconds = time.monotonic() - started
            self._observer(
                site=self.site_name, method=method, path=path, status=status, seconds=seconds
            )

    async def _exchange(
        self,
        method: str,
        path: str,
        *,
        query: Query | None = None,
        json: Any = None,
        session_id: str | None = None,
        auth: str | None = None,
    ) -> _Response:
        """One HTTP exchange under the in-flight limit; transport failures become SrmErrors."""
        url = URL(self._base + path, encoded=True)
        if query:
            url = url.with_query(query)
        headers = {"Accept": "application/json"}
        if session_id is not None:
            headers[SESSION_HEADER] = session_id
        if auth is not None:
            headers["Authorization"] = auth
        session = self._http()
        started = time.monotonic()
        try:
            async with (
                self._gate,
                session.request(
                    method,
                    url,
                    json=json,
                    headers=headers,
                    timeout=self._timeout,
                    ssl=self._ssl,
                ) as resp,
            ):
                body = await resp.read()
                response = _Response(resp.status, dict(resp.headers), body)
        except TimeoutError as exc:
            raise SrmTimeoutError(
                f"{method} {path}: no response within {self._site.request_timeout:g}s",
                method=method,
                path=path,
            ) from exc
        except aiohttp.ClientSSLError as exc:
            raise self._conn_error("tls", method, path, exc) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise self._conn_error("reset", method, path, exc) from exc
        except aiohttp.ClientConnectorError as exc:
            raise self._conn_error("connect", method, path, exc) from exc
        except aiohttp.ClientOSError as exc:
            if _is_reset(exc):
                raise self._conn_error("reset", method, path, exc) from exc
            raise self._conn_error("connect", method, path, exc) from exc
        except aiohttp.ClientError as exc:
            raise self._conn_error("connect", method, path, exc) from exc
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        emit = log.info if method in _MUTATING else log.debug
        emit(
            "srm_request",
            site=self.site_name,
            method=method,
            path=path,
            status=response.status,
            duration_ms=duration_ms,
        )
        return response

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._owns_session:
                raise SrmError("the HTTP session given to SrmClient is closed")
            connector = aiohttp.TCPConnector(
                limit=self._site.max_in_flight * 2,
                limit_per_host=self._site.max_in_flight * 2,
                ssl=self._ssl,
            )
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    def _conn_error(
        self, kind: Literal["reset", "connect", "tls"], method: str, path: str, exc: Exception
    ) -> SrmConnectionError:
        detail = self._redact(str(exc)) or type(exc).__name__
        log.warning(
            "srm_connection_failed",
            site=self.site_name,
            method=method,
            path=path,
            kind=kind,
            error=type(exc).__name__,
        )
        return SrmConnectionError(
            f"{method} {path}: {kind} error ({detail})", kind=kind, method=method, path=path
        )

    def _http_error(self, method: str, path: str, response: _Response) -> SrmHttpError:
        body: dict[str, Any] = {}
        try:
            parsed = self._json(response, method, path) if response.body else {}
            body = parsed if isinstance(parsed, dict) else {}
        except SrmError:
            body = {}
        status = response.status
        message = self._redact(str(body.get("message") or "")) or _reason(status)
        cls: type[SrmHttpError] = SrmHttpError
        if status == 401:
            cls = SrmAuthError
            message = f"{message} (after one re-login)" if path != "/session" else message
        elif status == 404:
            cls = SrmNotFoundError
        error = cls(
            message,
            status=status,
            method=method,
            path=path,
            error_code=_opt_str(body.get("error_code")),
            op_id=_opt_str(body.get("op_id")),
            retry_after=parse_retry_after(_header(response.headers, "Retry-After")),
        )
        log.warning(
            "srm_http_error",
            site=self.site_name,
            method=method,
            path=path,
            status=status,
            error_code=error.error_code,
            op_id=error.op_id,
            retry_after=error.retry_after,
        )
        return error

    def _json(self, response: _Response, method: str, path: str) -> Any:
        try:
            return jsonlib.loads(response.body)
        except ValueError as exc:
            raise SrmHttpError(
                "response body is not JSON",
                status=response.status,
                method=method,
                path=path,
            ) from exc

    def _redact(self, text: str) -> str:
        """Remove this site's secrets from server-provided text before it reaches errors."""
        secrets = [
            self._site.password.get_secret_value(),
            self._site.remote_password.get_secret_value(),
            self._session_id or "",
        ]
        for secret in secrets:
            if secret:
                text = text.replace(secret, "[REDACTED]")
        return text


def _is_reset(exc: OSError) -> bool:
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return True
    return exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"
