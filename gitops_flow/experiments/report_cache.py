"""The report cache: a flow's experiment report reused for a few seconds while its arms and its feedback stay the
same, so a flood of reads (the report is public without a read token) costs one report per flow and interval."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

MAX_FLOWS = 1000  # reports kept at once (one per flow); past it the least recently read goes


class ReportCache:
    """One report per flow, kept ``seconds`` while its ``stamp`` (the arms' versions and the feedback generation this
    process has seen) stays the same; one report is made at a time per flow, and the reads that come meanwhile wait
    for it instead of making their own."""

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self._kept: OrderedDict[str, tuple[Hashable, float, dict[str, Any]]] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, flow: str, stamp: Hashable, make: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """The report of ``flow`` for ``stamp``: the one kept when it is fresh, else ``make()``'s (kept)."""
        found = self._fresh(flow, stamp)
        if found is not None:
            return found
        lock = self._locks.setdefault(flow, asyncio.Lock())
        async with lock:
            found = self._fresh(flow, stamp)  # made by the read this one waited for
            if found is not None:
                return found
            report = await make()
            if self.seconds > 0:
                self._kept[flow] = (stamp, self.clock() + self.seconds, report)
                self._kept.move_to_end(flow)
                while len(self._kept) > MAX_FLOWS:
                    gone, _ = self._kept.popitem(last=False)
                    self._locks.pop(gone, None)
            return report

    def _fresh(self, flow: str, stamp: Hashable) -> dict[str, Any] | None:
        kept = self._kept.get(flow)
        if kept is None or kept[0] != stamp or kept[1] <= self.clock():
            return None
        self._kept.move_to_end(flow)
        return kept[2]
