"""The server's traffic: what every worker and every replica served lately, added up through the state store.

Each process counts its own requests (observability/recent.py) and, every FLUSH_SECONDS, adds what it counted since
to the store's samples (the counters the canary guard shares too), one minute slot at a time: per flow, one field per
(minute, version, ref) for requests, errors and each latency bucket, and a field naming the process and its server
(its worker group, or itself alone). Reading sums the slots of the window, so every worker of every replica reads
the same figures: the console and `gitops-flow status` show the server's traffic, not the answering worker's, over
WINDOW_MINUTES (the current minute so far and the whole ones before it) and say how many processes and replicas
reported in it. The same fields, minute by minute, draw the flow page's charts of the last HISTORY_MINUTES.

A count reaches the store within FLUSH_SECONDS (at once for the process that reads); a flush the store refuses is
lost (one log line), never retried into a double count.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gitops_flow.exceptions import StoreError
from gitops_flow.observability.recent import Figures, RecentTraffic, percentile
from gitops_flow.stores.base import StateStore

log = logging.getLogger("gitops_flow.server")
WINDOW_MINUTES = 5
HISTORY_MINUTES = 60
FLUSH_SECONDS = 2.0
_TTL = (HISTORY_MINUTES + 2) * 60.0  # a slot outlives the charts' hour
_FLOW_KEY = "traffic:"  # + the flow's name
_PROCESSES = "traffic-processes"
_TOTAL = "traffic-total"  # every process's requests, one field: what the live feed watches


@dataclass(frozen=True, slots=True)
class Coverage:
    """What the shared figures cover: ``window`` seconds, from ``processes`` processes of ``replicas`` servers."""

    window: float
    processes: int
    replicas: int


@dataclass(frozen=True, slots=True)
class Point:
    """One minute of one version through one ref: ``minute`` is minutes since the epoch."""

    minute: int
    requests: int
    errors: int
    p99_ms: float | None


@dataclass(slots=True)
class _Sums:
    requests: int = 0
    errors: int = 0
    latency: dict[int, int] | None = None

    def add(self, kind: str, count: int) -> None:
        if kind == "r":
            self.requests += count
        elif kind == "e":
            self.errors += count
        elif kind.startswith("b") and kind[1:].isdigit():
            self.latency = self.latency or {}
            index = int(kind[1:])
            self.latency[index] = self.latency.get(index, 0) + count


def _parse(field: str) -> tuple[int, str, str | None, str] | None:
    """(minute, sha, ref, kind) of a field ``MINUTE|SHA|REF|KIND`` (a ref may hold ``|``); None if malformed."""
    minute, _, rest = field.partition("|")
    sha, _, rest = rest.partition("|")
    ref, _, kind = rest.rpartition("|")
    if not minute.isdigit() or not sha or not kind:
        return None
    return int(minute), sha, ref or None, kind


class SharedTraffic:
    """Hands this process's counts to ``store`` and reads every process's back (the module's docstring)."""

    def __init__(
        self,
        store: StateStore,
        recent: RecentTraffic,
        *,
        process: str,
        server: str,
        clock: Callable[[], float] = time.time,
        every: float = FLUSH_SECONDS,
    ) -> None:
        self.store = store
        self.recent = recent
        self.process = process  # this process (a worker's id)
        self.server = server  # the server it belongs to: its worker group, or itself
        self.clock = clock
        self.every = every
        self.started = clock()
        self.seen = 0  # the server's requests in the window at the last flush: the live feed announces a change

    async def run(self) -> None:
        """Flush every ``every`` seconds, forever, and read back the server's request count for the live feed."""
        while True:
            await asyncio.sleep(self.every)
            await self.flush()
            await self.refresh()

    async def refresh(self) -> None:
        """Read the server's request count in the window into ``seen`` (kept as it was when the store is away)."""
        try:
            since = int(self.clock() // 60) - WINDOW_MINUTES + 1
            self.seen = (await self.store.sum_samples(_TOTAL, since)).get("n", 0)
        except StoreError as exc:
            log.warning("traffic figures of the other processes were not read: %s", exc)

    async def flush(self) -> None:
        """Add what this process counted since the last flush to the current minute's slot (and say it is alive)."""
        minute = int(self.clock() // 60)
        counts: dict[str, dict[str, int]] = {_PROCESSES: {f"{minute}|{self.server}|{self.process}|p": 1}}
        drained = self.recent.drain()
        total = sum(found.requests for found in drained.values())
        if total:
            counts[_TOTAL] = {"n": total}
        for (flow, sha, ref), found in drained.items():
            fields = counts.setdefault(_FLOW_KEY + flow, {})
            base = f"{minute}|{sha}|{ref or ''}"
            fields[f"{base}|r"] = fields.get(f"{base}|r", 0) + found.requests
            if found.errors:
                fields[f"{base}|e"] = fields.get(f"{base}|e", 0) + found.errors
            for index, count in found.latency.items():
                fields[f"{base}|b{index}"] = fields.get(f"{base}|b{index}", 0) + count
        try:
            await self.store.add_samples(minute, counts, _TTL)
        except StoreError as exc:
            log.warning("traffic figures of this process were not shared: %s", exc)

    async def figures(self, flows: Iterable[str]) -> tuple[list[Figures], Coverage]:
        """Every process's figures of ``flows`` over the window, as RecentTraffic.figures orders them (this process's
        counts flushed first, so what it served itself is never missing); raises StoreError."""
        await self.flush()
        now = self.clock()
        since = int(now // 60) - WINDOW_MINUTES + 1
        window = max(1.0, min(now - since * 60, now - self.started + self.every))
        found: list[Figures] = []
        for flow in flows:
            sums: dict[tuple[str, str | None], _Sums] = {}
            for field, count in (await self.store.sum_samples(_FLOW_KEY + flow, since)).items():
                parsed = _parse(field)
                if parsed is None or parsed[0] < since:
                    continue
                _, sha, ref, kind = parsed
                sums.setdefault((sha, ref), _Sums()).add(kind, count)
            for (sha, ref), total in sums.items():
                if total.requests:
                    latency = total.latency or {}
                    p50, p99 = percentile(latency, 0.50), percentile(latency, 0.99)
                    found.append(Figures(flow, sha, ref, total.requests, total.errors, window, p50, p99))
        processes: set[str] = set()
        servers: set[str] = set()
        for field in await self.store.sum_samples(_PROCESSES, since):
            parsed = _parse(field)
            if parsed is not None and parsed[0] >= since:
                servers.add(parsed[1])
                processes.add(f"{parsed[1]}|{parsed[2]}")
        found.sort(key=lambda f: (f.flow, -f.requests, f.ref or "", f.sha))
        return found, Coverage(window, len(processes), len(servers))

    async def history(self, flow: str) -> tuple[int, dict[tuple[str, str | None], list[Point]]]:
        """The first minute of the last HISTORY_MINUTES and, per (version, ref) that served ``flow`` in them, a
        point per minute (oldest first, a minute without requests a zero); raises StoreError."""
        first = int(self.clock() // 60) - HISTORY_MINUTES + 1
        minutes: dict[tuple[str, str | None], dict[int, _Sums]] = {}
        for field, count in (await self.store.sum_samples(_FLOW_KEY + flow, first)).items():
            parsed = _parse(field)
            if parsed is None or parsed[0] < first:
                continue
            minute, sha, ref, kind = parsed
            minutes.setdefault((sha, ref), {}).setdefault(minute, _Sums()).add(kind, count)
        series = {}
        for key, by_minute in minutes.items():
            points = []
            for minute in range(first, first + HISTORY_MINUTES):
                sums = by_minute.get(minute)
                if sums is None:
                    points.append(Point(minute, 0, 0, None))
                else:
                    points.append(Point(minute, sums.requests, sums.errors, percentile(sums.latency or {}, 0.99)))
            series[key] = points
        return first, series
