"""Crash safety: a worker process SIGKILLed after the POST or mid-poll loses nothing.

The workers are real subprocesses (``python worker.py``) on the dev server; the simulator runs
in the test process, so the test can kill the worker from inside the reprotect handler: SRM
has executed the POST, the worker never sees the answer. That is exactly the window where a
naive retry would POST twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from tests.reprotect_support import eventually, plan_ids, reprotect_posts, start, unique_site
from tests.simfixture import MakeSim, SimHandle
from workflows.models import ReprotectOutcome, ReprotectPlanInput, Step
from workflows.reprotect import ReprotectPlanWorkflow

ROOT = Path(__file__).resolve().parent.parent


def worker_env(
    sim: SimHandle, site: str, temporal_address: str, task_queue: str, base: dict[str, str]
) -> dict[str, str]:
    """Environment of a worker subprocess serving ``site`` on the simulator."""
    env = {k: v for k, v in base.items() if not k.startswith("SRMFLOW_SRM_")}
    env["SRMFLOW_SITES"] = json.dumps(
        {
            site: {
                "url": sim.base_url,
                "username": sim.username,
                "password": sim.password,
                "remote_username": sim.remote_username,
                "remote_password": sim.remote_password,
                "request_timeout": 5,
            }
        }
    )
    env["TEMPORAL_ADDRESS"] = temporal_address
    env["SRMFLOW_TASK_QUEUE"] = task_queue
    env["SRMFLOW_LOG_LEVEL"] = "INFO"
    env["SRMFLOW_GRACEFUL_SHUTDOWN_SECONDS"] = "10"
    # A killed worker's cached workflows move on after this, not the 10 s default.
    env["SRMFLOW_STICKY_QUEUE_TIMEOUT_SECONDS"] = "2"
    return env


@contextmanager
def worker_process(
    env: dict[str, str], log_path: Path, argv: list[str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``python worker.py`` (or ``argv``) as a subprocess; killed at exit if still alive."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv or [sys.executable, str(ROOT / "worker.py")],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


async def workers_started(*log_paths: Path, within: float = 60) -> None:
    """Wait until every worker log shows its ``worker_started`` line."""

    async def started() -> bool:
        return all(
            "worker_started" in path.read_text(encoding="utf-8", errors="replace")
            for path in log_paths
        )

    await eventually(started, within=within)


def kill_inside_post(sim: SimHandle, proc: subprocess.Popen[bytes]) -> list[str]:
    """Make the simulator SIGKILL ``proc`` right after it executes a reprotect POST."""
    original = sim.state.start
    started: list[str] = []

    def start_then_kill(*args: Any, **kwargs: Any) -> str:
        task_id = original(*args, **kwargs)
        if args[2] == "reprotect" and not started:
            started.append(task_id)
            os.kill(proc.pid, signal.SIGKILL)
        return task_id

    sim.state.start = start_then_kill  # type: ignore[method-assign]
    return started


@pytest.mark.parametrize("task_seconds", [6.0, 0.5], ids=["task-still-running", "task-finished"])
async def test_sigkill_just_after_post(
    client: Client,
    task_queue: str,
    temporal_address: str,
    subprocess_env: dict[str, str],
    make_sim: MakeSim,
    tmp_path: Path,
    task_seconds: float,
) -> None:
    sim = await make_sim(plans=1, task_seconds=(task_seconds, task_seconds))
    site, plan = unique_site(), plan_ids(sim)[0]
    env = worker_env(sim, site, temporal_address, task_queue, subprocess_env)
    inp = ReprotectPlanInput(site=site, plan_id=plan, poll_interval_seconds=1)
    with worker_process(env, tmp_path / "worker1.log") as first:
        started = kill_inside_post(sim, first)
        handle = await start(client, task_queue, inp, sim.pairing_id)
        await eventually(lambda: _exited(first), within=60)
    assert first.returncode == -signal.SIGKILL
    assert len(started) == 1
    with worker_process(env, tmp_path / "worker2.log"):
        result = await handle.result()
    assert result.outcome is ReprotectOutcome.REPROTECTED, result.reason
    assert result.srm_task_id == started[0]
    assert len(await reprotect_posts(sim, plan)) == 1


async def test_sigkill_mid_poll(
    client: Client,
    task_queue: str,
    temporal_address: str,
    subprocess_env: dict[str, str],
    make_sim: MakeSim,
    tmp_path: Path,
) -> None:
    sim = await make_sim(plans=1, task_seconds=(8.0, 8.0))
    site, plan = unique_site(), plan_ids(sim)[0]
    env = worker_env(sim, site, temporal_address, task_queue, subprocess_env)
    inp = ReprotectPlanInput(site=site, plan_id=plan, poll_interval_seconds=1)
    with worker_process(env, tmp_path / "worker1.log") as first:
        handle = await start(client, task_queue, inp, sim.pairing_id)

        async def polling() -> bool:
            progress = await handle.query(ReprotectPlanWorkflow.progress)
            task = sim.state.tasks.get(progress.srm_task_id or "")
            now = sim.state.clock.monotonic()
            return progress.step is Step.SRM_TASK and task is not None and task.progress(now) > 10

        await eventually(polling, within=60)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    with worker_process(env, tmp_path / "worker2.log"):
        result = await handle.result()
    assert result.outcome is ReprotectOutcome.REPROTECTED, result.reason
    assert len(await reprotect_posts(sim, plan)) == 1
    description = await handle.describe()
    assert description.status is not None


async def _exited(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is not None
