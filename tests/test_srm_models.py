"""Wire models, error tree and Retry-After parsing: pure functions, no HTTP."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from srmflow.srm import (
    GroupVm,
    HistoryReport,
    Page,
    PlanStatus,
    RecoveryPlan,
    SrmAuthError,
    SrmConnectionError,
    SrmHttpError,
    SrmTimeoutError,
    Task,
    TaskStatus,
    parse_retry_after,
)

SPEC = Path("/work/shared/srm-api/srm-api-v2.json")


def _spec_enum(schema: str, field: str) -> list[str]:
    spec = json.loads(SPEC.read_text(encoding="utf-8"))
    return spec["components"]["schemas"][schema]["properties"][field]["enum"]


@pytest.mark.skipif(not SPEC.exists(), reason="vendor spec not available")
def test_plan_status_enum_matches_spec() -> None:
    assert [s.value for s in PlanStatus] == _spec_enum("RecoveryPlanInfo", "status")
    assert len(PlanStatus) == 27
    assert [s.value for s in TaskStatus] == _spec_enum("Task", "status")


def test_unknown_status_and_extra_fields_do_not_crash() -> None:
    plan = RecoveryPlan.model_validate(
        {
            "id": "DrRecoveryRecoveryPlan:1:2",
            "name": "p",
            "status": "SOME_FUTURE_STATE",
            "location": "loc",
            "new_field": 1,
        }
    )
    assert plan.status == "SOME_FUTURE_STATE"
    assert plan.model_extra == {"new_field": 1}
    assert PlanStatus.READY_STATE == "READY_STATE"


def test_task_is_terminal() -> None:
    def task(status: str) -> Task:
        return Task(id="t", status=status)

    assert not task("QUEUED").is_terminal
    assert not task("RUNNING").is_terminal
    assert not task("SOMETHING_NEW").is_terminal
    for status in ("SUCCESS", "ERROR", "CANCELLED"):
        assert task(status).is_terminal
    failed = Task.model_validate(
        {"id": "t", "status": "ERROR", "error": {"message": "boom", "details": None}}
    )
    assert failed.error is not None
    assert failed.error.message == "boom"


def test_group_vm_and_history_report() -> None:
    vm = GroupVm.model_validate(
        {"id": "vm-1", "name": "vm", "protection_status_details": {"status": "OK", "errors": None}}
    )
    assert vm.protection_status_details is not None
    assert vm.protection_status_details.status == "OK"
    report = HistoryReport.model_validate({"run_key": 42, "operation_type": "REPROTECT"})
    assert report.report_id == "42"
    assert HistoryReport(id="r-1", run_key=42).report_id == "r-1"


def test_page_is_generic() -> None:
    page = Page[Task](items=[Task(id="a", status="QUEUED")], total=1, offset=0, limit=100)
    assert page.items[0].id == "a"


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("soon") is None
    date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(date, now=now) == 30.0
    past = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0


def test_error_tree_and_text() -> None:
    err = SrmAuthError("Unauthorized", status=401, method="GET", path="/tasks")
    assert isinstance(err, SrmHttpError)
    assert str(err) == "GET /tasks -> HTTP 401: Unauthorized"
    assert not err.retryable
    busy = SrmHttpError(
        "busy", status=503, method="POST", path="/x", error_code="E", op_id="o", retry_after=2
    )
    assert busy.retryable
    assert "E" in str(busy)
    assert "o" in str(busy)
    timeout = SrmTimeoutError("slow", method="GET", path="/tasks")
    assert isinstance(timeout, SrmConnectionError)
    assert timeout.kind == "timeout"
    assert timeout.retryable
    assert not SrmConnectionError("bad cert", kind="tls").retryable
