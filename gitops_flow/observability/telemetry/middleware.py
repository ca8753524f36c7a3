"""The request middleware (plain ASGI): it gives each HTTP request its context (telemetry.context), the span of the
request when tracing is on (with the caller's W3C trace context as its parent, and a ``traceresponse`` header
back), and, as its answer ends, runs what the request left to do (the limits let its runs go): before the answer's
last bytes go out, so a client that sends its next request once it has the answer finds the place free. Health
checks and metrics scrapes are not traced: they would bury the traces of requests."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gitops_flow.observability.telemetry.context import CURRENT, RequestContext
from gitops_flow.observability.telemetry.tracing import (
    CACHE,
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    RUN_ID,
    Tracing,
    failed,
    ids,
    traceresponse,
)

log = logging.getLogger("gitops_flow.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})


class RequestMiddleware:
    """Wraps the app; ``tracing`` None: no span, no SDK call, only the context (a few attribute writes)."""

    def __init__(self, app: ASGIApp, tracing: Tracing | None = None) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = RequestContext(scope["method"], scope["path"])
        token = CURRENT.set(context)
        status = 500
        tracing = self.tracing if scope["path"] not in UNTRACED else None
        if tracing is not None:
            span = tracing.start_request(
                f"{scope['method']} {scope['path']}",
                tracing.extract(scope.get("headers") or ()),
                {"http.request.method": scope["method"], "url.path": scope["path"]},
            )
            context.span = span
            context.trace_id, context.span_id = ids(span)
            header = (b"traceresponse", traceresponse(span).encode())

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if tracing is not None:
                    message["headers"] = [*message.get("headers", ()), header]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                await _finish(context, scope)
            await send(message)

        error: BaseException | None = None
        try:
            await self.app(scope, receive, sending)
        except BaseException as exc:
            error = exc
            raise
        finally:
            await _finish(context, scope)  # an answer that never ended (an error, a client gone)
            if tracing is not None:
                _end(context, scope, status, error)
            CURRENT.reset(token)


async def _finish(context: RequestContext, scope: Scope) -> None:
    """Run what the request left to do, once."""
    finalizers, context.finalizers = context.finalizers, []
    for finish in finalizers:
        try:
            await finish(context)
        except Exception:  # what is left to do must not turn an answered request into an error
            log.exception("after %s %s", scope["method"], scope["path"])


def _end(context: RequestContext, scope: Scope, status: int, error: BaseException | None) -> None:
    span = context.span
    route = _route(scope)
    span.update_name(f"{scope['method']} {route}")
    attributes: dict[str, Any] = {"http.route": route, "http.response.status_code": status}
    if context.run_id is not None:
        attributes[RUN_ID] = context.run_id
    if context.cache is not None:
        attributes[CACHE] = context.cache
    if context.tokens:
        attributes[INPUT_TOKENS], attributes[OUTPUT_TOKENS] = context.input_tokens, context.output_tokens
    span.set_attributes(attributes)
    if error is not None or status >= 500:
        failed(span, error, None if error is not None else f"HTTP {status}")
    span.end()


def _route(scope: Scope) -> str:
    """The path's template (``/flows/{flow}/invoke``): the router's path parameters put back as names, so spans of
    one endpoint share a name however many flows there are."""
    path: str = scope["path"]
    params = scope.get("path_params") or {}
    parts = path.split("/")
    for name, value in params.items():
        parts = [f"{{{name}}}" if part == str(value) else part for part in parts]
    return "/".join(parts)
