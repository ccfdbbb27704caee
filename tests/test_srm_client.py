"""SrmClient against the real simulator over real HTTP (no aiohttp mocking)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from srmflow.settings import SrmSiteSettings
from srmflow.srm import (
    PlanStatus,
    SrmAuthError,
    SrmClient,
    SrmConnectionError,
    SrmError,
    SrmHttpError,
    SrmNotFoundError,
    SrmTimeoutError,
    Task,
    TaskStatus,
)

FAST = (0.05, 0.15)


def site_for(sim: Any, **overrides: Any) -> SrmSiteSettings:
    """Settings pointing at a simulator handle."""
    values: dict[str, Any] = {
        "name": "sim",
        "url": sim.base_url,
        "username": sim.username,
        "password": SecretStr(sim.password),
        "remote_username": sim.remote_username,
        "remote_password": SecretStr(sim.remote_password),
        "request_timeout": 10.0,
        "connect_timeout": 5.0,
    }
    values.update(overrides)
    return SrmSiteSettings(**values)


async def eventually(
    probe: Callable[[], Awaitable[Any]], *, within: float = 20.0, interval: float = 0.05
) -> Any:
    """Poll ``probe`` until it returns something truthy (a condition wait, not a fixed sleep)."""
    deadline = time.monotonic() + within
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(interval)


async def wait_task(srm: SrmClient, task: Task) -> Task:
    """Poll a task until it is terminal."""

    async def probe() -> Task | None:
        current = await srm.get_task(task.id)
        return current if current.is_terminal else None

    return await eventually(probe)


async def mutations(sim: Any, method: str, path_part: str) -> list[dict[str, Any]]:
    """Journal entries of ``method`` whose path contains ``path_part``."""
    return [
        e
        for e in await sim.journal()
        if _get(e, "method") == method and path_part in str(_get(e, "path"))
    ]


def _get(entry: Any, key: str) -> Any:
    return entry[key] if isinstance(entry, dict) else getattr(entry, key)


async def set_faults(sim: Any, **faults: Any) -> None:
    """Replace the simulator's fault configuration."""
    await sim.set_faults(**faults)


@pytest.fixture
async def srm(sim: Any) -> AsyncIterator[SrmClient]:
    """A client of the default simulator."""
    async with SrmClient(site_for(sim)) as client:
        yield client


async def _plan_in(srm: SrmClient, sim: Any, status: str) -> str:
    plans = await srm.list_plans(sim.pairing_id, filter_property="status", filters=[status])
    assert plans, f"simulator has no plan in {status}"
    return plans[0].id


# --- sessions -----------------------------------------------------------------------------------


async def test_login_and_logout(sim: Any) -> None:
    before = len(await mutations(sim, "POST", "/session"))
    client = SrmClient(site_for(sim))
    try:
        await client.login()
        assert client.is_logged_in
        assert client.site_name == "sim"
        assert len(await mutations(sim, "POST", "/session")) == before + 1
        await client.logout()
        assert not client.is_logged_in
        assert len(await mutations(sim, "DELETE", "/session")) >= 1
        # The next call logs in again by itself.
        assert await client.list_pairings()
        assert client.is_logged_in
    finally:
        await client.close()
    assert not client.is_logged_in


async def test_login_rejected_is_auth_error_without_password(sim: Any) -> None:
    wrong = "wrong-Pa55word-do-not-print"
    async with SrmClient(site_for(sim, password=SecretStr(wrong))) as client:
        with pytest.raises(SrmAuthError) as info:
            await client.list_pairings()
    assert info.value.method == "POST"
    assert info.value.path == "/session"
    assert wrong not in str(info.value)
    assert wrong not in repr(info.value.args)


async def test_external_session_is_not_closed(sim: Any) -> None:
    async with aiohttp.ClientSession() as http:
        async with SrmClient(site_for(sim), session=http) as client:
            assert await client.list_pairings()
        assert not http.closed


# --- reads --------------------------------------------------------------------------------------


async def test_pairings_and_issues(srm: SrmClient, sim: Any) -> None:
    pairings = await srm.list_pairings()
    assert [p.pairing_id for p in pairings] == [sim.pairing_id]
    pairing = await srm.get_pairing(sim.pairing_id)
    assert pairing.pairing_id == sim.pairing_id
    assert pairing.local_srm_server is not None
    assert pairing.local_srm_server.server_status in ("OK", "WARNING", "ERROR")
    issues = await srm.list_pairing_issues(sim.pairing_id)
    assert isinstance(issues, list)


async def test_paging_over_more_than_100_plans(make_sim: Any) -> None:
    sim = await make_sim(plans=230, task_seconds=FAST)
    async with SrmClient(site_for(sim)) as client:
        plans = await client.list_plans(sim.pairing_id)
        assert len(plans) == 230
        assert len({p.id for p in plans}) == 230
        page = await client.list_plans_page(sim.pairing_id, limit=100, offset=200)
        assert page.total == 230
        assert page.offset == 200
        assert len(page.items) == 30
        first = await client.list_plans_page(sim.pairing_id, limit=10)
        assert len(first.items) == 10
        assert first.total == 230


async def test_filters_and_sorting(make_sim: Any) -> None:
    sim = await make_sim(plans=12, task_seconds=FAST)
    async with SrmClient(site_for(sim)) as client:
        everything = await client.list_plans(sim.pairing_id)
        wanted = [everything[3].name, everything[7].name]
        picked = await client.list_plans(sim.pairing_id, filter_property="name", filters=wanted)
        assert sorted(p.name for p in picked) == sorted(wanted)
        desc = await client.list_plans(sim.pairing_id, sort_by="name", order_by="desc")
        assert [p.name for p in desc] == sorted((p.name for p in everything), reverse=True)
        none = await client.list_plans(
            sim.pairing_id, filter_property="status", filters=["SYNC_CONFLICT"]
        )
        assert none == []


async def test_plan_details(srm: SrmClient, sim: Any) -> None:
    plans = await srm.list_plans(sim.pairing_id)
    plan = await srm.get_plan(sim.pairing_id, plans[0].id)
    assert plan.id == plans[0].id
    assert ":" in plan.id  # survives the percent-encoded round trip
    assert plan.location
    assert isinstance(await srm.list_plan_issues(sim.pairing_id, plan.id), list)
    groups = await srm.list_plan_groups(sim.pairing_id, plan.id)
    assert groups
    vms = await srm.list_plan_vms(sim.pairing_id, plan.id)
    assert vms
    group_vms = await srm.list_group_vms(sim.pairing_id, groups[0].id)
    assert all(vm.name for vm in group_vms)
    for vm in group_vms:
        assert vm.protection_status_details is None or vm.protection_status_details.status


async def test_not_found(srm: SrmClient, sim: Any) -> None:
    bogus = "DrRecoveryRecoveryPlan:no-such:plan with space"
    with pytest.raises(SrmNotFoundError) as info:
        await srm.get_plan(sim.pairing_id, bogus)
    assert info.value.status == 404
    assert info.value.method == "GET"
    assert "%3A" in info.value.path
    assert "%20" in info.value.path
    with pytest.raises(SrmNotFoundError):
        await srm.get_task("no-such-task")


# --- actions and tasks --------------------------------------------------------------------------


async def test_reprotect_and_tasks(make_sim: Any) -> None:
    sim = await make_sim(plans=3, task_seconds=(0.3, 0.5))
    async with SrmClient(site_for(sim)) as client:
        plan_id = await _plan_in(client, sim, PlanStatus.RECOVERY_COMPLETE)
        before = await client.get_plan(sim.pairing_id, plan_id)
        task = await client.reprotect(sim.pairing_id, plan_id)
        assert task.status in (TaskStatus.QUEUED, TaskStatus.RUNNING)
        assert task.entity == plan_id
        assert len(await mutations(sim, "POST", "/remote-session")) == 1

        running = await client.running_tasks_for(plan_id)
        assert task.id in {t.id for t in running} or (await client.get_task(task.id)).is_terminal
        recent = await client.list_tasks()
        assert task.id in {t.id for t in recent}
        filtered = await client.list_tasks(filter_property="entity", filters=[plan_id])
        assert {t.entity for t in filtered} == {plan_id}

        done = await wait_task(client, task)
        assert done.status == TaskStatus.SUCCESS
        after = await client.get_plan(sim.pairing_id, plan_id)
        assert after.status == PlanStatus.READY_STATE
        assert after.protected_site_name == before.recovery_site_name
        assert await client.running_tasks_for(plan_id) == []

        reports = await client.list_history_reports(sim.pairing_id, plan_id)
        assert reports
        newest = max(reports, key=lambda r: r.run_key or 0)
        assert newest.operation_type == "REPROTECT"
        assert newest.report_id is not None
        fetched = await client.get_history_report(sim.pairing_id, plan_id, newest.report_id)
        assert fetched.operation_type == newest.operation_type
        assert fetched.report_id == newest.report_id


async def test_test_cleanup_recover_cancel(make_sim: Any) -> None:
    sim = await make_sim(plans=3, task_seconds=(0.2, 0.3), status="READY_STATE")
    async with SrmClient(site_for(sim)) as client:
        a = (await client.list_plans(sim.pairing_id))[0].id

        tested = await wait_task(client, await client.test_plan(sim.pairing_id, a))
        assert tested.status == TaskStatus.SUCCESS
        assert (await client.get_plan(sim.pairing_id, a)).status == PlanStatus.TEST_COMPLETE
        cleaned = await wait_task(client, await client.cleanup(sim.pairing_id, a))
        assert cleaned.status == TaskStatus.SUCCESS
        assert (await client.get_plan(sim.pairing_id, a)).status == PlanStatus.READY_STATE
        recovered = await wait_task(client, await client.recover(sim.pairing_id, a))
        assert recovered.status == TaskStatus.SUCCESS
        assert (await client.get_plan(sim.pairing_id, a)).status == PlanStatus.RECOVERY_COMPLETE

        # Only one remote login for the whole sequence: it is remembered per pairing.
        assert len(await mutations(sim, "POST", "/remote-session")) == 1

    slow = await make_sim(plans=2, task_seconds=(30.0, 30.0), status="READY_STATE")
    async with SrmClient(site_for(slow)) as client:
        plan_id = (await client.list_plans(slow.pairing_id))[0].id
        task = await client.test_plan(slow.pairing_id, plan_id)
        await client.cancel(slow.pairing_id, plan_id)
        ended = await wait_task(client, task)
        assert ended.status == TaskStatus.CANCELLED


async def test_action_in_wrong_status_is_http_400(make_sim: Any) -> None:
    sim = await make_sim(plans=2, task_seconds=FAST, status="READY_STATE")
    async with SrmClient(site_for(sim)) as client:
        plan_id = (await client.list_plans(sim.pairing_id))[0].id
        with pytest.raises(SrmHttpError) as info:
            await client.reprotect(sim.pairing_id, plan_id)
    assert info.value.status == 400
    assert info.value.error_code
    assert not info.value.retryable
    # A refused action forgets the remote session, so the next attempt re-creates it.
    assert len(await mutations(sim, "POST", "/remote-session")) == 1
    async with SrmClient(site_for(sim)) as client:
        await client.ensure_remote_session(sim.pairing_id)
        with pytest.raises(SrmHttpError):
            await client.reprotect(sim.pairing_id, plan_id)
        with pytest.raises(SrmHttpError):
            await client.reprotect(sim.pairing_id, plan_id)
    assert len(await mutations(sim, "POST", "/remote-session")) == 3


async def test_action_in_wrong_status_as_failed_task(make_sim: Any) -> None:
    sim = await make_sim(
        plans=2, task_seconds=FAST, status="READY_STATE", wrong_status="task_error"
    )
    async with SrmClient(site_for(sim)) as client:
        plan_id = (await client.list_plans(sim.pairing_id))[0].id
        task = await client.reprotect(sim.pairing_id, plan_id)
        ended = await wait_task(client, task)
    assert ended.status == TaskStatus.ERROR
    assert ended.error is not None
    assert ended.error.message


async def test_history_reports_wait_for_their_task(make_sim: Any) -> None:
    sim = await make_sim(plans=1, task_seconds=FAST, history_task_seconds=0.3)
    async with SrmClient(site_for(sim)) as client:
        plan_id = (await client.list_plans(sim.pairing_id))[0].id
        assert await client.list_history_reports(sim.pairing_id, plan_id) == []
        await wait_task(client, await client.reprotect(sim.pairing_id, plan_id))
        reports = await client.list_history_reports(sim.pairing_id, plan_id)
    assert [r.operation_type for r in reports] == ["REPROTECT"]
    assert reports[0].result_state == "SUCCESS"


# --- session expiry -----------------------------------------------------------------------------


async def test_relogin_is_single_flight_under_50_concurrent_calls(make_sim: Any) -> None:
    sim = await make_sim(plans=60, task_seconds=FAST)
    async with SrmClient(site_for(sim, max_in_flight=8)) as client:
        plans = await client.list_plans(sim.pairing_id)
        await client.ensure_remote_session(sim.pairing_id)
        logins = len(await mutations(sim, "POST", "/session"))
        remotes = len(await mutations(sim, "POST", "/remote-session"))

        await sim.admin("POST", "restart")  # forgets every session

        fetched = await asyncio.gather(
            *(client.get_plan(sim.pairing_id, plans[i].id) for i in range(50))
        )
        assert [p.id for p in fetched] == [p.id for p in plans[:50]]
        assert len(await mutations(sim, "POST", "/session")) - logins == 1
        # The remote session was redone once, right after the re-login.
        assert len(await mutations(sim, "POST", "/remote-session")) - remotes == 1


async def test_persistent_401_is_auth_error(srm: SrmClient, sim: Any) -> None:
    await srm.list_pairings()
    logins = len(await mutations(sim, "POST", "/session"))
    await set_faults(sim, method="GET", path_pattern="/pairings$", inject=[401, 401])
    with pytest.raises(SrmAuthError) as info:
        await srm.list_pairings()
    assert info.value.status == 401
    assert len(await mutations(sim, "POST", "/session")) - logins == 1


async def test_session_ttl_expiry_is_transparent(make_sim: Any) -> None:
    sim = await make_sim(plans=3, task_seconds=FAST)
    async with SrmClient(site_for(sim)) as client:
        await client.list_plans(sim.pairing_id)
        logins = len(await mutations(sim, "POST", "/session"))
        await set_faults(sim, session_ttl_s=0.05)

        async def relogged() -> bool:
            await client.list_pairings()
            return len(await mutations(sim, "POST", "/session")) > logins

        await eventually(relogged)


# --- transient failures -------------------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 429])
async def test_busy_is_http_error_with_retry_after(srm: SrmClient, sim: Any, status: int) -> None:
    await srm.list_pairings()
    await set_faults(sim, method="GET", path_pattern="/plans$", inject=[status], retry_after_s=7)
    with pytest.raises(SrmHttpError) as info:
        await srm.list_plans(sim.pairing_id)
    assert info.value.status == status
    assert info.value.retry_after == 7.0
    assert info.value.retryable
    assert info.value.method == "GET"
    # Not retried by the client: the next call goes through untouched.
    assert await srm.list_plans(sim.pairing_id)


async def test_post_503_is_not_retried(make_sim: Any) -> None:
    sim = await make_sim(plans=2, task_seconds=FAST)
    async with SrmClient(site_for(sim)) as client:
        plan_id = await _plan_in(client, sim, PlanStatus.RECOVERY_COMPLETE)
        await client.ensure_remote_session(sim.pairing_id)
        await set_faults(sim, method="POST", path_pattern="/actions/reprotect$", inject=[503])
        with pytest.raises(SrmHttpError) as info:
            await client.reprotect(sim.pairing_id, plan_id)
        assert info.value.status == 503
        assert len(await mutations(sim, "POST", "/actions/reprotect")) == 1
        plan = await client.get_plan(sim.pairing_id, plan_id)
        assert plan.status == PlanStatus.RECOVERY_COMPLETE


async def test_connection_reset_is_connection_error(srm: SrmClient, sim: Any) -> None:
    await srm.list_pairings()
    # Two resets: aiohttp itself re-sends an idempotent request once when a pooled keep-alive
    # connection turns out dead (RFC 9112 9.3.1); the client adds no retry of its own.
    await set_faults(sim, method="GET", path_pattern="/plans$", inject=[0, 0])
    with pytest.raises(SrmConnectionError) as info:
        await srm.list_plans(sim.pairing_id)
    await set_faults(sim, inject=[])
    assert info.value.kind == "reset"
    assert info.value.retryable
    assert await srm.list_plans(sim.pairing_id)


async def test_post_reset_is_not_resent(make_sim: Any) -> None:
    sim = await make_sim(plans=2, task_seconds=FAST)
    async with SrmClient(site_for(sim)) as client:
        plan_id = await _plan_in(client, sim, PlanStatus.RECOVERY_COMPLETE)
        await client.ensure_remote_session(sim.pairing_id)
        await set_faults(sim, method="POST", path_pattern="/actions/reprotect$", inject=[0])
        with pytest.raises(SrmConnectionError) as info:
            await client.reprotect(sim.pairing_id, plan_id)
        assert info.value.kind == "reset"
        assert len(await mutations(sim, "POST", "/actions/reprotect")) == 1


async def test_connection_refused(sim: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    site = site_for(sim, url=f"http://127.0.0.1:{port}/api/rest/srm/v2")
    async with SrmClient(site) as client:
        with pytest.raises(SrmConnectionError) as info:
            await client.list_pairings()
    assert info.value.kind == "connect"


async def test_timeout(make_sim: Any) -> None:
    sim = await make_sim(plans=1, task_seconds=FAST)
    async with SrmClient(site_for(sim, request_timeout=0.3)) as client:
        await client.login()
        await set_faults(sim, latency_ms=[2000, 2000], method="GET")
        with pytest.raises(SrmTimeoutError) as info:
            await client.list_pairings()
        await set_faults(sim)
    assert info.value.kind == "timeout"


# --- TLS ----------------------------------------------------------------------------------------


async def test_tls_verified_by_default(make_sim: Any) -> None:
    sim = await make_sim(plans=1, task_seconds=FAST, tls=True)
    assert sim.base_url.startswith("https://")
    async with SrmClient(site_for(sim)) as client:
        with pytest.raises(SrmConnectionError) as info:
            await client.list_pairings()
    assert info.value.kind == "tls"
    assert not info.value.retryable

    async with SrmClient(site_for(sim, ca_bundle=Path(sim.ca_path))) as client:
        assert await client.list_pairings()

    with capture_logs() as logs:
        client = SrmClient(site_for(sim, verify_tls=False))
    async with client:
        assert await client.list_pairings()
    assert any(e["event"] == "srm_tls_verification_disabled" for e in logs)


# --- secrets ------------------------------------------------------------------------------------


async def test_secrets_never_in_errors_or_logs(make_sim: Any) -> None:
    sim = await make_sim(plans=2, task_seconds=FAST)
    errors: list[SrmError] = []
    with capture_logs() as logs:
        async with SrmClient(site_for(sim)) as client:
            plan_id = await _plan_in(client, sim, PlanStatus.RECOVERY_COMPLETE)
            await client.ensure_remote_session(sim.pairing_id)
            session_ids = {client._session_id}
            await sim.admin("POST", "restart")
            await client.get_plan(sim.pairing_id, plan_id)
            session_ids.add(client._session_id)
            for injected in ([503], [500], [0, 0], [401, 401]):
                await set_faults(sim, path_pattern="/plans", inject=injected)
                try:
                    await client.get_plan(sim.pairing_id, plan_id)
                except SrmError as exc:
                    errors.append(exc)
            await set_faults(sim)
            session_ids.add(client._session_id)
        async with SrmClient(site_for(sim, password=SecretStr("bad-" + sim.password))) as bad:
            try:
                await bad.list_pairings()
            except SrmError as exc:
                errors.append(exc)
    assert len(errors) >= 5
    secrets = {sim.password, sim.remote_password, "bad-" + sim.password}
    secrets |= {s for s in session_ids if s}
    texts = [str(e) for e in errors] + [repr(e.args) for e in errors] + [repr(e) for e in logs]
    assert logs
    for text in texts:
        for secret in secrets:
            assert secret not in text
