"""Recorded BulkReprotectWorkflow histories replay clean against the current workflow code.

The files in tests/histories_bulk/ are the runs (continue-as-new included) of one small bulk
run: an unknown plan id, a plan whose SRM task fails, shared protection groups and two
continue-as-new. ``bulk-v1-*`` was recorded before the bulk result was split into segments, so
a run in flight during that upgrade replays (the segment limit sits behind workflow.patched).
Re-record with ``SRMFLOW_RECORD_HISTORIES=1`` after a deliberate change and keep the old files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer

from srmflow.converter import DATA_CONVERTER
from tests.bulk_support import bulk_worker, start_bulk
from tests.reprotect_support import unique_site
from tests.simfixture import MakeSim
from workflows.bulk import BulkReprotectWorkflow
from workflows.bulk_models import BulkReprotectInput

HISTORIES = Path(__file__).resolve().parent / "histories_bulk"
RECORD_AS = "bulk-v2"
RECORDED = {path.stem: path.read_text(encoding="utf-8") for path in HISTORIES.glob("*.json")}


def test_bulk_histories_are_recorded() -> None:
    assert any(name.startswith("bulk-v1-") for name in RECORDED)
    assert any(name.startswith(f"{RECORD_AS}-") for name in RECORDED)


@pytest.mark.parametrize("name", sorted(RECORDED))
async def test_bulk_history_replays(name: str) -> None:
    history = WorkflowHistory.from_json(name, RECORDED[name])
    replayer = Replayer(workflows=[BulkReprotectWorkflow], data_converter=DATA_CONVERTER)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{name}: {result.replay_failure}"


@pytest.mark.skipif(
    not os.environ.get("SRMFLOW_RECORD_HISTORIES"), reason="records only when asked to"
)
async def test_record_bulk_history(client: Client, task_queue: str, make_sim: MakeSim) -> None:
    sim = await make_sim(
        plans=12,
        shared_pairs=2,
        task_seconds=(0.2, 0.4),
        fail_plans={"plan-004": "LUN gone"},
        validate=False,
    )
    site = unique_site()
    run_id = f"bulk-reprotect/{site}/record"
    inp = BulkReprotectInput(
        site=site,
        plan_ids=[*sim.state.plans, "DrRecoveryRecoveryPlan:missing"],
        max_concurrency=3,
        poll_interval_seconds=1,
        retry_incomplete=False,
        continue_as_new_after_events=60,
    )
    async with bulk_worker(client, task_queue, sim, site):
        handle = await start_bulk(client, task_queue, inp, run_id)
        result = await handle.result()
    assert result.continued_as_new >= 1
    HISTORIES.mkdir(exist_ok=True)
    runs = [e async for e in client.list_workflows(f'WorkflowId = "{run_id}"')]
    for number, execution in enumerate(sorted(runs, key=lambda e: e.start_time), start=1):
        history = await client.get_workflow_handle(run_id, run_id=execution.run_id).fetch_history()
        text = json.dumps(json.loads(history.to_json()), indent=1, sort_keys=True)
        (HISTORIES / f"{RECORD_AS}-run{number}.json").write_text(text + "\n", encoding="utf-8")
