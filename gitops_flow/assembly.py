"""Server: one server's object graph, made from the settings in plain constructors, then started and stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from gitops_flow.components.breaker import Breakers
from gitops_flow.components.indexes import IndexStore, MemoryIndexes
from gitops_flow.components.knowledge import CorpusLimits, Library
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.config import Settings
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
from gitops_flow.exceptions import ConfigError, StoreError
from gitops_flow.experiments.feedback_gate import FeedbackJudge
from gitops_flow.experiments.ledger import RunBounds, RunLedger
from gitops_flow.experiments.report_cache import ReportCache
from gitops_flow.experiments.scores import Scores
from gitops_flow.experiments.shadow import Shadows
from gitops_flow.githost.deploys import RefView
from gitops_flow.githost.feedback import Feedback
from gitops_flow.guardrails.backends import beside
from gitops_flow.guardrails.brake import Brake
from gitops_flow.guardrails.cache import MemoryCache, ResponseCache
from gitops_flow.guardrails.estimate import TokenEstimate
from gitops_flow.guardrails.gate import Gate
from gitops_flow.observability.metrics import Metrics, RouteRow
from gitops_flow.observability.telemetry.runs import Telemetry
from gitops_flow.observability.telemetry.tracing import Tracing
from gitops_flow.runtime.conversations import Conversations, TurnLimits
from gitops_flow.runtime.executor import Executor
from gitops_flow.runtime.judge import Judge
from gitops_flow.runtime.sandbox import TestSandbox
from gitops_flow.runtime.tweaks import Tweaker
from gitops_flow.security.redaction import userinfo_secret
from gitops_flow.security.references import Scrubber
from gitops_flow.security.repo_credentials import GitAuth
from gitops_flow.server.endpoints import Deps
from gitops_flow.stores import open_store
from gitops_flow.stores.base import ConversationQuota, MessageBus, ScoreBounds, StateStore
from gitops_flow.stores.embeddings import embeddings_beside
from gitops_flow.stores.events import DeployEvent

log = logging.getLogger("gitops_flow.server")
HEAP_SETTLE_DELAY = 1.0  # seconds after the last deploy of a burst


class Server:
    """Every part of one server, made from ``settings`` (parts not given) without I/O, so a test can build one and
    look at it; ``start()`` opens the stores and starts the background tasks (the reconciler fetches and builds in
    the background, so the server answers /healthz at once), ``stop()`` stops and closes them, in reverse.

    ``secrets`` is where `$env` references are read (the process environment, for `serve`): only the names the
    settings allow are kept, and every value kept, with the server's own secrets and ``private`` (telemetry's
    credentials: OTLP headers, a LangSmith key), is in ``scrubber``, which takes them out of problems and events
    (and of log records, once the process entry point puts it on the logs). ``tracing`` exports traces (None: none
    are made). ``worker`` is this process's place among the workers of one `serve --workers N` (None: the only
    one): then only the fetch leader fetches (leader.py), and /metrics sums every worker's counters from
    ``worker.metrics_dir``. ``settle_heap`` is called a moment after each burst of deploys (the entry point passes
    a process-wide garbage-collector freeze; None: nothing is done). Raises ConfigError for a server without a
    repository, or a part the settings describe wrongly.

    Nothing here changes the process: no logging, warnings or garbage-collector state, no environment variable.
    """

    def __init__(
        self,
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
    ) -> None:
        if source is None and settings.repo_url is None:
            raise ConfigError("the server needs a repository: --repo URL_OR_PATH or GITOPS_FLOW_REPO")
        self.settings = settings
        self.tracing = tracing
        self.policy = policy = settings.secret_policy()
        readable = policy.select(secrets or {})
        self.scrubber = scrubber = Scrubber({**readable, **_own_secrets(settings), **(private or {})})
        self.store = state = store or open_store(settings.state, data_dir=settings.data_dir)
        self.source = git = source or git_source(settings)
        self.registry = components = registry or ComponentRegistry.configured(settings)
        counters, answers = beside(state, settings.state, cache_max_bytes=settings.cache_max_bytes)
        self.counters = counters
        # Retrievers' chunk vectors, shared; and where their indexes live (the operator's choice, never a flow's)
        self.embeddings = embeddings = embeddings_beside(
            state, settings.state, max_entries=settings.embeddings_max_entries
        )
        self.indexes = indexes = index_store(settings)
        quota = ConversationQuota(settings.max_conversations, settings.max_conversation_bytes)
        limits = TurnLimits(settings.max_turn_bytes, settings.max_turns, settings.history_ttl, quota)
        # this process's name in the messages workers and replicas send each other: a worker names its server's
        # group and its slot, so the others tell a worker of their own server from another server (a replica)
        self.replica = f"{worker.group}.{worker.slot}" if worker is not None else uuid.uuid4().hex[:12]
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
            sandbox=TestSandbox(
                components,
                budget=settings.test_budget,
                memory_mb=settings.test_memory_mb,
                processes=settings.test_processes,
            ),
            breakers=Breakers(
                state,
                failures=settings.provider_breaker_failures,
                window=settings.provider_breaker_window,
                cooldown=settings.provider_breaker_cooldown,
            ),
            library=Library(vectors=embeddings, limits=CorpusLimits.of(settings), indexes=indexes),
        )
        self.builder = builder
        self.metrics = metrics = Metrics(
            live_versions=lambda: sum(1 for v in reconciler.versions if v.ready),
            routes=lambda: route_rows(reconciler.table),
            cached=(lambda: (len(answers), answers.bytes)) if isinstance(answers, MemoryCache) else None,
            multiprocess_dir=worker.metrics_dir if worker is not None else None,
        )
        builder.on_validated = metrics.validations.inc
        builder.library.on_embedded = metrics.embedded.inc
        self.leadership = Leadership(state, worker.group, worker.slot) if worker is not None else None
        self.feedback = feedback = Feedback.configured(
            settings,
            repo_url=git.url,
            view=lambda: RefView.of(settings.branch, reconciler.table.routing),
            origin={"server": settings.public_url, "repository": git.url, "branch": settings.branch},
        )
        self.reconciler = reconciler = Reconciler(
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
            leadership=self.leadership,
            on_fetch=metrics.fetches.inc,
        )
        self._told: set[asyncio.Task[None]] = set()
        reconciler.on_change = _after_change(reconciler, metrics, settle_heap=settle_heap, tell=self._tell_followers)
        self.guard = guard = Guard(state, judge=FeedbackJudge(state))
        gate = Gate(
            counters,
            lease_ttl=settings.limit_lease_ttl,
            fail=settings.limits_fail,
            on_refused=metrics.refused,
            estimate=TokenEstimate(components, default_max_tokens=settings.budget_max_tokens),
        )
        self.attempts = attempts = Attempts(
            guard,
            metrics,
            lambda: reconciler.table.analysis,
            compare=settings.canary_fallback,
            verifications=settings.canary_verifications,
        )
        telemetry = Telemetry(
            tracing,
            on_usage=lambda flow, sha, ref, usage, model: metrics.spent(
                flow, sha, ref, usage.input_tokens, usage.output_tokens, model
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
        self.tweaker = Tweaker(builder.registry, policy, builder.build_spec)  # LangFlow's tweaks (tweaks.py)
        self.ledger = ledger = RunLedger(state, RunBounds(settings.feedback_window, settings.runs_kept()))
        self.scores = scores = Scores(
            ledger,
            state,
            ScoreBounds(settings.feedback_retention, settings.feedback_max_keys, settings.feedback_max_scores),
            counters=counters,
            rate=settings.feedback_rate,
        )
        executor = Executor(settings.runtime, langsmith=settings.langsmith_tracing, telemetry=telemetry)

        def judge() -> Judge:  # the operator's judge of shadows (and of `gitops-flow eval`), made at first use
            return Judge.configured(
                settings.eval_judge_model,
                readable,
                components,
                base_url=settings.eval_judge_base_url,
                calls=0,  # a shadow's judge is held to the shadow's budget, not to eval's count of calls
                policy=policy,
            )

        self.shadows = shadows = Shadows(
            executor,
            state,
            counters,
            metrics,
            ScoreBounds(settings.feedback_retention, settings.feedback_max_keys, settings.feedback_max_scores),
            judge=judge,
            queue=settings.shadow_queue,
            concurrency=settings.shadow_concurrency,
            timeout=settings.shadow_timeout,
        )
        self.deps = deps = Deps(
            settings,
            state,
            reconciler,
            guard,
            metrics,
            self.replica,
            Chooser(reconciler, state, attempts, gate=gate),
            attempts,
            feedback,
            telemetry=telemetry,
            cache=cache,
            executor=executor,
            brake=Brake(state, limit=settings.guess_limit, window=settings.guess_window),
            ledger=ledger,
            scores=scores,
            reports=ReportCache(settings.experiment_cache),
            shadows=shadows,
        )
        self.console = Console(deps, source=git, registry=components, policy=policy, scrub=scrubber.json)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Open the stores, take up the versions the store knows, and start the background tasks."""
        await self.store.open()
        await self.counters.open()
        await self.reconciler.restore()
        self.feedback.start()
        reconciler = self.reconciler
        self._tasks = [
            asyncio.create_task(self.console.feed.run(), name="console feed"),
            asyncio.create_task(self.console.traffic.run(), name="shared traffic"),
            asyncio.create_task(reconciler.run(), name="reconciler"),
            asyncio.create_task(self.ledger.run(), name="answered runs"),
            asyncio.create_task(self.shadows.run(), name="shadow runs"),
            asyncio.create_task(_guard(self.guard, reconciler, self.settings.analysis_interval), name="canary guard"),
            asyncio.create_task(
                _listen(self.store, reconciler, self.replica, self.console.sessions), name="replica wake-ups"
            ),
        ]
        if self.leadership is not None:
            self._tasks.append(asyncio.create_task(_lead(self.leadership, reconciler), name="fetch lease"))

    async def stop(self) -> None:
        """Stop the background tasks, then close every part that holds a resource."""
        await self.scores.close()  # the scores queued are kept, and their runs' batch with the ledger's last
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.attempts.close()
        if self.leadership is not None:
            await self.leadership.release()
        self.builder.close()  # kills running tests' processes: no pool thread outlives the server
        await self.feedback.close()
        self.source.close()
        await self.counters.close()
        self.embeddings.close()
        self.indexes.close()
        await self.store.close()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # sends the spans still buffered

    def _tell_followers(self) -> None:
        """The leader wakes the followers: they build what it recorded from the shared clone."""
        if self.leadership is not None and self.leadership.leading:
            head = self.reconciler.table.head
            message = f"{self.replica} leader recorded {head.sha if head else '-'}"
            task = asyncio.create_task(_tell(self.store, message))
            self._told.add(task)
            task.add_done_callback(self._told.discard)


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


def git_source(settings: Settings) -> GitSource:
    """The clone of the settings' repository in their data folder, with their credentials (as the server fetches it);
    raises ConfigError for a credential that cannot be used."""
    if settings.repo_url is None:
        raise ConfigError("the server needs a repository: --repo URL_OR_PATH or GITOPS_FLOW_REPO")
    return GitSource(
        str(settings.repo_url), settings.data_dir / "repo", timeout=settings.fetch_timeout, auth=git_auth(settings)
    )


def git_auth(settings: Settings) -> GitAuth:
    """The credentials the server fetches the repository with, from ``settings``."""
    return GitAuth(
        token=settings.git_token.get_secret_value() if settings.git_token is not None else None,
        token_file=settings.git_token_file,
        token_user=settings.git_token_user,
        ssh_key_file=settings.git_ssh_key_file,
        known_hosts=settings.git_known_hosts,
    )


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


def _each(*handlers: Callable[[DeployEvent], None]) -> Callable[[DeployEvent], None]:
    """One event handler that calls each of ``handlers`` in turn."""

    def handle(event: DeployEvent) -> None:
        for handler in handlers:
            handler(event)

    return handle


def _read_quietly(path: Path | None) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None if path is not None else None
    except (OSError, UnicodeDecodeError):
        return None  # the fetch (or the status writer) says why, once it needs the file


async def _guard(guard: Guard, reconciler: Reconciler, interval: float) -> None:
    """The canary guard's tick: share this replica's counts, judge every canary, publish the aborts, and take the
    next steps of the progressive canaries that hold."""
    while True:
        await asyncio.sleep(interval)
        try:
            aborted, known = await guard.tick(reconciler.table)
            await reconciler.stop_canaries(aborted, known)
            await reconciler.advance(guard.holding)
        except StoreError as exc:
            log.warning("canary guard: %s", exc)
        except Exception:  # the guard must outlive any one bad tick; the table keeps serving meanwhile
            log.exception("canary guard failed")


async def _listen(store: MessageBus, reconciler: Reconciler, replica: str, sessions: Sessions) -> None:
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
        reconciler.request(f"{sender_name(sender, replica)}: {trigger}")


async def _lead(leadership: Leadership, reconciler: Reconciler) -> None:
    """Hold the fetch lease among this server's workers; a worker that becomes the leader fetches at once."""
    while True:
        if await leadership.renew():
            reconciler.request("fetch leader")
        await asyncio.sleep(leadership.interval)


async def _tell(store: MessageBus, message: str) -> None:
    try:
        await store.publish(message)
    except StoreError as exc:
        log.warning("could not wake the other workers: %s", exc)


def _after_change(
    reconciler: Reconciler,
    metrics: Metrics,
    *,
    settle_heap: Callable[[], None] | None,
    tell: Callable[[], None] = lambda: None,
) -> Callable[[], None]:
    """What is left to do once a deploy is live: drop the metrics of retired versions, and settle the heap a moment
    later, once for a burst of deploys, so the collection's pause does not hold up the new version's first
    requests."""
    pending: list[asyncio.TimerHandle] = []

    def changed() -> None:
        tell()
        metrics.prune({v.sha for v in reconciler.versions if v.ready})
        if settle_heap is not None:
            for handle in pending:
                handle.cancel()
            pending[:] = [asyncio.get_running_loop().call_later(HEAP_SETTLE_DELAY, settle_heap)]

    return changed


def sender_name(sender: str, me: str) -> str:
    """Who sent a message, as the history's trigger says it: ``worker 2`` (another worker of this server, named by
    its group and slot), else ``replica <id>`` (another server sharing the state store)."""
    group, dot, slot = sender.partition(".")
    if dot and me.partition(".")[0] == group:
        return f"worker {slot}"
    return f"replica {sender}"


def index_store(settings: Settings) -> IndexStore:
    """Where this process's Retrievers keep their indexes (GITOPS_FLOW_VECTOR_STORE): in memory, or in a sqlite-vec
    file of its own under ``settings.vector_folder()``. ConfigError when sqlite-vec's extra is not installed."""
    if settings.vector_store == "sqlite-vec":
        from gitops_flow.stores.sqlitevec import SqliteVecIndexes, missing_package

        problem = missing_package()
        if problem is not None:
            raise ConfigError(problem)
        return SqliteVecIndexes(settings.vector_folder())
    return MemoryIndexes()
