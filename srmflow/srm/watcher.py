"""Batched task polls: one ``GET /tasks`` reads every SRM task a worker follows on one site.

Each ``wait_for_task`` activity asks the site's ``TaskWatcher`` for a reading of its task due at
a loop time, accepting one up to ``slack`` seconds earlier (reading early never adds detection
lag). Requests whose windows overlap share a batch, which fires at the earliest due time among
them and reads all their tasks with ``GET /tasks?filter_property=id&filter=...``, at most
``MAX_IDS_PER_REQUEST`` ids per request. A task the list leaves out (SRM lists recent tasks
only) is read alone with ``GET /tasks/{id}``, so a task SRM no longer knows still raises
``SrmNotFoundError``. An SRM error of a list request reaches the waiters of its ids as that
error. A batch exists only while someone waits for it: one whose waiters all left (cancelled
activities, a draining worker) is never sent, or is cancelled while in flight.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field

import structlog
from pydantic import ValidationError

from srmflow.srm.client import SrmClient
from srmflow.srm.errors import SrmError, SrmHttpError
from srmflow.srm.models import Task

log = structlog.get_logger(__name__)

# SRM task ids are ~80 characters ("DrTask:<uuid>:<guid>"); with "&filter=" and the
# percent-encoded colons 40 of them keep the request line under 4 KB, well below the 8 KB
# that aiohttp (and most servers and proxies) accept by default.
MAX_IDS_PER_REQUEST = 40
# Statuses that say SRM does not take an id filter on its task list: read tasks one by one.
_LIST_REFUSED = frozenset({400, 404})

_Waiters = dict[str, list["asyncio.Future[Task]"]]


@dataclass(eq=False)
class _Batch:
    """Task reads sent together at ``fire_at``; no member accepts one before ``earliest``."""

    earliest: float
    fire_at: float
    context: contextvars.Context
    waiters: _Waiters = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None
    runner: asyncio.Task[None] | None = None

    def live(self) -> _Waiters:
        """The waiters still waiting, by task id."""
        live = {tid: [f for f in futs if not f.done()] for tid, futs in self.waiters.items()}
        return {tid: futs for tid, futs in live.items() if futs}


def _resolve(waiters: list[asyncio.Future[Task]], task: Task) -> None:
    for future in waiters:
        if not future.done():
            future.set_result(task)


def _fail(waiters: list[asyncio.Future[Task]], exc: BaseException) -> None:
    for future in waiters:
        if not future.done():
            future.set_exception(exc)


def _chunks(ids: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


class TaskWatcher:
    """Reads the tasks of one SRM site for many waiters at once; one per site and process."""

    def __init__(self, client: SrmClient, *, max_ids: int = MAX_IDS_PER_REQUEST) -> None:
        self._client = client
        self._max_ids = max(1, max_ids)
        self._scheduled: list[_Batch] = []
        self._running: set[_Batch] = set()
        # Cleared for good when SRM refuses the id filter: then each task is read alone.
        self._listing = True

    @property
    def idle(self) -> bool:
        """True when no batch is scheduled or in flight."""
        return not self._scheduled and not self._running

    async def read(self, task_id: str, *, due: float, slack: float = 0.0) -> Task:
        """The task as read by a batch sent between ``due - slack`` and ``due`` (loop time)."""
        return await self.request(task_id, due=due, slack=slack)

    def request(self, task_id: str, *, due: float, slack: float = 0.0) -> asyncio.Future[Task]:
        """A future of ``read``'s answer; cancelling it leaves the batch."""
        loop = asyncio.get_running_loop()
        batch = self._join(due, max(0.0, slack))
        if batch is None:
            batch = self._schedule(loop, due, max(0.0, slack))
        future: asyncio.Future[Task] = loop.create_future()
        batch.waiters.setdefault(task_id, []).append(future)
        future.add_done_callback(lambda done: self._left(batch, done))
        return future

    # --- batches ------------------------------------------------------------------------------

    def _join(self, due: float, slack: float) -> _Batch | None:
        """A scheduled batch whose window overlaps ``[due - slack, due]``, narrowed to both."""
        fits = [b for b in self._scheduled if b.earliest <= due and due - slack <= b.fire_at]
        if not fits:
            return None
        batch = max(fits, key=lambda b: b.fire_at)
        batch.earliest = max(batch.earliest, due - slack)
        if due < batch.fire_at:
            batch.fire_at = due
            if batch.timer is not None:
                batch.timer.cancel()
            batch.timer = self._timer(asyncio.get_running_loop(), batch)
        return batch

    def _schedule(self, loop: asyncio.AbstractEventLoop, due: float, slack: float) -> _Batch:
        # The batch runs in the context of the activity that scheduled it, so its requests
        # trace under that activity's span, but without its log bindings: the batch serves many
        # activities, and its log lines must not name one workflow or plan.
        context = contextvars.copy_context()
        context.run(structlog.contextvars.clear_contextvars)
        batch = _Batch(earliest=due - slack, fire_at=due, context=context)
        batch.timer = self._timer(loop, batch)
        self._scheduled.append(batch)
        return batch

    def _timer(self, loop: asyncio.AbstractEventLoop, batch: _Batch) -> asyncio.TimerHandle:
        return loop.call_at(batch.fire_at, self._fire, batch, context=batch.context)

    def _fire(self, batch: _Batch) -> None:
        self._scheduled.remove(batch)
        batch.timer = None
        live = batch.live()
        if not live:
            return
        batch.runner = asyncio.get_running_loop().create_task(self._run(live))
        self._running.add(batch)
        batch.runner.add_done_callback(lambda _: self._running.discard(batch))

    def _left(self, batch: _Batch, future: asyncio.Future[Task]) -> None:
        """A waiter left: drop the batch, or stop its requests, once nobody waits for it."""
        if not future.cancelled() or batch.live():
            return
        if batch.timer is not None:
            batch.timer.cancel()
            batch.timer = None
            self._scheduled.remove(batch)
        elif batch.runner is not None:
            batch.runner.cancel()

    # --- requests -----------------------------------------------------------------------------

    async def _run(self, waiters: _Waiters) -> None:
        ids = list(waiters)
        chunks = list(_chunks(ids, self._max_ids)) if self._listing else [[i] for i in ids]
        results = await asyncio.gather(
            *(self._read_chunk(chunk, waiters) for chunk in chunks), return_exceptions=True
        )
        log.debug("srm_tasks_read", site=self._client.site_name, tasks=len(ids), chunks=len(chunks))
        bugs = [r for r in results if isinstance(r, BaseException)]
        if bugs:
            # Not an SRM error: a bug, which every waiter still waiting sees as it is.
            for futures in waiters.values():
                _fail(futures, bugs[0])

    async def _read_chunk(self, ids: list[str], waiters: _Waiters) -> None:
        found: dict[str, Task] = {}
        if self._listing:
            listed = await self._list(ids, waiters)
            if listed is None:
                return
            wanted = set(ids)
            found = {t.id: t for t in listed if t.id in wanted}
        for task_id, task in found.items():
            _resolve(waiters[task_id], task)
        missing = [i for i in ids if i not in found]
        await asyncio.gather(*(self._read_one(i, waiters[i]) for i in missing))

    async def _list(self, ids: list[str], waiters: _Waiters) -> list[Task] | None:
        """The listed tasks of ``ids``; [] to read them alone; None when the waiters failed."""
        client = self._client
        try:
            return await client.list_tasks(filter_property="id", filters=ids, limit=len(ids))
        except SrmHttpError as exc:
            if exc.status not in _LIST_REFUSED:
                self._fail_all(ids, waiters, exc)
                return None
            self._listing = False
            log.warning(
                "srm_task_list_refused", site=client.site_name, status=exc.status, tasks=len(ids)
            )
            return []
        except SrmError as exc:
            self._fail_all(ids, waiters, exc)
            return None
        except ValidationError as exc:
            # One malformed task must fail only its own waiters, as a single read would.
            log.warning(
                "srm_task_list_unreadable",
                site=client.site_name,
                tasks=len(ids),
                errors=exc.error_count(),
            )
            return []

    def _fail_all(self, ids: list[str], waiters: _Waiters, exc: SrmError) -> None:
        log.info(
            "srm_tasks_read_failed",
            site=self._client.site_name,
            tasks=len(ids),
            error=type(exc).__name__,
            status=getattr(exc, "status", None),
        )
        for task_id in ids:
            _fail(waiters[task_id], exc)

    async def _read_one(self, task_id: str, waiters: list[asyncio.Future[Task]]) -> None:
        try:
            task = await self._client.get_task(task_id)
        except Exception as exc:
            # SrmNotFoundError and the rest reach this task's waiters as a single read raises
            # them; anything else too, so a bug shows where it would have without the batch.
            _fail(waiters, exc)
            return
        _resolve(waiters, task)
