"""The request middleware: each request's context, and what a request leaves to do run before its answer ends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gitops_flow.observability.telemetry.context import RequestContext, current
from gitops_flow.observability.telemetry.middleware import RequestMiddleware


def run(app: Any, order: list[str]) -> None:
    """Drive ``app`` through the middleware, noting in ``order`` each message it sends."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        order.append(f"sent {message['type']}{' (more)' if message.get('more_body') else ''}")

    scope = {"type": "http", "method": "POST", "path": "/flows/echo/invoke", "headers": []}
    asyncio.run(RequestMiddleware(app)(scope, receive, send))


def leaving(order: list[str]) -> Any:
    """An app that leaves something to do (it notes "finished" in ``order``), then answers in ``chunks`` parts."""

    async def finish(context: RequestContext) -> None:
        order.append("finished")

    return finish


@pytest.mark.parametrize("chunks", [1, 3], ids=["one-body", "streamed"])
def test_what_a_request_leaves_to_do_runs_before_its_last_bytes_and_once(chunks: int) -> None:
    order: list[str] = []
    seen: list[RequestContext] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        context = current()
        assert context is not None
        seen.append(context)
        context.finalizers.append(leaving(order))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for index in range(chunks):
            await send({"type": "http.response.body", "body": b"x", "more_body": index < chunks - 1})

    run(app, order)

    assert order[-2:] == ["finished", "sent http.response.body"]
    assert order.count("finished") == 1
    assert seen[0].path == "/flows/echo/invoke" and seen[0].method == "POST"
    assert current() is None  # the context was the request's only


def test_a_request_that_fails_before_answering_still_does_what_it_left_to_do() -> None:
    order: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        context = current()
        assert context is not None
        context.finalizers.append(leaving(order))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run(app, order)
    assert order == ["finished"]
