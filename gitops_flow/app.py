"""The application factory: create_app(settings) -> Starlette, with its lifespan and the error -> HTTP map."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from gitops_flow.components.knowledge import CorpusLimits, Library
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.config import Settings
from gitops_flow.console import routes as console
from gitops_flow.console.auth import REVOKE, Sessions
from gitops_flow.console.context import Console
from gitops_flow.delivery.attempts import Attempts
from gitops_flow.delivery.builds import VersionBuilder
from gitops_flow.delivery.choice import Chooser
from gitops_flow.delivery.guard import Guard
from gitops_flow.delivery.leader import Leadership, Worker
from gitops_flow.delivery.reconciler import Reconciler
from gitops_flow.delivery.routing_table import RoutingTable
from gitops_flow.delivery.source import GitSource
from gitops_flow.exceptions import (
    BadInput,
    Busy,
    ConfigError,
    GitOpsFlowError,
    Limited,
    LookupFailed,
    NoReadyVersion,
    NotServable,
    PinsDisabled,
    StoreError,
    TurnTooLarge,
    UnknownFlow,
)
from gitops_flow.githost.deploys import RefView
from gitops_flow.githost.feedback import Feedback
from gitops_flow.guardrails.backends import beside
from gitops_flow.guardrails.brake import Brake
from gitops_flow.guardrails.cache import MemoryCache, ResponseCache
from gitops_flow.guardrails.estimate import TokenEstimate
from gitops_flow.guardrails.gate import Gate
from gitops_flow.observability.metrics import Metrics, RouteRow
from gitops_flow.observability.telemetry.logs import WithheldMessages
from gitops_flow.observability.telemetry.middleware import RequestMiddleware
from gitops_flow.observability.telemetry.runs import Telemetry
from gitops_flow.observability.telemetry.tracing import Tracing
from gitops_flow.runtime.conversations import Conversations, TurnLimits
from gitops_flow.runtime.executor import Executor
from gitops_flow.runtime.tweaks import Tweaker
from gitops_flow.security.redaction import userinfo_secret
from gitops_flow.security.references import RedactSecrets, Scrubber
from gitops_flow.security.repo_credentials import GitAuth
from gitops_flow.server import endpoints, langflow_api, langserve_api, openapi, views
from gitops_flow.server import webhooks as receivers
from gitops_flow.server.edge import RequestError, error_response
from gitops_flow.server.endpoints import Deps
from gitops_flow.stores import open_store
from gitops_flow.stores.base import ConversationQuota, Record, StateStore
from gitops_flow.stores.embeddings import embeddings_beside

log = logging.getLogger("gitops_flow.server")
HEAP_SETTLE_DELAY = 1.0  # seconds after the last deploy of a burst
RETRY_AFTER_SECONDS = 2  # what a 503 of a retryable error (a busy rebuild, a store that is away) asks clients to wait
_LOGGERS = ("gitops_flow.server", "gitops_flow.reconcile", "uvicorn.error")  # whose records may quote a secret

# domain errors -> (status, code); the first matching class wins, so subclasses come first
_STATUS: tuple[tuple[type[GitOpsFlowError], int, str], ...] = (
    (TurnTooLarge, 413, "turn-too-large"),
    (BadInput, 422, "bad-input"),
    (PinsDisabled, 403, "pins-disabled"),
    (Busy, 503, "busy"),
    (NoReadyVersion, 503, "not-ready"),
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
) -> Starlette:
    """The runtime server. Parts not given are made from ``settings``; the lifespan opens them, starts the
    reconciler (which fetches and builds in the background, so the server answers /healthz at once) and closes
    them on shutdown. ``secrets`` is where `$env` references are read (the process environment, for `serve`): only
    the names the settings allow are kept, and every value kept, with the server's own secrets and ``private``
    (telemetry's credentials: OTLP headers, a LangSmith key), is scrubbed from problems, events and log records.
    ``tracing`` exports traces (None: none are made). ``worker`` is this process's place among the workers of one
    `serve --workers N` (None: the only one): then only the fetch leader fetches (leader.py), and /metrics sums every
    worker's counters from ``worker.metrics_dir``."""
    if source is None and settings.repo_url is None:
        raise ConfigError("the server needs a repository: --repo URL_OR_PATH or GITOPS_FLOW_REPO")
    policy = settings.secret_policy()
    readable = policy.select(secrets or {})
    scrubber = Scrubber({**readable, **_own_secrets(settings), **(private or {})})

    state = store or open_store(settings.state, data_dir=settings.data_dir)
    git = source or GitSource(
        str(settings.repo_url), settings.data_dir / "repo", timeout=settings.fetch_timeout, auth=_git_auth(settings)
    )
    components = registry or ComponentRegistry.configured(settings)
    counters, answers = beside(state, settings.state, cache_max_bytes=settings.cache_max_bytes)
    embeddings = embeddings_beside(state, settings.state)  # Retrievers' chunk vectors, shared as the state is

    quota = ConversationQuota(settings.max_conversations, settings.max_conversation_bytes)
    limits = TurnLimits(settings.max_turn_bytes, settings.max_turns, settings.history_ttl, quota)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        redact = RedactSecrets(scrubber)
        filters: list[logging.Filter] = [redact] if settings.log_request_text else [redact, WithheldMessages()]
        handlers = _log_handlers()
        for handler in handlers:
            for log_filter in filters:
                handler.addFilter(log_filter)
        for name in _LOGGERS:  # also seen by handlers added later
            for log_filter in filters:
                logging.getLogger(name).addFilter(log_filter)
        await state.open()
        await counters.open()
        builder = VersionBuilder(
            git,
            components,
            history=Conversations(state, limits),
            secrets=readable,
            policy=policy,
            scrubber=scrubber,
            fake_models=settings.fake_models,
            run_tests=settings.run_tests,
            build_timeout=settings.build_timeout,
            library=Library(vectors=embeddings, limits=CorpusLimits.of(settings)),
        )
        metrics = Metrics(
            live_versions=lambda: sum(1 for v in reconciler.versions if v.ready),
            routes=lambda: route_rows(reconciler.table),
            cached=(lambda: (len(answers), answers.bytes)) if isinstance(answers, MemoryCache) else None,
            multiprocess_dir=worker.metrics_dir if worker is not None else None,
        )
        builder.on_validated = metrics.validations.inc
        builder.library.on_embedded = metrics.embedded.inc
        leadership = Leadership(state, worker.group, worker.slot) if worker is not None else None
        feedback = Feedback.configured(
            settings,
            repo_url=git.url,
            view=lambda: RefView.of(settings.branch, reconciler.table.routing),
            origin={"server": settings.public_url, "repository": git.url, "branch": settings.branch},
        )
        reconciler = Reconciler(
            git,
            state,
            builder,
            branch=settings.branch,
            keep=settings.keep_versions,
            pins=settings.pins,
            rebuilds_kept=settings.rebuilds_kept,
            poll_interval=settings.poll_interval,
            on_event=_each(metrics.event, feedback.event),
            scrub=scrubber.json,
            leadership=leadership,
            on_fetch=metrics.fetches.inc,
        )
        told: set[asyncio.Task[None]] = set()

        def tell() -> None:  # the leader wakes the followers: they build what it recorded from the shared clone
            if leadership is not None and leadership.leading:
                head = reconciler.table.head
                task = asyncio.create_task(_tell(state, f"{replica} leader recorded {head.sha if head else '-'}"))
                told.add(task)
                task.add_done_callback(told.discard)

        reconciler.on_change = _after_change(reconciler, metrics, settle_heap=settings.freeze_heap, tell=tell)
        await reconciler.restore()
        guard = Guard(state)
        replica = uuid.uuid4().hex[:12]
        gate = Gate(
            counters,
            lease_ttl=settings.limit_lease_ttl,
            fail=settings.limits_fail,
            on_refused=metrics.refused,
            estimate=TokenEstimate(components, default_max_tokens=settings.budget_max_tokens),
        )
        attempts = Attempts(
            guard,
            metrics,
            lambda: reconciler.table.analysis,
            compare=settings.canary_fallback,
            verifications=settings.canary_verifications,
        )
        chooser = Chooser(reconciler, state, attempts, gate=gate)
        telemetry = Telemetry(
            tracing,
            on_usage=lambda flow, sha, ref, usage: metrics.spent(
                flow, sha, ref, usage.input_tokens, usage.output_tokens
            ),
            token_metrics=settings.token_metrics,
        )
        cache = ResponseCache(
            answers,
            components,
            max_entry_bytes=settings.cache_max_entry_bytes,
            max_entries=settings.cache_max_entries,
            namespace="fake" if settings.fake_models else "",
        )
        app.state.tweaker = Tweaker(builder.registry, policy, builder.build_spec)  # LangFlow's tweaks (tweaks.py)
        executor = Executor(settings.runtime, langsmith=settings.langsmith_tracing, telemetry=telemetry)
        app.state.deps = deps = Deps(
            settings,
            state,
            reconciler,
            guard,
            metrics,
            replica,
            chooser,
            attempts,
            feedback,
            telemetry=telemetry,
            cache=cache,
            executor=executor,
            brake=Brake(state, limit=settings.guess_limit, window=settings.guess_window),
        )
        app.state.console = Console(deps, source=git, registry=components, policy=policy, scrub=scrubber.json)
        feedback.start()
        tasks = [
            asyncio.create_task(app.state.console.feed.run(), name="console feed"),
            asyncio.create_task(reconciler.run(), name="reconciler"),
            asyncio.create_task(_guard(guard, reconciler, settings.analysis_interval), name="canary guard"),
            asyncio.create_task(
                _listen(state, reconciler, replica, app.state.console.sessions), name="replica wake-ups"
            ),
        ]
        if leadership is not None:
            tasks.append(asyncio.create_task(_lead(leadership, reconciler), name="fetch lease"))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await attempts.close()
            if leadership is not None:
                await leadership.release()
            await feedback.close()
            git.close()
            await counters.close()
            embeddings.close()
            await state.close()
            if tracing is not None:
                await asyncio.to_thread(tracing.shutdown)  # sends the spans still buffered
            for log_filter in filters:
                for name in _LOGGERS:
                    logging.getLogger(name).removeFilter(log_filter)
                for handler in handlers:
                    handler.removeFilter(log_filter)

    routes = [
        Route("/flows/{flow}/invoke", endpoints.invoke, methods=["POST"]),
        Route("/flows/{flow}/batch", endpoints.batch, methods=["POST"]),
        Route("/flows/{flow}/stream", endpoints.stream, methods=["POST"]),
        Route("/flows/{flow}/input_schema", endpoints.input_schema, methods=["GET"]),
        Route("/flows/{flow}/output_schema", endpoints.output_schema, methods=["GET"]),
        Route("/flows/{flow}/config_schema", endpoints.config_schema, methods=["GET"]),
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
    langserve_api.quiet_deprecations()
    documents = openapi.Documents()
    handlers = {
        RequestError: _request_error,
        GitOpsFlowError: _domain_error,
        HTTPException: _http_error,
        Exception: _unexpected,
    }
    middleware = [Middleware(RequestMiddleware, tracing=tracing)]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers, middleware=middleware)
    app.state.openapi = documents  # /openapi.json, made once per published routing table
    return app


def route_rows(table: RoutingTable) -> list[RouteRow]:
    """Every ref of every flow's route with its share of the flow's new traffic now (the routes' gauges)."""
    rows = []
    for flow, route in sorted(table.routes.items()):
        shares: dict[int, float] = {}
        below = 0.0
        for bound, target in route.live:
            shares[id(target)] = bound - below
            below = bound
        shown = {id(t) for t in route.targets}
        extra = [t for _, t in route.live if id(t) not in shown]  # the branch head, when no ref of the route serves
        for target in [*route.targets, *extra]:
            share = shares.get(id(target), 0.0)
            rows.append(RouteRow(flow, route.name, target.ref, target.state, share, target.guard is not None))
    return rows


async def _to_console(request: Request) -> Response:
    return RedirectResponse("/ui", 307)


def _git_auth(settings: Settings) -> GitAuth:
    return GitAuth(
        token=settings.git_token.get_secret_value() if settings.git_token is not None else None,
        token_file=settings.git_token_file,
        token_user=settings.git_token_user,
        ssh_key_file=settings.git_ssh_key_file,
        known_hosts=settings.git_known_hosts,
    )


async def _openapi_json(request: Request) -> Response:
    """The OpenAPI document lists the flows, as /flows does: with a read token set, it needs it too."""
    await views.require_reader(request)
    return await openapi.openapi_json(request)


def _own_secrets(settings: Settings) -> dict[str, str]:
    """The server's own credentials, scrubbed like the flows' secrets."""
    own = {
        "GITOPS_FLOW_ADMIN_TOKEN": settings.admin_token,
        "GITOPS_FLOW_READ_TOKEN": settings.read_token,
        "GITOPS_FLOW_WEBHOOK_SECRET": settings.webhook_secret,
        "GITOPS_FLOW_GITLAB_WEBHOOK_TOKEN": settings.gitlab_webhook_token,
        "GITOPS_FLOW_GITEA_WEBHOOK_SECRET": settings.gitea_webhook_secret,
        "GITOPS_FLOW_GITHUB_TOKEN": settings.github_token,
        "GITOPS_FLOW_GIT_TOKEN": settings.git_token,
    }
    for sink in settings.notifications:  # a Slack webhook's URL is its credential
        own[f"GITOPS_FLOW_NOTIFY:{sink.name}:url"] = sink.url
        own[f"GITOPS_FLOW_NOTIFY:{sink.name}:secret"] = sink.secret
    found = {name: value.get_secret_value() for name, value in own.items() if value is not None}
    for name, path in (
        ("GITOPS_FLOW_GIT_TOKEN_FILE", settings.git_token_file),
        ("GITOPS_FLOW_GITHUB_TOKEN_FILE", settings.github_token_file),
    ):
        token = _read_quietly(path)
        if token:  # the token as it is at start; a rotated one never reaches a message either (repo_credentials.py)
            found[name] = token
    repo = userinfo_secret(settings.repo_url or "")  # never shown anyway: scrubbed should a library log the URL
    return {**found, "GITOPS_FLOW_REPO": repo} if repo else found


def _each(*handlers: Callable[[Record], None]) -> Callable[[Record], None]:
    """One event handler that calls each of ``handlers`` in turn."""

    def handle(event: Record) -> None:
        for handler in handlers:
            handler(event)

    return handle


def _read_quietly(path: Path | None) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None if path is not None else None
    except (OSError, UnicodeDecodeError):
        return None  # the fetch (or the status writer) says why, once it needs the file


def _log_handlers() -> list[logging.Handler]:
    """Every handler configured now (the root's, uvicorn's, ...): a filter on a handler sees the records of every
    logger that reaches it, where a logger's own filter sees only the records logged on that very logger."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    found = [h for logger in loggers if isinstance(logger, logging.Logger) for h in logger.handlers]
    return list({id(h): h for h in found}.values())


async def _guard(guard: Guard, reconciler: Reconciler, interval: float) -> None:
    """The canary guard's tick: share this replica's counts, judge every canary, publish the aborts."""
    while True:
        await asyncio.sleep(interval)
        try:
            aborted, known = await guard.tick(reconciler.table)
            await reconciler.stop_canaries(aborted, known)
        except StoreError as exc:
            log.warning("canary guard: %s", exc)
        except Exception:  # the guard must outlive any one bad tick; the table keeps serving meanwhile
            log.exception("canary guard failed")


async def _listen(store: StateStore, reconciler: Reconciler, replica: str, sessions: Sessions) -> None:
    """Wake the fetcher when another replica or worker received a webhook (a missed message only waits for the next
    poll), and refuse the console sessions another one logged out."""
    async for message in store.listen():
        sender, _, trigger = message.partition(" ")
        if sender == replica:
            continue
        if trigger.startswith(REVOKE + " "):
            nonce, _, until = trigger.removeprefix(REVOKE + " ").partition(" ")
            with contextlib.suppress(ValueError):
                sessions.revoke_nonce(nonce, float(until))
            continue
        reconciler.request(f"replica {sender}: {trigger}")


async def _lead(leadership: Leadership, reconciler: Reconciler) -> None:
    """Hold the fetch lease among this server's workers; a worker that becomes the leader fetches at once."""
    while True:
        if await leadership.renew():
            reconciler.request("fetch leader")
        await asyncio.sleep(leadership.interval)


async def _tell(store: StateStore, message: str) -> None:
    try:
        await store.publish(message)
    except StoreError as exc:
        log.warning("could not wake the other workers: %s", exc)


def _after_change(
    reconciler: Reconciler, metrics: Metrics, *, settle_heap: bool, tell: Callable[[], None] = lambda: None
) -> Callable[[], None]:
    """What is left to do once a deploy is live: drop the metrics of retired versions, and settle the heap a moment
    later, once for a burst of deploys, so the collection's pause does not hold up the new version's first
    requests."""
    pending: list[asyncio.TimerHandle] = []

    def changed() -> None:
        tell()
        metrics.prune({v.sha for v in reconciler.versions if v.ready})
        if settle_heap:
            for handle in pending:
                handle.cancel()
            pending[:] = [asyncio.get_running_loop().call_later(HEAP_SETTLE_DELAY, _settle_heap)]

    return changed


def _settle_heap() -> None:
    """After a deploy: collect once, then freeze what is left (imports, the built flows) out of the garbage
    collector's sight. Under load a full collection otherwise walks that whole heap every few hundred requests
    (what that cost is in docs/benchmarks.md); frozen objects are still freed by reference counting, and the next
    deploy unfreezes them, so a retired version's cycles are collected then."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


async def _request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return error_response(exc.status, exc.code, str(exc), exc.headers or None)


async def _domain_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, Limited):  # its own wait, in whole seconds (at least one)
        wait = {"retry-after": str(max(1, math.ceil(exc.retry_after)))}
        return error_response(429, exc.code, str(exc), wait)
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
