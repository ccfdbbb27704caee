"""Run reports a DR audit accepts: per-plan outcome, SRM task, step timings, errors; totals.

``collect_report`` reads a bulk run from Temporal: its rows (``bulk_rows`` gathers them from the
runs of a run that continued as new) merged with each plan workflow's own result; the
``render_*`` functions are pure. The HTML is one self-contained file (inline CSS and SVG, no
external URL) with a timeline of plans over time, so concurrency is visible on an offline
machine.
"""

from __future__ import annotations

import asyncio
import csv
import html
import io
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.service import RPCError

from workflows.bulk_models import (
    NOT_FOUND_REASON,
    BulkReprotectInput,
    BulkReprotectResult,
    PlanSummary,
    is_truncated,
    not_found_row,
    skipped_row,
)
from workflows.drill_models import DrillResult
from workflows.models import ReprotectOutcome, ReprotectPlanResult, reprotect_workflow_id

FORMATS = ("md", "json", "html", "csv")
STEP_NAMES = ("precheck", "start", "srm_task", "verify")
OUTCOME_COLOURS = {
    "REPROTECTED": "#2e7d32",
    "ALREADY_PROTECTED": "#1565c0",
    "FAILED": "#c62828",
    "CANCELLED": "#6d4c41",
    "SKIPPED": "#757575",
}


class PlanRow(BaseModel):
    """One plan's line in a report."""

    plan_id: str
    plan_name: str | None = None
    outcome: str
    srm_task_id: str | None = None
    final_plan_status: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_seconds: float | None = None
    steps: dict[str, float] = Field(default_factory=dict)
    attempts: int = 0
    forced_used: bool = False
    approved_by: str | None = None
    srm_error: str | None = None
    reason: str | None = None
    warnings: list[str] = Field(default_factory=list)
    workflow_id: str | None = None


class RunReport(BaseModel):
    """A whole run: who started it, when, totals and the plan rows."""

    run_id: str
    status: str
    site: str | None = None
    pairing_id: str | None = None
    requested_by: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_seconds: float | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    failures_by_cause: dict[str, list[str]] = Field(default_factory=dict)
    stop_reason: str | None = None
    plans: list[PlanRow] = Field(default_factory=list)


def _step_seconds(result: ReprotectPlanResult) -> dict[str, float]:
    seconds: dict[str, float] = {}
    for timing in result.steps:
        if timing.ended_at is not None:
            name = str(timing.step.value)
            elapsed = (timing.ended_at - timing.started_at).total_seconds()
            seconds[name] = round(seconds.get(name, 0.0) + elapsed, 3)
    return seconds


def plan_row(
    summary: PlanSummary, detail: ReprotectPlanResult | None, workflow_id: str | None = None
) -> PlanRow:
    """Merge the bulk row with the plan workflow's full result (when it is available): steps,
    warnings, and the whole reason and SRM message where the row holds them cut short."""
    duration = None
    if summary.started_at and summary.ended_at:
        duration = round((summary.ended_at - summary.started_at).total_seconds(), 3)
    reason, srm_error = summary.reason, summary.srm_error
    if detail is not None and detail.srm_task_id == summary.srm_task_id:
        if is_truncated(reason) and detail.reason:
            reason = detail.reason
        if (srm_error is None or is_truncated(srm_error)) and detail.srm_error:
            srm_error = detail.srm_error
    return PlanRow(
        plan_id=summary.plan_id,
        plan_name=summary.plan_name,
        outcome=summary.outcome.value,
        srm_task_id=summary.srm_task_id,
        final_plan_status=summary.final_plan_status,
        started_at=summary.started_at,
        ended_at=summary.ended_at,
        duration_seconds=duration,
        steps=_step_seconds(detail) if detail else {},
        attempts=summary.attempts,
        forced_used=summary.forced_used,
        approved_by=summary.approved_by,
        srm_error=srm_error,
        reason=reason,
        warnings=list(detail.warnings) if detail else [],
        workflow_id=workflow_id,
    )


async def _plan_detail(
    client: Client, workflow_id: str | None, limit: asyncio.Semaphore
) -> ReprotectPlanResult | None:
    if workflow_id is None:
        return None
    async with limit:
        try:
            handle = client.get_workflow_handle(workflow_id, result_type=ReprotectPlanResult)
            return await handle.result(follow_runs=False)
        except (RPCError, WorkflowFailureError):
            # Deleted by retention, or failed without a result: the bulk summary remains.
            return None


async def run_inputs(client: Client, run_id: str) -> AsyncIterator[BulkReprotectInput]:
    """The input of every run of a bulk workflow, newest first, along the continue-as-new
    chain (each run's first history event only; no worker needed)."""
    run: str | None = (await client.get_workflow_handle(run_id).describe()).run_id
    while run:
        handle = client.get_workflow_handle(run_id, run_id=run)
        started = None
        async for event in handle.fetch_history_events(page_size=1):
            started = event.workflow_execution_started_event_attributes
            break
        if started is None:
            return
        values = await client.data_converter.decode(started.input.payloads, [BulkReprotectInput])
        yield values[0]
        run = started.continued_execution_run_id or None


async def bulk_rows(client: Client, run_id: str, result: BulkReprotectResult) -> list[PlanSummary]:
    """Every plan's row of a finished bulk run, in the order the run recorded them.

    A result with ``plans_complete`` holds them all. Otherwise each run's rows are in the
    input of the run after it (``state.previous``) and the last run's in the result; the
    unknown and never-started plans are rebuilt from the id lists. Nothing is de-duplicated,
    so a plan recorded twice would show twice.
    """
    if result.plans_complete:
        return list(result.plans)
    segments = [list(result.plans)]
    async for inp in run_inputs(client, run_id):
        if inp.state is None:
            break
        segments.append(inp.state.previous)
        if inp.state.results:
            # A run from before segments carried every row so far (unknown ids included).
            segments.append([r for r in inp.state.results if r.reason != NOT_FOUND_REASON])
            break
    rows = [not_found_row(plan_id, result.started_at) for plan_id in result.unknown_plan_ids]
    for segment in reversed(segments):
        rows += segment
    rows += [skipped_row(plan_id, None, result.stop_reason) for plan_id in result.not_started]
    return rows


def _has_workflow(row: PlanSummary, unknown: set[str]) -> bool:
    """Whether the plan got a reprotect workflow (not for unknown ids nor unstarted plans)."""
    if row.outcome == ReprotectOutcome.SKIPPED or row.plan_id in unknown:
        return False
    return row.reason != NOT_FOUND_REASON


async def collect_report(client: Client, run_id: str) -> RunReport:
    """Read a finished bulk run and its plans' workflows into a RunReport."""
    handle = client.get_workflow_handle(run_id, result_type=BulkReprotectResult)
    description = await handle.describe()
    if description.status == WorkflowExecutionStatus.RUNNING:
        raise ValueError(f"run {run_id} is still running; wait for it or use `srmflow status`")
    result = await handle.result()
    rows = await bulk_rows(client, run_id, result)
    unknown = set(result.unknown_plan_ids)
    workflow_ids = [
        reprotect_workflow_id(result.site, result.pairing_id or "", row.plan_id)
        if _has_workflow(row, unknown)
        else None
        for row in rows
    ]
    limit = asyncio.Semaphore(20)
    details = await asyncio.gather(
        *(_plan_detail(client, workflow_id, limit) for workflow_id in workflow_ids)
    )
    return RunReport(
        run_id=run_id,
        status=description.status.name if description.status else "UNKNOWN",
        site=result.site,
        pairing_id=result.pairing_id,
        requested_by=result.requested_by,
        started_at=result.started_at,
        ended_at=result.ended_at,
        duration_seconds=result.duration_seconds,
        counts=result.counts,
        failures_by_cause=result.failures_by_cause,
        stop_reason=result.stop_reason,
        plans=[
            plan_row(row, detail, workflow_id)
            for row, detail, workflow_id in zip(rows, details, workflow_ids, strict=True)
        ],
    )


def render(report: RunReport, fmt: str) -> str:
    """The report in one of FORMATS."""
    renderers = {"md": render_md, "json": render_json, "html": render_html, "csv": render_csv}
    if fmt not in renderers:
        raise ValueError(f"unknown report format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return renderers[fmt](report)


def render_json(report: RunReport) -> str:
    """Machine-readable report."""
    return json.dumps(report.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


CSV_COLUMNS = [
    "plan_id",
    "plan_name",
    "outcome",
    "srm_task_id",
    "final_plan_status",
    "started_at",
    "ended_at",
    "duration_seconds",
    *(f"{step}_seconds" for step in STEP_NAMES),
    "attempts",
    "forced_used",
    "approved_by",
    "srm_error",
    "reason",
    "warnings",
]


def render_csv(report: RunReport) -> str:
    """One row per plan, for spreadsheets."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in report.plans:
        data: dict[str, Any] = row.model_dump(mode="json", include=set(CSV_COLUMNS))
        for step in STEP_NAMES:
            data[f"{step}_seconds"] = row.steps.get(step)
        data["warnings"] = "; ".join(row.warnings)
        writer.writerow(data)
    return out.getvalue()


def _md_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _summary_lines(report: RunReport) -> list[tuple[str, str]]:
    return [
        ("Run", report.run_id),
        ("Status", report.status),
        ("Site / pairing", f"{report.site} / {report.pairing_id}"),
        ("Requested by", report.requested_by or "-"),
        ("Started", str(report.started_at)),
        ("Ended", str(report.ended_at)),
        ("Duration (s)", f"{report.duration_seconds or 0:.1f}"),
        ("Outcomes", ", ".join(f"{k} {v}" for k, v in report.counts.items() if v) or "-"),
        ("Stop reason", report.stop_reason or "-"),
    ]


def render_md(report: RunReport) -> str:
    """Markdown for tickets and change records."""
    lines = [f"# srmflow reprotect report: {report.run_id}", ""]
    lines += [f"- **{k}**: {_md_cell(v)}" for k, v in _summary_lines(report)]
    if report.failures_by_cause:
        lines += ["", "## Failures by cause", ""]
        lines += [f"- {cause}: {', '.join(ids)}" for cause, ids in report.failures_by_cause.items()]
    header = ["plan", "outcome", "SRM task", "duration s", *STEP_NAMES, "attempts", "detail"]
    lines += ["", "## Plans", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + " --- |" * len(header))
    for row in report.plans:
        detail = row.srm_error or row.reason or ""
        if row.approved_by:
            detail = f"forced, approved by {row.approved_by}. {detail}"
        cells = [
            row.plan_name or row.plan_id,
            row.outcome,
            row.srm_task_id,
            row.duration_seconds,
            *(row.steps.get(step) for step in STEP_NAMES),
            row.attempts,
            detail,
        ]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _timeline_svg(report: RunReport) -> str:
    rows = [(r, r.started_at, r.ended_at) for r in report.plans if r.started_at and r.ended_at]
    if not rows:
        return "<p>No plan ran.</p>"
    start = min(began for _, began, _ in rows)
    end = max(ended for _, _, ended in rows)
    span = max((end - start).total_seconds(), 1.0)
    width, label_w, bar_h = 900, 180, 14
    height = bar_h * len(rows) + 30
    parts = [
        f'<svg class="timeline" width="{width + label_w}" '
        f'height="{height}" role="img" aria-label="timeline of plans">'
    ]
    for index, (row, began, ended) in enumerate(rows):
        x = label_w + (began - start).total_seconds() / span * width
        w = max((ended - began).total_seconds() / span * width, 1.0)
        y = 5 + index * bar_h
        colour = OUTCOME_COLOURS.get(row.outcome, "#999")
        name = html.escape(row.plan_name or row.plan_id)
        parts.append(f'<text x="0" y="{y + 10}" font-size="10">{name}</text>')
        parts.append(
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h - 3}" fill="{colour}">'
            f"<title>{name}: {row.outcome}, {row.duration_seconds} s</title></rect>"
        )
    parts.append(
        f'<text x="{label_w}" y="{height - 5}" font-size="10">0 s</text>'
        f'<text x="{label_w + width - 40}" y="{height - 5}" font-size="10">{span:.0f} s</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: RunReport) -> str:
    """A single self-contained HTML file (no external URL) with a timeline chart."""
    esc = html.escape
    summary = "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in _summary_lines(report)
    )
    header = ["plan", "outcome", "SRM task", "duration s", *STEP_NAMES, "attempts", "detail"]
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in report.plans:
        detail = row.srm_error or row.reason or ""
        if row.approved_by:
            detail = f"forced, approved by {row.approved_by}. {detail}"
        cells = [
            row.plan_name or row.plan_id,
            row.outcome,
            row.srm_task_id or "",
            row.duration_seconds if row.duration_seconds is not None else "",
            *(row.steps.get(step, "") for step in STEP_NAMES),
            row.attempts,
            detail,
        ]
        colour = OUTCOME_COLOURS.get(row.outcome, "#999")
        tds = "".join(f"<td>{esc(str(c))}</td>" for c in cells)
        body.append(f'<tr style="border-left:4px solid {colour}">{tds}</tr>')
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>srmflow report {esc(report.run_id)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px;text-align:left}"
        "</style></head><body>"
        f'<h1>srmflow reprotect report</h1><table class="summary">{summary}</table>'
        f"<h2>Timeline</h2>{_timeline_svg(report)}"
        f'<h2>Plans</h2><table class="plans"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></body></html>\n"
    )


# Drill reports ---------------------------------------------------------------------------

DRILL_COLUMNS = [
    "plan_id",
    "plan_name",
    "state",
    "verdict",
    "rto_seconds",
    "rto_target_seconds",
    "rto_passed",
    "return_rto_seconds",
    "last_completed_step",
    "failed_step",
    "plan_status",
    "protected_site",
    "recovery_site",
    "in_original_direction",
    "started_at",
    "ended_at",
    "approved_by",
    "reason",
    "next_action",
]
DRILL_STATE_COLOURS = {
    "PASSED": "#2e7d32",
    "FAILED": "#c62828",
    "NOT_STARTED": "#757575",
    "CANCELLED": "#6d4c41",
    "RUNNING": "#1565c0",
    "PENDING": "#9e9e9e",
}


def _drill_rows(result: DrillResult) -> list[dict[str, Any]]:
    rows = []
    for row in result.plans:
        data: dict[str, Any] = row.model_dump(mode="json", include=set(DRILL_COLUMNS))
        sites = row.sites_now or row.sites_before
        data["protected_site"] = sites.protected_site_name if sites else None
        data["recovery_site"] = sites.recovery_site_name if sites else None
        for key in ("rto_seconds", "return_rto_seconds"):
            if data.get(key) is not None:
                data[key] = round(float(data[key]), 1)
        rows.append({column: data.get(column) for column in DRILL_COLUMNS})
    return rows


def _drill_summary(result: DrillResult) -> list[tuple[str, str]]:
    target = result.rto_target_seconds
    return [
        ("Mode", result.mode.value),
        ("Verdict", "PASS" if result.passed else "FAIL"),
        ("Site / pairing", f"{result.site} / {result.pairing_id}"),
        ("Requested by", result.requested_by or "-"),
        ("Started", str(result.started_at)),
        ("Ended", str(result.ended_at)),
        ("Duration (s)", f"{result.duration_seconds:.1f}"),
        ("RTO target (s)", f"{target:.0f}" if target is not None else "-"),
        ("Max RTO (s)", f"{result.max_rto_seconds:.1f}" if result.max_rto_seconds else "-"),
        ("Plans", ", ".join(f"{k} {v}" for k, v in result.counts.items() if v) or "-"),
        ("Unknown plan ids", ", ".join(result.unknown_plan_ids) or "-"),
        ("Stop reason", result.stop_reason or "-"),
    ]


def render_drill(result: DrillResult, fmt: str) -> str:
    """A drill report (per-plan RTO, verdict, where each plan stands) in one of FORMATS."""
    if fmt == "json":
        return json.dumps(result.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=DRILL_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(_drill_rows(result))
        return out.getvalue()
    if fmt == "md":
        return render_drill_md(result)
    if fmt == "html":
        return render_drill_html(result)
    raise ValueError(f"unknown report format {fmt!r}; choose one of {', '.join(FORMATS)}")


DRILL_TABLE = [
    ("plan", "plan_name"),
    ("state", "state"),
    ("verdict", "verdict"),
    ("RTO s", "rto_seconds"),
    ("return RTO s", "return_rto_seconds"),
    ("last step done", "last_completed_step"),
    ("plan status", "plan_status"),
    ("protected at", "protected_site"),
    ("next action / reason", "next_action"),
]


def render_drill_md(result: DrillResult) -> str:
    """Markdown drill report for tickets and DR audit records."""
    lines = [f"# srmflow {result.mode.value} drill report", ""]
    lines += [f"- **{k}**: {_md_cell(v)}" for k, v in _drill_summary(result)]
    lines += ["", "## Plans", "", "| " + " | ".join(h for h, _ in DRILL_TABLE) + " |"]
    lines.append("|" + " --- |" * len(DRILL_TABLE))
    for data in _drill_rows(result):
        data["plan_name"] = data["plan_name"] or data["plan_id"]
        if data["reason"]:
            data["next_action"] = f"{data['reason']}. Next: {data['next_action'] or '-'}"
        lines.append("| " + " | ".join(_md_cell(data[key]) for _, key in DRILL_TABLE) + " |")
    return "\n".join(lines) + "\n"


def render_drill_html(result: DrillResult) -> str:
    """Self-contained HTML drill report (no external URL)."""
    esc = html.escape
    summary = "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in _drill_summary(result)
    )
    head = "".join(f"<th>{esc(h)}</th>" for h, _ in DRILL_TABLE)
    body = []
    for data in _drill_rows(result):
        data["plan_name"] = data["plan_name"] or data["plan_id"]
        if data["reason"]:
            data["next_action"] = f"{data['reason']}. Next: {data['next_action'] or '-'}"
        colour = DRILL_STATE_COLOURS.get(str(data["state"]), "#999")
        tds = "".join(
            f"<td>{esc('' if data[key] is None else str(data[key]))}</td>" for _, key in DRILL_TABLE
        )
        body.append(f'<tr style="border-left:4px solid {colour}">{tds}</tr>')
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>srmflow {esc(result.mode.value)} drill</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;font-size:13px}"
        f"</style></head><body><h1>srmflow {esc(result.mode.value)} drill report</h1>"
        f"<table>{summary}</table><h2>Plans</h2><table><tr>{head}</tr>{''.join(body)}</table>"
        "</body></html>\n"
    )
