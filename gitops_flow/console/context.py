"""What the console's handlers share: the server's parts (Deps), the sessions, the flow documents, the live feed and
the pages; and the views they read, made once here for every page and for `gitops-flow status`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.console.auth import Role, Sessions
from gitops_flow.console.backlog import Pending, pending
from gitops_flow.console.documents import Documents
from gitops_flow.console.feed import Feed
from gitops_flow.console.overview import Overview, overview
from gitops_flow.console.renderer import Pages
from gitops_flow.console.signouts import SignOuts
from gitops_flow.console.traffic import Coverage, SharedTraffic
from gitops_flow.delivery.routing_table import RESUMED_PREFIX, STEP_PREFIX
from gitops_flow.delivery.source import GitSource
from gitops_flow.exceptions import StoreError
from gitops_flow.observability.recent import Figures
from gitops_flow.security.policy import SecretPolicy
from gitops_flow.server.endpoints import Deps
from gitops_flow.server.views import STORE_UNAVAILABLE, unmerged_hidden
from gitops_flow.stores.base import Record
from gitops_flow.stores.events import DeployEvent

log = logging.getLogger("gitops_flow.server")

HISTORY_READ = 1000  # the newest events the console reads (and filters) at most


class _Same:
    """Equal only to itself: a fingerprint part that changes whenever the object is replaced (the routing table is
    replaced, never changed), held so that its id cannot be reused meanwhile."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)


@dataclass(frozen=True, slots=True)
class Facts:
    """What every page reads from the store (None and an error when the store is away)."""

    aborts: dict[str, Record]
    events: list[DeployEvent]
    store_error: str | None
    figures: list[Figures] | None = None  # every process's recent traffic (traffic.py); None: this process's only
    coverage: Coverage | None = None


class Console:
    """The console of one server."""

    def __init__(
        self,
        deps: Deps,
        *,
        source: GitSource,
        registry: ComponentRegistry,
        policy: SecretPolicy,
        scrub: Callable[[Any], Any],
    ) -> None:
        self.deps = deps
        self.registry = registry
        self.scrub = scrub
        self.sessions = Sessions(self._token)
        self.signouts = SignOuts(deps.store, self.sessions)
        self.documents = Documents(source, registry, policy)
        self.pages = Pages()
        leadership = deps.reconciler.leadership
        self.traffic = SharedTraffic(
            deps.store,
            deps.metrics.recent,
            process=deps.replica,
            server=leadership.name if leadership is not None else deps.replica,  # fetch:GROUP: one per server
        )
        # what this process served, and what every process had served at the last flush: a page open on this
        # worker hears of the requests the others answer too
        self.feed = Feed(self._fingerprint, lambda: deps.metrics.recent.total + self.traffic.seen)

    def _token(self, role: Role) -> str | None:
        settings = self.deps.settings
        token = settings.admin_token if role == "admin" else settings.read_token
        return token.get_secret_value() if token is not None else None

    def kind_of(self, component: str) -> str | None:
        return self.registry.kind_of(component)

    async def facts(self, events: int = 200) -> Facts:
        """The aborts and the newest ``events`` of the history (as stored: see ``shown``)."""
        try:
            aborts = await self.deps.store.aborts()
            found = [event for _, event in await self.deps.store.events(events)]
            figures, coverage = await self.traffic.figures(self.deps.reconciler.table.routes)
        except StoreError as exc:
            log.warning("console: %s", exc)  # the reason (a file, a host) is for the log only, as /readyz does
            return Facts({}, [], STORE_UNAVAILABLE)
        stopped = {key: record for key, record in aborts.items() if not key.startswith((RESUMED_PREFIX, STEP_PREFIX))}
        return Facts(stopped, found, None, figures, coverage)

    async def older(self, before: int | None, limit: int = HISTORY_READ) -> tuple[list[DeployEvent], int | None]:
        """A page of the history: ``limit`` events numbered below ``before`` (the newest without it), and the number
        the next page starts below (None on the last). Raises StoreError."""
        rows = await self.deps.store.events(limit + 1, before=before)
        more = len(rows) > limit
        rows = rows[:limit]
        return [event for _, event in rows], rows[-1][0] if more and rows else None

    def shown(self, events: list[DeployEvent], *, reader: bool) -> list[DeployEvent]:
        """Events as /history shows them to this viewer: without a token, the shas of unmerged commits hidden."""
        if reader:
            return events
        known = {v.sha for v in self.deps.reconciler.versions}
        return [unmerged_hidden(event, known) for event in events]

    def overview(self, facts: Facts, *, reader: bool) -> Overview:
        """The overview as this viewer may see it (``reader``: the commits of refs off the branch named)."""
        reconciler = self.deps.reconciler
        recent = self.deps.metrics.recent
        coverage = facts.coverage or Coverage(recent.span, 1, 1)  # the store is away: this process's own figures
        return overview(
            reconciler.table,
            reconciler.status,
            facts.aborts,
            facts.figures if facts.figures is not None else recent.figures(),
            window=coverage.window,
            store_error=facts.store_error,
            reader=reader,
            processes=coverage.processes,
            replicas=coverage.replicas,
        )

    def pending(self, facts: Facts, *, reader: bool) -> Pending:
        reconciler = self.deps.reconciler
        return pending(
            reconciler.table, reconciler.status, reconciler.versions, facts.events, facts.aborts, reader=reader
        )

    async def _fingerprint(self) -> Hashable:
        reconciler = self.deps.reconciler
        status = reconciler.status
        newest = await self.deps.store.events(1)
        return (
            _Same(reconciler.table),
            status.fetches,
            status.last_error,
            status.building,
            newest[0][0] if newest else None,
        )
