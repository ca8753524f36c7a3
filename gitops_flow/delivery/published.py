"""What the request path may see of delivery: the routing table published last, and the operator's handles.

The reconciler publishes one immutable ``RoutingTable`` by a single assignment; a request reads ``table`` once and
works with that snapshot, so it sees the old table or the new one, never a mix. These protocols are all the server
knows of delivery: it never imports the reconciler (an import-linter contract in pyproject.toml holds this).
"""

from __future__ import annotations

from typing import Protocol

from gitops_flow.delivery.canaries import Action
from gitops_flow.delivery.leader import Leadership
from gitops_flow.delivery.rebuilds import Rebuilds
from gitops_flow.delivery.routing_table import Choice, RoutingTable
from gitops_flow.delivery.versions import Version


class Resolver(Protocol):
    """Resolves a request's version: the published snapshot, a pin's version, an old version a session holds."""

    @property
    def table(self) -> RoutingTable:
        """The routing table published last: immutable, replaced whole."""
        ...

    async def pinned(self, flow: str, text: str) -> Choice:
        """The version an explicit pin reaches under the operator's pin policy; raises ``LookupFailed`` if none."""
        ...

    async def revive(self, sha: str, flow: str) -> Version | None:
        """A version no longer held, built again for a session pinned to it; None when it may not be served."""
        ...


class SourceState(Protocol):
    """How the last fetch went (for /readyz, /versions and the console)."""

    @property
    def url(self) -> str: ...
    @property
    def branch(self) -> str: ...
    @property
    def fetches(self) -> int: ...
    @property
    def last_fetch(self) -> float | None: ...
    @property
    def last_error(self) -> str | None: ...
    @property
    def building(self) -> str | None: ...


class StepOutcome(Protocol):
    """What one reconcile did."""

    @property
    def changed(self) -> bool: ...
    @property
    def head(self) -> str | None: ...
    @property
    def new(self) -> tuple[str, ...]: ...
    @property
    def error(self) -> str | None: ...


class Delivery(Resolver, Protocol):
    """The resolver, and what the operator's endpoints read and ask of delivery."""

    @property
    def versions(self) -> list[Version]: ...
    @property
    def rebuilds(self) -> Rebuilds: ...
    @property
    def leadership(self) -> Leadership | None: ...
    @property
    def status(self) -> SourceState: ...

    def request(self, reason: str = "request") -> None:
        """Nudge: fetch soon (a webhook's delivery, a replica's message); returns at once."""
        ...

    async def step(self, trigger: str) -> StepOutcome:
        """Fetch and apply now, and say what happened."""
        ...

    async def operate(self, action: Action, flow: str, ref: str | None, trigger: str) -> list[dict[str, object]]:
        """Abort or resume a flow's canary on every replica; returns what was done."""
        ...

    async def fetched(self, trigger: str, detail: str) -> None:
        """Record in the history that an operator asked for a fetch (which changes nothing by itself)."""
        ...
