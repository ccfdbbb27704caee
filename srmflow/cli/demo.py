"""``srmflow demo``: local Temporal + SRM simulator + worker, then a live bulk reprotect."""

from __future__ import annotations

import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from srmflow.cli.common import run_async, use_color
from srmflow.demo import DEMO_SIM_ARGS, DemoStack
from srmflow.report import PlanRow, RunReport, collect_report, render
from workflows.bulk_models import BulkReprotectInput, bulk_workflow_id

REPORT_FORMATS = ("md", "html", "json", "csv")
APPROVAL_SECONDS = 10.0


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM (CI timeouts, `kill`) must still run the cleanup below, like Ctrl-C does.
    raise KeyboardInterrupt


def _short_task(task_id: str | None) -> str:
    """A task MoRef ``DrTask:<uuid>:<server>`` shortened to the uuid's first block."""
    if not task_id:
        return "-"
    parts = task_id.split(":")
    return parts[1].split("-")[0] if len(parts) > 1 else task_id[:8]


def _why(plan: PlanRow) -> str:
    if plan.srm_error and plan.srm_error not in (plan.reason or ""):
        return f"SRM: {plan.srm_error} -- {plan.reason or ''}".strip(" -")
    return plan.reason or ""


def _summary(report: RunReport) -> None:
    rows = [
        (p.plan_name or p.plan_id, p.outcome, _short_task(p.srm_task_id), _why(p))
        for p in sorted(report.plans, key=lambda p: p.plan_name or p.plan_id)
    ]
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title="Bulk reprotect summary")
        for column in ("plan", "outcome", "SRM task", "reason"):
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        Console(no_color=not use_color()).print(table)
    else:
        click.echo("plan      outcome            SRM task  reason")
        for name, outcome, task, reason in rows:
            click.echo(f"{name:<9} {outcome:<18} {task:<9} {reason}")
    counts = ", ".join(f"{k} {v}" for k, v in report.counts.items() if v)
    click.echo(f"outcomes: {counts}; duration {report.duration_seconds or 0:.1f} s")


async def _run(stack: DemoStack, concurrency: int) -> tuple[str, RunReport, list[Path]]:
    from srmflow.cli.runs import watch_run
    from workflows.bulk import BulkReprotectWorkflow

    client = await stack.wait_ready()
    run_id = bulk_workflow_id("default", "demo-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S"))
    handle = await client.start_workflow(
        BulkReprotectWorkflow.run,
        BulkReprotectInput(
            all_recovered=True,
            max_concurrency=concurrency,
            poll_interval_seconds=1.0,
            # Short, so the demo shows the remediation ladder giving up rather than waiting an
            # hour for `srmflow approve` (the production default).
            approval_timeout_seconds=APPROVAL_SECONDS,
            requested_by="srmflow demo",
        ),
        id=run_id,
        task_queue=stack.task_queue,
    )
    click.echo(f"started bulk run {run_id} (Temporal UI: {stack.ui_url})")
    await watch_run(client, handle, watch=True, as_json=False)
    report = await collect_report(client, run_id)
    paths = []
    reports = stack.state_dir / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    for fmt in REPORT_FORMATS:
        path = reports / f"{run_id.replace('/', '_')}.{fmt}"
        path.write_text(render(report, fmt), encoding="utf-8")
        paths.append(path)
    return run_id, report, paths


@click.command()
@click.option("--keep", is_flag=True, help="Leave the stack running for exploration.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".state/demo"),
    show_default=True,
    help="Where the Temporal SQLite file, logs and reports go.",
)
@click.option("--concurrency", default=8, show_default=True, help="Plans in flight at most.")
def demo(keep: bool, state_dir: Path, concurrency: int) -> int:
    """Start a local Temporal dev server (with Web UI), the SRM simulator with 40 recovered
    plans and a worker; run a bulk reprotect with live progress; print the summary and where
    the reports and the UI are; then stop everything (unless --keep).

    Two plans fail on purpose (SRM task errors): they are re-run once, then wait briefly for
    a forced-reprotect approval (`srmflow approve`) and are reported FAILED with the reason.
    """
    signal.signal(signal.SIGTERM, _terminate)
    stack = DemoStack(state_dir=state_dir)
    click.echo(f"starting Temporal dev server, SRM simulator and worker (state: {state_dir})")
    try:
        stack.start_temporal()
        stack.start_simulator(DEMO_SIM_ARGS)
        stack.start_worker()
        click.echo("stack pids: " + " ".join(f"{n}={p.pid}" for n, p in stack.procs.items()))
        _, report, paths = run_async(_run(stack, concurrency))
    except BaseException:
        left = stack.stop()
        if left:
            click.echo(f"could not stop: {', '.join(left)}", err=True)
        raise
    _summary(report)
    for path in paths:
        click.echo(f"report: {path}")
    click.echo(f"Temporal UI: {stack.ui_url}/namespaces/default/workflows")
    expected = len(report.plans) == 40 and report.counts.get("REPROTECTED", 0) >= 36
    if keep:
        click.echo("stack left running (--keep); to use it from another shell:")
        for key, value in stack.env().items():
            click.echo(f"  export {key}={value!r}")
        pids = " ".join(str(p.pid) for p in stack.procs.values())
        click.echo(f"stop it with: kill {pids}")
    else:
        left = stack.stop()
        if left:
            click.echo(f"could not stop: {', '.join(left)}", err=True)
            return 1
        click.echo("demo stack stopped")
    return 0 if expected else 1
