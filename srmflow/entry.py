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
from typing import NoReturn


def hard_exit(code: int) -> NoReturn:
    """Flush logs and standard streams, then exit without interpreter finalisation."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
