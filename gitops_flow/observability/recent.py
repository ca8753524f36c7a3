"""Recent traffic: each version's requests, errors and latency over the last minutes, counted in this process.

The console shows, for every ref of a flow, what it served lately: requests per second, the error rate, p50 and p99,
and its share of the flow's requests. Prometheus has the same counts, but as totals since the start that only a
scraper turns into rates; the canary guard keeps windows too, but only of canaries, and in the state store. This is
a small window in memory, one-second slots per (flow, version, ref) over ``span`` seconds, that costs one dictionary
lookup and a few additions per request (docs/console.md gives the measurement).

Latency is kept as counts per bucket, each bucket 5 % wider than the one before, so a percentile is known to within
5 % however many requests there were. The window is this process's: behind a load balancer each replica shows what
it served itself.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Set
from dataclasses import dataclass

SPAN_SECONDS = 300.0  # the window: five minutes
MAX_SERIES = 2000  # (flow, version, ref) series kept at once; past that the one idle longest goes
_GROWTH = 1.05
_LOG_GROWTH = math.log(_GROWTH)

Key = tuple[str, str, str | None]  # (flow, full sha, ref)


def bucket(milliseconds: float) -> int:
    """The latency bucket of a duration: bucket b holds durations up to 1.05**b ms (bucket 0: up to 1 ms)."""
    if milliseconds <= 1.0:
        return 0
    return math.ceil(math.log(milliseconds) / _LOG_GROWTH - 1e-9)


def bucket_bound(index: int) -> float:
    """The upper bound of a latency bucket, in milliseconds."""
    return float(_GROWTH**index)


class _Slot:
    """One second of one series."""

    __slots__ = ("at", "requests", "errors", "latency")

    def __init__(self, at: int) -> None:
        self.at = at
        self.requests = 0
        self.errors = 0
        self.latency: dict[int, int] = {}


@dataclass(frozen=True, slots=True)
class Figures:
    """What one version served for one flow through one ref in the window. ``seconds`` is the part of the window
    the figures cover (shorter than the window for a version that started serving within it)."""

    flow: str
    sha: str
    ref: str | None
    requests: int
    errors: int
    seconds: float
    p50_ms: float | None
    p99_ms: float | None

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


class Counts:
    """Requests, errors and latency buckets counted since the last drain, for one series."""

    __slots__ = ("requests", "errors", "latency")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latency: dict[int, int] = {}


class RecentTraffic:
    """The window of every (flow, version, ref) this process served lately. ``clock`` is in seconds (monotonic)."""

    def __init__(
        self,
        *,
        span: float = SPAN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        max_series: int = MAX_SERIES,
    ) -> None:
        self.span = span
        self.clock = clock
        self.max_series = max_series
        self.started = clock()
        self.total = 0  # every request ever added: a cheap way to tell that something new was counted
        self._series: dict[Key, deque[_Slot]] = {}
        self._pending: dict[Key, Counts] = {}  # counted since the last drain(), for the store's shared window

    def add(self, flow: str, sha: str, ref: str | None, ok: bool, seconds: float) -> None:
        """Count one run (on the request path: a lookup and a few additions)."""
        now = int(self.clock())
        key = (flow, sha, ref)
        slots = self._series.get(key)
        if slots is None:
            if len(self._series) >= self.max_series:
                self._drop_idlest()
            slots = self._series[key] = deque()
        if not slots or slots[-1].at != now:
            slots.append(_Slot(now))
            oldest = now - self.span
            while slots[0].at <= oldest:
                slots.popleft()
        slot = slots[-1]
        slot.requests += 1
        if not ok:
            slot.errors += 1
        index = bucket(seconds * 1000.0)
        slot.latency[index] = slot.latency.get(index, 0) + 1
        self.total += 1
        pending = self._pending.get(key)
        if pending is None:
            if len(self._pending) >= self.max_series:
                return  # nobody drains: the shared window is off, and this bound keeps memory flat
            pending = self._pending[key] = Counts()
        pending.requests += 1
        pending.errors += 0 if ok else 1
        pending.latency[index] = pending.latency.get(index, 0) + 1

    def drain(self) -> dict[Key, Counts]:
        """What was counted since the last drain, by series (each process hands it to the shared window)."""
        taken, self._pending = self._pending, {}
        return taken

    def figures(self, flow: str | None = None) -> list[Figures]:
        """The window of each series (of ``flow``, or of every flow) that served in it, by flow, then most requests."""
        now = self.clock()
        oldest = int(now) - self.span
        found = []
        for (name, sha, ref), slots in list(self._series.items()):
            if flow is not None and name != flow:
                continue
            recent = [s for s in slots if s.at > oldest]
            if not recent:
                continue
            latency: dict[int, int] = {}
            for slot in recent:
                for index, count in slot.latency.items():
                    latency[index] = latency.get(index, 0) + count
            requests = sum(s.requests for s in recent)
            covered = min(self.span, now - max(self.started, recent[0].at))
            found.append(
                Figures(
                    flow=name,
                    sha=sha,
                    ref=ref,
                    requests=requests,
                    errors=sum(s.errors for s in recent),
                    seconds=max(covered, 1.0),
                    p50_ms=percentile(latency, 0.50),
                    p99_ms=percentile(latency, 0.99),
                )
            )
        return sorted(found, key=lambda f: (f.flow, -f.requests, f.ref or "", f.sha))

    def prune(self, live: Set[str]) -> None:
        """Forget the series of versions that no longer serve (retired), as the Prometheus series are."""
        for key in [key for key in self._series if key[1] not in live]:
            del self._series[key]

    def _drop_idlest(self) -> None:
        idlest = min(self._series, key=lambda key: self._series[key][-1].at if self._series[key] else -1)
        del self._series[idlest]


def percentile(latency: dict[int, int], fraction: float) -> float | None:
    """The upper bound of the bucket holding the ``fraction`` quantile; None without requests."""
    total = sum(latency.values())
    if not total:
        return None
    needed = math.ceil(fraction * total)
    seen = 0
    for index in sorted(latency):
        seen += latency[index]
        if seen >= needed:
            return bucket_bound(index)
    return bucket_bound(max(latency))  # pragma: no cover - the loop always reaches ``needed``
