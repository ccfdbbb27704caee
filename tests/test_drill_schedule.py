"""`srmflow drill schedule ...` and `drill run` on the dev server, a worker and the simulator."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from click.testing import CliRunner, Result
from temporalio.client import Client

from srmflow.cli.drill import drill, parse_duration, schedule_id
from tests.drill_support import drill_worker, sim_statuses
from tests.reprotect_support import eventually, unique_site
from tests.simfixture import MakeSim, SimHandle


def _env(address: str, task_queue: str, sim: SimHandle) -> dict[str, str]:
    return {
        "TEMPORAL_ADDRESS": address,
        "TEMPORAL_NAMESPACE": "default",
        "SRMFLOW_TASK_QUEUE": task_queue,
        "SRMFLOW_LOG_LEVEL": "WARNING",
        **sim.env(),
    }


async def _cli(env: dict[str, str], *args: str) -> Result:
    """Run the click group in a thread (it runs its own event loop), like the real command."""
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, drill, list(args), env=env)


def _ok(result: Result) -> str:
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result.output


def test_parse_duration() -> None:
    assert parse_duration("30m") == 1800
    assert parse_duration("90") == 90
    assert parse_duration("2h") == 7200
    assert parse_duration("1.5s") == 1.5


async def test_schedule_lifecycle_and_trigger_runs_a_drill(
    client: Client, task_queue: str, temporal_address: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=3, status="READY_STATE", task_seconds=(0.2, 0.4))
    site = unique_site()
    name = f"nightly-{site}"
    env = _env(temporal_address, task_queue, sim)
    create = await _cli(
        env,
        "schedule", "create", name, "--cron", "0 3 1 1 *", "--match", "plan-*",
        "--mode", "test", "--rto-target", "30m", "--site", site, "--poll", "1",
    )  # fmt: skip
    assert schedule_id(name) in _ok(create)

    async def listed_row() -> dict[str, Any] | None:
        # Schedule lists come from visibility, which catches up a moment after create.
        listed = json.loads(_ok(await _cli(env, "schedule", "list", "--json")))
        return next((row for row in listed if row["name"] == name), None)

    mine = await eventually(listed_row, within=20, interval=0.2)
    assert mine["cron"] == "0 3 1 1 *"
    assert mine["mode"] == "test"
    assert mine["paused"] is False

    described = json.loads(_ok(await _cli(env, "schedule", "describe", name)))
    assert described["overlap"] == "SKIP"
    assert described["drill"]["plan_name_glob"] == "plan-*"
    assert described["drill"]["rto_target_seconds"] == 1800
    assert described["next_runs"]

    _ok(await _cli(env, "schedule", "pause", name))
    assert json.loads(_ok(await _cli(env, "schedule", "describe", name)))["paused"] is True
    _ok(await _cli(env, "schedule", "unpause", name))
    assert json.loads(_ok(await _cli(env, "schedule", "describe", name)))["paused"] is False

    async with drill_worker(client, task_queue, sim, site):
        trigger = await _cli(env, "schedule", "trigger", name, "--wait")
    output = _ok(trigger)
    assert "test drill PASS" in output
    assert "cleanup" in output, "live progress lines name the steps"
    assert set(sim_statuses(sim).values()) == {"READY_STATE"}
    runs = json.loads(_ok(await _cli(env, "schedule", "describe", name)))["recent_runs"]
    assert len(runs) == 1

    _ok(await _cli(env, "schedule", "delete", name))
    gone = await _cli(env, "schedule", "describe", name)
    assert gone.exit_code == 2

    async def gone_from_list() -> bool:
        listed = json.loads(_ok(await _cli(env, "schedule", "list", "--json")))
        return all(row["name"] != name for row in listed)

    await eventually(gone_from_list, within=20, interval=0.2)


async def test_drill_run_wait_and_disruptive_guard(
    client: Client, task_queue: str, temporal_address: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=2, status="READY_STATE", task_seconds=(0.2, 0.4))
    site = unique_site()
    env = _env(temporal_address, task_queue, sim)
    refused = await _cli(env, "run", "--match", "plan-*", "--mode", "failback", "--site", site)
    assert refused.exit_code == 2
    assert "allow-disruptive" in refused.output
    args: list[Any] = ["run", "--match", "plan-*", "--site", site, "--poll", "1", "--wait"]
    async with drill_worker(client, task_queue, sim, site):
        ran = await _cli(env, *args)
    output = _ok(ran)
    assert "test drill PASS" in output
    assert "plan-" in output
