"""JSON Schemas of the workflow inputs and results, generated from the pydantic models.

``python -m srmflow.schemas docs/schemas`` rewrites the files; tests/test_schemas.py fails when
the committed files drift from the models.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from workflows.bulk_models import BulkReprotectInput, BulkReprotectResult
from workflows.drill_models import DrillInput, DrillResult, OperationResult, PlanOperationInput
from workflows.models import ReprotectPlanInput, ReprotectPlanResult

# File stem -> (model, mode): inputs are validated, results are serialised.
SCHEMAS: dict[str, tuple[type[BaseModel], str]] = {
    "ReprotectPlanInput": (ReprotectPlanInput, "validation"),
    "ReprotectPlanResult": (ReprotectPlanResult, "serialization"),
    "BulkReprotectInput": (BulkReprotectInput, "validation"),
    "BulkReprotectResult": (BulkReprotectResult, "serialization"),
    "PlanOperationInput": (PlanOperationInput, "validation"),
    "OperationResult": (OperationResult, "serialization"),
    "DrillInput": (DrillInput, "validation"),
    "DrillResult": (DrillResult, "serialization"),
}


def render() -> dict[str, str]:
    """File name -> JSON Schema text for every workflow input and result."""
    out: dict[str, str] = {}
    for name, (model, mode) in SCHEMAS.items():
        schema = model.model_json_schema(mode=mode)  # type: ignore[arg-type]
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        out[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write(directory: Path) -> list[Path]:
    """Write every schema into ``directory``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m srmflow.schemas [DIR]`` (default docs/schemas)."""
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0] if args else "docs/schemas")
    for path in write(directory):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
