"""The SRM simulator over real HTTP, with every response checked against the vendor spec."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from srmflow.simulator.state import TRANSITIONS, ManualClock
from tests.simfixture import MakeSim, SimHandle


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Poll `check` until it is true or the deadline passes."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.02)


class Api:
    """A deliberately tiny raw client, independent of srmflow.srm."""

    def __init__(self, sim: SimHandle) -> None:
        self.sim = sim
        self.session_id: str | None = None

    @staticmethod
    def basic(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        params: Any = None,
    ) -> tuple[int, Any, Any]:
        hdrs = {"x-dr-session": self.session_id} if self.session_id else {}
        hdrs.update(headers or {})
        async with self.sim.http.request(
            method,
            self.sim.base_url + path,
            json=json,
            headers=hdrs,
            params=params,
            ssl=self.sim.ssl_context() or True,
        ) as resp:
            raw = await resp.read()
            body = await resp.json() if raw else None
            return resp.status, body, resp.headers

    async def login(self, remote: bool = True) -> None:
        status, body, _ = await self.call(
            "POST",
            "/session",
            headers={"Authorization": self.basic(self.sim.username, self.sim.password)},
        )
        assert status == 200, body
        self.session_id = body["session_id"]
        if remote:
            auth = self.basic(self.sim.remote_username, self.sim.remote_password)
            status, _, _ = await self.call(
                "POST",
                f"/pairings/{self.sim.pairing_id}/remote-session",
                headers={"Authorization": auth},
            )
            assert status == 204

    def plan_path(self, plan_id: str, suffix: str = "") -> str:
        pid = self.sim.pairing_id
        return f"/pairings/{pid}/recovery-management/plans/{quote(plan_id, safe='')}{suffix}"

    async def plan(self, plan_id: str) -> dict[str, Any]:
        status, body, _ = await self.call("GET", self.plan_path(plan_id))
        assert status == 200
        return body

    async def action(self, plan_id: str, action: str, **spec: Any) -> tuple[int, Any]:
        status, body, _ = await self.call(
            "POST", self.plan_path(plan_id, f"/actions/{action}"), json=spec
        )
        return status, body

    async def task(self, task_id: str) -> dict[str, Any]:
        status, body, _ = await self.call("GET", f"/tasks/{quote(task_id, safe='')}")
        assert status == 200
        return body

    async def groups(self, plan_id: str) -> list[dict[str, Any]]:
        return (await self.call("GET", self.plan_path(plan_id, "/protection-groups")))[1]["list"]


def plan_id(sim: SimHandle, name: str) -> str:
    plan = sim.state.find_plan(name)
    assert plan is not None
    return plan.id


async def manual(make_sim: MakeSim, **kwargs: Any) -> tuple[SimHandle, Api, ManualClock]:
    clock = ManualClock()
    sim = await make_sim(clock=clock, task_seconds=(10, 10), **kwargs)
    api = Api(sim)
    await api.login()
    return sim, api, clock


# ----- sessions, pairings, auth ------------------------------------------------------------


async def test_session_lifecycle(make_sim: MakeSim) -> None:
    sim = await make_sim(allow_bad_requests=True)
    api = Api(sim)
    status, body, _ = await api.call(
        "POST", "/session", headers={"Authorization": api.basic("x", "y")}
    )
    assert (status, body) == (401, None)
    await api.login(remote=False)
    assert (await api.call("GET", "/session"))[1] == {"username": sim.username}
    assert (await api.call("DELETE", "/session"))[0] == 204
    assert (await api.call("GET", "/pairings"))[:2] == (401, None)
    api.session_id = None
    assert (await api.call("GET", "/pairings"))[:2] == (401, None)


async def test_pairings_issues_and_server_info(sim: SimHandle) -> None:
    api = Api(sim)
    await api.login(remote=False)
    _, body, _ = await api.call("GET", "/pairings")
    assert body["list"][0]["pairing_id"] == sim.pairing_id
    assert body["_meta"]["total"] == 1
    _, one, _ = await api.call("GET", f"/pairings/{sim.pairing_id}")
    assert one["remote_srm_server"]["server_status"] == "OK"
    assert (await api.call("GET", f"/pairings/{sim.pairing_id}/issues"))[1]["list"] == []
    assert (await api.call("GET", "/server/info"))[1]["server_status"] == "OK"
    assert (await api.call("GET", "/pairings/00000000-0000-4000-8000-000000000000"))[:2] == (
        404,
        None,
    )
    assert (await api.call("GET", f"/pairings/{sim.pairing_id}/remote-session"))[0] == 404


async def test_remote_session_wrong_password_is_401(sim: SimHandle) -> None:
    api = Api(sim)
    await api.login(remote=False)
    status, body, _ = await api.call(
        "POST",
        f"/pairings/{sim.pairing_id}/remote-session",
        headers={"Authorization": api.basic(sim.remote_username, "nope")},
    )
    assert (status, body) == (401, None)


# ----- listing conventions -----------------------------------------------------------------


async def test_paging_filter_sort(make_sim: MakeSim) -> None:
    sim = await make_sim(plans=7, plan_overrides={"plan-002": {"status": "READY_STATE"}})
    api = Api(sim)
    await api.login(remote=False)
    path = f"/pairings/{sim.pairing_id}/recovery-management/plans"
    _, page, _ = await api.call("GET", path, params={"limit": "3", "offset": "3"})
    assert [p["name"] for p in page["list"]] == ["plan-004", "plan-005", "plan-006"]
    meta = page["_meta"]
    assert (meta["total"], meta["offset"], meta["limit"]) == (7, 3, 3)
    assert "offset=6" in meta["links"]["next"]["href"]
    assert "offset=0" in meta["links"]["previous"]["href"]
    _, all_plans, _ = await api.call("GET", path)
    assert all_plans["_meta"]["limit"] == 100
    assert len(all_plans["list"]) == 7
    params = [("filter_property", "name"), ("filter", "plan-001"), ("filter", "plan-007")]
    _, filtered, _ = await api.call("GET", path, params=params)
    assert [p["name"] for p in filtered["list"]] == ["plan-001", "plan-007"]
    params = [("filter_property", "status"), ("filter", "READY_STATE")]
    assert [p["name"] for p in (await api.call("GET", path, params=params))[1]["list"]] == [
        "plan-002"
    ]
    _, ordered, _ = await api.call("GET", path, params={"sort_by": "name", "order_by": "desc"})
    assert ordered["list"][0]["name"] == "plan-007"
    status, err, _ = await api.call("GET", path, params={"limit": "x"})
    assert status == 400
    assert err["error_code"] == "INVALID_PARAMETER"


async def test_url_encoded_and_raw_ids(sim: SimHandle) -> None:
    api = Api(sim)
    await api.login(remote=False)
    pid = plan_id(sim, "plan-001")
    assert ":" in pid
    raw = f"/pairings/{sim.pairing_id}/recovery-management/plans/{pid}"
    assert (await api.call("GET", raw))[1]["id"] == pid
    assert (await api.plan(pid))["id"] == pid
    assert (await api.call("GET", api.plan_path("DrRecoveryRecoveryPlan:nope:x")))[:2] == (
        404,
        None,
    )
    assert (await api.call("GET", "/tasks/" + quote("DrTask:nope:x", safe="")))[:2] == (404, None)


async def test_plan_vms_groups_issues(sim: SimHandle) -> None:
    api = Api(sim)
    await api.login(remote=False)
    pid = plan_id(sim, "plan-001")
    vms = (await api.call("GET", api.plan_path(pid, "/vms")))[1]["list"]
    assert len(vms) == 3
    assert vms[0]["status"] == "RECOVERY_SUCCEEDED"
    (group,) = await api.groups(pid)
    assert (group["status"], group["recovery_status"]) == ("RECOVERED", "RECOVERY_COMPLETE")
    path = (
        f"/pairings/{sim.pairing_id}/protection-management/groups/{quote(group['id'], safe='')}/vms"
    )
    gvms = (await api.call("GET", path))[1]["list"]
    assert [v["id"] for v in gvms] == [v["id"] for v in vms]
    assert (await api.call("GET", api.plan_path(pid, "/issues")))[1]["list"] == []


# ----- tasks and the reprotect happy path --------------------------------------------------


async def test_reprotect_success_swaps_sites_and_heals_groups(make_sim: MakeSim) -> None:
    sim, api, clock = await manual(make_sim)
    pid = plan_id(sim, "plan-001")
    before = await api.plan(pid)
    status, task = await api.action(pid, "reprotect", forced=False)
    assert status == 202
    assert task["status"] == "QUEUED"
    assert task["entity"] == pid
    assert (await api.plan(pid))["status"] == "REPROTECT_IN_PROGRESS"
    clock.advance(5)
    running = await api.task(task["id"])
    assert running["status"] == "RUNNING"
    assert 30 < running["progress"] < 70
    plan = await api.plan(pid)
    assert plan["is_running"]
    assert plan["progress"] == running["progress"]
    assert (await api.groups(pid))[0]["status"] == "REPROTECTING"
    clock.advance(6)
    done = await api.task(task["id"])
    assert done["status"] == "SUCCESS"
    assert done["progress"] == 100
    assert done["complete_time"]
    after = await api.plan(pid)
    assert after["status"] == "READY_STATE"
    assert not after["is_running"]
    assert after["protected_site_name"] == before["recovery_site_name"] == "site-b"
    assert after["protected_vc_guid"] == before["recovery_vc_guid"]
    for group in await api.groups(pid):
        assert (group["status"], group["recovery_status"]) == ("OK", "READY")
        assert group["protected_site_name"] == "site-b"
    vms = (await api.call("GET", api.plan_path(pid, "/vms")))[1]["list"]
    assert {v["status"] for v in vms} == {"READY_TO_RECOVER"}
    group_id = (await api.groups(pid))[0]["id"]
    gpath = (
        f"/pairings/{sim.pairing_id}/protection-management/groups/{quote(group_id, safe='')}/vms"
    )
    gvms = (await api.call("GET", gpath))[1]["list"]
    assert {v["protection_status_details"]["status"] for v in gvms} == {"OK"}
    # history: 202 + task whose result lists the reports
    status, htask, _ = await api.call("GET", api.plan_path(pid, "/history-reports"))
    assert status == 202
    assert htask["status"] == "SUCCESS"
    (report,) = htask["result"]["list"]
    assert (report["operation_type"], report["result_state"]) == ("REPROTECT", "SUCCESS")
    assert report["duration_ms"] == 10_000
    status, one, _ = await api.call(
        "GET", api.plan_path(pid, f"/history-reports/{report['run_key']}")
    )
    assert status == 200
    assert one["run_key"] == report["run_key"]
    assert (await api.call("GET", api.plan_path(pid, "/history-reports/1")))[0] == 404
    # journal and per-plan counters
    journal = await sim.journal()
    entry = next(e for e in journal if e["path"].endswith("/actions/reprotect"))
    assert (entry["method"], entry["status"], entry["plan_id"], entry["task_id"]) == (
        "POST",
        202,
        pid,
        task["id"],
    )
    assert {"time", "method", "path", "plan_id", "status", "task_id"} <= set(entry)
    assert [e["status"] for e in journal[:2]] == [200, 204]  # login, remote-session
    state = await sim.admin("GET", "state")
    assert state["reprotect_posts"] == {pid: 1}
    assert state["max_in_flight"] == 1
    assert state["group_overlaps"] == []


async def test_tasks_list_filter_by_entity_and_status(make_sim: MakeSim) -> None:
    sim, api, clock = await manual(make_sim)
    first, second = plan_id(sim, "plan-001"), plan_id(sim, "plan-002")
    await api.action(first, "reprotect")
    clock.advance(20)
    await api.action(second, "reprotect")
    params = [("filter_property", "entity"), ("filter", first)]
    (task,) = (await api.call("GET", "/tasks", params=params))[1]["list"]
    assert task["entity"] == first
    assert task["status"] == "SUCCESS"
    params = [("filter_property", "status"), ("filter", "QUEUED"), ("filter", "RUNNING")]
    (task,) = (await api.call("GET", "/tasks", params=params))[1]["list"]
    assert task["entity"] == second
    state = await sim.admin("GET", "state")
    assert state["max_in_flight"] == 1
    assert state["in_flight"] == 1


async def test_real_clock_task_completes(sim: SimHandle) -> None:
    api = Api(sim)
    await api.login()
    pid = plan_id(sim, "plan-003")
    _, task = await api.action(pid, "reprotect")

    async def finished() -> bool:
        return (await api.task(task["id"]))["status"] == "SUCCESS"

    await eventually(finished)
    assert (await api.plan(pid))["status"] == "READY_STATE"


# ----- the state machine, row by row -------------------------------------------------------

ROWS = [
    (t.action, source, forced, fail)
    for t in TRANSITIONS.values()
    for source in sorted(t.sources)
    for forced, fail in ((False, False), (False, True), (True, True))
    if not forced or t.forced_failure
]


@pytest.mark.parametrize(("action", "source", "forced", "fail"), ROWS)
async def test_state_machine_row(
    make_sim: MakeSim, action: str, source: str, forced: bool, fail: bool
) -> None:
    message = "Failed to reverse replication for device naa.1: array pair is not reachable"
    overrides = {"plan-001": {"status": source, **({"fail": message} if fail else {})}}
    sim, api, clock = await manual(make_sim, plans=1, plan_overrides=overrides)
    row = TRANSITIONS[action]  # type: ignore[index]
    pid = plan_id(sim, "plan-001")
    before = await api.plan(pid)
    status, task = await api.action(pid, action, forced=forced)
    assert status == 202, task
    assert (await api.plan(pid))["status"] == row.running
    clock.advance(11)
    final = await api.task(task["id"])
    plan = await api.plan(pid)
    swapped = plan["protected_site_name"] != before["protected_site_name"]
    if not fail or forced:
        assert final["status"] == "SUCCESS"
        assert plan["status"] == (row.forced_failure if fail else row.success)
        assert swapped == row.swap_sites
    else:
        assert final["status"] == "ERROR"
        assert final["error"]["message"] == message
        assert plan["status"] == row.failure
        assert not swapped
        issues = (await api.call("GET", api.plan_path(pid, "/issues")))[1]["list"]
        assert [i["status"] for i in issues] == ["ERROR"]
    expected = "SUCCESS" if not fail else ("WARNINGS" if forced else "ERRORS")
    report = sim.state.history[pid][-1]
    assert (report["operation_type"], report["result_state"]) == (row.history_type, expected)


async def test_reprotect_failure_marks_groups_partially_reprotected(make_sim: MakeSim) -> None:
    sim, api, clock = await manual(make_sim, plans=1, task_error_rate=1.0)
    pid = plan_id(sim, "plan-001")
    _, task = await api.action(pid, "reprotect")
    clock.advance(11)
    final = await api.task(task["id"])
    assert final["status"] == "ERROR"
    assert "Failed to reverse replication for device" in final["error"]["message"]
    assert (await api.plan(pid))["status"] == "INCOMPLETE_REPROTECT"
    assert {g["status"] for g in await api.groups(pid)} == {"PARTIALLY_REPROTECTED"}


async def test_incomplete_reprotect_then_rerun(make_sim: MakeSim) -> None:
    sim, api, clock = await manual(
        make_sim, plans=1, groups_per_plan=2, incomplete_plans=["plan-001"]
    )
    pid = plan_id(sim, "plan-001")
    _, task = await api.action(pid, "reprotect")
    clock.advance(11)
    assert (await api.task(task["id"]))["status"] == "ERROR"
    assert (await api.plan(pid))["status"] == "INCOMPLETE_REPROTECT"
    groups = await api.groups(pid)
    assert [g["status"] for g in groups] == ["OK", "PARTIALLY_REPROTECTED"]
    await sim.set_faults(incomplete_plans=[])
    _, task = await api.action(pid, "reprotect")
    clock.advance(11)
    plan = await api.plan(pid)
    assert plan["status"] == "READY_STATE"
    assert plan["protected_site_name"] == "site-b"
    groups = await api.groups(pid)
    assert {(g["status"], g["protected_site_name"]) for g in groups} == {("OK", "site-b")}


async def test_wrong_status_is_400_or_failing_task(make_sim: MakeSim) -> None:
    overrides = {"plan-001": {"status": "READY_STATE"}}
    sim, api, clock = await manual(make_sim, plans=1, plan_overrides=overrides)
    pid = plan_id(sim, "plan-001")
    status, err = await api.action(pid, "reprotect")
    assert status == 400
    assert err["error_code"] == "INVALID_PLAN_STATE"
    assert "READY_STATE" in err["message"]
    await sim.set_faults(wrong_status="task_error")
    status, task = await api.action(pid, "reprotect")
    assert status == 202
    clock.advance(0.1)
    final = await api.task(task["id"])
    assert final["status"] == "ERROR"
    assert "READY_STATE" in final["error"]["message"]
    assert (await api.plan(pid))["status"] == "READY_STATE"
    assert sim.state.history[pid] == []


async def test_action_needs_remote_session(make_sim: MakeSim) -> None:
    sim = await make_sim(plans=1)
    api = Api(sim)
    await api.login(remote=False)
    status, err = await api.action(plan_id(sim, "plan-001"), "reprotect")
    assert status == 400
    assert err["error_code"] == "REMOTE_SESSION_REQUIRED"


async def test_action_without_body_is_400(make_sim: MakeSim) -> None:
    sim = await make_sim(plans=1, allow_bad_requests=True)
    api = Api(sim)
    await api.login()
    status, err, _ = await api.call(
        "POST", api.plan_path(plan_id(sim, "plan-001"), "/actions/reprotect")
    )
    assert status == 400
    assert err["error_code"] == "INVALID_REQUEST_BODY"


async def test_cancel(make_sim: MakeSim) -> None:
    sim, api, clock = await manual(make_sim, plans=1)
    pid = plan_id(sim, "plan-001")
    status, err, _ = await api.call("POST", api.plan_path(pid, "/actions/cancel"))
    assert status == 400
    assert err["error_code"] == "INVALID_PLAN_STATE"
    _, task = await api.action(pid, "reprotect")
    clock.advance(3)
    status, body, _ = await api.call("POST", api.plan_path(pid, "/actions/cancel"))
    assert (status, body) == (204, None)
    assert (await api.plan(pid))["status"] == "CANCEL_IN_PROGRESS"
    assert (await api.task(task["id"]))["status"] == "RUNNING"
    clock.advance(1.0)
    assert (await api.task(task["id"]))["status"] == "CANCELLED"
    assert (await api.plan(pid))["status"] == "INCOMPLETE_REPROTECT"
    assert sim.state.history[pid][-1]["result_state"] == "CANCELLED"


# ----- protection-group conflicts ----------------------------------------------------------


async def test_protection_groups_in_use(make_sim: MakeSim) -> None:
    sim, api, clock = await manual(make_sim, plans=3, shared_pairs=1)
    first, second, third = (plan_id(sim, f"plan-00{i}") for i in (1, 2, 3))
    assert (await api.action(first, "reprotect"))[0] == 202
    assert (await api.plan(second))["status"] == "PROTECTION_GROUPS_IN_USE"
    status, err = await api.action(second, "reprotect")
    assert status == 400
    assert err["error_code"] == "PROTECTION_GROUPS_IN_USE"
    assert "plan-001" in err["message"]
    assert (await api.action(third, "reprotect"))[0] == 202  # no shared group
    await sim.set_faults(groups_in_use="task_error")
    status, task = await api.action(second, "reprotect")
    assert status == 202
    clock.advance(0.1)
    assert (await api.task(task["id"]))["error"]["message"].startswith("Recovery plan 'plan-002'")
    clock.advance(11)
    assert (await api.plan(second))["status"] == "RECOVERY_COMPLETE"
    state = await sim.admin("GET", "state")
    assert state["conflicts_rejected"] == 2
    assert state["group_overlaps"] == []
    assert state["max_in_flight"] == 2


async def test_group_overlap_is_recorded_when_not_enforced(make_sim: MakeSim) -> None:
    sim, api, _ = await manual(make_sim, plans=2, shared_pairs=1, enforce_group_conflicts=False)
    for name in ("plan-001", "plan-002"):
        assert (await api.action(plan_id(sim, name), "reprotect"))[0] == 202
    state = await sim.admin("GET", "state")
    (overlap,) = state["group_overlaps"]
    assert len(overlap["groups"]) == 1


# ----- faults ------------------------------------------------------------------------------


async def test_injected_statuses_and_reset(sim: SimHandle) -> None:
    api = Api(sim)
    await api.login(remote=False)
    await sim.set_faults(inject=[503, 429, 500, 0], retry_after_s=3, path_pattern="/pairings$")
    status, _, headers = await api.call("GET", "/pairings")
    assert status == 503
    assert headers["Retry-After"] == "3"
    status, _, headers = await api.call("GET", "/pairings")
    assert status == 429
    assert headers["Retry-After"] == "3"
    status, err, _ = await api.call("GET", "/pairings")
    assert status == 500
    assert err["error_code"] == "SIMULATED_FAULT"
    assert (await api.call("GET", "/server/info"))[0] == 200  # path does not match
    # A POST: aiohttp transparently retries an idempotent GET on a dropped keep-alive.
    await sim.set_faults(path_pattern="/session$", method="POST")
    with pytest.raises(aiohttp.ClientConnectionError):
        await api.call("POST", "/session", headers={"Authorization": api.basic("a", "b")})
    assert (await api.call("GET", "/pairings"))[0] == 200
    assert (await sim.journal())[-1]["fault"] == "reset"
    assert (await sim.admin("GET", "state"))["faults_injected"] == {
        "503": 1,
        "429": 1,
        "500": 1,
        "reset": 1,
    }


async def test_error_rate_on_path_and_journal_of_faults(sim: SimHandle) -> None:
    api = Api(sim)
    await api.login()
    await sim.set_faults(error_rate=1.0, path_pattern="/actions/reprotect$")
    pid = plan_id(sim, "plan-001")
    assert (await api.action(pid, "reprotect"))[0] == 503
    assert (await api.plan(pid))["status"] == "RECOVERY_COMPLETE"
    last = (await sim.journal())[-1]
    assert (last["status"], last["fault"], last["plan_id"], last["task_id"]) == (
        503,
        "503",
        pid,
        None,
    )
    # Refused by the fault: journalled, but not counted as an accepted reprotect.
    assert sim.state.reprotect_posts == {}
    await sim.admin("POST", "reset-journal")
    assert await sim.journal() == []


async def test_fault_decisions_are_deterministic(make_sim: MakeSim) -> None:
    runs = []
    for _ in range(2):
        sim = await make_sim(seed=11, error_rate=0.5)
        api = Api(sim)
        await api.login(remote=False)
        runs.append([(await api.call("GET", "/server/info"))[0] for _ in range(12)])
    assert runs[0] == runs[1]
    assert {200, 503} <= set(runs[0])


async def test_latency(make_sim: MakeSim) -> None:
    sim = await make_sim(latency_ms=(120, 150))
    api = Api(sim)
    start = time.monotonic()
    await api.login(remote=False)
    assert time.monotonic() - start >= 0.12


async def test_session_expiry(make_sim: MakeSim) -> None:
    _sim, api, clock = await manual(make_sim, session_ttl_s=300)
    clock.advance(299)
    assert (await api.call("GET", "/pairings"))[0] == 200
    clock.advance(2)
    assert (await api.call("GET", "/pairings"))[:2] == (401, None)


async def test_restart_drops_sessions_and_can_interrupt(make_sim: MakeSim) -> None:
    sim, api, clock = await manual(make_sim, plans=2)
    pid = plan_id(sim, "plan-001")
    _, task = await api.action(pid, "reprotect")
    await sim.admin("POST", "restart")
    assert (await api.call("GET", "/pairings"))[:2] == (401, None)
    await api.login()
    assert (await api.plan(pid))["status"] == "REPROTECT_IN_PROGRESS"
    await sim.admin("POST", "restart", {"interrupt_tasks": True})
    await api.login()
    assert (await api.task(task["id"]))["status"] == "ERROR"
    assert (await api.plan(pid))["status"] == "REPROTECT_INTERRUPTED"
    clock.advance(11)
    _, again = await api.action(pid, "reprotect")
    clock.advance(11)
    assert (await api.task(again["id"]))["status"] == "SUCCESS"


async def test_remote_site_down(make_sim: MakeSim) -> None:
    sim, api, _ = await manual(make_sim, plans=1)
    await sim.set_faults(remote_site_down=True)
    pid = plan_id(sim, "plan-001")
    status, err = await api.action(pid, "reprotect")
    assert status == 500
    assert err["error_code"] == "REMOTE_SITE_UNREACHABLE"
    assert (await api.plan(pid))["status"] == "RECOVERY_COMPLETE"  # reads still work
    _, pairing, _ = await api.call("GET", f"/pairings/{sim.pairing_id}")
    assert pairing["remote_srm_server"]["server_status"] == "ERROR"
    issues = (await api.call("GET", f"/pairings/{sim.pairing_id}/issues"))[1]["list"]
    assert issues[0]["status"] == "ERROR"
    await sim.set_faults(remote_down_status=400)
    assert (await api.action(pid, "reprotect"))[0] == 400


async def test_admin_faults_validation_and_reset(sim: SimHandle) -> None:
    with pytest.raises(AssertionError, match="400"):
        await sim.admin("PUT", "faults", {"error_rate": 3})
    await sim.set_faults(error_rate=0.5)
    config = await sim.admin("PUT", "faults", {"reset": True})
    assert config["error_rate"] == 0.0


async def test_tls(make_sim: MakeSim) -> None:
    sim = await make_sim(tls=True)
    assert sim.root_url.startswith("https://")
    assert sim.ca_path
    api = Api(sim)
    await api.login()
    assert sim.env()["SRMFLOW_SRM_URL"] == sim.base_url


async def test_requests_are_counted_by_route_reads_included(sim: SimHandle) -> None:
    api = Api(sim)
    await api.login()
    pid = plan_id(sim, "plan-001")
    await api.plan(pid)
    await api.plan(pid)
    assert (await api.action(pid, "reprotect"))[0] == 202
    requests = (await sim.admin("GET", "state"))["requests"]
    plan_route = "/pairings/{pairing_id}/recovery-management/plans/{plan_id}"
    assert requests["GET " + plan_route] == 2
    assert requests["POST " + plan_route + "/actions/reprotect"] == 1
    assert requests["POST /session"] == 1
    assert requests["POST /pairings/{pairing_id}/remote-session"] == 1
    await sim.admin("POST", "reset-journal")
    assert (await sim.admin("GET", "state"))["requests"] == {}


async def test_state_shows_task_end_times(make_sim: MakeSim) -> None:
    sim, api, _ = await manual(make_sim, plans=1)
    assert (await api.action(plan_id(sim, "plan-001"), "reprotect"))[0] == 202
    (task,) = (await sim.admin("GET", "state"))["tasks"]
    assert task["end_ms"] - task["created_ms"] == 10_500  # 0.5 s queued, then 10 s running
