"""LangFlow's run API on our server: ``POST /api/v1/run/{flow}``, answered in LangFlow's RunResponse shape.

Clients written for LangFlow (its SDKs, ``curl`` snippets from its API pane) work when pointed at gitops-flow. The
version is chosen as for every request (SPEC 4: ``X-Flow-Version``, then the session's pin), and the answer names
it in ``X-Flow-Version``. A flow is named by its name or by one of its ``aliases`` (a LangFlow export's id and
endpoint name). ``tweaks`` change what runs, so only those the flow declares ``tweakable`` are taken (tweaks.py);
the others are refused.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

import anyio
import orjson
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from gitops_flow.components.textify import message_text, text_of
from gitops_flow.delivery.routing_table import Choice, RoutingTable
from gitops_flow.experiments.ledger import new_run_id
from gitops_flow.flow.document import NodeSpec
from gitops_flow.guardrails.cache import Asked
from gitops_flow.runtime.compiler import BuiltFlow
from gitops_flow.runtime.tweaks import BadTweak, Tweaker, check_request
from gitops_flow.server.edge import RequestError, json_response, read_json, require_json
from gitops_flow.server.endpoints import (
    CACHE_HEADER,
    VERSION_HEADER,
    StreamForm,
    cached,
    choose,
    event_stream,
    get_deps,
    keep,
    note_answer,
    open_stream,
    run_config,
    run_flow,
    streamed,
    version_metadata,
)

log = logging.getLogger("gitops_flow.server")
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no", "")
# LangFlow's stream is JSON objects apart by a blank line, not named events: its keep-alive is a blank line, which its
# clients skip (an SSE comment would be a line they cannot read as JSON)
KEEP_ALIVE = b"\n"


class RunRequest(BaseModel):
    """The body LangFlow's run endpoint takes; fields LangFlow clients send that we do not use are ignored."""

    model_config = ConfigDict(extra="ignore")

    input_value: str | None = None
    input_type: Literal["chat", "text", "any"] = "chat"
    output_type: Literal["chat", "text", "any", "debug"] = "chat"
    output_component: str | None = None
    tweaks: dict[str, Any] | None = None
    session_id: str | None = None
    stream: bool = False  # LangFlow's SDKs ask for a stream in the body, curl snippets in the query


def _request(payload: Any) -> RunRequest:
    if not isinstance(payload, dict):
        raise RequestError(422, "bad-body", "the body is a JSON object")
    try:
        body = RunRequest.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "body"
        code = {"input_type": "bad-input-type", "output_type": "bad-output-type"}.get(where, "bad-body")
        raise RequestError(422, code, f"{where}: {first['msg']}") from None
    if body.tweaks:
        try:
            check_request(body.tweaks)
        except BadTweak as exc:
            raise RequestError(422, exc.code, str(exc)) from None
    return body


async def _payload(request: Request) -> Any:
    """The body; an empty one (sent as JSON) is LangFlow's defaults, as LangFlow itself takes it."""
    require_json(request)
    if request.headers.get("content-length") == "0":
        return {}
    return await read_json(request)


def flow_name(table: RoutingTable, asked: str) -> str:
    """The flow ``asked`` names: a flow's name, or else the one flow served with ``asked`` among its aliases (a
    LangFlow export's id or endpoint name). 409 when several flows claim it."""
    if asked in table.routes:
        return asked
    claimed = sorted(
        name
        for name, route in table.routes.items()
        if any(t.version is not None and asked in _aliases(t.version.flows.get(name)) for _, t in route.live)
    )
    if len(claimed) > 1:
        raise RequestError(409, "ambiguous-flow", f"{asked!r} is an alias of several flows: {', '.join(claimed)}")
    return claimed[0] if claimed else asked


def _aliases(flow: BuiltFlow | None) -> list[str]:
    return flow.spec.aliases if flow is not None else []


async def _tweaked(tweaker: Tweaker, flow: BuiltFlow, tweaks: dict[str, Any] | None) -> BuiltFlow:
    """``flow`` with the request's tweaks (422 for one the flow does not allow); building runs off the loop."""
    if not tweaks:
        return flow
    if not flow.spec.tweakable:
        listed = ", ".join(sorted(map(str, tweaks))[:5])
        raise RequestError(
            422,
            "tweaks-unsupported",
            f"tweaks ({listed}) are not supported by this flow: it declares no tweakable params (docs/langflow.md)",
        )
    try:
        return await anyio.to_thread.run_sync(tweaker.apply, flow, tweaks)
    except BadTweak as exc:
        raise RequestError(422, exc.code, str(exc)) from None


def _streaming(request: Request) -> bool:
    raw = request.query_params.get("stream", "false").lower()
    if raw not in _TRUE + _FALSE:
        raise RequestError(422, "bad-stream", "stream is true or false")
    return raw in _TRUE


def flow_input(flow: BuiltFlow, text: str) -> Any:
    """What ``input_value`` becomes: the text itself, or, when the entry takes one named variable (a prompt's
    ``{question}``, ChatHistory's ``input_key``), an object with the text under that name; ``{}`` for an entry
    that takes no variables at all."""
    entry = next(n for n in flow.spec.nodes if n.id == flow.graph.entry)
    if entry.component == "ChatHistory":
        return {str(entry.params.get("input_key", "question")): text}
    model = flow.input_model
    fields = getattr(model, "model_fields", None)
    if not isinstance(fields, dict) or "root" in fields:
        return text  # the entry takes any value
    required = [name for name, info in fields.items() if info.is_required()]
    if len(required) > 1:
        raise RequestError(
            422,
            "several-inputs",
            f"the flow takes {', '.join(required)}; input_value fills one: call /flows/{flow.spec.name}/invoke",
        )
    return {required[0]: text} if required else {}


def _text(value: Any) -> str:
    """What LangFlow shows of an output: a message's or a prompt's text, a string itself, anything else as JSON."""
    if isinstance(value, dict | list | int | float | bool) or value is None:
        return orjson.dumps(value, default=_plain).decode()
    return text_of(value)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump()
    return str(value)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def output_nodes(flow: BuiltFlow) -> list[NodeSpec]:
    """The flow's outputs as LangFlow counts them: the exit; or, when the exit gathers several nodes' values, each
    under the id of its node (a converted export with several Chat Outputs), each of those nodes."""
    by_id = {n.id: n for n in flow.spec.nodes}
    edges = flow.graph.incoming[flow.graph.exit]
    exit_node = by_id[flow.graph.exit]
    if exit_node.component == "Passthrough" and len(edges) > 1 and all(e.key == e.source for e in edges):
        return [by_id[e.source] for e in edges]
    return [exit_node]


def _outputs(flow: BuiltFlow, output: Any, only: str | None) -> list[tuple[NodeSpec, Any]]:
    """Each output node with its value (the one ``only`` names, when it names one)."""
    found = output_nodes(flow)
    if len(found) == 1 or not isinstance(output, dict):
        pairs = [(next(n for n in flow.spec.nodes if n.id == flow.graph.exit), output)]
    else:
        pairs = [(node, output.get(node.id)) for node in found]
    return [pair for pair in pairs if pair[0].id == only] or pairs


def _message(
    text: str, session: str, flow: BuiltFlow, message_id: str, *, machine: bool = True, node: NodeSpec | None = None
) -> dict[str, Any]:
    """A LangFlow Message as its API shows one; ``node`` is the output that gave it (the exit by default)."""
    exit_node = node or next(n for n in flow.spec.nodes if n.id == flow.graph.exit)
    return {
        "text": text,
        "sender": "Machine" if machine else "User",
        "sender_name": "AI" if machine else "User",
        "session_id": session,
        "timestamp": _now(),
        "flow_id": flow.spec.name,
        "files": [],
        "error": False,
        "edit": False,
        "properties": {"source": {"id": exit_node.id if machine else None, "display_name": None, "source": None}},
        "category": "message",
        "content_blocks": [],
        "id": message_id,
        "component_id": exit_node.id if machine else None,
    }


def run_response(flow: BuiltFlow, body: RunRequest, session: str, output: Any, message_id: str) -> dict[str, Any]:
    """LangFlow 1.x's RunResponse for one run whose output is ``output``: one result per output of the flow (the
    one ``output_component`` names, when it names one of them)."""
    name = "text" if body.output_type == "text" else "message"
    results = []
    for index, (node, value) in enumerate(_outputs(flow, output, body.output_component)):
        text = _text(value)
        own_id = message_id if index == 0 else str(uuid.uuid4())
        results.append(
            {
                "results": {name: _message(text, session, flow, own_id, node=node)},
                "artifacts": {name: text, "sender": "Machine", "sender_name": "AI", "files": [], "type": "object"},
                "outputs": {name: {"message": text, "type": "text"}},
                "logs": {name: []},
                "messages": [
                    {
                        "message": text,
                        "sender": "Machine",
                        "sender_name": "AI",
                        "session_id": session,
                        "stream_url": None,
                        "component_id": node.id,
                        "files": [],
                        "type": "text",
                    }
                ],
                "timedelta": None,
                "duration": None,
                "component_display_name": node.description or node.id,
                "component_id": node.id,
                "used_frozen_result": False,
            }
        )
    return {"session_id": session, "outputs": [{"inputs": {"input_value": body.input_value}, "outputs": results}]}


async def run(request: Request) -> Response:
    """``POST /api/v1/run/{flow}[?stream=true]``."""
    deps = get_deps(request)
    name = flow_name(deps.reconciler.table, request.path_params["flow"])
    streaming = _streaming(request)
    body = _request(await _payload(request))
    streaming = streaming or body.stream
    configurable: dict[str, Any] = {"session_id": body.session_id} if body.session_id else {}
    text = body.input_value or ""
    tweaker: Tweaker = request.app.state.tweaker
    choice, flow = await choose(
        request, name, configurable, lambda chosen: [flow_input(chosen, text)], tweaks=body.tweaks
    )
    tweaked = await _tweaked(tweaker, flow, body.tweaks)  # refused tweaks are refused before anything runs
    outputs = [flow.graph.exit, *(n.id for n in output_nodes(flow))]
    if body.output_component and body.output_component not in outputs:
        named = ", ".join(repr(o) for o in dict.fromkeys(outputs[1:]))
        raise RequestError(422, "unknown-output-component", f"the flow's outputs are {named}")
    session = str(configurable.get("session_id") or uuid.uuid4())  # a new conversation unless one is named
    configurable["session_id"] = session
    run_id = new_run_id()

    def start(chosen: Choice, built: BuiltFlow) -> AsyncIterator[Any]:
        async def chunks() -> AsyncIterator[Any]:
            tweaked = await _tweaked(tweaker, built, body.tweaks)
            config = run_config({"configurable": configurable}, name, chosen, run_id)
            async for chunk in deps.executor.runner(tweaked).astream(flow_input(tweaked, text), config):
                yield chunk

        return chunks()

    if streaming:
        opened = await open_stream(deps, name, choice, flow, start, run_id)
        form = LangFlowEvents(opened.choice.version.flows[name], body, session)
        return event_stream(deps, opened, streamed(deps, name, opened, run_id, form), ping=KEEP_ALIVE)

    async def run(chosen: Choice, built: BuiltFlow) -> Any:
        tweaked = await _tweaked(tweaker, built, body.tweaks)
        config = run_config({"configurable": configurable}, name, chosen, run_id)
        return await deps.executor.runner(tweaked).ainvoke(flow_input(tweaked, text), config)

    # what reaches the run: the input, the tweaks and the config (the session in it); input_type reaches nothing,
    # output_type and output_component shape the response of the run's output, cached or not
    asked = Asked(flow_input(tweaked, text), {"configurable": configurable}, body.tweaks or {})
    looked, hit = await cached(deps, name, choice, tweaked, asked)
    if hit is not None:
        output = hit.output
    else:
        choice, output = await run_flow(deps, name, choice, flow, run_id, run)
        if looked is not None:
            answered = choice.version.flows.get(name)
            ran = await _tweaked(tweaker, answered, body.tweaks) if answered is not None else None
            await keep(deps, name, looked, choice, ran, output)
    # feedback may name metadata.run_id, or the session (POST /flows/<name>/feedback); output scores come from output
    note_answer(request, name, choice, run_id, configurable, output)
    response = run_response(choice.version.flows[name], body, session, output, str(uuid.uuid4()))
    response["metadata"] = {"run_id": str(run_id), **version_metadata(choice)}  # ours; LangFlow clients ignore it
    headers = {CACHE_HEADER: "hit" if hit is not None else "miss"} if looked is not None else {}
    return json_response(response, headers={VERSION_HEADER: choice.version.sha, **headers})


class LangFlowEvents(StreamForm):
    """LangFlow's stream: ``add_message`` (the user's, then the answer's), ``token`` per chunk, then ``end`` with
    the whole RunResponse; ``error`` instead when the flow fails (a message, never a traceback)."""

    def __init__(self, flow: BuiltFlow, body: RunRequest, session: str) -> None:
        self.flow = flow
        self.body = body
        self.session = session
        self.message_id = str(uuid.uuid4())
        self.chunks: list[Any] = []
        self.texts: list[str | None] = []

    def started(self) -> bytes:
        user = _message(self.body.input_value or "", self.session, self.flow, str(uuid.uuid4()), machine=False)
        answer = _message("", self.session, self.flow, self.message_id)
        return _event("add_message", user) + _event("add_message", answer)

    def chunk(self, chunk: Any) -> bytes:
        self.chunks.append(chunk)
        text = message_text(chunk)  # a model's message chunks are tokens too
        self.texts.append(text)
        return _event("token", {"chunk": text, "id": self.message_id, "timestamp": _now()}) if text else b""

    def failed(self, status: int, message: str) -> bytes:
        return _event("error", {"error": message})

    def ended(self) -> bytes:
        texts = self.texts
        output: Any = "".join(t or "" for t in texts) if all(t is not None for t in texts) else self.chunks[-1]
        return _event("end", {"result": run_response(self.flow, self.body, self.session, output, self.message_id)})


def _event(kind: str, data: Any) -> bytes:
    return orjson.dumps({"event": kind, "data": data}, default=_plain) + b"\n\n"
