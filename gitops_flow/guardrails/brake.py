"""Brake: a limit on guessing the server's tokens and webhook secrets, counted in the state store.

Every endpoint that checks a token (the operator's, the read views', the console's bearer tokens and its sign-in
form) or a webhook's secret asks the brake first. The brake counts failed checks per client address in the state
store, so every worker of `serve --workers N` and every replica sharing Redis or the SQLite file counts them together:
``limit`` failures within ``window`` seconds and that address is refused (429, with Retry-After) without its token
being compared, until the window has passed. A correct token counts nothing, and a request that shows no token at all
(an anonymous reader of public views) never asks the brake.

Why per address, checked before the comparison: a brake that compared the token first and refused only wrong ones
would tell a guesser nothing new and so slow nobody down. Keyed by address, an attacker's failures brake only the
attacker's address: the token's holder, elsewhere, is never refused. Behind a reverse proxy every client has the
proxy's address, so the operator names the proxies in front (GITOPS_FLOW_TRUSTED_PROXIES) and the address is read
from X-Forwarded-For as the nearest untrusted hop (httpio.client_address); a client's own entries in that header,
further left, are never used.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from typing import TypeVar

from gitops_flow.exceptions import Limited
from gitops_flow.stores.base import SampleStore

T = TypeVar("T")
SLOTS = 10  # a window is counted in this many slots, so a failure leaves the count within a tenth of the window
_KEY = "guess:"
_FIELD = "failed"


class Brake:
    """Failed token checks per client address, shared through ``store``: ``limit`` within ``window`` seconds."""

    def __init__(
        self, store: SampleStore, *, limit: int, window: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.limit = limit
        self.window = window
        self.clock = clock
        self._slot = window / SLOTS

    async def wait(self, client: str) -> float:
        """Seconds before ``client`` may try a token again (0: now). Raises StoreError when the store is away."""
        slot = self._now_slot()
        failed = (await self.store.sum_samples(self._key(client), slot - SLOTS + 1)).get(_FIELD, 0)
        return self.window if failed >= self.limit else 0.0

    async def admit(self, client: str) -> None:
        """Raise Limited (429, ``too-many-failures``) when ``client`` is braked: then its token is not compared."""
        wait = await self.wait(client)
        if wait > 0:
            raise Limited(
                f"too many failed token checks from {client}: try again in {self.retry_after(wait)} s",
                code="too-many-failures",
                retry_after=wait,
            )

    async def check(self, client: str, compare: Callable[[], T]) -> T:
        """``compare()`` (a token check: falsy for a wrong token) for ``client``, through the brake: Limited
        without comparing when the client is braked, a failure counted when the answer is falsy."""
        await self.admit(client)
        answer = compare()
        if not answer:
            await self.failed(client)
        return answer

    async def failed(self, client: str) -> None:
        """Count a failed check of ``client``'s. Raises StoreError when the store is away."""
        counts = {self._key(client): {_FIELD: 1}}
        await self.store.add_samples(self._now_slot(), counts, ttl=self.window + self._slot)

    def retry_after(self, wait: float) -> str:
        """The Retry-After header of a refusal: whole seconds, at least one."""
        return str(max(1, math.ceil(wait)))

    def _now_slot(self) -> int:
        return int(self.clock() // self._slot)

    @staticmethod
    def _key(client: str) -> str:
        # an address is bounded and plain, but hashing keeps any header-derived text out of the store's keys
        return _KEY + hashlib.sha256(client.encode("utf-8", "replace")).hexdigest()[:32]
