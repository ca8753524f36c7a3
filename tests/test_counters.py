"""The limits' counters, one contract for every backend (memory and Redis through the limits library, SQLite of our
own), plus what only a backend shared by processes can show: two processes' counters on one file or one Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gitops_flow.exceptions import StoreError
from gitops_flow.guardrails.counters import Counters, Reserved, Window
from gitops_flow.guardrails.memory import MemoryCounters
from gitops_flow.guardrails.redis import RedisGuardrails
from gitops_flow.guardrails.sqlite import SqliteCounters, counters_path
from tests.redisenv import RedisSpace

pytestmark = pytest.mark.anyio
BACKENDS = ["memory", "sqlite", "redis"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _make(kind: str, tmp_path: Path, request: pytest.FixtureRequest, clock: Clock) -> Counters:
    if kind == "memory":
        return MemoryCounters(clock)
    if kind == "sqlite":
        return SqliteCounters(tmp_path / "state-limits.db", clock=clock)
    space: RedisSpace = request.getfixturevalue("redis_space")
    return RedisGuardrails(f"{space.url}?prefix={space.prefix}", clock=clock).counters


@pytest.fixture(params=BACKENDS)
async def counters(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Counters]:
    made = _make(request.param, tmp_path, request, Clock())
    await made.open()
    yield made
    await made.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.mark.parametrize(
    ("rate", "window"),
    [(20, Window(20, 1)), (0.5, Window(1, 2)), (2.5, Window(5, 2)), (1 / 3, Window(1, 3)), (1e-9, Window(1, 3600))],
    ids=["whole", "half", "fraction", "third", "below-one-an-hour"],
)
async def test_a_rate_is_whole_requests_per_whole_seconds(rate: float, window: Window) -> None:
    assert Window.per_second(rate) == window


async def test_hits_fit_the_window_then_are_refused_with_a_wait(counters: Counters) -> None:
    window = Window(3, 3600)

    answers = [await counters.hit("rate:echo", window) for _ in range(4)]

    assert answers[:3] == [None, None, None]
    wait = answers[3]
    assert wait is not None and 0 < wait <= 3600
    assert await counters.hit("rate:other", window) is None  # another key counts on its own
    assert await counters.hit("rate:echo", Window(5, 3600)) is None  # a changed limit starts a count of its own


async def test_hits_of_a_batch_count_as_hits_one_after_another(counters: Counters) -> None:
    window = Window(2, 3600)

    answers = await counters.hit_many(["rate:a", "rate:b", "rate:a", "rate:a"], window)

    assert answers[:3] == [None, None, None]
    assert answers[3] is not None and 0 < answers[3] <= 3600  # the third of rate:a, past two
    assert await counters.hit("rate:b", window) is None  # its second
    assert await counters.hit("rate:a", window) is not None  # hit and hit_many count on the same counter
    assert await counters.hit_many(["rate:b"], window) != [None]  # its third, whichever way it came
    assert await counters.hit_many([], window) == []


async def test_runs_at_once_are_held_until_released(counters: Counters) -> None:
    assert await counters.acquire("runs:echo", 2, "a", 600)
    assert await counters.acquire("runs:echo", 2, "b", 600)
    assert not await counters.acquire("runs:echo", 2, "c", 600)  # refused: it holds nothing
    assert await counters.acquire("runs:other", 2, "c", 600)

    await counters.release("runs:echo", "a")
    await counters.release("runs:echo", "never-held")  # nothing happens

    assert await counters.acquire("runs:echo", 2, "c", 600)
    assert not await counters.acquire("runs:echo", 2, "d", 600)


async def test_a_reservation_counts_while_the_window_is_under_its_budget(counters: Counters) -> None:
    assert (await counters.spent("tokens:echo", 3600))[0] == 0

    made = await counters.reserve("tokens:echo", 100, 3600, 60)
    assert isinstance(made, Reserved)
    used, reset = await counters.spent("tokens:echo", 3600)
    assert used == 60 and 0 < reset <= 3600
    assert isinstance(await counters.reserve("tokens:echo", 100, 3600, 60), Reserved)  # 60 of 100: still under
    assert (await counters.spent("tokens:echo", 3600))[0] == 120  # reserved is reserved, past the budget too

    refused = await counters.reserve("tokens:echo", 100, 3600, 1)

    assert isinstance(refused, float) and 0 < refused <= 3600  # the seconds until the window ends
    assert (await counters.spent("tokens:echo", 3600))[0] == 120  # a refusal adds nothing
    assert (await counters.spent("tokens:other", 3600))[0] == 0


async def test_a_reservation_is_settled_in_its_window_and_never_below_nothing(counters: Counters) -> None:
    made = await counters.reserve("tokens:echo", 100, 3600, 60)
    assert isinstance(made, Reserved)

    await counters.adjust("tokens:echo", 3600, made.slot, -45)  # the run reported 15: 45 back
    assert (await counters.spent("tokens:echo", 3600))[0] == 15
    await counters.adjust("tokens:echo", 3600, made.slot, 30)  # it reported more than it reserved: charged
    assert (await counters.spent("tokens:echo", 3600))[0] == 45
    await counters.adjust("tokens:echo", 3600, made.slot, -1000)
    assert (await counters.spent("tokens:echo", 3600))[0] == 0


@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_window_that_ended_gives_nothing_back_and_a_charge_counts_in_the_next(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, clock: Clock
) -> None:
    counters = _make(kind, tmp_path, request, clock)
    await counters.open()
    try:
        clock.now = 1_000_800.0  # the start of a window of an hour
        made = await counters.reserve("tokens:echo", 100, 3600, 150)
        assert isinstance(made, Reserved)
        assert isinstance(await counters.reserve("tokens:echo", 100, 3600, 1), float)  # 150 of 100: refused

        clock.now += 3600  # the next window: its own budget
        assert (await counters.spent("tokens:echo", 3600))[0] == 0
        await counters.adjust("tokens:echo", 3600, made.slot, -150)  # nothing to give back in the ended one
        assert (await counters.spent("tokens:echo", 3600))[0] == 0
        await counters.adjust("tokens:echo", 3600, made.slot, 20)  # spent is spent: it counts now
        assert (await counters.spent("tokens:echo", 3600))[0] == 20
    finally:
        await counters.close()


@pytest.mark.parametrize("kind", BACKENDS)
async def test_reservations_made_at_once_by_two_processes_pass_the_budget_by_less_than_one(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The store's side of issue 21's attack: 40 requests reserving at once, half through each of two counters on
    one backend (two processes of a machine on one SQLite file, two replicas on one Redis; memory is one process's,
    so one object). Each reservation sees every other: the first 17 of 60 fill a budget of 1,000, the rest are
    refused."""
    clock = Clock(time.time())
    first = _make(kind, tmp_path, request, clock)
    second = first if kind == "memory" else _make(kind, tmp_path, request, clock)
    await first.open()
    if second is not first:
        await second.open()
    try:
        made = await asyncio.gather(
            *(c.reserve("tokens:echo", 1000, 3600, 60) for _ in range(20) for c in (first, second))
        )

        granted = [m for m in made if isinstance(m, Reserved)]
        assert len(granted) == 17  # 16 x 60 = 960 is under 1,000; 17 x 60 = 1,020 is not
        assert (await first.spent("tokens:echo", 3600))[0] == 1020
        assert (await second.spent("tokens:echo", 3600))[0] == 1020
    finally:
        await first.close()
        if second is not first:
            await second.close()


@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_lease_of_a_process_that_died_expires(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, clock: Clock
) -> None:
    counters = _make(kind, tmp_path, request, clock)
    await counters.open()
    try:
        assert await counters.acquire("runs:echo", 1, "crashed", 30)
        clock.now += 29
        assert not await counters.acquire("runs:echo", 1, "next", 30)
        clock.now += 2
        assert await counters.acquire("runs:echo", 1, "next", 30)
    finally:
        await counters.close()


async def test_the_sqlite_window_slides_and_its_wait_is_honest(tmp_path: Path, clock: Clock) -> None:
    """Two requests per 10 s, counted as a sliding window: after waiting what a refusal says, a request fits."""
    counters = SqliteCounters(tmp_path / "limits.db", clock=clock)
    await counters.open()
    window = Window(2, 10)
    try:
        clock.now = 1_000_000.0  # the start of a slot
        assert await counters.hit("rate:x", window) is None
        clock.now += 4
        assert await counters.hit("rate:x", window) is None
        refused = []
        for _ in range(5):
            wait = await counters.hit("rate:x", window)
            assert wait is not None and wait > 0
            refused.append(wait)
            clock.now += wait - 0.01
            assert await counters.hit("rate:x", window) is not None  # a moment before the wait is over: still full
            clock.now += 0.02
            if await counters.hit("rate:x", window) is None:
                break
        else:
            pytest.fail(f"the waits {refused} never led to a request that fits")
        # and the window never let more than 2 requests in within any 10 s: the last one came 10 s or more after
        # the first of the two before it
        assert clock.now - 1_000_004.0 >= 5.0
    finally:
        await counters.close()


async def test_two_processes_share_a_sqlite_file(tmp_path: Path) -> None:
    """Two servers of one machine open the same file: runs and rates are counted once for both."""
    path = counters_path(tmp_path / "state.db")
    assert path == tmp_path / "state-limits.db"
    first, second = SqliteCounters(path), SqliteCounters(path)
    await first.open()
    await second.open()
    try:
        assert await first.acquire("runs:echo", 1, "a", 600)
        assert not await second.acquire("runs:echo", 1, "b", 600)
        assert await first.hit("rate:echo", Window(1, 3600)) is None
        assert await second.hit("rate:echo", Window(1, 3600)) is not None
        assert isinstance(await second.reserve("tokens:echo", 10, 3600, 4), Reserved)
        assert (await first.spent("tokens:echo", 3600))[0] == 4
    finally:
        await first.close()
        await second.close()


async def test_two_replicas_share_a_redis(redis_space: RedisSpace) -> None:
    url = f"{redis_space.url}?prefix={redis_space.prefix}"
    first, second = RedisGuardrails(url).counters, RedisGuardrails(url).counters
    try:
        assert await first.acquire("runs:echo", 1, "a", 600)
        assert not await second.acquire("runs:echo", 1, "b", 600)
        assert await first.hit("rate:echo", Window(1, 3600)) is None
        assert await second.hit("rate:echo", Window(1, 3600)) is not None
        assert isinstance(await second.reserve("tokens:echo", 10, 3600, 4), Reserved)
        assert (await first.spent("tokens:echo", 3600))[0] == 4
        assert all(key.startswith(redis_space.prefix) for key in redis_space.keys())
    finally:
        await first.close()
        await second.close()


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.hit("rate:x", Window(1, 1)),
        lambda c: c.acquire("runs:x", 1, "a", 1),
        lambda c: c.spent("tokens:x", 1),
        lambda c: c.reserve("tokens:x", 1, 1, 1),
        lambda c: c.adjust("tokens:x", 1, int(time.time()), 1),
    ],
    ids=["hit", "acquire", "spent", "reserve", "adjust"],
)
async def test_an_unreachable_redis_is_a_store_error_without_its_password(call: Callable[..., object]) -> None:
    from tests.redisenv import free_port

    counters = RedisGuardrails(f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0").counters
    try:
        with pytest.raises(StoreError) as caught:
            await call(counters)  # type: ignore[misc]
        assert "hunter2-secret" not in str(caught.value) and "127.0.0.1" in str(caught.value)
    finally:
        await counters.close()
