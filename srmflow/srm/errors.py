"""Exceptions raised by the SRM REST client.

The tree is deliberately small so activities can map it to Temporal errors with one table:
connection problems and 408/429/5xx are transient, other 4xx are the caller's fault. No text
built here ever contains a password or a session id.
"""

from __future__ import annotations

from typing import Literal

ConnectionKind = Literal["timeout", "reset", "connect", "tls"]

# Statuses a caller may retry later (Temporal decides; the client never retries by itself).
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class SrmError(Exception):
    """Base class of every error the SRM client raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    @property
    def retryable(self) -> bool:
        """Whether trying the same call later may succeed."""
        return False


class SrmConnectionError(SrmError):
    """The request did not get an HTTP response (DNS, refused, reset, TLS, timeout)."""

    def __init__(
        self,
        message: str,
        *,
        kind: ConnectionKind = "connect",
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind: ConnectionKind = kind
        self.method = method
        self.path = path

    @property
    def retryable(self) -> bool:
        """TLS failures are configuration problems; everything else may be transient."""
        return self.kind != "tls"


class SrmTimeoutError(SrmConnectionError):
    """The request (or connecting) took longer than the configured timeout."""

    def __init__(self, message: str, *, method: str | None = None, path: str | None = None) -> None:
        super().__init__(message, kind="timeout", method=method, path=path)


class SrmHttpError(SrmError):
    """SRM answered with an unexpected HTTP status."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        method: str,
        path: str,
        error_code: str | None = None,
        op_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.method = method
        self.path = path
        self.error_code = error_code
        self.op_id = op_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        code = f" {self.error_code}" if self.error_code else ""
        op = f" (op_id {self.op_id})" if self.op_id else ""
        return f"{self.method} {self.path} -> HTTP {self.status}{code}: {self.message}{op}"

    @property
    def retryable(self) -> bool:
        """408, 429 and 5xx may succeed later; other statuses will not."""
        return self.status in RETRYABLE_STATUSES or self.status >= 500


class SrmAuthError(SrmHttpError):
    """Login was rejected, or a 401 persisted after one re-login."""


class SrmNotFoundError(SrmHttpError):
    """The entity (pairing, plan, task, ...) does not exist (HTTP 404)."""


class SrmTaskError(SrmError):
    """A short read-side SRM task (e.g. history-report generation) did not succeed."""

    def __init__(self, message: str, *, task_id: str, status: str) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.status = status
