"""A flow's page: its versions over time, a drawing of its graph at one of them, the difference between any two, the
Git commands that promote or roll it back, and its part of the audit trail."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gitops_flow.console import commands
from gitops_flow.console.backlog import waiting
from gitops_flow.console.commands import Command
from gitops_flow.console.diff import FlowDiff, compare
from gitops_flow.console.documents import Documents
from gitops_flow.console.drawing import Drawing, draw
from gitops_flow.console.overview import FlowRow
from gitops_flow.console.trail import Entry, Filter, entries
from gitops_flow.delivery.routing_table import RoutingTable
from gitops_flow.delivery.versions import Version
from gitops_flow.stores.events import DeployEvent

MAX_VERSIONS = 60  # versions listed on a flow's page


class BadChoice(ValueError):
    """A version asked for in the page's query that is not one of the flow's versions."""


@dataclass(frozen=True, slots=True)
class VersionRow:
    """A commit in a flow's life: what the flow was there (``changed``, ``unchanged``, ``failed``, ``deleted`` or
    ``commit failed``), the refs pointing at it and the refs whose traffic its build serves now."""

    sha: str
    time: float
    author: str
    summary: str
    status: str
    head: bool
    refs: tuple[str, ...]
    serving_for: tuple[str, ...]
    yanked: bool
    went_live: bool
    problems: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class FlowPage:
    row: FlowRow
    versions: tuple[VersionRow, ...]
    choices: tuple[VersionRow, ...]  # what the drawing and the diff may show
    drawn: str | None
    drawing: Drawing | None
    drawing_error: str | None
    before: str | None
    after: str | None
    diff: FlowDiff | None
    diff_error: str | None
    commands: tuple[Command, ...]
    events: tuple[Entry, ...] = field(default=())


async def flow_page(
    row: FlowRow,
    table: RoutingTable,
    versions: Iterable[Version],
    documents: Documents,
    events: Sequence[DeployEvent],
    *,
    kind_of: Callable[[str], str | None],
    scrub: Callable[[Any], Any],
    at: str | None = None,
    before: str | None = None,
    after: str | None = None,
) -> FlowPage:
    """The page of the flow ``row`` describes. ``at`` is the version to draw, ``before`` and ``after`` the versions
    to compare (full shas of the flow's versions; defaults: what the head serves, and what the primary ref serves
    against it). Raises BadChoice for a sha that is none of the flow's versions."""
    known = {v.sha: v for v in versions}
    rows = _rows(row.name, table, known.values())
    choices = tuple(r for r in rows if r.status not in ("deleted",))
    by_sha = {r.sha: r for r in choices}
    for asked in (at, before, after):
        if asked is not None and asked not in by_sha:
            raise BadChoice(f"{asked[:40]!r} is not a version of flow {row.name!r} listed on its page")
    flows_dir = table.routing.flows_dir if table.routing is not None else "flows"
    newest = (table.head.serving(row.name) if table.head else None) or row.serving
    drawn = at or newest
    drawing = drawing_error = None
    if drawn is not None and drawn in known:
        document = await documents.read(known[drawn], row.name, flows_dir)
        if document.spec is not None:
            drawing = draw(document.spec, kind_of, scrub=scrub, prefix="graph")
        drawing_error = document.error
    after = after or newest
    before = before or _default_before(row, choices, after)
    diff = diff_error = None
    if before is not None and after is not None and before in known and after in known:
        old = await documents.read(known[before], row.name, flows_dir)
        new = await documents.read(known[after], row.name, flows_dir)
        diff = compare(old.spec, new.spec, scrub)
        diff_error = old.error or new.error
    return FlowPage(
        row=row,
        versions=rows,
        choices=choices,
        drawn=drawn,
        drawing=drawing,
        drawing_error=drawing_error,
        before=before,
        after=after,
        diff=diff,
        diff_error=diff_error,
        commands=tuple(_commands(row, table, known.values())),
        events=tuple(entries(events, Filter(flow=row.name), limit=15)),
    )


def _rows(flow: str, table: RoutingTable, versions: Iterable[Version]) -> tuple[VersionRow, ...]:
    head = table.head
    pointed: dict[str, list[str]] = {}
    for name, sha in table.refs.items():
        pointed.setdefault(sha, []).append(name)
    route = table.routes.get(flow)
    serving: dict[str, list[str]] = {}
    for _, target in route.live if route is not None else ():
        if target.serving is not None:
            serving.setdefault(target.serving, []).append(target.ref)
    picked = [
        v
        for v in versions
        if flow in v.changed or flow in v.failed or v.sha in pointed or v.sha in serving or (head and v.sha == head.sha)
    ]
    picked.sort(key=lambda v: (v.time, v.seen), reverse=True)
    return tuple(
        VersionRow(
            sha=v.sha,
            time=v.time,
            author=v.author,
            summary=v.summary,
            status=_status(v, flow),
            head=head is not None and v.sha == head.sha,
            refs=tuple(sorted(pointed.get(v.sha, []))),
            serving_for=tuple(serving.get(v.sha, [])),
            yanked=table.yanked_for(flow, v),
            went_live=v.went_live,
            problems=tuple(p.as_dict() for p in (v.problems if v.status == "failed" else v.failed.get(flow, ()))),
        )
        for v in picked[:MAX_VERSIONS]
    )


def _status(version: Version, flow: str) -> str:
    if version.status == "failed":
        return "commit failed"
    if flow in version.failed:
        return "failed"
    if flow in version.names:
        return "changed" if flow in version.changed else "unchanged"
    return "deleted" if flow in version.changed else "unchanged"


def _default_before(row: FlowRow, choices: Sequence[VersionRow], after: str | None) -> str | None:
    """What the primary ref serves, when it is not ``after``; else the change before ``after``."""
    primary = row.refs[0].serving if row.refs else None
    if primary is not None and primary != after:
        return primary
    shas = [r.sha for r in choices]
    if after in shas:
        older = [r for r in choices[shas.index(after) + 1 :] if r.status in ("changed", "failed")]
        return older[0].sha if older else None
    return None


def _commands(row: FlowRow, table: RoutingTable, versions: Iterable[Version]) -> list[Command]:
    """Promote the newest build when it does not take all the traffic; roll back the flow's last change."""
    head = table.head
    route = table.routes.get(row.name)
    if head is None or route is None:
        return []
    found = []
    published = waiting(table, row.name, route)
    if published is not None and published.command is not None:
        found.append(published.command)
    changes = [
        v
        for v in versions
        if row.name in v.changed and v.status != "failed" and (v.time, v.seen) <= (head.time, head.seen)
    ]
    if changes:
        last = max(changes, key=lambda v: (v.time, v.seen))
        found.append(commands.rollback(row.name, last.sha, table.branch, last.changed))
    return found
