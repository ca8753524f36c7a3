"""Who is asking the console, and what they may read: sessions and tokens, the read rule, and its HTML refusals."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gitops_flow.console.auth import Role, Session
from gitops_flow.console.context import Console
from gitops_flow.exceptions import Limited, StoreError
from gitops_flow.server.edge import client_address
from gitops_flow.server.views import guarded

log = logging.getLogger("gitops_flow.server")

COOKIE = "gitops-flow-console"
SECURE_COOKIE = "__Host-gitops-flow-console"  # the prefix makes browsers refuse it without Secure and Path=/
NOTICES = {
    "aborted": "The canary is aborted: its weight went to the other refs, on every replica.",
    "resumed": "The canary is resumed: it has its weight back, and the guard judges it again from now on.",
    "fetched": "Fetched: the page shows what the server has now.",
    "signed-in": "Signed in.",
    "signed-out": "Signed out.",
    "unchanged": "Nothing to change: it already was that way.",
}


class ConsoleError(Exception):
    """A console request refused, with the status and the sentence the error page shows."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who asks: ``role`` None for an anonymous reader, and the session of a signed-in browser."""

    role: Role | None
    name: str = ""
    session: Session | None = None


def console(request: Request) -> Console:
    found: Console = request.app.state.console
    return found


def client_of(request: Request) -> str:
    """The client's address, behind the operator's trusted proxies (httpio.client_address)."""
    return client_address(request)


def over_https(request: Request) -> bool:
    """Whether the browser reached the console over https: TLS at the server, or ``X-Forwarded-Proto: https`` from
    one of the operator's reverse proxies (GITOPS_FLOW_TRUSTED_PROXIES), which the server's proxy headers turn into
    the request's scheme. The header from any other client is never read."""
    return request.url.scheme == "https"


async def viewer(request: Request) -> Viewer:
    """The session of the cookie, or a token in ``Authorization: Bearer`` (for scripts and `gitops-flow status`).
    A token goes through the brake on guessing (brake.py): ConsoleError 429 for a client with too many wrong ones,
    401 for a wrong one."""
    sessions = console(request).sessions
    given = request.headers.get("authorization", "")
    if given.startswith("Bearer "):
        role = await braked(request, lambda: sessions.role_of(given.removeprefix("Bearer ")))
        if role is None:
            raise ConsoleError(401, "that token is not one this server takes")
        return Viewer(role)
    session = await signed_in(request)
    return Viewer(session.role, session.name, session) if session is not None else Viewer(None)


async def braked(request: Request, compare: Callable[[], Role | None]) -> Role | None:
    """views.guarded for the console: a braked client is a ConsoleError 429 with its Retry-After."""
    try:
        return await guarded(request, compare)
    except Limited as exc:
        raise ConsoleError(429, str(exc), {"retry-after": str(max(1, math.ceil(exc.retry_after)))}) from None


async def signed_in(request: Request) -> Session | None:
    """The session of the request's cookie, None when it has none, or one that is forged, expired or signed out (in
    any worker or replica, before a restart too: signouts.py). While the store cannot be read a session is refused:
    a sign-out must not be forgotten for the store being away."""
    desk = console(request)
    session = desk.sessions.check(request.cookies.get(SECURE_COOKIE) or request.cookies.get(COOKIE))
    if session is None:
        return None
    try:
        return None if await desk.signouts.signed_out(session) else session
    except StoreError as exc:
        log.warning("console: sign-outs could not be read, the session is refused: %s", exc)
        return None


def may_read(request: Request, who: Viewer) -> bool:
    """The server's rule for its read views (views.require_reader): anyone, unless a read token is configured; then
    a session or a token of the reader or the admin."""
    return console(request).deps.settings.read_token is None or who.role is not None


Handler = Callable[[Request], Awaitable[Response]]


def page(handler: Callable[[Request, Viewer], Awaitable[Response]]) -> Handler:
    """A console page: read access checked, and every refusal an HTML page with its status."""

    async def wrapped(request: Request) -> Response:
        try:
            who = await viewer(request)
            if not may_read(request, who):
                return login_page(request, who, 401, "Sign in to read this server's console.")
            return await handler(request, who)
        except ConsoleError as exc:
            return await error_page(request, exc)

    return wrapped


def context(request: Request, who: Viewer, **extra: Any) -> dict[str, Any]:
    notice = request.query_params.get("notice")
    desk = console(request)
    reconciler = desk.deps.reconciler
    return {
        "viewer": who,
        "readable": may_read(request, who),  # the sign-in and error pages show the server's state to readers only
        "source": reconciler.status,
        "head": reconciler.table.head,
        "csrf": desk.sessions.csrf(who.session) if who.session is not None else "",
        "admin_enabled": desk.deps.settings.admin_token is not None,
        "session_hours": int(desk.sessions.lifetime // 3600),
        "notice": NOTICES.get(notice or ""),
        "path": request.url.path,
        **extra,
    }


async def error_page(request: Request, exc: ConsoleError) -> Response:
    """The page of a refusal, shown as the cookie's session sees it (a bearer token is not checked again)."""
    session = await signed_in(request)
    who = Viewer(session.role, session.name, session) if session is not None else Viewer(None)
    response = console(request).pages.render("error.html", context(request, who, message=str(exc)), exc.status)
    response.headers.update(exc.headers)
    return response


def login_page(request: Request, who: Viewer, status: int = 200, message: str | None = None) -> Response:
    return console(request).pages.render("login.html", context(request, who, message=message), status)
