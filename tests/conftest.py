"""Fixtures for the tests that need Redis; without one they skip with the reason, or fail under CI=true."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import uuid4

import pytest
import redis

from tests.gitrepo import Remote
from tests.redisenv import DEFAULT_REDIS_URL, RedisServer, RedisSpace, unavailable


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    """An empty bare ``origin`` and its working clone on branch ``main`` (a module may give its own, with flows)."""
    return Remote.create(tmp_path)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The URL of a reachable Redis (REDIS_URL, or the machine's): skips (fails under CI) when there is none."""
    url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2) as client:
            client.ping()
    except redis.RedisError as exc:
        unavailable(f"no Redis at {url}: {exc}")
    return url


@pytest.fixture
def redis_space(redis_url: str) -> Iterator[RedisSpace]:
    """A fresh key prefix on the shared Redis; every key under it is deleted after the test."""
    space = RedisSpace(redis_url, f"gf-test:{uuid4().hex}:")
    yield space
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=space.prefix + "*", count=1000))
        if keys:
            client.unlink(*keys)


@pytest.fixture
def make_redis_server(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Starts throwaway Redis servers, killed after the test; skips (fails under CI) without redis-server on PATH."""
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not on PATH")
    servers: list[RedisServer] = []

    def make(*, password: str | None = None) -> RedisServer:
        server = RedisServer(tmp_path, password=password)
        servers.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def redis_server(make_redis_server: Callable[..., RedisServer]) -> RedisServer:
    """A started throwaway Redis with no password, killed after the test."""
    return make_redis_server()
