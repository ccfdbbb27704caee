"""Retry policies, timeouts and ApplicationError type names shared by workflows and activities.

Workflows branch on these type constants, never on message text.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

# ApplicationError types raised by activities (activities/errors.py and activities/srm.py).
SRM_BAD_REQUEST = "SrmBadRequest"  # 400: SRM refused the call as malformed or not allowed now
SRM_FORBIDDEN = "SrmForbidden"  # 403: the configured user lacks a privilege
SRM_NOT_FOUND = "SrmNotFound"  # 404: pairing, plan or task does not exist
SRM_AUTH = "SrmAuthFailed"  # 401 after the client's own re-login: bad credentials
SRM_TLS = "SrmTlsError"  # certificate problem: configuration, not transient
SRM_HTTP = "SrmHttpError"  # another non-retryable HTTP status
SRM_UNAVAILABLE = "SrmUnavailable"  # 408/429/5xx: retryable
SRM_CONNECTION = "SrmConnectionError"  # timeout, reset, refused: retryable
SRM_TASK_LOST = "SrmTaskLost"  # the task vanished from SRM while being followed
UNKNOWN_SITE = "UnknownSite"  # the workflow names a site this worker has no settings for
PAIRING_AMBIGUOUS = "PairingAmbiguous"  # no pairing given and the site has zero or several
PAIRING_UNHEALTHY = "PairingUnhealthy"  # an SRM server of the pairing reports ERROR
PLAN_NOT_ELIGIBLE = "PlanNotEligible"  # the plan's status blocks a reprotect
PLAN_BUSY = "PlanBusy"  # plan says in progress but SRM shows no task yet: retry
WORKER_SHUTDOWN = "WorkerShutdown"  # worker draining: retry on another worker

NON_RETRYABLE_TYPES = [
    SRM_BAD_REQUEST,
    SRM_FORBIDDEN,
    SRM_NOT_FOUND,
    SRM_AUTH,
    SRM_TLS,
    SRM_HTTP,
    UNKNOWN_SITE,
    PAIRING_AMBIGUOUS,
    PAIRING_UNHEALTHY,
    PLAN_NOT_ELIGIBLE,
]

# Short SRM reads and writes: quick first retry, capped backoff; Retry-After overrides.
SRM_CALL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=NON_RETRYABLE_TYPES,
)

# Following a task: an attempt ends only on a crash, drain or persistent SRM outage, so retry
# without an attempt limit (schedule-to-close bounds it) and resume from the heartbeat.
WAIT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=NON_RETRYABLE_TYPES,
)

PRECHECK_START_TO_CLOSE = timedelta(minutes=2)
PRECHECK_SCHEDULE_TO_CLOSE = timedelta(minutes=15)
# Longer than one SRM request timeout (30 s default) plus re-login, so an attempt that times
# out has had its POST answered or abandoned before the next attempt re-reads the plan.
START_START_TO_CLOSE = timedelta(minutes=3)
START_SCHEDULE_TO_CLOSE = timedelta(minutes=30)
# No SRM task is expected to run longer; the input's deadline_seconds may shorten it.
WAIT_SCHEDULE_TO_CLOSE = timedelta(hours=24)
VERIFY_START_TO_CLOSE = timedelta(minutes=5)
VERIFY_SCHEDULE_TO_CLOSE = timedelta(minutes=20)
CANCEL_START_TO_CLOSE = timedelta(minutes=5)
CANCEL_SCHEDULE_TO_CLOSE = timedelta(minutes=15)

# Consecutive transient SRM failures wait_for_task absorbs in-loop before failing the attempt.
WAIT_MAX_CONSECUTIVE_ERRORS = 10
WAIT_MAX_BACKOFF_SECONDS = 30.0


def heartbeat_timeout(poll_interval_seconds: float) -> timedelta:
    """Heartbeat timeout of the short steps: three poll intervals, at least 5 s."""
    return timedelta(seconds=max(3 * poll_interval_seconds, 5.0))


def wait_heartbeat_timeout(poll_interval_seconds: float) -> timedelta:
    """Heartbeat timeout of wait_for_task: six poll intervals (30 s at the default 5 s).

    Every plan whose SRM task runs holds one wait_for_task, and the SDK sends its heartbeats at
    most every 0.8 timeout: at 1,000 plans in flight that is ~42 writes a second to Temporal
    instead of ~83 with three intervals (the dev server's CPU in the 1,000-plan in-flight
    bench: 264 s instead of 320 s). A killed worker's task is resumed elsewhere after this long;
    the SRM task itself runs on, so the cost is up to 30 s of late detection, not work lost.
    """
    return timedelta(seconds=max(6 * poll_interval_seconds, 5.0))
