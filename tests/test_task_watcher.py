"""TaskWatcher against the real simulator: one ``GET /tasks`` answers many task polls.

The simulator counts API requests by route (``requests`` in its state); every test starts
counting after its tasks are posted, so the counts are the watcher's requests only.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.errors import is_retryable
from activities.srm import SrmActivities
from srmflow.srm.client import SrmClient
from srmflow.srm.errors import SrmConnectionError, SrmHttpError, SrmNotFoundError
from srmflow.srm.models import Task, TaskStatus
from srmflow.srm.watcher import MAX_IDS_PER_REQUEST, TaskWatcher
from tests.reprotect_support import eventually, site_settings
from tests.simfixture import MakeSim, SimHandle
from workflows import policies
from workflows.models import TaskProgress, WaitForTaskInput

LIST = "GET /tasks"
SINGLE = "GET /tasks/{task_id}"
UNKNOWN = "DrTask:00000000-0000-4000-8000-000000000000:no-such-task"


@asynccontextmanager
async def _site(
    make_sim: MakeSim, tasks: int, **sim_options: Any
) -> AsyncIterator[tuple[SimHandle, SrmClient, list[Task]]]:
    """A simulator with ``tasks`` running reprotects, a client, and the counters at zero."""
    sim_options.setdefault("task_seconds", (120.0, 120.0))
    sim = await make_sim(plans=tasks, **sim_options)
    async with SrmClient(site_settings(sim, "watch")) as srm:
        posted = [await srm.reprotect(sim.pairing_id, plan) for plan in sim.state.plans]
        await sim.admin("POST", "reset-journal")
        yield sim, srm, posted


def _counts(sim: SimHandle) -> dict[str, int]:
    return dict(Counter(sim.state.requests))


def _now() -> float:
    return asyncio.get_running_loop().time()


async def _read_all(
    watcher: TaskWatcher, ids: Sequence[str], dues: Sequence[float], slack: float
) -> list[Task | BaseException]:
    # request() enlists every waiter before any batch can fire.
    futures = [
        watcher.request(task_id, due=due, slack=slack)
        for task_id, due in zip(ids, dues, strict=True)
    ]
    return await asyncio.gather(*futures, return_exceptions=True)


def _ids(results: Sequence[Task | BaseException]) -> list[str]:
    return [r.id if isinstance(r, Task) else type(r).__name__ for r in results]


async def test_polls_due_within_one_window_share_one_request(make_sim: MakeSim) -> None:
    async with _site(make_sim, 5) as (sim, srm, tasks):
        watcher = TaskWatcher(srm)
        start = _now()
        # Windows [due - 0.1, due] for dues 0.10 .. 0.18 s ahead all hold 0.08 .. 0.10 s.
        dues = [start + 0.10 + 0.02 * i for i in range(5)]
        results = await _read_all(watcher, [t.id for t in tasks], dues, slack=0.1)
        answered = _now()
        assert _counts(sim) == {LIST: 1}
    assert _ids(results) == [t.id for t in tasks]
    assert all(
        isinstance(r, Task) and r.entity == t.entity for r, t in zip(results, tasks, strict=True)
    )
    assert all(isinstance(r, Task) and not r.is_terminal for r in results)
    # Sent at the earliest due time, never before any waiter's window opened.
    assert answered >= max(dues) - 0.1
    assert watcher.idle


async def test_polls_due_apart_get_a_request_each(make_sim: MakeSim) -> None:
    async with _site(make_sim, 2) as (sim, srm, tasks):
        watcher = TaskWatcher(srm)
        start = _now()
        dues = [start + 0.05, start + 0.3]
        results = await _read_all(watcher, [t.id for t in tasks], dues, slack=0.1)
        assert _counts(sim) == {LIST: 2}
    assert _ids(results) == [t.id for t in tasks]


async def test_a_poll_without_slack_joins_a_batch_that_covers_its_due_time(
    make_sim: MakeSim,
) -> None:
    async with _site(make_sim, 2) as (sim, srm, tasks):
        watcher = TaskWatcher(srm)
        start = _now()
        # The first accepts 0.1 .. 0.3 s; the second wants exactly 0.2 s: the batch moves there.
        flexible = watcher.request(tasks[0].id, due=start + 0.3, slack=0.2)
        exact = watcher.request(tasks[1].id, due=start + 0.2)
        results = await asyncio.gather(flexible, exact)
        answered = _now()
        assert _counts(sim) == {LIST: 1}
    assert _ids(results) == [t.id for t in tasks]
    assert answered >= start + 0.2


async def test_more_ids_than_one_request_holds_are_chunked(make_sim: MakeSim) -> None:
    count = MAX_IDS_PER_REQUEST + 1
    async with _site(make_sim, count, task_seconds=(300.0, 300.0)) as (sim, srm, tasks):
        ids = [t.id for t in tasks]
        # Real SRM-shaped ids (~80 characters): 40 of them pass aiohttp's request-line limit.
        assert min(len(i) for i in ids) >= 80
        results = await _read_all(TaskWatcher(srm), ids, [_now()] * count, slack=0.5)
        assert _counts(sim) == {LIST: 2}
        assert _ids(results) == ids

        await sim.admin("POST", "reset-journal")
        small = TaskWatcher(srm, max_ids=4)
        results = await _read_all(small, ids[:10], [_now()] * 10, slack=0.5)
        assert _counts(sim) == {LIST: 3}
        assert _ids(results) == ids[:10]


async def test_an_unknown_task_is_read_alone_and_not_found(make_sim: MakeSim) -> None:
    async with _site(make_sim, 2) as (sim, srm, tasks):
        watcher = TaskWatcher(srm)
        ids = [tasks[0].id, UNKNOWN, tasks[1].id]
        results = await _read_all(watcher, ids, [_now()] * 3, slack=0.5)
        assert _counts(sim) == {LIST: 1, SINGLE: 1}
    assert _ids(results) == [tasks[0].id, "SrmNotFoundError", tasks[1].id]
    missing = results[1]
    assert isinstance(missing, SrmNotFoundError)
    assert missing.status == 404
    assert missing.path.startswith("/tasks/")


class _RecentOnly(SrmClient):
    """SRM lists recent tasks only: this client's task lists leave out ``forgotten``."""

    forgotten: frozenset[str] = frozenset()

    async def list_tasks(self, **kwargs: Any) -> list[Task]:
        return [t for t in await super().list_tasks(**kwargs) if t.id not in self.forgotten]


async def test_a_task_the_list_leaves_out_is_read_alone(make_sim: MakeSim) -> None:
    sim = await make_sim(plans=3, task_seconds=(120.0, 120.0))
    srm = _RecentOnly(site_settings(sim, "watch"))
    async with srm:
        tasks = [await srm.reprotect(sim.pairing_id, plan) for plan in sim.state.plans]
        srm.forgotten = frozenset({tasks[1].id})
        await sim.admin("POST", "reset-journal")
        results = await _read_all(TaskWatcher(srm), [t.id for t in tasks], [_now()] * 3, 0.5)
        assert _counts(sim) == {LIST: 1, SINGLE: 1}
    assert _ids(results) == [t.id for t in tasks]


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"error_rate": 1.0, "error_status": 503, "retry_after_s": 2}, SrmHttpError),
        ({"error_rate": 1.0, "error_status": 500}, SrmHttpError),
        ({"reset_rate": 1.0}, SrmConnectionError),
    ],
    ids=["503", "500", "reset"],
)
async def test_an_srm_error_reaches_every_waiter_as_a_single_read_raises_it(
    make_sim: MakeSim, fault: dict[str, Any], error: type[Exception]
) -> None:
    async with _site(make_sim, 3) as (sim, srm, tasks):
        ids = [t.id for t in tasks]
        await sim.set_faults(method="GET", path_pattern="/tasks", **fault)
        with pytest.raises(error) as single:
            await srm.get_task(ids[0])
        await sim.admin("POST", "reset-journal")
        watcher = TaskWatcher(srm)
        results = await _read_all(watcher, ids, [_now()] * 3, slack=0.5)
        # One list request (aiohttp resends a GET once whose kept-alive connection dropped),
        # and no single reads: an error is no reason to ask SRM once per task.
        assert list(_counts(sim)) == [LIST]
        for failed in results:
            assert type(failed) is type(single.value), results
            assert isinstance(failed, SrmHttpError | SrmConnectionError)
            assert is_retryable(failed)
            if isinstance(failed, SrmHttpError):
                assert failed.status == fault["error_status"]
                assert failed.retry_after == fault.get("retry_after_s")
        # The watcher lives on: the next polls are answered, by one request.
        await sim.admin("PUT", "faults", {"reset": True})
        await sim.admin("POST", "reset-journal")
        again = await _read_all(watcher, ids, [_now()] * 3, slack=0.5)
        assert _counts(sim) == {LIST: 1}
    assert _ids(again) == ids
    assert watcher.idle


async def test_an_error_fails_only_the_waiters_of_its_request(make_sim: MakeSim) -> None:
    async with _site(make_sim, 4) as (sim, srm, tasks):
        ids = [t.id for t in tasks]
        await sim.set_faults(inject=[503], method="GET", path_pattern="/tasks$")
        results = await _read_all(TaskWatcher(srm, max_ids=2), ids, [_now()] * 4, slack=0.5)
        assert _counts(sim) == {LIST: 2}
    failed = [i for i, r in enumerate(results) if isinstance(r, SrmHttpError)]
    assert failed in ([0, 1], [2, 3]), results
    assert all(isinstance(r, Task) for i, r in enumerate(results) if i not in failed)


async def test_a_refused_id_filter_turns_to_single_reads_for_good(make_sim: MakeSim) -> None:
    async with _site(make_sim, 2) as (sim, srm, tasks):
        ids = [t.id for t in tasks]
        await sim.set_faults(inject=[400], method="GET", path_pattern="/tasks$")
        watcher = TaskWatcher(srm)
        first = await _read_all(watcher, ids, [_now()] * 2, slack=0.5)
        assert _counts(sim) == {LIST: 1, SINGLE: 2}
        second = await _read_all(watcher, ids, [_now()] * 2, slack=0.5)
        assert _counts(sim) == {LIST: 1, SINGLE: 4}
    assert _ids(first) == _ids(second) == ids


async def test_a_cancelled_waiter_leaves_and_the_others_are_answered(make_sim: MakeSim) -> None:
    async with _site(make_sim, 3) as (sim, srm, tasks):
        watcher = TaskWatcher(srm)
        due = _now() + 0.5
        leaving = asyncio.create_task(watcher.read(tasks[0].id, due=due, slack=0.1))
        await eventually(lambda: _is_busy(watcher))
        staying = [watcher.request(t.id, due=due, slack=0.1) for t in tasks[1:]]
        leaving.cancel()
        results = await asyncio.gather(*staying)
        assert _counts(sim) == {LIST: 1}
        assert leaving.cancelled()
    assert [r.id for r in results] == [t.id for t in tasks[1:]]
    assert watcher.idle


async def _is_busy(watcher: TaskWatcher) -> bool:
    return not watcher.idle


async def test_a_batch_whose_waiters_all_left_is_not_sent(make_sim: MakeSim) -> None:
    async with _site(make_sim, 2) as (sim, srm, tasks):
        watcher = TaskWatcher(srm)
        start = _now()
        gone = [watcher.request(t.id, due=start + 0.1, slack=0.0) for t in tasks]
        for future in gone:
            future.cancel()
        await eventually(lambda: _is_idle(watcher))
        # A later poll comes after the abandoned batch's time: only the later one was sent.
        later = await watcher.read(tasks[0].id, due=start + 0.3)
        assert _counts(sim) == {LIST: 1}
    assert later.id == tasks[0].id


async def _is_idle(watcher: TaskWatcher) -> bool:
    return watcher.idle


async def test_a_batch_in_flight_is_stopped_when_its_waiters_leave(make_sim: MakeSim) -> None:
    async with _site(make_sim, 2) as (sim, srm, tasks):
        await sim.set_faults(latency_ms=(5000, 5000))
        watcher = TaskWatcher(srm)
        due = _now()
        waiting = [watcher.request(t.id, due=due) for t in tasks]

        async def in_flight() -> bool:
            return sim.state.requests_open == 1 and not watcher.idle

        await eventually(in_flight)
        for future in waiting:
            future.cancel()
        await eventually(lambda: _is_idle(watcher))
        await sim.set_faults(latency_ms=(0, 0))
        after = await watcher.read(tasks[1].id, due=_now())
    assert after.id == tasks[1].id


# --- through the wait_for_task activity ------------------------------------------------------


def _wait_input(sim: SimHandle, task: Task) -> WaitForTaskInput:
    return WaitForTaskInput(
        site="watch",
        pairing_id=sim.pairing_id,
        plan_id=task.entity or "",
        task_id=task.id,
        poll_interval_seconds=1,
    )


async def test_tasks_followed_together_share_their_polls(make_sim: MakeSim) -> None:
    async with _site(make_sim, 3, task_seconds=(3.0, 3.0)) as (sim, srm, tasks):
        acts = SrmActivities({"watch": srm})
        polls: dict[str, int] = {}

        async def follow(task: Task) -> str:
            env = ActivityEnvironment()

            def heartbeat(*details: Any) -> None:
                if details and isinstance(details[0], TaskProgress):
                    polls[task.id] = details[0].polls

            env.on_heartbeat = heartbeat
            outcome = await env.run(acts.wait_for_task, _wait_input(sim, task))
            return outcome.status

        statuses = await asyncio.gather(*(follow(t) for t in tasks))
        counts = _counts(sim)
    assert statuses == [TaskStatus.SUCCESS] * 3
    # Every task was polled more than once, yet the polls shared their requests.
    assert all(polls[t.id] >= 2 for t in tasks), polls
    assert SINGLE not in counts
    assert counts[LIST] < sum(polls.values()), (counts, polls)


@pytest.mark.parametrize("ending", ["cancel", "worker_shutdown"])
async def test_a_wait_ended_by_cancel_or_shutdown_leaves_the_watcher_idle(
    make_sim: MakeSim, ending: str
) -> None:
    async with _site(make_sim, 1) as (sim, srm, tasks):
        watcher = TaskWatcher(srm)
        acts = SrmActivities({"watch": srm}, watchers={"watch": watcher})
        env = ActivityEnvironment()
        heartbeats: list[Any] = []
        env.on_heartbeat = lambda *details: heartbeats.append(details)
        waiting = asyncio.create_task(env.run(acts.wait_for_task, _wait_input(sim, tasks[0])))

        async def polled_and_waiting() -> bool:
            polled = any(d and isinstance(d[0], TaskProgress) and d[0].polls for d in heartbeats)
            return polled and not watcher.idle

        await eventually(polled_and_waiting)
        getattr(env, ending)()
        if ending == "cancel":
            with pytest.raises(asyncio.CancelledError):
                await waiting
        else:
            with pytest.raises(ApplicationError) as left:
                await waiting
            assert left.value.type == policies.WORKER_SHUTDOWN
        await eventually(lambda: _is_idle(watcher))
        polls = _counts(sim)[LIST]
    # Nothing was sent after the wait ended.
    assert polls == max(d[0].polls for d in heartbeats if d and isinstance(d[0], TaskProgress))
