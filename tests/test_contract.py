"""The contract middleware really catches responses and requests that break the spec."""

from __future__ import annotations

import base64

import aiohttp
from aiohttp import web

from srmflow.simulator.app import API_PREFIX
from tests.contract import ContractChecker
from tests.simfixture import start_sim, stop_sim


async def test_middleware_catches_bad_response_and_request() -> None:
    handle = await start_sim(plans=1)
    try:
        plan = next(iter(handle.state.plans.values()))
        plan.status = "NEEDS_REPROTECT"  # not in the spec's enum
        auth = "Basic " + base64.b64encode(f"{handle.username}:{handle.password}".encode()).decode()
        async with handle.http.post(
            handle.base_url + "/session", headers={"Authorization": auth}
        ) as r:
            session_id = (await r.json())["session_id"]
        headers = {"x-dr-session": session_id}
        url = f"{handle.base_url}/pairings/{handle.pairing_id}/recovery-management/plans"
        async with handle.http.get(url, headers=headers) as r:
            assert r.status == 200
        async with handle.http.get(url) as r:  # no session header: a bad request
            assert r.status == 401
        violations = handle.contract.violations
        kinds = sorted(v["kind"] for v in violations)
        assert kinds == ["request", "response"], handle.contract.report()
        assert "NEEDS_REPROTECT" in handle.contract.report()
        assert handle.contract.checked == 3
    finally:
        await stop_sim(handle)


async def test_401_with_body_is_a_violation() -> None:
    # A real server whose only route breaks the spec: a 401 must carry no body.
    checker = ContractChecker(enabled=True)

    async def leaky(request: web.Request) -> web.Response:
        return web.Response(status=401, text="nope")

    app = web.Application(middlewares=[checker.middleware])
    app.router.add_get(API_PREFIX + "/pairings", leaky)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}{API_PREFIX}/pairings"
            async with http.get(url, headers={"x-dr-session": "s"}) as r:
                assert r.status == 401
    finally:
        await runner.cleanup()
    assert any("no body" in str(v) for v in checker.violations), checker.report()


async def test_validation_can_be_switched_off() -> None:
    handle = await start_sim(plans=1, validate=False)
    try:
        next(iter(handle.state.plans.values())).status = "NEEDS_REPROTECT"
        async with handle.http.get(handle.base_url + "/pairings") as r:
            assert r.status == 401
        assert handle.contract.checked == 0
        assert handle.contract.violations == []
    finally:
        await stop_sim(handle)
