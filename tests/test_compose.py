"""docker-compose.yml is checked without Docker: structure, pinned images, and that every
srmflow service's command and environment match what the code really reads."""

from __future__ import annotations

import copy
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import yaml

from srmflow.cli.main import cli
from srmflow.config_doc import config_rows

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
SRMFLOW_SERVICES = [name for name, svc in SERVICES.items() if "build" in svc]


def compose_schema() -> dict[str, Any]:
    """The Compose specification schema, from the wheel `make install` downloads."""
    folder = Path(sys.executable).parent.parent / "share" / "compose-spec"
    wheels = sorted(folder.glob("docker_compose-*.whl"))
    assert wheels, f"no Compose schema under {folder}: run `make install`"
    with zipfile.ZipFile(wheels[-1]) as wheel:
        schema: dict[str, Any] = json.loads(wheel.read("compose/config/compose_spec.json"))
    return schema


def schema_errors(document: dict[str, Any]) -> list[str]:
    """Every violation of the Compose specification in ``document``."""
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return [f"{list(e.path)}: {e.message}" for e in validator(schema).iter_errors(document)]


def test_compose_file_follows_the_compose_specification() -> None:
    assert schema_errors(COMPOSE) == []


def test_schema_check_catches_a_broken_file() -> None:
    broken = copy.deepcopy(COMPOSE)
    broken["services"]["worker"]["deploy"]["replicas"] = "two"
    broken["services"]["worker"]["healthcheck"]["interval"] = {"seconds": 30}
    assert len(schema_errors(broken)) >= 2


def test_services_and_profiles() -> None:
    assert {"postgresql", "temporal", "temporal-ui", "worker", "srm-sim"} <= set(SERVICES)
    assert SERVICES["worker"]["deploy"]["replicas"] == 2
    assert SERVICES["srm-sim"]["profiles"] == ["demo"]
    for name, svc in SERVICES.items():
        for dep in svc.get("depends_on", {}):
            assert dep in SERVICES, f"{name} depends on unknown service {dep}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_images_are_pinned(name: str) -> None:
    image = SERVICES[name].get("image", "")
    assert ":" in image, f"{name}: image {image!r} has no tag"
    assert not image.endswith(":latest"), f"{name}: pin a version, not latest"


@pytest.mark.parametrize("name", SRMFLOW_SERVICES)
def test_srmflow_commands_parse(name: str) -> None:
    args = [str(a) for a in SERVICES[name]["command"]]
    ctx = click.Context(cli)
    command = cli.get_command(ctx, args[0])
    assert command is not None, f"{name}: srmflow has no command {args[0]!r}"
    # make_context rejects unknown options and bad values exactly as the CLI would.
    command.make_context(args[0], args[1:])


@pytest.mark.parametrize("name", SRMFLOW_SERVICES)
def test_srmflow_environment_is_read_by_settings(name: str) -> None:
    known = {variable for variable, _, _ in config_rows()}
    env = SERVICES[name].get("environment", {})
    unknown = {key for key in env if key.startswith(("SRMFLOW_", "TEMPORAL_"))} - known
    assert unknown == set(), f"{name} sets variables srmflow does not read"


def test_secrets_are_files_and_declared() -> None:
    declared = COMPOSE["secrets"]
    for name, svc in SERVICES.items():
        for secret in svc.get("secrets", []):
            assert secret in declared, f"{name} uses undeclared secret {secret}"
    assert all("file" in spec for spec in declared.values())
    worker_env = SERVICES["worker"]["environment"]
    assert "SRMFLOW_SRM_PASSWORD" not in worker_env
    assert worker_env["SRMFLOW_SRM_PASSWORD_FILE"].startswith("/run/secrets/")


def test_dockerfile_is_slim_non_root_and_pinned() -> None:
    text = (ROOT / "Dockerfile").read_text()
    froms = [line.split()[1] for line in text.splitlines() if line.startswith("FROM")]
    assert froms
    assert all("slim" in image and ":" in image for image in froms)
    assert "\nUSER srmflow" in text
