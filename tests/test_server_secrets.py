"""Secrets never leave the server: not in answers, not in /versions, not in its logs, even when a flow quotes one."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from langchain_core.runnables import Runnable, RunnableLambda
from starlette.testclient import TestClient

from gitops_flow.app import create_app
from gitops_flow.components import Component
from gitops_flow.stores.memory import MemoryStore
from tests.gitrepo import Remote
from tests.helpers import registry_with
from tests.served import Served, settings

SECRET = "sk-live-0123456789abcdef"


def leaky(*, api_key: str) -> Runnable[Any, Any]:
    """A component whose calls fail with a message quoting its key, as careless client libraries do."""

    def run(value: Any) -> Any:
        raise RuntimeError(f"the upstream refused key {api_key}")

    return RunnableLambda(run)


def test_a_failing_flow_that_quotes_its_secret_leaks_it_nowhere(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    remote = Remote.create(tmp_path)
    doc = {
        "version": 1,
        "name": "leaky",
        "nodes": [{"id": "call", "component": "Leaky", "params": {"api_key": {"$env": "UPSTREAM_KEY"}}}],
        "edges": [],
    }
    remote.commit({"flows/leaky.json": json.dumps(doc)})
    remote.push()
    registry = registry_with(Component("Leaky", leaky, "transform", "fails quoting its key"))
    app = create_app(
        settings(remote, tmp_path), store=MemoryStore(), registry=registry, secrets={"UPSTREAM_KEY": SECRET}
    )
    with caplog.at_level(logging.INFO), TestClient(app) as client:
        server = Served(client, remote, app)
        server.wait_ready()
        response = server.invoke("leaky", "hello")
        assert response.status_code == 500 and response.json()["error"]["code"] == "flow-failed"
        streamed = client.post("/flows/leaky/stream", json={"input": "hello"}).text
        assert "event: error" in streamed
        views = client.get("/versions").text + client.get("/history").text + client.get("/readyz").text
    logged = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    for text in (response.text, streamed, views, logged):
        assert SECRET not in text
    assert "the upstream refused key <$env:UPSTREAM_KEY>" in logged  # the log still says what happened
