"""githost/http.py and githost/outbox.py: outbound calls whose failures say whether to retry, and an outbox that
retries with backoff, in order, within bounds. Servers are real (uvicorn on loopback); waits are recorded, not
slept."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gitops_flow.exceptions import HostError, HostRejected, HostUnavailable
from gitops_flow.githost.http import Outbound, host_of
from gitops_flow.githost.outbox import Backoff, Outbox


class Script:
    """A receiver that answers from a script: each request takes the next (status, headers, body)."""

    def __init__(self, *answers: tuple[int, dict[str, str], bytes]) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[str, dict[str, str], bytes]] = []

    async def handle(self, request: Request) -> Response:
        self.requests.append((request.url.path, dict(request.headers), await request.body()))
        status, headers, body = self.answers.pop(0) if self.answers else (200, {}, b"{}")
        return Response(body, status, headers, media_type="application/json")


@contextmanager
def receiver(script: Script) -> Iterator[str]:
    app = Starlette(routes=[Route("/{path:path}", script.handle, methods=["GET", "POST", "PATCH"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def call(url: str, **options: Any) -> Any:
    async def run() -> Any:
        client = Outbound(url, **options)
        try:
            return await client.request("POST", "/hook", json={"a": 1})
        finally:
            await client.aclose()

    return asyncio.run(run())


def test_a_json_answer_is_read_and_the_token_sent() -> None:
    script = Script((201, {"x-thing": "1"}, b'{"id": 7}'))
    with receiver(script) as url:
        reply = call(url, token=lambda: "t0ken")
    assert (reply.status, reply.body, reply.headers["x-thing"]) == (201, {"id": 7}, "1")
    path, headers, body = script.requests[0]
    assert (path, headers["authorization"], body) == ("/hook", "Bearer t0ken", b'{"a":1}')
    assert headers["user-agent"] == "gitops-flow" and headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    "status, headers, kind, wait",
    [
        (500, {}, HostUnavailable, None),
        (502, {}, HostUnavailable, None),
        (429, {"retry-after": "7"}, HostUnavailable, 7.0),
        (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1000030"}, HostUnavailable, 30.0),
        (403, {"retry-after": "60"}, HostUnavailable, 60.0),  # GitHub's secondary rate limit
        (401, {}, HostRejected, None),
        (403, {}, HostRejected, None),
        (404, {}, HostRejected, None),
        (422, {}, HostRejected, None),
        (302, {"location": "https://elsewhere.example/steal"}, HostRejected, None),
    ],
    ids=["500", "502", "429", "rate-limit", "secondary", "401", "403", "404", "422", "redirect"],
)
def test_failures_say_whether_retrying_helps(status: int, headers: dict[str, str], kind: type, wait: Any) -> None:
    script = Script((status, headers, b'{"message": "nope", "errors": [{"message": "why"}]}'))
    with receiver(script) as url, pytest.raises(HostError) as caught:
        call(url, clock=lambda: 1_000_000.0)
    assert type(caught.value) is kind
    assert caught.value.retryable is (kind is HostUnavailable)
    assert caught.value.status == status
    if isinstance(caught.value, HostUnavailable):
        assert caught.value.retry_after == wait
    assert len(script.requests) == 1  # a redirect is never followed


def test_messages_name_the_host_never_the_path_or_the_token() -> None:
    secret_path = "/services/T000/B000/XXXXsecretXXXX"
    script = Script((404, {}, b'{"message": "no_service"}'))
    with receiver(script) as url, pytest.raises(HostRejected) as caught:
        call(url + secret_path, token=lambda: "tok-123456")
    text = str(caught.value)
    assert text == f"POST {host_of(url)} answered 404: no_service"
    assert "secret" not in text and "tok-123456" not in text


def test_an_unreachable_host_is_retryable() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(HostUnavailable, match=rf"POST http://127.0.0.1:{port}: ConnectError"):
        call(f"http://127.0.0.1:{port}/x/secret-path")


def test_an_answer_past_the_bound_is_refused() -> None:
    script = Script((200, {}, b'{"a": "' + b"x" * 5000 + b'"}'))
    with receiver(script) as url, pytest.raises(HostRejected, match="larger than 1,000 bytes"):
        call(url, max_answer_bytes=1000)


# -- the outbox --------------------------------------------------------------------------------------------------


class Sender:
    """Fails each item as told, then succeeds; records what it was given and the waits asked for."""

    def __init__(self, plan: dict[str, list[HostError]]) -> None:
        self.plan = plan
        self.sent: list[str] = []
        self.tries: list[str] = []
        self.waits: list[float] = []

    async def send(self, item: str) -> None:
        self.tries.append(item)
        failures = self.plan.get(item, [])
        if failures:
            raise failures.pop(0)
        self.sent.append(item)

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)


def run_outbox(sender: Sender, items: list[str], **options: Any) -> Outbox[str]:
    async def go() -> Outbox[str]:
        box: Outbox[str] = Outbox("test", sender.send, sleep=sender.sleep, rand=lambda: 1.0, **options)
        for item in items:
            box.put(item)
        task = asyncio.create_task(box.run())
        assert await box.drain(10)
        task.cancel()
        return box

    return asyncio.run(go())


def test_items_are_retried_with_growing_waits_in_order() -> None:
    sender = Sender({"a": [HostUnavailable("down"), HostUnavailable("down"), HostUnavailable("down")]})
    box = run_outbox(sender, ["a", "b"], backoff=Backoff(first=1.0, factor=2.0, most=3.0, attempts=5))
    assert sender.sent == ["a", "b"]  # b waits for a: statuses of one commit keep their order
    assert sender.waits == [1.0, 2.0, 3.0]  # doubling, capped at `most`
    assert (box.health.sent, box.health.failed, box.health.last_error) == (2, 0, None)


def test_a_wait_the_host_asks_for_is_honoured() -> None:
    sender = Sender({"a": [HostUnavailable("slow down", retry_after=42.0)]})
    run_outbox(sender, ["a"], backoff=Backoff(first=1.0))
    assert sender.waits == [42.0]


def test_a_refused_item_is_given_up_at_once_and_the_next_goes() -> None:
    sender = Sender({"a": [HostRejected("bad token", status=401)]})
    box = run_outbox(sender, ["a", "b"])
    assert sender.tries == ["a", "b"] and sender.waits == []
    assert (box.health.failed, box.health.sent) == (1, 1)
    assert box.health.last_error is None  # b went through after a was refused


def test_an_item_is_given_up_after_its_attempts() -> None:
    sender = Sender({"a": [HostUnavailable("down")] * 10})
    box = run_outbox(sender, ["a"], backoff=Backoff(attempts=3))
    assert sender.tries == ["a"] * 3 and len(sender.waits) == 2
    assert (box.health.failed, box.health.last_error) == (1, "down")


def test_a_full_outbox_drops_its_oldest() -> None:
    sender = Sender({})
    box = run_outbox(sender, ["a", "b", "c", "d"], capacity=2)
    assert sender.sent == ["c", "d"] and box.health.dropped == 2


def test_jitter_keeps_a_wait_between_half_and_all_of_the_step() -> None:
    backoff = Backoff(first=2.0, factor=2.0, most=100.0)
    assert backoff.delay(3, rand=lambda: 0.0) == 4.0
    assert backoff.delay(3, rand=lambda: 1.0) == 8.0
