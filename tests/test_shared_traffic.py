"""console/traffic.py: every process's counts added up through one state store, read the same by each, over a
window that ends, and minute by minute for the charts (a clock of the test's own, the memory store shared as a SQLite
file or Redis is)."""

from __future__ import annotations

import asyncio

from gitops_flow.console.traffic import HISTORY_MINUTES, WINDOW_MINUTES, SharedTraffic
from gitops_flow.observability.recent import RecentTraffic
from gitops_flow.stores.memory import MemoryStore


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _pair(clock: Clock) -> tuple[SharedTraffic, SharedTraffic, RecentTraffic, RecentTraffic]:
    store = MemoryStore(clock)
    one, two = RecentTraffic(clock=clock), RecentTraffic(clock=clock)
    first = SharedTraffic(store, one, process="w0", server="fetch:g", clock=clock)
    second = SharedTraffic(store, two, process="w1", server="fetch:g", clock=clock)
    return first, second, one, two


def test_two_processes_read_the_same_sum_of_both() -> None:
    clock = Clock()
    first, second, one, two = _pair(clock)
    for _ in range(3):
        one.add("echo", "a" * 40, "stable", True, 0.010)
    two.add("echo", "a" * 40, "stable", True, 0.020)
    two.add("echo", "b" * 40, "main", False, 0.500)

    async def run() -> None:
        await second.flush()  # the other worker's flush; the reader flushes its own
        for reader in (first, second, first):
            found, coverage = await reader.figures(["echo"])
            got = {(f.sha[0], f.ref): (f.requests, f.errors) for f in found}
            assert got == {("a", "stable"): (4, 0), ("b", "main"): (1, 1)}
            assert (coverage.processes, coverage.replicas) == (2, 1)
        assert one.drain() == {} and two.drain() == {}  # nothing counted twice
        await first.refresh()  # what the live feed of a page open on the first worker watches
        assert first.seen == 5

    asyncio.run(run())


def test_an_old_build_leaves_once_its_traffic_has_left_the_window() -> None:
    clock = Clock()
    first, _, one, _ = _pair(clock)
    one.add("echo", "c" * 40, "main", True, 0.010)

    async def run() -> None:
        assert [f.sha for f in (await first.figures(["echo"]))[0]] == ["c" * 40]
        clock.now += WINDOW_MINUTES * 60
        found, coverage = await first.figures(["echo"])
        assert found == [] and coverage.window <= WINDOW_MINUTES * 60
        _, series = await first.history("echo")  # the hour's chart still has it
        [points] = series.values()
        assert len(points) == HISTORY_MINUTES and sum(p.requests for p in points) == 1

    asyncio.run(run())
