"""Fetcher: the tools' HTTP client, which goes only where the egress policy (security/egress.py) allows.

Each request is judged on its URL, then its host is resolved and every address it resolves to is judged, and the
connection is made to an address so judged: the request goes to ``https://<address>/...`` with the host in its
``Host`` header and in TLS's server name (whose certificate is verified for the host), so DNS cannot answer one
address to the check and another to the connection (DNS rebinding). Redirects are followed here, by hand, each hop
judged again, at most ``max_redirects`` of them; a secret header never follows a redirect to another origin. A
request and its redirects have ``timeout`` seconds in all (resolution, connection and body together); a body is read
as it streams and cut at ``max_bytes`` (compressed bodies too, once inflated), and the answer says it was cut. A
run's requests are counted (Allowance): past ``max_requests`` they are refused. The run is the flow's: every run's
config carries a Tally (RUN_KEY in ``configurable``, runtime/compiler.runnable_config), which all its nodes and
agents share; a call without one (a node invoked by hand) counts on its own.

No environment proxy is used (``trust_env=False``): a proxy would connect where the policy never looked.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import socket
import ssl
import threading
import zlib
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit, urlunsplit

import anyio
import httpx

from gitops_flow.exceptions import EgressFailed, EgressRefused
from gitops_flow.security.egress import EgressPolicy, IPAddress, Target

REDIRECTS = frozenset({301, 302, 303, 307, 308})
CHUNK = 64 * 1024
T = TypeVar("T")
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]


RUN_KEY = "gitops_flow_egress"  # the configurable key under which a run's Tally reaches its nodes


class Tally:
    """The outbound requests of one flow run: its Allowance, made on first use with the server's limit, shared by
    every node and agent of the run (a config's ``configurable`` is copied shallowly, so all hold this object)."""

    def __init__(self) -> None:
        self._allowance: Allowance | None = None
        self._lock = threading.Lock()

    def allowance(self, limit: int) -> Allowance:
        with self._lock:
            if self._allowance is None:
                self._allowance = Allowance(limit)
            return self._allowance

    def __repr__(self) -> str:
        used = self._allowance.used if self._allowance is not None else 0
        return f"Tally({used} requests)"


class Allowance:
    """How many more outbound requests one run (a node's call, an agent's run) may make; shared by its threads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def take(self, host: str) -> None:
        """Count one request to ``host``; EgressRefused once the run has made ``limit`` of them."""
        with self._lock:
            if self.used >= self.limit:
                raise EgressRefused(
                    f"this run has made its {self.limit} outbound requests (GITOPS_FLOW_EGRESS_MAX_REQUESTS), so "
                    f"{host} is not asked",
                    host=host,
                )
            self.used += 1


@dataclass(frozen=True, slots=True)
class Request:
    """One outbound request. ``secret_headers``: the names of headers holding a credential (never sent on after a
    redirect to another origin). ``max_bytes`` and ``timeout`` narrow the policy's limits (never widen them)."""

    url: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    secret_headers: frozenset[str] = frozenset()
    max_bytes: int | None = None
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Fetched:
    """An answer: its status, content type, body (at most the limit), whether the body was ``cut`` there, and the
    host that answered (after redirects)."""

    status: int
    content_type: str
    charset: str | None
    body: bytes
    cut: bool
    host: str
    max_bytes: int

    def text(self) -> str:
        return self.body.decode(self.charset or "utf-8", errors="replace")

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to its end from sync code: on an event loop of its own, in a thread of its own when this
    thread already runs a loop (a sync invoke called from async code)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def resolve_host(host: str, port: int) -> list[IPAddress]:
    """The addresses ``host`` resolves to (the system's resolver, in a thread), each once, in its order."""
    found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: dict[IPAddress, None] = {}
    for _family, _type, _proto, _name, sockaddr in found:
        addresses.setdefault(ipaddress.ip_address(str(sockaddr[0]).partition("%")[0]), None)
    return list(addresses)


class Fetcher:
    """Makes outbound requests under ``policy`` (see the module's docstring). ``resolve`` is the resolver (tests
    give one that answers what DNS would); ``verify`` the SSL context that verifies TLS certificates (None: httpx's
    default, made once, on the first https request: loading the CA bundle takes tens of milliseconds, too long to
    pay per request)."""

    def __init__(
        self, policy: EgressPolicy, *, resolve: Resolver = resolve_host, verify: ssl.SSLContext | None = None
    ) -> None:
        self.policy = policy
        self.resolve = resolve
        self.verify = verify

    async def _tls(self) -> ssl.SSLContext:
        if self.verify is None:
            self.verify = await anyio.to_thread.run_sync(httpx.create_ssl_context)  # off the event loop
        return self.verify

    def allowance(self, config: Mapping[str, Any] | None = None) -> Allowance:
        """The count of requests of the run ``config`` belongs to (its Tally's); a count of its own without one."""
        tally = ((config or {}).get("configurable") or {}).get(RUN_KEY)
        if isinstance(tally, Tally):
            return tally.allowance(self.policy.limits.max_requests)
        return Allowance(self.policy.limits.max_requests)

    def fetch(self, request: Request, allowance: Allowance) -> Fetched:
        """``afetch`` for a caller without an event loop (a sync invoke)."""
        return blocking(self.afetch(request, allowance))

    async def afetch(self, request: Request, allowance: Allowance) -> Fetched:
        """The answer to ``request``, redirects followed; raises EgressRefused (the policy, or the run's count, says
        no) or EgressFailed (no answer in time, unreachable, too many redirects), naming the host, never the URL."""
        limits = self.policy.limits
        timeout = min(request.timeout or limits.timeout, limits.timeout)
        max_bytes = min(request.max_bytes or limits.max_bytes, limits.max_bytes)
        target = self.policy.check_url(request.url)
        try:
            with anyio.fail_after(timeout):
                return await self._follow(request, target, allowance, max_bytes, timeout)
        except TimeoutError:
            raise EgressFailed(f"{target.host} did not answer within {timeout:g} s", host=target.host) from None

    async def _follow(
        self, request: Request, target: Target, allowance: Allowance, max_bytes: int, timeout: float
    ) -> Fetched:
        method, url, body = request.method.upper(), request.url, request.json
        headers = dict(request.headers)
        first = target
        for _ in range(self.policy.limits.max_redirects + 1):
            allowance.take(target.host)
            answer, location = await self._one(method, url, target, headers, body, max_bytes, timeout)
            if location is None:
                return answer
            url = urljoin(url, location)
            target = self.policy.check_url(url)  # a redirect off the allowlist is refused here, before it is asked
            if (target.scheme, target.host, target.port) != (first.scheme, first.host, first.port):
                headers = {k: v for k, v in headers.items() if k.lower() not in _lower(request.secret_headers)}
            if answer.status == 303 or (answer.status in (301, 302) and method == "POST"):
                method, body = "GET", None  # what browsers do, and RFC 9110 allows
        raise EgressFailed(
            f"{target.host} redirected more than {self.policy.limits.max_redirects} times "
            "(GITOPS_FLOW_EGRESS_MAX_REDIRECTS)",
            host=target.host,
        )

    async def _one(
        self,
        method: str,
        url: str,
        target: Target,
        headers: Mapping[str, str],
        body: Any,
        max_bytes: int,
        timeout: float,
    ) -> tuple[Fetched, str | None]:
        """One request, to an address of ``target`` that the policy allows; the answer, and where it redirects."""
        addresses = [target.address] if target.address is not None else await self._addresses(target)
        for address in addresses:
            self.policy.check_address(target, address)  # every address, before any connection
        sent = {**headers, "Host": target.origin().partition("://")[2], "Accept-Encoding": "gzip, deflate, identity"}
        extensions = {"sni_hostname": target.host} if target.scheme == "https" and target.address is None else {}
        last: Exception | None = None
        verify = await self._tls() if target.scheme == "https" else False  # plain http: no TLS to verify
        async with httpx.AsyncClient(
            verify=verify, trust_env=False, follow_redirects=False, timeout=httpx.Timeout(timeout)
        ) as client:
            for address in addresses:
                pinned = _pinned(url, address)
                try:
                    request = client.build_request(method, pinned, headers=sent, json=body, extensions=extensions)
                    response = await client.send(request, stream=True)
                except httpx.ConnectError as exc:  # another address of the host may answer
                    last = exc
                    continue
                except httpx.TimeoutException:
                    raise EgressFailed(f"{target.host} did not answer within {timeout:g} s", host=target.host) from None
                except httpx.HTTPError as exc:
                    raise EgressFailed(_failed(target, exc), host=target.host) from None
                try:
                    location = response.headers.get("location") if response.status_code in REDIRECTS else None
                    if location is not None:
                        return _answer(response, b"", False, target, max_bytes), location
                    data, cut = await _read(response, max_bytes, target)
                    return _answer(response, data, cut, target, max_bytes), None
                except httpx.TimeoutException:
                    raise EgressFailed(f"{target.host} did not answer within {timeout:g} s", host=target.host) from None
                except httpx.HTTPError as exc:
                    raise EgressFailed(_failed(target, exc), host=target.host) from None
                finally:
                    await response.aclose()
        raise EgressFailed(_failed(target, last), host=target.host)

    async def _addresses(self, target: Target) -> list[IPAddress]:
        try:
            found = await self.resolve(target.host, target.port)
        except OSError:
            raise EgressFailed(f"{target.host} does not resolve", host=target.host) from None
        if not found:
            raise EgressFailed(f"{target.host} does not resolve", host=target.host)
        return found


def _lower(names: frozenset[str]) -> frozenset[str]:
    return frozenset(n.lower() for n in names)


def _pinned(url: str, address: IPAddress) -> str:
    """``url`` with its host replaced by ``address`` (the port, path and query kept)."""
    parts = urlsplit(url)
    host = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))


async def _read(response: httpx.Response, max_bytes: int, target: Target) -> tuple[bytes, bool]:
    """The body, inflated when it is compressed, at most ``max_bytes`` of it; and whether there was more."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "", "gzip", "x-gzip", "deflate"):
        raise EgressFailed(f"{target.host} answered in an encoding not read here ({encoding[:20]})", host=target.host)
    inflate = zlib.decompressobj(wbits=47) if encoding not in ("identity", "") else None  # gzip or zlib headers
    kept = bytearray()
    async for raw in response.aiter_raw(CHUNK):
        room = max_bytes + 1 - len(kept)
        try:
            data = inflate.decompress(raw, room) if inflate is not None else raw[:room]
        except zlib.error:
            raise EgressFailed(f"{target.host} answered a body that does not inflate", host=target.host) from None
        kept += data
        if len(kept) > max_bytes:
            return bytes(kept[:max_bytes]), True
    return bytes(kept), False


def _answer(response: httpx.Response, data: bytes, cut: bool, target: Target, max_bytes: int) -> Fetched:
    content_type, _, rest = response.headers.get("content-type", "").partition(";")
    charset = None
    for part in rest.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset" and value:
            charset = value.strip('"').lower()
    try:
        if charset is not None:
            "".encode(charset)
    except LookupError:
        charset = None
    return Fetched(response.status_code, content_type.strip().lower(), charset, data, cut, target.host, max_bytes)


def _failed(target: Target, exc: Exception | None) -> str:
    why = type(exc).__name__ if exc is not None else "no address"
    return f"{target.host} could not be reached ({why})"
