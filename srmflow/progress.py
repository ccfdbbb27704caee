"""Live progress of runs for people: per-plan step and SRM task %, bars, tables, plain lines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from temporalio.client import Client

from workflows.bulk_models import BulkProgress, InFlightPlan
from workflows.models import ReprotectProgress, TaskProgress

WAIT_ACTIVITY = "wait_for_task"
DONE_OUTCOMES = ("REPROTECTED", "ALREADY_PROTECTED", "FAILED", "CANCELLED", "SKIPPED")


@dataclass
class PlanLive:
    """What one running plan is doing right now."""

    plan_id: str
    plan_name: str | None
    step: str
    percent: int | None
    waiting_for_approval: bool = False


async def task_percent(client: Client, workflow_id: str) -> int | None:
    """SRM task progress from the heartbeat of the plan's pending wait_for_task activity."""
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
    except Exception:
        return None
    for pending in description.raw_description.pending_activities:
        # Other activities heartbeat too (liveness only); only wait_for_task carries progress.
        if pending.activity_type.name == WAIT_ACTIVITY and pending.heartbeat_details.payloads:
            values = await client.data_converter.decode(
                pending.heartbeat_details.payloads, [TaskProgress]
            )
            if values and isinstance(values[0], TaskProgress):
                return values[0].progress
    return None


async def plan_live(client: Client, plan: InFlightPlan) -> PlanLive:
    """Step (from the plan workflow's progress query) and task % (from its heartbeat)."""
    step = "waiting for approval" if plan.waiting_for_approval else "starting"
    percent = None
    try:
        progress = await client.get_workflow_handle(plan.workflow_id).query(
            "progress", result_type=ReprotectProgress
        )
        step = "waiting for approval" if plan.waiting_for_approval else progress.step.value
        percent = progress.task_progress
    except Exception:
        return PlanLive(plan.plan_id, plan.plan_name, step, None, plan.waiting_for_approval)
    live = await task_percent(client, plan.workflow_id)
    return PlanLive(
        plan.plan_id,
        plan.plan_name,
        step,
        live if live is not None else percent,
        plan.waiting_for_approval,
    )


def _finished(progress: BulkProgress) -> int:
    return sum(progress.counts.get(outcome, 0) for outcome in DONE_OUTCOMES)


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def render_plain(progress: BulkProgress, plans: list[PlanLive]) -> str:
    """One line for logs and non-terminals."""
    counts = " ".join(f"{k}={v}" for k, v in sorted(progress.counts.items()) if v)
    running = ", ".join(
        f"{p.plan_name or p.plan_id}:{p.step}{'' if p.percent is None else f' {p.percent}%'}"
        for p in plans
    )
    return (
        f"[{progress.state.value}] {_finished(progress)}/{progress.selected} done"
        f" ({counts or 'none yet'}); in flight {len(plans)}/{progress.concurrency}"
        f"; queued {progress.queued}; eta {_eta(progress.eta_seconds)}"
        + (f"; running: {running}" if running else "")
    )


def render_table(run_id: str, progress: BulkProgress, plans: list[PlanLive]) -> Any:
    """A rich renderable: overall bar, one bar per plan in flight, outcome counts."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    header = Table.grid(padding=(0, 1))
    header.add_row(
        f"[bold]{run_id}[/bold]",
        f"{progress.state.value}",
        f"{_finished(progress)}/{progress.selected} done",
        f"eta {_eta(progress.eta_seconds)}",
    )
    header.add_row(
        "overall",
        ProgressBar(total=max(progress.selected, 1), completed=_finished(progress), width=40),
        " ".join(f"{k}={v}" for k, v in sorted(progress.counts.items()) if v),
        "",
    )
    table = Table(title=f"in flight {len(plans)}/{progress.concurrency}", expand=False)
    for column in ("plan", "step", "SRM task"):
        table.add_column(column)
    for plan in plans:
        bar: Any = (
            ProgressBar(total=100, completed=plan.percent, width=30)
            if plan.percent is not None
            else "-"
        )
        table.add_row(plan.plan_name or plan.plan_id, plan.step, bar)
    return Group(header, table)
