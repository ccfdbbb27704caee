"""Webhook notifications: a JSON POST signed with HMAC-SHA256, retried by Temporal.

The secret is the worker's (``SRMFLOW_WEBHOOK_SECRET``), passed to the constructor; workflows
only name the URL, so no secret reaches workflow history. The receiver checks
``X-Srmflow-Signature: sha256=<hex of HMAC-SHA256(secret, raw body)>`` and may de-duplicate
retries by ``X-Srmflow-Delivery``.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import aiohttp
import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from workflows.drill_models import WebhookInput, WebhookResult

log = structlog.get_logger(__name__)

SIGNATURE_HEADER = "X-Srmflow-Signature"
EVENT_HEADER = "X-Srmflow-Event"
DELIVERY_HEADER = "X-Srmflow-Delivery"
WEBHOOK_REJECTED = "WebhookRejected"  # 4xx other than 408/429: retrying will not help
WEBHOOK_NOT_CONFIGURED = "WebhookNotConfigured"  # a URL was given but the worker has no secret
TIMEOUT = aiohttp.ClientTimeout(total=20, connect=5)


def sign(secret: str, body: bytes) -> str:
    """Header value ``sha256=<hex>`` of HMAC-SHA256 over the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def encode(payload: dict[str, object]) -> bytes:
    """The exact bytes that are signed and sent (compact, sorted keys)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()


class NotifyActivities:
    """Sends webhook notifications with the worker's HMAC secret and HTTP session."""

    def __init__(self, secret: str | None, session: aiohttp.ClientSession | None = None) -> None:
        self._secret = secret
        self._session = session

    def _http(self) -> aiohttp.ClientSession:
        # One session for the life of the worker; created on first use when none was given.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=TIMEOUT)
        return self._session

    @activity.defn
    async def send_webhook(self, inp: WebhookInput) -> WebhookResult:
        """POST the signed payload; 2xx succeeds, 408/429/5xx/connection errors are retried."""
        if not self._secret:
            raise ApplicationError(
                "webhook requested but this worker has no SRMFLOW_WEBHOOK_SECRET",
                type=WEBHOOK_NOT_CONFIGURED,
                non_retryable=True,
            )
        body = encode(inp.payload)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._secret, body),
            EVENT_HEADER: inp.event,
            DELIVERY_HEADER: inp.delivery_id,
        }
        attempt = activity.info().attempt
        try:
            async with self._http().post(
                inp.url, data=body, headers=headers, timeout=TIMEOUT
            ) as resp:
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApplicationError(
                f"webhook POST failed: {type(exc).__name__}", type="WebhookUnavailable"
            ) from None
        log.info("webhook_sent", webhook_event=inp.event, status=status, attempt=attempt)
        if 200 <= status < 300:
            return WebhookResult(status=status, attempt=attempt)
        retryable = status in (408, 429) or status >= 500
        raise ApplicationError(
            f"webhook receiver answered {status}",
            type="WebhookUnavailable" if retryable else WEBHOOK_REJECTED,
            non_retryable=not retryable,
        )
