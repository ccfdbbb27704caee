"""RequestGate: a concurrency limit on SRM requests whose size can change while requests wait.

A worker process's share of its site's request limit is leased from the site limiter and
changes as workers come and go (``srmflow/leases.py``), so the SRM client cannot use a fixed
``asyncio.Semaphore``. Lowering the limit never interrupts a request already open: new ones
wait until the open count is below the new limit. A limit of 0 holds every new request.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class RequestGate:
    """``async with gate:`` around one SRM request; ``await gate.resize(n)`` changes the limit."""

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("a request limit cannot be negative")
        self._limit = limit
        self._open = 0
        self._changed = asyncio.Condition()

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
        async with self._changed:
            self._limit = limit
            self._changed.notify_all()

    async def __aenter__(self) -> None:
        """Wait until fewer than ``limit`` requests are open, then count this one."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._open < self._limit)
            self._open += 1

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Count the request as closed and let the waiters re-check."""
        async with self._changed:
            self._open -= 1
            # notify_all, not notify: a waiter cancelled after being woken must not swallow
            # the only wake-up (asyncio.Condition on Python 3.11 does not pass it on).
            self._changed.notify_all()
