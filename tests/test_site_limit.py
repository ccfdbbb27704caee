"""Issue 7: the per-site limits hold across workers and runs.

Two ``srmflow worker`` processes share one task queue and two simultaneous bulk runs of 50
plans each (100 plans, 20 wanted in flight); the site allows 4 operations and 3 open HTTP
requests at a time, while each worker alone would open up to 3 (so 6 together). The simulator
answers every request 20-60 ms late so requests overlap. Its own figures prove both limits:
the peak of operations in flight (from its tasks' start and end times) and the peak of API
requests answered at once. Both workers' logs show SRM work and their request leases.
"""

from __future__ import annotations

import asyncio
import json
import sys
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client

from tests.reprotect_support import unique_site
from tests.simfixture import MakeSim
from tests.test_reprotect_crash import worker_env, worker_process, workers_started
from workflows.bulk import BulkReprotectWorkflow
from workflows.bulk_models import BulkReprotectInput
from workflows.limiter import SiteLimiterWorkflow
from workflows.limiter_models import limiter_workflow_id
from workflows.models import ReprotectOutcome

PLANS = 100
RUNS = 2
RUN_CONCURRENCY = 10
SITE_LIMIT = 4
SITE_REQUESTS = 3
# `srmflow worker`, the CLI command.
SRMFLOW_WORKER = [sys.executable, "-m", "srmflow.cli.main", "worker"]


def _log_events(path: Path, event: str) -> int:
    count = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        count += isinstance(record, dict) and record.get("event") == event
    return count


async def test_two_workers_two_runs_share_the_site_limit(
    task_queue: str,
    temporal_address: str,
    subprocess_env: dict[str, str],
    client: Client,
    make_sim: MakeSim,
    tmp_path: Path,
) -> None:
    sim = await make_sim(plans=PLANS, task_seconds=(0.5, 1.5), seed=11, latency_ms=(20, 60))
    site = unique_site()
    env = worker_env(sim, site, temporal_address, task_queue, subprocess_env)
    sites = json.loads(env["SRMFLOW_SITES"])
    sites[site]["max_operations"] = SITE_LIMIT
    sites[site]["max_requests"] = SITE_REQUESTS
    sites[site]["max_in_flight"] = SITE_REQUESTS
    env["SRMFLOW_SITES"] = json.dumps(sites)
    logs = [tmp_path / f"worker-{n}.log" for n in (1, 2)]
    plan_ids = sorted(sim.state.plans)
    halves = [plan_ids[n::RUNS] for n in range(RUNS)]

    with ExitStack() as stack:
        procs = [stack.enter_context(worker_process(env, log, SRMFLOW_WORKER)) for log in logs]
        await workers_started(*logs)
        handles = [
            await client.start_workflow(
                BulkReprotectWorkflow.run,
                BulkReprotectInput(
                    site=site,
                    plan_ids=half,
                    max_concurrency=RUN_CONCURRENCY,
                    poll_interval_seconds=1,
                ),
                id=f"bulk-reprotect/{site}/limit-{n}",
                task_queue=task_queue,
                execution_timeout=timedelta(minutes=8),
            )
            for n, half in enumerate(halves)
        ]
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 420)
        limiter = client.get_workflow_handle(limiter_workflow_id(site, task_queue))
        status = await limiter.query(SiteLimiterWorkflow.status)
        assert all(p.poll() is None for p in procs), "a worker died during the run"

    outcomes = {p.plan_id: p.outcome for r in results for p in r.plans}
    assert sorted(outcomes) == plan_ids
    assert set(outcomes.values()) == {ReprotectOutcome.REPROTECTED}
    state = await sim.admin("GET", "state")
    assert state["reprotect_posts"] == dict.fromkeys(plan_ids, 1)
    # SRM itself never ran more than the site limit, though the runs wanted 20 at once.
    assert state["max_in_flight"] == SITE_LIMIT
    # Nor answered more requests at once than the site-wide limit, shared by the two workers.
    assert 2 <= state["max_concurrent_requests"] <= SITE_REQUESTS, state["max_concurrent_requests"]
    assert status.capacity == SITE_LIMIT
    assert status.max_held == SITE_LIMIT
    assert status.granted_total == PLANS
    assert status.holders == []
    assert status.waiting == []
    posts_per_worker = [_log_events(log, "reprotect_posted") for log in logs]
    assert sum(posts_per_worker) == PLANS
    assert all(n > 0 for n in posts_per_worker), posts_per_worker
    assert all(_log_events(log, "request_lease") > 0 for log in logs)
