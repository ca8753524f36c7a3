"""Server-sent event streams: their framing, keep-alive comments, and a client that goes away ending the run.

Every streaming route (LangServe's ``stream``, ``stream_log``, ``stream_events``; LangFlow's run API with a
stream) answers with an ``EventStream``, a plain ASGI response that

- sends each frame its events give as one write, with no copy beyond the one that puts the frame together
  (``frame``: the event's prefix, the JSON bytes as they are, the blank line);
- sends a keep-alive comment (``: ping``) once ``ping_interval`` seconds have passed without a frame, so that a
  proxy in front, which closes a connection that stays silent too long (nginx after 60 s, many load balancers
  sooner), keeps a long run's stream open; a client's parser skips comments (the SSE standard says so);
- listens for the client going away while it waits for the flow: a client that closes its connection cancels the
  run at once (the model's call is cancelled where it waits), not at the next chunk the flow would have sent, and
  the events' generators are closed before the response returns, so what they hold (a limit's place, a model's
  connection) is let go now, not when the garbage collector finds them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Mapping

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

PING = b": ping\r\n\r\n"
END = b"\r\n\r\n"
MEDIA_TYPE = "text/event-stream"


def prefix(event: str) -> bytes:
    """The bytes before an event's data: ``event: NAME`` and ``data: ``."""
    return b"event: " + event.encode() + b"\r\ndata: "


DATA = prefix("data")


def frame(head: bytes, data: bytes) -> bytes:
    """One event: ``head`` (from ``prefix``), then ``data`` (JSON, which never holds a line break), then the blank
    line that ends the event; one allocation of the frame's size."""
    return b"".join((head, data, END))


class EventStream(Response):
    """An ASGI response of server-sent events (see the module's docstring). ``events`` yields whole frames (an
    empty one is skipped); ``ping`` is the keep-alive comment (0 ``ping_interval``: none)."""

    def __init__(
        self,
        events: AsyncGenerator[bytes, None],
        *,
        headers: Mapping[str, str] | None = None,
        ping_interval: float = 15.0,
        ping: bytes = PING,
        media_type: str = MEDIA_TYPE,
    ) -> None:
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers(headers)  # Starlette's: the content type with its charset, no content length
        self.events = events
        self.ping_interval = ping_interval
        self.ping = ping
        self._sent = 0  # frames sent: the keep-alive pings only when it has not moved for a whole interval
        self._gone = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        # the writer runs in this task, in an anyio cancel scope: its cancellation is delivered at every wait until
        # the writer has left the scope (LangChain's astream_log waits for its run's task in a `finally`, and being
        # cancelled there cancels that task too). One plain asyncio task beside it listens for the client and sends
        # the keep-alive comments: an anyio task group would cost two spawned tasks per stream, CPU paid on every
        # token (the figures: docs/benchmarks.md, `serve_stream.py`)
        listener: asyncio.Task[None] | None = None
        try:
            with anyio.CancelScope() as cancel:
                listener = asyncio.get_running_loop().create_task(self._listen(receive, send, cancel))
                await self._write(send)
        finally:
            try:
                if listener is not None:
                    await _stopped(listener)
            finally:
                with contextlib.suppress(Exception):  # a generator cancelled mid-way may raise as it closes
                    await self.events.aclose()
        if not self._gone:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _write(self, send: Send) -> None:
        async for data in self.events:
            if data:
                self._sent += 1
                await send({"type": "http.response.body", "body": data, "more_body": True})

    async def _listen(self, receive: Receive, send: Send, cancel: anyio.CancelScope) -> None:
        """Cancels the writer when the client has gone away (the request's body has been read by then), and sends a
        keep-alive comment when a whole ``ping_interval`` has passed without a frame. A ping that cannot be sent
        ends the stream too (its error is raised once the writer has stopped)."""
        interval = self.ping_interval if self.ping_interval > 0 else None
        seen = -1
        try:
            while True:
                try:
                    async with asyncio.timeout(interval):
                        message = await receive()  # cancelled while waiting, it has taken no message
                except TimeoutError:
                    if self._sent == seen:
                        await send({"type": "http.response.body", "body": self.ping, "more_body": True})
                    seen = self._sent
                    continue
                if message["type"] == "http.disconnect":
                    self._gone = True
                    cancel.cancel()
                    return
        except Exception:
            cancel.cancel()
            raise


async def _stopped(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it; what it raised (a keep-alive comment that could not be sent) is raised here."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
