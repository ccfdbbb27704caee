"""``srmflow sim``: run the SRM simulator from flags or a scenario file."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click
import structlog
from click.core import ParameterSource

from srmflow.simulator.scenario import Scenario, load_scenario, parse_range
from srmflow.simulator.server import serve, tls_context
from srmflow.simulator.state import SimState

# CLI option name -> Scenario field; faults go into Scenario.faults.
SCENARIO_FIELDS = {
    "plans": "plans",
    "status": "status",
    "groups_per_plan": "groups_per_plan",
    "vms_per_group": "vms_per_group",
    "shared_pairs": "shared_pairs",
    "task_seconds": "task_seconds",
    "seed": "seed",
    "username": "username",
    "password": "password",
    "remote_username": "remote_username",
    "remote_password": "remote_password",
}
FAULT_FIELDS = {
    "latency_ms": "latency_ms",
    "error_rate": "error_rate",
    "error_status": "error_status",
    "throttle_rate": "throttle_rate",
    "retry_after": "retry_after_s",
    "reset_rate": "reset_rate",
    "fault_path": "path_pattern",
    "session_ttl": "session_ttl_s",
    "task_error_rate": "task_error_rate",
    "fail_plan": "fail_plans",
    "incomplete_rate": "incomplete_rate",
    "incomplete_plan": "incomplete_plans",
    "wrong_status": "wrong_status",
    "groups_in_use": "groups_in_use",
    "remote_site_down": "remote_site_down",
}


def _convert(name: str, value: Any) -> Any:
    if name == "task_seconds":
        return parse_range(value)
    if name == "latency_ms":
        low, high = parse_range(value)
        return (int(low), int(high))
    if name == "fail_plan":
        pairs = [item.partition("=") for item in value]
        return {plan: message or "Simulated failure" for plan, _, message in pairs}
    if name == "incomplete_plan":
        return list(value)
    return value


def build_scenario(ctx: click.Context, params: dict[str, Any]) -> Scenario:
    """Scenario file (if any) with explicitly given flags on top; flag defaults otherwise."""
    scenario_file = params["scenario"]

    def given(name: str) -> bool:
        source = ctx.get_parameter_source(name)
        return scenario_file is None or source not in (ParameterSource.DEFAULT, None)

    base = load_scenario(scenario_file) if scenario_file else Scenario()
    data = base.model_dump()
    for option, field_name in SCENARIO_FIELDS.items():
        if given(option):
            data[field_name] = _convert(option, params[option])
    faults = data["faults"]
    for option, field_name in FAULT_FIELDS.items():
        if given(option):
            faults[field_name] = _convert(option, params[option])
    return Scenario.model_validate(data)


@click.command("sim")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5480, show_default=True, type=int, help="Port (0 = any free).")
@click.option("--plans", default=50, show_default=True, type=int, help="Number of plans.")
@click.option(
    "--status", default="RECOVERY_COMPLETE", show_default=True, help="Initial plan status."
)
@click.option(
    "--groups-per-plan", default=1, show_default=True, type=int, help="Protection groups per plan."
)
@click.option("--vms-per-group", default=3, show_default=True, type=int, help="VMs per group.")
@click.option(
    "--shared-pairs",
    default=0,
    show_default=True,
    type=int,
    help="Neighbouring plan pairs that share one extra protection group.",
)
@click.option(
    "--task-seconds",
    default="5-20",
    show_default=True,
    help="Operation duration range in seconds, LOW-HIGH.",
)
@click.option("--seed", default=7, show_default=True, type=int, help="Seed of every random draw.")
@click.option(
    "--username",
    default="administrator@site-a.local",
    show_default=True,
    help="Local SSO user for POST /session.",
)
@click.option("--password", default="sim-password-a", show_default=True, help="Local SSO password.")
@click.option(
    "--remote-username",
    default="administrator@site-b.local",
    show_default=True,
    help="Remote-site user for POST /pairings/{id}/remote-session.",
)
@click.option(
    "--remote-password", default="sim-password-b", show_default=True, help="Remote-site password."
)
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Read the local password from this file (container secrets); wins over --password.",
)
@click.option(
    "--remote-password-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Read the remote password from this file; wins over --remote-password.",
)
@click.option(
    "--scenario",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="YAML/JSON scenario file; flags given explicitly override it.",
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="PEM certificate: serve HTTPS (needs --tls-key).",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="PEM private key for --tls-cert.",
)
@click.option(
    "--latency-ms",
    default="0-0",
    show_default=True,
    help="Fault: added latency per API call, LOW-HIGH milliseconds.",
)
@click.option(
    "--error-rate",
    default=0.0,
    show_default=True,
    type=float,
    help="Fault: share of API calls answered with --error-status.",
)
@click.option(
    "--error-status",
    default=503,
    show_default=True,
    type=click.Choice(["500", "503"]),
    callback=lambda _c, _p, v: int(v),
    help="Fault: status for --error-rate.",
)
@click.option(
    "--throttle-rate",
    default=0.0,
    show_default=True,
    type=float,
    help="Fault: share of API calls answered 429 with Retry-After.",
)
@click.option(
    "--retry-after",
    default=1,
    show_default=True,
    type=int,
    help="Fault: Retry-After seconds on 429/503.",
)
@click.option(
    "--reset-rate",
    default=0.0,
    show_default=True,
    type=float,
    help="Fault: share of API calls whose connection is dropped unanswered.",
)
@click.option(
    "--fault-path", default=None, help="Fault: regex; the rates above apply only to matching paths."
)
@click.option(
    "--session-ttl",
    default=None,
    type=float,
    help="Fault: sessions expire this many seconds after login (401).",
)
@click.option(
    "--task-error-rate",
    default=0.0,
    show_default=True,
    type=float,
    help="Fault: share of operations whose task ends ERROR.",
)
@click.option(
    "--fail-plan",
    multiple=True,
    help="Fault: NAME_OR_ID=MESSAGE, the plan's operations end ERROR (repeatable).",
)
@click.option(
    "--incomplete-rate",
    default=0.0,
    show_default=True,
    type=float,
    help="Fault: share of reprotects ending INCOMPLETE_REPROTECT.",
)
@click.option(
    "--incomplete-plan",
    multiple=True,
    help="Fault: plan name or id whose reprotect ends incomplete (repeatable).",
)
@click.option(
    "--wrong-status",
    default="http400",
    show_default=True,
    type=click.Choice(["http400", "task_error"]),
    help="Answer to an action the plan's status forbids: 400, or a failing task.",
)
@click.option(
    "--groups-in-use",
    default="http400",
    show_default=True,
    type=click.Choice(["http400", "http500", "task_error"]),
    help="Answer when the plan's protection groups are busy (PROTECTION_GROUPS_IN_USE).",
)
@click.option(
    "--remote-site-down",
    is_flag=True,
    default=False,
    help="Fault: the paired site is unreachable (actions fail).",
)
@click.pass_context
def sim(ctx: click.Context, **params: Any) -> None:
    """Run the SRM REST API v2 simulator until SIGINT/SIGTERM (admin API under /_sim)."""
    if bool(params["tls_cert"]) != bool(params["tls_key"]):
        raise click.UsageError("--tls-cert and --tls-key go together")
    try:
        scenario = build_scenario(ctx, params)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    for option, field_name in (
        ("password_file", "password"),
        ("remote_password_file", "remote_password"),
    ):
        if params[option]:
            try:
                with open(params[option], encoding="utf-8") as secret:
                    scenario = scenario.model_copy(update={field_name: secret.read().strip()})
            except OSError as exc:
                flag = "--" + option.replace("_", "-")
                raise click.UsageError(
                    f"{flag}: cannot read {params[option]}: {exc.strerror}"
                ) from None
    if not structlog.is_configured():
        # Logs go to stderr so stdout carries only the announcement a script may parse.
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    context = tls_context(params["tls_cert"], params["tls_key"]) if params["tls_cert"] else None
    state = SimState(scenario)

    def announce(root: str) -> None:
        click.echo(f"SRM simulator listening on {root}")
        click.echo(f"  API base:        {root}/api/rest/srm/v2")
        click.echo(f"  pairing id:      {state.pairing_id}")
        click.echo(f"  local login:     {scenario.username} / {scenario.password}")
        click.echo(f"  remote login:    {scenario.remote_username} / {scenario.remote_password}")
        click.echo(f"  admin:           {root}/_sim/state, /_sim/journal, PUT /_sim/faults")
        click.echo(f"SRMFLOW_SRM_URL={root}/api/rest/srm/v2", nl=True)

    asyncio.run(
        serve(state, params["host"], params["port"], ssl_context=context, on_started=announce)
    )
