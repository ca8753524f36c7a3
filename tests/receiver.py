"""A loopback HTTP receiver for tests: it answers every request 200 and keeps what it was sent (an OTLP collector's
or LangSmith's stand-in, on 127.0.0.1 only)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self.requests: list[Received] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def keep(self, received: Received) -> None:
        with self._lock:
            self.requests.append(received)

    def wait_for(self, found: Callable[[list[Received]], bool], timeout: float = 20.0, what: str = "requests") -> None:
        """Wait until ``found`` holds for what was received (a deadline for a test that would hang, not a timing)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                seen = list(self.requests)
            if found(seen):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the receiver never got {what}: {[(r.method, r.path) for r in seen]}")
            time.sleep(0.05)


@contextmanager
def receiver(answer: bytes = b"{}", content_type: str = "application/json") -> Iterator[Receiver]:
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            holder[0].keep(Received(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST = do_PUT = do_PATCH = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(Receiver(server))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
