"""LangServe's endpoints beyond invoke, batch and stream: ``stream_log``, ``stream_events`` (v1 and v2), the
``/c/{config_hash}/`` routes and each flow's playground page.

``stream_log`` and ``stream_events`` run the flow through LangChain's own ``astream_log`` and ``astream_events``
and send what they yield as LangServe does (server-sent ``data`` events, then ``end``, or ``error``), so
``RemoteRunnable.astream_log`` and ``astream_events`` work unchanged. They are runs like any other: the version is
chosen as for every request, counted by the metrics and the canary guard, and a canary that fails before its first
output is replaced by its primary. That needs care here: LangChain announces a run (its root's start) before doing
any of its work, so the events up to the flow's first output are held back (at most MAX_HELD of them) and sent only
once the flow has produced something; a failure before then is a failure before the first chunk.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from gitops_flow.delivery.routing_table import Choice
from gitops_flow.runtime.compiler import BuiltFlow
from gitops_flow.server import endpoints, sse
from gitops_flow.server.assets import page
from gitops_flow.server.edge import RequestError
from gitops_flow.server.endpoints import (
    LangServeEvents,
    choose,
    event_stream,
    one_input,
    open_stream,
    run_config,
    streamed,
)

log = logging.getLogger("gitops_flow.server")

FILTERS = ("include_names", "include_types", "include_tags", "exclude_names", "exclude_types", "exclude_tags")
EVENT_VERSIONS = ("v1", "v2")
MAX_HELD = 1000  # events held back before a stream's first output; past it the stream goes out as it comes
MAX_FILTER_ITEMS = 100
_DEPRECATED = r"(astream_log is deprecated|astream_events version='v1' is deprecated)"

Kind = Literal["log", "events"]


def quiet_deprecations() -> None:
    """LangChain deprecated ``astream_log`` and v1 events (removal in langchain-core 2.0); LangServe's clients still
    call them, so the server offers them, and its log need not say so on every first call."""
    warnings.filterwarnings("ignore", message=_DEPRECATED)


async def stream_log(request: Request) -> Response:
    """``POST /flows/{flow}/stream_log``: ``RunLogPatch`` ops (``{"ops": [...]}``) as ``data`` events."""
    return await _stream(request, "log")


async def stream_events(request: Request) -> Response:
    """``POST /flows/{flow}/stream_events``: LangChain's stream events as ``data`` events; ``"version": "v1"`` in
    the body asks for v1 events, v2 (LangServe's default) otherwise."""
    return await _stream(request, "events")


def _filters(payload: dict[str, Any]) -> dict[str, list[str] | None]:
    found: dict[str, list[str] | None] = {}
    for key in FILTERS:
        value = payload.get(key)
        if value is None:
            found[key] = None
            continue
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise RequestError(422, "bad-body", f"{key} is a list of strings")
        if len(value) > MAX_FILTER_ITEMS:
            raise RequestError(422, "bad-body", f"{key} lists at most {MAX_FILTER_ITEMS} names")
        found[key] = value
    return found


async def _stream(request: Request, kind: Kind) -> Response:
    def check(payload: dict[str, Any]) -> None:
        _filters(payload)
        if kind == "events" and payload.get("version", "v2") not in EVENT_VERSIONS:
            raise RequestError(422, "bad-body", "version is 'v1' or 'v2'")

    call = await one_input(request, check)
    name, payload, run_id, deps = call.name, call.payload, call.run_id, call.deps
    filters, version = _filters(payload), payload.get("version", "v2")

    def start(chosen: Choice, built: BuiltFlow) -> AsyncIterator[Any]:
        run = run_config(call.config, name, chosen, run_id)
        if kind == "log":
            patches = built.runnable.astream_log(payload["input"], run, diff=True, **filters)  # type: ignore[call-overload]
            return _held(patches, _log_output())
        events = built.runnable.astream_events(payload["input"], run, version=version, **filters)
        return _held(events, _event_output())

    opened = await open_stream(deps, name, call.choice, call.flow, start, run_id)
    if opened.failure is None:
        endpoints.note_answer(request, name, opened.choice, run_id, call.configurable)
    data = _log_data if kind == "log" else _event_data
    form = LangServeEvents(lambda held: b"".join(sse.frame(sse.DATA, _dumps(data(item))) for item in held))
    return event_stream(deps, opened, streamed(deps, name, opened, run_id, form))


async def _held(items: AsyncIterator[Any], is_output: Callable[[Any], bool]) -> AsyncIterator[list[Any]]:
    """``items`` in lists: the first holds every item up to the flow's first output (or MAX_HELD of them), each
    later one a single item. So a stream's first chunk, what open_stream waits for, means the flow has done work."""
    pending: list[Any] = []
    async for item in items:
        pending.append(item)
        if is_output(item) or len(pending) >= MAX_HELD:
            break
    if pending:
        yield pending
    async for item in items:
        yield [item]


def _log_output() -> Callable[[Any], bool]:
    def output(patch: Any) -> bool:
        return any(op.get("path") in ("/streamed_output/-", "/final_output") for op in patch.ops)

    return output


def _event_output() -> Callable[[Any], bool]:
    """The root run's stream or end: the root is the run of the first event (its start)."""
    root: list[str] = []

    def output(event: Any) -> bool:
        if not root:
            root.append(str(event.get("run_id")))
        return str(event.get("run_id")) == root[0] and event.get("event") in ("on_chain_stream", "on_chain_end")

    return output


def _log_data(patch: Any) -> dict[str, Any]:
    return {"ops": patch.ops}


def _event_data(event: dict[str, Any]) -> dict[str, Any]:
    """An event as LangServe sends it: internal metadata (keys starting with ``__``) left out."""
    metadata = event.get("metadata") or {}
    return {**event, "metadata": {k: v for k, v in metadata.items() if not str(k).startswith("__")}}


def _dumps(data: Any) -> bytes:
    return orjson.dumps(data, default=_default)


def _default(value: Any) -> Any:
    """Messages, documents, prompt values and LangChain's results as LangServe sends them (their fields, with
    ``type``); anything else by its type's name only, never its text (which could hold what should not leave)."""
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return f"<{type(value).__name__}>"


# -- the playground ----------------------------------------------------------------------------------------------


async def playground(request: Request) -> Response:
    """``GET /flows/{flow}/playground/``: a page of our own (package data, no CDN) that does what LangServe's
    playground does for a flow: a form made from its input schema, invoke and stream, the version that answered."""
    name = request.path_params["flow"]
    file = request.path_params.get("file", "index.html")
    if file not in ("index.html", "playground.js", "pages.css"):
        raise RequestError(404, "not-found", f"the playground has no file {file!r}")
    await choose(request, name, {}, limited=False)  # 404 for a flow that is not served; a page is not a run
    return page("playground.html" if file == "index.html" else file)


async def playground_redirect(request: Request) -> Response:
    """``/playground`` -> ``/playground/``, so the page's relative links reach the flow's endpoints."""
    return RedirectResponse(request.url.path + "/", status_code=308)


def routes() -> list[Route]:
    """LangServe's routes of every flow that endpoints.py does not serve itself, and all of them again under
    ``/c/{config_hash}/``, where the config in the path is merged under the body's."""
    flow = "/flows/{flow}"
    hashed = "/flows/{flow}/c/{config_hash}"
    found = [
        Route(f"{flow}/stream_log", stream_log, methods=["POST"]),
        Route(f"{flow}/stream_events", stream_events, methods=["POST"]),
    ]
    for prefix in (flow, hashed):
        found += [
            Route(f"{prefix}/playground", playground_redirect, methods=["GET"]),
            Route(f"{prefix}/playground/", playground, methods=["GET"]),
            Route(f"{prefix}/playground/{{file}}", playground, methods=["GET"]),
        ]
    found += [
        Route(f"{hashed}/invoke", endpoints.invoke, methods=["POST"]),
        Route(f"{hashed}/batch", endpoints.batch, methods=["POST"]),
        Route(f"{hashed}/stream", endpoints.stream, methods=["POST"]),
        Route(f"{hashed}/stream_log", stream_log, methods=["POST"]),
        Route(f"{hashed}/stream_events", stream_events, methods=["POST"]),
        Route(f"{hashed}/input_schema", endpoints.input_schema, methods=["GET"]),
        Route(f"{hashed}/output_schema", endpoints.output_schema, methods=["GET"]),
        Route(f"{hashed}/config_schema", endpoints.config_schema, methods=["GET"]),
    ]
    return found
