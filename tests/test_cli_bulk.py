"""The bulk CLI end to end: srmflow reprotect (bulk, dry run), status, pause/resume, runs,
report and approve, as subprocesses against the dev server, a worker and the simulator."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from temporalio.client import Client

from tests.bulk_support import bulk_worker, progress
from tests.reprotect_support import eventually, unique_site
from tests.simfixture import MakeSim, SimHandle

SRMFLOW = str(Path(sys.executable).parent / "srmflow")


async def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run `srmflow ARGS` without blocking the in-process worker's event loop."""
    proc = await asyncio.create_subprocess_exec(
        SRMFLOW,
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def cli_env(temporal_address: str, task_queue: str, sim: SimHandle) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SRMFLOW_", "TEMPORAL_"))}
    env.update(sim.env())
    env.update(
        TEMPORAL_ADDRESS=temporal_address,
        SRMFLOW_TASK_QUEUE=task_queue,
        SRMFLOW_LOG_LEVEL="WARNING",
        NO_COLOR="1",
    )
    return env


async def test_bulk_cli_run_status_runs_and_report(
    client: Client, task_queue: str, temporal_address: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=6, task_seconds=(0.2, 0.4), fail_plans={"plan-006": "LUN gone"})
    site = unique_site()
    env = cli_env(temporal_address, task_queue, sim)
    common = ["--site", site, "--pairing", sim.pairing_id, "--poll-interval", "1"]
    async with bulk_worker(client, task_queue, sim, site):
        code, out, err = await cli(
            env, "reprotect", "--match", "plan-00[1-3]", "--dry-run", *common
        )
        assert code == 0, err
        assert "dry run: 3 plan(s) would be reprotected" in out
        assert not [e for e in await sim.journal() if e["path"].endswith("/reprotect")]

        code, out, err = await cli(
            env,
            "reprotect",
            "--all-recovered",
            "--concurrency",
            "3",
            "--approval-timeout",
            "2",
            "--wait",
            "--json",
            *common,
        )
        assert code == 3, out + err  # partial failure: plan-006's task fails in SRM
        result = json.loads(out)
        assert result["counts"]["REPROTECTED"] == 5
        assert result["counts"]["FAILED"] == 1
        assert "srmflow CLI" in result["requested_by"]

        code, out, _ = await cli(env, "runs", "--json")
        assert code == 0
        run_id = next(
            r["run_id"]
            for r in json.loads(out)
            if f"/{site}/" in r["run_id"] and "dry-run" not in r["run_id"]
        )

        code, out, _ = await cli(env, "status", run_id, "--json")
        assert code == 3
        assert (
            json.loads(out.strip().splitlines()[0] if out.startswith("{\n") is False else out)[
                "counts"
            ]["FAILED"]
            == 1
        )

        code, out, _ = await cli(env, "report", run_id, "--format", "csv")
        assert code == 0
        assert len(out.strip().splitlines()) == 7  # header + six plans
        assert "LUN gone" in out


async def test_bulk_cli_controls_and_usage_errors(
    client: Client, task_queue: str, temporal_address: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=6, task_seconds=(1.0, 1.5))
    site = unique_site()
    env = cli_env(temporal_address, task_queue, sim)
    code, _, err = await cli(env, "reprotect", "--all-recovered", "--match", "x*")
    assert code == 2
    assert "exactly one of --plan" in err
    code, _, err = await cli(env, "pause", "bulk-reprotect/nowhere/none")
    assert code == 2
    assert "not found" in err

    async with bulk_worker(client, task_queue, sim, site):
        code, out, err = await cli(
            env,
            "reprotect",
            "--all-recovered",
            "--concurrency",
            "1",
            "--site",
            site,
            "--pairing",
            sim.pairing_id,
            "--poll-interval",
            "1",
        )
        assert code == 0, err
        run_id = out.strip().splitlines()[-1]
        handle = client.get_workflow_handle(run_id)
        code, out, err = await cli(env, "pause", run_id)
        assert code == 0, err
        assert "paused" in out
        paused: Any = await eventually(lambda: _paused_and_idle(handle), within=60)
        assert paused.queued > 0
        code, out, err = await cli(env, "set-concurrency", run_id, "6")
        assert code == 0, err
        code, out, err = await cli(env, "resume", run_id)
        assert code == 0, err
        code, out, err = await cli(env, "status", run_id, "--watch")
        assert code == 0, err
        assert "[done] 6/6 done" in out


async def _paused_and_idle(handle: Any) -> Any:
    current = await progress(handle)
    return current if current.state.value == "paused" and not current.in_flight else None


async def test_plans_lists_and_filters_straight_from_srm(
    temporal_address: str, task_queue: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=5, plan_overrides={"plan-002": {"status": "READY_STATE"}})
    env = cli_env(temporal_address, task_queue, sim)
    code, out, err = await cli(env, "plans", "--status", "ready_state", "--json")
    assert code == 0, err
    listed = json.loads(out)["plans"]
    assert [p["name"] for p in listed] == ["plan-002"]
    assert listed[0]["protected_site"]
    code, out, err = await cli(env, "plans", "--match", "plan-00[45]")
    assert code == 0, err
    assert out.splitlines()[0].startswith("2 of 5 plans")
    assert not [e for e in await sim.journal() if e["method"] == "POST" and "actions" in e["path"]]


async def test_encrypted_run_reads_back_through_the_cli_and_a_wrong_key_is_named(
    dev_env: Any, task_queue: str, temporal_address: str, make_sim: MakeSim
) -> None:
    from temporalio.client import Client as TemporalClient

    from srmflow.codec import codec_from_keys, data_converter, new_key
    from tests.bulk_support import start_bulk
    from workflows.bulk_models import BulkReprotectInput

    ring = new_key("k-live")
    codec = codec_from_keys(ring)
    secret_client = await TemporalClient.connect(
        temporal_address, data_converter=data_converter(codec)
    )
    sim = await make_sim(plans=2, fail_plans={"plan-002": "LUN-SECRET-77 is gone"})
    site = unique_site()
    run_id = f"bulk-reprotect/{site}/encrypted"
    async with bulk_worker(secret_client, task_queue, sim, site):
        handle = await start_bulk(
            secret_client,
            task_queue,
            BulkReprotectInput(
                site=site, all_recovered=True, poll_interval_seconds=1, approval_timeout_seconds=1
            ),
            run_id,
        )
        await handle.result()

    history = (await dev_env.client.get_workflow_handle(run_id).fetch_history()).to_json()
    assert "plan-002" not in history
    env = cli_env(temporal_address, task_queue, sim)
    code, out, err = await cli(
        {**env, "SRMFLOW_ENCRYPTION_KEYS": ring}, "report", run_id, "--format", "md"
    )
    assert code == 0, err
    assert "LUN-SECRET-77 is gone" in out
    wrong = new_key("k-live")
    code, out, err = await cli({**env, "SRMFLOW_ENCRYPTION_KEYS": wrong}, "report", run_id)
    assert code == 2
    assert "k-live" in err
    assert wrong.split(":")[1] not in err
