"""Recorded histories in tests/histories/<set>/ replay clean against the current workflow code.

Each set was recorded by the code of its time (``maybe_record`` in reprotect_support.py), so
together they cover every ``workflow.patched`` branch a running plan may still take.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from srmflow.converter import DATA_CONVERTER
from workflows.limiter import SiteLimiterWorkflow
from workflows.operation import PlanOperationWorkflow
from workflows.reprotect import ReprotectPlanWorkflow

ROOT = Path(__file__).resolve().parent / "histories"
WORKFLOWS = [ReprotectPlanWorkflow, PlanOperationWorkflow, SiteLimiterWorkflow]
HISTORIES = {
    f"{path.parent.name}/{path.stem}": path.read_text(encoding="utf-8")
    for path in sorted(ROOT.glob("*/*.json"))
}


def test_histories_are_recorded() -> None:
    sets = {name.split("/")[0] for name in HISTORIES}
    assert len(sets) >= 2, "record a set: see maybe_record in reprotect_support"
    assert len(HISTORIES) >= 10, sorted(HISTORIES)
    # Every workflow the replayer is given has recorded runs to replay.
    types = {
        WorkflowHistory.from_json(name, text)
        .events[0]
        .workflow_execution_started_event_attributes.workflow_type.name
        for name, text in HISTORIES.items()
    }
    assert types == {w.__name__ for w in WORKFLOWS}, sorted(types)


@pytest.mark.parametrize("name", sorted(HISTORIES))
async def test_history_replays(name: str) -> None:
    history = WorkflowHistory.from_json(f"replay-{name}", HISTORIES[name])
    replayer = Replayer(workflows=WORKFLOWS, data_converter=DATA_CONVERTER)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{name}: {result.replay_failure}"
