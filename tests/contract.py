"""Checks every simulator request and response against the vendor spec srm-api-v2.json."""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from multidict import CIMultiDict
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.responses.exceptions import ResponseNotFound

from srmflow.simulator.app import API_PREFIX, FAULT_KEY

ROOT = Path(__file__).resolve().parent.parent
# The vendor spec ships in the repo (BSD-2-Clause, see docs/srm-api/LICENSE);
# SRMFLOW_SRM_API_SPEC overrides the search.
SPEC_CANDIDATES = (ROOT / "docs" / "srm-api" / "srm-api-v2.json",)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def spec_path() -> Path:
    """Where srm-api-v2.json is."""
    env = os.environ.get("SRMFLOW_SRM_API_SPEC")
    if env:
        return Path(env)
    for candidate in SPEC_CANDIDATES:
        if candidate.exists():
            return candidate
    raise FileNotFoundError("srm-api-v2.json not found; set SRMFLOW_SRM_API_SPEC")


@functools.cache
def load_spec() -> OpenAPI:
    """The parsed spec, loaded once per process (parsing 770 kB takes about a second)."""
    return OpenAPI.from_file_path(str(spec_path()))


class _Request:
    """openapi-core request view of an aiohttp request, with the API prefix stripped."""

    def __init__(self, request: web.Request, body: bytes | None) -> None:
        self.host_url = f"{request.url.scheme}://{request.url.host}"
        self.path = request.path[len(API_PREFIX) :] or "/"
        self.method = request.method.lower()
        self.body = body
        self.content_type = request.content_type if body else ""
        self.parameters = RequestParameters(
            query=request.query, header=request.headers, cookie=request.cookies
        )


class _Response:
    """openapi-core response view of an aiohttp response."""

    def __init__(self, response: web.Response) -> None:
        body = response.body
        self.data = body if isinstance(body, bytes) else b""
        self.status_code = response.status
        self.content_type = response.content_type if self.data else ""
        self.headers = CIMultiDict(response.headers)


@dataclass
class ContractChecker:
    """An aiohttp middleware recording every contract violation in `violations`.

    Fault-injected answers (marked with FAULT_KEY by the simulator) are exempt. Request
    violations of a call the server rejected with 4xx can be allowed with `allow_bad_requests`
    (tests that send bad requests on purpose); response violations are always recorded.
    """

    enabled: bool = True
    allow_bad_requests: bool = False
    violations: list[dict[str, Any]] = field(default_factory=list)
    checked: int = 0

    def _operation(self, method: str, path: str) -> dict[str, Any] | None:
        spec = load_spec().spec
        for template, item in (spec / "paths").items():
            parts, wanted = str(template).split("/"), path.split("/")
            if len(parts) == len(wanted) and all(
                p == w or (p.startswith("{") and w) for p, w in zip(parts, wanted, strict=True)
            ):
                op = item.get(method)
                if op is not None:
                    return {"security": list(op.get("security", [])), "responses": op["responses"]}
        return None

    def _record(self, kind: str, request: web.Request, status: int, errors: list[str]) -> None:
        self.violations.append(
            {
                "kind": kind,
                "method": request.method,
                "path": request.path_qs,
                "status": status,
                "errors": errors,
            }
        )

    def check_request(self, request: web.Request, body: bytes | None) -> list[str]:
        """Spec errors of one request."""
        result = load_spec().unmarshal_request(_Request(request, body))
        return [_describe(e) for e in result.errors]

    def check_response(
        self, request: web.Request, body: bytes | None, resp: web.Response
    ) -> list[str]:
        """Spec errors of one response (plus: statuses without content must have no body)."""
        wrapped = _Response(resp)
        try:
            result = load_spec().unmarshal_response(_Request(request, body), wrapped)
            errors = [_describe(e) for e in result.errors]
        except Exception as exc:  # openapi-core raises for some lookups instead of returning
            errors = [_describe(exc)]
        op = self._operation(request.method.lower(), request.path[len(API_PREFIX) :])
        declared = op["responses"].get(str(resp.status)) if op else None
        if declared is not None and "content" not in declared and wrapped.data:
            errors.append(f"HTTP {resp.status} must have no body, got {wrapped.data[:80]!r}")
        # The spec omits 401 on the /session operations although they are secured; a secured
        # operation may always answer 401 (with no body, like every declared 401).
        if resp.status == 401 and op and op["security"] and declared is None:
            errors = [e for e in errors if "ResponseNotFound" not in e and "401" not in e]
            if wrapped.data:
                errors.append("HTTP 401 must have no body")
        return errors

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Validate API traffic; anything else passes through untouched."""
        if not self.enabled or not request.path.startswith(API_PREFIX):
            return await handler(request)
        body = await request.read() if request.can_read_body else None
        response = await handler(request)
        if request.get(FAULT_KEY):
            return response
        self.checked += 1
        if not isinstance(response, web.Response):
            self._record("response", request, response.status, ["streamed response"])
            return response
        request_errors = self.check_request(request, body)
        if request_errors and not (self.allow_bad_requests and 400 <= response.status < 500):
            self._record("request", request, response.status, request_errors)
        response_errors = self.check_response(request, body, response)
        if response_errors:
            self._record("response", request, response.status, response_errors)
        return response

    def report(self) -> str:
        """Human-readable list of violations."""
        lines = [f"{len(self.violations)} contract violation(s) against {spec_path().name}:"]
        for v in self.violations:
            lines.append(f"  [{v['kind']}] {v['method']} {v['path']} -> {v['status']}")
            lines.extend(f"      {e}" for e in v["errors"])
        return "\n".join(lines)


def _describe(exc: BaseException) -> str:
    parts = [f"{type(exc).__name__}: {exc}"]
    cause = exc.__cause__ or exc.__context__
    nested = getattr(exc, "schema_errors", None) or getattr(cause, "schema_errors", None)
    if nested:
        parts.extend(f"{getattr(e, 'message', e)}" for e in nested)
    elif cause is not None:
        parts.append(f"{type(cause).__name__}: {cause}")
    return " | ".join(parts)


__all__ = ["ContractChecker", "ResponseNotFound", "load_spec", "spec_path"]
