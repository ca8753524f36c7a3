"""A server under test: create_app over a real local Git remote, driven in-process or on a real loopback port."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from starlette.testclient import TestClient

from gitops_flow.app import create_app
from gitops_flow.config import Settings
from gitops_flow.server.endpoints import Deps
from gitops_flow.server.listener import ServerConfig
from gitops_flow.stores.base import StateStore
from tests.gitrepo import Remote

ROOT = Path(__file__).resolve().parent.parent
ADMIN = {"Authorization": "Bearer test-admin-token"}


def example_files() -> dict[str, str]:
    """The repository's example flows, and the documents they read (flows/knowledge/), as files to commit."""
    found = {f"flows/{p.name}": p.read_text() for p in sorted((ROOT / "flows").glob("*.json"))}
    found.update({f"flows/knowledge/{p.name}": p.read_text() for p in sorted((ROOT / "flows" / "knowledge").iterdir())})
    return found


def echo_flow(name: str = "echo", answer: str = "one", **extra: Any) -> str:
    """A prompt -> fake model -> parser flow answering ``answer``: a change of answer is a new version."""
    doc = {
        "version": 1,
        "name": name,
        "nodes": [
            {"id": "prompt", "component": "PromptTemplate", "params": {"template": "Q: {question}"}},
            {"id": "llm", "component": "FakeChatModel", "params": {"responses": [answer]}},
            {"id": "answer", "component": "StrOutputParser"},
        ],
        "edges": [{"source": "prompt", "target": "llm"}, {"source": "llm", "target": "answer"}],
        **extra,
    }
    return json.dumps(doc, indent=2)


def needs_a_secret(name: str = "echo") -> str:
    """``echo_flow`` with a real model whose key, OPENAI_API_KEY, test servers do not have: it fails to build there
    (missing-secret), while validation without secrets passes."""
    doc = json.loads(echo_flow(name))
    model = {"model": "openai:gpt-4o-mini", "api_key": {"$env": "OPENAI_API_KEY"}}
    doc["nodes"][1] = {"id": "llm", "component": "ChatModel", "params": model}
    return json.dumps(doc, indent=2)


def settings(remote: Remote, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "repo_url": remote.url,
        "data_dir": tmp_path / "server",
        "poll_interval": 3600.0,  # tests fetch on purpose, through /admin/reconcile
        "admin_token": "test-admin-token",
        "load_entry_points": False,
        "freeze_heap": False,  # read by `serve` only: create_app settles the heap only when given settle_heap
        **overrides,
    }
    return Settings(**values)


def wait_until(predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Served:
    """A client of a running server plus the remote it follows."""

    def __init__(self, client: Any, remote: Remote, app: Any) -> None:
        self.client = client
        self.remote = remote
        self.app = app

    @property
    def deps(self) -> Deps:
        deps: Deps = self.app.state.deps
        return deps

    def wait_ready(self) -> str:
        """Wait for the first good version; returns its sha."""
        wait_until(lambda: self.client.get("/readyz").status_code == 200, what="readiness")
        sha: str = self.client.get("/readyz").json()["version"]
        return sha

    def reconcile(self) -> dict[str, Any]:
        """Fetch now (what a webhook or the poll does) and return the outcome."""
        response = self.client.post("/admin/reconcile", headers=ADMIN)
        body: dict[str, Any] = response.json()
        return body

    def invoke(self, flow: str, input: Any, headers: dict[str, str] | None = None, **body: Any) -> Any:
        return self.client.post(f"/flows/{flow}/invoke", json={"input": input, **body}, headers=headers or {})


@contextmanager
def served(
    remote: Remote,
    tmp_path: Path,
    *,
    store: StateStore | None = None,
    wait: bool = True,
    settle_heap: Callable[[], None] | None = None,
    **overrides: Any,
) -> Iterator[Served]:
    """The app in-process (starlette's TestClient runs its lifespan), following ``remote``; ``settle_heap`` is what
    `serve` passes to settle the (process-wide) heap after deploys."""
    app = create_app(settings(remote, tmp_path, **overrides), store=store, settle_heap=settle_heap)
    with TestClient(app) as client:
        harness = Served(client, remote, app)
        if wait:
            harness.wait_ready()
        yield harness


@contextmanager
def on_loopback(remote: Remote, tmp_path: Path, **overrides: Any) -> Iterator[tuple[str, Any]]:
    """The app behind uvicorn as `serve` configures it (http_server), on 127.0.0.1 (a free port); yields (base URL,
    app)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = settings(remote, tmp_path, port=port, **overrides)
    app = create_app(config)
    server = uvicorn.Server(ServerConfig(app, config, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, what="uvicorn start")
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
