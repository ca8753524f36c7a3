"""Explicit pins (``X-Flow-Version``): which version of a flow a pin reaches, under the operator's pin policy.

A pin names a ref (resolved per flow, as routes resolve it) or a full or short sha. What it may reach is the
operator's choice (Settings.pins): ``current`` (the default) only what the flow's live refs serve now; ``history``
also any version that served as the branch head or through a ref and is still on the branch (rebuilt on demand,
bounded, see rebuilds.py); ``off`` nothing. A yanked commit is never reached, nor a commit whose build of the flow
a yanked commit brought in. Whatever is refused is refused with the
same words whether or not the commit exists, so a pin never tells an anonymous client about an unmerged commit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from gitops_flow.config import PinPolicy
from gitops_flow.delivery.rebuilds import Rebuilds
from gitops_flow.delivery.routing_table import Choice, RoutingTable, failure_text
from gitops_flow.delivery.versions import MIN_SHORT_SHA, Version
from gitops_flow.exceptions import NotServable, PinsDisabled, UnknownFlow, UnknownVersion

OnBranch = Callable[[str], Awaitable[bool]]  # whether a commit is on the tracked branch as last fetched


class Pins:
    """Resolves explicit pins against the published table; ``versions`` are every version known (retired ones
    included), ``on_branch`` asks Git, and ``rebuilds`` builds what history pins reach that is no longer held."""

    def __init__(
        self,
        policy: PinPolicy,
        *,
        versions: Callable[[], dict[str, Version]],
        on_branch: OnBranch,
        rebuilds: Rebuilds,
    ) -> None:
        self.policy = policy
        self._versions = versions
        self._on_branch = on_branch
        self._rebuilds = rebuilds

    async def choose(self, table: RoutingTable, flow: str, text: str) -> Choice:
        """The version ``text`` pins ``flow`` to. Raises PinsDisabled, UnknownVersion (nothing this server serves to
        pins; the same words for a commit that does not exist), NotServable (yanked, or the flow failed there,
        naming the problems) or UnknownFlow (a good version without the flow)."""
        if self.policy == "off":
            raise PinsDisabled("this server takes no version pins (X-Flow-Version, configurable.flow_version)")
        refused = UnknownVersion(f"{text[:80]!r} names no version of flow {flow!r} that this server serves to pins")
        named = self._named(table, flow, text.strip())
        if named is None:
            raise refused
        at, ref = named
        if not await self._may_see(table, flow, at):
            raise refused
        if table.yanked(at.sha):
            raise NotServable(f"version {at.sha[:12]} was yanked; it is never served")
        serving = (
            at.serving(flow) if ref is not None else (at.sha if flow in at.names and at.status != "failed" else None)
        )
        if serving is None:
            if at.status == "failed" or flow in at.failed:
                raise NotServable(failure_text(at, flow))
            raise UnknownFlow(f"no flow {flow!r} at version {at.sha[:12]}")
        if table.yanked(serving):
            raise NotServable(f"version {serving[:12]} of flow {flow!r} was yanked; it is never served")
        known = table.versions.get(serving)
        if known is not None and table.yanked_for(flow, known):
            raise NotServable(f"version {serving[:12]} of flow {flow!r} serves a yanked build; it is never served")
        current = table.current(flow).get(serving)
        if current is not None and current.version is not None:
            return Choice(current.version, ref)
        if self.policy != "history":
            raise refused
        held = known
        version = held if held is not None and flow in held.flows else await self._rebuilds.get(serving)
        if flow not in version.flows:
            raise NotServable(failure_text(version, flow))
        if table.yanked_for(flow, version):
            raise NotServable(f"version {serving[:12]} of flow {flow!r} serves a yanked build; it is never served")
        return Choice(version, ref)

    def _named(self, table: RoutingTable, flow: str, text: str) -> tuple[Version, str | None] | None:
        """The version a pin names and the ref it named (None for a sha); None when it names nothing known."""
        known = self._versions()
        if text == table.branch and table.head is not None:
            return table.head, text
        for ref in (f"{flow}/{text}", text):
            sha = table.refs.get(ref)
            if sha is not None:
                version = known.get(sha)
                return (version, ref) if version is not None else None
        lowered = text.lower()
        if len(lowered) < MIN_SHORT_SHA or any(c not in "0123456789abcdef" for c in lowered):
            return None
        matches = [v for sha, v in known.items() if sha.startswith(lowered)]
        return (matches[0], None) if len(matches) == 1 else None

    async def _may_see(self, table: RoutingTable, flow: str, version: Version) -> bool:
        """Whether an anonymous client may learn anything of ``version``: it serves the flow now, or it is the head or
        a route's commit, or (history) it went live and is still on the branch."""
        if table.head is not None and version.sha == table.head.sha:
            return True
        route = table.routes.get(flow)
        if route is not None and any(version.sha in (t.sha, t.serving) for t in route.targets if t.state == "live"):
            return True
        return self.policy == "history" and version.went_live and await self._on_branch(version.sha)
