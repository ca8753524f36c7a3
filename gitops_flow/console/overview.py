"""The overview: every flow, its refs, what each serves and how it is doing, and what needs a person first.

It is made of what `/flows` shows (views.flow_state and views.route_targets over the published routing table), the
canary guard's aborts from the state store, and the recent traffic window (recent.py), so the page, `/flows` and
`gitops-flow status` cannot tell different stories.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from gitops_flow.console.display import problem_line
from gitops_flow.delivery.published import SourceState
from gitops_flow.delivery.routing_table import Route, RoutingTable, Target, failure_text
from gitops_flow.observability.recent import Figures
from gitops_flow.server.views import flow_description, flow_state, route_targets
from gitops_flow.stores.base import Record

Level = Literal["error", "warning", "info"]


@dataclass(frozen=True, slots=True)
class Alert:
    """One thing an operator should look at, worst first; ``flow`` links it to a flow's page."""

    level: Level
    text: str
    flow: str | None = None


@dataclass(frozen=True, slots=True)
class RefRow:
    """One ref of a flow's route: the commit it names, the commit whose build serves it, its weight (% of new
    traffic), the share of the flow's requests it took in the window, the window's figures of that build through
    it, and why it does not serve when it does not."""

    ref: str
    named: str
    sha: str | None
    serving: str | None
    weight: float
    state: str
    canary: bool
    share: float | None
    figures: Figures | None
    reason: str | None = None
    stopped_by: str | None = None
    stopped_at: float | None = None
    abortable: bool = False  # a live canary whose build differs from its primary's: an abort changes what serves
    progress: dict[str, Any] | None = None  # a progressive canary's steps (delivery/progress.py: progress_view)


@dataclass(frozen=True, slots=True)
class FlowRow:
    """A flow at the head (``state`` live, failed or missing, with the summary /flows gives), its refs, and the
    versions that served it in the window through no current ref (sessions and pins that outlive a deploy)."""

    name: str
    description: str
    route: str
    state: str
    summary: str
    serving: str | None
    failed_at: str | None
    problems: tuple[Mapping[str, Any], ...]
    refs: tuple[RefRow, ...]
    others: tuple[Figures, ...] = ()

    @property
    def requests(self) -> int:
        return sum(r.figures.requests for r in self.refs if r.figures) + sum(f.requests for f in self.others)


@dataclass(frozen=True, slots=True)
class Overview:
    """Everything the overview page and `gitops-flow status` show."""

    url: str
    branch: str
    head: str | None
    head_summary: str
    last_fetch: float | None
    last_error: str | None
    building: str | None
    window: float  # seconds the traffic figures cover
    flows: tuple[FlowRow, ...]
    alerts: tuple[Alert, ...] = field(default=())
    store_error: str | None = None
    processes: int = 1  # the worker processes whose traffic the figures add up (every replica's)
    replicas: int = 1  # the servers (replicas) they belong to

    def flow(self, name: str) -> FlowRow | None:
        return next((f for f in self.flows if f.name == name), None)


def overview(
    table: RoutingTable,
    status: SourceState,
    aborts: Mapping[str, Record],
    figures: Sequence[Figures],
    *,
    window: float,
    store_error: str | None = None,
    reader: bool = False,
    processes: int = 1,
    replicas: int = 1,
) -> Overview:
    """The overview of ``table`` as the reconciler's ``status`` left it, with the store's ``aborts`` and the recent
    ``figures`` (of every flow); without ``reader``, the commits of refs off the branch are not named."""
    by_flow: dict[str, list[Figures]] = {}
    for found in figures:
        by_flow.setdefault(found.flow, []).append(found)
    flows = tuple(
        _flow_row(table, name, route, aborts, by_flow.get(name, []), None if reader else set(table.versions))
        for name, route in sorted(table.routes.items())
    )
    head = table.head
    return Overview(
        url=status.url,
        branch=status.branch,
        head=head.sha if head else None,
        head_summary=head.summary if head else "",
        last_fetch=status.last_fetch,
        last_error=status.last_error,
        building=status.building,
        window=window,
        flows=flows,
        alerts=tuple(_alerts(table, status, flows, store_error)),
        store_error=store_error,
        processes=processes,
        replicas=replicas,
    )


def _flow_row(
    table: RoutingTable,
    name: str,
    route: Route,
    aborts: Mapping[str, Record],
    figures: list[Figures],
    known: set[str] | None,
) -> FlowRow:
    state = flow_state(table, name)
    targets = route.targets if route.targets else tuple(t for _, t in route.live)
    total = sum(f.requests for f in figures)
    rows = []
    used: set[tuple[str, str | None]] = set()
    for target, shown in zip(targets, route_targets(route, known, branch=table.branch), strict=True):
        through = [f for f in figures if f.ref == target.ref]
        mine = next((f for f in through if f.sha == target.serving), None)
        if mine is not None:
            used.add((mine.sha, mine.ref))
        share = round(100 * sum(f.requests for f in through) / total, 1) if total else None
        row = _ref_row(table, name, target, shown["sha"], float(shown["weight"]), share, mine, aborts)
        rows.append(replace(row, abortable=route.abortable(name, target), progress=shown.get("progress")))
    others = tuple(f for f in figures if (f.sha, f.ref) not in used)
    return FlowRow(
        name=name,
        description=flow_description(name, route, table.head),
        route=route.name,
        state=str(state["state"]),
        summary=str(state["summary"]),
        serving=state.get("serving"),
        failed_at=state.get("failed_at"),
        problems=tuple(state.get("problems", ())),
        refs=tuple(rows),
        others=others,
    )


def _ref_row(
    table: RoutingTable,
    flow: str,
    target: Target,
    sha: str | None,
    weight: float,
    share: float | None,
    figures: Figures | None,
    aborts: Mapping[str, Record],
) -> RefRow:
    reason = stopped_by = None
    stopped_at = None
    if target.state == "aborted" and target.guard is not None:
        record = aborts.get(target.guard, {})
        reason = str(record.get("reason") or "aborted")
        stopped_by = str(record["by"]) if record.get("by") else "the canary guard"
        stopped_at = float(record["time"]) if isinstance(record.get("time"), int | float) else None
    elif target.state == "failed" and target.sha is not None and target.sha in table.versions:
        reason = failure_text(table.versions[target.sha], flow)
    elif target.state == "yanked":
        reason = "yanked in the routing file: never served again"
    elif target.state == "missing" and target.sha is None:
        reason = f"no ref {target.ref!r} in the repository"
    elif target.state == "missing":
        reason = f"{sha[:12]} has no good build of {flow}" if sha else "it points at a commit off the branch"
    return RefRow(
        ref=target.ref,
        named=target.named,
        sha=sha,
        serving=target.serving,
        weight=weight,
        state=target.state,
        canary=target.guard is not None,
        share=share,
        figures=figures,
        reason=reason,
        stopped_by=stopped_by,
        stopped_at=stopped_at,
    )


def _alerts(table: RoutingTable, status: SourceState, flows: Sequence[FlowRow], store_error: str | None) -> list[Alert]:
    found: list[Alert] = []
    if table.head is None:
        found.append(Alert("error", "no good version is loaded yet: nothing is served"))
    if status.last_error:
        found.append(Alert("error", f"fetching fails: {status.last_error}"))
    if store_error:
        found.append(Alert("error", f"the state store: {store_error}"))
    for row in flows:
        if row.state == "failed":
            first = row.problems[0] if row.problems else None
            where = f": {problem_line(first)}" if first else ""
            more = f" (and {len(row.problems) - 1} more)" if len(row.problems) > 1 else ""
            found.append(Alert("error", f"{row.summary}{where}{more}", row.name))
        elif row.state in ("missing", "unserved"):  # unserved: its requests are answered 503 nothing-servable
            found.append(Alert("error", row.summary, row.name))
        for ref in row.refs:
            if ref.state == "aborted":
                found.append(
                    Alert("warning", f"{row.name}: the canary on {ref.ref} is aborted: {ref.reason}", row.name)
                )
            if ref.figures is not None and ref.figures.errors:
                rate = ref.figures.error_rate
                found.append(
                    Alert("warning", f"{row.name} on {ref.ref}: {rate:.1%} of requests failed lately", row.name)
                )
    if status.building:
        found.append(Alert("info", f"building {status.building[:12]}"))
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(found, key=lambda alert: order[alert.level])
