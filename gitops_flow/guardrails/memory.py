"""MemoryCounters: the limits' counters in this process (``--state memory://``): rates and token windows through the
``limits`` library's memory storage, runs at once in a dict."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import FixedWindowRateLimiter, SlidingWindowCounterRateLimiter

from gitops_flow.guardrails.counters import MIN_WAIT, Window


class MemoryCounters:
    """Counters of one process; safe for one event loop (no method awaits between its read and its write of a
    lease). ``clock`` times the leases; the ``limits`` library reads the system clock for the windows."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._storage = MemoryStorage()
        self._rates = SlidingWindowCounterRateLimiter(self._storage)
        self._budgets = FixedWindowRateLimiter(self._storage)
        self._leases: dict[str, dict[str, float]] = {}  # key -> lease -> expires

    def __repr__(self) -> str:
        return f"MemoryCounters(leases={sum(map(len, self._leases.values()))})"

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        timer = self._storage.timer  # the library's sweep of expired counters, started by a write
        if timer is not None and not timer.done():
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer

    async def hit(self, key: str, window: Window) -> float | None:
        item = RateLimitItemPerSecond(window.amount, window.seconds)
        if await self._rates.hit(item, key):
            return None
        stats = await self._rates.get_window_stats(item, key)
        # the library's estimate of when a place frees may round to now; a refusal always asks for some wait
        return max(stats.reset_time - time.time(), MIN_WAIT)

    async def acquire(self, key: str, limit: int, lease: str, ttl: float) -> bool:
        now = self._clock()
        held = self._leases.setdefault(key, {})
        for gone in [name for name, expires in held.items() if expires <= now]:
            del held[gone]
        if len(held) >= limit:
            return False
        held[lease] = now + ttl
        return True

    async def release(self, key: str, lease: str) -> None:
        held = self._leases.get(key)
        if held is not None:
            held.pop(lease, None)
            if not held:
                del self._leases[key]

    async def spent(self, key: str, budget: int, window: float) -> tuple[int, float]:
        item = RateLimitItemPerSecond(budget, _whole(window))
        stats = await self._budgets.get_window_stats(item, key)
        return budget - stats.remaining, max(stats.reset_time - time.time(), 0.0)

    async def spend(self, key: str, budget: int, window: float, amount: int) -> None:
        if amount > 0:
            await self._budgets.hit(RateLimitItemPerSecond(budget, _whole(window)), key, cost=amount)


def _whole(seconds: float) -> int:
    return max(1, round(seconds))
