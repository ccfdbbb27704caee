"""Child-start probe: how fast a Temporal server starts and completes many child workflows.

Measures the server, not srmflow: a parent starts N empty child workflows, either all itself
or through G sub-parents that start N/G each, and the probe prints how long until every child
has completed. On the local dev server (SQLite file in WAL mode, as `make demo` runs it) it
shows the ceiling behind the 1,000-plan benchmark's start-up time; against another server
(``--address``) it shows what that server would allow.

    python -m bench.child_starts --children 500 --groups 1 --groups 10
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from bench.common import stop_on_sigterm, table
from srmflow.demo import DemoStack
from srmflow.entry import hard_exit
from srmflow.log import configure_logging


@workflow.defn
class EmptyChild:
    """Does nothing: its cost is the server's start, one workflow task and the completion."""

    @workflow.run
    async def run(self) -> None:
        return None


@workflow.defn
class FanOut:
    """Starts ``children`` EmptyChild workflows itself, or through ``groups`` sub-parents."""

    @workflow.run
    async def run(self, children: int, groups: int) -> int:
        me = workflow.info().workflow_id
        if groups <= 1:
            await asyncio.gather(
                *(
                    workflow.execute_child_workflow(EmptyChild.run, id=f"{me}/{n}")
                    for n in range(children)
                )
            )
            return children
        shares = [children // groups + (1 if g < children % groups else 0) for g in range(groups)]
        done = await asyncio.gather(
            *(
                workflow.execute_child_workflow(FanOut.run, args=[share, 1], id=f"{me}/g{g}")
                for g, share in enumerate(shares)
            )
        )
        return sum(done)


async def probe(client: Client, children: int, groups: int) -> float:
    """Seconds from the parent's start until all ``children`` have completed."""
    queue = f"child-starts-{uuid.uuid4().hex[:8]}"
    # The probe's own trivial workflows run unsandboxed: they live in this __main__ module,
    # which the sandbox cannot re-import, and they touch nothing but Temporal.
    async with Worker(
        client,
        task_queue=queue,
        workflows=[FanOut, EmptyChild],
        workflow_runner=UnsandboxedWorkflowRunner(),
        max_cached_workflows=max(1000, children + groups + 1),
    ):
        started = time.monotonic()
        done = await client.execute_workflow(
            FanOut.run, args=[children, groups], id=queue, task_queue=queue
        )
        assert done == children, f"{done} of {children} children completed"
        return time.monotonic() - started


async def run(args: argparse.Namespace, state_dir: Path) -> list[list[str]]:
    """Every requested shape, on ``--address`` or a fresh local dev server."""
    stack = None
    try:
        if args.address:
            client = await Client.connect(args.address)
        else:
            stack = DemoStack(state_dir=state_dir, task_queue="child-starts")
            stack.start_temporal()
            client = await stack.wait_temporal()
        rows = []
        for groups in args.groups or [1]:
            seconds = await probe(client, args.children, groups)
            rate = args.children / seconds
            rows.append([str(args.children), str(groups), f"{seconds:.1f}", f"{rate:.1f}"])
        return rows
    finally:
        if stack is not None:
            stack.stop()


def main() -> None:
    """CLI entry."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--children", type=int, default=500)
    parser.add_argument(
        "--groups", type=int, action="append", help="sub-parents (repeat for several runs)"
    )
    parser.add_argument("--address", help="an existing Temporal frontend (default: local)")
    args = parser.parse_args()
    configure_logging("WARNING", "console")
    stop_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="srmflow-child-starts-") as tmp:
        rows = asyncio.run(run(args, Path(tmp)))
    print(table(rows, ["children", "sub-parents", "seconds", "children/s"]))
    hard_exit(0)


if __name__ == "__main__":
    main()
