"""docs/schemas/ matches the workflow models (regenerate with python -m srmflow.schemas)."""

from __future__ import annotations

import json
from pathlib import Path

from srmflow.schemas import render
from workflows.models import ReprotectPlanInput

DOCS = Path(__file__).resolve().parent.parent / "docs" / "schemas"


def test_committed_schemas_match_models() -> None:
    for name, text in render().items():
        path = DOCS / name
        assert path.is_file(), f"{path} missing: run python -m srmflow.schemas docs/schemas"
        assert path.read_text(encoding="utf-8") == text, (
            f"{name} drifted from the models: run python -m srmflow.schemas docs/schemas"
        )


def test_input_schema_needs_only_plan_and_has_no_secrets() -> None:
    schema = json.loads(render()["ReprotectPlanInput.schema.json"])
    assert schema["required"] == ["plan_id"]
    assert not any("password" in key or "session" in key for key in schema["properties"])
    ReprotectPlanInput.model_validate_json('{"plan_id": "p"}')


def test_bulk_input_schema_accepts_a_minimal_cli_document() -> None:
    from workflows.bulk_models import BulkReprotectInput

    schema = json.loads(render()["BulkReprotectInput.schema.json"])
    assert "max_concurrency" in schema["properties"]
    assert not any("password" in key for key in schema["properties"])
    inp = BulkReprotectInput.model_validate_json('{"all_recovered": true, "max_concurrency": 5}')
    assert inp.site == "default"
