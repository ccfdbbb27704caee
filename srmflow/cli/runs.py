"""Bulk-run commands: status (live), pause, resume, cancel, set-concurrency, approve, runs."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError

from srmflow.cli.common import ConfigProblem, echo_json, run_async, settings_or_fail, use_color
from srmflow.progress import PlanLive, plan_live, render_plain, render_table
from srmflow.temporal import connect
from workflows.bulk_models import (
    MAX_CONCURRENCY,
    BulkProgress,
    BulkReprotectResult,
    CancelRemaining,
    ConcurrencyChange,
    ControlAck,
    ForcedApproval,
)

EXIT_OK, EXIT_FAILED, EXIT_PARTIAL, EXIT_CANCELLED = 0, 1, 3, 4
BULK_TYPE = "BulkReprotectWorkflow"


def exit_code_for(result: BulkReprotectResult) -> int:
    """0 all good, 3 some plans failed/cancelled/skipped, 1 none succeeded, 4 run cancelled."""
    good = result.counts.get("REPROTECTED", 0) + result.counts.get("ALREADY_PROTECTED", 0)
    bad = sum(result.counts.values()) - good
    if bad == 0:
        return EXIT_OK
    return EXIT_PARTIAL if good else EXIT_FAILED


async def _handle(run_id: str) -> tuple[Client, WorkflowHandle[Any, Any]]:
    settings = settings_or_fail()
    client = await connect(settings)
    return client, client.get_workflow_handle(run_id)


async def _describe_or_fail(handle: WorkflowHandle[Any, Any]) -> WorkflowExecutionStatus | None:
    try:
        return (await handle.describe()).status
    except RPCError as exc:
        raise ConfigProblem(
            f"run {handle.id!r} not found ({exc.message}); see `srmflow runs`"
        ) from None


async def watch_run(
    client: Client,
    handle: WorkflowHandle[Any, Any],
    *,
    watch: bool,
    as_json: bool,
    quiet: bool = False,
) -> int:
    """Show a run's progress (once, or live until it ends) and return the exit code."""
    await _describe_or_fail(handle)
    live = _Display(as_json=as_json, quiet=quiet)
    try:
        while True:
            # Status first: when it says closed, the progress read after it is the final one.
            status = (await handle.describe()).status
            progress = await handle.query("progress", result_type=BulkProgress)
            plans = await asyncio.gather(*(plan_live(client, p) for p in progress.in_flight))
            live.show(handle.id, progress, list(plans))
            if not watch or status != WorkflowExecutionStatus.RUNNING:
                break
            await asyncio.sleep(1.0)
    finally:
        live.close()
    if status == WorkflowExecutionStatus.RUNNING:
        return EXIT_OK
    if status == WorkflowExecutionStatus.COMPLETED:
        typed = client.get_workflow_handle(handle.id, result_type=BulkReprotectResult)
        return exit_code_for(await typed.result())
    if status == WorkflowExecutionStatus.CANCELED:
        return EXIT_CANCELLED
    return EXIT_FAILED


class _Display:
    """Rich live view on a terminal, plain lines otherwise, JSON for scripts."""

    def __init__(self, *, as_json: bool, quiet: bool = False) -> None:
        self._as_json = as_json
        self._quiet = quiet
        self._last_line = ""
        self._live: Any = None
        if not as_json and not quiet and sys.stdout.isatty():
            from rich.console import Console
            from rich.live import Live

            console = Console(no_color=not use_color())
            self._live = Live(console=console, refresh_per_second=4)
            self._live.start()

    def show(self, run_id: str, progress: BulkProgress, plans: list[PlanLive]) -> None:
        if self._quiet:
            return
        if self._as_json:
            echo_json({"run_id": run_id, **progress.model_dump(mode="json")})
        elif self._live is not None:
            self._live.update(render_table(run_id, progress, plans))
        else:
            line = render_plain(progress, plans)
            if line != self._last_line:
                click.echo(line)
                self._last_line = line

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()


async def _control(run_id: str, update: str, arg: Any = None) -> ControlAck:
    _, handle = await _handle(run_id)
    await _describe_or_fail(handle)
    args = [] if arg is None else [arg]
    try:
        return await handle.execute_update(update, args=args, result_type=ControlAck)
    except Exception as exc:
        raise ConfigProblem(f"{update} rejected: {getattr(exc, 'message', exc)}") from None


def _print_ack(ack: ControlAck) -> int:
    click.echo(f"{ack.message} (state {ack.state.value}, concurrency {ack.concurrency})")
    return EXIT_OK


@click.command("status")
@click.argument("run_id")
@click.option("--watch", is_flag=True, help="Keep showing progress until the run ends.")
@click.option("--json", "as_json", is_flag=True, help="Print progress as JSON.")
def status(run_id: str, watch: bool, as_json: bool) -> int:
    """Show a bulk run: counts, plans in flight with step and SRM task %, ETA, results.

    Exit code: 0 running or all plans good, 3 partial failure, 1 all failed, 4 cancelled.
    """

    async def go() -> int:
        client, handle = await _handle(run_id)
        return await watch_run(client, handle, watch=watch, as_json=as_json)

    return run_async(go())


@click.command("pause")
@click.argument("run_id")
def pause(run_id: str) -> int:
    """Start no new plans in RUN_ID; running plans finish."""
    return _print_ack(run_async(_control(run_id, "pause")))


@click.command("resume")
@click.argument("run_id")
def resume(run_id: str) -> int:
    """Resume starting plans in a paused RUN_ID."""
    return _print_ack(run_async(_control(run_id, "resume")))


@click.command("cancel")
@click.argument("run_id")
@click.option("--running", is_flag=True, help="Also cancel plans already running in SRM.")
@click.option("--reason", help="Recorded in the run's result.")
def cancel(run_id: str, running: bool, reason: str | None) -> int:
    """Start no more plans in RUN_ID (and with --running, cancel the running ones)."""
    request = CancelRemaining(cancel_running=running, reason=reason)
    return _print_ack(run_async(_control(run_id, "cancel_remaining", request)))


@click.command("set-concurrency")
@click.argument("run_id")
@click.argument("n", type=click.IntRange(1, MAX_CONCURRENCY))
def set_concurrency(run_id: str, n: int) -> int:
    """Change how many plans of RUN_ID may run at once."""
    change = ConcurrencyChange(max_concurrency=n)
    return _print_ack(run_async(_control(run_id, "set_concurrency", change)))


@click.command("approve")
@click.argument("run_id")
@click.option("--plan", "plan_id", required=True, help="Plan to reprotect with forced=true.")
@click.option("--approver", required=True, help="Your name, recorded in the run's result.")
def approve(run_id: str, plan_id: str, approver: str) -> int:
    """Approve a forced reprotect of a plan that stayed INCOMPLETE_REPROTECT."""
    approval = ForcedApproval(plan_id=plan_id, approver=approver)
    return _print_ack(run_async(_control(run_id, "approve_forced", approval)))


@click.command("runs")
@click.option("--limit", default=20, show_default=True, help="How many runs to list.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def runs(limit: int, as_json: bool) -> int:
    """List recent bulk runs, newest first."""

    async def go() -> list[dict[str, Any]]:
        settings = settings_or_fail()
        client = await connect(settings)
        rows: list[dict[str, Any]] = []
        query = f"WorkflowType = '{BULK_TYPE}'"
        async for wf in client.list_workflows(query, limit=limit):
            rows.append(
                {
                    "run_id": wf.id,
                    "status": wf.status.name if wf.status else None,
                    "started": wf.start_time.isoformat() if wf.start_time else None,
                    "closed": wf.close_time.isoformat() if wf.close_time else None,
                }
            )
        return rows

    rows = run_async(go())
    if as_json:
        echo_json(rows)
    elif not rows:
        click.echo("no bulk runs yet")
    else:
        for row in rows:
            click.echo(f"{row['run_id']}  {row['status']:<11} started {row['started']}")
    return EXIT_OK
