"""The ``srmflow`` command: a click group whose subcommands load lazily.

Lazy loading keeps ``srmflow --help`` fast and lets each subcommand pull in only what it needs
(the simulator never imports Temporal, the worker none of the other commands).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from srmflow.codec import PayloadDecryptionError
from srmflow.entry import hard_exit
from srmflow.settings import ConfigError

# name -> (module, attribute, one-line help shown in `srmflow --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "reprotect": ("srmflow.cli.reprotect", "reprotect", "Reprotect one plan or a bulk selection."),
    "worker": ("srmflow.cli.worker", "worker", "Run a Temporal worker for srmflow."),
    "sim": ("srmflow.simulator.cli", "sim", "Run the SRM simulator (spec-faithful, with faults)."),
    "doctor": ("srmflow.cli.doctor", "doctor", "Check the Temporal connection and SRM logins."),
    "demo": ("srmflow.cli.demo", "demo", "Run the end-to-end demo on embedded defaults."),
    "status": ("srmflow.cli.runs", "status", "Show a bulk run (live with --watch)."),
    "pause": ("srmflow.cli.runs", "pause", "Pause a bulk run (running plans finish)."),
    "resume": ("srmflow.cli.runs", "resume", "Resume a paused bulk run."),
    "cancel": ("srmflow.cli.runs", "cancel", "Stop starting plans (optionally cancel running)."),
    "set-concurrency": ("srmflow.cli.runs", "set_concurrency", "Change a run's concurrency."),
    "approve": ("srmflow.cli.runs", "approve", "Approve a forced reprotect of one plan."),
    "runs": ("srmflow.cli.runs", "runs", "List recent bulk runs."),
    "report": ("srmflow.cli.report", "report", "Report of a run (md, json, html, csv)."),
    "plans": ("srmflow.cli.plans", "plans", "List SRM recovery plans (read-only)."),
    "drill": ("srmflow.cli.drill", "drill", "Test/failback drills with RTO, now or scheduled."),
}

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that subcommand runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, attribute, _ = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module_name}.{attribute} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="srmflow")
def cli() -> None:
    """srmflow: durable VMware SRM recovery-plan operations (reprotect first) on Temporal.

    Configuration comes from the environment (see .env.example): TEMPORAL_ADDRESS,
    TEMPORAL_NAMESPACE, SRMFLOW_SRM_URL and the SRMFLOW_SRM_* credentials.

    Exit codes: 0 success, 1 an operation failed, 2 bad input or configuration,
    3 partial failure, 4 cancelled, 130 interrupted.
    """


def run(args: list[str] | None = None) -> int:
    """Run the CLI and return its exit code instead of exiting."""
    try:
        result: Any = cli.main(args=args, prog_name="srmflow", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except KeyboardInterrupt:
        return 130
    except PayloadDecryptionError as exc:
        click.echo(f"srmflow: {exc}", err=True)
        return EXIT_USAGE
    except ConfigError as exc:
        # Found after start-up, e.g. by connect() (TLS files, tracing packages): still exit 2.
        click.echo(f"srmflow: configuration error: {exc}", err=True)
        return EXIT_USAGE
    except Exception as exc:
        # One clear line instead of a traceback; the exit code still says it failed.
        click.echo(f"srmflow: {type(exc).__name__}: {exc}", err=True)
        return EXIT_FAILED
    return int(result) if isinstance(result, int) else EXIT_OK


def main() -> None:
    """Console-script entry point; exits without interpreter finalisation (see entry.py)."""
    hard_exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
