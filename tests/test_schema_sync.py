"""The published JSON Schema (package data) is the pydantic model's, and agrees with it on real documents."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from gitops_flow.flow.document import json_schema

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = json.loads((resources.files("gitops_flow.flow") / "schema" / "flow.v1.json").read_text())


def test_the_published_schema_equals_the_model() -> None:
    assert PUBLISHED == json_schema(), "run `gitops-flow schema > gitops_flow/flow/schema/flow.v1.json`"


def test_the_published_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(PUBLISHED)


@pytest.mark.parametrize("path", sorted((ROOT / "flows").glob("*.json")), ids=lambda p: p.stem)
def test_example_flows_satisfy_the_schema(path: Path) -> None:
    jsonschema.Draft202012Validator(PUBLISHED).validate(json.loads(path.read_text()))


def test_the_schema_rejects_unknown_top_level_keys_as_the_model_does() -> None:
    doc = json.loads((ROOT / "flows" / "support-bot.json").read_text())
    doc["edgs"] = []
    errors = list(jsonschema.Draft202012Validator(PUBLISHED).iter_errors(doc))
    assert [e.validator for e in errors] == ["additionalProperties"]
