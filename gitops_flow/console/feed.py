"""The console's live feed: server-sent events that tell open pages something changed, so they fetch themselves again.

The feed watches what the pages show rather than hooking every place that changes it: twice a second, while at least
one page listens, it compares a fingerprint of the published routing table, the reconciler's fetch status, the
newest event of the shared history and the canary aborts. A deploy, a promotion (a tag moved), an abort by the guard
or an operator on any replica, a failed fetch or a build starting all change one of those. Traffic figures change
with every request, so they are announced at most every STATS_SECONDS.

Each stream lasts at most STREAM_SECONDS and then ends; the browser's EventSource connects again by itself and sends
the last event id it saw, so nothing is missed, and a server that is shutting down is never held up for long by an
open page. At most MAX_LISTENERS streams are open at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable

POLL_SECONDS = 0.5
STATS_SECONDS = 5.0
STREAM_SECONDS = 20.0
KEEP_ALIVE_SECONDS = 10.0
MAX_LISTENERS = 100
RETRY_MS = 1000


class Full(Exception):
    """As many pages listen as the feed allows."""


class Feed:
    """Announces changes to listening pages. ``state`` is the fingerprint of what pages show (awaited: it may read
    the store), ``traffic`` a counter that grows with every request counted."""

    def __init__(
        self,
        state: Callable[[], Awaitable[Hashable]],
        traffic: Callable[[], int],
        *,
        poll: float = POLL_SECONDS,
        stats: float = STATS_SECONDS,
        stream_seconds: float = STREAM_SECONDS,
        max_listeners: int = MAX_LISTENERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._state = state
        self._traffic = traffic
        self.poll = poll
        self.stats = stats
        self.stream_seconds = stream_seconds
        self.max_listeners = max_listeners
        self.clock = clock
        self.seq = 0
        self._listeners: set[asyncio.Event] = set()
        self._someone = asyncio.Event()

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    async def run(self) -> None:
        """Watch while someone listens; forever (the app's lifespan cancels it)."""
        last_state: Hashable = None
        last_traffic = self._traffic()
        last_stats = self.clock()
        while True:
            if not self._listeners:
                self._someone.clear()
                await self._someone.wait()
            try:
                state = await self._state()
            except Exception:  # a store away for a moment: the next poll tries again
                state = last_state
            traffic = self._traffic()
            now = self.clock()
            if state != last_state or (traffic != last_traffic and now - last_stats >= self.stats):
                last_state, last_traffic, last_stats = state, traffic, now
                self._announce()
            await asyncio.sleep(self.poll)

    def _announce(self) -> None:
        self.seq += 1
        for listener in self._listeners:
            listener.set()

    def stream(self, last_seen: str | None) -> AsyncIterator[bytes]:
        """One page's stream: ``change`` events (their id is the feed's count) until STREAM_SECONDS have passed.
        A page that comes back with an older id than the feed's hears of the change at once. Raises Full."""
        if len(self._listeners) >= self.max_listeners:
            raise Full(f"{self.max_listeners} pages listen already")
        listener = asyncio.Event()
        self._listeners.add(listener)
        self._someone.set()
        return self._events(listener, last_seen)

    async def _events(self, listener: asyncio.Event, last_seen: str | None) -> AsyncIterator[bytes]:
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            sent = self.seq
            if last_seen is not None and last_seen != str(sent):
                yield self._message()
            else:
                yield f"id: {sent}\nevent: hello\ndata: {{}}\n\n".encode()
            ends = self.clock() + self.stream_seconds
            while (left := ends - self.clock()) > 0:
                # a change announced while this stream was sending is seen by its count, not only by the event
                if self.seq == sent:
                    listener.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(listener.wait(), timeout=min(left, KEEP_ALIVE_SECONDS))
                if self.seq != sent:
                    sent = self.seq
                    yield self._message()
                else:
                    yield b": keep-alive\n\n"
        finally:
            self._listeners.discard(listener)

    def _message(self) -> bytes:
        return f"id: {self.seq}\nevent: change\ndata: {{}}\n\n".encode()
