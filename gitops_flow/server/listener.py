"""The HTTP server of `gitops-flow serve`: uvicorn with httptools, bounded against oversized and slow clients.

uvicorn's httptools protocol reads a request head of any size (llhttp has no limit of its own), waits forever for a
head or a body that never ends, and accepts every connection. ``BoundedProtocol`` adds what a server facing
anonymous clients needs, with timers per connection or per request and a byte count per read, never work per byte:

- a request's line and headers are at most ``max_header_bytes`` and ``max_headers`` (431): counted as the parser
  hands them over, and per read while a head is incomplete (llhttp gathers one header before handing it over), so a
  head that never ends is cut off within one read past the limit;
- they arrive within ``header_timeout`` of its first byte, and its body within ``body_timeout`` of its last header
  (408, then the connection closes); a new connection that sends nothing is closed after ``header_timeout``;
- an idle keep-alive connection closes after ``keep_alive_timeout``; a client that leaves a response unread for
  ``send_timeout`` is dropped;
- at most ``max_connections`` connections are open, and at most ``max_client_connections`` from one client address
  (an IPv6 address counts by its /64, which one host is commonly given); the next ones are answered 503 and closed.
  A trusted proxy's connections (``trusted_proxies``) carry many clients and are not counted per address; its
  X-Forwarded-For header names the client (uvicorn's proxy headers, trusted from those addresses only);
- the Host header names one of the allowed hosts (400), against DNS rebinding (``Settings.hosts``).

A timer only ends a connection when the server is waiting on the client: while it is still answering an earlier
request on the connection, or has stopped reading itself, the timer starts again.

This is a subclass of uvicorn's protocol and leans on its internals (``cycle``, ``pipeline``, ``flow``,
``_start_asgi_task``); tests/test_http_bounds.py drives each bound against a real `serve`, so an uvicorn upgrade
that moves them fails there.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
import uvicorn
from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from gitops_flow.config import Settings

log = logging.getLogger("gitops_flow.server")


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """The Host names a server answers for: exact names, ``*.domain`` (its subdomains), or ``*`` (any)."""

    names: frozenset[str]
    suffixes: tuple[str, ...]
    any: bool

    @classmethod
    def of(cls, patterns: tuple[str, ...]) -> HostPolicy:
        return cls(
            names=frozenset(p for p in patterns if not p.startswith("*")),
            suffixes=tuple(p[1:] for p in patterns if p.startswith("*.")),
            any="*" in patterns,
        )

    def allows(self, host: bytes | None) -> bool:
        """Whether a Host header's value (``name``, ``name:port``, ``[v6]:port``) names an allowed host."""
        if self.any:
            return True
        if host is None:
            return False
        text = host.decode("latin-1").strip().lower()
        if text.startswith("["):
            name = text[1 : text.find("]")] if "]" in text else ""
        else:
            name = text.partition(":")[0]
        name = name.removesuffix(".")
        return name in self.names or (bool(name) and name.endswith(self.suffixes))


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may make the server hold; built from Settings (docs/server.md, "Limits")."""

    max_header_bytes: int
    max_headers: int
    header_timeout: float
    body_timeout: float
    keep_alive_timeout: float
    send_timeout: float
    max_connections: int
    max_client_connections: int
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    hosts: HostPolicy

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            keep_alive_timeout=settings.keep_alive_timeout,
            send_timeout=settings.send_timeout,
            max_connections=settings.max_connections,
            max_client_connections=settings.max_client_connections,
            trusted_proxies=tuple(ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies),
            hosts=HostPolicy.of(settings.hosts()),
        )

    def client_of(self, host: str) -> str | None:
        """What connections are counted by for the peer address ``host``: the address, an IPv6 one's /64, or None
        for a trusted proxy (and a peer without an IP address, such as a Unix socket's)."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return None
        if any(address in network for network in self.trusted_proxies):
            return None
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is not None:
                return str(address.ipv4_mapped)
            return str(ipaddress.IPv6Network((address, 64), strict=False))
        return str(address)


class ServerConfig(uvicorn.Config):
    """uvicorn's Config for `serve`: our protocol, no WebSockets (nothing here speaks them, and an upgraded
    connection would leave these bounds), proxy headers only from the operator's ``trusted_proxies`` (none by
    default: a client could name any address), and the access log only when the operator wants it and its level
    lets its lines through: uvicorn otherwise formats each line's arguments before the logger drops it.

    ``clients`` counts the open connections of each client address of this process (its protocols share it)."""

    def __init__(self, app: Any, settings: Settings, **options: Any) -> None:
        self.limits = Limits.of(settings)
        self.clients: Counter[str] = Counter()
        super().__init__(
            app,
            host=settings.host,
            port=settings.port,
            http=BoundedProtocol,
            ws="none",
            proxy_headers=bool(settings.trusted_proxies),
            forwarded_allow_ips=list(settings.trusted_proxies),
            access_log=access_logged(settings),
            **options,
        )


def access_logged(settings: Settings) -> bool:
    """Whether requests are written to the access log (uvicorn's INFO lines on ``uvicorn.access``)."""
    return settings.access_log and settings.log_level in ("debug", "info")


class _Refusal(Exception):
    """A request the protocol answers itself (raised inside the parser's callbacks to stop it)."""

    def __init__(self, status: int, code: str, message: str, *, of_current: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.of_current = of_current  # about the request being answered (its body), not a new one


_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


def _response(refusal: _Refusal) -> bytes:
    """A complete response that closes the connection, with the body every error of the server has."""
    body = orjson.dumps({"error": {"code": refusal.code, "message": str(refusal)}})
    retry = b"retry-after: 1\r\n" if refusal.status == 503 else b""
    return b"".join(
        [
            f"HTTP/1.1 {refusal.status} {_REASONS[refusal.status]}\r\n".encode(),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            retry,
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class BoundedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of ``ServerConfig`` (see the module's docstring)."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        assert isinstance(config, ServerConfig), "BoundedProtocol is configured by ServerConfig"
        self.limits = config.limits
        self._clients = config.clients
        self._counted: str | None = None  # the client address this connection counts against
        self.timeout_keep_alive = self.limits.keep_alive_timeout  # type: ignore[assignment]  # uvicorn says int
        self._reading_head = True  # the next bytes belong to a request's line and headers
        self._head_read = 0  # bytes read while reading the current head, per read: a head that never ends
        self._head_size = 0  # the current head's line and headers as parsed: a large head read at once
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._refusal: _Refusal | None = None
        self._running: RequestResponseCycle | None = None  # the request being answered (pipelined ones wait)

    # -- connections ------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(_Refusal(503, "too-many-connections", "the server has all the connections it takes"))
            return
        client = self.limits.client_of(self.client[0]) if self.client else None
        if client is not None:
            self._counted = client
            self._clients[client] += 1
            if self._clients[client] > self.limits.max_client_connections:
                most = self.limits.max_client_connections
                message = f"this server takes at most {most} connections at once from one client address"
                self._refuse(_Refusal(503, "too-many-client-connections", message))
                return
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._body_timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = self._send_timer = None
        if self._counted is not None:
            self._clients[self._counted] -= 1
            if self._clients[self._counted] <= 0:
                del self._clients[self._counted]  # the counter holds only the addresses connected now
            self._counted = None
        super().connection_lost(exc)

    # -- reading ----------------------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """uvicorn's, with a byte count while a head is read, and the protocol's own refusals."""
        if self.transport.is_closing():
            return
        if self._reading_head:
            self._head_read += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # ws="none": the request is answered as HTTP, nothing upgrades
            log.info("ignored the Upgrade header of a request from %s", self._peer())
        except httptools.HttpParserError:
            refusal, self._refusal = self._refusal, None
            if refusal is not None:
                self._refuse(refusal)
            else:
                log.info("refused an invalid HTTP request from %s", self._peer())
                self.send_400_response("Invalid HTTP request received.")
            return
        if self.transport.is_closing():
            return
        if self._reading_head:
            if self._head_read > self.limits.max_header_bytes:
                self._refuse(self._too_large())
            elif self._head_read and self._head_timer is None:
                self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_expired)
        elif self._body_timer is None:
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_expired)

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._head_size += len(url)
        if self._head_size > self.limits.max_header_bytes:
            raise self._refusing(self._too_large())

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._head_size += len(name) + len(value) + 4  # ": " and CRLF
        if self._head_size > self.limits.max_header_bytes:
            raise self._refusing(self._too_large())
        if len(self.headers) > self.limits.max_headers:
            message = f"the request has more than {self.limits.max_headers} headers"
            raise self._refusing(_Refusal(431, "too-many-headers", message))

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_read = self._head_size = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if not self.limits.hosts.allows(self._host()):
            message = "this server does not answer for the host the request names"
            raise self._refusing(_Refusal(400, "host-not-allowed", message))
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head = True
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _host(self) -> bytes | None:
        """The request's one Host header; None when it has none or several (which would leave open which one
        the application reads)."""
        hosts = [value for name, value in self.headers if name == b"host"]
        return hosts[0] if len(hosts) == 1 else None

    # -- writing ----------------------------------------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.limits.send_timeout, self._send_expired)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    # -- timers -----------------------------------------------------------------------------------------------

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._reading_head:
            return
        if self._answering() or self.flow.read_paused:
            self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_expired)
            return
        if self._head_read == 0:  # a connection that never sent a request
            log.info("closed a connection from %s that sent nothing for %ss", self._peer(), self.limits.header_timeout)
            self.transport.close()
            return
        seconds = self.limits.header_timeout
        self._refuse(_Refusal(408, "header-timeout", f"the request's headers did not arrive within {seconds}s"))

    def _body_expired(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self._reading_head:
            return
        if self.flow.read_paused:  # the server is not reading: not the client's delay
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_expired)
            return
        seconds = self.limits.body_timeout
        message = f"the request's body did not arrive within {seconds}s"
        self._refuse(_Refusal(408, "body-timeout", message, of_current=True))

    def _send_expired(self) -> None:
        self._send_timer = None
        log.info("dropped %s: it left a response unread for %ss", self._peer(), self.limits.send_timeout)
        self._abandon()
        self.transport.abort()  # close() would wait for the unread buffer to drain

    # -- refusing ---------------------------------------------------------------------------------------------

    def _refusing(self, refusal: _Refusal) -> _Refusal:
        """The refusal to raise inside a parser callback; data_received answers it once the parser has stopped."""
        self._refusal = refusal
        return refusal

    def _too_large(self) -> _Refusal:
        return _Refusal(
            431, "headers-too-large", f"the request's headers exceed {self.limits.max_header_bytes:,} bytes"
        )

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        self._running = cycle
        super()._start_asgi_task(cycle, app)

    def _answering(self) -> bool:
        """Whether a request on this connection is still being answered."""
        return any(c is not None and not c.response_complete for c in (self._running, self.cycle))

    def _abandon(self) -> None:
        """Every request of the connection finds its client gone, as when the client closes it (uvicorn's
        connection_lost), so that none writes to the transport once we have closed it."""
        for cycle in (self._running, self.cycle, *(c for c, _ in self.pipeline)):
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()

    def _refuse(self, refusal: _Refusal) -> None:
        """Answer ``refusal`` and close; without an answer when one was begun already for the request it is
        about, or, for a new request, while an earlier one is still being answered (ours would come first): only
        a client that pipelines and then misbehaves meets that."""
        log.info("refused %s: %s %s", self._peer(), refusal.status, refusal.code)
        if refusal.of_current:
            answer = self.cycle is not None and not self.cycle.response_started
        else:
            answer = not self._answering()
        if answer:
            self.transport.write(_response(refusal))
        self._abandon()
        self.transport.close()

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "a client"


# the methods of uvicorn's protocol BoundedProtocol hooks into: an override of a method uvicorn no longer calls would
# be skipped silently, leaving a bound unenforced, so each must still be there, taking what ours takes
_HOOKED = (
    "__init__",
    "connection_made",
    "connection_lost",
    "data_received",
    "on_url",
    "on_header",
    "on_headers_complete",
    "on_message_complete",
    "pause_writing",
    "resume_writing",
    "_start_asgi_task",
)


def hook_drift(base: type, ours: type, names: tuple[str, ...] = _HOOKED) -> list[str]:
    """What differs between ``base``'s methods and ``ours`` among ``names``: each missing one, or one whose
    parameters are not the same."""
    drift = []
    for name in names:
        theirs = inspect.getattr_static(base, name, None)
        if theirs is None or not callable(theirs):
            drift.append(f"{base.__name__}.{name} is missing")
            continue
        expected = list(inspect.signature(getattr(ours, name)).parameters)
        found = list(inspect.signature(theirs).parameters)
        if found != expected:
            drift.append(f"{base.__name__}.{name} takes ({', '.join(found)}), not ({', '.join(expected)})")
    return drift


_drift = hook_drift(HttpToolsProtocol, BoundedProtocol)
if _drift:  # fail at import, not serve without the bounds (pyproject.toml's uvicorn bounds keep this from happening)
    raise ImportError(
        f"uvicorn {uvicorn.__version__} is not the uvicorn gitops-flow's bounded HTTP protocol hooks into: "
        + "; ".join(_drift)
        + "; install the versions in constraints.txt"
    )
