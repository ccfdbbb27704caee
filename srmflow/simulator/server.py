"""Run the simulator app until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import ssl
from collections.abc import Callable

import structlog
from aiohttp import web

from srmflow.simulator.app import create_app
from srmflow.simulator.state import SimState

log = structlog.get_logger(__name__)


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """Server TLS context from PEM files."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def serve(
    state: SimState,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    on_started: Callable[[str], None] = lambda url: None,
) -> None:
    """Serve until SIGINT or SIGTERM; `on_started` gets the root URL with the real port."""
    runner = web.AppRunner(create_app(state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    real_port = runner.addresses[0][1]
    scheme = "https" if ssl_context else "http"
    url_host = f"[{host}]" if ":" in host else host
    root = f"{scheme}://{url_host}:{real_port}"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("sim_started", url=root, plans=len(state.plans))
    on_started(root)
    try:
        await stop.wait()
    finally:
        log.info("sim_stopping")
        await runner.cleanup()
