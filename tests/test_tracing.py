"""OpenTelemetry tracing: one reprotect is one trace from the starting client to SRM requests."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from srmflow.converter import DATA_CONVERTER
from srmflow.log import configure_logging
from srmflow.settings import ConfigError, load_settings
from srmflow.srm.client import SrmClient
from srmflow.tracing import Tracing, build_provider, start_tracing
from tests.reprotect_support import plan_ids, run, site_settings, unique_site
from tests.simfixture import MakeSim
from tests.test_reprotect_crash import worker_env, worker_process, workers_started
from tests.test_worker_process import run_cli
from worker import WORKFLOWS, build_activities
from workflows.models import ReprotectPlanInput, reprotect_workflow_id

ROOT = Path(__file__).resolve().parent.parent
PLAN_SPANS = {
    "StartWorkflow:ReprotectPlanWorkflow",
    "RunWorkflow:ReprotectPlanWorkflow",
    "RunActivity:precheck",
    "RunActivity:start_reprotect",
    "RunActivity:wait_for_task",
    "RunActivity:verify",
    "CompleteWorkflow:ReprotectPlanWorkflow",
}
REPROTECT_POST = "POST /pairings/{id}/recovery-management/plans/{id}/actions/reprotect"


def _tracing(exporter: InMemorySpanExporter) -> Tracing:
    """Tracing that exports each span to ``exporter`` as it ends (this test's spans only)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider)


def _by_name(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{name}: {len(found)} spans"
    return found[0]


def _span_text(span: ReadableSpan) -> str:
    """Everything a span exports besides ids and times: name, attributes, events, status."""
    events = [(e.name, dict(e.attributes or {})) for e in span.events]
    return json.dumps(
        [span.name, dict(span.attributes or {}), events, span.status.description],
        default=str,
    )


async def test_one_reprotect_is_one_trace_without_secrets(
    dev_env: WorkflowEnvironment, task_queue: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=1)
    site = unique_site()
    (plan_id,) = plan_ids(sim)
    exporter = InMemorySpanExporter()
    tracing = _tracing(exporter)
    target = dev_env.client.service_client.config.target_host
    # Two clients, as the CLI and a worker would have in two processes: only the Temporal
    # headers carry the trace from one to the other.
    starter = await Client.connect(
        target, data_converter=DATA_CONVERTER, interceptors=[tracing.interceptor]
    )
    worker_client = await Client.connect(
        target, data_converter=DATA_CONVERTER, interceptors=[tracing.interceptor]
    )
    async with aiohttp.ClientSession() as http:
        srm = SrmClient(site_settings(sim, site), session=http, observer=tracing.srm_observer())
        async with Worker(
            worker_client,
            task_queue=task_queue,
            workflows=WORKFLOWS,
            activities=build_activities({site: srm}, worker_client),
            graceful_shutdown_timeout=timedelta(seconds=5),
        ):
            inp = ReprotectPlanInput(
                site=site, plan_id=plan_id, poll_interval_seconds=1, retry_incomplete=False
            )
            result = await run(starter, task_queue, inp, sim.pairing_id)
        session_ids = list(sim.state.sessions)
        # Before the logout, which is no activity's request and so a trace of its own.
        spans = exporter.get_finished_spans()
        await srm.close()
    assert result.outcome == "REPROTECTED"

    names = {s.name for s in spans}
    assert names >= PLAN_SPANS, f"missing: {PLAN_SPANS - names}"
    workflow_id = reprotect_workflow_id(site, sim.pairing_id, plan_id)
    plan_spans = [
        s
        for s in spans
        if s.name in PLAN_SPANS or (s.attributes or {}).get("temporalWorkflowID") == workflow_id
    ]
    srm_spans = [s for s in spans if (s.attributes or {}).get("srmflow.site") == site]
    assert srm_spans
    trace_ids = {s.context.trace_id for s in [*plan_spans, *srm_spans]}
    assert len(trace_ids) == 1, "the reprotect spans belong to more than one trace"

    # Linked across "processes": the workflow hangs off the client's start, each SRM request
    # off the activity that sent it.
    start = _by_name(spans, "StartWorkflow:ReprotectPlanWorkflow")
    assert start.parent is None
    run_span = _by_name(spans, "RunWorkflow:ReprotectPlanWorkflow")
    assert run_span.parent is not None
    assert run_span.parent.span_id == start.context.span_id
    post = _by_name(spans, REPROTECT_POST)
    start_activity = _by_name(spans, "RunActivity:start_reprotect")
    assert post.parent is not None
    assert post.parent.span_id == start_activity.context.span_id
    assert post.attributes is not None
    assert post.attributes["http.response.status_code"] == 202
    assert post.attributes["url.template"] == REPROTECT_POST.split(" ", 1)[1]

    # No secret in any span: passwords, Basic credentials, session ids, auth headers.
    secrets = [sim.password, sim.remote_password, *session_ids]
    for user, password in (
        (sim.username, sim.password),
        (sim.remote_username, sim.remote_password),
    ):
        secrets.append(base64.b64encode(f"{user}:{password}".encode()).decode())
    assert session_ids
    for span in spans:
        text = _span_text(span)
        for secret in secrets:
            assert secret not in text, f"secret in span {span.name}"
        for key in span.attributes or {}:
            assert "authorization" not in key.lower()
            assert "session" not in key.lower()


def test_log_lines_carry_the_current_trace_and_span() -> None:
    exporter = InMemorySpanExporter()
    tracing = _tracing(exporter)
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    tracer = tracing.provider.get_tracer("test")
    with tracer.start_as_current_span("RunActivity:precheck") as span:
        structlog.get_logger("srmflow.test").info("inside")
    structlog.get_logger("srmflow.test").info("outside")
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    context = span.get_span_context()
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert "trace_id" not in outside


def test_tracing_setting_is_checked() -> None:
    assert load_settings({}).tracing == "off"
    assert start_tracing(load_settings({})) is None
    with pytest.raises(ConfigError, match="SRMFLOW_TRACING") as info:
        load_settings({"SRMFLOW_TRACING": "bogus"})
    assert "'otlp'" in str(info.value)


def test_missing_packages_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    module = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ConfigError, match=r"SRMFLOW_TRACING=otlp .*pip install 'srmflow\[otel\]'"):
        build_provider("otlp")


def test_core_runs_without_opentelemetry() -> None:
    """Tracing off needs no OpenTelemetry package; switched on, the CLI and the worker stop
    with exit code 2 and the install hint before they connect anywhere."""
    code = """
import asyncio, os, sys
sys.modules["opentelemetry"] = None
import worker
from srmflow.cli.main import run
from srmflow.settings import load_settings
from srmflow.tracing import interceptors
assert interceptors(load_settings({})) == []
os.environ["SRMFLOW_TRACING"] = "otlp"
os.environ["TEMPORAL_ADDRESS"] = "127.0.0.1:9"
print("cli", run(["runs"]))
print("worker", asyncio.run(worker.main_async(load_settings())))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["cli 2", "worker 2"]
    hint = "SRMFLOW_TRACING=otlp needs the OpenTelemetry packages"
    assert done.stderr.count(hint) == 2
    assert "pip install 'srmflow[otel]'" in done.stderr


def test_console_exporter_writes_spans_to_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    tracing = Tracing(build_provider("console"))
    tracing.record_srm_request(
        site="east", method="GET", path="/tasks/DrTask%3A1%3A2", status="timeout", seconds=0.5
    )
    tracing.shutdown()
    tracing.shutdown()
    captured = capsys.readouterr()
    assert captured.out == ""
    span: dict[str, Any] = json.loads(captured.err)
    assert span["name"] == "GET /tasks/{id}"
    assert span["attributes"]["error.type"] == "timeout"
    assert span["status"]["status_code"] == "ERROR"
    assert span["resource"]["attributes"]["service.name"] == "srmflow"


def _console_spans(text: str) -> list[dict[str, Any]]:
    """The spans the console exporter wrote into ``text`` (between JSON log lines)."""
    decoder = json.JSONDecoder()
    spans = []
    start = text.find('{\n    "name"')
    while start != -1:
        span, end = decoder.raw_decode(text, start)
        spans.append(span)
        start = text.find('{\n    "name"', end)
    return spans


async def test_cli_and_worker_processes_export_one_trace(
    task_queue: str,
    temporal_address: str,
    subprocess_env: dict[str, str],
    make_sim: MakeSim,
    tmp_path: Path,
) -> None:
    sim = await make_sim(plans=1)
    site = unique_site()
    (plan_id,) = plan_ids(sim)
    env = worker_env(sim, site, temporal_address, task_queue, subprocess_env)
    env["SRMFLOW_TRACING"] = "console"
    env.pop("OTEL_SERVICE_NAME", None)
    log_path = tmp_path / "worker.log"
    with worker_process(env, log_path) as proc:
        await workers_started(log_path)
        code, out, err = await run_cli(
            env,
            *("reprotect", "--site", site, "--plan", plan_id, "--poll-interval", "1"),
            *("--wait", "--json"),
        )
        assert code == 0, err
        # Spans go to stderr: stdout stays the command's JSON.
        assert json.loads(out)["outcome"] == "REPROTECTED"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0

    # Both processes flushed their spans before leaving through os._exit.
    (start,) = [
        s for s in _console_spans(err) if s["name"] == "StartWorkflow:ReprotectPlanWorkflow"
    ]
    trace_id = start["context"]["trace_id"]
    assert start["resource"]["attributes"]["service.name"] == "srmflow"
    worker_text = log_path.read_text(encoding="utf-8")
    in_trace = {
        s["name"] for s in _console_spans(worker_text) if s["context"]["trace_id"] == trace_id
    }
    assert in_trace >= PLAN_SPANS - {"StartWorkflow:ReprotectPlanWorkflow"}
    assert REPROTECT_POST in in_trace
    # The worker's log lines name the same trace, so logs and spans meet.
    logged = [
        json.loads(line)
        for line in worker_text.splitlines()
        if line.startswith("{") and '"srm_action_started"' in line
    ]
    assert [entry["trace_id"] for entry in logged] == [trace_id.removeprefix("0x")]
    assert logged[0]["plan_id"] == plan_id
    assert logged[0]["workflow_id"] == reprotect_workflow_id(site, sim.pairing_id, plan_id)
