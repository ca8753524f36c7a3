"""Requests and answers checked against an OpenAPI 3.0 description (GitHub's, from @octokit/openapi).

A request is matched to an operation by method and path template; its path and query parameters, and its JSON body,
are validated against the operation's schemas (JSON Schema draft 4, with OpenAPI's ``nullable`` read as "or null").
Anything that does not fit is a Violation naming the operation and what is wrong.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import orjson


class Violation(Exception):
    """A request (or an answer) that does not follow the description."""


@dataclass(frozen=True)
class Operation:
    """One method on one path template of the description."""

    method: str
    template: str
    operation_id: str
    pattern: re.Pattern[str]
    names: tuple[str, ...]
    parameters: tuple[dict[str, Any], ...]
    body: dict[str, Any] | None
    body_required: bool
    responses: dict[str, Any] = field(repr=False)


class OpenApi:
    """An OpenAPI 3.0 document, ready to check requests and answers."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document
        self._components = {"components": {"schemas": _nullable(document["components"]["schemas"])}}
        self.operations: list[Operation] = []
        for template, item in document["paths"].items():
            shared = item.get("parameters", [])
            for method, op in item.items():
                if method not in ("get", "post", "put", "patch", "delete"):
                    continue
                parameters = tuple(self._resolve(p) for p in [*shared, *op.get("parameters", [])])
                body = op.get("requestBody")
                content = (body or {}).get("content", {}).get("application/json")
                self.operations.append(
                    Operation(
                        method.upper(),
                        template,
                        op["operationId"],
                        *_pattern(template, parameters),
                        parameters,
                        content["schema"] if content else None,
                        bool(body and body.get("required")),
                        op.get("responses", {}),
                    )
                )

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        while isinstance(ref, str):
            node = self._pointer(ref)
            ref = node.get("$ref")
        return node

    def _pointer(self, ref: str) -> dict[str, Any]:
        target: Any = self.document
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        return dict(target)

    def match(self, method: str, path: str) -> tuple[Operation, dict[str, str]]:
        """The operation a request is for, and its path parameters; raises Violation when there is none."""
        methods = []
        for op in self.operations:
            found = op.pattern.fullmatch(path)
            if found is None:
                continue
            if op.method == method:
                return op, dict(zip(op.names, found.groups(), strict=True))
            methods.append(op.method)
        if methods:
            raise Violation(f"{method} {path}: the path takes {', '.join(sorted(set(methods)))} only")
        raise Violation(f"{method} {path}: no such path in GitHub's REST API")

    def check_request(
        self, method: str, path: str, query: Sequence[tuple[str, str]], body: bytes, content_type: str
    ) -> tuple[Operation, dict[str, str], Any]:
        """The operation, path parameters and parsed body of a request that follows the description."""
        op, params = self.match(method, path)
        where = f"{op.operation_id} ({method} {op.template})"
        declared = {p["name"]: p for p in op.parameters}
        for name, value in params.items():
            _check_value(declared[name], value, where)
        for name, value in query:
            spec = declared.get(name)
            if spec is None or spec.get("in") != "query":
                raise Violation(f"{where}: unknown query parameter {name!r}")
            _check_value(spec, value, where)
        for spec in op.parameters:
            if spec.get("in") == "query" and spec.get("required") and spec["name"] not in dict(query):
                raise Violation(f"{where}: the query parameter {spec['name']!r} is required")
        parsed: Any = None
        if body:
            if op.body is None:
                raise Violation(f"{where}: this operation takes no body")
            if not content_type.startswith("application/json"):
                raise Violation(f"{where}: the body is {content_type or 'untyped'}, not application/json")
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise Violation(f"{where}: the body is not JSON") from None
            self.validate(op.body, parsed, f"{where} request body")
        elif op.body_required:
            raise Violation(f"{where}: a body is required")
        return op, params, parsed

    def check_response(self, op: Operation, status: int, body: Any) -> None:
        """That an answer of the stand-in has the shape the description gives for ``status``."""
        response = op.responses.get(str(status))
        if response is None:
            raise Violation(f"{op.operation_id}: GitHub does not answer {status}")
        content = self._resolve(response).get("content", {}).get("application/json")
        if content is not None:
            self.validate(content["schema"], body, f"{op.operation_id} {status} answer")

    def validate(self, schema: dict[str, Any], value: Any, where: str) -> None:
        validator = _validator(id(self), orjson.dumps(schema), self)
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if errors:
            first = errors[0]
            at = "".join(f"[{p!r}]" for p in first.absolute_path) or "(the whole value)"
            raise Violation(f"{where}: at {at}: {first.message[:300]}")


@functools.lru_cache(maxsize=256)
def _validator(key: int, schema: bytes, api: OpenApi) -> jsonschema.Draft4Validator:
    root = {**api._components, **_nullable(orjson.loads(schema))}
    return jsonschema.Draft4Validator(root)


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` as JSON Schema's "or null", everywhere in ``node``."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {
        k: (_nullable(v) if k not in ("example", "examples", "default", "enum") else v) for k, v in node.items()
    }
    if converted.pop("nullable", False) is True:
        if "enum" in converted:
            converted["enum"] = [*converted["enum"], None]
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def _pattern(template: str, parameters: Sequence[dict[str, Any]]) -> tuple[re.Pattern[str], tuple[str, ...]]:
    multi = {p["name"] for p in parameters if p.get("x-multi-segment")}
    regex, names = "", []
    for literal, name in re.findall(r"([^{]*)(?:\{([^}]+)\})?", template):
        regex += re.escape(literal)
        if name:
            regex += "(.+)" if name in multi else "([^/]+)"
            names.append(name)
    return re.compile(regex), tuple(names)


def _check_value(spec: dict[str, Any], raw: str, where: str) -> None:
    schema = spec.get("schema", {})
    kind = schema.get("type")
    if kind == "integer" and not re.fullmatch(r"-?\d+", raw):
        raise Violation(f"{where}: parameter {spec['name']!r} is an integer, not {raw!r}")
    if "enum" in schema and raw not in schema["enum"]:
        raise Violation(f"{where}: parameter {spec['name']!r} is one of {schema['enum']}, not {raw!r}")
    if kind == "integer":
        value = int(raw)
        if "minimum" in schema and value < schema["minimum"] or "maximum" in schema and value > schema["maximum"]:
            raise Violation(f"{where}: parameter {spec['name']!r} is out of range: {raw}")
