"""bench/bulk.py, bench/child_starts.py and bench/plan_memory.py run end to end, tiny.

Benchmarks print figures; their values are never asserted here, only that each one is there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURES = [
    "makespan / ideal",
    "detection lag p50 s",
    "detection lag p95 s",
    "SRM requests per plan",
    "requests/plan GET /tasks ",  # the batched task polls (not GET /tasks/{task_id})
    "requests/plan POST {plan}/actions/reprotect",
    "history events per plan workflow",
    "history bytes per plan workflow",
    "parent history events / bytes / runs",
    "worker peak RSS MiB (VmHWM, the largest of 2)",
    "worker CPU s per 100 plans",
    "baseline makespan s (plain asyncio)",
    "makespan / baseline makespan",
    "slowest 5% lag s: detect",
    "slowest 5% lag s: to_parent",
]


def _bench(module: str, *args: str) -> str:
    """Run ``python -m module args`` from the repository root; its output, once it exited 0."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_bench_bulk_prints_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    args = ["--plans", "10", "--concurrency", "5", "--task-seconds", "1", "--poll-seconds", "1"]
    args += ["--workers", "2"]
    printed = _bench(
        "bench.bulk", *args, "--state-dir", str(tmp_path / "s"), "--json-out", str(out)
    )
    missing = [figure for figure in FIGURES if figure not in printed]
    assert not missing, printed
    figures = json.loads(out.read_text())
    assert figures["plans"] == 10
    assert figures["workers"] == 2
    assert figures["outcomes"] == {"REPROTECTED": 10}


def test_child_start_probe_prints_one_row_per_shape() -> None:
    printed = _bench("bench.child_starts", "--children", "6", "--groups", "1", "--groups", "3")
    rows = [line.split() for line in printed.splitlines() if line[:1].isdigit()]
    assert [row[:2] for row in rows] == [["6", "1"], ["6", "3"]], printed


def test_plan_memory_probe_prints_the_cost_of_a_plan() -> None:
    for shape in ([], ["--queued"]):
        printed = _bench("bench.plan_memory", "--plans", "3", "--settle", "0", *shape)
        assert "KiB per plan" in printed, printed
        assert ("queued for the site slot" in printed) == bool(shape), printed
