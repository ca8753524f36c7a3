"""console/feed.py: pages hear of a change of what they show, of traffic at most every few seconds, and each stream
ends by itself."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable

import pytest

from gitops_flow.console.feed import Feed, Full


class World:
    def __init__(self) -> None:
        self.state: Hashable = 1
        self.traffic = 0

    async def fingerprint(self) -> Hashable:
        return self.state


async def next_event(stream: AsyncIterator[bytes]) -> str:
    while True:
        chunk = (await anext(stream)).decode()
        if "event:" in chunk:
            return chunk.split("event: ")[1].split("\n")[0]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_change_of_state_is_announced_and_traffic_only_now_and_then(anyio_backend: str) -> None:
    world = World()
    feed = Feed(world.fingerprint, lambda: world.traffic, poll=0.01, stats=3600, stream_seconds=60)
    runner = asyncio.create_task(feed.run())
    try:
        stream = feed.stream(None)
        assert (await anext(stream)).startswith(b"retry: ")
        assert await next_event(stream) == "hello"
        # the feed's first look at the state is a change of its own (the stream may have opened before it)
        while feed.seq < 1:
            await asyncio.sleep(0.01)
        world.state = 2
        while feed.seq < 2:
            await asyncio.sleep(0.01)
        assert await asyncio.wait_for(next_event(stream), 5) == "change"
        seq = feed.seq
        world.traffic += 10  # traffic alone: not within the stats interval
        await asyncio.sleep(0.1)
        assert feed.seq == seq
        await stream.aclose()
        assert feed.listeners == 0
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_stream_ends_by_itself_and_a_returning_page_catches_up(anyio_backend: str) -> None:
    world = World()
    feed = Feed(world.fingerprint, lambda: 0, poll=0.01, stream_seconds=0.05, max_listeners=1)
    stream = feed.stream(None)
    with pytest.raises(Full):
        feed.stream(None)
    chunks = [chunk async for chunk in stream]  # ends without anything happening
    assert b"event: hello" in chunks[1]
    feed.seq = 7
    late = feed.stream("3")
    await anext(late)
    assert await next_event(late) == "change"
    await late.aclose()
