"""Other services start srmflow workflows with plain JSON: the `temporal` CLI (README)."""

from __future__ import annotations

import asyncio
import json

from temporalio.client import Client

from srmflow.temporal import find_binary
from tests.bulk_support import bulk_worker
from tests.reprotect_support import unique_site
from tests.simfixture import MakeSim
from workflows.bulk_models import BulkReprotectResult
from workflows.models import ReprotectPlanResult, reprotect_workflow_id


async def temporal_cli(address: str, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        find_binary("temporal"),
        *args,
        "--address",
        address,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_temporal_cli_starts_single_and_bulk_runs_with_json(
    client: Client, task_queue: str, temporal_address: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=3)
    site = unique_site()
    plan_id = next(iter(sim.state.plans))
    single = {"site": site, "plan_id": plan_id, "poll_interval_seconds": 1}
    workflow_id = reprotect_workflow_id(site, sim.pairing_id, plan_id)
    async with bulk_worker(client, task_queue, sim, site):
        code, out = await temporal_cli(
            temporal_address,
            "workflow", "execute",
            "--type", "ReprotectPlanWorkflow",
            "--task-queue", task_queue,
            "--workflow-id", workflow_id,
            "--input", json.dumps(single),
            "--output", "json",
        )  # fmt: skip
        assert code == 0, out
        handle = client.get_workflow_handle(workflow_id, result_type=ReprotectPlanResult)
        assert (await handle.result()).outcome.value == "REPROTECTED"

        bulk = {"site": site, "all_recovered": True, "poll_interval_seconds": 1}
        code, out = await temporal_cli(
            temporal_address,
            "workflow", "start",
            "--type", "BulkReprotectWorkflow",
            "--task-queue", task_queue,
            "--workflow-id", f"bulk-reprotect/{site}/from-cli",
            "--input", json.dumps(bulk),
        )  # fmt: skip
        assert code == 0, out
        run = client.get_workflow_handle(
            f"bulk-reprotect/{site}/from-cli", result_type=BulkReprotectResult
        )
        result = await run.result()
    # The single run already protected one plan; the bulk run protects the other two.
    assert result.counts["REPROTECTED"] == 2
    assert len(result.plans) == 2
