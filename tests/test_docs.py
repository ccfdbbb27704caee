"""Docs stay true to the code: the README configuration table and .env.example."""

from __future__ import annotations

import re
from pathlib import Path

from srmflow.config_doc import config_rows, render_readme

ROOT = Path(__file__).resolve().parent.parent


def test_readme_config_table_is_generated_from_settings() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert render_readme(text) == text, "run: .venv/bin/python -m srmflow.config_doc README.md"


def test_readme_starts_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text(encoding="utf-8")[:400]
    assert "make demo" in head
    assert "make test" in head


def test_env_example_documents_every_variable() -> None:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))
    expected = {variable for variable, _, _ in config_rows()}
    assert expected - documented == set(), "add these to .env.example"
    assert documented - expected == set(), "these are not read by srmflow"
