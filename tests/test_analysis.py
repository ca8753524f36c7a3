"""guard.py: latency buckets, windows and verdicts, and the guard deciding from every replica's traffic."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gitops_flow.delivery.guard import Guard, Window, bucket, bucket_bound
from gitops_flow.delivery.routing_table import RESUMED_PREFIX, RoutingTable, analysis_key
from gitops_flow.exceptions import StoreError
from gitops_flow.flow.routing import Analysis
from gitops_flow.stores.memory import MemoryStore
from tests.test_traffic import CANARY, SHAS, version

ANALYSIS = Analysis(window=60, min_requests=10, max_error_rate=0.1, max_p99_ms=500)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("ms", [0.2, 1.0, 1.05, 3.7, 99.0, 500.0, 2_999.0, 3_001.0, 120_000.0])
def test_a_duration_lies_in_its_bucket_and_the_bucket_is_10_percent_wide(ms: float) -> None:
    index = bucket(ms)
    assert ms <= bucket_bound(index) + 1e-9
    assert index == 0 or ms > bucket_bound(index - 1)
    assert index == 0 or bucket_bound(index) <= 1.1 * max(ms, 1.0) + 1e-9


def counts(requests: int, errors: int, latency_ms: float, slow: int = 0, slow_ms: float = 0.0) -> dict[str, int]:
    fields = {"n": requests, "err": errors, f"b{bucket(latency_ms)}": requests - slow}
    if slow:
        fields[f"b{bucket(slow_ms)}"] = slow
    return fields


def test_a_window_below_min_requests_has_no_verdict() -> None:
    assert Window.of(counts(9, 9, 5_000)).verdict(ANALYSIS) is None


@pytest.mark.parametrize(
    "seen, reason",
    [
        (counts(100, 10, 20), None),  # 10 % is not above 10 %
        (counts(100, 11, 20), "error rate 11.0% is above 10.0%"),
        (counts(100, 0, 20, slow=1, slow_ms=4_000), None),  # one slow request in 100 is the p99 only at the edge
        (counts(100, 0, 20, slow=2, slow_ms=4_000), "p99 latency"),
        (counts(1000, 0, 450), None),
        (counts(1000, 0, 600), "p99 latency"),
        (counts(100_000, 24, 20), None),
        (counts(100_000, 25, 20), "25 failures in the window reach the limit of 25"),
        (counts(9, 9, 20), None),
    ],
    ids=[
        "errors-at-the-limit",
        "errors-over",
        "one-slow-in-100",
        "two-slow-in-100",
        "all-under",
        "all-over",
        "diluted-under-the-count",
        "diluted-but-counted",
        "few-all-failing",
    ],
)
def test_verdicts(seen: dict[str, int], reason: str | None) -> None:
    verdict = Window.of(seen).verdict(ANALYSIS)
    assert (verdict is None) if reason is None else (verdict is not None and reason in verdict)


def test_a_resumed_canary_is_judged_only_on_what_came_after_the_resume() -> None:
    async def scenario() -> None:
        clock, store = Clock(), MemoryStore()
        guard = Guard(store, clock=clock)
        table, key = canary_table()
        for _ in range(20):
            guard.record(key, False, 0.01)
        aborted, known = await guard.tick(table)
        assert list(aborted) == [key]
        clock.now += 5
        await store.drop_abort(key)  # what an operator's resume does (Reconciler.operate)
        await store.abort(RESUMED_PREFIX + key, {"since": clock.now})
        for _ in range(10):
            guard.record(key, True, 0.01)
        clock.now += 1
        assert await guard.tick(table) == ({}, frozenset())  # the 20 failures before the resume are not counted
        for _ in range(20):
            guard.record(key, False, 0.01)
        clock.now += 1
        aborted, _ = await guard.tick(table)
        assert aborted[key]["requests"] == 30 and aborted[key]["errors"] == 20

    run(scenario())


def canary_table(aborted: frozenset[str] = frozenset()) -> tuple[RoutingTable, str]:
    stable = version(SHAS["aaa"], "echo")
    head = version(SHAS["bbb"], "echo", routing={**CANARY, "analysis": {"min_requests": 20, "max_error_rate": 0.05}})
    versions = {v.sha: v for v in (stable, head)}
    table = RoutingTable.publish("main", head, {"main": head.sha, "stable": stable.sha}, versions, aborted)
    return table, analysis_key("echo", "main", head.sha)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_the_guard_aborts_a_canary_once_its_window_has_enough_failing_requests() -> None:
    async def scenario() -> None:
        clock, store = Clock(), MemoryStore()
        guard = Guard(store, clock=clock)
        table, key = canary_table()
        for _ in range(19):
            guard.record(key, False, 0.01)
        assert await guard.tick(table) == ({}, frozenset())  # 19 < min_requests
        clock.now += 1
        guard.record(key, False, 0.01)
        aborted, known = await guard.tick(table)
        assert list(aborted) == [key]
        assert aborted[key]["requests"] == 20 and aborted[key]["errors"] == 20
        assert "error rate 100.0%" in aborted[key]["reason"]
        assert known == frozenset({key})
        assert await guard.tick(canary_table(known)[0]) == ({}, known)  # an aborted canary is not judged again

    run(scenario())


def test_replicas_decide_on_their_traffic_together_and_the_abort_holds_on_both() -> None:
    async def scenario() -> None:
        clock, store = Clock(), MemoryStore()  # one store shared by two replicas, as Redis is
        one, two = Guard(store, clock=clock), Guard(store, clock=clock)
        table, key = canary_table()
        for _ in range(12):
            one.record(key, False, 0.01)
            two.record(key, True, 0.01)
        # each replica alone: 12 requests, under min_requests; together 24 with 50 % errors
        assert (await one.tick(table))[0] == {}
        aborted, known = await two.tick(table)
        assert list(aborted) == [key] and aborted[key]["requests"] == 24 and aborted[key]["errors"] == 12
        assert (await one.tick(table)) == ({}, known)  # the first replica learns of it, and does not abort twice

    run(scenario())


def test_old_slots_leave_the_window() -> None:
    async def scenario() -> None:
        clock = Clock()
        store = MemoryStore(clock)
        guard = Guard(store, clock=clock)
        table, key = canary_table()
        for _ in range(15):
            guard.record(key, False, 0.01)
        await guard.tick(table)
        clock.now += 61  # past the 60 s window
        for _ in range(15):
            guard.record(key, False, 0.01)
        assert (await guard.tick(table))[0] == {}  # 15 in the window, not 30

    run(scenario())


def test_healthy_canaries_are_left_alone_and_only_canaries_are_judged() -> None:
    async def scenario() -> None:
        store = MemoryStore()
        guard = Guard(store, clock=Clock())
        table, key = canary_table()
        for _ in range(100):
            guard.record(key, True, 0.01)
        guard.record(analysis_key("echo", "stable", SHAS["aaa"]), False, 0.01)  # not a canary: never judged
        assert await guard.tick(table) == ({}, frozenset())

    run(scenario())


def test_counts_survive_a_store_that_fails_for_a_tick() -> None:
    class Flaky(MemoryStore):
        fail = True

        async def add_samples(self, slot: int, counts: Any, ttl: float) -> None:
            if self.fail:
                raise StoreError("the store is down")
            await super().add_samples(slot, counts, ttl)

    async def scenario() -> None:
        store = Flaky()
        guard = Guard(store, clock=Clock())
        table, key = canary_table()
        for _ in range(20):
            guard.record(key, False, 0.01)
        with pytest.raises(StoreError, match="the store is down"):
            await guard.tick(table)
        store.fail = False
        aborted, _ = await guard.tick(table)
        assert aborted[key]["requests"] == 20

    run(scenario())
