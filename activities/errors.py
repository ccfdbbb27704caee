"""The one mapping from SRM client errors to Temporal ApplicationErrors.

Caller errors (400/403/404), persistent auth failures and TLS problems are non-retryable;
408/429/5xx and connection failures are retryable, and SRM's ``Retry-After`` becomes
``next_retry_delay``. Messages come from the client's exception text, which never holds a
secret (the client guarantees it); nothing else is added here.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.exceptions import ApplicationError

from srmflow.srm.errors import (
    SrmAuthError,
    SrmConnectionError,
    SrmError,
    SrmHttpError,
    SrmNotFoundError,
)
from workflows import policies

_NON_RETRYABLE_BY_STATUS = {
    400: policies.SRM_BAD_REQUEST,
    401: policies.SRM_AUTH,
    403: policies.SRM_FORBIDDEN,
    404: policies.SRM_NOT_FOUND,
}
_RETRYABLE_STATUSES = frozenset({408, 429})
# Retry-After is advice; never let a confused server park the activity for longer than this.
MAX_RETRY_AFTER = timedelta(minutes=10)


def to_application_error(exc: SrmError, context: str = "") -> ApplicationError:
    """Map an SRM client error to a typed ApplicationError, with ``context`` as a prefix."""
    prefix = f"{context}: " if context else ""
    message = f"{prefix}{exc}"
    if isinstance(exc, SrmAuthError):
        return ApplicationError(message, type=policies.SRM_AUTH, non_retryable=True)
    if isinstance(exc, SrmNotFoundError):
        return ApplicationError(message, type=policies.SRM_NOT_FOUND, non_retryable=True)
    if isinstance(exc, SrmHttpError):
        return _http_error(exc, message)
    if isinstance(exc, SrmConnectionError):
        if exc.kind == "tls":
            return ApplicationError(message, type=policies.SRM_TLS, non_retryable=True)
        return ApplicationError(message, type=policies.SRM_CONNECTION)
    # Other client errors (e.g. a failed read-side task) may clear up; let Temporal retry.
    return ApplicationError(message, type=policies.SRM_UNAVAILABLE)


def _http_error(exc: SrmHttpError, message: str) -> ApplicationError:
    if exc.status in _NON_RETRYABLE_BY_STATUS:
        kind = _NON_RETRYABLE_BY_STATUS[exc.status]
        return ApplicationError(message, type=kind, non_retryable=True)
    if exc.status in _RETRYABLE_STATUSES or exc.status >= 500:
        delay = None
        if exc.retry_after is not None and exc.retry_after >= 0:
            delay = min(timedelta(seconds=exc.retry_after), MAX_RETRY_AFTER)
        return ApplicationError(message, type=policies.SRM_UNAVAILABLE, next_retry_delay=delay)
    return ApplicationError(message, type=policies.SRM_HTTP, non_retryable=True)


def is_retryable(exc: SrmError) -> bool:
    """Whether the mapped error would be retried (used by loops that absorb transient errors)."""
    return not to_application_error(exc).non_retryable
