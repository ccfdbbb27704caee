"""Bulk reprotect benchmark: srmflow on the local dev server (SQLite file) vs. the simulator.

Fixed task durations and no shared protection groups, so the ideal makespan is
ceil(plans / concurrency) * task duration. Prints a table of figures (never asserts them):
makespan / ideal, completion-detection lag, SRM requests per plan by route, history events and
bytes, worker peak RSS and CPU, and the makespan of a plain asyncio script doing the same SRM
calls with no durability (bench/baseline.py).

    python -m bench.bulk --plans 100 --concurrency 10 --task-seconds 30 --poll-seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.baseline import baseline_on_fresh_sim, sim_args
from bench.common import (
    histories,
    history_size,
    percentile,
    proc_figures,
    sim_admin,
    stop_on_sigterm,
    table,
)
from srmflow.demo import DemoStack
from srmflow.entry import hard_exit
from srmflow.log import configure_logging
from srmflow.report import bulk_rows
from workflows.bulk import BulkReprotectWorkflow
from workflows.bulk_models import BulkReprotectInput, BulkReprotectResult, PlanSummary
from workflows.models import ReprotectPlanResult, reprotect_workflow_id

RUN_ID = "bulk-reprotect/default/bench"


def worker_env(concurrency: int) -> dict[str, str]:
    """Every plan in flight holds one wait_for_task activity slot for its whole task.

    The site's operation limit is raised to the run's concurrency, so that the bench measures
    the run's own bound.
    """
    return {
        "SRMFLOW_MAX_CONCURRENT_ACTIVITIES": str(max(200, 2 * concurrency)),
        "SRMFLOW_SRM_MAX_OPERATIONS": str(concurrency),
    }


async def run_srmflow(args: argparse.Namespace, state_dir: Path) -> dict[str, Any]:
    """One bulk run on a fresh stack; raw material for the figures."""
    stack = DemoStack(state_dir=state_dir, task_queue="bench")
    try:
        stack.start_temporal()
        stack.start_simulator(sim_args(args.plans, args.task_seconds))
        workers = [f"worker-{i}" for i in range(1, args.workers + 1)]
        for name in workers:
            stack.start_worker(name, worker_env(args.concurrency))
        client = await stack.wait_ready()
        started = time.monotonic()
        handle = await client.start_workflow(
            BulkReprotectWorkflow.run,
            BulkReprotectInput(
                all_recovered=True,
                max_concurrency=args.concurrency,
                poll_interval_seconds=args.poll_seconds,
                requested_by="bench/bulk.py",
            ),
            id=RUN_ID,
            task_queue=stack.task_queue,
            execution_timeout=timedelta(hours=2),
        )
        result: BulkReprotectResult = await handle.result()
        wall = time.monotonic() - started
        per_worker = [proc_figures(stack.procs[name].pid) for name in workers]
        worker_rss = max(rss for rss, _ in per_worker)
        worker_cpu = sum(cpu for _, cpu in per_worker)
        _, temporal_cpu = proc_figures(stack.procs["temporal"].pid)
        state = await sim_admin(stack, "state")
        rows = await bulk_rows(client, RUN_ID, result)
        plan_ids = [
            reprotect_workflow_id("default", result.pairing_id or "", p.plan_id) for p in rows
        ]
        plan_histories = await histories(client, plan_ids)
        details = await plan_results(client, plan_ids)
        parent = await history_size(client, RUN_ID)
    finally:
        left = stack.stop()
        if left:
            print(f"could not stop: {left}")
    return {
        "result": result,
        "rows": rows,
        "details": details,
        "wall_s": wall,
        "worker_rss_mib": worker_rss,
        "worker_cpu_s": worker_cpu,
        "temporal_cpu_s": temporal_cpu,
        "state": state,
        "plan_histories": plan_histories,
        "parent_history": parent,
    }


async def plan_results(client: Any, workflow_ids: list[str]) -> list[ReprotectPlanResult]:
    """Each plan workflow's result (its step timings), a few at a time."""
    gate = asyncio.Semaphore(16)

    async def one(workflow_id: str) -> ReprotectPlanResult:
        async with gate:
            handle = client.get_workflow_handle(workflow_id, result_type=ReprotectPlanResult)
            return await handle.result()

    return list(await asyncio.gather(*(one(w) for w in workflow_ids)))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def overhead(
    rows: list[PlanSummary],
    details: list[ReprotectPlanResult],
    state: dict[str, Any],
    concurrency: int,
) -> dict[str, float]:
    """Where a plan's time beyond its SRM task goes, in mean seconds per plan.

    ``to_first_step``: the parent starts the child -> the child's first step starts;
    each step's duration (``srm_task_beyond_task``: the wait step minus the simulator task);
    ``between_steps``: workflow-task turns between steps; ``to_parent``: the child's last step
    ends -> the parent records the result; ``refill``: a slot frees (the k-th result) -> the
    parent starts the next plan in it.
    """
    tasks = {t["id"]: t for t in state["tasks"]}
    parts: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        parts.setdefault(name, []).append(value)

    for row, detail in zip(rows, details, strict=True):
        steps = [s for s in detail.steps if s.ended_at is not None]
        task = tasks.get(row.srm_task_id or "")
        if not steps or row.started_at is None or row.ended_at is None or task is None:
            continue
        add("total", (row.ended_at - row.started_at).total_seconds())
        add("sim_task", (task["end_ms"] - task["created_ms"]) / 1000)
        add("to_first_step", (steps[0].started_at - row.started_at).total_seconds())
        busy = 0.0
        for step in steps:
            seconds = (step.ended_at - step.started_at).total_seconds()  # type: ignore[operator]
            busy += seconds
            add(str(step.step.value), seconds)
        add("srm_task_beyond_task", parts["srm_task"][-1] - parts["sim_task"][-1])
        span = (steps[-1].ended_at - steps[0].started_at).total_seconds()  # type: ignore[operator]
        add("between_steps", span - busy)
        add("to_parent", (row.ended_at - steps[-1].ended_at).total_seconds())  # type: ignore[operator]
    starts = sorted(r.started_at for r in rows if r.started_at is not None)
    ends = sorted(r.ended_at for r in rows if r.ended_at is not None)
    for i in range(concurrency, len(starts)):
        parts.setdefault("refill", []).append((starts[i] - ends[i - concurrency]).total_seconds())
    out = {name: _mean(values) for name, values in parts.items()}
    out["beyond_task"] = out.get("total", math.nan) - out.get("sim_task", math.nan)
    return out


def _lags(rows: list[PlanSummary], state: dict[str, Any]) -> list[float]:
    """Simulator task end -> the plan's result recorded in the bulk run, in seconds."""
    ends = {t["id"]: t["end_ms"] for t in state["tasks"]}
    return [
        p.ended_at.timestamp() - ends[p.srm_task_id] / 1000
        for p in rows
        if p.srm_task_id in ends and p.ended_at is not None
    ]


def lag_parts(
    rows: list[PlanSummary], details: list[ReprotectPlanResult], state: dict[str, Any]
) -> dict[str, float]:
    """Where the slowest 5 % of plans (by detection lag) spent it, in mean seconds.

    ``detect``: simulator task end -> the wait step ends (poll, activity completion, the plan's
    next workflow task); ``to_verify``: -> the verify step starts (releasing the slot,
    scheduling verify); ``verify``: the step; ``to_parent``: -> the parent records the result.
    """
    ends = {t["id"]: t["end_ms"] / 1000 for t in state["tasks"]}
    found: list[tuple[float, dict[str, float]]] = []
    for row, detail in zip(rows, details, strict=True):
        waits = [s for s in detail.steps if s.step.value == "srm_task" and s.ended_at]
        verify = [s for s in detail.steps if s.step.value == "verify" and s.ended_at]
        end = ends.get(row.srm_task_id or "")
        if not waits or not verify or end is None or row.ended_at is None:
            continue
        wait_end, v = waits[-1].ended_at, verify[-1]
        assert wait_end is not None
        assert v.ended_at is not None
        parts = {
            "detect": wait_end.timestamp() - end,
            "to_verify": (v.started_at - wait_end).total_seconds(),
            "verify": (v.ended_at - v.started_at).total_seconds(),
            "to_parent": (row.ended_at - v.ended_at).total_seconds(),
        }
        found.append((row.ended_at.timestamp() - end, parts))
    found.sort(key=lambda item: item[0])
    slowest = [parts for _, parts in found[int(len(found) * 0.95) :]]
    return {name: _mean([p[name] for p in slowest]) for name in slowest[0]} if slowest else {}


def figures(args: argparse.Namespace, run: dict[str, Any], base: dict[str, Any] | None) -> dict:
    """Every reported figure, as a flat JSON-friendly dict."""
    result: BulkReprotectResult = run["result"]
    state, n = run["state"], args.plans
    ops = [t for t in state["tasks"] if t["kind"] == "reprotect"]
    task_s = percentile([(t["end_ms"] - t["created_ms"]) / 1000 for t in ops], 0.5)
    ideal = math.ceil(n / args.concurrency) * task_s
    lags = _lags(run["rows"], state)
    events = [h[0] for h in run["plan_histories"]]
    sizes = [h[1] for h in run["plan_histories"]]
    requests = {k: v / n for k, v in sorted(state["requests"].items())}
    out: dict[str, Any] = {
        "plans": n,
        "workers": args.workers,
        "concurrency": args.concurrency,
        "task_seconds": task_s,
        "poll_seconds": args.poll_seconds,
        "outcomes": {k: v for k, v in result.counts.items() if v},
        "makespan_s": result.duration_seconds,
        "wall_s": run["wall_s"],
        "ideal_makespan_s": ideal,
        "makespan_ratio": result.duration_seconds / ideal,
        "lag_p50_s": percentile(lags, 0.5),
        "lag_p95_s": percentile(lags, 0.95),
        "lag_max_s": max(lags, default=math.nan),
        "requests_per_plan": sum(requests.values()),
        "requests_per_plan_budget": 5 + (task_s / 60) * (60 / args.poll_seconds),
        "requests_per_plan_by_route": requests,
        "reprotect_posts_max": max(state["reprotect_posts"].values(), default=0),
        "max_in_flight": state["max_in_flight"],
        "plan_history_events_mean": sum(events) / len(events),
        "plan_history_events_max": max(events),
        "plan_history_bytes_mean": sum(sizes) / len(sizes),
        "parent_history_events": run["parent_history"][0],
        "parent_history_bytes": run["parent_history"][1],
        "parent_runs": run["parent_history"][2],
        "worker_peak_rss_mib": run["worker_rss_mib"],
        "worker_cpu_s": run["worker_cpu_s"],
        "worker_cpu_s_per_100_plans": run["worker_cpu_s"] * 100 / n,
        "temporal_cpu_s": run["temporal_cpu_s"],
        "per_plan_seconds": overhead(run["rows"], run["details"], state, args.concurrency),
        "lag_slowest_5pct_seconds": lag_parts(run["rows"], run["details"], state),
    }
    if base is not None:
        out["baseline_makespan_s"] = base["makespan_s"]
        out["baseline_requests_per_plan"] = sum(base["requests"].values()) / n
        out["makespan_vs_baseline"] = result.duration_seconds / base["makespan_s"]
    return out


def render(f: dict[str, Any]) -> str:
    """The figures as a text table, with the issue's targets where it sets one."""
    poll_budget = f["poll_seconds"] + 2
    rss_of = f", the largest of {f['workers']}" if f.get("workers", 1) > 1 else ""
    rows = [
        ("plans / concurrency / task s / poll s",
         f"{f['plans']} / {f['concurrency']} / {f['task_seconds']:.1f} / {f['poll_seconds']:g}",
         ""),
        ("outcomes", ", ".join(f"{k} {v}" for k, v in f["outcomes"].items()), ""),
        ("makespan s (workflow time)", f"{f['makespan_s']:.1f}", ""),
        ("ideal makespan s", f"{f['ideal_makespan_s']:.1f}", ""),
        ("makespan / ideal", f"{f['makespan_ratio']:.2f}", "<= 1.15"),
        ("detection lag p50 s", f"{f['lag_p50_s']:.2f}", ""),
        ("detection lag p95 s", f"{f['lag_p95_s']:.2f}", f"<= {poll_budget:g}"),
        ("detection lag max s", f"{f['lag_max_s']:.2f}", ""),
        ("SRM requests per plan", f"{f['requests_per_plan']:.1f}",
         f"<= {f['requests_per_plan_budget']:.1f}"),
        ("reprotect POSTs per plan (max)", str(f["reprotect_posts_max"]), "1"),
        ("SRM operations in flight (max)", str(f["max_in_flight"]), f"<= {f['concurrency']}"),
        ("history events per plan workflow (mean / max)",
         f"{f['plan_history_events_mean']:.1f} / {f['plan_history_events_max']}", "<= 60"),
        ("history bytes per plan workflow (mean)", f"{f['plan_history_bytes_mean']:.0f}", ""),
        ("parent history events / bytes / runs",
         f"{f['parent_history_events']} / {f['parent_history_bytes']} / {f['parent_runs']}", ""),
        (f"worker peak RSS MiB (VmHWM{rss_of})", f"{f['worker_peak_rss_mib']:.0f}", "<= 300"),
        ("worker CPU s per 100 plans (all workers)", f"{f['worker_cpu_s_per_100_plans']:.1f}", ""),
        ("temporal dev server CPU s", f"{f['temporal_cpu_s']:.1f}", ""),
    ]  # fmt: skip
    if "baseline_makespan_s" in f:
        rows += [
            ("baseline makespan s (plain asyncio)", f"{f['baseline_makespan_s']:.1f}", ""),
            ("baseline SRM requests per plan", f"{f['baseline_requests_per_plan']:.1f}", ""),
            ("makespan / baseline makespan", f"{f['makespan_vs_baseline']:.2f}", ""),
        ]
    routes = [
        (f"  requests/plan {_short(route)}", f"{count:.2f}", "")
        for route, count in f["requests_per_plan_by_route"].items()
    ]
    seconds = [
        (f"  per plan s: {name}", f"{value:.2f}", "")
        for name, value in f["per_plan_seconds"].items()
    ]
    slowest = [
        (f"  slowest 5% lag s: {name}", f"{value:.2f}", "")
        for name, value in f.get("lag_slowest_5pct_seconds", {}).items()
    ]
    return table(rows + routes + seconds + slowest, ("figure", "value", "target"))


def _short(route: str) -> str:
    for long, short in (
        ("/pairings/{pairing_id}/recovery-management/plans/{plan_id}", "{plan}"),
        ("/pairings/{pairing_id}/protection-management/groups/{group_id}", "{group}"),
        ("/pairings/{pairing_id}", "{pairing}"),
    ):
        route = route.replace(long, short)
    return route


async def bench(args: argparse.Namespace, state_dir: Path) -> dict[str, Any]:
    """srmflow run, then the baseline on a fresh simulator; the figures."""
    run = await run_srmflow(args, state_dir / "srmflow")
    base = None
    if not args.no_baseline:
        base = await baseline_on_fresh_sim(
            state_dir / "baseline", args.plans, args.concurrency, args.task_seconds,
            args.poll_seconds,
        )  # fmt: skip
    return figures(args, run, base)


def parse_args() -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--plans", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--task-seconds", type=float, default=30.0, help="fixed task duration")
    parser.add_argument("--poll-seconds", type=float, default=5.0)
    parser.add_argument(
        "--workers", type=int, default=1, help="srmflow worker processes sharing the run"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip bench/baseline.py")
    parser.add_argument("--state-dir", type=Path, help="keep logs and the SQLite file here")
    parser.add_argument("--json-out", type=Path, help="also write the figures as JSON")
    return parser.parse_args()


def main() -> None:
    """CLI entry."""
    args = parse_args()
    configure_logging("WARNING", "console")
    stop_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="srmflow-bench-") as tmp:
        result = asyncio.run(bench(args, args.state_dir or Path(tmp)))
    print(render(result))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    # Past the temporalio client's use: no interpreter finalisation (sdk-python issue 300).
    hard_exit(0)


if __name__ == "__main__":
    main()
