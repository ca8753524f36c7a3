"""Redis for the store tests: a test's own key prefix on a shared server, or a throwaway redis-server process."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def unavailable(reason: str) -> None:
    """Skip the test, or fail it under CI=true: CI has Redis, so a missing one is a broken set-up."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the tests that need it fail instead of skipping)")
    pytest.skip(reason)


@dataclass(frozen=True)
class RedisSpace:
    """A test's own part of a shared Redis: every key it makes starts with ``prefix``."""

    url: str
    prefix: str

    def keys(self) -> list[str]:
        with redis.Redis.from_url(self.url) as client:
            return sorted(key.decode() for key in client.scan_iter(match=self.prefix + "*", count=1000))


class RedisServer:
    """A redis-server process of the test's own on a free loopback port, keeping nothing on disk."""

    def __init__(self, workdir: Path, *, password: str | None = None) -> None:
        self.port = free_port()
        self.password = password
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        self._workdir = workdir
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self._process is None, "already running"
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        if self.password:
            command += ["--requirepass", self.password]
        self._process = subprocess.Popen(
            command, cwd=self._workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with self.client() as client:
                    client.ping()
                return
            except redis.ConnectionError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.02)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, socket_connect_timeout=0.5, socket_timeout=5)

    def stop(self) -> None:
        """Kill the server at once (no shutdown handshake), as a crash or a lost host looks to its clients."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
