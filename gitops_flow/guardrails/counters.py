"""Counters: what limits count (requests in a sliding window, runs at once, tokens in a window), as a Protocol with
one implementation per backend: memory and Redis through the ``limits`` library (rates), SQLite of our own, and
token budgets of our own on every backend (reservations the library cannot make: a refused reservation adds nothing)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

MAX_WINDOW_SECONDS = 3600  # a rate below one request an hour is one an hour
MIN_WAIT = 0.001  # seconds: the least a refusal asks to wait (a Retry-After header rounds it up to one second)


@dataclass(frozen=True, slots=True)
class Window:
    """``amount`` requests per ``seconds``: a rate in whole numbers, as a sliding window counts it."""

    amount: int
    seconds: int

    @classmethod
    def per_second(cls, rate: float) -> Window:
        """20 -> 20 per second; 0.5 -> 1 per 2 seconds; 2.5 -> 5 per 2 seconds (the nearest fraction with a
        denominator up to an hour)."""
        fraction = Fraction(rate).limit_denominator(MAX_WINDOW_SECONDS)
        if fraction <= 0:
            return cls(1, MAX_WINDOW_SECONDS)
        return cls(fraction.numerator, fraction.denominator)

    def key(self, name: str) -> str:
        """A counter's name for this window: a change of the limit starts a counter of its own."""
        return f"{name}/{self.amount}/{self.seconds}"


def window_at(now: float, window: float) -> tuple[int, float]:
    """The number of the window of ``window`` seconds (aligned to the epoch) that ``now`` falls in, and the seconds
    until it ends."""
    slot = math.floor(now / window)
    return slot, (slot + 1) * window - now


class Counters(Protocol):
    """Shared counters of the limits; every method may raise StoreError when its backend is unreachable.

    Times are the counters' clock (seconds since the epoch); what refuses says how long until it would not.
    """

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def hit(self, key: str, window: Window) -> float | None:
        """Count one request under ``key`` if it fits ``window`` (a sliding window: the last window's count weighs
        by how much of it still overlaps); None when counted, else the seconds until one would fit (nothing
        counted)."""
        ...

    async def hit_many(self, keys: Sequence[str], window: Window) -> list[float | None]:
        """``hit`` for each of ``keys`` in turn (a key given twice is counted twice), in one trip to the backend
        where it can: what ``hit`` would answer for each."""
        ...

    async def acquire(self, key: str, limit: int, lease: str, ttl: float) -> bool:
        """Hold one of ``limit`` places under ``key`` as ``lease`` (until released, or ``ttl`` seconds pass, so a
        crashed process frees its places); False, holding nothing, when all are held. Atomic across processes."""
        ...

    async def release(self, key: str, lease: str) -> None:
        """Free the place ``lease`` holds; nothing happens if it holds none."""
        ...

    async def spent(self, key: str, window: float) -> tuple[int, float]:
        """What was spent under ``key`` in its current window of ``window`` seconds, and the seconds until that
        window ends. Windows are aligned to the epoch (window number ``slot = now // window``), so every process
        agrees on them."""
        ...

    async def reserve(self, key: str, budget: int, window: float, amount: int) -> Reserved | float:
        """If what ``key`` spent in its current window is under ``budget``, add ``amount`` to it (a reservation: a
        request's estimate, settled later with ``adjust``) and say in which window; else the seconds until the
        window ends, nothing added. Atomic across processes: of requests reserving at once, each sees the others'
        reservations, so together they pass the budget by less than the last one's ``amount``."""
        ...

    async def adjust(self, key: str, window: float, slot: int, amount: int) -> None:
        """Add ``amount`` (negative: give back) to what ``key`` spent in window ``slot``, never below 0. A window
        that has ended gives nothing back, and what it is charged more counts in the current window."""
        ...


@dataclass(frozen=True, slots=True)
class Reserved:
    """A reservation made: the window it counts in (``slot``: the window's start is ``slot * window`` seconds
    since the epoch), what ``adjust`` settles it in."""

    slot: int
