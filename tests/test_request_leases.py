"""Site-wide request limit: workers lease shares of max_requests from the site limiter.

The share arithmetic is checked as pure functions; the leases themselves run against the real
dev server with the limiter in an in-process worker and real ``RequestLeaseKeeper`` objects
(one per simulated worker process). ``tests/test_site_limit.py`` proves the limit on a real
simulator with two ``srmflow worker`` processes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from srmflow.leases import RequestLeaseKeeper
from srmflow.settings import SrmSiteSettings
from srmflow.srm.gate import RequestGate
from tests.reprotect_support import eventually
from workflows.limiter import SiteLimiterWorkflow
from workflows.limiter_models import (
    LimiterState,
    RequestLeaseAsk,
    WorkerLease,
    fair_shares,
    limiter_workflow_id,
    share_requests,
)

CAPACITY = 6


# --- share arithmetic -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("capacity", "wants", "shares"),
    [
        (6, {"a": 8}, {"a": 6}),
        (6, {"a": 8, "b": 8}, {"a": 3, "b": 3}),
        (7, {"a": 8, "b": 8}, {"a": 4, "b": 3}),
        (10, {"a": 2, "b": 8, "c": 8}, {"a": 2, "b": 4, "c": 4}),
        (2, {"a": 8, "b": 8, "c": 8}, {"a": 1, "b": 1, "c": 0}),
        (16, {"a": 8, "b": 8}, {"a": 8, "b": 8}),
    ],
)
def test_fair_shares_fill_up_to_the_wants(
    capacity: int, wants: dict[str, int], shares: dict[str, int]
) -> None:
    assert fair_shares(capacity, wants) == shares
    assert sum(shares.values()) <= capacity


def _lease(worker: str, granted: int, held: int) -> WorkerLease:
    return WorkerLease(worker=worker, want=8, granted=granted, held=held, expires=datetime.now(UTC))


def _ask(worker: str, *, limit: int = 0, in_use: int = 0) -> RequestLeaseAsk:
    return RequestLeaseAsk(
        site="s",
        task_queue="q",
        worker=worker,
        capacity=CAPACITY,
        want=8,
        limit=limit,
        in_use=in_use,
        hold_seconds=60,
    )


def test_a_newcomer_gets_only_what_the_others_leave_free() -> None:
    # "a" holds the whole site: "b" gets nothing yet, though its fair share is 3.
    assert share_requests(_ask("b"), [_lease("a", 6, 6)]) == (0, 3, 0)
    # "a" renews: its grant drops to 3 but it still counts 6 (its limit while it asked).
    assert share_requests(_ask("a", limit=6, in_use=5), [_lease("b", 0, 0)]) == (3, 3, 6)
    # "a" renews again under its new limit with 4 requests still open: those count.
    assert share_requests(_ask("a", limit=3, in_use=4), [_lease("b", 0, 0)]) == (3, 3, 4)
    assert share_requests(_ask("b"), [_lease("a", 3, 4)]) == (2, 3, 2)
    assert share_requests(_ask("a", limit=3, in_use=1), [_lease("b", 2, 2)]) == (3, 3, 3)
    assert share_requests(_ask("b", limit=2), [_lease("a", 3, 3)]) == (3, 3, 3)


# --- the gate -------------------------------------------------------------------------------


async def _settle() -> None:
    """Let every runnable task run until it blocks (nothing here waits on time or I/O)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_gate_holds_requests_at_zero_and_lets_them_through_when_resized() -> None:
    gate = RequestGate(0)
    entered: list[int] = []
    leave = asyncio.Event()

    async def request(n: int) -> None:
        async with gate:
            entered.append(n)
            await leave.wait()

    tasks = [asyncio.create_task(request(n)) for n in range(3)]
    await _settle()
    assert entered == []
    await gate.resize(2)
    await _settle()
    assert len(entered) == 2
    assert gate.open == 2
    # Lowering the limit keeps open requests open; the third waits until one closes below 1.
    await gate.resize(1)
    leave.set()
    await asyncio.gather(*tasks)
    assert sorted(entered) == [0, 1, 2]
    assert gate.open == 0


async def test_a_waiter_cancelled_as_it_is_handed_a_slot_passes_it_on() -> None:
    gate = RequestGate(1)
    await gate.__aenter__()

    async def waiter() -> None:
        async with gate:
            pass

    doomed, patient = asyncio.create_task(waiter()), asyncio.create_task(waiter())
    await _settle()
    # The release hands the slot to the oldest waiter; it is cancelled before it runs.
    await gate.__aexit__(None, None, None)
    doomed.cancel()
    await asyncio.wait_for(patient, 5)  # a lost slot would leave it waiting for good
    assert doomed.cancelled()
    assert gate.open == 0


async def test_waiters_get_freed_slots_first_come_first_served() -> None:
    gate = RequestGate(1)
    order: list[int] = []
    leave = asyncio.Event()

    async def first() -> None:
        async with gate:
            await leave.wait()

    async def request(n: int) -> None:
        async with gate:
            order.append(n)

    holder = asyncio.create_task(first())
    await _settle()
    waiters = []
    for n in range(4):
        waiters.append(asyncio.create_task(request(n)))
        await _settle()
    leave.set()
    await asyncio.gather(holder, *waiters)
    assert order == [0, 1, 2, 3]


# --- leases on the dev server ---------------------------------------------------------------


class Ledger:
    """The limits of the live gates; remembers the largest total ever in force."""

    def __init__(self) -> None:
        self.limits: dict[str, int] = {}
        self.history: dict[str, list[int]] = {}
        self.peak_total = 0

    def set(self, name: str, limit: int) -> None:
        self.limits[name] = limit
        self.history.setdefault(name, []).append(limit)
        self.peak_total = max(self.peak_total, sum(self.limits.values()))

    def forget(self, name: str) -> None:
        self.limits.pop(name, None)


class WatchedGate(RequestGate):
    def __init__(self, name: str, ledger: Ledger) -> None:
        super().__init__(0)
        self._name, self._ledger = name, ledger

    async def resize(self, limit: int) -> None:
        await super().resize(limit)
        self._ledger.set(self._name, limit)


class Fleet:
    """Keepers standing in for worker processes, all on one task queue and site."""

    def __init__(self, client: Client, queue: str, site: SrmSiteSettings) -> None:
        self.client, self.queue, self.site = client, queue, site
        self.ledger = Ledger()
        self.gates: dict[str, WatchedGate] = {}
        self.keepers: dict[str, RequestLeaseKeeper] = {}
        self._stops: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, name: str, *, trust_seconds: float = 30.0) -> None:
        gate = self.gates[name] = WatchedGate(name, self.ledger)
        keeper = RequestLeaseKeeper(
            self.client,
            self.queue,
            self.site,
            gate,
            worker_id=f"{name}-{uuid.uuid4().hex[:6]}",
            trust_seconds=trust_seconds,
        )
        self.keepers[name] = keeper
        self._stops[name] = asyncio.Event()
        self._tasks[name] = asyncio.create_task(keeper.run(self._stops[name]))

    async def stop(self, name: str) -> None:
        """A clean shutdown: stop renewing, give the share back."""
        self._stops[name].set()
        await self._tasks[name]
        await self.keepers[name].release()
        self.ledger.forget(name)

    async def crash(self, name: str) -> None:
        """The process is gone: no renewal, no release."""
        self._tasks[name].cancel()
        await asyncio.gather(self._tasks[name], return_exceptions=True)
        self.ledger.forget(name)

    async def limits_become(self, **want: int) -> None:
        async def reached() -> bool:
            return all(self.gates[n].limit == v for n, v in want.items())

        await eventually(reached, within=30)

    async def status(self) -> LimiterState:
        handle = self.client.get_workflow_handle(limiter_workflow_id(self.site.name, self.queue))
        return await handle.query(SiteLimiterWorkflow.status)

    async def close(self) -> None:
        for name, task in self._tasks.items():
            self._stops[name].set()
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)


def _site(name: str, **extra: object) -> SrmSiteSettings:
    return SrmSiteSettings(
        name=name,
        url="http://127.0.0.1:9",
        username="u",
        password=SecretStr("p"),
        remote_username="r",
        remote_password=SecretStr("p"),
        max_requests=CAPACITY,
        max_in_flight=8,
        **extra,  # type: ignore[arg-type]
    )


@contextmanager
def _no_overshoot(fleet: Fleet) -> Iterator[None]:
    yield
    assert fleet.ledger.peak_total <= CAPACITY, fleet.ledger.history


@asynccontextmanager
async def _fleet(client: Client, **site: object) -> AsyncIterator[tuple[Fleet, Worker]]:
    queue = f"lease-{uuid.uuid4()}"
    fleet = Fleet(client, queue, _site(f"site-{uuid.uuid4().hex[:8]}", **site))
    worker = Worker(client, task_queue=queue, workflows=[SiteLimiterWorkflow])
    try:
        async with worker:
            yield fleet, worker
    finally:
        await fleet.close()


@pytest.fixture
async def fleet(dev_env: WorkflowEnvironment) -> AsyncIterator[Fleet]:
    async with _fleet(dev_env.client) as (made, _):
        yield made


async def test_workers_split_the_site_limit_and_never_exceed_it(fleet: Fleet) -> None:
    with _no_overshoot(fleet):
        fleet.start("a")
        await fleet.limits_become(a=CAPACITY)
        fleet.start("b")
        await fleet.limits_become(a=3, b=3)
        status = await fleet.status()
        assert status.request_capacity == CAPACITY
        assert sorted(lease.granted for lease in status.leases) == [3, 3]
        assert sum(lease.held for lease in status.leases) <= CAPACITY
        # A clean stop gives the share back; the survivor takes the whole site at its renewal.
        await fleet.stop("a")
        await fleet.limits_become(b=CAPACITY)
    assert fleet.ledger.history["b"][0] == 0  # b waited while a still held everything
    assert [lease.granted for lease in (await fleet.status()).leases] == [CAPACITY]


async def test_a_crashed_workers_share_is_handed_on_only_after_its_lease_expires(
    dev_env: WorkflowEnvironment,
) -> None:
    # A short trust and request timeout make the crashed worker's lease expire within seconds.
    async with _fleet(dev_env.client, request_timeout=1.0) as (fleet, _):
        fleet.start("a", trust_seconds=2.0)
        await fleet.limits_become(a=CAPACITY)
        await fleet.crash("a")
        crashed = datetime.now(UTC)
        fleet.start("b", trust_seconds=2.0)
        await fleet.limits_become(b=CAPACITY)
        # hold = trust 2 s + request timeout 1 s + margin 5 s after a's last renewal.
        assert datetime.now(UTC) - crashed > timedelta(seconds=2)
        assert fleet.ledger.history["b"][0] == 0
        assert [lease.granted for lease in (await fleet.status()).leases] == [CAPACITY]


async def test_a_worker_that_cannot_renew_stops_opening_requests(
    dev_env: WorkflowEnvironment,
) -> None:
    async with _fleet(dev_env.client) as (fleet, worker):
        fleet.start("a", trust_seconds=2.0)
        await fleet.limits_become(a=CAPACITY)
        # Nobody serves the limiter any more: renewals time out and the trust runs out.
        await worker.shutdown()
        await fleet.limits_become(a=0)
