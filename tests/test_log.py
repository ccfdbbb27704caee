"""Logging: one JSON pipeline for structlog and stdlib loggers, with secrets redacted."""

from __future__ import annotations

import io
import json
import logging

import structlog

from srmflow.log import REDACTED, configure_logging

SECRETS = ("pa55word-local", "sess-6f1c2a", "Basic YWRtaW46cGE1NXdvcmQ=", "remote-pw-9")


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_structlog_and_stdlib_records_are_json_and_redacted() -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", "json", stream=stream)
    log = structlog.get_logger("srmflow.test")
    log.info(
        "srm_request",
        method="POST",
        path="/session",
        password="pa55word-local",
        headers={"x-dr-session": "sess-6f1c2a", "Authorization": "Basic YWRtaW46cGE1NXdvcmQ="},
        session_id="sess-6f1c2a",
        plan_id="DrRecoveryRecoveryPlan:1:2",
    )
    logging.getLogger("temporalio.activity").warning(
        "retrying with x-dr-session: sess-6f1c2a and password=remote-pw-9"
    )
    logging.getLogger("aiohttp.client").error("Authorization: Basic YWRtaW46cGE1NXdvcmQ=")

    text = stream.getvalue()
    for secret in SECRETS:
        assert secret not in text
    records = _lines(stream)
    assert [r["logger"] for r in records] == [
        "srmflow.test",
        "temporalio.activity",
        "aiohttp.client",
    ]
    first = records[0]
    assert first["event"] == "srm_request"
    assert first["password"] == REDACTED
    assert first["session_id"] == REDACTED
    assert first["headers"] == {"x-dr-session": REDACTED, "Authorization": REDACTED}
    # Non-secret context survives redaction untouched.
    assert first["plan_id"] == "DrRecoveryRecoveryPlan:1:2"
    assert first["level"] == "info"
    assert REDACTED in str(records[1]["event"])


def test_bound_context_reaches_stdlib_records() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    structlog.contextvars.bind_contextvars(workflow_id="reprotect/default/p/plan-1")
    try:
        logging.getLogger("temporalio.worker").info("polling")
    finally:
        structlog.contextvars.clear_contextvars()
    assert _lines(stream)[0]["workflow_id"] == "reprotect/default/p/plan-1"


def test_level_filters_debug() -> None:
    stream = io.StringIO()
    configure_logging("WARNING", "json", stream=stream)
    structlog.get_logger("x").info("quiet")
    structlog.get_logger("x").warning("loud")
    assert [r["event"] for r in _lines(stream)] == ["loud"]
