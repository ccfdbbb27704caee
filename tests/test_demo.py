"""`srmflow demo` end to end, non-interactive, as CI and a new user run it; and its reports."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

SRMFLOW = str(Path(sys.executable).parent / "srmflow")


class _Tags(HTMLParser):
    """Collects tags; HTMLParser raises nothing, so balance is checked by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.seen: set[str] = set()
        self.void = {"meta", "br", "img", "link", "input", "hr"}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.add(tag)
        if tag not in self.void:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack, f"</{tag}> without an opening tag"
        opened = self.stack.pop()
        assert opened == tag, f"<{opened}> closed by </{tag}>"


DemoRun = tuple[subprocess.CompletedProcess[str], Path]


@pytest.fixture(scope="module")
def demo_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    state = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "SRMFLOW_"))}
    done = subprocess.run(
        [SRMFLOW, "demo", "--state-dir", str(state)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    return done, state


def test_demo_exits_zero_with_expected_outcomes(
    demo_run: DemoRun,
) -> None:
    done, _ = demo_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "outcomes: REPROTECTED 38, FAILED 2" in out
    assert re.search(r"plan-013\s+FAILED .*placeholder datastore 'ph-ds-02' is full", out)
    assert re.search(r"plan-027\s+FAILED .*array pair 'fa-pair-1' is not reachable", out)
    # Live progress, as plain lines because stdout is not a terminal.
    assert re.search(r"\[running\] \d+/40 done", out)
    assert "Temporal UI: http://127.0.0.1:" in out
    assert "demo stack stopped" in out


def test_demo_leaves_no_process_behind(
    demo_run: DemoRun,
) -> None:
    done, _ = demo_run
    pids = [
        int(p) for p in re.findall(r"=(\d+)", done.stdout.split("stack pids:")[1].splitlines()[0])
    ]
    assert len(pids) == 3
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} is still there"


def test_demo_reports_in_every_format(
    demo_run: DemoRun,
) -> None:
    _, state = demo_run
    reports = {p.suffix: p for p in (state / "reports").iterdir()}
    assert set(reports) == {".md", ".html", ".json", ".csv"}

    data = json.loads(reports[".json"].read_text())
    assert data["counts"]["REPROTECTED"] == 38
    assert data["requested_by"] == "srmflow demo"
    ok = next(p for p in data["plans"] if p["outcome"] == "REPROTECTED")
    assert ok["srm_task_id"]
    assert set(ok["steps"]) >= {"precheck", "start", "srm_task", "verify"}
    assert ok["duration_seconds"] > 0
    failed = next(p for p in data["plans"] if p["plan_name"] == "plan-013")
    assert "ph-ds-02" in failed["srm_error"]

    rows = list(csv.DictReader(io.StringIO(reports[".csv"].read_text())))
    assert len(rows) == 40
    assert {r["outcome"] for r in rows} == {"REPROTECTED", "FAILED"}

    markdown = reports[".md"].read_text()
    assert "| plan-013 | FAILED |" in markdown

    page = reports[".html"].read_text()
    assert not re.search(r"(?i)(https?:)?//[a-z0-9.-]+\.[a-z]", page), "must open offline"
    parser = _Tags()
    parser.feed(page)
    parser.close()
    assert parser.stack == [], f"unclosed tags: {parser.stack}"
    assert {"svg", "rect", "table"} <= parser.seen
    assert page.count("<rect") == 40, "one timeline bar per plan"
