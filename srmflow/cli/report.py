"""``srmflow report``: a finished run as md, json, html or csv."""

from __future__ import annotations

from pathlib import Path

import click

from srmflow.cli.common import ConfigProblem, run_async, settings_or_fail
from srmflow.report import FORMATS, collect_report, render
from srmflow.temporal import connect


@click.command()
@click.argument("run_id")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="md",
    show_default=True,
    help="Report format; html is one self-contained file with a timeline.",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file.")
def report(run_id: str, fmt: str, out: Path | None) -> int:
    """Write the report of a finished bulk run: per-plan outcome, SRM task, step timings."""

    async def go() -> str:
        client = await connect(settings_or_fail())
        try:
            return render(await collect_report(client, run_id), fmt)
        except ValueError as exc:
            raise ConfigProblem(str(exc)) from None

    text = run_async(go())
    if out is None:
        click.echo(text, nl=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        click.echo(f"report written to {out}")
    return 0
