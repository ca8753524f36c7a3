"""The routing table: an immutable snapshot of what can be served, and the choice of a version for a request.

Traffic follows Git refs (SPEC 3): a flow's route lists refs with weights. Each ref is looked up first as a
flow-scoped tag (``support-bot/stable`` for the flow ``support-bot``), then as itself; the tracked branch means its
last good commit. A ref that does not exist, whose commit was not built or failed, whose commit lacks the flow, or
that the canary guard aborted, gives its weight to the others. A user's point on the weights is a hash of the flow
and the user, so every replica sends a user to the same ref.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from gitops_flow.exceptions import NoReadyVersion, NotServable
from gitops_flow.routing import DEFAULT_ROUTE, Analysis, RoutingConfig
from gitops_flow.versions import Version, find

DEFAULT_SESSION_TTL = RoutingConfig().session_ttl
TargetState = Literal["live", "aborted", "missing"]


def analysis_key(route: str, ref: str, sha: str) -> str:
    """The name a canary's traffic is counted and aborted under: one route, one ref, one commit."""
    return f"{route}:{ref}:{sha}"


@dataclass(frozen=True, slots=True)
class Choice:
    """The version that serves a request, the ref it was reached by (None for a pin by sha), and, for a canary
    chosen by its weight, the analysis key its outcome counts under."""

    version: Version
    ref: str | None
    guard: str | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """One ref of a route as the table sees it. ``ref`` is the ref found (maybe flow-scoped), ``named`` the route's."""

    named: str
    ref: str
    sha: str | None
    weight: float
    state: TargetState
    guard: str | None = None  # the analysis key, for every ref of a guarded route but the first
    version: Version | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Route:
    """The refs serving one flow: all of them as configured (``targets``) and the live ones' cumulative shares."""

    name: str  # the route's name in gitops-flow.yaml: the flow's own, or "default"
    targets: tuple[Target, ...]
    live: tuple[tuple[float, Target], ...]  # (upper bound in [0, 1], target), ascending

    def pick(self, point: float) -> Target:
        for bound, target in self.live:
            if point < bound:
                return target
        return self.live[-1][1]


def plan_route(
    flow: str,
    routing: RoutingConfig | None,
    *,
    branch: str,
    head: Version,
    refs: Mapping[str, str],
    versions: Mapping[str, Version],
    aborted: frozenset[str] = frozenset(),
) -> Route | None:
    """How ``flow``'s traffic is split, or None when no ref can serve it (it is not at the head either)."""
    configured = routing.routes if routing is not None else {}
    name = flow if flow in configured else DEFAULT_ROUTE
    entries = configured.get(name) or []
    guarded = routing is not None and routing.analysis is not None
    targets: list[Target] = []
    for index, entry in enumerate(entries):
        scoped = f"{flow}/{entry.ref}"
        ref = scoped if scoped in refs else entry.ref
        sha = head.sha if ref == branch else refs.get(ref)
        version = versions.get(sha) if sha is not None else None
        guard = analysis_key(name, ref, sha) if guarded and index > 0 and sha is not None else None
        state: TargetState = "live"
        if version is None or not version.ready or flow not in version.flows:
            state = "missing"
        elif guard is not None and guard in aborted:
            state = "aborted"
        targets.append(Target(entry.ref, ref, sha, entry.weight, state, guard, version))
    live = [t for t in targets if t.state == "live" and t.weight > 0]
    if not live:  # no file, no route, or none of its refs can serve: the branch head serves it all
        if flow not in head.flows:
            return None
        fallback = Target(branch, branch, head.sha, 100.0, "live", None, head)
        return Route(name, tuple(targets) or (fallback,), ((1.0, fallback),))
    total = sum(t.weight for t in live)
    bounds, running = [], 0.0
    for target in live:
        running += target.weight
        bounds.append((running / total, target))
    return Route(name, tuple(targets), tuple(bounds))


def sticky_point(flow: str, user: str) -> float:
    """The user's place in [0, 1) for ``flow``: the same on every replica and every restart."""
    digest = hashlib.sha256(f"{flow}:{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """Everything a request needs to pick its version. Never changed: the reconciler publishes a new one in one step,
    so a request that read the table keeps a consistent view while a deploy goes on.

    ``head`` is the last good version of the tracked branch (a failed commit at the head leaves it where it was);
    ``refs`` maps tag and branch names to commits as last fetched; ``versions`` holds every version seen;
    ``routes`` how each flow of the head splits its traffic; ``aborted`` the analysis keys the guard aborted.
    """

    branch: str
    head: Version | None = None
    refs: Mapping[str, str] = field(default_factory=dict)
    versions: Mapping[str, Version] = field(default_factory=dict)
    routes: Mapping[str, Route] = field(default_factory=dict)
    aborted: frozenset[str] = frozenset()

    @classmethod
    def publish(
        cls,
        branch: str,
        head: Version | None,
        refs: Mapping[str, str],
        versions: Mapping[str, Version],
        aborted: Iterable[str] = (),
    ) -> RoutingTable:
        """A table with every flow's route planned from the head's routing file."""
        stopped = frozenset(aborted)
        routes: dict[str, Route] = {}
        if head is not None:
            referenced = (versions.get(sha) for sha in refs.values())
            names = set(head.flows) | {n for v in referenced if v is not None and v.ready for n in v.flows}
            for flow in sorted(names):
                route = plan_route(
                    flow, head.routing, branch=branch, head=head, refs=refs, versions=versions, aborted=stopped
                )
                if route is not None:
                    routes[flow] = route
        return cls(branch, head, dict(refs), dict(versions), routes, stopped)

    @property
    def routing(self) -> RoutingConfig | None:
        return self.head.routing if self.head is not None else None

    @property
    def session_ttl(self) -> float:
        routing = self.routing
        return routing.session_ttl if routing is not None else DEFAULT_SESSION_TTL

    @property
    def analysis(self) -> Analysis | None:
        routing = self.routing
        return routing.analysis if routing is not None else None

    def guarded(self) -> dict[str, Target]:
        """Every canary the guard watches, by analysis key."""
        return {t.guard: t for r in self.routes.values() for t in r.targets if t.guard and t.state == "live"}

    def default(self, flow: str, *, user: str | None = None, rand: Callable[[], float] = random.random) -> Choice:
        """The version a request without a pin gets: a draw over its route's live refs, at the user's sticky point
        when there is a user (and ``sticky: user``), else at random. A flow no ref serves gets the head, whose
        lack of the flow the caller reports."""
        if self.head is None:
            raise NoReadyVersion("no good version is loaded yet")
        route = self.routes.get(flow)
        if route is None:
            return Choice(self.head, self.branch)
        if len(route.live) == 1:
            target = route.live[0][1]
        else:
            sticky = user and (self.routing is None or self.routing.sticky == "user")
            target = route.pick(sticky_point(flow, user) if sticky and user else rand())
        assert target.version is not None, "live targets have a version"
        return Choice(target.version, target.ref, target.guard)

    def resolve(self, text: str) -> tuple[str, str | None]:
        """The commit an explicit pin names, and the ref it named (None for a sha): a tag or branch as last fetched,
        or the full or short sha of a version seen. The branch means what it serves, its last good commit.

        Raises UnknownVersion when nothing matches; whether the commit can serve is the caller's question.
        """
        if text == self.branch and self.head is not None:
            return self.head.sha, text
        if text in self.refs:
            return self.refs[text], text
        return find(self.versions, text).sha, None

    def session(self, sha: str, flow: str) -> Choice | None:
        """The version a session of ``flow`` is pinned to, if it can still serve it: None when it was retired, or
        when the guard aborted it as a canary of the flow's route (its conversations move to the live refs)."""
        version = self.versions.get(sha)
        if version is None or not version.ready:
            return None
        route = self.routes.get(flow)
        matches = [t for t in route.targets if t.sha == sha] if route is not None else []
        live = [t for t in matches if t.state == "live"]
        if live:
            return Choice(version, live[0].ref, live[0].guard)
        if any(t.state == "aborted" for t in matches):
            return None
        return Choice(version, self.ref_of(sha))

    def ref_of(self, sha: str) -> str | None:
        if self.head is not None and self.head.sha == sha:
            return self.branch
        return next((name for name, target in self.refs.items() if target == sha and name != self.branch), None)

    @staticmethod
    def servable(version: Version) -> Version:
        if version.status == "failed":
            raise NotServable(
                f"version {version.sha[:12]} failed validation ({len(version.problems)} problems); it is never served"
            )
        if version.status == "retired":
            raise NotServable(f"version {version.sha[:12]} was retired; pin a version that is live (see /versions)")
        return version
