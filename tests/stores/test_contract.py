"""One suite, every backend: what any StateStore promises, as the server relies on it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gitops_flow.stores import MemoryStore, SqliteStore, StateStore
from gitops_flow.stores.base import SWEEP_CONVERSATIONS, ConversationQuota, ScoreBounds
from gitops_flow.stores.redis import RedisStore
from tests.redisenv import RedisSpace

pytestmark = pytest.mark.anyio


class FakeClock:
    """A clock that moves only when a test sets ``now``."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# backend name -> factory(tmp_path, clock, **options); redis also takes the test's own Redis space (see make_store),
# and skips without a reachable Redis (fails under CI=true)
BACKENDS: dict[str, Callable[..., StateStore]] = {
    "memory": lambda tmp_path, clock, **options: MemoryStore(clock, **options),
    "sqlite": lambda tmp_path, clock, **options: SqliteStore(tmp_path / "state.db", clock=clock, **options),
    "redis": lambda tmp_path, clock, *, space, **options: RedisStore(
        space.url, prefix=space.prefix, clock=clock, **options
    ),
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=list(BACKENDS), ids=list(BACKENDS))
def make_store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Callable[..., StateStore]:
    """Builds an unopened store of the backend under test, with the test's clock."""
    factory = BACKENDS[request.param]
    if request.param == "redis":
        space: RedisSpace = request.getfixturevalue("redis_space")  # a key prefix of its own, cleaned up after
        return lambda **options: factory(tmp_path, clock, space=space, **options)
    return lambda **options: factory(tmp_path, clock, **options)


@pytest.fixture
async def store(make_store: Callable[..., StateStore]) -> AsyncIterator[StateStore]:
    store = make_store()
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_ping_writes_a_probe_and_leaves_nothing_behind(store: StateStore) -> None:
    await store.ping()
    await store.ping()
    assert await store.pinned_versions() == set()
    assert await store.claim_pin("probe", "aaa", ttl=60) == "aaa"


# pins


async def test_first_claim_pins_and_later_claims_keep_it(store: StateStore) -> None:
    assert await store.claim_pin("pin:s1", "aaa", ttl=60) == "aaa"
    assert await store.claim_pin("pin:s1", "bbb", ttl=60) == "aaa"
    assert await store.claim_pin("pin:s2", "bbb", ttl=60) == "bbb"


async def test_an_expired_pin_lets_a_new_claim_win(store: StateStore, clock: FakeClock) -> None:
    await store.claim_pin("pin:s1", "aaa", ttl=10)
    clock.now = 10  # a pin is live while the clock reads less than its expiry
    assert await store.claim_pin("pin:s1", "bbb", ttl=10) == "bbb"
    assert await store.claim_pin("pin:s1", "ccc", ttl=10) == "bbb"


async def test_claims_restart_the_idle_timer(store: StateStore, clock: FakeClock) -> None:
    await store.claim_pin("pin:s1", "aaa", ttl=10)
    clock.now = 8
    assert await store.claim_pin("pin:s1", "bbb", ttl=10) == "aaa"
    clock.now = 15
    assert await store.pinned_versions() == {"aaa"}
    clock.now = 19
    assert await store.pinned_versions() == set()
    assert await store.claim_pin("pin:s1", "bbb", ttl=10) == "bbb"


async def test_set_pin_overrides_a_live_pin(store: StateStore, clock: FakeClock) -> None:
    await store.claim_pin("pin:s1", "aaa", ttl=10)
    await store.set_pin("pin:s1", "bbb", ttl=100)
    clock.now = 50
    assert await store.claim_pin("pin:s1", "ccc", ttl=10) == "bbb"


async def test_set_pin_pins_a_new_key(store: StateStore) -> None:
    await store.set_pin("pin:s1", "aaa", ttl=10)
    assert await store.claim_pin("pin:s1", "bbb", ttl=10) == "aaa"


async def test_drop_pin_forgets_the_pin(store: StateStore) -> None:
    await store.claim_pin("pin:s1", "aaa", ttl=10)
    await store.drop_pin("pin:s1")
    await store.drop_pin("pin:never-pinned")
    assert await store.pinned_versions() == set()
    assert await store.claim_pin("pin:s1", "bbb", ttl=10) == "bbb"


async def test_pinned_versions_lists_each_live_sha_once(store: StateStore, clock: FakeClock) -> None:
    await store.claim_pin("pin:s1", "aaa", ttl=10)
    await store.claim_pin("pin:s2", "aaa", ttl=30)
    await store.claim_pin("pin:s3", "bbb", ttl=30)
    await store.claim_pin("pin:s4", "ccc", ttl=5)
    assert await store.pinned_versions() == {"aaa", "bbb", "ccc"}
    clock.now = 20
    assert await store.pinned_versions() == {"aaa", "bbb"}
    clock.now = 30
    assert await store.pinned_versions() == set()


async def test_sweeping_expired_pins_keeps_live_ones(store: StateStore, clock: FakeClock) -> None:
    await store.claim_pin("pin:live", "live", ttl=1_000_000)
    for n in range(1_001):  # past the backends' sweep interval
        await store.set_pin(f"pin:{n}", "old", ttl=1)
        clock.now += 2
    assert await store.pinned_versions() == {"live"}


async def test_concurrent_claims_of_one_key_agree(store: StateStore) -> None:
    shas = [f"sha{n}" for n in range(50)]
    results = await asyncio.gather(*(store.claim_pin("pin:s1", sha, ttl=60) for sha in shas))
    assert len(set(results)) == 1
    assert results[0] in shas


# conversations

TTL, KEEP = 60.0, 100


async def test_turns_come_back_in_order(store: StateStore) -> None:
    await store.append_turns("s1", [("human", "hi"), ("ai", "hello")], ttl=TTL, keep=KEEP)
    await store.append_turns("s1", [("human", "bye"), ("ai", "see you")], ttl=TTL, keep=KEEP)
    assert await store.load_turns("s1", 10) == [("human", "hi"), ("ai", "hello"), ("human", "bye"), ("ai", "see you")]


async def test_load_turns_gives_the_last_ones_oldest_first(store: StateStore) -> None:
    await store.append_turns("s1", [("human", f"q{n}") for n in range(5)], ttl=TTL, keep=KEEP)
    assert await store.load_turns("s1", 2) == [("human", "q3"), ("human", "q4")]
    assert await store.load_turns("s1", 0) == []


async def test_sessions_are_kept_apart(store: StateStore) -> None:
    await store.append_turns("s1", [("human", "one")], ttl=TTL, keep=KEEP)
    await store.append_turns("s2", [("human", "two")], ttl=TTL, keep=KEEP)
    await store.append_turns("s2", [], ttl=TTL, keep=KEEP)
    assert await store.load_turns("s1", 10) == [("human", "one")]
    assert await store.load_turns("s2", 10) == [("human", "two")]
    assert await store.load_turns("unknown", 10) == []


async def test_a_conversation_keeps_only_its_newest_turns(store: StateStore) -> None:
    for n in range(4):
        await store.append_turns("s1", [("human", f"q{n}"), ("ai", f"a{n}")], ttl=TTL, keep=3)
    assert await store.load_turns("s1", 100) == [("ai", "a2"), ("human", "q3"), ("ai", "a3")]
    await store.append_turns("s2", [("human", f"q{n}") for n in range(10)], ttl=TTL, keep=3)  # one call, one bound
    assert await store.load_turns("s2", 100) == [("human", "q7"), ("human", "q8"), ("human", "q9")]
    assert await store.load_turns("s1", 100) == [("ai", "a2"), ("human", "q3"), ("ai", "a3")]  # each its own


async def test_an_idle_conversation_expires_and_starts_anew(store: StateStore, clock: FakeClock) -> None:
    await store.append_turns("s1", [("human", "one")], ttl=10, keep=KEEP)
    clock.now = 9
    await store.append_turns("s1", [("human", "two")], ttl=10, keep=KEEP)  # restarts the idle timer
    clock.now = 18
    assert await store.load_turns("s1", 10) == [("human", "one"), ("human", "two")]
    clock.now = 19  # a conversation is live while the clock reads less than its expiry
    assert await store.load_turns("s1", 10) == []
    await store.append_turns("s1", [("human", "three")], ttl=10, keep=KEEP)
    assert await store.load_turns("s1", 10) == [("human", "three")]


async def test_each_append_deletes_a_bounded_batch_of_expired_conversations(
    store: StateStore, clock: FakeClock
) -> None:
    for n in range(40):
        await store.append_turns(f"old{n}", [("human", f"q{n}")], ttl=1, keep=KEEP)

    async def kept() -> int:
        """How many old conversations are still stored: with the clock put back, the undeleted ones are live."""
        now, clock.now = clock.now, 0
        try:
            return sum([await store.load_turns(f"old{n}", 1) != [] for n in range(40)])
        finally:
            clock.now = now

    assert await kept() == 40
    clock.now = 10
    await store.append_turns("new0", [("human", "hi")], ttl=60, keep=KEEP)
    assert await kept() == 40 - SWEEP_CONVERSATIONS  # deleted, not merely expired, and no more than a batch
    await store.append_turns("new1", [("human", "hi")], ttl=60, keep=KEEP)
    await store.append_turns("new2", [("human", "hi")], ttl=60, keep=KEEP)
    assert await kept() == 0
    assert await store.load_turns("new0", 1) == [("human", "hi")]


async def live_sessions(store: StateStore, names: list[str]) -> list[str]:
    return [name for name in names if await store.load_turns(name, 1)]


async def test_past_the_quota_of_sessions_the_conversations_idle_longest_go(
    store: StateStore, clock: FakeClock
) -> None:
    """The reproduction of finding 6 at store level: many session ids, each a new conversation. The store keeps
    ``max_sessions`` of them, the most recently written, and a conversation that keeps talking survives."""
    quota = ConversationQuota(max_sessions=5, max_bytes=1 << 30)
    names = [f"s{n}" for n in range(20)]
    await store.append_turns("active", [("human", "hi")], ttl=TTL, keep=KEEP, quota=quota)
    for n, name in enumerate(names):
        clock.now = n + 1
        await store.append_turns(name, [("human", "q")], ttl=TTL, keep=KEEP, quota=quota)
        if n % 3 == 2:
            await store.append_turns("active", [("human", "more")], ttl=TTL, keep=KEEP, quota=quota)
    assert await live_sessions(store, names) == ["s16", "s17", "s18", "s19"]
    assert len(await store.load_turns("active", 100)) == 7


async def test_past_the_quota_of_bytes_the_conversations_idle_longest_go(store: StateStore, clock: FakeClock) -> None:
    quota = ConversationQuota(max_sessions=1000, max_bytes=10_000)
    big = "é" * 1000  # 2,000 bytes of UTF-8: bytes are counted, not characters
    names = [f"s{n}" for n in range(12)]
    for n, name in enumerate(names):
        clock.now = n
        await store.append_turns(name, [("human", big)], ttl=TTL, keep=KEEP, quota=quota)
    assert await live_sessions(store, names) == names[-5:]  # 5 × 2,000 bytes
    clock.now = 20
    await store.append_turns("s7", [("ai", "x" * 1000)], ttl=TTL, keep=KEEP, quota=quota)  # now the newest
    assert await live_sessions(store, names) == ["s7", "s9", "s10", "s11"]  # s8 was idle longest
    assert await store.load_turns("s7", 10) == [("human", big), ("ai", "x" * 1000)]


async def test_turns_dropped_by_keep_and_expired_conversations_give_their_bytes_back(
    store: StateStore, clock: FakeClock
) -> None:
    quota = ConversationQuota(max_sessions=1000, max_bytes=10_000)
    for _ in range(50):  # 50 × 1,000 bytes through one conversation that keeps 3 turns: 3,000 bytes
        await store.append_turns("long", [("human", "x" * 1000)], ttl=10, keep=3, quota=quota)
    await store.append_turns("other", [("human", "y" * 6000)], ttl=10, keep=3, quota=quota)
    assert await live_sessions(store, ["long", "other"]) == ["long", "other"]
    clock.now = 11  # both expired: the next write sweeps them and their bytes
    await store.append_turns("new", [("human", "z" * 9000)], ttl=10, keep=3, quota=quota)
    await store.append_turns("newer", [("human", "w" * 900)], ttl=10, keep=3, quota=quota)
    assert await live_sessions(store, ["new", "newer"]) == ["new", "newer"]


async def test_a_conversation_larger_than_the_quota_is_kept_alone(store: StateStore) -> None:
    quota = ConversationQuota(max_sessions=10, max_bytes=1000)
    await store.append_turns("small", [("human", "hi")], ttl=TTL, keep=KEEP, quota=quota)
    await store.append_turns("huge", [("human", "x" * 5000)], ttl=TTL, keep=KEEP, quota=quota)
    assert await live_sessions(store, ["small", "huge"]) == ["huge"]


# versions and events

RECORD: dict[str, Any] = {
    "sha": "aaa",
    "status": "ready",
    "flows": {"chat": {"nodes": [{"id": "p", "params": {"t": 0.5, "stop": None}}]}},
    "problems": [],
    "text": 'naïve ☃ "quoted"',
}


async def test_versions_come_back_equal_in_first_saved_order(store: StateStore) -> None:
    await store.put_version("aaa", RECORD)
    await store.put_version("bbb", {"sha": "bbb", "status": "failed"})
    await store.put_version("aaa", {**RECORD, "status": "retired"})
    assert await store.versions() == [{**RECORD, "status": "retired"}, {"sha": "bbb", "status": "failed"}]


async def test_records_read_back_are_copies(store: StateStore) -> None:
    await store.put_version("aaa", RECORD)
    await store.add_event({"kind": "deployed", "tags": ["stable"]})
    (version,) = await store.versions()
    version["flows"]["chat"]["nodes"].clear()
    ((_, event),) = await store.events(1)
    event["tags"].append("canary")
    assert await store.versions() == [RECORD]
    assert await store.events(1) == [(1, {"kind": "deployed", "tags": ["stable"]})]


async def test_no_versions_yet(store: StateStore) -> None:
    assert await store.versions() == []


async def test_events_come_newest_first_with_their_numbers(store: StateStore) -> None:
    for n in range(5):
        await store.add_event({"n": n, "kind": "deployed"})
    assert await store.events(3) == [
        (5, {"n": 4, "kind": "deployed"}),
        (4, {"n": 3, "kind": "deployed"}),
        (3, {"n": 2, "kind": "deployed"}),
    ]
    assert [(seq, e["n"]) for seq, e in await store.events(100)] == [(5, 4), (4, 3), (3, 2), (2, 1), (1, 0)]
    assert await store.events(0) == []


async def test_events_before_a_number_are_the_next_page(store: StateStore) -> None:
    for n in range(7):
        await store.add_event({"n": n})
    first = await store.events(3)
    second = await store.events(3, before=first[-1][0])
    third = await store.events(3, before=second[-1][0])
    assert [[e["n"] for _, e in page] for page in (first, second, third)] == [[6, 5, 4], [3, 2, 1], [0]]
    assert await store.events(3, before=1) == []
    assert [seq for seq, _ in await store.events(2, before=100)] == [7, 6]  # a number past the newest: from the top
    await store.add_event({"n": 7})  # an event added between pages does not move the next page
    assert await store.events(3, before=first[-1][0]) == second


async def test_only_the_most_recent_events_are_kept(make_store: Callable[..., StateStore]) -> None:
    store = make_store(max_events=3)
    await store.open()
    try:
        for n in range(5):
            await store.add_event({"n": n})
        assert await store.events(10) == [(5, {"n": 4}), (4, {"n": 3}), (3, {"n": 2})]
        assert await store.events(10, before=4) == [(3, {"n": 2})]
        assert await store.events(10, before=3) == []  # the older ones are gone
    finally:
        await store.close()


async def test_an_event_with_a_once_key_is_added_once(store: StateStore) -> None:
    assert await store.add_event({"n": 1, "kind": "deployed"}, once="deployed:aaa") is True
    assert await store.add_event({"n": 2, "kind": "deployed"}, once="deployed:aaa") is False
    assert await store.add_event({"n": 3, "kind": "failed"}, once="failed:bbb") is True
    assert await store.add_event({"n": 4}) is True
    assert await store.add_event({"n": 5}) is True  # events without a key are never deduplicated
    events = await store.events(10)
    assert [e["n"] for _, e in events] == [5, 4, 3, 1]
    assert [seq for seq, _ in events] == sorted({seq for seq, _ in events}, reverse=True)  # numbers only go up


async def test_concurrent_events_with_one_key_add_one(store: StateStore) -> None:
    added = await asyncio.gather(*(store.add_event({"n": n}, once="deployed:aaa") for n in range(20)))
    assert added.count(True) == 1
    assert len(await store.events(100)) == 1


# webhook deliveries


async def test_a_delivery_is_claimed_once_until_its_ttl(store: StateStore, clock: FakeClock) -> None:
    assert await store.claim_delivery("d-1", ttl=10) is True
    assert await store.claim_delivery("d-1", ttl=10) is False
    assert await store.claim_delivery("d-2", ttl=10) is True
    clock.now = 9
    assert await store.claim_delivery("d-1", ttl=10) is False
    clock.now = 10
    assert await store.claim_delivery("d-1", ttl=10) is True


async def test_concurrent_claims_of_one_delivery_let_one_through(store: StateStore) -> None:
    claimed = await asyncio.gather(*(store.claim_delivery("d-1", ttl=60) for _ in range(20)))
    assert claimed.count(True) == 1


# canary analysis: samples and aborts


async def test_samples_add_up_per_key_and_field_over_the_slots_asked(store: StateStore) -> None:
    await store.add_samples(10, {"a": {"n": 2, "err": 1}, "b": {"n": 5}}, ttl=60)
    await store.add_samples(10, {"a": {"n": 1}}, ttl=60)
    await store.add_samples(11, {"a": {"n": 4, "le_100": 3}}, ttl=60)
    await store.add_samples(12, {}, ttl=60)
    assert await store.sum_samples("a", since=10) == {"n": 7, "err": 1, "le_100": 3}
    assert await store.sum_samples("a", since=11) == {"n": 4, "le_100": 3}
    assert await store.sum_samples("a", since=12) == {}
    assert await store.sum_samples("b", since=0) == {"n": 5}
    assert await store.sum_samples("nobody", since=0) == {}


async def test_samples_are_forgotten_after_their_ttl(store: StateStore, clock: FakeClock) -> None:
    await store.add_samples(1, {"a": {"n": 1}}, ttl=10)
    clock.now = 5
    await store.add_samples(2, {"a": {"n": 2}}, ttl=10)
    clock.now = 12  # slot 1 expired at 10; slot 2 lives until 15
    await store.add_samples(3, {"b": {"n": 1}}, ttl=10)
    assert await store.sum_samples("a", since=0) == {"n": 2}


async def test_concurrent_sample_writes_are_not_lost(store: StateStore) -> None:
    await asyncio.gather(*(store.add_samples(7, {"a": {"n": 1, "err": 1}}, ttl=60) for _ in range(25)))
    assert await store.sum_samples("a", since=7) == {"n": 25, "err": 25}


async def test_counts_may_be_booleans(store: StateStore) -> None:
    await store.add_samples(1, {"a": {"n": True, "err": False}}, ttl=60)  # bool is an int: callers count a flag
    await store.add_samples(1, {"a": {"n": True, "err": True}}, ttl=60)
    assert await store.sum_samples("a", since=0) == {"n": 2, "err": 1}


async def test_the_first_abort_wins_and_stays_until_dropped(store: StateStore) -> None:
    assert await store.aborts() == {}
    assert await store.abort("default:main:aaa", {"error_rate": 0.5}) is True
    assert await store.abort("default:main:aaa", {"error_rate": 0.9}) is False
    assert await store.abort("echo:canary:bbb", {"p99_ms": 4000.0}) is True
    assert await store.aborts() == {"default:main:aaa": {"error_rate": 0.5}, "echo:canary:bbb": {"p99_ms": 4000.0}}
    await store.drop_abort("default:main:aaa")
    await store.drop_abort("never:aborted:ccc")
    assert await store.aborts() == {"echo:canary:bbb": {"p99_ms": 4000.0}}
    assert await store.abort("default:main:aaa", {"error_rate": 0.7}) is True


async def test_concurrent_aborts_of_one_key_announce_one(store: StateStore) -> None:
    won = await asyncio.gather(*(store.abort("default:main:aaa", {"n": n}) for n in range(20)))
    assert won.count(True) == 1
    (record,) = (await store.aborts()).values()
    assert record == {"n": won.index(True)}


# wake-ups between processes


async def test_a_listener_ends_when_the_store_closes(make_store: Callable[..., StateStore]) -> None:
    store = make_store()
    await store.open()
    messages = store.listen()

    async def consume() -> None:
        async for _ in messages:
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    await store.close()
    await asyncio.wait_for(task, timeout=5)  # the promise: the loop ends, it does not hang


async def test_memory_listeners_hear_every_message_published_after_they_listen() -> None:
    store = MemoryStore()
    await store.open()
    early = store.listen()
    await store.publish("one")
    late = store.listen()
    await store.publish("two")
    await store.close()
    assert [m async for m in early] == ["one", "two"]
    assert [m async for m in late] == ["two"]


async def test_a_lease_is_held_by_one_holder_until_it_expires_or_is_released(
    store: StateStore, clock: FakeClock
) -> None:
    assert await store.lease("fetch:g", "g:0", 0.2)
    assert not await store.lease("fetch:g", "g:1", 0.2)  # another holder waits while it runs
    assert await store.lease("fetch:g", "g:0", 0.2)  # its holder renews it
    assert await store.lease("fetch:other", "g:1", 0.2)  # leases are apart by name
    clock.now += 1.0  # the store's clock (memory, SQLite) ...
    await asyncio.sleep(0.3)  # ... or Redis's own (a lease is judged by the server holders share)
    assert await store.lease("fetch:g", "g:1", 0.2)  # expired: taken over
    await store.release("fetch:g", "g:0")  # not its holder any more: nothing happens
    assert not await store.lease("fetch:g", "g:0", 0.2)
    await store.release("fetch:g", "g:1")
    assert await store.lease("fetch:g", "g:0", 0.2)  # released: taken at once


# -- the feedback role: runs answered and their scores --------------------------------------------------------------


async def test_a_run_is_answered_until_its_ttl_and_the_oldest_go_past_the_maximum(
    store: StateStore, clock: FakeClock
) -> None:
    await store.remember_runs([("r1", {"flow": "bot", "ref": "stable"}), ("r2", {"flow": "bot"})], ttl=10, max_runs=3)
    assert await store.answered("r1") == {"flow": "bot", "ref": "stable"}
    assert await store.answered("nope") is None
    clock.now = 5
    await store.remember_runs([("r3", {"n": 3}), ("r4", {"n": 4})], ttl=10, max_runs=3)
    assert await store.answered("r1") is None  # the oldest of four, past the maximum of three
    assert await store.answered("r4") == {"n": 4}
    clock.now = 10
    assert await store.answered("r2") is None  # expired at 10
    assert await store.answered("r3") == {"n": 3}
    await store.remember_runs([], ttl=10, max_runs=3)


async def test_a_later_score_of_a_slot_replaces_it_and_scores_come_oldest_first(
    store: StateStore, clock: FakeClock
) -> None:
    bounds = ScoreBounds(ttl=100, max_keys=5, max_scores=100)
    assert await store.add_score("bot", "liked", "liked|a", {"score": 0}, bounds)
    clock.now = 1
    assert await store.add_score("bot", "liked", "liked|b", {"score": 1}, bounds)
    clock.now = 2
    assert await store.add_score("bot", "liked", "liked|a", {"score": 1, "again": True}, bounds)
    assert await store.scores("bot") == [{"score": 1}, {"score": 1, "again": True}]
    assert await store.scores("other") == []


async def test_a_batch_of_scores_is_taken_in_turn_as_one_score_after_another(store: StateStore) -> None:
    bounds = ScoreBounds(ttl=100, max_keys=2, max_scores=3)
    batch = [("k1", "k1|a", {"n": 1}), ("k2", "k2|a", {"n": 2}), ("k3", "k3|a", {"n": 3}), ("k1", "k1|a", {"n": 4})]

    kept = await store.add_scores("bot", batch, bounds)

    # the third key is refused as add_score refuses it; a slot given twice keeps its later score
    assert kept == [True, True, False, True]
    assert sorted(s["n"] for s in await store.scores("bot")) == [2, 4]  # written at one instant: in any order
    assert await store.add_scores("bot", [("k2", "k2|b", {"n": 5}), ("k1", "k1|c", {"n": 6})], bounds) == [True] * 2
    assert len(await store.scores("bot")) == 3  # past three scores, one of the oldest went
    assert await store.add_scores("bot", [], bounds) == []


async def test_several_runs_are_read_at_once(store: StateStore, clock: FakeClock) -> None:
    await store.remember_runs([("r1", {"n": 1}), ("r2", {"n": 2})], ttl=10, max_runs=10)
    clock.now = 5
    await store.remember_runs([("r3", {"n": 3})], ttl=10, max_runs=10)
    clock.now = 11  # r1 and r2 expired

    assert await store.answered_many(["r1", "r3", "nope", "r3"]) == {"r3": {"n": 3}}
    assert await store.answered_many([]) == {}
    clock.now = 0
    ids = [f"r{n}" for n in range(1, 4)] + [f"x{n}" for n in range(1200)]  # more than one query's worth
    assert await store.answered_many(ids) == {"r1": {"n": 1}, "r2": {"n": 2}, "r3": {"n": 3}}


async def test_a_flow_takes_at_most_its_keys_and_scores_and_forgets_expired_ones(
    store: StateStore, clock: FakeClock
) -> None:
    bounds = ScoreBounds(ttl=10, max_keys=2, max_scores=3)
    for n, (flow, key, slot) in enumerate([("bot", "k1", "k1|u"), ("bot", "k2", "k2|u"), ("other", "k3", "k3|u")]):
        clock.now = n
        assert await store.add_score(flow, key, slot, {"n": n}, bounds)
    assert not await store.add_score("bot", "k3", "k3|u", {"n": 3}, bounds)  # a third key: refused
    clock.now = 3
    assert await store.add_score("bot", "k1", "k1|v", {"n": 4}, bounds)
    clock.now = 4
    assert await store.add_score("bot", "k1", "k1|w", {"n": 5}, bounds)  # a fourth score: the oldest goes
    assert await store.scores("bot") == [{"n": 1}, {"n": 4}, {"n": 5}]
    clock.now = 5
    assert not await store.add_score("bot", "k3", "k3|u", {"n": 6}, bounds)
    clock.now = 14  # every score expired: their keys are free again
    assert await store.scores("bot") == []
    assert await store.add_score("bot", "k3", "k3|u", {"n": 7}, bounds)
    assert await store.scores("bot") == [{"n": 7}]
