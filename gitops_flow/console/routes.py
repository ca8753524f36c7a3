"""The console's HTTP routes under /ui: the pages, the live feed and the overview as JSON, and where the changes
(actions.py) are mounted.

Reading follows the server's rule for its views: public unless a read token is configured (access.py).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from gitops_flow.cli.remote import verdict_line
from gitops_flow.console import charts
from gitops_flow.console.access import ConsoleError, Viewer, console, context, may_read, page, viewer
from gitops_flow.console.actions import abort, fetch_now, login, login_form, logout, resume
from gitops_flow.console.feed import Full
from gitops_flow.console.flowpage import BadChoice, flow_page
from gitops_flow.console.overview import Overview
from gitops_flow.console.renderer import static
from gitops_flow.console.trail import KINDS, Filter, entries
from gitops_flow.exceptions import StoreError
from gitops_flow.server.edge import json_response
from gitops_flow.server.experiments_api import flow_report
from gitops_flow.server.views import STORE_UNAVAILABLE

log = logging.getLogger("gitops_flow.server")

# -- pages ----------------------------------------------------------------------------------------------------------


@page
async def overview_page(request: Request, who: Viewer) -> Response:
    desk = console(request)
    facts = await desk.facts()
    view = desk.overview(facts, reader=who.role is not None)
    waiting = desk.pending(facts, reader=who.role is not None)
    recent = entries(desk.shown(facts.events, reader=who.role is not None), Filter(), limit=8)
    return desk.pages.render("overview.html", context(request, who, view=view, pending=waiting, recent=recent))


async def overview_json(request: Request) -> Response:
    """The overview as JSON: what `gitops-flow status` prints."""
    try:
        who = await viewer(request)
    except ConsoleError as exc:
        code = "too-many-failures" if exc.status == 429 else "unauthorized"
        return json_response({"error": {"code": code, "message": str(exc)}}, exc.status, exc.headers)
    if not may_read(request, who):
        message = "this view needs Authorization: Bearer <read token>"
        return json_response({"error": {"code": "read-token-required", "message": message}}, 401)
    desk = console(request)
    facts = await desk.facts()
    return json_response(
        overview_body(
            desk.overview(facts, reader=who.role is not None), desk.pending(facts, reader=who.role is not None).count
        )
    )


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
        "traffic": {"window_seconds": view.window, "processes": view.processes, "replicas": view.replicas},
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
                        "abortable": r.abortable,
                        "share": r.share,
                        "reason": r.reason,
                        "stopped_by": r.stopped_by,
                        "progress": r.progress,
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
    return desk.pages.render("pending.html", context(request, who, pending=waiting, store_error=facts.store_error))


@page
async def flow_page_view(request: Request, who: Viewer) -> Response:
    desk = console(request)
    name = request.path_params["flow"]
    facts = await desk.facts()
    view = desk.overview(facts, reader=who.role is not None)
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
    try:
        experiment = await flow_report(desk.deps, name)
    except StoreError as exc:  # the page still shows the rest; the log says why
        log.warning("the experiment of flow %s could not be read: %s", name, exc)
        experiment = None
    try:
        _, series = await desk.traffic.history(name)
        drawn = charts.draw(series)
    except StoreError as exc:
        log.warning("console: %s", exc)  # the reason (a file, a host) is for the log only
        drawn = charts.Charts((), ())
    verdicts = [verdict_line(v, experiment["min_sample"]).strip() for v in experiment["verdicts"]] if experiment else []
    shown = context(request, who, page=found, view=view, experiment=experiment, verdicts=verdicts, charts=drawn)
    return desk.pages.render("flow.html", shown)


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
    shown = context(
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
    return desk.pages.render("history.html", shown)


def _history_url(query: dict[str, str]) -> str:
    return f"/ui/history?{urlencode(query)}" if query else "/ui/history"


async def events(request: Request) -> Response:
    """The live feed (server-sent events) the pages listen to."""
    try:
        who = await viewer(request)
    except ConsoleError as exc:
        return Response(str(exc), exc.status, exc.headers, media_type="text/plain")
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
