"""srmflow's own Prometheus metrics, on the Temporal runtime's meter (same endpoint as the SDK's).

Workers export them when SRMFLOW_METRICS_BIND is set; without it the default runtime has no
exporter and recording costs next to nothing.
"""

from __future__ import annotations

import re
from collections import Counter

from temporalio.common import MetricMeter

# Path segments that are ids (MoRefs with ':' encoded, UUIDs, numbers) become "{id}", so the
# endpoint label has a handful of values, not one per plan.
_ID_SEGMENT = re.compile(
    r"^(?:.*%3A.*|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|\d+)$"
)


def endpoint_template(path: str) -> str:
    """``/pairings/<uuid>/recovery-management/plans/<id>`` -> ``/pairings/{id}/.../plans/{id}``."""
    path = path.split("?", 1)[0]
    return "/".join("{id}" if _ID_SEGMENT.match(seg) else seg for seg in path.split("/"))


class SrmflowMetrics:
    """The instruments srmflow records besides the SDK's own."""

    def __init__(self, meter: MetricMeter) -> None:
        self._requests = meter.create_counter(
            "srmflow_srm_requests", "SRM REST requests by endpoint and status"
        )
        self._latency = meter.create_histogram_float(
            "srmflow_srm_request_latency", "SRM REST request latency", unit="s"
        )
        self._task_duration = meter.create_histogram_float(
            "srmflow_srm_task_duration", "Duration of SRM tasks srmflow followed", unit="s"
        )
        self._in_flight_gauge = meter.create_gauge(
            "srmflow_srm_operations_in_flight", "SRM tasks this worker is following now"
        )
        self._in_flight: Counter[str] = Counter()
        self._lease_gauge = meter.create_gauge(
            "srmflow_srm_request_lease",
            "SRM requests this worker may keep open (its share of the site's max_requests)",
        )

    def srm_request(
        self, *, site: str, method: str, path: str, status: int | str, seconds: float
    ) -> None:
        """One HTTP exchange with SRM; ``status`` is the code or an error kind."""
        labels = {"site": site, "method": method, "endpoint": endpoint_template(path)}
        self._requests.add(1, {**labels, "status": str(status)})
        self._latency.record(seconds, labels)

    def task_started(self, site: str) -> None:
        """A wait_for_task began following an SRM task."""
        self._in_flight[site] += 1
        self._in_flight_gauge.set(self._in_flight[site], {"site": site})

    def task_finished(self, site: str, *, status: str | None, seconds: float | None) -> None:
        """The followed SRM task ended (or the activity stopped following it)."""
        self._in_flight[site] = max(0, self._in_flight[site] - 1)
        self._in_flight_gauge.set(self._in_flight[site], {"site": site})
        if status is not None and seconds is not None:
            self._task_duration.record(seconds, {"site": site, "status": status})

    def request_lease(self, site: str, granted: int) -> None:
        """This worker's current share of the site's concurrent requests."""
        self._lease_gauge.set(granted, {"site": site})
