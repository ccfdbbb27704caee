"""Drill notifications: a real aiohttp receiver gets HMAC-signed POSTs, retried on 5xx."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from temporalio.client import Client

from activities.notify import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, sign
from tests.drill_support import drill_worker, start_drill
from tests.reprotect_support import unique_site
from tests.simfixture import MakeSim
from workflows.drill_models import DrillInput, WebhookTarget

SECRET = "whsec-test-0123456789"


@dataclass
class Receiver:
    """A webhook endpoint recording every delivery; answers 503 to the first ``fail_first``."""

    url: str = ""
    fail_first: int = 1
    calls: int = 0
    deliveries: asyncio.Queue[tuple[dict[str, str], bytes]] = field(default_factory=asyncio.Queue)

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        body = await request.read()
        if self.calls <= self.fail_first:
            return web.Response(status=503)
        await self.deliveries.put((dict(request.headers), body))
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    yield rec
    await runner.cleanup()


def _verified(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers[SIGNATURE_HEADER], expected)
    assert headers["Content-Type"] == "application/json"
    assert headers[DELIVERY_HEADER]
    return dict(json.loads(body))


def _decoded_payloads(node: Any) -> str:
    """Every payload of a JSON history, base64-decoded and joined."""
    if isinstance(node, dict):
        parts = [_decoded_payloads(v) for k, v in node.items() if k != "data"]
        if isinstance(node.get("data"), str):
            parts.append(base64.b64decode(node["data"]).decode(errors="replace"))
        return "\n".join(parts)
    if isinstance(node, list):
        return "\n".join(_decoded_payloads(v) for v in node)
    return ""


def test_sign_matches_reference() -> None:
    body = b'{"a":1}'
    digest = hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert sign("k", body) == f"sha256={digest}"


async def test_drill_posts_signed_webhooks_on_failure_and_completion(
    client: Client, task_queue: str, make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(plans=3, status="READY_STATE", task_seconds=(0.2, 0.4))
    broken = next(iter(sim.state.plans))
    await sim.set_faults(fail_plans={broken: "storage array timed out"})
    site = unique_site()
    inp = DrillInput(
        site=site,
        plan_name_glob="plan-*",
        max_concurrency=3,
        stop_on_failure=False,
        poll_interval_seconds=1,
        webhook=WebhookTarget(url=receiver.url),
    )
    async with drill_worker(client, task_queue, sim, site, secret=SECRET):
        handle = await start_drill(client, task_queue, inp, f"drill/{site}")
        result = await handle.result()
        first = await asyncio.wait_for(receiver.deliveries.get(), timeout=30)
        second = await asyncio.wait_for(receiver.deliveries.get(), timeout=30)

    events = {h[EVENT_HEADER]: _verified(h, body) for h, body in (first, second)}
    assert set(events) == {"drill.plan_failed", "drill.completed"}
    failed = events["drill.plan_failed"]
    assert failed["plan_id"] == broken
    assert failed["failed_step"] == "test"
    assert failed["next_action"]
    done = events["drill.completed"]
    assert done["workflow_id"] == f"drill/{site}"
    assert done["passed"] is False
    assert done["counts"]["PASSED"] == 2
    assert done["counts"]["FAILED"] == 1
    assert len(done["plans"]) == 3
    assert receiver.calls == 3, "the first POST got 503 and was retried"
    assert not result.passed
    history = _decoded_payloads(json.loads((await handle.fetch_history()).to_json()))
    assert receiver.url in history, "the URL is in the workflow input"
    assert SECRET not in history, "the secret never reaches workflow history"


async def test_webhook_without_worker_secret_does_not_fail_the_drill(
    client: Client, task_queue: str, make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(plans=1, status="READY_STATE", task_seconds=(0.2, 0.3))
    site = unique_site()
    inp = DrillInput(
        site=site,
        plan_name_glob="plan-*",
        poll_interval_seconds=1,
        webhook=WebhookTarget(url=receiver.url),
    )
    async with drill_worker(client, task_queue, sim, site, secret=None):
        handle = await start_drill(client, task_queue, inp, f"drill/{site}")
        result = await handle.result()
    assert result.passed
    assert receiver.calls == 0


async def test_bulk_run_posts_signed_webhooks_on_failure_and_completion(
    client: Client, task_queue: str, make_sim: MakeSim, receiver: Receiver
) -> None:
    from tests.bulk_support import bulk_worker, start_bulk
    from workflows.bulk_models import BulkReprotectInput

    receiver.fail_first = 0
    sim = await make_sim(plans=2, task_seconds=(0.2, 0.3), fail_plans={"plan-002": "LUN lost"})
    site = unique_site()
    inp = BulkReprotectInput(
        site=site,
        all_recovered=True,
        retry_incomplete=False,
        poll_interval_seconds=1,
        webhook=WebhookTarget(url=receiver.url),
    )
    async with bulk_worker(client, task_queue, sim, site, webhook_secret=SECRET):
        await (await start_bulk(client, task_queue, inp, f"bulk-reprotect/{site}/hook")).result()
        first = await asyncio.wait_for(receiver.deliveries.get(), timeout=30)
        second = await asyncio.wait_for(receiver.deliveries.get(), timeout=30)

    events = {h[EVENT_HEADER]: _verified(h, body) for h, body in (first, second)}
    assert set(events) == {"bulk.plan_failed", "bulk.completed"}
    assert events["bulk.plan_failed"]["plan_name"] == "plan-002"
    assert "LUN lost" in events["bulk.plan_failed"]["srm_error"]
    assert events["bulk.completed"]["counts"]["REPROTECTED"] == 1
    assert events["bulk.completed"]["workflow_id"] == f"bulk-reprotect/{site}/hook"
