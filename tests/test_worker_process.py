"""The worker as a process: serves the CLI, exits 0 on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

from srmflow.demo import DemoStack
from tests.reprotect_support import eventually, plan_ids, reprotect_posts, unique_site
from tests.simfixture import MakeSim
from tests.test_reprotect_crash import ROOT, worker_env, worker_process, workers_started


async def run_cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """``srmflow <args>`` as a subprocess: exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "srmflow.cli.main",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    return int(proc.returncode or 0), out.decode(), err.decode()


async def test_cli_reprotect_then_sigterm_exits_zero(
    task_queue: str,
    temporal_address: str,
    subprocess_env: dict[str, str],
    make_sim: MakeSim,
    tmp_path: Path,
) -> None:
    sim = await make_sim(plans=2, plan_overrides={"1": {"status": "TEST_COMPLETE"}})
    site = unique_site()
    plan, blocked = plan_ids(sim)
    env = worker_env(sim, site, temporal_address, task_queue, subprocess_env)
    log_path = tmp_path / "worker.log"
    with worker_process(env, log_path) as proc:
        await workers_started(log_path)
        args = ["reprotect", "--site", site, "--plan", plan, "--poll-interval", "1", "--wait"]
        code, out, err = await run_cli(env, *args, "--json")
        assert code == 0, err
        result = json.loads(out)
        assert result["outcome"] == "REPROTECTED"
        assert result["pairing_id"] == sim.pairing_id

        code, out, err = await run_cli(env, *args)
        assert code == 0, err
        assert out.splitlines()[0] == f"reprotect/{site}/{sim.pairing_id}/{plan}"
        assert "ALREADY_PROTECTED" in out

        code, out, err = await run_cli(
            env, "reprotect", "--site", site, "--plan", blocked, "--wait"
        )
        assert code == 1
        assert "TEST_COMPLETE" in out

        code, _, err = await run_cli(env, "reprotect", "--site", "nowhere", "--plan", plan)
        assert code == 2
        assert "--pairing" in err

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    assert len(await reprotect_posts(sim, plan)) == 1


async def test_worker_started_before_temporal_waits_for_it(tmp_path: Path) -> None:
    # As under Compose or Kubernetes: the worker comes up first and must not give up at once.
    stack = DemoStack(state_dir=tmp_path / "stack", task_queue="early-worker")
    log_path = tmp_path / "stack" / "logs" / "worker.log"
    try:
        stack.start_worker("worker")

        async def retrying() -> bool:
            return log_path.exists() and "temporal_unreachable" in log_path.read_text("utf-8")

        await eventually(retrying, within=30)
        stack.start_temporal()
        await workers_started(log_path)
        assert stack.procs["worker"].poll() is None
    finally:
        left = stack.stop()
    assert not left, f"could not stop: {left}"
