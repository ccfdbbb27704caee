"""OpenTelemetry tracing, an option switched on with SRMFLOW_TRACING (``otlp`` or ``console``).

Temporal's own ``TracingInterceptor`` on the client carries the trace context in Temporal
headers, so one trace runs from the process that starts a workflow through the workflow, its
child workflows and their activities on any worker. SRM HTTP requests become client spans
under the activity that sent them, recorded from the SRM client's request observer (the hook
the Prometheus metrics use), with method, templated endpoint, path, site and status only:
no header, body or query string, so no password or session id can reach a span.

Exporter, endpoint, service name, sampler and batching come from the standard ``OTEL_*``
variables, which the SDK reads itself. The OpenTelemetry packages are the optional extra
``srmflow[otel]``; they are imported only here and only once tracing is on.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from srmflow.entry import before_hard_exit
from srmflow.metrics import endpoint_template
from srmflow.settings import ConfigError, Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from temporalio.client import Interceptor
    from temporalio.contrib.opentelemetry import TracingInterceptor

    from srmflow.srm.client import RequestObserver

SERVICE_NAME = "srmflow"
INSTALL_HINT = "pip install 'srmflow[otel]'"

_active: Tracing | None = None


class Tracing:
    """A tracer provider, the Temporal interceptor and the SRM request spans built on it."""

    def __init__(self, provider: TracerProvider) -> None:
        from temporalio.contrib.opentelemetry import TracingInterceptor

        self.provider = provider
        self.interceptor: TracingInterceptor = TracingInterceptor(provider.get_tracer("temporalio"))
        self._srm_tracer = provider.get_tracer("srmflow.srm")
        self._closed = False

    def srm_observer(self, inner: RequestObserver | None = None) -> RequestObserver:
        """An SRM client observer that records a span per request, then calls ``inner``."""

        def observe(
            *, site: str, method: str, path: str, status: int | str, seconds: float
        ) -> None:
            self.record_srm_request(
                site=site, method=method, path=path, status=status, seconds=seconds
            )
            if inner is not None:
                inner(site=site, method=method, path=path, status=status, seconds=seconds)

        return observe

    def record_srm_request(
        self, *, site: str, method: str, path: str, status: int | str, seconds: float
    ) -> None:
        """One finished SRM HTTP exchange as a client span under the current span."""
        from opentelemetry.trace import SpanKind, Status, StatusCode

        end = time.time_ns()
        template = endpoint_template(path)
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "url.template": template,
            "url.path": path.split("?", 1)[0],
            "srmflow.site": site,
        }
        failed = not isinstance(status, int) or status >= 400
        if isinstance(status, int):
            attributes["http.response.status_code"] = status
        if failed:
            attributes["error.type"] = str(status)
        span = self._srm_tracer.start_span(
            f"{method} {template}",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=end - int(seconds * 1e9),
        )
        if failed:
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=end)

    def shutdown(self) -> None:
        """Export the spans still buffered and stop; later calls do nothing."""
        if not self._closed:
            self._closed = True
            self.provider.shutdown()


def build_provider(exporter: str) -> TracerProvider:
    """A TracerProvider exporting to OTLP/HTTP or the console (stderr), configured by OTEL_*."""
    try:
        import temporalio.contrib.opentelemetry  # noqa: F401  (needs opentelemetry itself)
        from opentelemetry.sdk.resources import SERVICE_NAME as SERVICE_NAME_KEY
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SpanExporter,
        )

        span_exporter: SpanExporter
        if exporter == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            span_exporter = OTLPSpanExporter()
        else:
            # stdout carries the CLI's ids and JSON; spans go where the logs go.
            span_exporter = ConsoleSpanExporter(out=sys.stderr)
    except ImportError as exc:
        missing = exc.name or "opentelemetry"
        raise ConfigError(
            f"SRMFLOW_TRACING={exporter} needs the OpenTelemetry packages ({missing} is not "
            f"installed): {INSTALL_HINT}"
        ) from None
    # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win; "srmflow" replaces "unknown_service".
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME_KEY, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME_KEY: SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    return provider


def start_tracing(settings: Settings) -> Tracing | None:
    """This process's tracing as SRMFLOW_TRACING asks, or None when off; built once.

    ``hard_exit`` flushes it, since ``os._exit`` skips the SDK's own atexit flush.
    """
    global _active
    if settings.tracing == "off":
        return None
    if _active is None:
        _active = Tracing(build_provider(settings.tracing))
        before_hard_exit(shutdown_tracing)
    return _active


def shutdown_tracing() -> None:
    """Flush and stop this process's tracing, if it was started."""
    global _active
    tracing, _active = _active, None
    if tracing is not None:
        tracing.shutdown()


def interceptors(settings: Settings) -> list[Interceptor]:
    """Temporal client interceptors for this process: the tracing one when tracing is on."""
    tracing = start_tracing(settings)
    return [tracing.interceptor] if tracing is not None else []
