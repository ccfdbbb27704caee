"""``srmflow drill``: run test or failback drills now, or on a Temporal Schedule.

``drill run`` starts one DrillWorkflow (``--wait`` prints a line per plan step and the
verdict); ``drill schedule create|list|describe|pause|unpause|trigger|delete`` manages Temporal
Schedules (overlap policy SKIP) whose action starts a DrillWorkflow; ``drill report`` renders a
finished drill; ``drill approve`` ends a hold.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleHandle,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    WorkflowHandle,
)
from temporalio.service import RPCError

from srmflow.cli.common import ConfigProblem, echo_json, run_async, settings_or_fail
from srmflow.report import FORMATS, render_drill
from srmflow.settings import Settings
from srmflow.temporal import connect
from workflows.drill_models import (
    DrillApproval,
    DrillInput,
    DrillMode,
    DrillProgress,
    DrillResult,
    WebhookTarget,
    drill_workflow_id,
)
from workflows.models import DEFAULT_SITE

SCHEDULE_PREFIX = "srmflow-drill-"
DRILL_TYPE = "DrillWorkflow"
EXIT_OK, EXIT_FAILED, EXIT_PARTIAL = 0, 1, 3
REFRESH_SECONDS = 1.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``30m``, ``2h`` or ``1d``."""
    match = _DURATION.match(text.lower())
    if match is None:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 30m, 2h")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _duration_option(name: str, help_text: str) -> Callable[[Any], Any]:
    return click.option(
        name,
        callback=lambda _ctx, _param, value: None if value is None else parse_duration(value),
        help=help_text,
    )


def drill_options(func: Any) -> Any:
    """Options shared by ``drill run`` and ``drill schedule create``."""
    options = [
        click.option("--plans", "plan_ids", multiple=True, help="Plan id (repeatable)."),
        click.option("--match", "glob", help="Plans whose name matches this glob, e.g. 'app-*'."),
        click.option(
            "--mode",
            type=click.Choice([m.value for m in DrillMode]),
            default="test",
            show_default=True,
            help="test (non-disruptive) or failback (disruptive).",
        ),
        _duration_option("--rto-target", "Pass when each plan's RTO is at most this (e.g. 30m)."),
        click.option("--allow-disruptive", is_flag=True, help="Required for --mode failback."),
        _duration_option("--hold", "Hold after test/failover before cleanup/failback."),
        click.option("--require-approval", is_flag=True, help="Hold until `drill approve`."),
        click.option("--forced-cleanup", is_flag=True, help="Test drill: cleanup forced=true."),
        click.option("--concurrency", type=click.IntRange(1, 200), default=5, show_default=True),
        click.option("--keep-going", is_flag=True, help="Keep starting plans after a failure."),
        click.option("--webhook", help="URL receiving signed JSON POSTs on completion/failure."),
        click.option("--site", default=DEFAULT_SITE, show_default=True, help="SRM site."),
        click.option("--pairing", help="SRM pairing id (default: the site's only pairing)."),
        click.option("--poll", type=click.FloatRange(min=1), default=5.0, show_default=True),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_input(options: dict[str, Any], requested_by: str) -> DrillInput:
    """DrillInput from the shared options; exits 2 with a clear message when invalid."""
    plan_ids, glob = list(options["plan_ids"]), options["glob"]
    if bool(plan_ids) == bool(glob):
        raise click.UsageError("choose the plans with either --plans or --match")
    inp = DrillInput(
        site=options["site"],
        pairing_id=options["pairing"],
        plan_ids=plan_ids,
        plan_name_glob=glob,
        mode=DrillMode(options["mode"]),
        allow_disruptive=options["allow_disruptive"],
        max_concurrency=options["concurrency"],
        rto_target_seconds=options["rto_target"],
        hold_seconds=options["hold"],
        require_approval=options["require_approval"],
        forced_cleanup=options["forced_cleanup"],
        stop_on_failure=not options["keep_going"],
        poll_interval_seconds=options["poll"],
        webhook=WebhookTarget(url=options["webhook"]) if options["webhook"] else None,
        requested_by=requested_by,
    )
    problem = inp.problem()
    if problem is not None:
        raise click.UsageError(problem)
    return inp


def _requester(what: str) -> str:
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()} ({what})"


async def _client() -> tuple[Settings, Client]:
    settings = settings_or_fail()
    try:
        return settings, await connect(settings)
    except RuntimeError as exc:
        raise ConfigProblem(
            f"cannot reach Temporal at {settings.temporal_address}: {exc}"
        ) from None


def exit_code(result: DrillResult) -> int:
    """0 drill passed, 3 some plans passed, 1 none did."""
    if result.passed:
        return EXIT_OK
    return EXIT_PARTIAL if result.counts.get("PASSED", 0) else EXIT_FAILED


def summary(result: DrillResult) -> str:
    """Verdict, counts and one line per plan that did not pass."""
    counts = ", ".join(f"{k} {v}" for k, v in result.counts.items() if v) or "no plans"
    rto = f"{result.max_rto_seconds:.1f} s" if result.max_rto_seconds is not None else "-"
    verdict = "PASS" if result.passed else "FAIL"
    lines = [f"{result.mode.value} drill {verdict}: {counts}; max RTO {rto}"]
    for row in result.plans:
        if row.verdict != "pass":
            where = f"at {row.plan_status}" if row.plan_status else ""
            lines.append(f"  {row.plan_name or row.plan_id}: {row.verdict} {where}".rstrip())
            if row.reason:
                lines.append(f"    reason: {row.reason}")
            if row.next_action:
                lines.append(f"    next: {row.next_action}")
    if result.stop_reason:
        lines.append(f"  stopped: {result.stop_reason}")
    return "\n".join(lines)


async def follow(handle: WorkflowHandle[Any, Any]) -> DrillResult:
    """Print a line whenever a plan changes step or state; return the drill's result."""
    result = asyncio.ensure_future(handle.result())
    seen: dict[str, tuple[str, str | None]] = {}
    while not result.done():
        try:
            progress = await handle.query("progress", result_type=DrillProgress)
        except RPCError:
            progress = None
        for line in _changes(progress, seen) if progress else []:
            click.echo(line)
        await asyncio.wait({result}, timeout=REFRESH_SECONDS)
    value = result.result()
    return value if isinstance(value, DrillResult) else DrillResult.model_validate(value)


def _changes(progress: DrillProgress, seen: dict[str, tuple[str, str | None]]) -> list[str]:
    lines = []
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    for row in progress.plans:
        key = (row.state.value, row.current_step.value if row.current_step else None)
        if seen.get(row.plan_id) == key:
            continue
        seen[row.plan_id] = key
        step = f" {key[1]}" if key[1] else ""
        rto = f" RTO {row.rto_seconds:.1f}s" if row.rto_seconds is not None else ""
        lines.append(f"{stamp} {row.plan_name or row.plan_id}: {key[0]}{step}{rto}")
    return lines


@click.group()
def drill() -> None:
    """Test and failback drills with measured RTO, run now or on a schedule."""


@drill.command("run")
@drill_options
@click.option("--wait", is_flag=True, help="Print progress lines and wait for the verdict.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def run_cmd(wait: bool, as_json: bool, **options: Any) -> None:
    """Run one drill now (prints the run id; --wait follows it to the verdict)."""
    inp = build_input(options, _requester("srmflow drill run"))

    async def go() -> int:
        settings, client = await _client()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        run_id = drill_workflow_id(inp.site, f"{inp.mode.value}-{stamp}")
        handle = await client.start_workflow(
            DRILL_TYPE, inp, id=run_id, task_queue=settings.task_queue, result_type=DrillResult
        )
        if not wait:
            if as_json:
                echo_json({"run_id": run_id})
            else:
                click.echo(run_id)
            return EXIT_OK
        if not as_json:
            click.echo(run_id)
        result = await (handle.result() if as_json else follow(handle))
        if as_json:
            echo_json(result.model_dump(mode="json"))
        else:
            click.echo(summary(result))
        return exit_code(result)

    raise SystemExit(run_async(go()))


@drill.command("approve")
@click.argument("run_id")
@click.option("--approver", required=True, help="Who approves (recorded in the report).")
@click.option("--plan", "plan_ids", multiple=True, help="Only these plans (default: all).")
def approve_cmd(run_id: str, approver: str, plan_ids: tuple[str, ...]) -> None:
    """End the hold of a drill (all its plans, or the named ones)."""

    async def go() -> None:
        _, client = await _client()
        ack = await client.get_workflow_handle(run_id).execute_update(
            "approve", DrillApproval(approver=approver, plan_ids=list(plan_ids))
        )
        click.echo(f"released: {', '.join(ack['released']) or 'none yet'}")

    run_async(go())


@drill.command("report")
@click.argument("run_id")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="md", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file.")
def report_cmd(run_id: str, fmt: str, out: Path | None) -> None:
    """Report of a finished drill: per-plan RTO, verdict and where each plan stands."""

    async def go() -> str:
        _, client = await _client()
        handle = client.get_workflow_handle(run_id, result_type=DrillResult)
        return render_drill(await handle.result(), fmt)

    text = run_async(go())
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        click.echo(f"report written to {out}")


# Schedules --------------------------------------------------------------------------------


@drill.group("schedule")
def schedule() -> None:
    """Drills on a Temporal Schedule (overlap policy SKIP)."""


def schedule_id(name: str) -> str:
    """Temporal Schedule id of a drill schedule."""
    return SCHEDULE_PREFIX + name


async def _schedule(name: str) -> tuple[Client, ScheduleHandle]:
    _, client = await _client()
    handle = client.get_schedule_handle(schedule_id(name))
    try:
        await handle.describe()
    except RPCError as exc:
        raise ConfigProblem(f"drill schedule {name!r} not found ({exc.message})") from None
    return client, handle


@schedule.command("create")
@click.argument("name")
@click.option("--cron", required=True, help="Cron expression, e.g. '0 2 * * SAT'.")
@click.option("--note", default="", help="Note shown by describe.")
@drill_options
def create_cmd(name: str, cron: str, note: str, **options: Any) -> None:
    """Create a schedule that runs the drill on CRON (never two runs at once)."""
    inp = build_input(options, f"schedule {name}")

    async def go() -> None:
        settings, client = await _client()
        action = ScheduleActionStartWorkflow(
            DRILL_TYPE,
            inp,
            id=drill_workflow_id(inp.site, f"schedule-{name}"),
            task_queue=settings.task_queue,
        )
        try:
            await client.create_schedule(
                schedule_id(name),
                Schedule(
                    action=action,
                    spec=ScheduleSpec(cron_expressions=[cron]),
                    policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
                    state=ScheduleState(note=note or f"srmflow {inp.mode.value} drill"),
                ),
                # The server turns cron into calendar specs; keep the operator's text too.
                memo={"cron": cron, "mode": inp.mode.value},
            )
        except RPCError as exc:
            raise ConfigProblem(f"cannot create schedule {name!r}: {exc.message}") from None
        click.echo(schedule_id(name))

    run_async(go())


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def list_cmd(as_json: bool) -> None:
    """List drill schedules: name, cron, paused, next run."""

    async def go() -> list[dict[str, Any]]:
        _, client = await _client()
        rows = []
        async for entry in await client.list_schedules():
            if not entry.id.startswith(SCHEDULE_PREFIX):
                continue
            sched = entry.schedule
            info = entry.info
            rows.append(
                {
                    "name": entry.id.removeprefix(SCHEDULE_PREFIX),
                    "cron": await entry.memo_value("cron", None),
                    "mode": await entry.memo_value("mode", None),
                    "paused": bool(sched and sched.state.paused),
                    "next_run": str(info.next_action_times[0])
                    if info and info.next_action_times
                    else None,
                }
            )
        return sorted(rows, key=lambda r: r["name"])

    rows = run_async(go())
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        state = "paused" if row["paused"] else "active"
        click.echo(f"{row['name']}\t{row['cron']}\t{row['mode']}\t{state}\tnext {row['next_run']}")


@schedule.command("describe")
@click.argument("name")
def describe_cmd(name: str) -> None:
    """Show a drill schedule: spec, state, drill input, next and recent runs (JSON)."""

    async def go() -> dict[str, Any]:
        client, handle = await _schedule(name)
        desc = await handle.describe()
        action = desc.schedule.action
        drill_input: Any = None
        if isinstance(action, ScheduleActionStartWorkflow) and action.args:
            args = await client.data_converter.decode(action.args, [DrillInput])  # type: ignore[arg-type]
            drill_input = args[0].model_dump(mode="json")
        return {
            "name": name,
            "schedule_id": desc.id,
            "cron": await desc.memo_value("cron", None),
            "overlap": desc.schedule.policy.overlap.name,
            "paused": desc.schedule.state.paused,
            "note": desc.schedule.state.note,
            "drill": drill_input,
            "next_runs": [str(t) for t in desc.info.next_action_times[:5]],
            "recent_runs": [
                {
                    "scheduled_at": str(a.scheduled_at),
                    "workflow_id": getattr(a.action, "workflow_id", None),
                }
                for a in desc.info.recent_actions
            ],
            "runs": desc.info.num_actions,
        }

    echo_json(run_async(go()))


@schedule.command("pause")
@click.argument("name")
@click.option("--note", default="paused by srmflow CLI", show_default=True)
def pause_cmd(name: str, note: str) -> None:
    """Pause a drill schedule (no new runs until unpaused)."""

    async def go() -> None:
        _, handle = await _schedule(name)
        await handle.pause(note=note)

    run_async(go())
    click.echo(f"paused {name}")


@schedule.command("unpause")
@click.argument("name")
@click.option("--note", default="unpaused by srmflow CLI", show_default=True)
def unpause_cmd(name: str, note: str) -> None:
    """Resume a paused drill schedule."""

    async def go() -> None:
        _, handle = await _schedule(name)
        await handle.unpause(note=note)

    run_async(go())
    click.echo(f"unpaused {name}")


@schedule.command("trigger")
@click.argument("name")
@click.option("--wait", is_flag=True, help="Follow the triggered drill to its verdict.")
@click.option(
    "--timeout",
    "wait_for_start",
    default=60.0,
    show_default=True,
    help="Seconds to wait for the triggered run to appear.",
)
def trigger_cmd(name: str, wait: bool, wait_for_start: float) -> None:
    """Run a drill schedule now (skipped if one of its runs is still going)."""

    async def go() -> int:
        client, handle = await _schedule(name)
        before = (await handle.describe()).info.num_actions
        await handle.trigger()
        if not wait:
            click.echo(f"triggered {name}")
            return EXIT_OK
        run_id = await _triggered_run(handle, before, wait_for_start)
        click.echo(run_id)
        result = await follow(client.get_workflow_handle(run_id, result_type=DrillResult))
        click.echo(summary(result))
        return exit_code(result)

    raise SystemExit(run_async(go()))


async def _triggered_run(handle: ScheduleHandle, before: int, within: float) -> str:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + within
    while True:
        info = (await handle.describe()).info
        if info.num_actions > before and info.recent_actions:
            newest = max(info.recent_actions, key=lambda a: a.started_at)
            workflow_id = getattr(newest.action, "workflow_id", None)
            if workflow_id:
                return str(workflow_id)
        if loop.time() > give_up:
            raise ConfigProblem("the triggered run did not start (overlap SKIP: one still runs?)")
        await asyncio.sleep(0.2)


@schedule.command("delete")
@click.argument("name")
def delete_cmd(name: str) -> None:
    """Delete a drill schedule (running drills continue)."""

    async def go() -> None:
        _, handle = await _schedule(name)
        await handle.delete()

    run_async(go())
    click.echo(f"deleted {name}")
