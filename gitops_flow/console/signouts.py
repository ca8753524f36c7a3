"""Sign-outs kept in the state store: a signed-out session's nonce is refused by every worker and replica, and after
a restart, until the session would have expired anyway.

A console cookie is signed, not stored (auth.py), so signing out has to be remembered: in this process (a set, the
fast path), and in the state store, which every worker and replica reads and which outlives a restart. The store
keeps each sign-out as a counter (``add_samples``) that expires with the session, so no backend needs a new table
and none keeps a sign-out longer than it matters.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gitops_flow.console.auth import Session, Sessions
from gitops_flow.stores.base import SampleStore

_KEY = "signout:"
_FIELD = "out"
_SLOT = 0  # one slot: a sign-out is there or not
_SLACK = 60.0  # seconds a sign-out is kept past its session's expiry, for clocks a little apart


class SignOuts:
    """The sign-outs of one server's console: ``record`` one, ask whether a session is ``signed_out``."""

    def __init__(self, store: SampleStore, sessions: Sessions, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.sessions = sessions
        self.clock = clock

    async def record(self, session: Session) -> None:
        """Sign ``session`` out here and in the store. Raises StoreError when the store is away (then only this
        process refuses it)."""
        self.sessions.revoke(session)
        ttl = max(session.expires - self.clock(), 0.0) + _SLACK
        await self.store.add_samples(_SLOT, {_KEY + session.nonce: {_FIELD: 1}}, ttl=ttl)

    async def signed_out(self, session: Session) -> bool:
        """Whether ``session`` was signed out, by this process or any other sharing the store (before a restart too).
        Raises StoreError when the store is away."""
        if self.sessions.revoked(session.nonce):
            return True
        if (await self.store.sum_samples(_KEY + session.nonce, _SLOT)).get(_FIELD, 0) > 0:
            self.sessions.revoke(session)  # asked once per process
            return True
        return False
