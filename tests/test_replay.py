"""Recorded histories in tests/histories/ replay clean against the current workflow code."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from srmflow.converter import DATA_CONVERTER
from workflows.reprotect import ReprotectPlanWorkflow

HISTORIES = {
    path.stem: path.read_text(encoding="utf-8")
    for path in sorted((Path(__file__).resolve().parent / "histories").glob("*.json"))
}


def test_histories_are_recorded() -> None:
    assert len(HISTORIES) >= 5, "record with SRMFLOW_RECORD_HISTORIES=1 (see reprotect_support)"


@pytest.mark.parametrize("name", sorted(HISTORIES))
async def test_history_replays(name: str) -> None:
    history = WorkflowHistory.from_json(f"replay-{name}", HISTORIES[name])
    replayer = Replayer(workflows=[ReprotectPlanWorkflow], data_converter=DATA_CONVERTER)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{name}: {result.replay_failure}"
