"""Who is asking the console, and what they may read: sessions and tokens, the read rule, and its HTML refusals."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gitops_flow.console.auth import Role, Session
from gitops_flow.console.context import Console

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
    return request.client.host if request.client is not None else "unknown"


def over_https(request: Request) -> bool:
    """Whether the browser reached the console over https (itself, or through a proxy that says so)."""
    proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or proto == "https"


def viewer(request: Request) -> Viewer:
    """The session of the cookie, or a token in ``Authorization: Bearer`` (for scripts and `gitops-flow status`)."""
    sessions = console(request).sessions
    given = request.headers.get("authorization", "")
    if given.startswith("Bearer "):
        role = sessions.role_of(given.removeprefix("Bearer "))
        if role is None:
            raise ConsoleError(401, "that token is not one this server takes")
        return Viewer(role)
    session = sessions.check(request.cookies.get(SECURE_COOKIE) or request.cookies.get(COOKIE))
    return Viewer(session.role, session.name, session) if session is not None else Viewer(None)


def may_read(request: Request, who: Viewer) -> bool:
    """The server's rule for its read views (views.require_reader): anyone, unless a read token is configured; then
    a session or a token of the reader or the admin."""
    return console(request).deps.settings.read_token is None or who.role is not None


Handler = Callable[[Request], Awaitable[Response]]


def page(handler: Callable[[Request, Viewer], Awaitable[Response]]) -> Handler:
    """A console page: read access checked, and every refusal an HTML page with its status."""

    async def wrapped(request: Request) -> Response:
        try:
            who = viewer(request)
            if not may_read(request, who):
                return login_page(request, who, 401, "Sign in to read this server's console.")
            return await handler(request, who)
        except ConsoleError as exc:
            return error_page(request, exc)

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


def error_page(request: Request, exc: ConsoleError) -> Response:
    who = Viewer(None)
    try:
        who = viewer(request)
    except ConsoleError:
        pass
    response = console(request).pages.render("error.html", context(request, who, message=str(exc)), exc.status)
    response.headers.update(exc.headers)
    return response


def login_page(request: Request, who: Viewer, status: int = 200, message: str | None = None) -> Response:
    return console(request).pages.render("login.html", context(request, who, message=message), status)
