"""Scorers of an evaluation: how well one answer of a flow meets one case of a dataset, from 0 to 1.

``exact`` and ``contains`` compare with the case's ``expected``; ``json_schema`` checks the answer (parsed when it
is JSON text, else as a string) against the case's ``schema`` with a small own checker of JSON Schema's common
keywords (jsonschema is a development dependency only). A judge (``judge:<rubric>``) needs a model: with fakes it
cannot judge.
"""

from __future__ import annotations

import json
from typing import Any

from gitops_flow.components.vectors import similarity
from gitops_flow.flow.datasets import EvalCase
from gitops_flow.flow.regexes import PatternError, search

SCORERS = ("exact", "contains", "json_schema")
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "null": (type(None),),
    "number": (int, float),
    "integer": (int,),
}
MAX_SCHEMA_DEPTH = 32


def score(scorer: str, case: EvalCase, output: Any) -> float | None:
    """The score of ``output`` for ``case`` by ``scorer`` (one of SCORERS), or None when the case gives nothing this
    scorer reads (no ``expected``, no ``schema``)."""
    if scorer == "exact":
        if not case.has_expected:
            return None
        if isinstance(output, str) and isinstance(case.expected, str):
            return float(output.strip() == case.expected.strip())
        return float(output == case.expected)
    if scorer == "contains":
        if not case.has_expected:
            return None
        wanted = case.expected if isinstance(case.expected, list) else [case.expected]
        text = _text(output).casefold()
        return float(all(_text(part).casefold() in text for part in wanted))
    if scorer == "json_schema":
        if case.schema is None:
            return None
        value = output
        if isinstance(output, str):
            try:
                value = json.loads(output)
            except ValueError:
                value = output  # text that is not JSON is checked as the string it is
        return float(conforms(value, case.schema))
    raise ValueError(f"no scorer {scorer!r}")


def compare(scorer: str, candidate: Any, primary: Any, schema: Any = None) -> float:
    """How a shadow's candidate answer meets the primary's answer (the one that was sent), from 0 to 1: ``exact``
    the same answer, ``contains`` the primary's answer within the candidate's (ignoring case), ``json_schema`` the
    candidate's answer meets ``schema``, ``similarity`` the cosine of their hashing vectors (vectors.similarity)."""
    if scorer == "json_schema":
        value = candidate
        if isinstance(candidate, str):
            try:
                value = json.loads(candidate)
            except ValueError:
                value = candidate
        return float(conforms(value, schema))
    if scorer == "similarity":
        return similarity(_text(candidate), _text(primary))
    if scorer in ("exact", "contains"):
        case = EvalCase(0, None, primary, True, None, None, None)
        found = score(scorer, case, candidate)
        assert found is not None, "a case with an expected answer is scored"
        return found
    raise ValueError(f"no scorer {scorer!r}")


def conforms(value: Any, schema: Any, depth: int = 0) -> bool:
    """Whether ``value`` meets ``schema``'s type, enum, const, properties, required, additionalProperties, items,
    minItems/maxItems, minLength/maxLength, pattern and minimum/maximum; other keywords are not checked."""
    if depth > MAX_SCHEMA_DEPTH or not isinstance(schema, dict):
        return schema is not False
    kinds = schema.get("type")
    if kinds is not None:
        names = kinds if isinstance(kinds, list) else [kinds]
        if not any(_is(value, name) for name in names):
            return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if "const" in schema and value != schema["const"]:
        return False
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        if any(key not in value for key in schema.get("required", [])):
            return False
        for key, item in value.items():
            if key in properties:
                if not conforms(item, properties[key], depth + 1):
                    return False
            elif schema.get("additionalProperties") is False:
                return False
    if isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            return False
        if "items" in schema and not all(conforms(item, schema["items"], depth + 1) for item in value):
            return False
    if isinstance(value, str):
        if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value)):
            return False
        if isinstance(schema.get("pattern"), str) and not _search(schema["pattern"], value):
            return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            return False
        if "maximum" in schema and value > schema["maximum"]:
            return False
    return True


def _is(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return name == "boolean"
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES.get(name, ()))


def _search(pattern: str, text: str) -> bool:
    try:  # the server's safe regular expressions: no backtracking for an author's pattern
        return search(pattern, text)
    except PatternError:
        return False


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
