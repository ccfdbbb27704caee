"""The local demo stack: Temporal dev server, SRM simulator and a worker, as child processes.

Everything binds to loopback on free ports and keeps its files under one state folder, so the
demo never collides with a Temporal or SRM the user already runs, and it cleans up after itself.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from temporalio.client import Client

from srmflow.converter import DATA_CONVERTER
from srmflow.temporal import find_binary

SIM_USER, SIM_PASSWORD = "administrator@site-a.local", "demo-password-a"
SIM_REMOTE_USER, SIM_REMOTE_PASSWORD = "administrator@site-b.local", "demo-password-b"
STOP_GRACE_SECONDS = 20.0

# A realistic morning after a failover: 40 recovered plans, some sharing protection groups,
# two plans whose reprotect fails in SRM, one that first ends INCOMPLETE_REPROTECT.
DEMO_SIM_ARGS = [
    "--plans", "40",
    "--shared-pairs", "6",
    "--task-seconds", "2-6",
    "--seed", "7",
    "--fail-plan",
    "plan-013=Failed to create placeholder VM 'app-013-vm-2': placeholder datastore "
    "'ph-ds-02' is full",
    "--fail-plan",
    "plan-027=Failed to reverse replication for device 'lun-27': array pair 'fa-pair-1' "
    "is not reachable",
]  # fmt: skip


# Ports below the kernel's ephemeral range (32768+ by default): an outgoing connection never
# takes one of these between the check here and the server's own bind a moment later.
LISTEN_PORTS = range(20000, 32000)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now, outside the ephemeral range."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.choice(LISTEN_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class DemoStack:
    """The processes of the demo and how to reach them."""

    state_dir: Path
    task_queue: str = "srmflow-demo"
    temporal_port: int = field(default_factory=free_port)
    ui_port: int = field(default_factory=free_port)
    sim_port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def temporal_address(self) -> str:
        """host:port of the dev server's frontend."""
        return f"127.0.0.1:{self.temporal_port}"

    @property
    def ui_url(self) -> str:
        """Temporal Web UI."""
        return f"http://127.0.0.1:{self.ui_port}"

    @property
    def sim_url(self) -> str:
        """The simulator's SRM API base."""
        return f"http://127.0.0.1:{self.sim_port}/api/rest/srm/v2"

    def env(self) -> dict[str, str]:
        """Environment for srmflow processes talking to this stack."""
        return {
            "TEMPORAL_ADDRESS": self.temporal_address,
            "TEMPORAL_NAMESPACE": "default",
            "SRMFLOW_TASK_QUEUE": self.task_queue,
            "SRMFLOW_SRM_URL": self.sim_url,
            "SRMFLOW_SRM_USERNAME": SIM_USER,
            "SRMFLOW_SRM_PASSWORD": SIM_PASSWORD,
            "SRMFLOW_SRM_REMOTE_USERNAME": SIM_REMOTE_USER,
            "SRMFLOW_SRM_REMOTE_PASSWORD": SIM_REMOTE_PASSWORD,
        }

    def _spawn(self, name: str, args: list[str], extra_env: dict[str, str] | None = None) -> None:
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "SRMFLOW_LOG_FORMAT": "json", **(extra_env or {})}
        with (logs / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def start_temporal(self) -> None:
        """Temporal dev server with the Web UI and SQLite persistence in the state folder.

        The SQLite file runs in WAL mode with ``synchronous=normal``: every commit still
        survives the server process being killed (what the chaos soak does), only an OS crash
        may lose the last ones, and writes no longer wait for an fsync each.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._spawn(
            "temporal",
            [
                find_binary("temporal"),
                "server",
                "start-dev",
                "--ip", "127.0.0.1",
                "--port", str(self.temporal_port),
                "--ui-port", str(self.ui_port),
                "--db-filename", str(self.state_dir / "temporal.db"),
                "--sqlite-pragma", "journal_mode=wal",
                "--sqlite-pragma", "synchronous=normal",
                "--log-level", "error",
            ],
        )  # fmt: skip

    def start_simulator(self, sim_args: list[str]) -> None:
        """The SRM simulator with the demo inventory."""
        self._spawn(
            "srm-sim",
            [
                sys.executable, "-m", "srmflow.simulator",
                "--host", "127.0.0.1",
                "--port", str(self.sim_port),
                "--username", SIM_USER,
                "--password", SIM_PASSWORD,
                "--remote-username", SIM_REMOTE_USER,
                "--remote-password", SIM_REMOTE_PASSWORD,
                *sim_args,
            ],
        )  # fmt: skip

    def start_worker(self, name: str = "worker", extra_env: dict[str, str] | None = None) -> None:
        """An srmflow worker on the demo task queue (``extra_env`` adds or overrides variables)."""
        env = {**self.env(), **(extra_env or {})}
        self._spawn(name, [sys.executable, "-m", "srmflow.cli.main", "worker"], env)

    def kill(self, name: str) -> int:
        """SIGKILL one process, as a crash would, and drop it from the stack; returns its pid."""
        proc = self.procs.pop(name)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        return proc.pid

    def restart_temporal(self) -> None:
        """Stop the dev server and start it again on the same ports and SQLite file."""
        _terminate(self.procs.pop("temporal"))
        self.start_temporal()

    def check_alive(self) -> None:
        """Raise naming the process that died, and where its log is."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                log = self.state_dir / "logs" / f"{name}.log"
                raise RuntimeError(f"{name} exited with code {proc.returncode}; see {log}")

    async def wait_temporal(self, limit_seconds: float = 60.0) -> Client:
        """Wait until the Temporal frontend answers; return a client."""
        deadline = time.monotonic() + limit_seconds
        while True:
            self.check_alive()
            try:
                return await Client.connect(self.temporal_address, data_converter=DATA_CONVERTER)
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)

    async def wait_ready(self, limit_seconds: float = 60.0) -> Client:
        """Wait until Temporal answers and the simulator serves; return a Temporal client."""
        deadline = time.monotonic() + limit_seconds
        client = await self.wait_temporal(limit_seconds)
        async with aiohttp.ClientSession() as http:
            while True:
                self.check_alive()
                try:
                    url = f"http://127.0.0.1:{self.sim_port}/_sim/state"
                    async with http.get(url) as response:
                        if response.status == 200:
                            return client
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("the SRM simulator did not start; see its log")
                await asyncio.sleep(0.3)

    def stop(self) -> list[str]:
        """SIGTERM every process (worker first), SIGKILL what outlives the grace; names left."""
        order = sorted(self.procs, key=lambda n: (n == "temporal", n == "srm-sim"))
        for name in order:
            _terminate(self.procs[name])
        return [name for name, proc in self.procs.items() if proc.poll() is None]


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL when the process outlives the grace period."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
