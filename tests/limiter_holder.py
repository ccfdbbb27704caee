"""A minimal slot holder for the limiter tests (its own module: the workflow sandbox imports it)."""

from __future__ import annotations

import asyncio

from temporalio import workflow

from workflows.limiter import HoldsOperationSlot, OperationSlot


@workflow.defn
class HolderWorkflow(HoldsOperationSlot):
    """Takes one slot of ``site``, holds it until signalled, gives it back."""

    def __init__(self) -> None:
        self._slot = OperationSlot("")
        self._finish = False

    @workflow.run
    async def run(self, site: str) -> str:
        self._slot = OperationSlot(site)
        try:
            await self._slot.acquire(workflow.info().workflow_id, None)
            await workflow.wait_condition(lambda: self._finish)
        except asyncio.CancelledError:
            await self._slot.release()
            raise
        await self._slot.release()
        return "done"

    @workflow.signal
    def finish(self) -> None:
        self._finish = True
