"""The OpenAPI 3.1 document of what the server serves now (``GET /openapi.json``), and the page that shows it
(``GET /docs``).

The document is made from the live routing table on each request: one set of operations per flow that a ref serves,
each with the input, output and config schemas its builds publish (``/flows/{name}/input_schema`` shows the same). A
flow served by several versions at once (a canary beside stable) takes any of their inputs and gives any of their
outputs, so its schemas are the ``anyOf`` of the distinct schemas of those versions. The server's own endpoints (the
LangFlow run API, the views, health, the webhook, the operator's) are described once.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gitops_flow import __version__
from gitops_flow.delivery.routing_table import RoutingTable
from gitops_flow.runtime.compiler import BuiltFlow
from gitops_flow.server.assets import page
from gitops_flow.server.edge import ROUTING_KEYS, json_response
from gitops_flow.server.endpoints import get_deps

OPENAPI = "3.1.0"
_NAME = re.compile(r"[^A-Za-z0-9._-]+")
ERROR = {"$ref": "#/components/schemas/Error"}
EVENTS = {"text/event-stream": {"schema": {"type": "string", "description": "server-sent events"}}}


class Documents:
    """The document of the table last asked about: made once per published table (a deploy publishes a new one),
    so a stream of requests for it costs what serving bytes costs, whatever the number of flows."""

    def __init__(self) -> None:
        self._last: tuple[RoutingTable, bytes] | None = None

    def of(self, table: RoutingTable) -> bytes:
        last = self._last
        if last is not None and last[0] is table:
            return last[1]
        made = orjson.dumps(document(table))
        self._last = (table, made)  # holding the table keeps its identity from being reused
        return made


async def openapi_json(request: Request) -> Response:
    """``GET /openapi.json``."""
    documents: Documents = request.app.state.openapi
    made = documents.of(get_deps(request).reconciler.table)
    return Response(made, media_type="application/json")


async def docs(request: Request) -> Response:
    """``GET /docs``, ``/docs/docs.js`` and ``/docs/pages.css``: a page that renders ``/openapi.json``."""
    file = request.path_params.get("file", "index.html")
    if file not in ("index.html", "docs.js", "pages.css"):
        return json_response({"error": {"code": "not-found", "message": f"no file {file!r}"}}, 404)
    return page("docs.html" if file == "index.html" else file)


def document(table: RoutingTable) -> dict[str, Any]:
    """The OpenAPI document of ``table``: every served flow's operations, with its builds' real schemas."""
    schemas: dict[str, Any] = dict(_COMMON)
    paths: dict[str, Any] = {}
    tags = []
    for name, route in sorted(table.routes.items()):
        builds: dict[int, tuple[str, BuiltFlow]] = {}
        for _, target in route.live:
            if target.version is not None and name in target.version.flows:
                built = target.version.flows[name]
                builds.setdefault(id(built), (target.version.sha, built))
        if not builds:
            continue
        served = list(builds.values())
        description = next((b.spec.description for _, b in served if b.spec.description), "")
        tags.append({"name": name, "description": description or f"the flow {name}"})
        input_schema = _either(name, "Input", [(sha, b.json_schema("input")) for sha, b in served], schemas)
        output_schema = _either(name, "Output", [(sha, b.json_schema("output")) for sha, b in served], schemas)
        paths.update(_flow_paths(name, input_schema, output_schema))
    paths.update(_server_paths())
    return {
        "openapi": OPENAPI,
        "info": {
            "title": "gitops-flow",
            "version": __version__,
            "description": "LLM flows served from Git, each commit a version: LangServe's and LangFlow's APIs. "
            "Every answer names the version that served it (X-Flow-Version).",
        },
        "tags": [*tags, {"name": "server", "description": "what the server serves and has done; health; operators"}],
        "paths": paths,
        "components": {"schemas": schemas, "parameters": _PARAMETERS},
    }


def _either(flow: str, kind: str, models: list[tuple[str, dict[str, Any]]], schemas: dict[str, Any]) -> Any:
    """One schema for the distinct schemas of the builds that serve ``flow`` (``anyOf`` when they differ); their
    definitions go to ``components/schemas`` under names of their own."""
    found: list[Any] = []
    for sha, raw in models:  # each computed once with its build (build.with_schemas)
        prefix = _NAME.sub("_", f"{flow}.{sha[:12]}.")
        schema = _hoisted(raw, prefix, schemas)
        if schema not in found:
            found.append(schema)
    if len(found) == 1:
        return found[0]
    return {"anyOf": found, "description": f"the {kind.lower()} of any of the versions that serve {flow} now"}


def _hoisted(schema: dict[str, Any], prefix: str, schemas: dict[str, Any]) -> Any:
    """``schema`` with its ``$defs`` moved into ``schemas`` (as ``prefix + name``) and its references rewritten."""
    local = schema.get("$defs") or {}
    renamed = {name: prefix + _NAME.sub("_", name) for name in local}

    def rewrite(value: Any) -> Any:
        if isinstance(value, dict):
            out = {k: rewrite(v) for k, v in value.items() if k != "$defs"}
            ref = out.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                out["$ref"] = "#/components/schemas/" + renamed.get(ref.removeprefix("#/$defs/"), "missing")
            return out
        if isinstance(value, list):
            return [rewrite(v) for v in value]
        return value

    for name, definition in local.items():
        schemas[renamed[name]] = rewrite(definition)
    return rewrite(schema)


def _body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": required}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        401: "the read token is needed",
        404: "unknown flow, version or run",
        413: "the body is too large",
        415: "the body is not JSON",
        422: "the body, input or config is wrong",
        429: "too many requests: see Retry-After",
        500: "the flow failed while running",
        503: "not ready",
    }
    return {str(s): {"description": reasons[s], "content": {"application/json": {"schema": ERROR}}} for s in statuses}


def _flow_paths(name: str, input_schema: Any, output_schema: Any) -> dict[str, Any]:
    base = f"/flows/{name}"
    config = {"$ref": "#/components/schemas/Config"}
    headers = [{"$ref": f"#/components/parameters/{p}"} for p in ("Version", "Session", "User", "Segment")]
    invoke_body = _body({"input": input_schema, "config": config, "kwargs": {"type": "object"}}, ["input"])
    batch_body = _body(
        {
            "inputs": {"type": "array", "items": input_schema},
            "config": {"anyOf": [config, {"type": "array", "items": config}]},
            "kwargs": {"type": "object"},
        },
        ["inputs"],
    )
    filters = {f: {"type": "array", "items": {"type": "string"}} for f in _FILTERS}
    stream_errors = _errors(404, 413, 415, 422, 503)
    version_header = {"X-Flow-Version": {"description": "the commit that served", "schema": {"type": "string"}}}

    def operation(summary: str, body: Any, ok: Any, errors: dict[str, Any], op: str) -> dict[str, Any]:
        return {
            "tags": [name],
            "summary": summary,
            "operationId": _NAME.sub("_", f"{name}_{op}"),
            "parameters": headers,
            **({"requestBody": body} if body is not None else {}),
            "responses": {"200": {**ok, "headers": version_header}, **errors},
        }

    def returns(schema: Any, what: str) -> dict[str, Any]:
        return {"description": what, "content": {"application/json": {"schema": schema}}}

    invoke_answer = {
        "type": "object",
        "properties": {"output": output_schema, "metadata": {"$ref": "#/components/schemas/RunMetadata"}},
        "required": ["output", "metadata"],
    }
    batch_answer = {
        "type": "object",
        "properties": {
            "output": {"type": "array", "items": output_schema},
            "metadata": {"$ref": "#/components/schemas/BatchMetadata"},
        },
        "required": ["output", "metadata"],
    }
    stream = {"description": "metadata, data per chunk, then end (or error)", "content": EVENTS}
    schema_of = {"type": "object", "description": "a JSON Schema"}
    runs = _errors(404, 413, 415, 422, 500, 503)
    return {
        f"{base}/invoke": {
            "post": operation("Run the flow", invoke_body, returns(invoke_answer, "its output"), runs, "invoke")
        },
        f"{base}/batch": {
            "post": operation(
                "Run the flow on several inputs", batch_body, returns(batch_answer, "their outputs"), runs, "batch"
            )
        },
        f"{base}/stream": {"post": operation("Stream the flow's output", invoke_body, stream, stream_errors, "stream")},
        f"{base}/stream_log": {
            "post": operation(
                "Stream the run's log (RunLogPatch ops)",
                _body({**invoke_body["content"]["application/json"]["schema"]["properties"], **filters}, ["input"]),
                {"description": "data events of {ops}, then end", "content": EVENTS},
                stream_errors,
                "stream_log",
            )
        },
        f"{base}/stream_events": {
            "post": operation(
                "Stream LangChain's run events",
                _body(
                    {
                        **invoke_body["content"]["application/json"]["schema"]["properties"],
                        **filters,
                        "version": {"enum": ["v1", "v2"], "default": "v2"},
                    },
                    ["input"],
                ),
                {"description": "data events of stream events, then end", "content": EVENTS},
                stream_errors,
                "stream_events",
            )
        },
        f"{base}/input_schema": {
            "get": operation(
                "The input's JSON Schema", None, returns(schema_of, "it"), _errors(404, 503), "input_schema"
            )
        },
        f"{base}/output_schema": {
            "get": operation(
                "The output's JSON Schema", None, returns(schema_of, "it"), _errors(404, 503), "output_schema"
            )
        },
        f"{base}/config_schema": {
            "get": operation(
                "The config's JSON Schema", None, returns(schema_of, "it"), _errors(404, 503), "config_schema"
            )
        },
        f"{base}/feedback": {"post": _feedback_operation([name], f"{name}_feedback")},
        f"{base}/experiment": {
            "get": {
                "tags": [name],
                "summary": "The flow's experiment report (read token)",
                "operationId": _NAME.sub("_", f"{name}_experiment"),
                "responses": {
                    "200": returns({"type": "object"}, "each arm and each key's verdict"),
                    **_errors(401, 404),
                },
            }
        },
        f"{base}/playground/": {
            "get": {
                "tags": [name],
                "summary": "The flow's playground page",
                "operationId": _NAME.sub("_", f"{name}_playground"),
                "responses": {
                    "200": {"description": "a page", "content": {"text/html": {"schema": {"type": "string"}}}}
                },
            }
        },
    }


def _feedback_operation(tags: list[str], op: str) -> dict[str, Any]:
    return {
        "tags": tags,
        "summary": "Score a run (LangServe's feedback)",
        "operationId": _NAME.sub("_", op),
        "parameters": [{"$ref": "#/components/parameters/User"}],
        "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Feedback"}}}},
        "responses": {
            "202": {"description": "kept", "content": {"application/json": {"schema": {"type": "object"}}}},
            **_errors(404, 413, 415, 422, 429, 503),
        },
    }


_FILTERS = ("include_names", "include_types", "include_tags", "exclude_names", "exclude_types", "exclude_tags")


def _server_paths() -> dict[str, Any]:
    def get(summary: str, op: str, content: str = "application/json") -> dict[str, Any]:
        return {
            "get": {
                "tags": ["server"],
                "summary": summary,
                "operationId": op,
                "responses": {"200": {"description": summary, "content": {content: {"schema": {}}}}},
            }
        }

    def post(summary: str, op: str, statuses: tuple[int, ...], body: bool = True) -> dict[str, Any]:
        return {
            "post": {
                "tags": ["server"],
                "summary": summary,
                "operationId": op,
                **({"requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}}} if body else {}),
                "responses": {
                    "200": {"description": "done", "content": {"application/json": {"schema": {}}}},
                    **{
                        str(s): {"description": "refused", "content": {"application/json": {"schema": ERROR}}}
                        for s in statuses
                    },
                },
            }
        }

    run_api = {
        "post": {
            "tags": ["server"],
            "summary": "LangFlow's run API (docs/langflow.md)",
            "operationId": "langflow_run",
            "parameters": [
                {"name": "flow", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "stream", "in": "query", "required": False, "schema": {"type": "boolean"}},
            ],
            "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/LangFlowRun"}}}},
            "responses": {
                "200": {
                    "description": "LangFlow's RunResponse, or its event stream",
                    "content": {"application/json": {"schema": {"type": "object"}}, **EVENTS},
                },
                **_errors(404, 413, 415, 422, 500, 503),
            },
        }
    }
    return {
        "/api/v1/run/{flow}": run_api,
        "/feedback": {"post": _feedback_operation(["server"], "feedback")},
        "/flows": get("Every flow, its state and the refs that serve it", "flows"),
        "/versions": get("Every commit seen", "versions"),
        "/history": get("Deploy events, newest first", "history"),
        "/healthz": get("The process is alive", "healthz"),
        "/readyz": get("A good version is loaded", "readyz"),
        "/metrics": get("Prometheus metrics", "metrics", "text/plain"),
        "/webhooks/github": post("GitHub's webhook deliveries", "github_webhook", (400, 401, 403)),
        "/admin/reconcile": post("Fetch and apply now (admin token)", "admin_reconcile", (401, 403), body=False),
        "/admin/abort": post("Stop a flow's canary (admin token)", "admin_abort", (400, 401, 403, 404, 409)),
        "/admin/resume": post("Restart a flow's canary (admin token)", "admin_resume", (400, 401, 403, 404)),
    }


_CONFIGURABLE = {
    "session_id": "keeps a conversation on one version (and keys its history)",
    "user_id": "the user, for sticky routing",
    "flow_version": "a sha, short sha or ref to pin",
}
assert set(_CONFIGURABLE) == set(ROUTING_KEYS), "the document lists every routing key"

_COMMON: dict[str, Any] = {
    "Error": {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                "required": ["code", "message"],
            }
        },
        "required": ["error"],
    },
    "Config": {
        "type": "object",
        "description": "what a client may set of a run's config; the rest is dropped",
        "properties": {
            "configurable": {
                "type": "object",
                "properties": {k: {"type": "string", "description": v} for k, v in _CONFIGURABLE.items()},
                "additionalProperties": True,
            },
            "tags": {"type": "array", "items": {"type": "string"}},
            "metadata": {"type": "object"},
            "run_name": {"type": "string"},
        },
    },
    "RunMetadata": {
        "type": "object",
        "properties": {
            "run_id": {"type": "string", "format": "uuid"},
            "feedback_tokens": {"type": "array", "items": {}},
            "flow_version": {"type": "string", "description": "the commit that served"},
            "ref": {"type": ["string", "null"], "description": "the ref it was reached by"},
        },
    },
    "BatchMetadata": {
        "type": "object",
        "properties": {
            "run_ids": {"type": "array", "items": {"type": "string", "format": "uuid"}},
            "responses": {"type": "array", "items": {"$ref": "#/components/schemas/RunMetadata"}},
            "flow_version": {"type": "string"},
            "ref": {"type": ["string", "null"]},
        },
    },
    "Feedback": {
        "type": "object",
        "description": "LangServe's feedback on a run this server answered (docs/experiments.md)",
        "properties": {
            "run_id": {"type": "string", "format": "uuid", "description": "an answer's metadata.run_id"},
            "session_id": {
                "type": "string",
                "minLength": 1,
                "maxLength": 256,
                "description": "instead of run_id, on /flows/<name>/feedback: the session's last run of the flow",
            },
            "key": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"},
            "score": {"anyOf": [{"type": "number"}, {"type": "boolean"}]},
            "value": {},
            "comment": {"type": ["string", "null"], "maxLength": 4000},
        },
        "required": ["key", "score"],
        "anyOf": [{"required": ["run_id"]}, {"required": ["session_id"]}],
    },
    "LangFlowRun": {
        "type": "object",
        "properties": {
            "input_value": {"type": ["string", "null"]},
            "input_type": {"enum": ["chat", "text", "any"]},
            "output_type": {"enum": ["chat", "text", "any", "debug"]},
            "output_component": {"type": ["string", "null"]},
            "tweaks": {"type": ["object", "null"]},
            "session_id": {"type": ["string", "null"]},
            "stream": {"type": "boolean"},
        },
    },
}

_PARAMETERS: dict[str, Any] = {
    "Version": {
        "name": "X-Flow-Version",
        "in": "header",
        "required": False,
        "description": "pin a version: a sha, a short sha or a ref",
        "schema": {"type": "string"},
    },
    "Session": {
        "name": "X-Flow-Session",
        "in": "header",
        "required": False,
        "description": "a session: its conversation stays on the version it began on",
        "schema": {"type": "string"},
    },
    "User": {
        "name": "X-Flow-User",
        "in": "header",
        "required": False,
        "description": "the user, for sticky routing",
        "schema": {"type": "string"},
    },
    "Segment": {
        "name": "X-Flow-Segment",
        "in": "header",
        "required": False,
        "description": "the request's segment, set by the gateway: a route's segments may match it",
        "schema": {"type": "string"},
    },
}
