"""Server-sent event streams over real HTTP against a real `gitops-flow serve` (issue 17): a client that goes away
mid-stream cancels its model's call, on every streaming route; keep-alive comments go out while a model is slow, and
LangServe's and LangFlow's own clients read such streams unchanged.

The slow model (tests/operator_components.py ``slow_stream``, registered by a components file) records what became
of each call to a file: a call that a client left must be recorded as cancelled or closed while its stream still had
most of its tokens to go, never as finished."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langflow_sdk import Client
from langserve import RemoteRunnable

from tests.gitrepo import Remote
from tests.process import ServeProcess, serve_process
from tests.served import wait_until

COMPONENTS = """\
components:
  SlowStream:
    target: tests.operator_components:slow_stream
    kind: model
"""
ROUTES = {  # name -> (path, body)
    "stream": ("/flows/{flow}/stream", {"input": {"question": "hi"}}),
    "stream_log": ("/flows/{flow}/stream_log", {"input": {"question": "hi"}}),
    "stream_events": ("/flows/{flow}/stream_events", {"input": {"question": "hi"}}),
    "langflow": ("/api/v1/run/{flow}?stream=true", {"input_value": "hi"}),
}


def slow_flow(name: str, record: Path, tokens: int, interval: float) -> str:
    params = {"record": str(record), "tokens": tokens, "interval": interval}
    return json.dumps(
        {
            "version": 1,
            "name": name,
            "nodes": [
                {"id": "prompt", "component": "PromptTemplate", "params": {"template": "Q: {question}"}},
                {"id": "llm", "component": "SlowStream", "params": params},
                {"id": "answer", "component": "StrOutputParser"},
            ],
            "edges": [{"source": "prompt", "target": "llm"}, {"source": "llm", "target": "answer"}],
        }
    )


def slow_name(route: str) -> str:
    """Each route leaves its own slow flow, so that each call's record is its own on the shared server."""
    return "slow-" + route.replace("_", "-")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServeProcess, Path]]:
    """One server for the file: no test changes its repository, and each reads only the records of its own flow."""
    tmp_path = tmp_path_factory.mktemp("sse")
    remote = Remote.create(tmp_path)
    (tmp_path / "components.yaml").write_text(COMPONENTS)
    remote.commit(
        {
            # 1,000 tokens over 50 s: a call that is not cancelled goes on long after the test has looked
            **{
                f"flows/{slow_name(route)}.json": slow_flow(slow_name(route), tmp_path / f"{route}.log", 1000, 0.05)
                for route in ROUTES
            },
            # 3 tokens 0.5 s apart, with keep-alive comments every 0.1 s between them
            "flows/pausing.json": slow_flow("pausing", tmp_path / "pausing.log", 3, 0.5),
        },
        "slow flows",
    )
    remote.push()
    env = {"GITOPS_FLOW_COMPONENTS": str(tmp_path / "components.yaml"), "GITOPS_FLOW_SSE_PING_INTERVAL": "0.1"}
    with serve_process(remote, tmp_path, env=env) as server:
        yield server, tmp_path


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _leave_mid_stream(server: ServeProcess, path: str, body: dict[str, Any]) -> bytes:
    """POST over a raw socket, read until the model's second token has arrived, then close the connection."""
    payload = json.dumps(body).encode()
    port = int(server.url.rsplit(":", 1)[1])
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n\r\n"
    ).encode()
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head + payload)
        while b"t1 " not in received:
            data = sock.recv(65536)
            assert data, f"the server closed the stream first: {received!r}"
            received += data
    return received


@pytest.mark.parametrize("route", list(ROUTES))
def test_a_client_that_goes_away_cancels_its_model_call(served: Any, route: str) -> None:
    server, tmp_path = served
    path, body = ROUTES[route]
    received = _leave_mid_stream(server, path.format(flow=slow_name(route)), body)
    assert received.startswith(b"HTTP/1.1 200")
    record = tmp_path / f"{route}.log"
    wait_until(lambda: len(_lines(record)) >= 2, timeout=10, what="the model call's end in its record")
    started, ended = _lines(record)
    assert started == "started"
    assert ended in ("cancelled", "closed")  # not "finished": that is 50 s of tokens away
    assert "Traceback" not in server.log_text()


@pytest.mark.parametrize("route", ["stream", "stream_log", "stream_events"])
def test_keep_alive_comments_go_out_while_a_model_is_slow(served: Any, route: str) -> None:
    server, _ = served
    path, body = ROUTES[route]
    response = server.client.post(path.format(flow="pausing"), json=body)
    assert response.status_code == 200
    text = response.text
    assert text.count(": ping\r\n\r\n") >= 2  # 0.5 s between tokens, a comment every 0.1 s of silence
    assert text.index("t0 ") < text.rindex(": ping") < text.index("t2 ")  # also between chunks, not only before
    assert text.endswith("event: end\r\n\r\n")


def test_langserves_client_reads_a_stream_with_keep_alive_comments(served: Any) -> None:
    server, _ = served
    remote = RemoteRunnable(f"{server.url}/flows/pausing/")
    chunks = list(remote.stream({"question": "hi"}))
    assert [c for c in chunks if c] == ["t0 ", "t1 ", "t2 "]  # (LangChain ends a model's stream with an empty chunk)

    async def logged() -> list[Any]:
        return [patch async for patch in remote.astream_log({"question": "hi"})]

    patches = asyncio.run(logged())
    assert sum(patches[1:], patches[0]).state["final_output"] == "t0 t1 t2 "


def test_langflows_client_reads_a_stream_with_keep_alive_lines(served: Any) -> None:
    server, _ = served
    raw = server.client.post("/api/v1/run/pausing?stream=true", json={"input_value": "hi"}).text
    assert "}\n\n\n" in raw  # a blank line kept the connection busy (LangFlow's stream is JSON, not named events)
    with Client(server.url) as client:
        chunks = list(client.stream("pausing", input_value="hi"))
    assert [c.data["chunk"] for c in chunks if c.event == "token"] == ["t0 ", "t1 ", "t2 "]
    assert chunks[-1].event == "end"


def test_a_keep_alive_that_cannot_be_sent_ends_the_stream_and_closes_its_events() -> None:
    """The listener's failure is the stream's: the writer stops waiting on the flow, the events are closed, and the
    error is raised (a plain ASGI call: no server sends can fail on purpose)."""
    from gitops_flow.server.sse import EventStream

    closed: list[str] = []

    async def events() -> Any:
        try:
            yield b"event: data\r\ndata: 1\r\n\r\n"
            await asyncio.sleep(2)  # a model that thinks: the failed ping (after 0.1 s) must end the wait
            yield b"never"
        finally:
            closed.append("closed")

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(60)
        return {"type": "http.disconnect"}

    sent: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        body = message.get("body", b"")
        if body.startswith(b": ping"):
            raise OSError("the socket is gone")
        sent.append(body)

    async def run() -> None:
        response = EventStream(events(), ping_interval=0.05)
        await response({"type": "http"}, receive, send)

    with pytest.raises(OSError, match="the socket is gone"):
        asyncio.run(run())
    assert closed == ["closed"]
    assert b"event: data\r\ndata: 1\r\n\r\n" in sent and b"never" not in sent


@pytest.mark.parametrize("value", ["-1", "nan", "86400", "often"])
def test_a_keep_alive_interval_out_of_bounds_is_refused_by_name(value: str) -> None:
    from gitops_flow.config import Settings
    from gitops_flow.exceptions import ConfigError

    with pytest.raises(ConfigError, match="sse_ping_interval"):
        Settings.from_env({"GITOPS_FLOW_SSE_PING_INTERVAL": value})
    assert Settings.from_env({"GITOPS_FLOW_SSE_PING_INTERVAL": "0"}).sse_ping_interval == 0  # 0: no keep-alive
