"""The server's own endpoints: what it serves and has done, health, metrics and the operator's (the Git hosts'
webhooks are in webhooks.py)."""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Callable, Collection
from typing import Any, TypeVar, cast

from starlette.requests import Request
from starlette.responses import Response

from gitops_flow.delivery.canaries import Action
from gitops_flow.delivery.progress import progress_view
from gitops_flow.delivery.published import Delivery
from gitops_flow.delivery.routing_table import Route, RoutingTable, Target
from gitops_flow.delivery.versions import Version
from gitops_flow.exceptions import StoreError
from gitops_flow.observability.metrics import CONTENT_TYPE
from gitops_flow.server.edge import RequestError, client_address, json_response, read_json, require_json
from gitops_flow.server.endpoints import get_deps
from gitops_flow.stores.events import DeployEvent

log = logging.getLogger("gitops_flow.server")
T = TypeVar("T")

MAX_EVENTS = 1000  # events on one page of /history
MAX_VERSIONS = 500  # versions on one page of /versions
STORE_UNAVAILABLE = "the state store cannot be read or written; the server's log says why"


# -- what the server serves and has done ---------------------------------------------------------------------------


async def flows(request: Request) -> Response:
    """Every flow with its state at the head (live, or failed and what serves it instead) and the refs that serve it:
    each ref's commit, the commit whose build of the flow serves it, share of new traffic (%) and state."""
    reader = await require_reader(request)
    table = get_deps(request).reconciler.table
    known = None if reader else set(table.versions)
    listed = [
        {
            "name": name,
            "description": flow_description(name, route, table.head),
            "route": route.name,
            **flow_state(table, name),
            "versions": route_targets(route, known, branch=table.branch),
        }
        for name, route in sorted(table.routes.items())
    ]
    return json_response({"flows": listed, "head": table.head.sha if table.head else None})


def flow_state(table: RoutingTable, name: str) -> dict[str, Any]:
    """A flow at the head, for people: ``live`` at the commit that serves it, ``pending`` (its tests at the head
    still run) or ``failed`` at the head with its problems, and the commit that serves it instead (``serving``, None
    when nothing does)."""
    head = table.head
    route = table.routes.get(name)
    serving = next((t.serving for _, t in route.live), None) if route is not None else None
    if head is not None and name in head.pending:  # its tests are still running: it serves its previous build
        carried = head.carried.get(name)
        instead = f", serving {carried[:12]}" if carried else ", not served yet"
        summary = f"{name} waits for its tests at {head.sha[:12]}{instead}"
        return {"state": "pending", "serving": carried, "pending_at": head.sha, "summary": summary}
    if head is None or name not in head.failed:
        if serving:
            return {"state": "live", "serving": serving, "summary": f"{name} live at {serving[:12]}"}
        reason = table.why_not_served(name)  # every ref aborted, yanked, failed or missing: requests get a 503
        return {"state": "unserved", "serving": None, "reason": reason, "summary": f"{name} is not served: {reason}"}
    carried = head.carried.get(name)
    instead = f", serving {carried[:12]}" if carried else ", not served"
    return {
        "state": "failed",
        "serving": carried,
        "failed_at": head.sha,
        "problems": [p.as_dict() for p in head.failed[name]],
        "summary": f"{name} failed at {head.sha[:12]}{instead}",
    }


def route_targets(route: Route, known: Collection[str] | None = None, *, branch: str = "") -> list[dict[str, Any]]:
    """Each ref of a route: its commit, the commit that serves it, its share (%) and state, and a progressive
    canary's steps (delivery/progress.py). With ``known`` (the versions of the branch), a commit outside it is shown
    as None: a tag on an unmerged commit is for readers."""
    shares: dict[int, float] = {}
    low = 0.0
    for bound, target in route.live:
        shares[id(target)] = round(100 * (bound - low), 2)
        low = bound
    return [
        {
            "ref": t.ref,
            "sha": t.sha if known is None or t.sha is None or t.sha in known else None,
            "serving": t.serving,
            "weight": shares.get(id(t), 0),
            "state": t.state,
            **({"segment": {"header": t.segment.header, "values": sorted(t.segment.values)}} if t.segment else {}),
            **({"shadows": _shadows(route, t)} if any(s.source is t for s in route.shadows) else {}),
            **({"progress": progress_view(route, branch, t)} if t.steps is not None else {}),
        }
        for t in (route.targets if route.targets else [t for _, t in route.live])
    ]


def _shadows(route: Route, source: Target) -> list[dict[str, Any]]:
    """The candidates shadowing ``source``: their refs, commits serving, states, shares (%) and scorers."""
    return [
        {
            "ref": s.candidate.ref,
            "serving": s.candidate.serving,
            "state": s.candidate.state,
            "share": s.rule.share,
            "scorer": s.rule.scorer,
        }
        for s in route.shadows
        if s.source is source
    ]


def flow_description(name: str, route: Route, head: Version | None = None) -> str:
    """What a flow is for: its serving build's description; for a flow no build serves, the description its
    document gives at ``head``, where it failed."""
    version = route.live[0][1].version if route.live else None
    if version is not None:
        return version.flows[name].spec.description
    return head.described.get(name, "") if head is not None else ""


async def versions(request: Request) -> Response:
    """Versions newest first, a page at a time: ``limit`` (default 50) after the sha ``before``; ``next`` holds the
    query of the next page, or null on the last one."""
    reader = await require_reader(request)
    limit = _limit(request, 50, MAX_VERSIONS)
    reconciler = get_deps(request).reconciler
    head = reconciler.table.head
    newest_first = sorted(reconciler.versions, key=lambda v: (v.time, v.seen), reverse=True)
    start = _after(newest_first, request.query_params.get("before"))
    page = newest_first[start : start + limit]
    listed = [
        _shown({**v.record(), **_held(reconciler, v.sha), "live": head is not None and v.sha == head.sha}, reader)
        for v in page
    ]
    more = start + limit < len(newest_first)
    body = {"source": _source(reconciler), "versions": listed, "next": _next(page[-1].sha, limit) if more else None}
    return json_response(body)


def _held(reconciler: Delivery, sha: str) -> dict[str, Any]:
    """A retired version built again for a pin or a session is ready while it is held (rebuilds.py)."""
    return {"status": "ready"} if sha in reconciler.rebuilds else {}


async def history(request: Request) -> Response:
    """Deploy events newest first, a page at a time: ``limit`` (default 100) numbered below ``before``; each event
    carries its ``id``, and ``next`` the query of the next page (null on the last one)."""
    reader = await require_reader(request)
    limit = _limit(request, 100, MAX_EVENTS)
    raw = request.query_params.get("before")
    if raw is not None and not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise RequestError(400, "bad-cursor", "before is an event id: the 'before' of the previous page's 'next'")
    deps = get_deps(request)
    rows = await deps.store.events(limit + 1, before=int(raw) if raw is not None else None)
    known = {v.sha for v in deps.reconciler.versions}
    events = [{"id": seq, **(event if reader else unmerged_hidden(event, known))} for seq, event in rows[:limit]]
    more = len(rows) > limit
    return json_response({"events": events, "next": _next(rows[limit - 1][0], limit) if more else None})


async def require_reader(request: Request) -> bool:
    """Whether the request shows the read token or the admin token. With a read token configured, the views need
    one of them: 401 otherwise. Without one they are public, minus what only a reader sees (authors' emails, the
    shas of commits that were never merged). A token shown goes through the brake (brake.py): a client with too
    many wrong ones is refused (429) before it is compared."""
    settings = get_deps(request).settings
    given = request.headers.get("authorization", "").encode()

    def matches() -> bool:
        reader = False
        for token in (settings.read_token, settings.admin_token):  # both compared, so timing tells neither apart
            if token is not None and hmac.compare_digest(given, f"Bearer {token.get_secret_value()}".encode()):
                reader = True
        return reader

    reader = await guarded(request, matches) if given else False
    if not reader and settings.read_token is not None:
        raise RequestError(401, "read-token-required", "this view needs Authorization: Bearer <read token>")
    return reader


async def guarded(request: Request, compare: Callable[[], T]) -> T:
    """A check of the token a request shows, through the server's brake on guessing (brake.py), keyed by the
    client's address behind the trusted proxies (httpio.client_address). Raises Limited (429) for a braked client."""
    deps = get_deps(request)
    assert deps.brake is not None, "the app's lifespan gives the handlers a brake"
    return await deps.brake.check(client_address(request), compare)


def _limit(request: Request, default: int, most: int) -> int:
    raw = request.query_params.get("limit", str(default))
    if not raw.isascii() or not raw.isdigit() or not 0 < int(raw) <= most:
        raise RequestError(400, "bad-limit", f"limit is a whole number from 1 to {most}")
    return int(raw)


def _after(newest_first: list[Version], before: str | None) -> int:
    """Where the page after the version ``before`` starts (0 without one)."""
    if before is None:
        return 0
    for index, version in enumerate(newest_first):
        if version.sha == before:
            return index + 1
    raise RequestError(400, "bad-cursor", "before is the full sha of a listed version: the previous page's 'next'")


def _next(before: str | int, limit: int) -> dict[str, Any]:
    return {"before": before, "limit": limit}


def _shown(record: dict[str, Any], reader: bool) -> dict[str, Any]:
    """A version record as this caller may see it: an author's email is for readers only."""
    return record if reader else {**record, "email": None}


_SHA_FIELDS = ("sha", "before", "after", "restores")


def unmerged_hidden(event: DeployEvent, known: set[str]) -> DeployEvent:
    """An event with the shas of commits that are no version of the branch (a tag on an unmerged commit) hidden: those
    fields None (events.py allows it), and the sha's short form in ``detail`` replaced."""
    fields: dict[str, Any] = dict(event)
    hidden = [v for k in _SHA_FIELDS if isinstance(v := fields.get(k), str) and v and v not in known]
    if not hidden:
        return event
    shown = {**fields, **{k: None for k in _SHA_FIELDS if fields.get(k) in hidden}}
    if isinstance(shown.get("detail"), str):
        for sha in hidden:
            shown["detail"] = shown["detail"].replace(sha[:12], "(an unmerged commit)")
    return cast(DeployEvent, shown)  # the same kind, with fewer shas


# -- health and metrics --------------------------------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready once the branch is loaded (a commit that did not fail as a whole), some flow of it can serve, and the
    state store can be written and read; flows that failed at it are listed, but do not unready the server: the
    others serve, and each failed one keeps its last good version. Flows no ref can serve are listed with the reason
    (``unserved``); they unready the server only when no flow can serve at all (a head where every flow failed with
    no good build to carry). A source that fails later is shown here but does not unready the server either."""
    deps = get_deps(request)
    table = deps.reconciler.table
    head = table.head
    unserved = {flow: table.why_not_served(flow) for flow, route in table.routes.items() if not route.live}
    store_error = None
    try:
        await deps.store.ping()  # writes a probe and reads it back: a store that only answers is not enough
        reason = None
    except StoreError as exc:
        store_error, reason = STORE_UNAVAILABLE, str(exc)  # the reason (a file, a host) is for the log only
    # logged when it changes, not at every probe of a load balancer
    if reason != getattr(request.app.state, "store_failure", None):
        if reason is not None:
            log.warning("not ready: %s", reason)
        else:
            log.info("the state store can be written and read again")
        request.app.state.store_failure = reason
    nothing_serves = bool(table.routes) and len(unserved) == len(table.routes)
    ready = head is not None and store_error is None and not nothing_serves
    body = {
        "ready": ready,
        "version": head.sha if head else None,
        "failed_flows": sorted(head.failed) if head else [],
        "unserved": unserved,
        "source": _source(deps.reconciler),
        "store": {"ok": store_error is None, "error": store_error},
        **_worker(deps.reconciler),
        **(deps.feedback.health() if deps.feedback is not None else {}),
    }
    return json_response(body, 200 if ready else 503)


def _worker(reconciler: Delivery) -> dict[str, Any]:
    """Which worker answered, with several (`serve --workers N`): its slot, its process and whether it fetches."""
    leadership = reconciler.leadership
    if leadership is None:
        return {}
    return {"worker": {"slot": leadership.slot, "pid": os.getpid(), "leader": leadership.leading}}


def _source(reconciler: Delivery) -> dict[str, Any]:
    status = reconciler.status
    return {
        "url": status.url,
        "branch": status.branch,
        "fetches": status.fetches,
        "last_fetch": status.last_fetch,
        "last_error": status.last_error,
    }


async def metrics(request: Request) -> Response:
    return Response(get_deps(request).metrics.render(), media_type=CONTENT_TYPE)


# -- the operator's ------------------------------------------------------------------------------------------------


async def require_admin(request: Request) -> None:
    """The operator's endpoints need the admin token, through the brake on guessing (429 for a braked client)."""
    token = get_deps(request).settings.admin_token
    if token is None:
        raise RequestError(403, "admin-disabled", "operator endpoints are off: set GITOPS_FLOW_ADMIN_TOKEN to use them")
    given = request.headers.get("authorization", "")
    expected = "Bearer " + token.get_secret_value()
    if not await guarded(request, lambda: hmac.compare_digest(given.encode(), expected.encode())):
        raise RequestError(401, "unauthorized", "operator endpoints need Authorization: Bearer <admin token>")


async def reconcile_now(request: Request) -> Response:
    """Fetch and apply now, and answer with what happened (operators, tests, the demo). A worker that is not the fetch
    leader wakes the leader, and answers with what it has itself."""
    await require_admin(request)
    require_json(request, body_optional=True)  # it takes no body; one that is sent is JSON, as on every JSON endpoint
    deps = get_deps(request)
    leadership = deps.reconciler.leadership
    if leadership is not None and not leadership.leading:
        await deps.store.publish(f"{deps.replica} operator")
    outcome = await deps.reconciler.step("operator")
    body = {"changed": outcome.changed, "head": outcome.head, "new": list(outcome.new), "error": outcome.error}
    return json_response(body, 200 if outcome.error is None else 502)


async def abort_canary(request: Request) -> Response:
    """``POST /admin/abort {"flow", "ref"?}``: stop a flow's canary at once, on every replica, until it is resumed or
    its ref moves to new content; recorded in the history."""
    return await _operate(request, "abort")


async def resume_canary(request: Request) -> Response:
    """``POST /admin/resume {"flow", "ref"?}``: give an aborted canary its weight back; the guard judges it again on
    what comes after the resume only."""
    return await _operate(request, "resume")


async def _operate(request: Request, action: Action) -> Response:
    await require_admin(request)
    payload = await read_json(request)
    if not isinstance(payload, dict) or not isinstance(payload.get("flow"), str):
        raise RequestError(400, "bad-body", 'the body is {"flow": NAME} with an optional "ref"')
    ref = payload.get("ref")
    if ref is not None and not isinstance(ref, str):
        raise RequestError(400, "bad-body", '"ref" is a ref name')
    trigger = f"operator at {client_address(request)}"
    done = await get_deps(request).reconciler.operate(action, payload["flow"], ref, trigger)
    return json_response({"action": action, "done": done})
