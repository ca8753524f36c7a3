"""RedisStore beyond the contract: replicas sharing one server, the key layout, and a server that goes away."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
import redis

from gitops_flow.exceptions import StoreError
from gitops_flow.stores.base import ConversationQuota
from gitops_flow.stores.redis import RedisStore
from tests.redisenv import RedisServer, RedisSpace, unavailable

pytestmark = pytest.mark.anyio

LISTEN_TIMEOUT = 10.0  # seconds a test waits for a wake-up before it fails


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def opened(url: str, prefix: str, **options: Any) -> AsyncIterator[RedisStore]:
    store = RedisStore(url, prefix=prefix, **options)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def next_message(messages: AsyncIterator[str]) -> str:
    return await asyncio.wait_for(anext(messages), LISTEN_TIMEOUT)


# replicas: two stores on one server and prefix


async def test_two_replicas_agree_on_pins_under_concurrent_claims(redis_space: RedisSpace) -> None:
    async with opened(redis_space.url, redis_space.prefix) as one, opened(redis_space.url, redis_space.prefix) as two:
        claims = [(one if n % 2 else two).claim_pin("chat:s1", f"sha{n}", ttl=60) for n in range(50)]
        results = await asyncio.gather(*claims)
        assert len(set(results)) == 1
        await one.set_pin("chat:s2", "ccc", ttl=60)
        assert await two.claim_pin("chat:s2", "ddd", ttl=60) == "ccc"
        assert await two.pinned_versions() == {results[0], "ccc"}
        await two.drop_pin("chat:s2")
        assert await one.pinned_versions() == {results[0]}


async def test_two_replicas_record_a_deploy_act_on_a_delivery_and_announce_an_abort_once(
    redis_space: RedisSpace,
) -> None:
    async with opened(redis_space.url, redis_space.prefix) as one, opened(redis_space.url, redis_space.prefix) as two:
        stores = [one, two] * 10
        added = await asyncio.gather(*(s.add_event({"n": n}, once="deployed:aaa") for n, s in enumerate(stores)))
        claimed = await asyncio.gather(*(s.claim_delivery("d-1", ttl=60) for s in stores))
        won = await asyncio.gather(*(s.abort("chat:main:aaa", {"n": n}) for n, s in enumerate(stores)))
        assert added.count(True) == claimed.count(True) == won.count(True) == 1
        assert await one.events(10) == [(1, {"n": added.index(True)})]
        assert await two.aborts() == {"chat:main:aaa": {"n": won.index(True)}}


async def test_two_replicas_add_up_their_samples(redis_space: RedisSpace) -> None:
    async with opened(redis_space.url, redis_space.prefix) as one, opened(redis_space.url, redis_space.prefix) as two:
        writes = [s.add_samples(7, {"a": {"n": 1}, "b": {"err": 2}}, ttl=60) for s in [one, two] * 15]
        await asyncio.gather(*writes)
        assert await one.sum_samples("a", since=0) == {"n": 30}
        assert await two.sum_samples("b", since=7) == {"err": 60}


async def test_a_replica_hears_what_another_publishes_in_order(redis_space: RedisSpace) -> None:
    async with opened(redis_space.url, redis_space.prefix) as one, opened(redis_space.url, redis_space.prefix) as two:
        heard_by_one, heard_by_two = one.listen(), two.listen()
        for message in ("fetch", "deploy:aaa", "naïve ☃"):
            await two.publish(message)
        assert [await next_message(heard_by_one) for _ in range(3)] == ["fetch", "deploy:aaa", "naïve ☃"]
        assert [await next_message(heard_by_two) for _ in range(3)] == ["fetch", "deploy:aaa", "naïve ☃"]


async def test_prefixes_keep_deployments_apart(redis_space: RedisSpace) -> None:
    async with (
        opened(redis_space.url, redis_space.prefix + "a:") as a,
        opened(redis_space.url, redis_space.prefix + "b:") as b,
    ):
        heard_by_b = b.listen()
        await a.claim_pin("chat:s1", "aaa", ttl=60)
        await a.add_event({"kind": "deployed"}, once="deployed:aaa")
        await a.publish("for a only")
        await b.publish("for b")
        assert await b.claim_pin("chat:s1", "bbb", ttl=60) == "bbb"
        assert await b.add_event({"kind": "deployed"}, once="deployed:aaa") is True
        assert await next_message(heard_by_b) == "for b"


async def test_a_listener_made_after_close_ends_at_once(redis_space: RedisSpace) -> None:
    store = RedisStore(redis_space.url, prefix=redis_space.prefix)
    await store.open()
    await store.close()
    assert [m async for m in store.listen()] == []


# the key layout


async def workout(store: RedisStore) -> None:
    """One call of every writing method."""
    await store.claim_pin("chat:s1", "aaa", ttl=60)
    await store.append_turns("s1", [("human", "hi")], ttl=60, keep=10)
    await store.put_version("aaa", {"sha": "aaa"})
    await store.add_event({"kind": "deployed"}, once="deployed:aaa")
    await store.claim_delivery("d-1", ttl=60)
    await store.add_samples(3, {"chat:main:aaa": {"n": 1}}, ttl=60)
    await store.abort("chat:main:aaa", {"error_rate": 0.5})


async def test_every_key_is_under_the_prefix_and_expiring_ones_have_a_backstop_ttl(redis_server: RedisServer) -> None:
    async with opened(redis_server.url, "gf:") as store:
        await workout(store)
    with redis_server.client() as client:
        ttls = {key.decode(): client.pttl(key) for key in client.keys("*")}
    day_ms = 86_400_000
    assert {key: ttl > day_ms for key, ttl in ttls.items()} == {
        "gf:pin:sha": True,
        "gf:pin:expires": True,
        "gf:pin:count": True,
        "gf:turns:s1": True,  # its conversation's idle time after its last turn
        "gf:conversations": True,
        "gf:conversations:bytes": True,
        "gf:conversations:total": True,
        "gf:delivery:d-1": True,
        "gf:samples:3:chat:main:aaa": True,
        "gf:samples:slots:chat:main:aaa": True,
        "gf:samples:expires:chat:main:aaa": True,
        "gf:version:record": False,
        "gf:version:order": False,
        "gf:events": False,
        "gf:events:seq": False,
        "gf:once:events": False,
        "gf:abort:record": False,
    }
    assert all(ttl == -1 for key, ttl in ttls.items() if key.startswith(("gf:version", "gf:events", "gf:once")))


async def test_expired_pins_are_swept_so_pin_keys_hold_live_pins_only(redis_space: RedisSpace) -> None:
    now = [0.0]
    async with opened(redis_space.url, redis_space.prefix, clock=lambda: now[0]) as store:
        for n in range(100):
            await store.set_pin(f"chat:old{n}", f"old{n}", ttl=1)
        now[0] = 10
        await store.claim_pin("chat:new", "new", ttl=60)
        with redis.Redis.from_url(redis_space.url) as client:
            # each pin write sweeps a few expired pins, so the keys do not grow without a reader
            assert client.hlen(redis_space.prefix + "pin:sha") == 100 - 16 + 1
            assert await store.pinned_versions() == {"new"}
            assert client.hgetall(redis_space.prefix + "pin:sha") == {b"chat:new": b"new"}
            assert client.zrange(redis_space.prefix + "pin:expires", 0, -1) == [b"chat:new"]
            assert client.hgetall(redis_space.prefix + "pin:count") == {b"new": b"1"}


async def test_once_keys_are_forgotten_with_their_trimmed_events(redis_space: RedisSpace) -> None:
    async with opened(redis_space.url, redis_space.prefix, max_events=3) as store:
        for n in range(10):
            assert await store.add_event({"n": n}, once=f"deployed:{n}") is True
        assert await store.add_event({"n": 9}, once="deployed:9") is False  # still among the kept events
        with redis.Redis.from_url(redis_space.url) as client:
            assert client.zcard(redis_space.prefix + "once:events") == 3
        assert await store.add_event({"n": 0}, once="deployed:0") is True  # its event was trimmed long ago
        assert [e["n"] for _, e in await store.events(10)] == [0, 9, 8]


async def test_expired_sample_slots_are_deleted_when_their_key_is_written(redis_space: RedisSpace) -> None:
    now = [0.0]
    async with opened(redis_space.url, redis_space.prefix, clock=lambda: now[0]) as store:
        await store.add_samples(1, {"a": {"n": 1}}, ttl=10)
        now[0] = 20
        await store.add_samples(2, {"a": {"n": 2}}, ttl=10)
        assert await store.sum_samples("a", since=0) == {"n": 2}
    assert redis_space.keys() == [
        redis_space.prefix + "samples:2:a",
        redis_space.prefix + "samples:expires:a",
        redis_space.prefix + "samples:slots:a",
    ]


async def test_keys_with_separators_and_unicode_do_not_collide(redis_space: RedisSpace) -> None:
    async with opened(redis_space.url, redis_space.prefix) as store:
        keys = ["x", "5:x", "slots:x", "expires:x", "x:5"]
        await store.add_samples(5, {key: {"n": 10**n} for n, key in enumerate(keys)}, ttl=60)
        assert [await store.sum_samples(key, since=0) for key in keys] == [{"n": 10**n} for n in range(len(keys))]
        await store.append_turns("sess:ü", [("human", 'naïve ☃ "quoted"')], ttl=60, keep=10)
        assert await store.load_turns("sess:ü", 5) == [("human", 'naïve ☃ "quoted"')]


# a server that is not there, or goes away


async def test_open_fails_with_a_store_error_when_nothing_listens() -> None:
    store = RedisStore("redis://127.0.0.1:1/0", prefix="gf:")
    with pytest.raises(StoreError, match=r"Redis at redis://127.0.0.1:1/0 could not be reached: .*127.0.0.1:1"):
        await store.open()


@contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers, as a hung server does."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


async def test_open_fails_with_a_store_error_when_the_server_does_not_answer() -> None:
    with silent_server() as port:
        store = RedisStore(f"redis://127.0.0.1:{port}/0", prefix="gf:", timeout=0.2)
        with pytest.raises(StoreError, match="could not be reached: Timeout"):
            await store.open()


async def test_a_password_never_appears_in_errors_or_repr(make_redis_server: Callable[..., RedisServer]) -> None:
    server = make_redis_server(password="s3cret-pw")
    wrong = RedisStore(f"redis://app:wr0ng-pw@127.0.0.1:{server.port}/0")
    with pytest.raises(StoreError) as refused:
        await wrong.open()
    assert "wr0ng-pw" not in str(refused.value)
    assert f"redis://app:***@127.0.0.1:{server.port}/0" in str(refused.value)

    store = RedisStore(server.url, prefix="gf:")
    assert "s3cret-pw" not in repr(store)
    await store.open()
    try:
        server.stop()
        with pytest.raises(StoreError) as lost:
            await store.claim_pin("chat:s1", "aaa", ttl=60)
        assert "s3cret-pw" not in str(lost.value)
        assert lost.value.__cause__ is None and lost.value.__suppress_context__
    finally:
        await store.close()


async def test_a_lost_server_fails_calls_then_comes_back_with_its_listeners(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with opened(redis_server.url, "gf:") as store:
        messages = store.listen()
        await store.publish("before")
        assert await next_message(messages) == "before"

        redis_server.stop()
        with pytest.raises(StoreError, match="could not claim a session pin"):
            await store.claim_pin("chat:s1", "aaa", ttl=60)
        with pytest.raises(StoreError, match="could not publish a wake-up"):
            await store.publish("lost")

        with caplog.at_level(logging.WARNING, logger="gitops_flow.stores"):
            redis_server.start()  # the same port, empty: it kept nothing
            assert await store.claim_pin("chat:s1", "bbb", ttl=60) == "bbb"
            assert await heard_after_publishing(store, messages) == "after"
        assert "lost the wake-up channel" in caplog.text
        assert "listening for wake-ups on Redis at" in caplog.text


async def heard_after_publishing(store: RedisStore, messages: AsyncIterator[str]) -> str:
    """Publish "after" until the listener hears it: what is published while it re-subscribes is not heard."""
    listening = asyncio.ensure_future(next_message(messages))
    while not listening.done():
        await store.publish("after")
        await asyncio.wait([listening], timeout=0.05)
    return listening.result()


async def test_a_killed_subscription_is_made_again(redis_space: RedisSpace, caplog: pytest.LogCaptureFixture) -> None:
    name = "gf-test-" + redis_space.prefix.split(":")[1]  # this test's connections only: other tests share the server
    async with opened(redis_space.url, redis_space.prefix, client_name=name) as store:
        messages = store.listen()
        with redis.Redis.from_url(redis_space.url) as admin:
            subscribers = [c["id"] for c in admin.client_list(_type="pubsub") if c["name"] == name]
            assert len(subscribers) == 1
            with caplog.at_level(logging.WARNING, logger="gitops_flow.stores"):
                assert admin.client_kill_filter(_id=subscribers[0]) == 1
                assert await heard_after_publishing(store, messages) == "after"
        assert "lost the wake-up channel" in caplog.text


# the CI rule of the fixtures


def test_without_redis_a_test_skips_but_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no Redis"):
        unavailable("no Redis")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no Redis"):
        unavailable("no Redis")


async def test_a_conversation_kept_before_the_quota_is_counted_at_its_next_turn(redis_server: RedisServer) -> None:
    async with opened(redis_server.url, "gf:") as store:
        await store.append_turns("old", [("human", "x" * 1000)], ttl=60, keep=10)
        with redis_server.client() as client:
            client.delete("gf:conversations:bytes", "gf:conversations:total")  # as an earlier release left it
        quota = ConversationQuota(max_sessions=10, max_bytes=2500)
        await store.append_turns("old", [("ai", "y" * 1000)], ttl=60, keep=10, quota=quota)
        with redis_server.client() as client:
            assert client.hget("gf:conversations:bytes", "old") == b"2000"
            assert client.get("gf:conversations:total") == b"2000"
        await store.append_turns("new", [("human", "z" * 1000)], ttl=60, keep=10, quota=quota)
        assert await store.load_turns("old", 10) == []  # the quota saw the old one's turns
