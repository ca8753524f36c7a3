"""The response cache: which flows it keeps answers of, under which key, and its bounds in memory and in Redis."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from gitops_flow.components.base import Component
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.flow.document import FlowSpec
from gitops_flow.flow.routing import CacheRule
from gitops_flow.guardrails.cache import Asked, MemoryCache, ResponseCache
from gitops_flow.guardrails.redis import RedisGuardrails
from tests.redisenv import RedisSpace

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def spec(*nodes: dict[str, Any]) -> FlowSpec:
    edges = [{"source": a["id"], "target": b["id"]} for a, b in zip(nodes, nodes[1:], strict=False)]
    return FlowSpec.model_validate({"version": 1, "name": "echo", "nodes": list(nodes), "edges": edges})


PROMPT = {"id": "prompt", "component": "PromptTemplate", "params": {"template": "Q: {question}"}}
FAKE = {"id": "llm", "component": "FakeChatModel", "params": {"responses": ["one"]}}
PARSER = {"id": "answer", "component": "StrOutputParser"}


def model(**params: Any) -> dict[str, Any]:
    return {"id": "llm", "component": "ChatModel", "params": {"model": "openai:gpt-4o-mini", **params}}


HISTORY = {"id": "history", "component": "ChatHistory"}


def cache(store: Any = None) -> ResponseCache:
    return ResponseCache(
        store or MemoryCache(1 << 20), ComponentRegistry.builtin(), max_entry_bytes=1000, max_entries=100
    )


def rule(**values: Any) -> CacheRule:
    return CacheRule.model_validate(values)


@pytest.mark.parametrize(
    ("nodes", "allow", "reason"),
    [
        ((PROMPT, FAKE, PARSER), [], None),
        ((PROMPT, model(temperature=0), PARSER), [], None),
        ((PROMPT, model(temperature=0.7), PARSER), [], "samples"),
        ((PROMPT, model(), PARSER), [], "samples"),  # the provider's default temperature is not 0
        ((PROMPT, model(temperature=0.7), PARSER), ["temperature"], None),
        ((HISTORY, PROMPT, FAKE, PARSER), [], "conversation"),
        ((HISTORY, PROMPT, FAKE, PARSER), ["history"], None),
        ((HISTORY, PROMPT, model(), PARSER), ["history"], "samples"),
    ],
    ids=[
        "fake-model",
        "temperature-0",
        "temperature-0.7",
        "default-temperature",
        "temperature-allowed",
        "history",
        "history-allowed",
        "history-allowed-still-samples",
    ],
)
async def test_which_flows_are_cached(nodes: tuple[dict[str, Any], ...], allow: list[str], reason: str | None) -> None:
    why = cache().why_not(rule(allow=allow), spec(*nodes), "blob1")

    if reason is None:
        assert why is None
    else:
        assert why is not None and reason in why


async def test_the_key_is_the_flow_its_blob_and_the_normalized_request() -> None:
    responses = cache()
    flow = spec(PROMPT, FAKE, PARSER)
    on = rule(ttl="5m")

    def key(content: str, value: Any, configurable: dict[str, Any] | None = None, **config: Any) -> str:
        lookup = responses.lookup(on, flow, content, Asked(value, {"configurable": configurable or {}, **config}))
        assert lookup is not None and lookup.ttl == 300
        return lookup.key

    base = key("blob1", {"question": "hi", "lang": "en"})
    assert base == key("blob1", json.loads('{"lang": "en", "question": "hi"}'))  # keys' order is not the request's
    # the routing keys chose the version (its blob is in the key); no built-in component reads them
    assert base == key("blob1", {"question": "hi", "lang": "en"}, {"session_id": "s", "user_id": "u"})
    assert base != key("blob2", {"question": "hi", "lang": "en"})  # another version of the flow's file
    assert base != key("blob1", {"question": "hi!", "lang": "en"})
    assert base != key("blob1", {"question": "hi", "lang": "en"}, {"temperature": 1})  # what a client configures
    assert base != key("blob1", {"question": "hi", "lang": "en"}, tags=["a"])  # what reaches the run's callbacks
    assert base.startswith("echo:blob1:")


async def test_nothing_is_cached_without_a_rule_a_blob_or_a_satisfied_rule() -> None:
    responses = cache()
    flow = spec(PROMPT, model(temperature=1), PARSER)
    assert responses.lookup(None, spec(PROMPT, FAKE, PARSER), "blob", Asked("hi")) is None
    assert responses.lookup(rule(), spec(PROMPT, FAKE, PARSER), None, Asked("hi")) is None
    assert responses.lookup(rule(), flow, "blob", Asked("hi")) is None


async def test_a_tweak_that_makes_a_model_sample_makes_its_run_uncached() -> None:
    responses = cache()
    still = spec(PROMPT, model(temperature=0), PARSER)
    sampling = spec(PROMPT, model(temperature=0.9), PARSER)  # the flow as a tweak {llm: {temperature: 0.9}} runs it
    assert responses.lookup(rule(), still, "blob", Asked("hi")) is not None
    assert responses.lookup(rule(), sampling, "blob", Asked("hi", tweaks={"llm": {"temperature": 0.9}})) is None


async def test_a_conversation_is_cached_only_with_its_session_and_the_turns_its_run_reads() -> None:
    responses = cache()
    flow, on = spec(HISTORY, PROMPT, FAKE, PARSER), rule(allow=["history"])

    def lookup(session: str | None, history: list[tuple[str, str]] | None) -> str | None:
        found = responses.lookup(on, flow, "blob", Asked("hi", {"configurable": {"session_id": session}}, {}, history))
        return found.key if found is not None else None

    assert lookup("s", None) is None  # its turns were not read
    assert lookup(None, []) is None  # no session: the run is refused anyway
    assert lookup("s", []) is not None
    assert lookup("s", []) != lookup("t", [])  # never across sessions, even both new
    assert lookup("s", []) != lookup("s", [("human", "hi"), ("ai", "one")])  # nor across turns of one


async def test_an_operators_component_may_read_the_routing_keys_so_they_are_in_its_key() -> None:
    registry = ComponentRegistry.builtin().extended([Component(name="Reads", target="tests.x:y", kind="transform")])
    responses = ResponseCache(MemoryCache(1000), registry, max_entry_bytes=1000, max_entries=10)
    flow = spec(PROMPT, FAKE, {"id": "own", "component": "Reads"})

    def key(**configurable: str) -> str:
        found = responses.lookup(rule(), flow, "blob", Asked("hi", {"configurable": configurable}))
        assert found is not None
        return found.key

    assert key(user_id="alice") != key(user_id="bob") != key()
    assert key(session_id="a") != key(session_id="b")
    assert key(flow_version="main") != key()
    unknown = spec(PROMPT, FAKE, {"id": "own", "component": "NotRegistered"})  # judged like an operator's
    keys = {responses.lookup(rule(), unknown, "blob2", Asked("hi", {"configurable": {"user_id": u}})) for u in "ab"}
    assert len({found.key for found in keys if found is not None}) == 2


async def test_answers_of_fake_models_never_mix_with_real_ones() -> None:
    flow = spec(PROMPT, FAKE, PARSER)
    real = cache().lookup(rule(), flow, "blob", Asked("hi"))
    fake = ResponseCache(
        MemoryCache(1000), ComponentRegistry.builtin(), max_entry_bytes=1000, max_entries=10, namespace="fake"
    ).lookup(rule(), flow, "blob", Asked("hi"))
    assert real is not None and fake is not None and real.key != fake.key


async def test_a_cached_null_is_a_hit_and_a_large_answer_is_not_kept() -> None:
    responses = cache()
    lookup = responses.lookup(rule(), spec(PROMPT, FAKE, PARSER), "blob", Asked("hi"))
    assert lookup is not None
    assert await responses.get(lookup) is None

    await responses.put(lookup, b"null")
    hit = await responses.get(lookup)
    assert hit is not None and hit.output is None

    other = responses.lookup(rule(), spec(PROMPT, FAKE, PARSER), "blob", Asked("other"))
    assert other is not None
    await responses.put(other, b'"' + b"x" * 2000 + b'"')  # past max_entry_bytes
    assert await responses.get(other) is None


async def test_memory_cache_expires_and_evicts_the_least_recently_used() -> None:
    clock = Clock()
    memory = MemoryCache(30, clock=clock)
    await memory.put("a", b"0123456789", 60, 100)
    await memory.put("b", b"0123456789", 60, 100)
    await memory.get("a")  # a is now the most recently used
    await memory.put("c", b"0123456789", 60, 100)
    await memory.put("d", b"0123456789", 60, 100)  # 40 bytes > 30: the least recently used (b) goes

    assert await memory.get("b") is None
    assert await memory.get("a") == b"0123456789"
    assert memory.bytes == 30 and len(memory) == 3

    await memory.put("e", b"0", 60, 2)  # at most two entries
    assert len(memory) == 2

    clock.now += 61
    assert await memory.get("e") is None and await memory.get("a") is None
    await memory.put("big", b"x" * 31, 60, 100)  # larger than the whole cache
    assert await memory.get("big") is None


async def test_redis_cache_keeps_at_most_its_entries_and_drops_the_soonest_to_expire(redis_space: RedisSpace) -> None:
    shared = RedisGuardrails(f"{redis_space.url}?prefix={redis_space.prefix}")
    try:
        store = shared.cache
        await store.put("echo:b:a", b"1", 100, 2)
        await store.put("echo:b:b", b"2", 10, 2)  # expires first
        await store.put("echo:b:c", b"3", 100, 2)

        assert await store.get("echo:b:b") is None
        assert await store.get("echo:b:a") == b"1" and await store.get("echo:b:c") == b"3"
        entries = [key for key in redis_space.keys() if key.startswith(f"{redis_space.prefix}cache:echo:")]
        assert entries == [f"{redis_space.prefix}cache:echo:b:a", f"{redis_space.prefix}cache:echo:b:c"]
    finally:
        await shared.close()


async def test_redis_cache_keeps_at_most_its_bytes_for_every_replica_together(redis_space: RedisSpace) -> None:
    url = f"{redis_space.url}?prefix={redis_space.prefix}"
    one, two = RedisGuardrails(url, cache_max_bytes=25), RedisGuardrails(url, cache_max_bytes=25)
    try:
        await one.cache.put("echo:b:a", b"0123456789", 100, 1000)
        await two.cache.put("echo:b:b", b"0123456789", 50, 1000)  # expires first
        await one.cache.put("echo:b:a", b"0123456789", 100, 1000)  # replaced: counted once
        assert await two.cache.get("echo:b:b") == b"0123456789"

        await two.cache.put("echo:b:c", b"0123456789", 100, 1000)  # 30 bytes > 25: the soonest to expire goes

        assert await one.cache.get("echo:b:b") is None
        assert await one.cache.get("echo:b:a") == b"0123456789" and await one.cache.get("echo:b:c") == b"0123456789"
        with redis.Redis.from_url(redis_space.url) as client:
            assert int(client.get(f"{redis_space.prefix}cache:bytes")) == 20
    finally:
        await one.close()
        await two.close()
