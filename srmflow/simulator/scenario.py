"""Simulator inventory and behaviour settings, from flags or a YAML/JSON scenario file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from srmflow.simulator.faults import FaultConfig

DEFAULT_STATUS = "RECOVERY_COMPLETE"


class PlanOverride(BaseModel):
    """Per-plan settings, keyed by plan name (e.g. ``plan-003``) or 0-based index."""

    model_config = ConfigDict(extra="forbid")

    status: str | None = None
    fail: str | None = Field(None, description="Every operation of this plan ends with this error.")
    incomplete: bool = Field(False, description="Reprotect ends INCOMPLETE_REPROTECT.")
    issues: list[dict[str, str]] = Field(
        default_factory=list, description="Extra plan issues: {status, description}."
    )


class Scenario(BaseModel):
    """Everything the simulator is started with."""

    model_config = ConfigDict(extra="forbid")

    plans: int = Field(50, ge=0, description="Number of recovery plans.")
    status: str = Field(DEFAULT_STATUS, description="Initial status of every plan.")
    groups_per_plan: int = Field(1, ge=0, description="Protection groups owned by each plan.")
    vms_per_group: int = Field(3, ge=0, description="VMs in each protection group.")
    shared_pairs: int = Field(
        0, ge=0, description="Pairs of neighbouring plans (0+1, 2+3, ...) sharing one extra group."
    )
    task_seconds: tuple[float, float] = Field((5.0, 20.0), description="Operation duration range.")
    history_task_seconds: float = Field(0.0, ge=0, description="History-report task duration.")
    seed: int = 7
    sites: tuple[str, str] = ("site-a", "site-b")
    username: str = "administrator@site-a.local"
    password: str = "sim-password-a"
    remote_username: str = "administrator@site-b.local"
    remote_password: str = "sim-password-b"
    show_groups_in_use: bool = Field(
        True, description="Idle plans whose groups are busy report PROTECTION_GROUPS_IN_USE."
    )
    plan_overrides: dict[str, PlanOverride] = Field(default_factory=dict)
    faults: FaultConfig = Field(default_factory=FaultConfig)

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        low, high = self.task_seconds
        if low < 0 or high < low:
            raise ValueError("task_seconds must be 0 <= low <= high")
        return self


def parse_range(text: str) -> tuple[float, float]:
    """Parse ``5-20`` or ``7`` into a (low, high) pair."""
    low, _, high = text.partition("-")
    return float(low), float(high or low)


def load_scenario(path: str | Path, **overrides: Any) -> Scenario:
    """Read a YAML or JSON scenario file; keyword overrides win over the file."""
    text = Path(path).read_text(encoding="utf-8")
    data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    data = dict(data or {})
    data.update({k: v for k, v in overrides.items() if v is not None})
    return Scenario.model_validate(data)
