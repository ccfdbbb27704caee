"""``srmflow worker``: run the Temporal worker (wiring lives in the top-level worker.py)."""

from __future__ import annotations

import click

from srmflow.cli.common import run_async, settings_or_fail


@click.command()
@click.option("--task-queue", help="Override SRMFLOW_TASK_QUEUE for this worker.")
def worker(task_queue: str | None) -> int:
    """Run a worker that executes srmflow workflows and SRM activities until SIGTERM/SIGINT."""
    import worker as worker_module

    settings = settings_or_fail(require_site=True)
    if task_queue:
        settings.task_queue = task_queue
    run_async(worker_module.run_worker(settings))
    return 0
