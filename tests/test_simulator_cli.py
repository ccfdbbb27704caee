"""The `sim` command: help text, and a real subprocess that starts, announces and stops."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
from click.testing import CliRunner

from srmflow.simulator.cli import sim

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = """\
plans: 4
plan_overrides:
  plan-002: {status: READY_STATE}
faults:
  retry_after_s: 2
"""


def test_help_describes_every_option() -> None:
    result = CliRunner().invoke(sim, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    for param in sim.params:
        for opt in param.opts:
            assert opt in result.output, opt
        assert param.help, f"{param.name} has no help text"


async def test_subprocess_serves_and_exits_zero_on_sigterm(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO)
    args = ["--port", "0", "--scenario", str(scenario), "--plans", "3"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "srmflow.simulator", *args, "--username", "u1", "--password", "p1",
        cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        line = ""
        while "listening on" not in line:
            raw = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
            assert raw, "simulator exited before announcing its URL"
            line = raw.decode()
        root = line.rsplit(" ", 1)[-1].strip()
        assert root.startswith("http://127.0.0.1:")
        assert not root.endswith(":0")
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": "Basic dTE6cDE="}  # u1:p1
            async with http.post(root + "/api/rest/srm/v2/session", headers=headers) as resp:
                assert resp.status == 200
            async with http.get(root + "/_sim/state") as resp:
                state = await resp.json()
        statuses = [p["status"] for p in state["plans"]]
        assert statuses == ["RECOVERY_COMPLETE", "READY_STATE", "RECOVERY_COMPLETE"]
        assert state["faults"]["retry_after_s"] == 2
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=10) == 0
        logs = (await proc.stderr.read()).decode()
        assert "p1" not in logs  # the password is printed once, in the announcement only
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
