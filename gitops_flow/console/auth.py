"""Who is at the console: sessions signed with the server's tokens, their CSRF tokens, and a brake on guessing.

A login trades the admin token (or the read token) for a session cookie, so the token is typed once and never kept
by the browser. The cookie is signed, not stored: its key is derived from the token it was issued for, so every
replica that shares the token accepts it, and changing the token ends every session issued with the old one. It
holds the role, an expiry, a random nonce and the name the operator gave (for the audit trail), nothing secret.
Logging out revokes its nonce in this process (and the browser drops the cookie), in every other worker and
replica listening on the state store (``REVOKE``, a wake-up message), and in the state store itself (signouts.py),
which every process reads before it accepts a cookie it has not seen signed out, after a restart too.

Each session has a CSRF token (an HMAC of its nonce) that every form of the console carries and every change checks,
on top of the cookie's SameSite=Strict and the Origin check of the routes (docs/console.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Role = Literal["reader", "admin"]
ROLES: tuple[Role, ...] = ("admin", "reader")
SESSION_SECONDS = 12 * 3600
NAME_PATTERN = re.compile(r"^[A-Za-z0-9 ._@-]{0,40}$")  # the name an operator gives at login, for the audit trail
MAX_COOKIE = 512  # characters: anything longer is no cookie of ours
MAX_REVOKED = 10_000
_PURPOSE = b"gitops-flow console session v1"
REVOKE = "revoke-session"  # the wake-up message of a logout: "<sender> revoke-session <nonce> <expires>"


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser: its role, the name it gave, when it expires, and the nonce its CSRF token is made of."""

    role: Role
    name: str
    expires: float
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Issues and checks session cookies. ``tokens`` gives the token of a role now (None: that role is off), so a
    session of a role whose token was removed or changed is no longer accepted."""

    def __init__(
        self,
        tokens: Callable[[Role], str | None],
        *,
        clock: Callable[[], float] = time.time,
        lifetime: float = SESSION_SECONDS,
    ) -> None:
        self._tokens = tokens
        self.clock = clock
        self.lifetime = lifetime
        self._revoked: dict[str, float] = {}  # nonce -> expiry

    def role_of(self, given: str) -> Role | None:
        """The role whose token ``given`` is, comparing with every configured token (timing tells none apart)."""
        found: Role | None = None
        for role in ROLES:
            token = self._tokens(role)
            if token is not None and hmac.compare_digest(given.encode(), token.encode()):
                found = found or role
        return found

    def issue(self, role: Role, name: str) -> tuple[str, Session]:
        """A new session of ``role`` and its cookie value. ``name`` must match NAME_PATTERN (ValueError)."""
        if not NAME_PATTERN.match(name):
            raise ValueError("a name is at most 40 letters, digits, spaces and . _ @ -")
        key = self._key(role)
        if key is None:
            raise ValueError(f"the {role} role is off")
        session = Session(role, name, float(int(self.clock() + self.lifetime)), secrets.token_urlsafe(18))
        body = ".".join(["v1", role, str(int(session.expires)), session.nonce, _b64(name.encode())])
        return f"{body}.{self._sign(key, body)}", session

    def check(self, cookie: str | None) -> Session | None:
        """The session a cookie carries, or None when it is absent, forged, expired, revoked or of a role now off."""
        if not cookie or len(cookie) > MAX_COOKIE:
            return None
        body, _, signature = cookie.rpartition(".")
        parts = body.split(".")
        if len(parts) != 5 or parts[0] != "v1" or parts[1] not in ROLES:
            return None
        role: Role = "admin" if parts[1] == "admin" else "reader"
        key = self._key(role)
        if key is None or not hmac.compare_digest(signature.encode(), self._sign(key, body).encode()):
            return None
        try:
            expires = float(int(parts[2]))
            name = _unb64(parts[4]).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        if expires <= self.clock() or parts[3] in self._revoked or not NAME_PATTERN.match(name):
            return None
        return Session(role, name, expires, parts[3])

    def csrf(self, session: Session) -> str:
        """The CSRF token of a session: what its forms carry."""
        key = self._key(session.role)
        assert key is not None, "a checked session's role is on"
        return self._sign(key, f"csrf.{session.nonce}")

    def csrf_ok(self, session: Session, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.csrf(session).encode())

    def revoke(self, session: Session) -> None:
        """Log a session out (in this process: the browser drops the cookie too)."""
        self.revoke_nonce(session.nonce, session.expires)

    def revoked(self, nonce: str) -> bool:
        """Whether this process knows the session of ``nonce`` signed out."""
        return nonce in self._revoked

    def revoke_nonce(self, nonce: str, until: float) -> None:
        """Refuse the session of ``nonce`` until ``until`` (another process's logout, heard through the store)."""
        now = self.clock()
        self._revoked = {nonce: until for nonce, until in self._revoked.items() if until > now}
        if len(self._revoked) >= MAX_REVOKED:  # the ones closest to expiring go first
            for nonce in sorted(self._revoked, key=self._revoked.__getitem__)[: len(self._revoked) - MAX_REVOKED + 1]:
                del self._revoked[nonce]
        self._revoked[nonce] = until

    def _key(self, role: Role) -> bytes | None:
        token = self._tokens(role)
        return hmac.new(token.encode(), _PURPOSE + role.encode(), hashlib.sha256).digest() if token else None

    @staticmethod
    def _sign(key: bytes, body: str) -> str:
        return _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
