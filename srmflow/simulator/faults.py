"""Fault configuration and the seeded injector that turns it into per-request decisions."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

RejectMode = Literal["http400", "http500", "task_error"]


class FaultConfig(BaseModel):
    """Every switchable fault; all off by default. Replaced at run time via PUT /_sim/faults."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: tuple[int, int] = Field((0, 0), description="Added latency range per API call.")
    error_rate: float = Field(0.0, ge=0, le=1, description="Share of API calls answered 5xx.")
    error_status: Literal[500, 503] = Field(503, description="Status used for error_rate.")
    throttle_rate: float = Field(0.0, ge=0, le=1, description="Share answered 429.")
    retry_after_s: int = Field(1, ge=0, description="Retry-After seconds on 429 and 503.")
    reset_rate: float = Field(0.0, ge=0, le=1, description="Share of calls whose connection drops.")
    path_pattern: str | None = Field(None, description="Regex; rates apply only to paths matching.")
    method: str | None = Field(None, description="Rates apply only to this HTTP method.")
    inject: list[int] = Field(
        default_factory=list,
        description="Statuses for the next matching calls, consumed in order (0 = reset).",
    )
    session_ttl_s: float | None = Field(None, gt=0, description="Sessions expire after login.")
    task_error_rate: float = Field(0.0, ge=0, le=1, description="Share of operations ending ERROR.")
    fail_plans: dict[str, str] = Field(
        default_factory=dict, description="Plan id or name -> error message of its operations."
    )
    incomplete_rate: float = Field(0.0, ge=0, le=1, description="Share of reprotects incomplete.")
    incomplete_plans: list[str] = Field(
        default_factory=list, description="Plan ids or names whose reprotect ends incomplete."
    )
    wrong_status: Literal["http400", "task_error"] = Field(
        "http400", description="Answer to an action not allowed in the plan's status."
    )
    groups_in_use: RejectMode = Field(
        "http400", description="Answer to an action whose protection groups are busy."
    )
    enforce_group_conflicts: bool = Field(
        True, description="Refuse plans whose groups are in use (off: allow and record overlap)."
    )
    remote_site_down: bool = Field(False, description="The paired site is unreachable.")
    remote_down_status: Literal[400, 500] = Field(500, description="Status when remote is down.")

    @field_validator("path_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            re.compile(value)
        return value

    def merged(self, patch: dict[str, object]) -> FaultConfig:
        """A validated copy with the fields of `patch` replaced."""
        return FaultConfig.model_validate({**self.model_dump(), **patch})


@dataclass(frozen=True)
class Injection:
    """What the fault middleware does to one request."""

    status: int | None = None  # 0 means: drop the connection without an answer
    delay_s: float = 0.0


class FaultInjector:
    """Seeded decisions, so a given seed and request sequence always fails the same way."""

    def __init__(self, config: FaultConfig, seed: int) -> None:
        self.config = config
        self._rng = random.Random(seed)

    def reseed(self, seed: int) -> None:
        """Restart the decision sequence."""
        self._rng = random.Random(seed)

    def _applies(self, method: str, path: str) -> bool:
        cfg = self.config
        if cfg.method is not None and cfg.method.upper() != method.upper():
            return False
        return cfg.path_pattern is None or re.search(cfg.path_pattern, path) is not None

    def decide(self, method: str, path: str) -> Injection:
        """Decide latency and an optional fault status for one API request."""
        cfg = self.config
        low, high = cfg.latency_ms
        delay = self._rng.uniform(low, high) / 1000 if high > 0 else 0.0
        if not self._applies(method, path):
            return Injection(delay_s=delay)
        if cfg.inject:
            return Injection(status=cfg.inject.pop(0), delay_s=delay)
        # One draw per kind keeps the sequence stable when only one rate changes.
        reset, error, throttle = self._rng.random(), self._rng.random(), self._rng.random()
        if reset < cfg.reset_rate:
            return Injection(status=0, delay_s=delay)
        if error < cfg.error_rate:
            return Injection(status=cfg.error_status, delay_s=delay)
        if throttle < cfg.throttle_rate:
            return Injection(status=429, delay_s=delay)
        return Injection(delay_s=delay)
