"""A flow's contract, its input and output schemas, compared with the same flow at a base revision: breaking changes.

An input change breaks callers when the flow refuses, or stops reading, what it took before: a new required field,
a field now required, a field removed, a type narrowed. An output change breaks callers when they may no longer find
what they read: a field removed or now optional, a type widened. A new optional input field, a new output field or an
input that takes more types than before break nobody. The schemas compared are the ones the server publishes
(``/flows/{name}/input_schema`` and ``output_schema``), taken from both revisions' dry-builds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from gitops_flow.flow.locations import LineIndex
from gitops_flow.problems import Problem, json_path
from gitops_flow.validation.documents import FileReport

Side = Literal["input", "output"]
Schema = Mapping[str, Any]
_ANY = "any"
_MAX_DEPTH = 16  # nesting followed (and $ref hops); deeper differences are not looked for
_KINDS = ("string", "number", "integer", "boolean", "null", "object", "array")


def changes(side: Side, old: Schema, new: Schema) -> list[str]:
    """What breaks callers of ``old`` when the flow's ``side`` becomes ``new``; [] when nothing does."""
    found: list[str] = []
    _compare(side, _kinds(old, old), _kinds(new, new), old, new, (), found, 0)
    return found


def breaking_problems(current: FileReport, base: FileReport, text: str, rev: str) -> list[Problem]:
    """The breaking changes of the flow in ``current`` since ``base`` (the same file at ``rev``), as problems on the
    entry node (input) and the exit node (output) of the current file; ``text`` is the current file's text."""
    if current.built is None or base.built is None or current.spec is None:
        return []
    lines = LineIndex(text)
    ends: tuple[tuple[Side, str, str], ...] = (
        ("input", current.built.graph.entry, "breaking-input"),
        ("output", current.built.graph.exit, "breaking-output"),
    )
    problems = []
    for side, node_id, code in ends:
        index = next(i for i, n in enumerate(current.spec.nodes) if n.id == node_id)
        path = current.origin(json_path(["nodes", index]))
        for change in changes(side, _schema(base, side), _schema(current, side)):
            message = f"breaks callers of {rev}: {change}"
            problems.append(Problem(code=code, message=message, path=path, file=current.file, line=lines.line(path)))
    return problems


def _schema(report: FileReport, side: Side) -> Schema:
    built = report.built
    model = None if built is None else built.input_model if side == "input" else built.output_model
    return model.model_json_schema() if model is not None else {}


def _kinds(schema: Any, root: Schema, depth: int = 0) -> dict[str, Schema] | None:
    """The JSON types a schema allows, each with the schema of that alternative; None when it allows anything."""
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return _kinds(root.get("$defs", {}).get(ref.removeprefix("#/$defs/")), root, depth + 1)
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(alternatives, list):
        found: dict[str, Schema] = {}
        for alternative in alternatives:
            kinds = _kinds(alternative, root, depth + 1)
            if kinds is None:
                return None
            for kind, node in kinds.items():
                found.setdefault(kind, node)
        return found
    declared = schema.get("type")
    if declared is None:
        if "properties" in schema:
            declared = "object"
        elif "enum" in schema or "const" in schema:
            values = schema.get("enum", [schema.get("const")])
            declared = sorted({_kind_of(v) for v in values})
        else:
            return None
    names = declared if isinstance(declared, list) else [declared]
    return {str(kind): schema for kind in names if kind in _KINDS}


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return {str: "string", list: "array", dict: "object", type(None): "null"}.get(type(value), "string")


def _covers(kinds: Mapping[str, Schema], kind: str) -> bool:
    """Whether values of ``kind`` are among ``kinds`` (an integer is a number)."""
    return kind in kinds or (kind == "integer" and "number" in kinds)


def _compare(
    side: Side,
    old: dict[str, Schema] | None,
    new: dict[str, Schema] | None,
    old_root: Schema,
    new_root: Schema,
    where: tuple[str, ...],
    found: list[str],
    depth: int,
) -> None:
    if depth > _MAX_DEPTH:
        return
    # input: what was taken must still be taken (new covers old); output: what comes must have come (old covers new)
    wider, narrower = (new, old) if side == "input" else (old, new)
    if wider is None:
        return
    what = _what(side, where)
    if narrower is None:
        if side == "input":
            found.append(f"{what} took any value and now takes only {_names(wider)}")
        else:
            found.append(f"{what} was {_names(wider)} and may now be any value")
        return
    lost = [kind for kind in narrower if not _covers(wider, kind)]
    if lost:
        verb = "no longer takes" if side == "input" else "may now be"
        found.append(f"{what} {verb} {_names(dict.fromkeys(lost))}")
    if old is None or new is None:
        return
    if "object" in old and "object" in new:
        _compare_objects(side, old["object"], new["object"], old_root, new_root, where, found, depth)
    if "array" in old and "array" in new:
        old_items, new_items = old["array"].get("items"), new["array"].get("items")
        _compare(
            side,
            _kinds(old_items, old_root),
            _kinds(new_items, new_root),
            old_root,
            new_root,
            (*where, "[]"),
            found,
            depth + 1,
        )


def _compare_objects(
    side: Side,
    old: Schema,
    new: Schema,
    old_root: Schema,
    new_root: Schema,
    where: tuple[str, ...],
    found: list[str],
    depth: int,
) -> None:
    old_fields, new_fields = old.get("properties"), new.get("properties")
    if not isinstance(old_fields, Mapping) or not isinstance(new_fields, Mapping):
        return  # an object of any fields on either side: nothing to compare field by field
    old_required, new_required = set(old.get("required", ())), set(new.get("required", ()))
    for name in new_fields if side == "input" else ():
        if name in new_required and name not in old_required:
            verb = "is now required" if name in old_fields else "is a new required field"
            found.append(f"{_what(side, (*where, name))} {verb}")
    for name, old_field in old_fields.items():
        field = (*where, name)
        if name not in new_fields:
            found.append(f"{_what(side, field)} was removed")
            continue
        if side == "output" and name in old_required and name not in new_required:
            found.append(f"{_what(side, field)} may now be missing")
        _compare(
            side,
            _kinds(old_field, old_root),
            _kinds(new_fields[name], new_root),
            old_root,
            new_root,
            field,
            found,
            depth + 1,
        )


def _what(side: Side, where: tuple[str, ...]) -> str:
    if not where:
        return f"the {side}"
    path = "".join(part if part == "[]" else f".{part}" for part in where).lstrip(".")
    return f"{side} field {path!r}"


_ARTICLES = {"object": "an object", "array": "an array", "integer": "an integer", "null": "null"}


def _names(kinds: Mapping[str, Any]) -> str:
    return " or ".join(_ARTICLES.get(kind, f"a {kind}") for kind in kinds)
