"""The canary guard: windows of requests, errors and latency per canary, shared through the state store; it aborts a
canary whose window breaks the thresholds of the routing file's ``analysis`` (Flagger's analysis, without a mesh).

A canary is one flow on one ref (traffic.analysis_key). Failures and slowness a client causes on every version are
not counted against it (a failed or slow canary request is judged against the primary on the same input, and
counts only where the primary did better; see attempts.py), and a count of failures (``max_failures``) aborts it
however much good traffic dilutes the rate.
An operator's resume restarts its window at the moment of the resume.

Each process counts its canary requests in memory and adds them to the store once a tick, in one-second slots; every
process then judges each canary on the sum of all processes' slots in the window, so replicas decide together and
the first abort written wins. Latency is kept as counts per bucket, each bucket 10 % wider than the one before, so a
p99 is known to within 10 % however many requests there were.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from gitops_flow.delivery.routing_table import RESUMED_PREFIX, RoutingTable, Target, split_key, stopped
from gitops_flow.exceptions import StoreError
from gitops_flow.flow.routing import Analysis, FeedbackGate
from gitops_flow.stores.base import AbortStore, Record, SampleStore

SLOT_SECONDS = 1.0
_GROWTH = 1.1  # each latency bucket's upper bound is 10 % above the one before
_REQUESTS, _ERRORS, _BUCKET, _CAUSE = "n", "err", "b", "c:"
MAX_CAUSE = 120  # characters of a failure's cause kept (provider_errors.cause_of: classes, a status, a code)


MAX_CAUSES = 5  # causes an abort record lists


def _commonest(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def bucket(milliseconds: float) -> int:
    """The latency bucket of a duration: bucket b holds durations up to 1.1**b ms (bucket 0: up to 1 ms)."""
    return max(0, math.ceil(math.log(max(milliseconds, 1.0), _GROWTH) - 1e-9))


def bucket_bound(index: int) -> float:
    """The upper bound of a latency bucket, in milliseconds."""
    return float(_GROWTH**index)


@dataclass(frozen=True, slots=True)
class Window:
    """What all processes saw of one canary in the analysis window."""

    requests: int
    errors: int
    p99_ms: float | None
    causes: tuple[tuple[str, int], ...] = ()  # why failed requests failed, commonest first

    @classmethod
    def of(cls, counts: Mapping[str, int]) -> Window:
        requests = counts.get(_REQUESTS, 0)
        causes = sorted(((k[len(_CAUSE) :], n) for k, n in counts.items() if k.startswith(_CAUSE)), key=_commonest)
        buckets = sorted((int(k[1:]), n) for k, n in counts.items() if k.startswith(_BUCKET))
        p99, seen, needed = None, 0, math.ceil(0.99 * sum(n for _, n in buckets))
        for index, n in buckets:
            seen += n
            if needed and seen >= needed:
                p99 = bucket_bound(index)
                break
        return cls(requests, counts.get(_ERRORS, 0), p99, tuple(causes[:MAX_CAUSES]))

    @property
    def error_class(self) -> str | None:
        """The error class behind most of the window's failures (the first word of the commonest cause), or None."""
        return self.causes[0][0].split(" ", 1)[0] if self.causes else None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def verdict(self, analysis: Analysis) -> str | None:
        """Why this window aborts its canary, or None while it is within bounds (or has too few requests to say); a
        verdict on failures names their commonest cause."""
        if self.errors >= analysis.max_failures:
            return f"{self.errors} failures in the window reach the limit of {analysis.max_failures}{self._why()}"
        if self.requests < analysis.min_requests:
            return None
        if self.error_rate > analysis.max_error_rate:
            return f"error rate {self.error_rate:.1%} is above {analysis.max_error_rate:.1%}{self._why()}"
        if self.p99_ms is not None and self.p99_ms > analysis.max_p99_ms:
            return f"p99 latency {self.p99_ms:,.0f} ms is above {analysis.max_p99_ms:,.0f} ms"
        return None

    def _why(self) -> str:
        if not self.causes:
            return ""
        cause, count = self.causes[0]
        return f"; {count} of the {self.errors} failures: {cause}"

    def figures(self) -> Record:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 4),
            "p99_ms": None if self.p99_ms is None else round(self.p99_ms, 1),
            "causes": dict(self.causes),
            "error_class": self.error_class,
        }


class GuardStore(SampleStore, AbortStore, Protocol):
    """What the guard keeps in the store: every replica's counts, and the aborts it decides."""


# why a canary does worse than its primary on a feedback key (the analysis's ``feedback``), or None: the experiments
# package judges it (experiments/feedback_gate.py), the server wires it in
FeedbackJudge = Callable[[str, Target, Target, FeedbackGate], Awaitable[str | None]]


class Guard:
    """Counts this process's canary requests and, once a tick, shares them and judges every canary of the table.
    ``holding``: the canaries the last tick judged within bounds on enough requests (a progressive canary may take
    its next step then, progress.py)."""

    def __init__(
        self, store: GuardStore, *, clock: Callable[[], float] = time.time, judge: FeedbackJudge | None = None
    ) -> None:
        self.store = store
        self.clock = clock
        self.judge = judge
        self.holding: frozenset[str] = frozenset()
        self._pending: dict[str, dict[str, int]] = {}

    def record(self, key: str, ok: bool, seconds: float | None, *, cause: str | None = None) -> None:
        """Count one request of the canary ``key`` (cheap: memory only, on the request path); ``seconds`` None: its
        latency is not the canary's to answer for (attempts.py), and only the request counts. ``cause`` names why a
        failed request failed (its error's class): an abort says the commonest."""
        counts = self._pending.setdefault(key, {})
        counts[_REQUESTS] = counts.get(_REQUESTS, 0) + 1
        if not ok:
            counts[_ERRORS] = counts.get(_ERRORS, 0) + 1
            if cause:
                field = _CAUSE + cause[:MAX_CAUSE]
                counts[field] = counts.get(field, 0) + 1
        if seconds is not None:
            slot = f"{_BUCKET}{bucket(seconds * 1000.0)}"
            counts[slot] = counts.get(slot, 0) + 1

    async def tick(self, table: RoutingTable) -> tuple[dict[str, Record], frozenset[str]]:
        """Share what was counted since the last tick, then judge each live canary of ``table`` on its window.

        Returns the canaries this call aborted (with their figures) and every abort the store knows. Raises
        StoreError when the store is unreachable; the counts are kept for the next tick then.
        """
        analysis = table.analysis
        window = analysis.window if analysis is not None else 60.0
        slot = int(self.clock() // SLOT_SECONDS)
        pending, self._pending = self._pending, {}
        if pending:
            try:
                await self.store.add_samples(slot, pending, ttl=window + 2 * SLOT_SECONDS)
            except StoreError:
                self._merge_back(pending)
                raise
        aborted: dict[str, Record] = {}
        holding: set[str] = set()
        if analysis is not None:
            since = slot - math.ceil(window / SLOT_SECONDS) + 1
            records = await self.store.aborts()
            for key in sorted(table.guarded()):
                resumed = records.get(RESUMED_PREFIX + key)
                start = since if resumed is None else max(since, int(float(resumed["since"]) // SLOT_SECONDS) + 1)
                seen = Window.of(await self.store.sum_samples(key, start))
                reason = seen.verdict(analysis)
                if reason is not None and seen.error_class is not None and seen.errors:
                    reason += f"; mostly {seen.error_class}"
                if reason is None:
                    reason = await self._feedback(table, key, analysis)
                if reason is None and seen.requests >= analysis.min_requests:
                    holding.add(key)
                if reason is not None:
                    record = {**seen.figures(), "reason": reason, "window_s": window, "time": self.clock()}
                    if await self.store.abort(key, record):
                        aborted[key] = record
        self.holding = frozenset(holding)
        return aborted, stopped(await self.store.aborts())

    async def _feedback(self, table: RoutingTable, key: str, analysis: Analysis) -> str | None:
        """Why the canary ``key`` does worse than its primary on the analysis's feedback key, if it does."""
        if analysis.feedback is None or self.judge is None:
            return None
        flow = split_key(key)[0]
        route = table.routes.get(flow)
        canary = table.guarded().get(key)
        if route is None or route.primary is None or canary is None:
            return None
        return await self.judge(flow, canary, route.primary, analysis.feedback)

    def _merge_back(self, pending: Mapping[str, Mapping[str, int]]) -> None:
        for key, counts in pending.items():
            kept = self._pending.setdefault(key, {})
            for name, n in counts.items():
                kept[name] = kept.get(name, 0) + n
