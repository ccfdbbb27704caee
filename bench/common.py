"""Shared pieces of the benchmarks: process figures, simulator admin calls, history sizes."""

from __future__ import annotations

import asyncio
import math
import os
import signal
from collections.abc import Sequence
from typing import Any

import aiohttp
from temporalio.client import Client

from srmflow.demo import DemoStack

MIB = 1024 * 1024


def stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the stack's processes are stopped on the way out."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def memory_kib(pid: int, field: str) -> int:
    """A memory figure of a live process from /proc/<pid>/status (``VmRSS``, ``VmHWM``), KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(f"{field}:"))


def proc_figures(pid: int) -> tuple[float, float]:
    """(peak RSS in MiB from VmHWM, CPU seconds user+system) of a live process."""
    hwm_kib = memory_kib(pid, "VmHWM")
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return hwm_kib / 1024, (int(fields[11]) + int(fields[12])) / ticks


async def sim_admin(stack: DemoStack, path: str, method: str = "GET", body: Any = None) -> Any:
    """Call the simulator's /_sim admin API of the stack."""
    url = f"http://127.0.0.1:{stack.sim_port}/_sim/{path}"
    async with aiohttp.ClientSession() as http, http.request(method, url, json=body) as resp:
        resp.raise_for_status()
        text = await resp.text()
        return await resp.json() if text else None


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (share in 0..1); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


async def history_size(client: Client, workflow_id: str) -> tuple[int, int, int]:
    """(events, bytes, runs) over every run of a workflow id (continue-as-new included)."""
    events = size = runs = 0
    async for execution in client.list_workflows(f'WorkflowId = "{workflow_id}"'):
        handle = client.get_workflow_handle(workflow_id, run_id=execution.run_id)
        history = await handle.fetch_history()
        events += len(history.events)
        size += sum(event.ByteSize() for event in history.events)
        runs += 1
    return events, size, runs


async def histories(client: Client, workflow_ids: Sequence[str]) -> list[tuple[int, int, int]]:
    """history_size of many workflows, a few at a time."""
    gate = asyncio.Semaphore(16)

    async def one(workflow_id: str) -> tuple[int, int, int]:
        async with gate:
            return await history_size(client, workflow_id)

    return list(await asyncio.gather(*(one(w) for w in workflow_ids)))


def table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    """A plain text table."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)), line]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)
