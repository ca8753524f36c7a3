"""Circuit breakers of provider endpoints, shared through every state store backend (memory, SQLite, Redis): two
breakers of one endpoint stand for two processes (workers or replicas). The served behaviour (fast 503s, a probe
closing the circuit, a second worker refusing at once) is in tests/test_provider_failures.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gitops_flow.components.breaker import SYNC, Breaker
from gitops_flow.stores import StateStore
from tests.redisenv import RedisSpace
from tests.stores.test_contract import BACKENDS, FakeClock

pytestmark = pytest.mark.anyio
ENDPOINT = "openai http://127.0.0.1:9/v1"
FAILURES, WINDOW, COOLDOWN = 3, 30.0, 10.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_000_000.0)


@pytest.fixture(params=list(BACKENDS), ids=list(BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> AsyncIterator[StateStore]:
    factory = BACKENDS[request.param]
    if request.param == "redis":
        space: RedisSpace = request.getfixturevalue("redis_space")
        made = factory(tmp_path, clock, space=space)
    else:
        made = factory(tmp_path, clock)
    await made.open()
    try:
        yield made
    finally:
        await made.close()


def process(store: StateStore, clock: FakeClock, endpoint: str = ENDPOINT) -> Breaker:
    return Breaker(store, endpoint, failures=FAILURES, window=WINDOW, cooldown=COOLDOWN, clock=clock)


async def fail(breaker: Breaker, times: int) -> None:
    for _ in range(times):
        assert await breaker.admit() is None
        await breaker.failed()


async def test_failures_across_processes_open_the_circuit_for_every_process(
    store: StateStore, clock: FakeClock
) -> None:
    one, two, other = process(store, clock), process(store, clock), process(store, clock, "openai default")
    await fail(one, FAILURES - 1)
    await fail(two, 1)  # the third failure, seen by another process: the shared count opens it

    assert await two.admit() == COOLDOWN
    assert await one.admit() is None  # a process reads the shared count at most once a second
    clock.now += SYNC
    assert await one.admit() is not None
    assert await other.admit() is None  # another endpoint is not concerned


async def test_failures_older_than_the_window_do_not_count(store: StateStore, clock: FakeClock) -> None:
    one = process(store, clock)
    await fail(one, FAILURES - 1)
    clock.now += WINDOW + 1

    await fail(one, 1)

    assert await one.admit() is None


async def test_after_the_cooldown_one_process_probes_and_its_success_closes_the_circuit_everywhere(
    store: StateStore, clock: FakeClock
) -> None:
    one, two = process(store, clock), process(store, clock)
    await fail(one, FAILURES)
    assert await two.admit() is not None
    clock.now += COOLDOWN + 0.5

    assert await one.admit() is None  # the probe
    assert await two.admit() is not None  # another process waits for it
    await one.succeeded()
    clock.now += SYNC + 0.1

    assert await two.admit() is None  # closed everywhere: the probe's success started a new count
    assert await one.admit() is None
    await fail(two, FAILURES - 1)
    assert await one.admit() is None  # the old failures no longer count


async def test_a_failed_probe_opens_the_circuit_for_another_cooldown(store: StateStore, clock: FakeClock) -> None:
    one = process(store, clock)
    await fail(one, FAILURES)
    clock.now += COOLDOWN + 0.5
    assert await one.admit() is None

    await one.failed()

    assert await one.admit() == pytest.approx(COOLDOWN)
