"""Rebuilds: old versions built again on demand (a pin to history, a session pinned before a restart), bounded.

They never take the reconciler's lock, so a rebuild never holds up a deploy; one runs at a time, a few may wait
(past that a request is told to come back: Busy), and only the most recently used ``limit`` are kept in memory.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable

import anyio

from gitops_flow.delivery.versions import Version
from gitops_flow.exceptions import Busy

MAX_WAITING = 4


class Rebuilds:
    """An LRU of versions built off the reconciler's path by ``build`` (blocking; it runs in a worker thread)."""

    def __init__(self, build: Callable[[str], Version], *, limit: int = 8, waiting: int = MAX_WAITING) -> None:
        self._build = build
        self._limit = limit
        self._max_waiting = waiting
        self._kept: OrderedDict[str, Version] = OrderedDict()
        self._lock = asyncio.Lock()
        self._waiting = 0

    def __contains__(self, sha: object) -> bool:
        return sha in self._kept

    def __len__(self) -> int:
        return len(self._kept)

    def peek(self, sha: str) -> Version | None:
        """A kept rebuild of ``sha``, marked as just used; None when there is none."""
        version = self._kept.get(sha)
        if version is not None:
            self._kept.move_to_end(sha)
        return version

    async def get(self, sha: str) -> Version:
        """The version of ``sha``, rebuilt if it is not kept. Raises Busy when too many rebuilds already wait, and
        whatever the build raises (UnknownVersion for a commit Git does not have)."""
        kept = self.peek(sha)
        if kept is not None:
            return kept
        if self._waiting >= self._max_waiting:
            raise Busy("the server is rebuilding old versions; try again in a few seconds")
        self._waiting += 1
        try:
            async with self._lock:
                kept = self.peek(sha)
                if kept is not None:
                    return kept
                version = await anyio.to_thread.run_sync(self._build, sha)
                self._kept[sha] = version
                while len(self._kept) > self._limit:
                    self._kept.popitem(last=False)
                return version
        finally:
            self._waiting -= 1

    def drop(self, keep: Callable[[str], bool]) -> None:
        """Forget the rebuilds ``keep`` says no (yanked ones, or ones the table now holds itself)."""
        for sha in [s for s in self._kept if not keep(s)]:
            del self._kept[sha]
