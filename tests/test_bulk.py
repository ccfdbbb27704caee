"""BulkReprotectWorkflow on the real dev server against the simulator over HTTP."""

from __future__ import annotations

from collections import Counter

import pytest
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig

from srmflow.converter import DATA_CONVERTER
from srmflow.report import bulk_rows
from tests.bulk_support import bulk_worker, outcomes, progress, start_bulk
from tests.reprotect_support import eventually, unique_site
from tests.simfixture import MakeSim
from workflows.bulk import BulkReprotectWorkflow
from workflows.bulk_models import (
    BulkReprotectInput,
    CancelRemaining,
    ConcurrencyChange,
    ForcedApproval,
    RunState,
)

PLANS = 200


def _posts_per_plan(state: dict[str, object]) -> dict[str, int]:
    posts = state["reprotect_posts"]
    assert isinstance(posts, dict)
    return {str(k): int(v) for k, v in posts.items()}


async def test_200_plans_with_task_errors_and_shared_groups(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    # Overlaps are recorded rather than refused, so only the scheduler can keep them at zero.
    sim = await make_sim(
        plans=PLANS,
        shared_pairs=40,
        task_seconds=(0.2, 0.8),
        task_error_rate=0.1,
        enforce_group_conflicts=False,
        validate=False,
    )
    site = unique_site()
    inp = BulkReprotectInput(
        site=site,
        all_recovered=True,
        max_concurrency=10,
        poll_interval_seconds=1,
        retry_incomplete=False,
    )
    async with bulk_worker(client, task_queue, sim, site):
        handle = await start_bulk(client, task_queue, inp, f"bulk/{site}")
        result = await handle.result()

    assert len(result.plans) == PLANS
    assert result.plans_complete
    assert {p.plan_id for p in result.plans} == set(sim.state.plans)
    counts = Counter(outcomes(result).values())
    assert counts["FAILED"] > 0, "10% task errors must show up as failed plans"
    assert counts["REPROTECTED"] + counts["FAILED"] == PLANS
    failed = [p for p in result.plans if p.outcome.value == "FAILED"]
    assert all(p.srm_error or p.reason for p in failed)
    assert result.failures_by_cause, "failures are grouped by cause"
    state = await sim.admin("GET", "state")
    assert state["max_in_flight"] <= 10
    assert state["group_overlaps"] == []
    assert _posts_per_plan(state) == dict.fromkeys(sim.state.plans, 1)


async def test_controls_pause_resume_concurrency_cancel(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=24, task_seconds=(1.0, 1.5))
    site = unique_site()
    inp = BulkReprotectInput(
        site=site, all_recovered=True, max_concurrency=2, poll_interval_seconds=1
    )
    async with bulk_worker(client, task_queue, sim, site):
        handle = await start_bulk(client, task_queue, inp, f"bulk/{site}")
        await eventually(lambda: _has_results(handle, 1), within=60)

        ack = await handle.execute_update(BulkReprotectWorkflow.pause)
        assert ack.state == RunState.PAUSED
        paused = await eventually(lambda: _quiet(handle), within=60)
        posts_while_paused = sum(_posts_per_plan(await sim.admin("GET", "state")).values())
        assert paused.queued > 0
        # Paused and idle: the workflow has nothing left to start anything with.
        again = await progress(handle)
        assert again.queued == paused.queued
        assert again.in_flight == []

        await handle.execute_update(BulkReprotectWorkflow.resume)
        await handle.execute_update(
            BulkReprotectWorkflow.set_concurrency, ConcurrencyChange(max_concurrency=5)
        )
        await eventually(lambda: _in_flight_at_least(handle, 3), within=60)
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(
                BulkReprotectWorkflow.approve_forced,
                ForcedApproval(plan_id="no-such-plan", approver="alice"),
            )

        await handle.execute_update(
            BulkReprotectWorkflow.cancel_remaining, CancelRemaining(reason="change freeze")
        )
        result = await handle.result()

    assert len(result.plans) == 24
    skipped = [p for p in result.plans if p.outcome.value == "SKIPPED"]
    assert skipped, "queued plans are reported as not started"
    assert all("change freeze" in (p.reason or "") for p in skipped)
    assert result.stop_reason == "change freeze"
    finished = [p for p in result.plans if p.outcome.value == "REPROTECTED"]
    assert len(finished) + len(skipped) == 24
    posts = _posts_per_plan(await sim.admin("GET", "state"))
    assert sum(posts.values()) == len(finished) > posts_while_paused
    assert set(posts) == {p.plan_id for p in finished}
    assert (await sim.admin("GET", "state"))["max_in_flight"] <= 5


async def _has_results(handle: object, n: int) -> bool:
    return (await progress(handle)).finished >= n  # type: ignore[arg-type]


async def _quiet(handle: object) -> object:
    current = await progress(handle)  # type: ignore[arg-type]
    return current if current.state == RunState.PAUSED and not current.in_flight else None


async def _in_flight_at_least(handle: object, n: int) -> bool:
    return len((await progress(handle)).in_flight) >= n  # type: ignore[arg-type]


async def test_continue_as_new_keeps_every_plan_once(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=30, task_seconds=(0.2, 0.4), validate=False)
    site = unique_site()
    inp = BulkReprotectInput(
        site=site,
        all_recovered=True,
        max_concurrency=6,
        poll_interval_seconds=1,
        continue_as_new_after_events=60,
    )
    async with bulk_worker(client, task_queue, sim, site):
        handle = await start_bulk(client, task_queue, inp, f"bulk/{site}")
        result = await handle.result()

    assert result.continued_as_new >= 1
    rows = await bulk_rows(client, handle.id, result)
    assert sorted(p.plan_id for p in rows) == sorted(sim.state.plans)
    assert {p.outcome.value for p in rows} == {"REPROTECTED"}
    if result.continued_as_new >= 2:
        # The first runs' rows are in the later runs' inputs, not in the result.
        assert not result.plans_complete
        assert len(result.plans) < len(rows)
    assert result.counts["REPROTECTED"] == len(sim.state.plans)
    assert _posts_per_plan(await sim.admin("GET", "state")) == dict.fromkeys(sim.state.plans, 1)


async def test_dry_run_reports_eligibility_and_conflicts_without_posts(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(
        plans=8,
        shared_pairs=2,
        plan_overrides={
            "plan-003": {"status": "TEST_COMPLETE"},
            "plan-005": {"status": "READY_STATE"},
        },
    )
    site = unique_site()
    ids = list(sim.state.plans)
    inp = BulkReprotectInput(
        site=site, plan_ids=[*ids, "DrRecoveryRecoveryPlan:nope"], dry_run=True
    )
    async with bulk_worker(client, task_queue, sim, site):
        handle = await start_bulk(client, task_queue, inp, f"bulk/{site}")
        result = await handle.result()

    report = result.dry_run_report
    assert report is not None
    blocked = {p.plan_name: p for p in report.blocked}
    # plan-003's test environment holds its groups, one of which plan-004 shares.
    assert sorted(blocked) == ["plan-003", "plan-004"]
    assert "TEST_COMPLETE" in (blocked["plan-003"].blocked_reason or "")
    assert "PROTECTION_GROUPS_IN_USE" in (blocked["plan-004"].blocked_reason or "")
    assert [p.plan_name for p in report.already_protected] == ["plan-005"]
    assert len(report.would_reprotect) == 5
    assert report.conflicts, "shared protection groups are listed"
    assert all(len(c.plan_ids) == 2 for c in report.conflicts)
    assert report.estimated_seconds > 0
    assert outcomes(result)["DrRecoveryRecoveryPlan:nope"] == "FAILED"
    assert result.unknown_plan_ids == ["DrRecoveryRecoveryPlan:nope"]
    assert result.counts["SKIPPED"] == 8
    assert not [e for e in await sim.journal() if e["path"].endswith("/actions/reprotect")]


async def test_unknown_ids_fail_alone_and_empty_selection_is_explained(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(plans=3)
    site = unique_site()
    first = next(iter(sim.state.plans))
    async with bulk_worker(client, task_queue, sim, site):
        mixed = await start_bulk(
            client,
            task_queue,
            BulkReprotectInput(
                site=site, plan_ids=[first, "missing-plan"], poll_interval_seconds=1
            ),
            f"bulk/{site}/mixed",
        )
        result = await mixed.result()
        empty = await start_bulk(
            client,
            task_queue,
            BulkReprotectInput(site=site, plan_name_glob="nothing-*"),
            f"bulk/{site}/empty",
        )
        nothing = await empty.result()

    assert outcomes(result) == {first: "REPROTECTED", "missing-plan": "FAILED"}
    assert result.failures_by_cause == {"SrmNotFound": ["missing-plan"]}
    missing = next(p for p in result.plans if p.plan_id == "missing-plan")
    assert "not found" in (missing.reason or "")
    assert nothing.plans == []
    assert "empty selection" in (nothing.stop_reason or "")
    assert "nothing-*" in (nothing.stop_reason or "")


async def test_remediation_ladder_approval_and_timeout(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    sim = await make_sim(
        plans=2, task_seconds=(0.2, 0.3), incomplete_plans=["plan-001", "plan-002"]
    )
    site = unique_site()
    approved_id, unapproved_id = list(sim.state.plans)
    async with bulk_worker(client, task_queue, sim, site):
        handle = await start_bulk(
            client,
            task_queue,
            BulkReprotectInput(
                site=site,
                all_recovered=True,
                poll_interval_seconds=1,
                approval_timeout_seconds=6,
            ),
            f"bulk/{site}",
        )
        await eventually(lambda: _waiting_for_approval(handle, approved_id), within=60)
        await handle.execute_update(
            BulkReprotectWorkflow.approve_forced,
            ForcedApproval(plan_id=approved_id, approver="alice@dr-team"),
        )
        result = await handle.result()

    by_id = {p.plan_id: p for p in result.plans}
    assert by_id[approved_id].outcome.value == "REPROTECTED"
    assert by_id[approved_id].approved_by == "alice@dr-team"
    assert by_id[approved_id].forced_used
    assert by_id[unapproved_id].outcome.value == "FAILED"
    assert "not approved" in (by_id[unapproved_id].reason or "")
    posts = _posts_per_plan(await sim.admin("GET", "state"))
    # First run, the automatic re-run, and (approved plan only) the forced run.
    assert posts == {approved_id: 3, unapproved_id: 2}


async def _waiting_for_approval(handle: object, plan_id: str) -> bool:
    current = await progress(handle)  # type: ignore[arg-type]
    return any(p.plan_id == plan_id and p.waiting_for_approval for p in current.in_flight)


async def test_plans_evicted_from_the_workflow_cache_replay_and_finish(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    # A cache smaller than the plans in flight (SRMFLOW_MAX_CACHED_WORKFLOWS) evicts plans
    # while their SRM task runs: each replays from history when its task ends.
    sim = await make_sim(plans=12, task_seconds=(1.0, 2.0))
    site = unique_site()
    buffer = MetricBuffer(100_000)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
    counted = await Client.connect(
        client.service_client.config.target_host, data_converter=DATA_CONVERTER, runtime=runtime
    )
    inp = BulkReprotectInput(
        site=site, all_recovered=True, max_concurrency=12, poll_interval_seconds=1
    )
    async with bulk_worker(counted, task_queue, sim, site, max_cached_workflows=3):
        handle = await start_bulk(client, task_queue, inp, f"bulk/{site}")
        result = await handle.result()

    assert outcomes(result) == dict.fromkeys(sim.state.plans, "REPROTECTED")
    assert _posts_per_plan(await sim.admin("GET", "state")) == dict.fromkeys(sim.state.plans, 1)
    totals: Counter[str] = Counter()
    for update in buffer.retrieve_updates():
        if update.metric.name in (
            "temporal_sticky_cache_total_forced_eviction",
            "temporal_sticky_cache_miss",
        ):
            totals[update.metric.name] += int(update.value)
    # 12 plans, the bulk run and the site limiter in 3 places: plans were evicted, and their
    # next task found them missing and replayed them.
    assert totals["temporal_sticky_cache_total_forced_eviction"] >= 10, totals
    assert totals["temporal_sticky_cache_miss"] >= 10, totals
