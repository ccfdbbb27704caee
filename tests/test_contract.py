"""The contract middleware really catches responses and requests that break the spec."""

from __future__ import annotations

import base64

import aiohttp

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
    handle = await start_sim(plans=1)
    try:
        async with aiohttp.ClientSession() as http:
            auth = {"Authorization": "Basic " + base64.b64encode(b"x:y").decode()}
            async with http.post(handle.base_url + "/session", headers=auth) as r:
                assert r.status == 401
        assert handle.contract.violations == []
        checker = handle.contract
        from aiohttp import web
        from aiohttp.test_utils import make_mocked_request

        request = make_mocked_request(
            "GET", "/api/rest/srm/v2/pairings", headers={"x-dr-session": "s"}
        )
        errors = checker.check_response(request, None, web.Response(status=401, text="nope"))
        assert any("no body" in e for e in errors)
    finally:
        await stop_sim(handle)


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
