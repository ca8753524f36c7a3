"""Prometheus metrics of one server: flow runs, deploys, live versions and webhook deliveries; one registry per app."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST
# seconds; a fake model answers in a millisecond, a real one in one to thirty seconds
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_EVENTS = (
    "deployed",
    "rolled-back",
    "failed",
    "aborted",
    "resumed",
    "yanked",
    "tag-moved",
    "retired",
    "rewritten",
    "ref-refused",
)


class Metrics:
    """Every metric the server exports, in a registry of its own (no process-wide default registry)."""

    def __init__(self, live_versions: Callable[[], float] = lambda: 0.0) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
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
        live = Gauge("gitops_flow_live_versions", "Versions built and held in memory.", registry=self.registry)
        live.set_function(live_versions)
        for kind in _EVENTS:  # every kind exported from the start, at 0, so alerts on rate() see a series
            self.events.labels(kind)
        self._children: dict[tuple[str, str, str | None], tuple[Any, Any, Any]] = {}

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

    def prune(self, live: Set[str]) -> None:
        """Drop the series of versions no longer held (retired): each deploy would otherwise add series forever."""
        for flow, sha, ref in [key for key in self._children if key[1] not in live]:
            labels = (flow, sha[:12], ref or "")
            self.requests.remove(*labels, "ok")
            self.requests.remove(*labels, "error")
            self.latency.remove(*labels)
            del self._children[(flow, sha, ref)]

    def event(self, record: Mapping[str, Any]) -> None:
        self.events.labels(str(record.get("event", "unknown"))).inc()

    def delivery(self, event: str, outcome: str) -> None:
        self.deliveries.labels(event, outcome).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
