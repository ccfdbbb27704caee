"""PlanOperationWorkflow on the dev server against the simulator: table rules and cancel."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client

from tests.drill_support import drill_worker, sim_statuses
from tests.reprotect_support import eventually, maybe_record, unique_site
from tests.simfixture import MakeSim
from workflows.drill_models import (
    Operation,
    OperationOutcome,
    OperationResult,
    PlanOperationInput,
)
from workflows.operation import PlanOperationWorkflow


async def _run(
    client: Client, task_queue: str, inp: PlanOperationInput, record: str
) -> OperationResult:
    handle = await client.start_workflow(
        PlanOperationWorkflow.run,
        inp,
        id=f"op/{inp.site}/{inp.plan_id}/{inp.operation}",
        task_queue=task_queue,
        execution_timeout=timedelta(minutes=2),
    )
    result = await handle.result()
    await maybe_record(handle, record)
    return result


async def test_table_rules_done_already_done_not_eligible(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=2, task_seconds=(0.2, 0.3))  # RECOVERY_COMPLETE
    site = unique_site()
    first, second = list(sim.state.plans)
    async with drill_worker(client, task_queue, sim, site):
        refused = await _run(
            client,
            task_queue,
            PlanOperationInput(site=site, plan_id=first, operation="test"),
            "operation_not_eligible",
        )
        reprotected = await _run(
            client,
            task_queue,
            PlanOperationInput(
                site=site, plan_id=second, operation=Operation.REPROTECT, poll_interval_seconds=1
            ),
            "operation_reprotect",
        )
        again = await _run(
            client,
            task_queue,
            PlanOperationInput(site=site, plan_id=second, operation="cleanup"),
            "operation_already_done",
        )
    assert refused.outcome == OperationOutcome.FAILED
    assert refused.error_type == "PlanNotEligible"
    assert "RECOVERY_COMPLETE" in (refused.reason or "")
    assert reprotected.outcome == OperationOutcome.DONE
    assert reprotected.sites_after == reprotected.sites_before.swapped()  # type: ignore[union-attr]
    assert reprotected.seconds_to_verified is not None
    assert again.outcome == OperationOutcome.ALREADY_DONE


async def test_cancelling_the_workflow_cancels_the_srm_task(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=1, status="READY_STATE", task_seconds=(30.0, 30.0))
    site = unique_site()
    plan = next(iter(sim.state.plans))
    inp = PlanOperationInput(site=site, plan_id=plan, operation="test", poll_interval_seconds=1)
    async with drill_worker(client, task_queue, sim, site):
        handle = await client.start_workflow(
            PlanOperationWorkflow.run, inp, id=f"op/{site}", task_queue=task_queue
        )

        async def testing() -> bool:
            return sim_statuses(sim)[plan] == "TEST_IN_PROGRESS"

        await eventually(testing, within=20)
        await handle.cancel()
        result = await handle.result()
        await maybe_record(handle, "operation_cancelled")
    assert result.outcome == OperationOutcome.CANCELLED
    assert result.final_plan_status == "TEST_INTERRUPTED"
    posts = [e["path"] for e in await sim.journal() if e["method"] == "POST"]
    assert any(p.endswith("/actions/cancel") for p in posts)
