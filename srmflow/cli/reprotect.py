"""``srmflow reprotect``: start (or attach to) the reprotect workflow of one plan.

The workflow id is the business key ``reprotect/<site>/<pairing>/<plan>``, started with
USE_EXISTING, so running the command twice attaches to the same run instead of racing it.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import click
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy

from srmflow.log import configure_logging
from srmflow.progress import task_percent
from srmflow.settings import DEFAULT_SITE, ConfigError, Settings, load_settings
from srmflow.temporal import connect
from workflows.bulk_models import (
    MAX_CONCURRENCY,
    BulkReprotectInput,
    BulkReprotectResult,
    bulk_workflow_id,
)
from workflows.models import (
    ReprotectOutcome,
    ReprotectPlanInput,
    ReprotectPlanResult,
    ReprotectProgress,
    Step,
    reprotect_workflow_id,
)
from workflows.reprotect import ReprotectPlanWorkflow

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 4
EXIT_CODES: dict[ReprotectOutcome, int] = {
    ReprotectOutcome.REPROTECTED: EXIT_OK,
    ReprotectOutcome.ALREADY_PROTECTED: EXIT_OK,
    ReprotectOutcome.FAILED: EXIT_FAILED,
    ReprotectOutcome.SKIPPED: EXIT_FAILED,
    ReprotectOutcome.CANCELLED: EXIT_CANCELLED,
}
REFRESH_SECONDS = 1.0


class UsageProblem(Exception):
    """Bad input or configuration: exit 2 with this message."""


@click.command()
@click.option(
    "--plan",
    "plan_ids",
    multiple=True,
    help="Recovery plan id, as SRM reports it (repeat for several plans: a bulk run).",
)
@click.option(
    "--all-recovered",
    is_flag=True,
    help="Bulk: every plan whose status needs reprotect (RECOVERY_COMPLETE, incomplete).",
)
@click.option("--match", "glob", help="Bulk: plans whose name matches this glob, e.g. 'app-*'.")
@click.option(
    "--concurrency",
    type=click.IntRange(1, MAX_CONCURRENCY),
    default=10,
    show_default=True,
    help="Bulk: plans in flight at most.",
)
@click.option("--dry-run", is_flag=True, help="Bulk: prechecks only; report what would happen.")
@click.option(
    "--stop-after-failures",
    type=click.IntRange(min=1),
    help="Bulk: start no new plans after this many failures.",
)
@click.option(
    "--approval-timeout",
    type=click.FloatRange(min=1),
    default=3600.0,
    show_default=True,
    help="Bulk: seconds to wait for `srmflow approve` before failing a plan that needs forced.",
)
@click.option("--site", default=DEFAULT_SITE, show_default=True, help="Configured SRM site.")
@click.option(
    "--pairing",
    "pairing_id",
    help="SRM pairing id. Optional when this host has the site's credentials and the site "
    "has exactly one pairing.",
)
@click.option("--forced", is_flag=True, help="Reprotect with forced=true (may leak storage).")
@click.option(
    "--allow-forced-retry", is_flag=True, help="Let the re-run after INCOMPLETE use forced."
)
@click.option("--no-verify", is_flag=True, help="Skip the post-reprotect verification.")
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=1),
    default=5.0,
    show_default=True,
    help="Seconds between SRM task polls.",
)
@click.option("--deadline", type=click.FloatRange(min=1), help="Give up waiting after N seconds.")
@click.option("--wait", is_flag=True, help="Show progress and wait for the outcome.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def reprotect(
    plan_ids: tuple[str, ...],
    all_recovered: bool,
    glob: str | None,
    concurrency: int,
    dry_run: bool,
    stop_after_failures: int | None,
    approval_timeout: float,
    site: str,
    pairing_id: str | None,
    forced: bool,
    allow_forced_retry: bool,
    no_verify: bool,
    poll_interval: float,
    deadline: float | None,
    wait: bool,
    as_json: bool,
) -> int:
    """Reprotect one plan (--plan ID) or many (--plan ... | --match GLOB | --all-recovered).

    One plan runs ReprotectPlanWorkflow and prints its id; running it again attaches to the
    running workflow, and on a protected plan it ends ALREADY_PROTECTED, harmlessly. Several
    plans run BulkReprotectWorkflow (bounded concurrency, protection-group conflicts avoided)
    and print the run id for `srmflow status|pause|resume|cancel|approve|report`.

    \b
    Exit codes (with --wait; without it, 0 once the workflow is started):
      0  every plan REPROTECTED or ALREADY_PROTECTED
      1  FAILED (the reason and SRM's message are printed); bulk: no plan succeeded
      2  usage or configuration error (nothing was started)
      3  bulk: partial failure (some plans failed, were skipped or cancelled)
      4  CANCELLED
    """
    selections = sum([bool(plan_ids), bool(glob), all_recovered])
    if selections != 1:
        click.echo(
            "srmflow reprotect: choose the plans with exactly one of --plan (repeatable), "
            "--match GLOB or --all-recovered",
            err=True,
        )
        return EXIT_USAGE
    if glob or all_recovered or dry_run or len(plan_ids) > 1:
        bulk = BulkReprotectInput(
            site=site,
            pairing_id=pairing_id,
            plan_ids=list(plan_ids),
            plan_name_glob=glob,
            all_recovered=all_recovered,
            max_concurrency=concurrency,
            forced=forced,
            dry_run=dry_run,
            stop_after_failures=stop_after_failures,
            approval_timeout_seconds=approval_timeout,
            verify=not no_verify,
            poll_interval_seconds=poll_interval,
            plan_deadline_seconds=deadline,
            requested_by=_requester(),
        )
        try:
            return asyncio.run(_bulk(bulk, wait=wait or dry_run, as_json=as_json))
        except (UsageProblem, ConfigError) as exc:
            click.echo(f"srmflow reprotect: {exc}", err=True)
            return EXIT_USAGE
    inp = ReprotectPlanInput(
        site=site,
        pairing_id=pairing_id,
        plan_id=plan_ids[0],
        forced=forced,
        allow_forced_retry=allow_forced_retry,
        verify=not no_verify,
        poll_interval_seconds=poll_interval,
        deadline_seconds=deadline,
    )
    try:
        return asyncio.run(_reprotect(inp, wait=wait, as_json=as_json))
    except (UsageProblem, ConfigError) as exc:
        click.echo(f"srmflow reprotect: {exc}", err=True)
        return EXIT_USAGE


async def _reprotect(inp: ReprotectPlanInput, *, wait: bool, as_json: bool) -> int:
    settings = load_settings()
    # Logs (e.g. of the pairing look-up) go to stderr, keeping stdout for the id and JSON.
    configure_logging(settings.log_level, settings.log_format)
    pairing_id = inp.pairing_id or await resolve_pairing(settings, inp.site)
    inp = inp.model_copy(update={"pairing_id": pairing_id})
    try:
        client = await connect(settings)
    except RuntimeError as exc:
        raise UsageProblem(f"cannot reach Temporal at {settings.temporal_address}: {exc}") from None
    handle = await start_or_attach(client, settings.task_queue, inp)
    if not as_json:
        click.echo(handle.id)
    if not wait:
        if as_json:
            _echo_json({"workflow_id": handle.id, "run_id": handle.result_run_id})
        return EXIT_OK
    result = await follow(client, handle, quiet=as_json)
    if as_json:
        _echo_json(result.model_dump(mode="json"))
    else:
        click.echo(summary(result))
    return EXIT_CODES.get(result.outcome, EXIT_FAILED)


def _requester() -> str:
    """Who started the run, for the audit trail: OS user and host."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()} (srmflow CLI)"


async def _bulk(inp: BulkReprotectInput, *, wait: bool, as_json: bool) -> int:
    from srmflow.cli.runs import exit_code_for, watch_run
    from workflows.bulk import BulkReprotectWorkflow

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        client = await connect(settings)
    except RuntimeError as exc:
        raise UsageProblem(f"cannot reach Temporal at {settings.temporal_address}: {exc}") from None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    run_id = bulk_workflow_id(inp.site, ("dry-run-" if inp.dry_run else "") + stamp)
    handle = await client.start_workflow(
        BulkReprotectWorkflow.run, inp, id=run_id, task_queue=settings.task_queue
    )
    if not as_json:
        click.echo(run_id)
    if not wait:
        if as_json:
            _echo_json({"run_id": run_id})
        return EXIT_OK
    if not inp.dry_run:
        await watch_run(client, handle, watch=True, as_json=False, quiet=as_json)
    result = await handle.result()
    if as_json:
        _echo_json(result.model_dump(mode="json"))
    elif result.dry_run_report is not None:
        click.echo(dry_run_summary(result))
    else:
        click.echo(bulk_summary(result))
    return EXIT_OK if inp.dry_run else exit_code_for(result)


def dry_run_summary(result: BulkReprotectResult) -> str:
    """What a dry run found: eligible, already protected, blocked (why), conflicts, estimate."""
    report = result.dry_run_report
    assert report is not None
    would = report.counts.get("would_reprotect", len(report.would_reprotect))
    lines = [f"dry run: {would} plan(s) would be reprotected"]
    lines += [
        f"  would reprotect: {p.plan_name or p.plan_id} ({p.status})"
        for p in report.would_reprotect
    ]
    lines += [f"  already protected: {p.plan_name or p.plan_id}" for p in report.already_protected]
    lines += [f"  blocked: {p.plan_name or p.plan_id}: {p.blocked_reason}" for p in report.blocked]
    unknown = result.unknown_plan_ids or [
        p.plan_id for p in result.plans if p.error_type == "SrmNotFound"
    ]
    lines += [f"  not found: {plan_id}" for plan_id in unknown]
    lines += [
        f"  shared group {c.group_id}: {', '.join(c.plan_ids)} run one after another"
        for c in report.conflicts
    ]
    if report.unlisted:
        lines.append(f"  ({report.unlisted} more plans counted above but not listed)")
    lines.append(f"  estimated duration: {report.estimated_seconds / 60:.0f} min")
    return "\n".join(lines)


def bulk_summary(result: BulkReprotectResult) -> str:
    """Counts, failures by cause and the stop reason of a finished bulk run."""
    counts = ", ".join(f"{k} {v}" for k, v in result.counts.items() if v) or "no plans"
    lines = [f"bulk run finished: {counts} in {result.duration_seconds:.0f} s"]
    for cause, ids in result.failures_by_cause.items():
        lines.append(f"  failed ({cause}): {_some(ids)}")
    if result.stop_reason:
        lines.append(f"  stopped: {result.stop_reason}")
    return "\n".join(lines)


def _some(plan_ids: list[str], shown: int = 20) -> str:
    """The first ``shown`` ids and how many more (`srmflow report` lists every plan)."""
    more = len(plan_ids) - shown
    return ", ".join(plan_ids[:shown]) + (
        f" and {more} more (see `srmflow report`)" if more > 0 else ""
    )


async def resolve_pairing(settings: Settings, site: str) -> str:
    """The site's only pairing, read with this host's credentials for the site.

    The workflow id needs the pairing before the workflow starts; without local credentials
    the operator names it with --pairing (the worker still checks it exists).
    """
    from srmflow.srm.client import SrmClient
    from srmflow.srm.errors import SrmError

    if site not in settings.sites:
        raise UsageProblem(
            f"--pairing is required: this host has no credentials for SRM site {site!r} to "
            "look the pairing up (set SRMFLOW_SRM_* or SRMFLOW_SITES, or pass --pairing)"
        )
    try:
        async with SrmClient(settings.site(site)) as srm:
            pairings = await srm.list_pairings()
    except SrmError as exc:
        raise UsageProblem(f"cannot list the pairings of site {site!r}: {exc}") from None
    ids = [p.pairing_id for p in pairings]
    if len(ids) != 1:
        raise UsageProblem(
            f"site {site!r} has {len(ids)} pairings; choose one with --pairing: "
            + (", ".join(ids) or "none")
        )
    return ids[0]


async def start_or_attach(
    client: Client, task_queue: str, inp: ReprotectPlanInput
) -> WorkflowHandle[ReprotectPlanWorkflow, ReprotectPlanResult]:
    """Start the plan's workflow, or attach to the one already running under the same id."""
    assert inp.pairing_id is not None
    return await client.start_workflow(
        ReprotectPlanWorkflow.run,
        inp,
        id=reprotect_workflow_id(inp.site, inp.pairing_id, inp.plan_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


async def follow(
    client: Client,
    handle: WorkflowHandle[ReprotectPlanWorkflow, ReprotectPlanResult],
    *,
    quiet: bool = False,
) -> ReprotectPlanResult:
    """Show progress until the workflow ends (rich bar on a tty, plain lines otherwise)."""
    result = asyncio.ensure_future(handle.result())
    show = _Display(quiet=quiet)
    try:
        while not result.done():
            try:
                progress = await handle.query(ReprotectPlanWorkflow.progress)
                percent = await task_percent(client, handle.id)
            except Exception:
                # Queries fail briefly while no worker holds the workflow; keep waiting.
                progress, percent = None, None
            if progress is not None:
                show.update(progress, percent)
            await asyncio.wait({result}, timeout=REFRESH_SECONDS)
    finally:
        show.close()
    return result.result()


class _Display:
    """Progress output: a rich bar on a terminal, one line per change otherwise."""

    def __init__(self, *, quiet: bool) -> None:
        self._quiet = quiet
        self._last: tuple[Step, int | None] | None = None
        self._bar: Any = None
        self._task: Any = None
        if not quiet and sys.stderr.isatty():
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeElapsedColumn(),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("starting", total=100)

    def update(self, progress: ReprotectProgress, percent: int | None) -> None:
        if self._quiet:
            return
        percent = percent if percent is not None else progress.task_progress
        if self._bar is not None:
            label = f"{progress.plan_name or progress.plan_id}: {progress.step.value}"
            self._bar.update(self._task, description=label, completed=percent or 0)
            return
        key = (progress.step, percent)
        if key != self._last:
            self._last = key
            suffix = f" {percent}%" if percent is not None else ""
            click.echo(f"{progress.step.value}{suffix}", err=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def summary(result: ReprotectPlanResult) -> str:
    """Human summary of a result: outcome, plan, task, sites, reason."""
    lines = [f"{result.outcome.value}: plan {result.plan_name or result.plan_id}"]
    if result.srm_task_id:
        lines.append(f"  SRM task: {result.srm_task_id}" + (" (adopted)" if result.adopted else ""))
    if result.final_plan_status:
        lines.append(f"  plan status: {result.final_plan_status}")
    before, after = result.sites_before, result.sites_after
    if before and after:
        lines.append(
            f"  protected site: {before.protected_site_name} -> {after.protected_site_name}"
        )
    if result.reason:
        lines.append(f"  reason: {result.reason}")
    if result.srm_error and result.srm_error not in (result.reason or ""):
        lines.append(f"  SRM error: {result.srm_error}")
    lines.extend(f"  warning: {w}" for w in result.warnings)
    return "\n".join(lines)


def _echo_json(data: Any) -> None:
    import json

    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
