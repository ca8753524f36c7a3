"""Loopback stand-ins for what the tools reach: a web site (pages, JSON, redirects, large and slow answers) and
Tavily's search API (``POST /search`` with its real request and response JSON), each on its own port, each keeping
what it was asked."""

from __future__ import annotations

import gzip
import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trustme

PAGE = (
    "<!doctype html><html><head><title>Opening hours</title><style>p {color: red}</style></head><body>"
    "<h1>Opening hours</h1><p>We open at nine and close at five.</p><script>var secret = 1;</script></body></html>"
)


@dataclass
class Asked:
    """One request a stand-in received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Site:
    """A running stand-in: its base URL, port, and the requests it was asked."""

    url: str
    port: int
    asked: list[Asked] = field(default_factory=list)

    def paths(self) -> list[str]:
        return [a.path for a in self.asked]


def _handler(site: Site, answer: Any) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            self.close_connection = True  # one request a connection: the client never reuses one across addresses
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            site.asked.append(Asked(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            status, headers, payload = answer(self.command, self.path, self.headers, body)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if isinstance(payload, Iterator):
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for piece in payload:
                        self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            try:
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):  # the client stopped reading: its size or time bound
                pass

        do_GET = do_POST = do_PUT = _serve  # noqa: N815 - http.server's names

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@contextmanager
def _running(answer: Any, tls: ssl.SSLContext | None = None) -> Iterator[Site]:
    site = Site("", 0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(site, answer))
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    site.port = server.server_address[1]
    site.url = f"{'https' if tls else 'http'}://127.0.0.1:{site.port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()


def _site_answer(method: str, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], Any]:
    """The web site's pages:

    ``/page``: an HTML page; ``/json``: ``{"hours": ...}`` echoing the request's Authorization header's presence;
    ``/pages/<name>``: a text page naming <name>; ``/big?bytes=N``: N bytes of text; ``/gzip-bomb?bytes=N``: N
    zero bytes, gzip-compressed; ``/slow?seconds=S``: a body that comes after S seconds; ``/drip``: a byte every
    0.1 s, for ever; ``/redirect?to=URL&status=302``: a redirect; ``/loop``: a redirect to itself; ``/status/N``.
    """
    parts = urlsplit(path)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    html = {"Content-Type": "text/html; charset=utf-8"}
    text = {"Content-Type": "text/plain; charset=utf-8"}
    if parts.path == "/page":
        return 200, html, PAGE.encode()
    if parts.path == "/json":
        answer = {"hours": "9-17", "authorized": headers.get("Authorization") is not None, "method": method}
        if body:
            answer["received"] = json.loads(body)
        return 200, {"Content-Type": "application/json"}, json.dumps(answer).encode()
    if parts.path.startswith("/pages/"):
        return 200, text, f"page {parts.path.removeprefix('/pages/')} (query {parts.query})".encode()
    if parts.path == "/big":
        return 200, text, b"x" * int(query.get("bytes", "100000"))
    if parts.path == "/gzip-bomb":
        packed = gzip.compress(b"\0" * int(query.get("bytes", "10000000")))
        return 200, {**text, "Content-Encoding": "gzip"}, packed
    if parts.path == "/slow":
        time.sleep(float(query.get("seconds", "1")))
        return 200, text, b"late"
    if parts.path == "/drip":

        def drip() -> Iterator[bytes]:
            for _ in range(600):
                time.sleep(0.1)
                yield b"."

        return 200, text, drip()
    if parts.path == "/redirect":
        return int(query.get("status", "302")), {"Location": query["to"]}, b""
    if parts.path == "/loop":
        return 302, {"Location": "/loop"}, b""
    if parts.path.startswith("/status/"):
        return int(parts.path.removeprefix("/status/")), text, b"status"
    return 404, text, b"not found"


@contextmanager
def web_site() -> Iterator[Site]:
    """The web site (see ``_site_answer`` for its pages) on a loopback port."""
    with _running(_site_answer) as site:
        yield site


@contextmanager
def https_site(ca: trustme.CA, hostname: str) -> Iterator[Site]:
    """The web site over TLS, with a certificate for ``hostname`` that ``ca`` signed (``site.url`` names the
    address; a client reaches it by ``hostname`` through a resolver that answers 127.0.0.1)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(hostname).configure_cert(context)
    with _running(_site_answer, context) as site:
        yield site


TAVILY_RESULTS = [
    {
        "title": "Opening hours - Example Shop",
        "url": "https://shop.example.com/hours",
        "content": "The shop opens at nine and closes at five.",
        "score": 0.93,
        "raw_content": None,
    },
    {
        "title": "Holidays",
        "url": "https://shop.example.com/holidays",
        "content": "Closed on public holidays.",
        "score": 0.71,
        "raw_content": None,
    },
]


@contextmanager
def tavily(key: str) -> Iterator[Site]:
    """Tavily's search API as documented (docs.tavily.com, "Search"): ``POST /search`` with a JSON body (``query``,
    ``max_results``, ``search_depth``, ``topic``, ...) and ``Authorization: Bearer <key>``; answers ``{"query",
    "answer", "images", "results": [{"title", "url", "content", "score", "raw_content"}], "response_time"}``, at most
    ``max_results`` results; 401 ``{"detail": {"error": "Unauthorized: missing or invalid API key."}}`` for another
    key, 400 for a query over 400 characters."""

    def answer(method: str, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], Any]:
        content = {"Content-Type": "application/json"}
        if method != "POST" or urlsplit(path).path != "/search":
            return 404, content, json.dumps({"detail": "Not Found"}).encode()
        if headers.get("Authorization") != f"Bearer {key}":
            error = {"detail": {"error": "Unauthorized: missing or invalid API key."}}
            return 401, content, json.dumps(error).encode()
        request = json.loads(body)
        if len(request.get("query", "")) > 400:
            return 400, content, json.dumps({"detail": {"error": "Query is too long."}}).encode()
        results = TAVILY_RESULTS[: int(request.get("max_results", 5))]
        found = {
            "query": request["query"],
            "follow_up_questions": None,
            "answer": None,
            "images": [],
            "results": results,
            "response_time": 0.42,
        }
        return 200, content, json.dumps(found).encode()

    with _running(answer) as site:
        yield site
