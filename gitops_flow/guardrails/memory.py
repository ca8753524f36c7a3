"""MemoryCounters: the limits' counters in this process (``--state memory://``): rates through the ``limits``
library's memory storage, runs at once and the tokens spent per window in dicts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence

from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from gitops_flow.guardrails.counters import MIN_WAIT, Reserved, Window, window_at


class MemoryCounters:
    """Counters of one process; safe for one event loop (no method awaits between its read and its write of a
    lease or a window's tokens). ``clock`` times the leases and the token windows; the ``limits`` library reads the
    system clock for the rates."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._storage = MemoryStorage()
        self._rates = SlidingWindowCounterRateLimiter(self._storage)
        self._spent: dict[tuple[str, float], tuple[int, int]] = {}  # (key, window) -> (slot, tokens)
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

    async def hit_many(self, keys: Sequence[str], window: Window) -> list[float | None]:
        return [await self.hit(key, window) for key in keys]

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

    async def spent(self, key: str, window: float) -> tuple[int, float]:
        slot, left = window_at(self._clock(), window)
        return self._used(key, window, slot), left

    async def reserve(self, key: str, budget: int, window: float, amount: int) -> Reserved | float:
        slot, left = window_at(self._clock(), window)
        used = self._used(key, window, slot)
        if used >= budget:
            return left
        self._spent[(key, window)] = (slot, used + amount)
        return Reserved(slot)

    async def adjust(self, key: str, window: float, slot: int, amount: int) -> None:
        now, _ = window_at(self._clock(), window)
        if slot < now:  # that window ended: a refund has nothing to take from, a charge counts now
            if amount <= 0:
                return
            slot = now
        self._spent[(key, window)] = (slot, max(0, self._used(key, window, slot) + amount))

    def _used(self, key: str, window: float, slot: int) -> int:
        """What ``key`` spent in window ``slot`` (an earlier window's entry is 0: it is replaced at the next write,
        so a key keeps one entry however long it lives)."""
        found = self._spent.get((key, window))
        return found[1] if found is not None and found[0] == slot else 0
