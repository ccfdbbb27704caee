"""RequestGate: a concurrency limit on SRM requests whose size can change while requests wait.

A worker process's share of its site's request limit is leased from the site limiter and
changes as workers come and go (``srmflow/leases.py``), so the SRM client cannot use a fixed
``asyncio.Semaphore``. Lowering the limit never interrupts a request already open: new ones
wait until the open count is below the new limit. A limit of 0 holds every new request.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType


class RequestGate:
    """``async with gate:`` around one SRM request; ``await gate.resize(n)`` changes the limit.

    Waiters are served first come, first served: a freed slot is handed to the oldest waiter
    (counted as open on its behalf), so a release wakes one task, not all of them, and a waiter
    cancelled right after being handed a slot passes it on.
    """

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("a request limit cannot be negative")
        self._limit = limit
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def limit(self) -> int:
        """Requests allowed open at once now."""
        return self._limit

    @property
    def open(self) -> int:
        """Requests open now (may exceed ``limit`` for a while after it was lowered)."""
        return self._open

    async def resize(self, limit: int) -> None:
        """Set the limit; waiters proceed at once when it grows."""
        if limit < 0:
            raise ValueError("a request limit cannot be negative")
        self._limit = limit
        self._hand_over()

    async def __aenter__(self) -> None:
        """Wait until fewer than ``limit`` requests are open, then count this one."""
        if not self._waiters and self._open < self._limit:
            self._open += 1
            return
        slot = asyncio.get_running_loop().create_future()
        self._waiters.append(slot)
        try:
            await slot
        except asyncio.CancelledError:
            if slot.done() and not slot.cancelled():
                # Handed a slot just as it was cancelled: give it to the next waiter.
                self._open -= 1
                self._hand_over()
            elif slot in self._waiters:  # a hand-over may have dropped it already
                self._waiters.remove(slot)
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Count the request as closed and hand its slot to the oldest waiter."""
        self._open -= 1
        self._hand_over()

    def _hand_over(self) -> None:
        while self._waiters and self._open < self._limit:
            slot = self._waiters.popleft()
            if not slot.done():
                self._open += 1
                slot.set_result(None)
