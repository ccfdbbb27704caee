"""Table test of the one SRM error -> ApplicationError mapping."""

from __future__ import annotations

from datetime import timedelta

import pytest

from activities.errors import MAX_RETRY_AFTER, is_retryable, to_application_error
from srmflow.srm.errors import (
    SrmAuthError,
    SrmConnectionError,
    SrmError,
    SrmHttpError,
    SrmNotFoundError,
    SrmTaskError,
    SrmTimeoutError,
)
from workflows import policies


def http(status: int, retry_after: float | None = None, cls: type = SrmHttpError) -> SrmError:
    return cls(
        "boom",
        status=status,
        method="POST",
        path="/pairings/p/recovery-management/plans/x/actions/reprotect",
        error_code="E",
        op_id="op-1",
        retry_after=retry_after,
    )


CASES = [
    (http(400), policies.SRM_BAD_REQUEST, True, None),
    (http(403), policies.SRM_FORBIDDEN, True, None),
    (http(404, cls=SrmNotFoundError), policies.SRM_NOT_FOUND, True, None),
    (http(404), policies.SRM_NOT_FOUND, True, None),
    (http(401, cls=SrmAuthError), policies.SRM_AUTH, True, None),
    (http(409), policies.SRM_HTTP, True, None),
    (http(408), policies.SRM_UNAVAILABLE, False, None),
    (http(429, retry_after=7), policies.SRM_UNAVAILABLE, False, timedelta(seconds=7)),
    (http(500), policies.SRM_UNAVAILABLE, False, None),
    (http(502), policies.SRM_UNAVAILABLE, False, None),
    (http(503, retry_after=2.5), policies.SRM_UNAVAILABLE, False, timedelta(seconds=2.5)),
    (http(503, retry_after=86400), policies.SRM_UNAVAILABLE, False, MAX_RETRY_AFTER),
    (http(504), policies.SRM_UNAVAILABLE, False, None),
    (SrmTimeoutError("GET /tasks/x: no response"), policies.SRM_CONNECTION, False, None),
    (SrmConnectionError("reset", kind="reset"), policies.SRM_CONNECTION, False, None),
    (SrmConnectionError("refused", kind="connect"), policies.SRM_CONNECTION, False, None),
    (SrmConnectionError("bad cert", kind="tls"), policies.SRM_TLS, True, None),
    (
        SrmTaskError("history failed", task_id="t", status="ERROR"),
        policies.SRM_UNAVAILABLE,
        False,
        None,
    ),
]


@pytest.mark.parametrize(("exc", "kind", "non_retryable", "delay"), CASES)
def test_mapping(exc: SrmError, kind: str, non_retryable: bool, delay: timedelta | None) -> None:
    err = to_application_error(exc, "start_reprotect")
    assert err.type == kind
    assert err.non_retryable is non_retryable
    assert err.next_retry_delay == delay
    assert err.message.startswith("start_reprotect: ")
    assert is_retryable(exc) is not non_retryable


def test_non_retryable_types_are_listed_in_policies() -> None:
    for exc, kind, non_retryable, _ in CASES:
        assert (kind in policies.NON_RETRYABLE_TYPES) is non_retryable, exc


def test_message_carries_client_text_only() -> None:
    err = to_application_error(http(500))
    assert "HTTP 500" in err.message
    assert "op-1" in err.message
