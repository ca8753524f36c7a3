"""The console's changes: signing in and out, and the operator's actions (abort or resume a canary, fetch now), each
audited in the history.

Changing needs a session of the admin token, a CSRF token that matches the session, and a request from the console's
own origin. Promotion and rollback are not here: they are Git commands the pages show (commands.py).
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gitops_flow.console.access import (
    COOKIE,
    SECURE_COOKIE,
    ConsoleError,
    Viewer,
    braked,
    client_of,
    console,
    error_page,
    login_page,
    over_https,
    page,
    signed_in,
)
from gitops_flow.console.auth import NAME_PATTERN, REVOKE, Role
from gitops_flow.delivery.canaries import Action
from gitops_flow.exceptions import LookupFailed, NotAbortable, StoreError

log = logging.getLogger("gitops_flow.server")

MAX_FORM_BYTES = 4096
BACK = {"overview": "/ui", "pending": "/ui/pending"}  # where an action returns to, besides a flow's page


# -- signing in and out --------------------------------------------------------------------------------------------


@page
async def login_form(request: Request, who: Viewer) -> Response:
    return login_page(request, who)


async def login(request: Request) -> Response:
    try:
        _same_origin(request)
        form = await _form(request)
    except ConsoleError as exc:
        return await error_page(request, exc)
    desk = console(request)
    client = client_of(request)
    name = form.get("name", "").strip()
    if not NAME_PATTERN.match(name):
        return login_page(request, Viewer(None), 400, "A name is at most 40 letters, digits, spaces and . _ @ -")
    try:  # the brake every token check goes through, shared by every worker and replica (brake.py)
        role = await braked(request, lambda: desk.sessions.role_of(form.get("token", "")))
    except ConsoleError as exc:
        message = f"Too many failed sign-ins from {client}: try again in {exc.headers['retry-after']} s."
        response = login_page(request, Viewer(None), 429, message)
        response.headers.update(exc.headers)
        return response
    if role is None:
        log.warning("console: a failed sign-in from %s", client)
        return login_page(request, Viewer(None), 401, "That is not a token of this server.")
    cookie, session = desk.sessions.issue(role, name)
    log.info("console: %s signed in as %s from %s", name or "someone", role, client)
    response = RedirectResponse("/ui?notice=signed-in", 303)
    https = over_https(request)
    response.set_cookie(
        SECURE_COOKIE if https else COOKIE,
        cookie,
        max_age=int(desk.sessions.lifetime),
        path="/" if https else "/ui",
        secure=https,
        httponly=True,
        samesite="strict",
    )
    return response


async def logout(request: Request) -> Response:
    try:
        who, _ = await _change(request, role=None)
    except ConsoleError as exc:
        return await error_page(request, exc)
    if who.session is not None:
        desk = console(request)
        try:  # every other worker and replica refuses the cookie too, after a restart as well (signouts.py)
            await desk.signouts.record(who.session)
            await desk.deps.store.publish(f"{desk.deps.replica} {REVOKE} {who.session.nonce} {who.session.expires}")
        except StoreError as exc:
            log.warning("console: the sign-out could not be kept in the state store: %s", exc)
            return await error_page(request, ConsoleError(503, "the sign-out could not be kept: try again"))
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
        except NotAbortable as exc:
            raise ConsoleError(409, str(exc)) from None
        except StoreError as exc:
            raise ConsoleError(503, f"the state store could not be written: {exc}") from None
    except ConsoleError as exc:
        return await error_page(request, exc)
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
            await reconciler.fetched(trigger, detail)
        except StoreError as exc:
            raise ConsoleError(503, f"fetched, but the history could not be written: {exc}") from None
    except ConsoleError as exc:
        return await error_page(request, exc)
    return RedirectResponse(_back(form.get("back"), None, "fetched"), 303)


def _trigger(request: Request, who: Viewer) -> str:
    by = f"console: {who.name}" if who.name else "console"
    return f"{by} at {client_of(request)}"


def _back(back: str | None, flow: str | None, notice: str) -> str:
    path = BACK.get(back or "", f"/ui/flows/{quote(flow)}" if flow and back == "flow" else "/ui")
    return f"{path}?{urlencode({'notice': notice})}"


async def _change(request: Request, *, role: Role | None) -> tuple[Viewer, dict[str, str]]:
    """A change from the console: from its own origin, by a signed-in browser (of ``role``, when given) whose form
    carries the session's CSRF token. Raises ConsoleError otherwise."""
    _same_origin(request)
    form = await _form(request)
    sessions = console(request).sessions
    session = await signed_in(request)
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
