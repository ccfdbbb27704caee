"""``srmflow plans``: a read-only view of SRM's recovery plans, for deciding what to run."""

from __future__ import annotations

import fnmatch
from typing import Any

import click

from srmflow.cli.common import ConfigProblem, echo_json, run_async, settings_or_fail
from srmflow.settings import DEFAULT_SITE, ConfigError


async def _plans(site_name: str, pairing_id: str | None) -> tuple[str, list[Any]]:
    from srmflow.srm import SrmClient, SrmError

    settings = settings_or_fail()
    try:
        site = settings.site(site_name)
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from None
    try:
        async with SrmClient(site) as srm:
            if pairing_id is None:
                pairings = [p.pairing_id for p in await srm.list_pairings()]
                if len(pairings) != 1:
                    raise ConfigProblem(
                        f"site {site_name!r} has {len(pairings)} pairings; choose one with "
                        f"--pairing: {', '.join(pairings) or 'none'}"
                    )
                pairing_id = pairings[0]
            return pairing_id, await srm.list_plans(pairing_id)
    except SrmError as exc:
        raise click.ClickException(f"SRM site {site_name!r}: {exc}") from None


@click.command()
@click.option("--site", default=DEFAULT_SITE, show_default=True, help="Configured SRM site.")
@click.option("--pairing", "pairing_id", help="Pairing id (optional with a single pairing).")
@click.option("--status", "statuses", multiple=True, help="Only plans in this status (repeat).")
@click.option("--match", "glob", help="Only plans whose name matches this glob.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plans(
    site: str, pairing_id: str | None, statuses: tuple[str, ...], glob: str | None, as_json: bool
) -> int:
    """List recovery plans with status and sites, straight from SRM (nothing is changed)."""
    pairing, found = run_async(_plans(site, pairing_id))
    wanted = {s.upper() for s in statuses}
    rows = [
        p
        for p in found
        if (not wanted or p.status in wanted) and (not glob or fnmatch.fnmatchcase(p.name, glob))
    ]
    if as_json:
        echo_json(
            {
                "site": site,
                "pairing_id": pairing,
                "plans": [
                    {
                        "id": p.id,
                        "name": p.name,
                        "status": p.status,
                        "protected_site": p.protected_site_name,
                        "recovery_site": p.recovery_site_name,
                    }
                    for p in rows
                ],
            }
        )
        return 0
    click.echo(f"{len(rows)} of {len(found)} plans (site {site}, pairing {pairing})")
    for p in rows:
        sites = f"{p.protected_site_name} -> {p.recovery_site_name}"
        click.echo(f"{p.name:<24} {p.status:<24} {sites:<24} {p.id}")
    return 0
