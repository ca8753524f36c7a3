"""A real `gitops-flow serve` for tests: the command line in its own process, on a loopback port, logging to a file.

This is what an operator runs, so what it answers (and what it logs) is what an attacker or a client meets: the
same settings from flags and environment, the same uvicorn configuration, the same logging.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.gitrepo import Remote

ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServeProcess:
    """A running `gitops-flow serve`: its address, an HTTP client, its log and the remote it follows."""

    url: str
    client: httpx.Client
    log: Path
    remote: Remote
    process: subprocess.Popen[bytes]
    data_dir: Path  # --data-dir: the clone and, by default, the state file state.db

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def reconcile(self) -> dict[str, Any]:
        """Fetch now, as a webhook or the poll would, and return the outcome."""
        body: dict[str, Any] = self.client.post("/admin/reconcile", headers=ADMIN).json()
        return body

    def wait_ready(self, timeout: float = 30.0) -> str:
        """Wait for the first good version; returns the sha /readyz names."""
        deadline = time.monotonic() + timeout
        while True:
            response = self.client.get("/readyz")
            if response.status_code == 200:
                sha: str = response.json()["version"]
                return sha
            if time.monotonic() > deadline:
                raise AssertionError(f"not ready after {timeout}s: {response.text}\n{self.log_text()}")
            time.sleep(0.05)

    def invoke(self, flow: str, input: Any, headers: Mapping[str, str] | None = None, **body: Any) -> httpx.Response:
        return self.client.post(f"/flows/{flow}/invoke", json={"input": input, **body}, headers=dict(headers or {}))


@contextmanager
def serve_process(
    remote: Remote,
    tmp_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    admin: bool = True,
    ready: bool = True,
    repo: str | None = None,
    workers: int | None = 1,
) -> Iterator[ServeProcess]:
    """`python -m gitops_flow serve` following ``remote``; ``env`` adds to a clean environment (no GITOPS_FLOW_*
    of the machine's), ``args`` to the command line, ``workers`` as ``--workers`` (None: not given, the default of
    one per core). ``repo`` is a URL to follow instead of ``remote``'s path, given in GITOPS_FLOW_REPO (as an
    operator gives a URL with a credential). Stops the process (and fails on a crash) at the end."""
    port = free_port()
    data = tmp_path / f"serve-{port}"
    data.mkdir(parents=True)
    log = data / "server.log"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GITOPS_FLOW_")}
    environ.update({"GITOPS_FLOW_ADMIN_TOKEN": ADMIN_TOKEN} if admin else {})
    environ.update(env or {})
    if repo is not None:
        environ["GITOPS_FLOW_REPO"] = repo
    command = [
        sys.executable,
        "-m",
        "gitops_flow",
        "serve",
        *(["--repo", remote.url] if repo is None else []),
        "--port",
        str(port),
        "--data-dir",
        str(data / "state"),
        "--poll-interval",
        "3600",
        *(["--workers", str(workers)] if workers is not None else []),  # None: the real default, one per core
        *args,
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=environ, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, timeout=30.0)
    harness = ServeProcess(url, client, log, remote, process, data / "state")
    try:
        deadline = time.monotonic() + 30.0
        while True:
            if process.poll() is not None:
                raise AssertionError(f"gitops-flow serve exited with {process.returncode}:\n{harness.log_text()}")
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"gitops-flow serve did not start:\n{harness.log_text()}")
            time.sleep(0.05)
        if ready:
            harness.wait_ready()
        yield harness
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def await_ready(process: subprocess.Popen[bytes], client: httpx.Client, log: Path, timeout: float) -> None:
    """Wait until a server started elsewhere (a container, an installed wheel) says ready; fails with its log when it
    exits or does not become ready within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, log.read_text()
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def answers_the_examples(client: httpx.Client, flow: str, question: Any) -> None:
    """Every example flow is served, and ``flow`` answers ``question``."""
    from tests.served import example_files

    flows = [n for n in example_files() if n.startswith("flows/") and n.endswith(".json")]  # not their knowledge
    for name in (n.removeprefix("flows/").removesuffix(".json") for n in flows):
        assert client.get(f"/flows/{name}/input_schema").status_code == 200, name
    answer = client.post(f"/flows/{flow}/invoke", json={"input": question})
    assert answer.status_code == 200, answer.text
