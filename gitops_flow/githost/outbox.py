"""Outbox: what is to be sent to one destination, queued off the request and deploy paths and sent by one worker in
order, each item retried with exponential backoff (and jitter) while the failure is retryable.

A deploy only ever puts an item in (``put`` never waits, never fails); a full outbox drops its oldest item, so an
unreachable host costs bounded memory. Items are kept in this process only: a replica that stops with items still
queued loses them (``drain`` gives them a moment at shutdown), as Argo CD's notification controller does.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from gitops_flow.exceptions import HostError, HostUnavailable

T = TypeVar("T")
log = logging.getLogger("gitops_flow.server")
MAX_WAIT = 900.0  # the longest wait a host's Retry-After is honoured for, in seconds


@dataclass(frozen=True, slots=True)
class Backoff:
    """How an item is retried: ``attempts`` tries in all, the n-th retry after about ``first * factor**(n-1)``
    seconds (at most ``most``), half of it random so that replicas and items do not retry in step."""

    first: float = 1.0
    factor: float = 2.0
    most: float = 60.0
    attempts: int = 8

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        full = min(self.most, self.first * self.factor ** (attempt - 1))
        return full / 2 + rand() * full / 2


DEFAULT_BACKOFF = Backoff()


@dataclass(slots=True)
class Health:
    """How sending to one destination goes, for /readyz and the log."""

    sent: int = 0
    failed: int = 0  # items given up on (refused, or still failing after every attempt)
    dropped: int = 0  # items dropped unsent because the outbox was full
    last_error: str | None = None
    last_sent: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.last_error is None,
            "sent": self.sent,
            "failed": self.failed,
            "dropped": self.dropped,
            "last_error": self.last_error,
            "last_sent": self.last_sent,
        }


class Outbox(Generic[T]):
    """A bounded queue of items for one destination, sent in order by ``run`` through ``send``."""

    def __init__(
        self,
        name: str,
        send: Callable[[T], Awaitable[None]],
        *,
        backoff: Backoff = DEFAULT_BACKOFF,
        capacity: int = 1000,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert capacity >= 1 and backoff.attempts >= 1, "an outbox holds and tries at least one item"
        self.name = name
        self.health = Health()
        self._send = send
        self._backoff = backoff
        self._capacity = capacity
        self._sleep = sleep
        self._rand = rand
        self._clock = clock
        self._items: deque[T] = deque()
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def __repr__(self) -> str:
        return f"Outbox({self.name!r}, pending={self.pending})"

    @property
    def pending(self) -> int:
        """Items queued and not yet sent or given up on (the one being sent included)."""
        return len(self._items)

    def put(self, item: T) -> None:
        """Queue ``item``; never waits. A full outbox drops its oldest item (counted in ``health.dropped``)."""
        if len(self._items) >= self._capacity:
            self._items.popleft()
            self.health.dropped += 1
            log.warning("%s: outbox full (%d items), the oldest was dropped", self.name, self._capacity)
        self._items.append(item)
        self._idle.clear()
        self._ready.set()

    async def run(self) -> None:
        """Send items as they come, in order, forever (cancel to stop)."""
        while True:
            if not self._items:
                self._idle.set()
                self._ready.clear()
                await self._ready.wait()
                continue
            item = self._items[0]
            try:
                await self._deliver(item)
            except Exception:  # a bug in one item's sending must not stop the others'
                self.health.failed += 1
                log.exception("%s: sending an item failed", self.name)
            if self._items and self._items[0] is item:
                self._items.popleft()

    async def drain(self, timeout: float) -> bool:
        """Wait until every queued item was sent or given up on, at most ``timeout`` seconds; whether it was."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _deliver(self, item: T) -> None:
        for attempt in range(1, self._backoff.attempts + 1):
            try:
                await self._send(item)
            except HostError as exc:
                self.health.last_error = str(exc)
                last = attempt == self._backoff.attempts
                if not exc.retryable or last:
                    self.health.failed += 1
                    why = "refused" if not exc.retryable else f"still failing after {attempt} attempts"
                    log.warning("%s: %s, given up (%s)", self.name, exc, why)
                    return
                wait = self._backoff.delay(attempt, self._rand)
                asked = exc.retry_after if isinstance(exc, HostUnavailable) else None
                if asked is not None:
                    wait = max(wait, min(asked, MAX_WAIT))
                log.info("%s: %s; attempt %d, retrying in %.1fs", self.name, exc, attempt, wait)
                await self._sleep(wait)
            else:
                self.health.sent += 1
                self.health.last_error = None
                self.health.last_sent = self._clock()
                return
