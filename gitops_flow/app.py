"""The application factory: create_app(settings) -> Starlette over a Server (assembly.py): routes, lifespan and the
error -> HTTP map."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable, Mapping

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from gitops_flow.assembly import Server
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.config import Settings
from gitops_flow.console import routes as console
from gitops_flow.delivery.leader import Worker
from gitops_flow.delivery.source import GitSource
from gitops_flow.exceptions import (
    BadInput,
    Busy,
    GitOpsFlowError,
    Limited,
    LookupFailed,
    NoReadyVersion,
    NotAbortable,
    NothingServable,
    NotServable,
    PinsDisabled,
    ProviderError,
    StoreError,
    TooManyItems,
    TurnTooLarge,
    UnknownFlow,
)
from gitops_flow.observability.telemetry.middleware import RequestMiddleware
from gitops_flow.observability.telemetry.tracing import Tracing
from gitops_flow.server import endpoints, experiments_api, failures, langflow_api, langserve_api, openapi, views
from gitops_flow.server import webhooks as receivers
from gitops_flow.server.edge import RequestError, error_response
from gitops_flow.stores.base import StateStore

log = logging.getLogger("gitops_flow.server")
RETRY_AFTER_SECONDS = 2  # what a 503 of a retryable error (a busy rebuild, a store that is away) asks clients to wait

# domain errors -> (status, code); the first matching class wins, so subclasses come first
_STATUS: tuple[tuple[type[GitOpsFlowError], int, str], ...] = (
    (TurnTooLarge, 413, "turn-too-large"),
    (TooManyItems, 422, "too-many-items"),
    (BadInput, 422, "bad-input"),
    (PinsDisabled, 403, "pins-disabled"),
    (NotAbortable, 409, "not-abortable"),
    (Busy, 503, "busy"),
    (NoReadyVersion, 503, "not-ready"),
    (NothingServable, 503, "nothing-servable"),
    (NotServable, 404, "version-not-servable"),
    (UnknownFlow, 404, "unknown-flow"),
    (LookupFailed, 404, "unknown-version"),
)


def create_app(
    settings: Settings,
    *,
    store: StateStore | None = None,
    source: GitSource | None = None,
    registry: ComponentRegistry | None = None,
    secrets: Mapping[str, str] | None = None,
    tracing: Tracing | None = None,
    private: Mapping[str, str] | None = None,
    worker: Worker | None = None,
    settle_heap: Callable[[], None] | None = None,
) -> Starlette:
    """The runtime server over a ``Server`` made of these parts (assembly.py says what each is; raises ConfigError
    as it does). Changes nothing of the process: the entry point (cli/process.py) quiets deprecations, puts the
    server's scrubber on the logs and settles the heap."""
    return server_app(
        Server(
            settings,
            store=store,
            source=source,
            registry=registry,
            secrets=secrets,
            tracing=tracing,
            private=private,
            worker=worker,
            settle_heap=settle_heap,
        )
    )


def server_app(server: Server) -> Starlette:
    """The Starlette app of ``server``: its routes and error map; the lifespan starts the server and stops it.
    ``app.state.server`` is the server, ``app.state.deps`` what the handlers read (``get_deps``)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    routes = [
        Route("/flows/{flow}/invoke", endpoints.invoke, methods=["POST"]),
        Route("/flows/{flow}/batch", endpoints.batch, methods=["POST"]),
        Route("/flows/{flow}/stream", endpoints.stream, methods=["POST"]),
        Route("/flows/{flow}/input_schema", endpoints.input_schema, methods=["GET"]),
        Route("/flows/{flow}/output_schema", endpoints.output_schema, methods=["GET"]),
        Route("/flows/{flow}/config_schema", endpoints.config_schema, methods=["GET"]),
        Route("/flows/{flow}/feedback", experiments_api.flow_feedback, methods=["POST"]),
        Route("/feedback", experiments_api.feedback, methods=["POST"]),
        Route("/flows/{flow}/experiment", experiments_api.experiment, methods=["GET"]),
        Route("/api/v1/run/{flow}", langflow_api.run, methods=["POST"]),
        Route("/flows", views.flows, methods=["GET"]),
        Route("/versions", views.versions, methods=["GET"]),
        Route("/history", views.history, methods=["GET"]),
        Route("/healthz", views.healthz, methods=["GET"]),
        Route("/readyz", views.readyz, methods=["GET"]),
        Route("/metrics", views.metrics, methods=["GET"]),
        Route("/webhooks/github", receivers.github_webhook, methods=["POST"]),
        Route("/webhooks/gitlab", receivers.gitlab_webhook, methods=["POST"]),
        Route("/webhooks/gitea", receivers.gitea_webhook, methods=["POST"]),
        Route("/admin/reconcile", views.reconcile_now, methods=["POST"]),
        Route("/admin/abort", views.abort_canary, methods=["POST"]),
        Route("/admin/resume", views.resume_canary, methods=["POST"]),
        Route("/", _to_console, methods=["GET"]),
        *console.routes(),
        *langserve_api.routes(),
        Route("/openapi.json", _openapi_json, methods=["GET"]),
        Route("/docs", openapi.docs, methods=["GET"]),
        Route("/docs/{file}", openapi.docs, methods=["GET"]),
    ]
    documents = openapi.Documents()
    handlers = {
        RequestError: _request_error,
        GitOpsFlowError: _domain_error,
        HTTPException: _http_error,
        Exception: _unexpected,
    }
    middleware = [Middleware(RequestMiddleware, tracing=server.tracing)]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers, middleware=middleware)
    app.state.openapi = documents  # /openapi.json, made once per published routing table
    app.state.server = server
    app.state.deps = server.deps
    app.state.console = server.console
    app.state.tweaker = server.tweaker  # LangFlow's tweaks (tweaks.py)
    return app


async def _to_console(request: Request) -> Response:
    return RedirectResponse("/ui", 307)


async def _openapi_json(request: Request) -> Response:
    """The OpenAPI document lists the flows, as /flows does: with a read token set, it needs it too."""
    await views.require_reader(request)
    return await openapi.openapi_json(request)


async def _request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return error_response(exc.status, exc.code, str(exc), exc.headers or None)


async def _domain_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, Limited):  # its own wait, in whole seconds (at least one)
        wait = {"retry-after": str(max(1, math.ceil(exc.retry_after)))}
        return error_response(429, exc.code, str(exc), wait)
    if isinstance(exc, ProviderError):  # a model provider's failure outside a run's own handling: as a run's
        status, code, headers = failures.status_of(exc)
        return error_response(status, code, str(exc), headers or None)
    if isinstance(exc, StoreError):  # its text names a file or a host: the log has it, the client a plain sentence
        log.warning("state store failed on %s: %s", request.url.path, exc)
        wait = {"retry-after": str(RETRY_AFTER_SECONDS)}
        return error_response(503, "store-unavailable", views.STORE_UNAVAILABLE, wait)
    for kind, status, code in _STATUS:
        if isinstance(exc, kind):
            retry = (
                {"retry-after": str(RETRY_AFTER_SECONDS)}
                if isinstance(exc, GitOpsFlowError) and exc.retryable
                else None
            )
            return error_response(status, code, str(exc), retry)
    log.error("unhandled %s on %s", type(exc).__name__, request.url.path)  # its message may quote the request
    return error_response(500, "internal", "the server failed to answer this request")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    return error_response(exc.status_code, code, str(exc.detail), exc.headers)  # 405 says Allow


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unexpected %s on %s", type(exc).__name__, request.url.path, exc_info=exc)
    return error_response(500, "internal", "the server failed to answer this request")
