"""pytest plugin: `make_sim` / `sim` run the real SRM simulator on 127.0.0.1 for a test.

At teardown the test fails loudly if the contract middleware recorded any spec violation.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from srmflow.simulator.app import ADMIN_PREFIX, API_PREFIX, create_app
from srmflow.simulator.faults import FaultConfig
from srmflow.simulator.scenario import Scenario
from srmflow.simulator.state import Clock, SimState
from tests.contract import ContractChecker

MakeSim = Callable[..., Awaitable["SimHandle"]]


@dataclass
class SimHandle:
    """A running simulator and everything a test needs to talk to it."""

    root_url: str
    state: SimState
    contract: ContractChecker
    http: aiohttp.ClientSession
    ca_path: str | None = None
    runner: web.AppRunner | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        """The API base: root_url + /api/rest/srm/v2."""
        return self.root_url + API_PREFIX

    @property
    def username(self) -> str:
        """Local SSO user."""
        return self.state.scenario.username

    @property
    def password(self) -> str:
        """Local SSO password."""
        return self.state.scenario.password

    @property
    def remote_username(self) -> str:
        """Remote-site user (for POST remote-session)."""
        return self.state.scenario.remote_username

    @property
    def remote_password(self) -> str:
        """Remote-site password."""
        return self.state.scenario.remote_password

    @property
    def pairing_id(self) -> str:
        """The single pairing's id."""
        return self.state.pairing_id

    async def admin(self, method: str, path: str, json: Any = None) -> Any:
        """Call /_sim/<path>; returns the decoded JSON body, or None when empty."""
        url = f"{self.root_url}{ADMIN_PREFIX}/{path.lstrip('/')}"
        async with self.http.request(method, url, json=json) as resp:
            text = await resp.text()
            if resp.status >= 400:
                raise AssertionError(f"admin {method} {path} -> {resp.status}: {text}")
            return await resp.json() if text else None

    async def journal(self) -> list[dict[str, Any]]:
        """Every mutating API request so far (GET /_sim/journal)."""
        return list((await self.admin("GET", "journal"))["list"])

    async def set_faults(self, **faults: Any) -> dict[str, Any]:
        """PUT /_sim/faults with the given fields."""
        return dict(await self.admin("PUT", "faults", faults))

    def env(self) -> dict[str, str]:
        """SRMFLOW_SRM_* variables pointing a subprocess at this simulator."""
        env = {
            "SRMFLOW_SRM_URL": self.base_url,
            "SRMFLOW_SRM_USERNAME": self.username,
            "SRMFLOW_SRM_PASSWORD": self.password,
            "SRMFLOW_SRM_REMOTE_USERNAME": self.remote_username,
            "SRMFLOW_SRM_REMOTE_PASSWORD": self.remote_password,
        }
        if self.ca_path:
            env["SRMFLOW_SRM_CA_BUNDLE"] = self.ca_path
        return env

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client context trusting the test CA (None for plain HTTP)."""
        return ssl.create_default_context(cafile=self.ca_path) if self.ca_path else None


def _tls_contexts(directory: Path) -> tuple[ssl.SSLContext, str]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    ca_path = directory / "sim-ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    return server, str(ca_path)


async def start_sim(
    *,
    plans: int = 5,
    task_seconds: tuple[float, float] = (0.2, 0.5),
    seed: int = 7,
    validate: bool = True,
    tls: bool | None = None,
    clock: Clock | None = None,
    tmp_dir: Path | None = None,
    allow_bad_requests: bool = False,
    faults: dict[str, Any] | None = None,
    **options: Any,
) -> SimHandle:
    """Start a simulator; `options` are Scenario fields, unknown ones are fault fields."""
    fault_fields = set(FaultConfig.model_fields)
    fault_opts = dict(faults or {})
    fault_opts.update({k: options.pop(k) for k in list(options) if k in fault_fields})
    scenario = Scenario(
        plans=plans,
        task_seconds=task_seconds,
        seed=seed,
        faults=FaultConfig(**fault_opts),
        **options,
    )
    state = SimState(scenario, clock=clock)
    contract = ContractChecker(enabled=validate, allow_bad_requests=allow_bad_requests)
    app = create_app(state, extra_middlewares=[contract.middleware])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    server_ctx, ca_path = (None, None)
    if tls:
        server_ctx, ca_path = _tls_contexts(tmp_dir or Path("."))
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    scheme = "https" if tls else "http"
    client_ctx = ssl.create_default_context(cafile=ca_path) if ca_path else None
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ctx or True))
    return SimHandle(f"{scheme}://127.0.0.1:{port}", state, contract, http, ca_path, runner)


async def stop_sim(handle: SimHandle) -> None:
    """Stop the server and close the handle's HTTP session."""
    await handle.http.close()
    if handle.runner is not None:
        await handle.runner.cleanup()


@pytest.fixture
async def make_sim(tmp_path: Path) -> AsyncIterator[MakeSim]:
    """Async factory of running simulators; fails the test on any contract violation."""
    handles: list[SimHandle] = []

    async def factory(**kwargs: Any) -> SimHandle:
        kwargs.setdefault("tmp_dir", tmp_path)
        handle = await start_sim(**kwargs)
        handles.append(handle)
        return handle

    yield factory
    for handle in handles:
        await stop_sim(handle)
    problems = [h.contract.report() for h in handles if h.contract.violations]
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
async def sim(make_sim: MakeSim) -> SimHandle:
    """A simulator with default settings (5 plans, tasks of 0.2-0.5 s, seed 7)."""
    return await make_sim()
