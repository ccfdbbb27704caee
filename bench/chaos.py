"""Bounded chaos soak: a bulk reprotect survives SIGKILLed workers, dev-server restarts and a
faulty SRM without losing or repeating a plan.

Two ``srmflow worker`` processes serve the run; at seeded random moments one is SIGKILLed
(every other kill the moment a new reprotect POST shows in the simulator journal, i.e. between
the POST and the activity's first heartbeat) and replaced; the dev server (SQLite file) is
restarted; simulator faults are switched on (5xx bursts, session expiry, latency, connection
resets). Afterwards: one final result per plan, exactly one executed reprotect POST per plan,
nothing still running, every history replays clean. Exit 1 when anything is lost, duplicated,
stuck or does not replay.

    python -m bench.chaos --plans 200 --kills 20 --restarts 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Replayer

from bench.common import sim_admin, stop_on_sigterm, table
from srmflow.converter import DATA_CONVERTER
from srmflow.demo import DemoStack
from srmflow.entry import hard_exit
from srmflow.log import configure_logging
from srmflow.report import bulk_rows
from worker import WORKFLOWS
from workflows.bulk import BulkReprotectWorkflow
from workflows.bulk_models import BulkReprotectInput, BulkReprotectResult
from workflows.limiter import SiteLimiterWorkflow
from workflows.limiter_models import LIMITER_ID_PREFIX
from workflows.models import ReprotectOutcome, reprotect_workflow_id

RUN_ID = "bulk-reprotect/default/chaos"
# The site limit (default 10) would otherwise hold the run below its --concurrency (20).
# A SIGKILLed worker's request lease is held until it expires (~65 s, docs/operations.md), so
# at this kill rate a site-wide request limit of 16 would leave the replacements with no share
# for most of the soak: the soak is about durability, so the limit is set out of the way.
WORKER_ENV = {
    "SRMFLOW_GRACEFUL_SHUTDOWN_SECONDS": "5",
    "SRMFLOW_SRM_MAX_OPERATIONS": "50",
    "SRMFLOW_SRM_MAX_REQUESTS": "1000",
}
REPROTECT = "/actions/reprotect"
# Fault settings switched on in turn; each stays on until the next one replaces it.
FAULT_PHASES: list[dict[str, Any]] = [
    {"error_rate": 0.05, "error_status": 503, "latency_ms": [0, 50]},
    {"session_ttl_s": 4.0},
    {"inject": [503, 503, 503, 500, 500], "latency_ms": [20, 200]},
    {"reset_rate": 0.03},
    {"error_rate": 0.1, "error_status": 500, "session_ttl_s": 2.0},
]


class Chaos:
    """The soak's stack, its random source and what it did."""

    def __init__(self, args: argparse.Namespace, state_dir: Path) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.stack = DemoStack(state_dir=state_dir, task_queue="chaos")
        self.counts: Counter[str] = Counter()
        self.seq = 0

    def start_worker(self) -> str:
        """A new worker under a fresh name."""
        self.seq += 1
        name = f"worker-{self.seq}"
        self.stack.start_worker(name, WORKER_ENV)
        return name

    def workers(self) -> list[str]:
        """Names of the worker processes now part of the stack."""
        return sorted(n for n in self.stack.procs if n.startswith("worker-"))

    async def posts(self) -> int:
        """Reprotect POSTs in the simulator journal so far."""
        journal = (await sim_admin(self.stack, "journal"))["list"]
        return sum(1 for e in journal if e["method"] == "POST" and e["path"].endswith(REPROTECT))

    async def kill(self, after_post: bool) -> None:
        """SIGKILL a random worker and replace it; after_post: every worker, the moment a new
        reprotect POST shows in the journal (whichever worker sent it dies in the window)."""
        victims = self.workers() if after_post else [self.rng.choice(self.workers())]
        if after_post and await self._new_post(await self.posts()):
            self.counts["kills right after a POST"] += len(victims)
        for victim in victims:
            os.kill(self.stack.procs[victim].pid, signal.SIGKILL)
        for victim in victims:
            self.stack.kill(victim)
            self.counts["kills"] += 1
            self.start_worker()

    async def _new_post(self, seen: int, limit_seconds: float = 30.0) -> bool:
        deadline = time.monotonic() + limit_seconds
        while time.monotonic() < deadline:
            if await self.posts() > seen:
                return True
            await asyncio.sleep(0.02)
        return False

    async def restart_server(self) -> None:
        """Restart the dev server on its port and SQLite file."""
        self.stack.restart_temporal()
        deadline = time.monotonic() + 60
        while True:
            try:
                await Client.connect(self.stack.temporal_address)
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)
        self.counts["restarts"] += 1
        self.revive()

    def revive(self) -> None:
        """Replace workers that exited on their own, as a supervisor would.

        A worker that starts while the dev server is down cannot connect and exits 1.
        """
        for name in self.workers():
            if self.stack.procs[name].poll() is not None:
                self.stack.kill(name)
                self.counts["worker exits (replaced)"] += 1
                self.start_worker()

    async def next_faults(self) -> None:
        """Switch to the next fault phase."""
        phase = FAULT_PHASES[self.counts["fault phases"] % len(FAULT_PHASES)]
        await sim_admin(self.stack, "faults", "PUT", {"reset": True, **phase})
        self.counts["fault phases"] += 1

    async def storm(self, handle: WorkflowHandle[Any, Any]) -> None:
        """Kills at random moments, restarts and fault phases spread among them."""
        kills, restarts = self.args.kills, self.args.restarts
        restart_at = {round((i + 1) * kills / (restarts + 1)) for i in range(restarts)}
        index = 0
        while self.counts["kills"] < kills:
            await asyncio.sleep(self.rng.uniform(*self.args.kill_gap))
            if await _finished(handle):
                break
            self.revive()
            if index % 4 == 0:
                await self.next_faults()
            before = self.counts["kills"]
            await self.kill(after_post=index % 3 == 0)
            if any(before < mark <= self.counts["kills"] for mark in restart_at):
                await self.restart_server()
            index += 1
        await sim_admin(self.stack, "faults", "PUT", {"reset": True})


async def _finished(handle: WorkflowHandle[Any, Any]) -> bool:
    try:
        description = await handle.describe()
    except Exception:  # the server may be restarting; treat as still running
        return False
    return description.status is not None and description.status.name != "RUNNING"


async def replay_all(client: Client, workflow_ids: list[str]) -> list[str]:
    """Workflow ids whose fetched history does not replay with the project's workflows."""
    replayer = Replayer(workflows=WORKFLOWS, data_converter=DATA_CONVERTER)
    failed = []
    for workflow_id in workflow_ids:
        async for execution in client.list_workflows(f'WorkflowId = "{workflow_id}"'):
            handle = client.get_workflow_handle(workflow_id, run_id=execution.run_id)
            history = await handle.fetch_history()
            try:
                await replayer.replay_workflow(history)
            except Exception as exc:  # any replay failure is a finding, not a crash
                failed.append(f"{workflow_id}: {exc}")
    return failed


async def verify(chaos: Chaos, client: Client, result: BulkReprotectResult) -> dict[str, Any]:
    """What was lost, duplicated, stuck or not replayable."""
    state = await sim_admin(chaos.stack, "state")
    journal = (await sim_admin(chaos.stack, "journal"))["list"]
    plans = {p["id"] for p in state["plans"]}
    executed = Counter(
        e["plan_id"]
        for e in journal
        if e["method"] == "POST" and e["path"].endswith(REPROTECT) and e["status"] == 202
    )
    rows = await bulk_rows(client, RUN_ID, result)
    per_plan = Counter(p.plan_id for p in rows)
    final = {p.plan_id for p in rows if p.outcome != ReprotectOutcome.SKIPPED}
    running = [w async for w in client.list_workflows('ExecutionStatus = "Running"')]
    # A site limiter idles a few minutes before it ends; it is stuck only if it still holds
    # (or queues) a slot for some plan.
    limiters = {w.id for w in running if w.id.startswith(LIMITER_ID_PREFIX)}
    stuck = sorted({w.id for w in running} - limiters)
    for limiter in sorted(limiters):
        status = await client.get_workflow_handle(limiter).query(SiteLimiterWorkflow.status)
        stuck += [f"{limiter} holds a slot for {h.workflow_id}" for h in status.holders]
        stuck += [f"{limiter} queues {w.workflow_id}" for w in status.waiting]
    pairing = result.pairing_id or ""
    ran = sorted(final - set(result.unknown_plan_ids))
    ids = [reprotect_workflow_id("default", pairing, p) for p in ran] + [RUN_ID]
    return {
        "plans": len(plans),
        "outcomes": {k: v for k, v in result.counts.items() if v},
        "lost": sorted(plans - final),
        "duplicated": sorted({p for p, n in executed.items() if n > 1} | _repeats(per_plan)),
        "never_posted": sorted(plans - set(executed)),
        "not_ready": sorted(p["id"] for p in state["plans"] if p["status"] != "READY_STATE"),
        "stuck": stuck,
        "replay_failures": await replay_all(client, ids),
        "faults_injected": state["faults_injected"],
        "max_in_flight": state["max_in_flight"],
    }


def _repeats(counter: Counter[str]) -> set[str]:
    return {key for key, n in counter.items() if n > 1}


async def soak(args: argparse.Namespace, state_dir: Path) -> dict[str, Any]:
    """Run the bulk under chaos and check it."""
    chaos = Chaos(args, state_dir)
    stack = chaos.stack
    started = time.monotonic()
    try:
        stack.start_temporal()
        stack.start_simulator(
            ["--plans", str(args.plans), "--task-seconds", args.task_seconds, "--seed", "13"]
        )
        chaos.start_worker()
        chaos.start_worker()
        client = await stack.wait_ready()
        handle = await client.start_workflow(
            BulkReprotectWorkflow.run,
            BulkReprotectInput(
                all_recovered=True,
                max_concurrency=args.concurrency,
                poll_interval_seconds=args.poll_seconds,
                requested_by="bench/chaos.py",
            ),
            id=RUN_ID,
            task_queue=stack.task_queue,
            execution_timeout=timedelta(hours=1),
        )
        await chaos.storm(handle)
        result: BulkReprotectResult = await asyncio.wait_for(handle.result(), args.limit_seconds)
        report = await verify(chaos, client, result)
    finally:
        left = stack.stop()
        if left:
            print(f"could not stop: {left}")
    report["seconds"] = time.monotonic() - started
    report["counts"] = dict(chaos.counts)
    return report


def render(report: dict[str, Any]) -> str:
    """Counts as a table."""
    counts = report["counts"]
    rows = [
        ("plans", report["plans"]),
        ("outcomes", ", ".join(f"{k} {v}" for k, v in report["outcomes"].items())),
        ("worker SIGKILLs", counts.get("kills", 0)),
        ("  of which right after a reprotect POST", counts.get("kills right after a POST", 0)),
        ("dev server restarts", counts.get("restarts", 0)),
        ("workers that exited on their own (replaced)", counts.get("worker exits (replaced)", 0)),
        ("fault phases switched on", counts.get("fault phases", 0)),
        ("faults injected", ", ".join(f"{k}: {v}" for k, v in report["faults_injected"].items())),
        ("plans lost", len(report["lost"])),
        ("plans duplicated (POST executed twice or two results)", len(report["duplicated"])),
        ("plans never POSTed", len(report["never_posted"])),
        ("plans not READY_STATE in SRM", len(report["not_ready"])),
        ("workflows still running", len(report["stuck"])),
        ("histories failing replay", len(report["replay_failures"])),
        ("SRM operations in flight (max)", report["max_in_flight"]),
        ("wall seconds", f"{report['seconds']:.0f}"),
    ]
    return table([(k, str(v)) for k, v in rows], ("check", "count"))


def bad(report: dict[str, Any]) -> bool:
    """Whether the soak found anything lost, duplicated, stuck or not replayable."""
    keys = ("lost", "duplicated", "stuck", "replay_failures")
    return any(report[k] for k in keys)


def parse_args() -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--plans", type=int, default=200)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--task-seconds", default="2-6", help="LOW-HIGH task duration")
    parser.add_argument("--poll-seconds", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--kill-gap", type=float, nargs=2, default=(3.0, 9.0), help="seconds between kills"
    )
    parser.add_argument("--limit-seconds", type=float, default=1800.0, help="give up after")
    parser.add_argument("--state-dir", type=Path, help="keep logs and the SQLite file here")
    return parser.parse_args()


def main() -> None:
    """CLI entry: exit 1 when a plan was lost, duplicated, stuck or a history does not replay."""
    args = parse_args()
    configure_logging("WARNING", "console")
    stop_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="srmflow-chaos-") as tmp:
        report = asyncio.run(soak(args, args.state_dir or Path(tmp)))
    print(render(report))
    for key in ("lost", "duplicated", "stuck", "replay_failures"):
        for item in report[key][:20]:
            print(f"{key}: {item}")
    # Past the temporalio client's use: no interpreter finalisation (sdk-python issue 300).
    hard_exit(1 if bad(report) else 0)


if __name__ == "__main__":
    main()
