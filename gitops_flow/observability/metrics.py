"""Prometheus metrics of one server: flow runs, deploys, live versions, webhook deliveries, the routes and their
canaries, limits, tokens and the response cache; one registry per app. docs/server.md lists them with their labels.

With several workers (`serve --workers N`) prometheus_client runs in its multiprocess mode (the supervisor sets
PROMETHEUS_MULTIPROC_DIR before it starts them): each worker's counters and histograms live in files of that folder,
and a scrape of any worker sums every worker's, as one process would count them. The gauges read at each scrape
(live versions, routes, canaries) are computed by the worker that answers: every worker has the same routes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Set
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from gitops_flow.observability.recent import RecentTraffic

CONTENT_TYPE = CONTENT_TYPE_LATEST
# seconds; a fake model answers in a millisecond, a real one in one to thirty seconds
MODEL_NAME_MAX = 128  # characters of a model name kept for the report's cost
MODELS_PER_ARM = 20  # models an arm's tokens are told apart by; the rest count together
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_EVENTS = (
    "deployed",
    "rolled-back",
    "failed",
    "aborted",
    "resumed",
    "stepped",
    "yanked",
    "tag-moved",
    "retired",
    "rewritten",
    "ref-refused",
)


@dataclass(frozen=True, slots=True)
class RouteRow:
    """One ref of one flow's route, as the routing table has it now (plain data: this module knows no table)."""

    flow: str
    route: str
    ref: str
    state: str  # live, aborted, failed, yanked, missing
    share: float  # of the flow's new traffic, 0 to 1
    canary: bool  # guarded by the canary analysis


class _Routes(Collector):
    """The routes' gauges, read from the table at each scrape (nothing is counted on the request path)."""

    def __init__(self, rows: Callable[[], Iterable[RouteRow]]) -> None:
        self.rows = rows

    def collect(self) -> Iterator[Metric]:
        share = GaugeMetricFamily(
            "gitops_flow_route_weight",
            "Share of a flow's new traffic (0 to 1) each ref of its route gets now, by flow, route, ref and state.",
            labels=["flow", "route", "ref", "state"],
        )
        aborted = GaugeMetricFamily(
            "gitops_flow_canary_aborted",
            "1 while the canary guard (or an operator) keeps a flow's canary ref aborted, else 0; by flow and ref.",
            labels=["flow", "ref"],
        )
        for row in self.rows():
            share.add_metric([row.flow, row.route, row.ref, row.state], row.share)
            if row.canary:
                aborted.add_metric([row.flow, row.ref], 1.0 if row.state == "aborted" else 0.0)
        yield share
        yield aborted

    def describe(self) -> Iterator[Metric]:
        return iter(())  # collected anew at each scrape


class _Readings(Collector):
    """Gauges read from a function at each scrape, by the process that answers (no file in multiprocess mode)."""

    def __init__(self, readings: Iterable[tuple[str, str, Callable[[], float]]]) -> None:
        self.readings = list(readings)

    def collect(self) -> Iterator[Metric]:
        for name, text, read in self.readings:
            yield GaugeMetricFamily(name, text, value=read())

    def describe(self) -> Iterator[Metric]:
        return iter(())


def worker_gone(folder: str, pid: int) -> None:
    """What a supervisor does when a worker exits in multiprocess mode: drop the files of its live gauges."""
    mark_process_dead(pid, folder)  # type: ignore[no-untyped-call]


class Metrics:
    """Every metric the server exports, in a registry of its own (no process-wide default registry), and the window
    of recent traffic per version that the console shows (recent.py)."""

    def __init__(
        self,
        live_versions: Callable[[], float] = lambda: 0.0,
        recent: RecentTraffic | None = None,
        routes: Callable[[], Iterable[RouteRow]] = lambda: (),
        cached: Callable[[], tuple[float, float]] | None = None,
        multiprocess_dir: str | None = None,
    ) -> None:
        self.recent = recent or RecentTraffic()
        self.registry = CollectorRegistry(auto_describe=True)
        # what a scrape renders: this registry, or every worker's files and this worker's readings
        self.exported = self.registry
        if multiprocess_dir is not None:
            self.exported = CollectorRegistry(auto_describe=True)
            MultiProcessCollector(self.exported, path=multiprocess_dir)  # type: ignore[no-untyped-call]
        self.requests = Counter(
            "gitops_flow_requests",
            "Flow runs, by flow, version (short sha), ref and outcome (ok or error).",
            ["flow", "version", "ref", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gitops_flow_request_duration_seconds",
            "Time a flow run took, by flow, version and ref.",
            ["flow", "version", "ref"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter(
            "gitops_flow_deploy_events",
            "Deploy events this server recorded, by kind (deployed, failed, aborted, rolled-back, tag-moved, …).",
            ["event"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "gitops_flow_webhook_deliveries",
            "GitHub webhook deliveries, by event and outcome (fetch, pong, ignored, duplicate, refused).",
            ["event", "outcome"],
            registry=self.registry,
        )
        readings = [("gitops_flow_live_versions", "Versions built and held in memory.", live_versions)]
        self.fetches = Counter(
            "gitops_flow_fetches",
            "Fetches from the flow repository's remote (with several workers, only the fetch leader's).",
            registry=self.registry,
        )
        self.validations = Counter(
            "gitops_flow_flow_validations",
            "Flow files validated and tested, each new file content once (the fetch leader's, with several workers).",
            registry=self.registry,
        )
        self.embedded = Counter(
            "gitops_flow_chunks_embedded",
            "Document chunks a Retriever's build embedded (a chunk found in the embedding store is not counted).",
            registry=self.registry,
        )
        for kind in _EVENTS:  # every kind exported from the start, at 0, so alerts on rate() see a series
            self.events.labels(kind)
        self._children: dict[tuple[str, str, str | None], tuple[Any, Any, Any]] = {}
        self.exported.register(_Routes(routes))
        self.limited = Counter(
            "gitops_flow_limited_requests",
            "Requests a limit refused (429), by flow, limit (requests, concurrent, tokens) and scope (flow, user,"
            " ref).",
            ["flow", "limit", "scope"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "gitops_flow_tokens",
            "Tokens the models reported, by flow, version, ref and direction (input, output); counted for runs that"
            " are observed (tracing on, a token budget, or GITOPS_FLOW_TOKEN_METRICS).",
            ["flow", "version", "ref", "direction"],
            registry=self.registry,
        )
        self.cache = Counter(
            "gitops_flow_cache_lookups",
            "Lookups of the response cache, by flow, version and result (hit, miss).",
            ["flow", "version", "result"],
            registry=self.registry,
        )
        self.failures = Counter(
            "gitops_flow_failed_runs",
            "Failed flow runs, by flow, version (short sha), ref and cause: a model provider's failure "
            "(ProviderUnavailable, ProviderTimeout, CircuitOpen, ProviderRateLimited, ProviderRejected) or the "
            "exception's class.",
            ["flow", "version", "ref", "cause"],
            registry=self.registry,
        )
        self.shadow_runs = Counter(
            "gitops_flow_shadow_runs",
            "Runs of a shadow's candidate (answers never sent), by flow, candidate ref and outcome (scored, unscored,"
            " failed).",
            ["flow", "ref", "outcome"],
            registry=self.registry,
        )
        self.shadow_dropped = Counter(
            "gitops_flow_shadow_dropped",
            "Shadow runs drawn but not run, by flow, candidate ref and reason (queue: full; rate, tokens: the"
            " shadow's budget; judge: no judge model).",
            ["flow", "ref", "reason"],
            registry=self.registry,
        )
        self.shadow_scores = Histogram(
            "gitops_flow_shadow_score",
            "Scores of shadow runs (0 to 1: the candidate's answer against the primary's), by flow, candidate ref and"
            " scorer.",
            ["flow", "ref", "scorer"],
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
            registry=self.registry,
        )
        self._failure_series: set[tuple[str, str, str, str]] = set()
        self._versioned: set[tuple[str, str, str]] = set()  # (metric, flow, sha) series to prune with versions
        self._token_series: set[tuple[str, str, str | None]] = set()
        # (flow, sha, ref) -> model -> [input, output] tokens since this process began serving it (the report's cost)
        self.arm_tokens: dict[tuple[str, str, str | None], dict[str, list[int]]] = {}
        if cached is not None:
            readings.append(
                ("gitops_flow_cache_entries", "Answers in this process's response cache.", lambda: cached()[0])
            )
            readings.append(
                ("gitops_flow_cache_bytes", "Bytes of answers in this process's response cache.", lambda: cached()[1])
            )
        self.exported.register(_Readings(readings))

    def observe(self, flow: str, sha: str, ref: str | None, ok: bool, seconds: float) -> None:
        """Count one flow run; label children are cached, so this costs a few microseconds on the request path."""
        key = (flow, sha, ref)
        children = self._children.get(key)
        if children is None:
            labels = (flow, sha[:12], ref or "")
            children = (
                self.requests.labels(*labels, "ok"),
                self.requests.labels(*labels, "error"),
                self.latency.labels(*labels),
            )
            self._children[key] = children
        (children[0] if ok else children[1]).inc()
        children[2].observe(seconds)
        self.recent.add(flow, sha, ref, ok, seconds)

    def prune(self, live: Set[str]) -> None:
        """Drop the series of versions no longer held (retired): each deploy would otherwise add series forever."""
        self.recent.prune(live)
        for flow, sha, ref in [key for key in self._children if key[1] not in live]:
            labels = (flow, sha[:12], ref or "")
            self.requests.remove(*labels, "ok")
            self.requests.remove(*labels, "error")
            self.latency.remove(*labels)
            del self._children[(flow, sha, ref)]
        for entry in [entry for entry in self._versioned if entry[2] not in live]:
            self._versioned.discard(entry)
            kind, flow, sha = entry
            if kind == "cache":
                for result in ("hit", "miss"):
                    self.cache.remove(flow, sha[:12], result)
        for series in [series for series in self._failure_series if series[1] not in live]:
            self._failure_series.discard(series)
            flow, sha, ref, kind = series
            self.failures.remove(flow, sha[:12], ref, kind)
        for arm in [arm for arm in self.arm_tokens if arm[1] not in live]:
            del self.arm_tokens[arm]
        for key in [key for key in self._token_series if key[1] not in live]:
            self._token_series.discard(key)
            flow, sha, ref = key
            for direction in ("input", "output"):
                self.tokens.remove(flow, sha[:12], ref or "", direction)

    def failed(self, flow: str, sha: str, ref: str | None, cause: str) -> None:
        """A failed run's cause (its first word: a class name, so the series stay few)."""
        kind = cause.split(" ", 1)[0][:64] or "unknown"
        self._failure_series.add((flow, sha, ref or "", kind))
        self.failures.labels(flow, sha[:12], ref or "", kind).inc()

    def refused(self, flow: str, limit: str, scope: str) -> None:
        """A request a limit refused."""
        self.limited.labels(flow, limit, scope).inc()

    def spent(
        self, flow: str, sha: str, ref: str | None, input_tokens: int, output_tokens: int, model: str | None = None
    ) -> None:
        """Tokens a run's models reported; ``model`` the model's name, when the call named it (the report's cost)."""
        key = (flow, sha, ref)
        by_model = self.arm_tokens.setdefault(key, {})
        name = (model or "")[:MODEL_NAME_MAX]
        if name not in by_model and len(by_model) >= MODELS_PER_ARM:
            name = "(other models)"
        tally = by_model.setdefault(name, [0, 0])
        tally[0] += input_tokens
        tally[1] += output_tokens
        if key not in self._token_series:
            self._token_series.add(key)
            for direction in ("input", "output"):
                self.tokens.labels(flow, sha[:12], ref or "", direction)
        if input_tokens:
            self.tokens.labels(flow, sha[:12], ref or "", "input").inc(input_tokens)
        if output_tokens:
            self.tokens.labels(flow, sha[:12], ref or "", "output").inc(output_tokens)

    def looked_up(self, flow: str, sha: str, hit: bool) -> None:
        """A lookup of the response cache."""
        if ("cache", flow, sha) not in self._versioned:
            self._versioned.add(("cache", flow, sha))
            for result in ("hit", "miss"):
                self.cache.labels(flow, sha[:12], result)
        self.cache.labels(flow, sha[:12], "hit" if hit else "miss").inc()

    def event(self, record: Mapping[str, Any]) -> None:
        self.events.labels(str(record.get("event", "unknown"))).inc()

    def delivery(self, event: str, outcome: str) -> None:
        self.deliveries.labels(event, outcome).inc()

    def render(self) -> bytes:
        return generate_latest(self.exported)
