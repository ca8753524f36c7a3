"""Circuit breakers of model provider endpoints, shared by every worker and replica through the state store, and the
httpx transport that puts one in front of a provider's client.

An endpoint (a provider and its base URL) whose calls fail (unreachable, 5xx, no answer in time) ``failures`` times
within ``window`` seconds, counted across all processes, opens: for ``cooldown`` seconds every call to it is refused
at once, without trying, so an outage costs each request one fast refusal (503 with Retry-After), not a timeout.
Then it is half-open: one call, taken by whichever process wins the endpoint's lease in the store, probes it; its
success closes the circuit everywhere (a new generation of the shared count starts at zero), its failure opens it
for another cooldown. A rate limit (429) or a refused request (4xx) is the endpoint answering: it counts as a
success.

A process keeps what it knows in memory and reads the shared count at most once a second per endpoint (``SYNC``), so
a call to a healthy endpoint costs no store access at all most of the time. The store being away never refuses a
call: the breaker then knows only what its own process saw (it fails open, and logs why).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, TypeVar

import httpx

from gitops_flow.components.provider_errors import CIRCUIT_HEADER
from gitops_flow.exceptions import StoreError

log = logging.getLogger("gitops_flow.components")

SYNC = 1.0  # seconds between two reads of an endpoint's shared count by one process, at most once per call
GENERATION_TTL = 7 * 24 * 3600.0  # an endpoint's generation (how often a probe closed it) is kept a week
MAX_ENDPOINTS = 1024  # breakers one process keeps; endpoints are the operator's allowed base URLs, so few
_FAILED, _CLOSED = "f", "g"
T = TypeVar("T")


class SharedCounts(Protocol):
    """What breakers need of the state store (stores.base.StateStore has it)."""

    async def add_samples(self, slot: int, counts: Mapping[str, Mapping[str, int]], ttl: float) -> None: ...

    async def sum_samples(self, key: str, since: int) -> dict[str, int]: ...

    async def lease(self, name: str, holder: str, ttl: float) -> bool: ...

    async def release(self, name: str, holder: str) -> None: ...


class Breaker:
    """One endpoint's circuit as this process sees it (see the module's docstring)."""

    def __init__(
        self,
        store: SharedCounts,
        endpoint: str,
        *,
        failures: int,
        window: float,
        cooldown: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.failures = failures
        self.window = window
        self.cooldown = cooldown
        self.clock = clock
        digest = hashlib.sha256(endpoint.encode()).hexdigest()[:24]  # a base URL is no store key (nor log text)
        self._key = f"breaker:{digest}"
        self._holder = uuid.uuid4().hex
        self._open_until = 0.0
        self._checked = -math.inf
        self._generation = 0
        self._probing = False

    @property
    def open(self) -> bool:
        return self.clock() < self._open_until

    async def admit(self) -> float | None:
        """None when a call may go; otherwise the seconds until the endpoint is tried again (the call is refused)."""
        now = self.clock()
        if now < self._open_until:
            return self._open_until - now
        if self._open_until:  # the cooldown is over: half-open
            opened_in = self._generation
            if await self._generation_now() != opened_in:  # another process's probe closed it
                self._close()
                return None
            if await self._safely(self.store.lease(self._key + ":probe", self._holder, self.cooldown), True):
                self._probing = True
                return None
            self._open_until = now + min(self.cooldown, SYNC)  # another process is probing: ask again soon
            return self._open_until - now
        if now - self._checked >= SYNC:
            self._checked = now
            if await self._failed_lately() >= self.failures:
                self._open_until = now + self.cooldown
                log.warning("a model provider endpoint's circuit is open (%s failures shared)", self.failures)
                return self.cooldown
        return None

    async def failed(self) -> None:
        """A call failed as an outage does (unreachable, 5xx, no answer in time)."""
        now = self.clock()
        slot = int(now)
        counts = {self._failures_key(): {_FAILED: 1}}
        await self._safely(self.store.add_samples(slot, counts, ttl=self.window + 2.0), None)
        if self._probing:
            self._probing = False
            self._open_until = now + self.cooldown
            return
        if self._open_until == 0.0 and await self._failed_lately() >= self.failures:
            self._open_until = now + self.cooldown
            log.warning("a model provider endpoint's circuit opened after %s failures", self.failures)

    async def succeeded(self) -> None:
        """A call was answered (any answer but a 5xx); a probe's success closes the circuit everywhere."""
        if not self._probing:
            return
        self._probing = False
        await self._safely(self.store.add_samples(0, {self._key + ":gen": {_CLOSED: 1}}, ttl=GENERATION_TTL), None)
        await self._safely(self.store.release(self._key + ":probe", self._holder), None)
        self._generation += 1
        self._close()
        log.info("a model provider endpoint answered its probe; its circuit is closed")

    def _close(self) -> None:
        self._open_until = 0.0
        self._checked = -math.inf

    def _failures_key(self) -> str:
        return f"{self._key}:{self._generation}"

    async def _generation_now(self) -> int:
        counts = await self._safely(self.store.sum_samples(self._key + ":gen", 0), {})
        self._generation = max(self._generation, int(counts.get(_CLOSED, 0)))
        return self._generation

    async def _failed_lately(self) -> int:
        await self._generation_now()
        since = int(self.clock() - self.window) + 1
        counts = await self._safely(self.store.sum_samples(self._failures_key(), since), {})
        return int(counts.get(_FAILED, 0))

    async def _safely(self, call: Awaitable[T], otherwise: T) -> T:
        try:
            return await call
        except StoreError as exc:
            log.warning("a circuit breaker could not reach the state store (%s); it knows only this process", exc)
            return otherwise


class Breakers:
    """Every endpoint's Breaker in this process, made on first use; ``failures`` 0: none (``for_endpoint`` None)."""

    def __init__(
        self,
        store: SharedCounts,
        *,
        failures: int,
        window: float,
        cooldown: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.failures = failures
        self.window = window
        self.cooldown = cooldown
        self.clock = clock
        self._breakers: dict[str, Breaker] = {}

    def for_endpoint(self, endpoint: str) -> Breaker | None:
        if self.failures <= 0:
            return None
        found = self._breakers.get(endpoint)
        if found is None:
            if len(self._breakers) >= MAX_ENDPOINTS:
                self._breakers.pop(next(iter(self._breakers)))
            found = Breaker(
                self.store,
                endpoint,
                failures=self.failures,
                window=self.window,
                cooldown=self.cooldown,
                clock=self.clock,
            )
            self._breakers[endpoint] = found
        return found


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that asks the endpoint's Breaker before each request and tells it each outcome. A refusal
    is answered in the provider's place: a 503 with Retry-After, ``x-should-retry: false`` (the provider SDKs then
    do not retry it) and CIRCUIT_HEADER, which provider_errors translates to CircuitOpen."""

    def __init__(self, breaker: Breaker, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.breaker = breaker
        self.inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        wait = await self.breaker.admit()
        if wait is not None:
            headers = {"retry-after": str(max(1, math.ceil(wait))), "x-should-retry": "false", CIRCUIT_HEADER: "open"}
            body = {"error": {"message": "circuit open", "type": "circuit_open", "code": "circuit_open"}}
            return httpx.Response(503, headers=headers, json=body, request=request)
        try:
            response = await self.inner.handle_async_request(request)
        except httpx.TransportError:  # unreachable, or no answer in time
            await self.breaker.failed()
            raise
        if response.status_code >= 500:
            await self.breaker.failed()
        else:
            await self.breaker.succeeded()
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def guarded_client(breaker: Breaker) -> httpx.AsyncClient:
    """An httpx client for a provider's SDK (``http_async_client``) whose calls go through ``breaker``."""
    return httpx.AsyncClient(transport=GuardedTransport(breaker))
