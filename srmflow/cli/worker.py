"""``srmflow worker``: run the Temporal worker (wiring lives in the top-level worker.py)."""

from __future__ import annotations

import click

from srmflow.cli.common import run_async, settings_or_fail


@click.command()
@click.option("--task-queue", help="Override SRMFLOW_TASK_QUEUE for this worker.")
def worker(task_queue: str | None) -> int:
    """Run a worker for srmflow's workflows and SRM activities until SIGTERM/SIGINT.

    On SIGTERM it stops polling, lets running activities finish (up to
    SRMFLOW_GRACEFUL_SHUTDOWN_SECONDS) and exits 0.
    """
    import worker as worker_module

    settings = settings_or_fail(require_site=True)
    if task_queue:
        settings.task_queue = task_queue
    return run_async(worker_module.main_async(settings))
