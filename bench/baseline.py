"""Baseline: the SRM calls of a bulk reprotect from a plain asyncio script, no durability.

login + remote session, then per plan: get plan, plan issues, POST reprotect, poll the task
every --poll-seconds until it ends, verify reads (plan, issues, history reports, groups, group
VMs). A crash of this script loses every plan in flight; it only sets the floor srmflow's
makespan is compared with.

    python -m bench.baseline --plans 100 --concurrency 10 --task-seconds 30 --poll-seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import sim_admin, stop_on_sigterm
from srmflow.demo import SIM_PASSWORD, SIM_REMOTE_PASSWORD, SIM_REMOTE_USER, SIM_USER, DemoStack
from srmflow.log import configure_logging
from srmflow.settings import SrmSiteSettings
from srmflow.srm.client import SrmClient
from srmflow.srm.models import TERMINAL_TASK_STATUSES


def sim_args(plans: int, task_seconds: float) -> list[str]:
    """Simulator flags of every benchmark: fixed task duration, no shared groups."""
    return ["--plans", str(plans), "--task-seconds", str(task_seconds), "--seed", "11"]


async def _reprotect(srm: SrmClient, pairing_id: str, plan_id: str, poll: float) -> str:
    await srm.get_plan(pairing_id, plan_id)
    await srm.list_plan_issues(pairing_id, plan_id)
    task = await srm.reprotect(pairing_id, plan_id)
    while task.status not in TERMINAL_TASK_STATUSES:
        await asyncio.sleep(poll)
        task = await srm.get_task(task.id)
    plan = await srm.get_plan(pairing_id, plan_id)
    await srm.list_plan_issues(pairing_id, plan_id)
    await srm.list_history_reports(pairing_id, plan_id)
    for group in await srm.list_plan_groups(pairing_id, plan_id):
        await srm.list_group_vms(pairing_id, group.id)
    return str(plan.status)


async def run_baseline(sim_url: str, concurrency: int, poll_seconds: float) -> dict[str, Any]:
    """Reprotect every plan of the simulator; returns makespan and outcomes."""
    site = SrmSiteSettings(
        url=sim_url,
        username=SIM_USER,
        password=SIM_PASSWORD,
        remote_username=SIM_REMOTE_USER,
        remote_password=SIM_REMOTE_PASSWORD,
        max_in_flight=8,
    )
    async with aiohttp.ClientSession() as http:
        srm = SrmClient(site, session=http)
        pairing_id = (await srm.list_pairings())[0].pairing_id
        await srm.ensure_remote_session(pairing_id)
        plans = [p.id for p in await srm.list_plans(pairing_id)]
        gate = asyncio.Semaphore(concurrency)

        async def one(plan_id: str) -> str:
            async with gate:
                return await _reprotect(srm, pairing_id, plan_id, poll_seconds)

        started = time.monotonic()
        statuses = await asyncio.gather(*(one(p) for p in plans))
        makespan = time.monotonic() - started
        await srm.close()
    return {"makespan_s": makespan, "plans": len(plans), "ready": statuses.count("READY_STATE")}


async def baseline_on_fresh_sim(
    state_dir: Path, plans: int, concurrency: int, task_seconds: float, poll_seconds: float
) -> dict[str, Any]:
    """Start a simulator process with the benchmark inventory, run the baseline, stop it."""
    stack = DemoStack(state_dir=state_dir)
    try:
        stack.start_simulator(sim_args(plans, task_seconds))
        await _sim_ready(stack)
        figures = await run_baseline(stack.sim_url, concurrency, poll_seconds)
        state = await sim_admin(stack, "state")
    finally:
        stack.stop()
    figures["requests"] = state["requests"]
    return figures


async def _sim_ready(stack: DemoStack, limit_seconds: float = 30.0) -> None:
    deadline = time.monotonic() + limit_seconds
    while True:
        stack.check_alive()
        try:
            await sim_admin(stack, "state")
            return
        except aiohttp.ClientError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def main() -> None:
    """CLI entry."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--plans", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--task-seconds", type=float, default=30.0)
    parser.add_argument("--poll-seconds", type=float, default=5.0)
    args = parser.parse_args()
    configure_logging("WARNING", "console")
    stop_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="srmflow-baseline-") as tmp:
        figures = asyncio.run(
            baseline_on_fresh_sim(
                Path(tmp), args.plans, args.concurrency, args.task_seconds, args.poll_seconds
            )
        )
    per_plan = sum(figures["requests"].values()) / max(1, figures["plans"])
    print(f"baseline makespan {figures['makespan_s']:.1f} s for {figures['plans']} plans")
    print(f"baseline plans READY_STATE: {figures['ready']}; SRM requests per plan {per_plan:.1f}")


if __name__ == "__main__":
    main()
