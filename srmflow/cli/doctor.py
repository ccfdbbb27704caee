"""``srmflow doctor``: prove the configuration works before a DR run depends on it."""

from __future__ import annotations

from typing import Any

import click

from srmflow.cli.common import echo_json, run_async, settings_or_fail
from srmflow.settings import Settings


async def _check_temporal(settings: Settings) -> dict[str, Any]:
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

    from srmflow.temporal import connect

    try:
        client = await connect(settings)
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=settings.temporal_namespace)
        )
    except Exception as exc:
        return {"ok": False, "address": settings.temporal_address, "error": str(exc)}
    return {
        "ok": True,
        "address": settings.temporal_address,
        "namespace": settings.temporal_namespace,
        "task_queue": settings.task_queue,
    }


async def _check_site(settings: Settings, name: str) -> dict[str, Any]:
    from srmflow.srm import SrmClient, SrmError

    site = settings.sites[name]
    try:
        async with SrmClient(site) as srm:
            await srm.login()
            pairings = await srm.list_pairings()
            for pairing in pairings:
                await srm.ensure_remote_session(pairing.pairing_id)
            await srm.logout()
    except SrmError as exc:
        return {"ok": False, "url": site.url, "error": str(exc)}
    return {"ok": True, "url": site.url, "pairings": [p.pairing_id for p in pairings]}


async def _doctor(settings: Settings, skip_srm: bool) -> dict[str, Any]:
    report: dict[str, Any] = {"temporal": await _check_temporal(settings), "sites": {}}
    if not skip_srm:
        for name in sorted(settings.sites):
            report["sites"][name] = await _check_site(settings, name)
    checks = [report["temporal"], *report["sites"].values()]
    report["ok"] = all(check["ok"] for check in checks)
    return report


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--skip-srm", is_flag=True, help="Check only the Temporal connection.")
def doctor(as_json: bool, skip_srm: bool) -> int:
    """Check the Temporal connection and each SRM site (login, pairings, remote session).

    Exits 0 when every check passes, 1 otherwise, 2 on bad configuration.
    """
    settings = settings_or_fail()
    report = run_async(_doctor(settings, skip_srm))
    if as_json:
        echo_json(report)
    else:
        temporal = report["temporal"]
        mark = "ok" if temporal["ok"] else f"FAILED: {temporal.get('error')}"
        click.echo(f"temporal {temporal['address']}: {mark}")
        for name, site in report["sites"].items():
            mark = "ok" if site["ok"] else f"FAILED: {site.get('error')}"
            click.echo(f"srm site {name} ({site['url']}): {mark}")
    return 0 if report["ok"] else 1
