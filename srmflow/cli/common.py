"""Helpers shared by CLI commands: settings with clear errors, async running, JSON output."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import click

from srmflow.log import configure_logging
from srmflow.settings import ConfigError, Settings, load_settings

T = TypeVar("T")


class ConfigProblem(click.ClickException):
    """Bad configuration or input: exit code 2 with a message naming what to fix."""

    exit_code = 2

    def format_message(self) -> str:
        return f"configuration error: {self.message}"


def settings_or_fail(*, require_site: bool = False) -> Settings:
    """Load Settings and set up logging (to stderr), or raise ConfigProblem naming the bad
    variable; stdout stays free for what the command prints."""
    try:
        settings = load_settings(require_site=require_site)
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from None
    configure_logging(settings.log_level, settings.log_format)
    return settings


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a fresh event loop."""
    return asyncio.run(coro)


def echo_json(data: Any) -> None:
    """Print one JSON document on stdout (for scripts)."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def use_color() -> bool:
    """Colour only on a terminal and only when NO_COLOR is not set."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")
