"""The console's HTTP routes under /ui: pages, the live feed, the overview as JSON, sign-in, and the operator's
actions (abort or resume a canary, fetch now), each audited in the history.

Reading follows the server's rule for its views: public unless a read token is configured. Changing needs a session
of the admin token, a CSRF token that matches the session, and a request from the console's own origin. Promotion and
rollback are not here: they are Git commands the pages show (commands.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from gitops_flow.canaries import Action
from gitops_flow.console.auth import NAME_PATTERN, Role, Session
from gitops_flow.console.context import Console
from gitops_flow.console.feed import Full
from gitops_flow.console.flowpage import BadChoice, flow_page
from gitops_flow.console.overview import Overview
from gitops_flow.console.pages import static
from gitops_flow.console.trail import KINDS, Filter, entries
from gitops_flow.endpoints import json_response
from gitops_flow.exceptions import LookupFailed, StoreError
from gitops_flow.views import STORE_UNAVAILABLE

log = logging.getLogger("gitops_flow.server")

COOKIE = "gitops-flow-console"
SECURE_COOKIE = "__Host-gitops-flow-console"  # the prefix makes browsers refuse it without Secure and Path=/
MAX_FORM_BYTES = 4096
NOTICES = {
    "aborted": "The canary is aborted: its weight went to the other refs, on every replica.",
    "resumed": "The canary is resumed: it has its weight back, and the guard judges it again from now on.",
    "fetched": "Fetched: the page shows what the server has now.",
    "signed-in": "Signed in.",
    "signed-out": "Signed out.",
    "unchanged": "Nothing to change: it already was that way.",
}
BACK = {"overview": "/ui", "pending": "/ui/pending"}  # where an action returns to, besides a flow's page


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


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def _secure(request: Request) -> bool:
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
                return _login_page(request, who, 401, "Sign in to read this server's console.")
            return await handler(request, who)
        except ConsoleError as exc:
            return _error_page(request, exc)

    return wrapped


def _context(request: Request, who: Viewer, **extra: Any) -> dict[str, Any]:
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


def _error_page(request: Request, exc: ConsoleError) -> Response:
    who = Viewer(None)
    try:
        who = viewer(request)
    except ConsoleError:
        pass
    response = console(request).pages.render("error.html", _context(request, who, message=str(exc)), exc.status)
    response.headers.update(exc.headers)
    return response


def _login_page(request: Request, who: Viewer, status: int = 200, message: str | None = None) -> Response:
    return console(request).pages.render("login.html", _context(request, who, message=message), status)


# -- pages ----------------------------------------------------------------------------------------------------------


@page
async def overview_page(request: Request, who: Viewer) -> Response:
    desk = console(request)
    facts = await desk.facts()
    view = desk.overview(facts)
    waiting = desk.pending(facts, reader=who.role is not None)
    recent = entries(desk.shown(facts.events, reader=who.role is not None), Filter(), limit=8)
    return desk.pages.render("overview.html", _context(request, who, view=view, pending=waiting, recent=recent))


async def overview_json(request: Request) -> Response:
    """The overview as JSON: what `gitops-flow status` prints."""
    try:
        who = viewer(request)
    except ConsoleError as exc:
        return json_response({"error": {"code": "unauthorized", "message": str(exc)}}, exc.status)
    if not may_read(request, who):
        message = "this view needs Authorization: Bearer <read token>"
        return json_response({"error": {"code": "read-token-required", "message": message}}, 401)
    desk = console(request)
    facts = await desk.facts()
    return json_response(overview_body(desk.overview(facts), desk.pending(facts, reader=who.role is not None).count))


def overview_body(view: Overview, pending: int) -> dict[str, Any]:
    """The overview as plain data (the page's model, field for field)."""
    return {
        "source": {
            "url": view.url,
            "branch": view.branch,
            "head": view.head,
            "head_summary": view.head_summary,
            "last_fetch": view.last_fetch,
            "last_error": view.last_error,
            "building": view.building,
        },
        "window_seconds": view.window,
        "alerts": [{"level": a.level, "text": a.text, "flow": a.flow} for a in view.alerts],
        "pending": pending,
        "flows": [
            {
                "name": f.name,
                "description": f.description,
                "route": f.route,
                "state": f.state,
                "summary": f.summary,
                "serving": f.serving,
                "failed_at": f.failed_at,
                "problems": list(f.problems),
                "refs": [
                    {
                        "ref": r.ref,
                        "sha": r.sha,
                        "serving": r.serving,
                        "weight": r.weight,
                        "state": r.state,
                        "canary": r.canary,
                        "share": r.share,
                        "reason": r.reason,
                        "stopped_by": r.stopped_by,
                        "figures": _figures(r.figures),
                    }
                    for r in f.refs
                ],
                "others": [{"sha": o.sha, "ref": o.ref, "figures": _figures(o)} for o in f.others],
            }
            for f in view.flows
        ],
    }


def _figures(found: Any) -> dict[str, Any] | None:
    if found is None:
        return None
    return {
        "requests": found.requests,
        "errors": found.errors,
        "rate": round(found.rate, 3),
        "error_rate": round(found.error_rate, 4),
        "p50_ms": found.p50_ms,
        "p99_ms": found.p99_ms,
        "seconds": round(found.seconds, 1),
    }


@page
async def pending_page(request: Request, who: Viewer) -> Response:
    desk = console(request)
    facts = await desk.facts()
    waiting = desk.pending(facts, reader=who.role is not None)
    return desk.pages.render("pending.html", _context(request, who, pending=waiting, store_error=facts.store_error))


@page
async def flow_page_view(request: Request, who: Viewer) -> Response:
    desk = console(request)
    name = request.path_params["flow"]
    facts = await desk.facts()
    view = desk.overview(facts)
    row = view.flow(name)
    if row is None:
        raise ConsoleError(404, f"no flow {name[:100]!r} is served here")
    query = request.query_params
    try:
        found = await flow_page(
            row,
            desk.deps.reconciler.table,
            desk.deps.reconciler.versions,
            desk.documents,
            desk.shown(facts.events, reader=who.role is not None),
            kind_of=desk.kind_of,
            scrub=desk.scrub,
            at=_sha(query.get("at")),
            before=_sha(query.get("before")),
            after=_sha(query.get("after")),
        )
    except BadChoice as exc:
        raise ConsoleError(400, str(exc)) from None
    return desk.pages.render("flow.html", _context(request, who, page=found, view=view))


def _sha(value: str | None) -> str | None:
    return value.strip().lower() if value else None


@page
async def history_page(request: Request, who: Viewer) -> Response:
    desk = console(request)
    query = request.query_params
    chosen = Filter(flow=query.get("flow") or None, ref=query.get("ref") or None, kind=query.get("kind") or None)
    if chosen.kind is not None and chosen.kind not in KINDS:
        raise ConsoleError(400, f"kind is one of {', '.join(KINDS)}")
    raw = query.get("before")
    if raw is not None and not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise ConsoleError(400, "before is an event number: the one the 'Older events' link gives")
    store_error = None
    try:
        found, older = await desk.older(int(raw) if raw is not None else None)
    except StoreError as exc:
        log.warning("console: %s", exc)
        found, older, store_error = [], None, STORE_UNAVAILABLE
    table = desk.deps.reconciler.table
    refs = sorted({t.ref for route in table.routes.values() for t in route.targets} | set(table.refs))
    filters = {k: v for k, v in (("flow", chosen.flow), ("ref", chosen.ref), ("kind", chosen.kind)) if v}
    context = _context(
        request,
        who,
        entries=entries(desk.shown(found, reader=who.role is not None), chosen),
        chosen=chosen,
        kinds=KINDS,
        flows=sorted(table.routes),
        refs=refs,
        store_error=store_error,
        read=len(found),
        older=_history_url({**filters, "before": str(older)}) if older is not None else None,
        newest=_history_url(filters) if raw is not None else None,
    )
    return desk.pages.render("history.html", context)


def _history_url(query: dict[str, str]) -> str:
    return f"/ui/history?{urlencode(query)}" if query else "/ui/history"


async def events(request: Request) -> Response:
    """The live feed (server-sent events) the pages listen to."""
    try:
        who = viewer(request)
    except ConsoleError as exc:
        return Response(str(exc), exc.status, media_type="text/plain")
    if not may_read(request, who):
        return Response("sign in first", 401, media_type="text/plain")
    try:
        stream = console(request).feed.stream(request.headers.get("last-event-id"))
    except Full as exc:
        return Response(str(exc), 503, {"retry-after": "10"}, media_type="text/plain")
    headers = {"cache-control": "no-store", "x-accel-buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


async def static_file(request: Request) -> Response:
    asset = console(request).pages.assets.get(request.path_params["name"])
    if asset is None:
        return Response("no such file", 404, media_type="text/plain")
    return static(asset)


# -- signing in and out --------------------------------------------------------------------------------------------


@page
async def login_form(request: Request, who: Viewer) -> Response:
    return _login_page(request, who)


async def login(request: Request) -> Response:
    try:
        _same_origin(request)
        form = await _form(request)
    except ConsoleError as exc:
        return _error_page(request, exc)
    desk = console(request)
    client = _client(request)
    wait = desk.throttle.wait(client)
    if wait > 0:
        message = f"Too many failed sign-ins from {client}: try again in {int(wait) + 1} s."
        response = _login_page(request, Viewer(None), 429, message)
        response.headers["retry-after"] = str(int(wait) + 1)
        return response
    name = form.get("name", "").strip()
    if not NAME_PATTERN.match(name):
        return _login_page(request, Viewer(None), 400, "A name is at most 40 letters, digits, spaces and . _ @ -")
    role = desk.sessions.role_of(form.get("token", ""))
    if role is None:
        desk.throttle.failed(client)
        log.warning("console: a failed sign-in from %s", client)
        return _login_page(request, Viewer(None), 401, "That is not a token of this server.")
    desk.throttle.succeeded(client)
    cookie, session = desk.sessions.issue(role, name)
    log.info("console: %s signed in as %s from %s", name or "someone", role, client)
    response = RedirectResponse("/ui?notice=signed-in", 303)
    secure = _secure(request)
    response.set_cookie(
        SECURE_COOKIE if secure else COOKIE,
        cookie,
        max_age=int(desk.sessions.lifetime),
        path="/" if secure else "/ui",
        secure=secure,
        httponly=True,
        samesite="strict",
    )
    return response


async def logout(request: Request) -> Response:
    try:
        who, _ = await _change(request, role=None)
    except ConsoleError as exc:
        return _error_page(request, exc)
    if who.session is not None:
        console(request).sessions.revoke(who.session)
    response = RedirectResponse("/ui?notice=signed-out", 303)
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")
    response.delete_cookie(SECURE_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


# -- the operator's actions ----------------------------------------------------------------------------------------


async def abort(request: Request) -> Response:
    return await _operate(request, "abort")


async def resume(request: Request) -> Response:
    return await _operate(request, "resume")


async def _operate(request: Request, action: Action) -> Response:
    flow = request.path_params["flow"]
    try:
        who, form = await _change(request, role="admin")
        ref = form.get("ref") or None
        try:
            done = await console(request).deps.reconciler.operate(action, flow, ref, _trigger(request, who))
        except LookupFailed as exc:
            raise ConsoleError(404, str(exc)) from None
        except StoreError as exc:
            raise ConsoleError(503, f"the state store could not be written: {exc}") from None
    except ConsoleError as exc:
        return _error_page(request, exc)
    changed = any(d["changed"] for d in done)
    notice = ("aborted" if action == "abort" else "resumed") if changed else "unchanged"
    return RedirectResponse(_back(form.get("back"), flow, notice), 303)


async def fetch_now(request: Request) -> Response:
    try:
        who, form = await _change(request, role="admin")
        reconciler = console(request).deps.reconciler
        trigger = _trigger(request, who)
        outcome = await reconciler.step(trigger)
        if outcome.error is not None:
            detail = f"the fetch failed: {outcome.error}"
        elif outcome.new:
            detail = f"{len(outcome.new)} new commit(s); head {outcome.head[:12] if outcome.head else '—'}"
        else:
            detail = "nothing new"
        try:
            await reconciler.note("fetch", trigger, detail=detail)
        except StoreError as exc:
            raise ConsoleError(503, f"fetched, but the history could not be written: {exc}") from None
    except ConsoleError as exc:
        return _error_page(request, exc)
    return RedirectResponse(_back(form.get("back"), None, "fetched"), 303)


def _trigger(request: Request, who: Viewer) -> str:
    by = f"console: {who.name}" if who.name else "console"
    return f"{by} at {_client(request)}"


def _back(back: str | None, flow: str | None, notice: str) -> str:
    path = BACK.get(back or "", f"/ui/flows/{quote(flow)}" if flow and back == "flow" else "/ui")
    return f"{path}?{urlencode({'notice': notice})}"


async def _change(request: Request, *, role: Role | None) -> tuple[Viewer, dict[str, str]]:
    """A change from the console: from its own origin, by a signed-in browser (of ``role``, when given) whose form
    carries the session's CSRF token. Raises ConsoleError otherwise."""
    _same_origin(request)
    form = await _form(request)
    sessions = console(request).sessions
    session = sessions.check(request.cookies.get(SECURE_COOKIE) or request.cookies.get(COOKIE))
    if session is None:
        raise ConsoleError(401, "sign in with the admin token first (your session may have expired)")
    if not sessions.csrf_ok(session, form.get("csrf", "")):
        raise ConsoleError(403, "this form is not from your session: reload the page and try again")
    if role is not None and session.role != role:
        raise ConsoleError(403, "only a session of the admin token may do this")
    return Viewer(session.role, session.name, session), form


def _same_origin(request: Request) -> None:
    """Refuse a change that a page of another origin sent (the browser names the sender in Origin or Referer)."""
    sender = request.headers.get("origin") or request.headers.get("referer")
    host = request.headers.get("host", "")
    if not sender or sender == "null" or urlsplit(sender).netloc.lower() != host.lower():
        raise ConsoleError(403, "changes are taken only from the console's own pages")


async def _form(request: Request) -> dict[str, str]:
    """The urlencoded form of a request, at most MAX_FORM_BYTES; one value per field."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise ConsoleError(415, "console forms are sent as application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise ConsoleError(413, f"a console form is at most {MAX_FORM_BYTES} bytes")
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise ConsoleError(400, "the form could not be read") from None
    return {key: values[0] for key, values in fields.items()}


def routes() -> list[BaseRoute]:
    return [
        Route("/ui", overview_page, methods=["GET"]),
        Route("/ui/overview.json", overview_json, methods=["GET"]),
        Route("/ui/pending", pending_page, methods=["GET"]),
        Route("/ui/history", history_page, methods=["GET"]),
        Route("/ui/flows/{flow}", flow_page_view, methods=["GET"]),
        Route("/ui/flows/{flow}/abort", abort, methods=["POST"]),
        Route("/ui/flows/{flow}/resume", resume, methods=["POST"]),
        Route("/ui/fetch", fetch_now, methods=["POST"]),
        Route("/ui/events", events, methods=["GET"]),
        Route("/ui/login", login_form, methods=["GET"]),
        Route("/ui/login", login, methods=["POST"]),
        Route("/ui/logout", logout, methods=["POST"]),
        Route("/ui/static/{name}", static_file, methods=["GET"]),
    ]
