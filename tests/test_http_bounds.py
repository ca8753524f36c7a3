"""Bounded work against a real `gitops-flow serve`: request heads, slow and silent clients, open connections, Host
names, content types, JSON nesting and batches (issue 11). Raw sockets play the clients that misbehave; httpx,
LangServe's RemoteRunnable and the LangFlow SDK's request play the ones that do not."""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gitops_flow.githost import github_webhook as webhook
from tests.gitrepo import Remote
from tests.process import ADMIN, ServeProcess, serve_process
from tests.served import echo_flow, wait_until

DEADLINE = 15.0  # seconds a socket waits for the server: a server that never answers fails the test, not hangs it
SECRET = "webhook-secret"
OVERLAP = """
import asyncio
from langchain_core.runnables import RunnableLambda

running = most = 0


def overlap():
    async def run(value):
        global running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.2)
        running -= 1
        return most

    return RunnableLambda(run)
"""


def flow(name: str, *nodes: dict[str, Any]) -> str:
    ids = [n["id"] for n in nodes]
    edges = [{"source": a, "target": b} for a, b in zip(ids, ids[1:], strict=False)]
    return json.dumps({"version": 1, "name": name, "nodes": list(nodes), "edges": edges})


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


# -- raw HTTP ------------------------------------------------------------------------------------------------------


Connect = Callable[..., socket.socket]


@pytest.fixture
def connect() -> Iterator[Connect]:
    """``connect(server, rcvbuf=None)``: a client socket to the server, closed after the test."""
    made: list[socket.socket] = []

    def make(server: ServeProcess, *, rcvbuf: int | None = None) -> socket.socket:
        sock = socket.socket()
        made.append(sock)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(DEADLINE)
        sock.connect(("127.0.0.1", port(server)))
        return sock

    yield make
    for sock in made:
        sock.close()


def port(server: ServeProcess) -> int:
    return int(server.url.rsplit(":", 1)[1])


def head(path: str = "/healthz", method: str = "GET", *lines: str, host: str = "127.0.0.1") -> bytes:
    return "\r\n".join([f"{method} {path} HTTP/1.1", f"Host: {host}", *lines, "", ""]).encode()


def until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset ends it too)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def one_response(sock: socket.socket) -> tuple[int, bytes]:
    """Read one response of a kept-alive connection (status, body), by its Content-Length, and not a byte more (the
    next response may follow in the same packet)."""
    top = b""
    while not top.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        assert byte, f"the server closed the connection: {top!r}"
        top += byte
    length = int(re.search(rb"content-length: (\d+)", top, re.I).group(1))  # type: ignore[union-attr]
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        assert chunk, f"the server closed the connection: {top + body!r}"
        body += chunk
    return int(top.split()[1]), body


def refusal(raw: bytes) -> tuple[int, str]:
    """The status and error code of a response the server closed the connection after."""
    top, _, body = raw.partition(b"\r\n\r\n")
    assert b"connection: close" in top.lower(), raw[:300]
    return int(top.split()[1]), json.loads(body)["error"]["code"]


def trickle(sock: socket.socket, byte: bytes = b"a", every: float = 0.2, most: int = 50) -> bytes:
    """Send ``byte`` every ``every`` seconds (a slow client that never stops) until the server answers or closes."""
    sock.settimeout(every)
    for _ in range(most):
        try:
            answer = sock.recv(65536)
        except TimeoutError:
            sock.sendall(byte)
            continue
        sock.settimeout(DEADLINE)
        return answer + until_closed(sock) if answer else answer
    raise AssertionError(f"the server still listens after {most} bytes, {most * every:.0f}s apart")


def requests_counted(server: ServeProcess, flow_name: str) -> dict[str, float]:
    """gitops_flow_requests_total of one flow, by outcome."""
    counted: dict[str, float] = {}
    for line in server.client.get("/metrics").text.splitlines():
        if line.startswith("gitops_flow_requests_total{") and f'flow="{flow_name}"' in line:
            outcome = re.search(r'outcome="(\w+)"', line).group(1)  # type: ignore[union-attr]
            counted[outcome] = counted.get(outcome, 0.0) + float(line.rsplit(" ", 1)[1])
    return counted


# -- one server for the module -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """A real serve with short timeouts (1 s), a batch concurrency of 3 and the default limits otherwise, serving
    echo (a prompt, a fake model), same (its input, unchanged) and overlap (how many runs overlapped)."""
    tmp = tmp_path_factory.mktemp("bounds")
    module = f"gf_overlap_{uuid.uuid4().hex[:8]}"
    (tmp / f"{module}.py").write_text(OVERLAP)
    components = tmp / "components.yaml"
    components.write_text(f"components:\n  Overlap:\n    target: {module}:overlap\n    kind: transform\n")
    remote = Remote.create(tmp)
    remote.commit(
        {
            "flows/echo.json": echo_flow(),
            "flows/same.json": flow("same", {"id": "same", "component": "Passthrough"}),
            "flows/overlap.json": flow("overlap", {"id": "o", "component": "Overlap"}),
        },
        "three flows",
    )
    remote.push()
    env = {
        "PYTHONPATH": os.pathsep.join([str(tmp), os.environ.get("PYTHONPATH", "")]),
        "GITOPS_FLOW_COMPONENTS": str(components),
        "GITOPS_FLOW_WEBHOOK_SECRET": SECRET,
        "GITOPS_FLOW_HEADER_TIMEOUT": "1",
        "GITOPS_FLOW_BODY_TIMEOUT": "1",
        "GITOPS_FLOW_KEEP_ALIVE_TIMEOUT": "1",
        "GITOPS_FLOW_SEND_TIMEOUT": "1",
        "GITOPS_FLOW_BATCH_CONCURRENCY": "3",
    }
    with serve_process(remote, tmp, env=env) as harness:
        harness.client.headers["connection"] = "close"  # its requests never meet the 1 s keep-alive
        yield harness
        assert "Traceback" not in harness.log_text()


# -- request heads -------------------------------------------------------------------------------------------------


def test_a_head_past_the_size_limit_is_refused_with_431(connect: Connect, server: ServeProcess) -> None:
    sock = connect(server)
    sock.sendall(head("/healthz", "GET", *[f"X-Pad-{n}: {'p' * 8000}" for n in range(5)]))  # 40 KB of headers
    assert refusal(until_closed(sock)) == (431, "headers-too-large")


def test_more_headers_than_the_limit_are_refused_with_431(connect: Connect, server: ServeProcess) -> None:
    sock = connect(server)
    sock.sendall(head("/healthz", "GET", *[f"X-H{n}: 1" for n in range(99)]))  # 100 with Host: the limit
    assert one_response(sock)[0] == 200
    sock.sendall(head("/healthz", "GET", *[f"X-H{n}: 1" for n in range(100)]))
    assert refusal(until_closed(sock)) == (431, "too-many-headers")


@pytest.mark.parametrize("shape", ["many-headers", "one-header"])
def test_three_clients_sending_100_mb_of_headers_are_cut_off(
    connect: Connect, server: ServeProcess, shape: str
) -> None:
    """The reproduction: 3 connections sending 100 MB of headers each took the server from 87 to 375 MB. Now the
    server stops reading each after the limit (32 KiB): what it took is at most what the sockets' buffers hold."""
    chunk = (
        b"".join(b"X-Pad-%d: %s\r\n" % (n, b"p" * 8000) for n in range(8))
        if shape == "many-headers"
        else b"p" * 64000  # one header's value, never ending
    )
    taken = []
    for _ in range(3):
        sock = connect(server)
        sent = 0
        try:
            sock.sendall(head("/healthz", "GET", "X-Start: 1").removesuffix(b"\r\n"))
            sock.sendall(b"X-Big: " if shape == "one-header" else b"")
            while sent < 100_000_000:
                sock.sendall(chunk)
                sent += len(chunk)
        except (ConnectionResetError, BrokenPipeError):
            pass
        taken.append(sent)
        sock.close()
    assert max(taken) < 16_000_000, taken
    assert server.client.get("/healthz").status_code == 200


# -- slow and silent clients ---------------------------------------------------------------------------------------


def test_a_connection_that_sends_nothing_is_closed(connect: Connect, server: ServeProcess) -> None:
    sock = connect(server)
    assert until_closed(sock) == b""


def test_a_head_that_trickles_in_is_refused_with_408(connect: Connect, server: ServeProcess) -> None:
    """Slowloris: a byte every 0.2 s keeps a read timeout waiting forever; the head's whole time is bounded."""
    sock = connect(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    assert refusal(trickle(sock)) == (408, "header-timeout")


def test_a_body_that_trickles_in_is_refused_with_408_and_one_log_line(connect: Connect, server: ServeProcess) -> None:
    sock = connect(server)
    sock.sendall(head("/flows/echo/invoke", "POST", "Content-Type: application/json", "Content-Length: 100"))
    sock.sendall(b'{"input": ')
    assert refusal(trickle(sock)) == (408, "body-timeout")
    wait_until(lambda: "went away while sending the body of POST /flows/echo/invoke" in server.log_text())
    assert "Traceback" not in server.log_text()


def test_1100_slow_connections_are_all_let_go(connect: Connect, server: ServeProcess) -> None:
    """The reproduction: 1,100 connections that send part of a head were held open indefinitely. Now each is
    answered 408 after the head timeout, or 503 at once past the connection limit (1,000)."""
    socks = []
    for _ in range(1100):
        sock = connect(server)
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        except (ConnectionResetError, BrokenPipeError):
            pass  # refused at once
        socks.append(sock)
    answers = [until_closed(sock) for sock in socks]
    for sock in socks:
        sock.close()
    answered = [refusal(answer) for answer in answers if answer]  # a refusal at once may be lost to a reset
    assert len(answered) >= 1000 and {status for status, _ in answered} <= {408, 503}, answered
    assert server.client.get("/healthz").status_code == 200


def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout(
    connect: Connect, server: ServeProcess
) -> None:
    sock = connect(server)
    sock.settimeout(4.0)  # the setting is 1 s; uvicorn's own default of 5 s would fail this
    sock.sendall(head("/healthz"))
    assert one_response(sock)[0] == 200
    assert until_closed(sock) == b""


def test_a_client_that_leaves_a_response_unread_is_dropped(connect: Connect, server: ServeProcess) -> None:
    """Eight pipelined answers of 900 KB that the client never reads: more than the kernel buffers hold, so the
    server's own buffer fills; it gives up on the client instead of holding the answers for ever."""
    body = json.dumps({"input": "x" * 900_000}).encode()
    request = head("/flows/same/invoke", "POST", "Content-Type: application/json", f"Content-Length: {len(body)}")
    sock = connect(server, rcvbuf=4096)
    try:
        sock.sendall((request + body) * 8)
    except (ConnectionResetError, BrokenPipeError):
        pass  # dropped while the requests were still being sent
    wait_until(lambda: "left a response unread" in server.log_text(), what="the unread response to be dropped")
    assert len(until_closed(sock)) < 8 * 900_000


def test_a_client_that_goes_away_mid_body_is_one_info_line(connect: Connect, server: ServeProcess) -> None:
    """The reproduction: this logged two ERROR tracebacks."""
    sock = connect(server)
    sock.sendall(head("/flows/same/invoke", "POST", "Content-Type: application/json", "Content-Length: 1000"))
    sock.sendall(b'{"input": "')
    time.sleep(0.1)  # the server is reading the body
    sock.close()
    wait_until(lambda: "went away while sending the body of POST /flows/same/invoke" in server.log_text())
    lines = [line for line in server.log_text().splitlines() if "went away" in line and "/flows/same/" in line]
    assert len(lines) == 1 and " INFO " in lines[0], lines
    assert "Traceback" not in server.log_text() and " ERROR " not in server.log_text()


def test_pipelined_requests_are_answered_in_order(connect: Connect, server: ServeProcess) -> None:
    """Requests sent before their answers (pipelining) are all answered, none refused by a timer."""
    body = json.dumps({"input": "slow enough"}).encode()
    post = head("/flows/same/invoke", "POST", "Content-Type: application/json", f"Content-Length: {len(body)}") + body
    sock = connect(server)
    sock.sendall(post + head() + post)
    answers = [one_response(sock) for _ in range(3)]
    assert [status for status, _ in answers] == [200, 200, 200]
    assert json.loads(answers[1][1]) == {"status": "ok"} and json.loads(answers[2][1])["output"] == "slow enough"


def test_an_answer_longer_than_the_timeouts_is_not_cut_by_the_next_requests_clock(
    connect: Connect, server: ServeProcess
) -> None:
    """A batch that takes 1.2 s (18 runs of 0.2 s, 3 at a time) while the next request's head waits half-sent: the
    clocks (1 s) measure the client, not the server's own work, so both are answered."""
    body = json.dumps({"inputs": list(range(18))}).encode()
    sock = connect(server)
    sock.sendall(head("/flows/overlap/batch", "POST", "Content-Type: application/json", f"Content-Length: {len(body)}"))
    sock.sendall(body)
    time.sleep(0.1)  # a read of its own: the server counts it as a head begun, and starts its clock
    sock.sendall(head().removesuffix(b"\r\n"))  # the next head, all but its last line
    assert one_response(sock)[0] == 200
    sock.sendall(b"\r\n")
    assert one_response(sock) == (200, b'{"status":"ok"}')


def test_a_websocket_upgrade_is_answered_as_http(connect: Connect, server: ServeProcess) -> None:
    """Nothing here speaks WebSocket, and an upgraded connection would leave every bound above."""
    sock = connect(server)
    sock.sendall(head("/healthz", "GET", "Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13"))
    assert one_response(sock) == (200, b'{"status":"ok"}')
    sock.sendall(head())
    assert one_response(sock)[0] == 200


# -- Host ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST", "[::1]:{port}", "127.0.0.1"])
def test_a_loopback_server_answers_loopback_names(server: ServeProcess, host: str) -> None:
    response = server.client.get("/healthz", headers={"host": host.format(port=port(server))})
    assert response.status_code == 200


@pytest.mark.parametrize("host", ["evil.example:{port}", "localhost.evil.example", "127.0.0.1.nip.io:{port}"])
def test_a_loopback_server_refuses_other_names_against_dns_rebinding(server: ServeProcess, host: str) -> None:
    response = server.client.post(
        "/flows/echo/invoke", json={"input": {"question": "hi"}}, headers={"host": host.format(port=port(server))}
    )
    assert (response.status_code, response.json()["error"]["code"]) == (400, "host-not-allowed")


@pytest.mark.parametrize(
    "request_head",
    [b"GET /healthz HTTP/1.0\r\n\r\n", b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n"],
    ids=["none", "two"],
)
def test_a_request_without_one_host_is_refused_on_a_loopback_server(
    connect: Connect, server: ServeProcess, request_head: bytes
) -> None:
    sock = connect(server)
    sock.sendall(request_head)
    assert refusal(until_closed(sock)) == (400, "host-not-allowed")


def test_allowed_hosts_are_the_operators_choice(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    remote.commit({"flows/echo.json": echo_flow()}, "echo")
    remote.push()
    env = {"GITOPS_FLOW_ALLOWED_HOSTS": "flows.example.com, *.internal, 127.0.0.1"}  # the last for health checks
    with serve_process(remote, tmp_path, env=env, ready=False) as harness:

        def status(host: str) -> int:
            return harness.client.get("/healthz", headers={"host": host}).status_code

        assert [status(h) for h in ("flows.example.com", "FLOWS.example.com:443", "a.b.internal")] == [200] * 3
        assert [status(h) for h in ("localhost", "[::1]:80", "internal", "flows.example.com.evil")] == [400] * 4


def test_a_server_on_a_network_address_answers_any_host_by_default(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    remote.commit({"flows/echo.json": echo_flow()}, "echo")
    remote.push()
    with serve_process(remote, tmp_path, args=["--host", "0.0.0.0"]) as harness:
        assert harness.client.get("/healthz", headers={"host": "flows.example.com"}).status_code == 200


# -- connections ---------------------------------------------------------------------------------------------------


def test_connections_past_the_limit_are_answered_503_and_closed(connect: Connect, tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    remote.commit({"flows/echo.json": echo_flow()}, "echo")
    remote.push()
    env = {"GITOPS_FLOW_MAX_CONNECTIONS": "4", "GITOPS_FLOW_KEEP_ALIVE_TIMEOUT": "60"}
    with serve_process(remote, tmp_path, env=env, ready=False) as harness:
        harness.client.get("/healthz", headers={"connection": "close"})  # its pooled connection is closed
        held = [connect(harness) for _ in range(4)]
        for sock in held:
            sock.sendall(head())
            assert one_response(sock)[0] == 200  # kept alive: each holds one of the 4
        extra = connect(harness)
        assert refusal(until_closed(extra)) == (503, "too-many-connections")
        held.pop().close()

        def answered() -> bool:
            sock = connect(harness)
            sock.sendall(head("/healthz", "GET", "Connection: close"))
            return until_closed(sock).startswith(b"HTTP/1.1 200")

        wait_until(answered, what="a connection to be taken again once one is closed")
        for sock in held:
            sock.sendall(head())
            assert one_response(sock)[0] == 200


# -- content types -------------------------------------------------------------------------------------------------

ENDPOINTS = [
    ("/flows/echo/invoke", {"input": {"question": "hi"}}),
    ("/flows/echo/batch", {"inputs": [{"question": "hi"}]}),
    ("/flows/echo/stream", {"input": {"question": "hi"}}),
    ("/api/v1/run/echo", {"input_value": "hi"}),
]


@pytest.mark.parametrize(("path", "body"), ENDPOINTS, ids=["invoke", "batch", "stream", "run"])
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None]
)
def test_json_endpoints_refuse_bodies_that_are_not_sent_as_json(
    server: ServeProcess, path: str, body: Any, content_type: str | None
) -> None:
    """A page on any site can make a browser POST these types without asking (CORS simple requests)."""
    headers = {"content-type": content_type} if content_type else {}
    response = server.client.post(path, content=json.dumps(body).encode(), headers=headers)
    assert (response.status_code, response.json()["error"]["code"]) == (415, "unsupported-media-type")


@pytest.mark.parametrize(("path", "body"), ENDPOINTS, ids=["invoke", "batch", "stream", "run"])
@pytest.mark.parametrize("content_type", ["application/json", "Application/JSON; charset=utf-8", "application/x+json"])
def test_json_endpoints_take_json_with_parameters_and_suffixes(
    server: ServeProcess, path: str, body: Any, content_type: str
) -> None:
    response = server.client.post(path, content=json.dumps(body).encode(), headers={"content-type": content_type})
    assert response.status_code == 200, response.text


def test_the_admin_endpoints_take_json_or_no_body(server: ServeProcess) -> None:
    assert server.client.post("/admin/reconcile", headers=ADMIN).status_code == 200
    assert server.client.post("/admin/reconcile", headers=ADMIN, json={}).status_code == 200
    text = {**ADMIN, "content-type": "text/plain"}
    for path, body in [("/admin/reconcile", b"x"), ("/admin/abort", b'{"flow": "echo"}')]:
        refused = server.client.post(path, headers=text, content=body)
        assert (refused.status_code, refused.json()["error"]["code"]) == (415, "unsupported-media-type"), path


def test_clients_that_send_json_still_work(server: ServeProcess) -> None:
    """LangServe's RemoteRunnable, the LangFlow SDK's request (as its TypeScript client builds it) and a GitHub
    delivery, against the real server."""
    from langserve import RemoteRunnable

    remote = RemoteRunnable(f"{server.url}/flows/echo/", headers={"connection": "close"})
    assert remote.invoke({"question": "hi"}) == "one"
    assert remote.batch([{"question": "a"}, {"question": "b"}]) == ["one", "one"]
    assert "".join(remote.stream({"question": "hi"})) == "one"

    sdk = {"input_type": "chat", "output_type": "chat", "input_value": "hi", "tweaks": {}, "session_id": "s-1"}
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    response = server.client.post("/api/v1/run/echo", content=json.dumps(sdk).encode(), headers=headers)
    assert response.status_code == 200 and response.json()["session_id"] == "s-1"

    body = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
    delivery = {
        "content-type": "application/json",
        "x-github-event": "ping",
        "x-github-delivery": str(uuid.uuid4()),
        "x-hub-signature-256": webhook.sign(SECRET.encode(), body),
    }
    assert server.client.post("/webhooks/github", content=body, headers=delivery).json()["status"] == "pong"


# -- JSON nesting --------------------------------------------------------------------------------------------------


def test_input_nested_past_the_bound_is_a_422_on_every_json_endpoint_and_is_not_counted(server: ServeProcess) -> None:
    """The reproduction: input nested 300 deep was a 500 on invoke (counted as a success) and a reset stream."""
    before = requests_counted(server, "same")
    deep = nested(300)
    for path, body in [
        ("/flows/same/invoke", {"input": deep}),
        ("/flows/same/stream", {"input": deep}),
        ("/flows/same/batch", {"inputs": [deep]}),
        ("/api/v1/run/same", {"input_value": "hi", "tweaks": {"node": deep}}),
    ]:
        response = server.client.post(path, json=body)
        assert (response.status_code, response.json()["error"]["code"]) == (422, "too-deep"), path
        assert "64 levels" in response.json()["error"]["message"]
    past_orjson = b'{"input": ' + b"[" * 1100 + b"]" * 1100 + b"}"
    response = server.client.post(
        "/flows/same/invoke", content=past_orjson, headers={"content-type": "application/json"}
    )
    assert (response.status_code, response.json()["error"]["code"]) == (422, "too-deep")
    assert requests_counted(server, "same") == before


def test_input_nested_up_to_the_bound_is_answered(server: ServeProcess) -> None:
    before = requests_counted(server, "same")
    deepest = nested(63)  # 64 levels with the body around it
    invoked = server.client.post("/flows/same/invoke", json={"input": deepest})
    assert invoked.status_code == 200 and invoked.json()["output"] == deepest
    streamed = server.client.post("/flows/same/stream", json={"input": deepest})
    assert "event: end" in streamed.text and "event: error" not in streamed.text
    assert requests_counted(server, "same").get("ok", 0) == before.get("ok", 0) + 2


# -- batches -------------------------------------------------------------------------------------------------------


def test_a_batch_of_60000_inputs_is_refused_before_anything_runs(server: ServeProcess) -> None:
    """The reproduction: one anonymous 1 MiB body held 60,000 inputs, 78 s of work."""
    before = requests_counted(server, "echo")
    body = json.dumps({"inputs": [{"question": ""}] * 60_000}, separators=(",", ":")).encode()
    assert len(body) < 1024 * 1024
    response = server.client.post("/flows/echo/batch", content=body, headers={"content-type": "application/json"})
    assert (response.status_code, response.json()["error"]["code"]) == (413, "batch-too-large")
    assert response.json()["error"]["message"] == "the batch has 60,000 inputs; the limit is 100"
    assert requests_counted(server, "echo") == before


def test_a_batch_up_to_the_limit_runs(server: ServeProcess) -> None:
    response = server.client.post("/flows/echo/batch", json={"inputs": [{"question": "q"}] * 100})
    assert response.status_code == 200 and response.json()["output"] == ["one"] * 100
    too_many = server.client.post("/flows/echo/batch", json={"inputs": [{"question": "q"}] * 101})
    assert (too_many.status_code, too_many.json()["error"]["code"]) == (413, "batch-too-large")


def test_a_batch_runs_at_most_batch_concurrency_inputs_at_once(server: ServeProcess) -> None:
    """The reproduction: a 57 KB batch made 3,000 paid model calls, 1,000 at once."""
    response = server.client.post("/flows/overlap/batch", json={"inputs": list(range(12))})
    assert response.status_code == 200, response.text
    assert max(response.json()["output"]) == 3
