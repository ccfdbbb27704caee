"""Plan memory probe: what one plan in flight costs an `srmflow worker` process, in KiB.

Starts the demo stack (dev server, simulator, one worker process), reads the worker's resident
memory (`VmRSS`), starts a bulk run over N plans whose SRM tasks outlast the probe, waits until
the plans are where it asks, and reads `VmRSS` again: the difference divided by N is the cost of
one plan workflow cached in the worker plus, in the default shape, its `wait_for_task` activity.

- default: every plan's SRM task is running (N operations allowed at once);
- ``--queued``: one operation at a time, so N - 1 plans wait in the site limiter's queue
  (a cached workflow with no activity running).

    python -m bench.plan_memory --plans 200
    python -m bench.plan_memory --plans 200 --queued
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bench.baseline import sim_args
from bench.bulk import worker_env
from bench.common import memory_kib, sim_admin, stop_on_sigterm, table
from srmflow.demo import DemoStack
from srmflow.entry import hard_exit
from srmflow.log import configure_logging
from workflows.bulk import BulkReprotectWorkflow
from workflows.bulk_models import BulkReprotectInput
from workflows.limiter import SiteLimiterWorkflow
from workflows.limiter_models import limiter_workflow_id

# Long enough for every plan to start and the probe to read; the run is torn down after.
TASK_SECONDS = 3600.0


async def probe(args: argparse.Namespace, state_dir: Path) -> dict[str, float]:
    """One probe on a fresh stack; KiB figures."""
    plans, queued = args.plans, args.queued
    operations = 1 if queued else plans
    stack = DemoStack(state_dir=state_dir, task_queue="plan-memory")
    try:
        stack.start_temporal()
        stack.start_simulator(sim_args(plans, TASK_SECONDS))
        stack.start_worker(
            "worker", {**worker_env(plans), "SRMFLOW_SRM_MAX_OPERATIONS": str(operations)}
        )
        client = await stack.wait_ready()
        await asyncio.sleep(args.settle)  # the worker's own start-up allocations
        pid = stack.procs["worker"].pid
        before = memory_kib(pid, "VmRSS")
        started = time.monotonic()
        await client.start_workflow(
            BulkReprotectWorkflow.run,
            BulkReprotectInput(all_recovered=True, max_concurrency=plans, requested_by="probe"),
            id="bulk-reprotect/default/plan-memory",
            task_queue=stack.task_queue,
            execution_timeout=timedelta(hours=2),
        )
        limiter = client.get_workflow_handle(
            limiter_workflow_id("default", stack.task_queue), result_type=None
        )
        while True:
            stack.check_alive()
            running = sum(
                t["kind"] == "reprotect" for t in (await sim_admin(stack, "state"))["tasks"]
            )
            waiting = 0
            if queued and running:
                waiting = len((await limiter.query(SiteLimiterWorkflow.status)).waiting)
            if running == operations and running + waiting == plans:
                break
            if time.monotonic() - started > args.patience:
                raise TimeoutError(f"{running} tasks running, {waiting} plans queued")
            await asyncio.sleep(1.0)
        placed = time.monotonic() - started
        await asyncio.sleep(args.settle)
        after = memory_kib(pid, "VmRSS")
    finally:
        stack.stop()
    return {
        "before_kib": before,
        "after_kib": after,
        "per_plan_kib": (after - before) / plans,
        "placed_s": placed,
    }


def main() -> None:
    """CLI entry."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--plans", type=int, default=200)
    parser.add_argument("--queued", action="store_true", help="plans wait for the site's slot")
    parser.add_argument("--patience", type=float, default=600.0, help="seconds to place plans")
    parser.add_argument(
        "--settle", type=float, default=10.0, help="seconds the worker settles before each read"
    )
    args = parser.parse_args()
    configure_logging("WARNING", "console")
    stop_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="srmflow-memory-") as tmp:
        f = asyncio.run(probe(args, Path(tmp)))
    where = "queued for the site slot" if args.queued else "following their SRM task"
    rows = [
        ("plans", f"{args.plans} ({where})"),
        ("seconds to place them", f"{f['placed_s']:.1f}"),
        ("worker VmRSS before, MiB", f"{f['before_kib'] / 1024:.1f}"),
        ("worker VmRSS after, MiB", f"{f['after_kib'] / 1024:.1f}"),
        ("KiB per plan", f"{f['per_plan_kib']:.0f}"),
    ]  # fmt: skip
    print(table(rows, ("figure", "value")))
    hard_exit(0)


if __name__ == "__main__":
    main()
