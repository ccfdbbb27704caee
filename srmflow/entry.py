"""Process exit that cannot turn success into a crash.

The temporalio core can abort while the interpreter finalises (sdk-python issue 300,
"PyGILState_Release", exit 134/139) after a client was used. Entry points therefore flush their
output and leave with ``os._exit``, skipping interpreter finalisation, once their work and their
own cleanup (closing sessions, stopping workers) are done.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from typing import NoReturn

# os._exit skips atexit, so whatever buffers output (e.g. the tracing span exporter) asks to
# be flushed here instead.
_BEFORE_EXIT: list[Callable[[], object]] = []


def before_hard_exit(callback: Callable[[], object]) -> None:
    """Have ``hard_exit`` call ``callback`` (once, errors ignored) before the process leaves."""
    if callback not in _BEFORE_EXIT:
        _BEFORE_EXIT.append(callback)


def hard_exit(code: int) -> NoReturn:
    """Flush telemetry, logs and standard streams, then exit without interpreter finalisation."""
    for callback in _BEFORE_EXIT:
        with contextlib.suppress(Exception):
            callback()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
