"""The routing table: an immutable snapshot of what can be served, and the choice of a version for a request.

Traffic follows Git refs (SPEC 3), flow by flow: a flow's route lists refs with weights. Each ref is looked up first
as a flow-scoped tag (``support-bot/stable`` for the flow ``support-bot``), then as itself; the tracked branch means
its last good commit. A ref resolves, per flow, to that flow's newest good build at or before the ref's commit (a flow
that failed at the commit keeps serving its carried build). A ref that does not exist, whose commit was not built or
failed as a whole, where the flow has no good build, that the operator yanked (or whose build of the flow a yanked
commit brought in), or that the canary guard aborted for this flow, gives its weight to the others. A user's point
on the weights is a hash of the flow and the user, so every replica sends a user to the same ref.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from gitops_flow.delivery.versions import Version
from gitops_flow.exceptions import NoReadyVersion, NothingServable
from gitops_flow.flow.routing import DEFAULT_ROUTE, Analysis, RouteTarget, RoutingConfig, Shadow

DEFAULT_SESSION_TTL = RoutingConfig().session_ttl
TargetState = Literal["live", "aborted", "missing", "failed", "yanked"]


def analysis_key(flow: str, ref: str, content: str) -> str:
    """The name a canary's traffic is counted and aborted under: one flow, one ref, one content of the flow (its
    file's blob), so a commit that leaves the flow alone leaves its verdict alone."""
    return f"{flow}:{ref}:{content}"


RESUMED_PREFIX = "resumed|"  # an abort store entry that records when an operator resumed a canary, not an abort
STEP_PREFIX = "step|"  # an abort store entry that records a step a progressive canary reached (progress.py)


def stopped(records: Mapping[str, object]) -> frozenset[str]:
    """The analysis keys aborted, from every entry of the store's aborts (resume and step records left out)."""
    return frozenset(key for key in records if not key.startswith((RESUMED_PREFIX, STEP_PREFIX)))


def progress_key(guard: str, serving: str) -> str:
    """The name a progressive canary's steps are kept under: its analysis key and the commit serving it, so a new
    commit of the canary's ref starts again from the first step (a new version, a new experiment)."""
    return f"{guard}|{serving}"


@dataclass(frozen=True, slots=True)
class Reached:
    """Where a progressive canary is: the largest share it reached and since when it holds it."""

    share: float
    since: float


@dataclass(frozen=True, slots=True)
class Steps:
    """A progressive canary's steps as the routing file declares them, and the one it holds (``index``; ``since``
    None: not recorded yet, the first step)."""

    shares: tuple[float, ...]
    interval: float
    index: int = 0
    since: float | None = None

    @property
    def share(self) -> float:
        return self.shares[self.index]

    @property
    def last(self) -> bool:
        return self.index == len(self.shares) - 1

    @classmethod
    def at(cls, shares: tuple[float, ...], interval: float, reached: Reached | None) -> Steps:
        """The step a canary holds when it ``reached`` a share: the largest step not above it (the steps may have
        changed in Git since), else the first."""
        if reached is None:
            return cls(shares, interval)
        index = max((i for i, share in enumerate(shares) if share <= reached.share), default=0)
        return cls(shares, interval, index, reached.since)


def split_key(key: str) -> tuple[str, str, str]:
    """(flow, ref, content) of an analysis key; refs may hold slashes, flows and contents do not hold colons."""
    flow, _, rest = key.partition(":")
    ref, _, content = rest.rpartition(":")
    return flow, ref, content


@dataclass(frozen=True, slots=True)
class Target:
    """One ref of a flow's route as the table sees it. ``ref`` is the ref found (maybe flow-scoped), ``named`` the
    route's; ``sha`` the commit the ref points at; ``serving`` the commit whose build of the flow serves it (``sha``
    itself, or an earlier commit when the flow failed at ``sha``), and ``version`` that commit's version."""

    named: str
    ref: str
    sha: str | None
    weight: float
    state: TargetState
    guard: str | None = None  # the analysis key, for every ref of a guarded route but the first
    serving: str | None = None
    version: Version | None = field(default=None, repr=False, compare=False)
    segment: Segment | None = None  # for a segment's ref: the requests it takes, before the weights
    steps: Steps | None = None  # for a progressive canary: its steps, and the one it holds (its share, in percent)


@dataclass(frozen=True, slots=True)
class Segment:
    """The requests a segment takes: those whose ``header`` (lower case) holds one of ``values``."""

    header: str
    values: frozenset[str]

    def matches(self, headers: Mapping[str, str | None]) -> bool:
        value = headers.get(self.header)
        return value is not None and value in self.values


@dataclass(frozen=True, slots=True)
class Shadowed:
    """A candidate run beside a route's ref (``source``) on a share of the requests it serves: ``candidate`` as the
    table resolves its ref, ``rule`` the routing file's entry (share, scorer, budget)."""

    source: Target
    candidate: Target
    rule: Shadow


@dataclass(frozen=True, slots=True)
class Choice:
    """The version that serves a request, the ref it was reached by (None for a pin by sha), and, for a canary
    chosen by its weight, the analysis key its outcome counts under and the primary a failed request is retried on.
    ``verifying``: the run only judges a canary on its primary (attempts.py): its answer goes to nobody, and it
    keeps no conversation turn."""

    version: Version
    ref: str | None
    guard: str | None = None
    primary: Target | None = field(default=None, compare=False)
    verifying: bool = False

    def fallback(self) -> Choice | None:
        """The primary's choice, for a canary whose run failed; None for a request that is not a canary's."""
        if self.primary is None or self.primary.version is None:
            return None
        return Choice(self.primary.version, self.primary.ref)


@dataclass(frozen=True, slots=True)
class Route:
    """The refs serving one flow: all of them as configured (``targets``), the live ones' cumulative shares, and the
    primary (the first ref, when it is live) that a failed canary request falls back on."""

    name: str  # the route's name in gitops-flow.yaml: the flow's own, or "default"
    targets: tuple[Target, ...]
    live: tuple[tuple[float, Target], ...]  # (upper bound in [0, 1], target), ascending; empty: nothing serves
    primary: Target | None = None
    segments: tuple[Target, ...] = ()  # live segments' refs, in the file's order: the first that matches serves
    shadows: tuple[Shadowed, ...] = ()  # every shadow of the route's refs, whatever its candidate's state

    def shadows_of(self, ref: str | None, serving: str) -> tuple[Shadowed, ...]:
        """The shadows of the ref ``ref`` while it serves commit ``serving``'s build, whose candidates can run."""
        return tuple(
            s
            for s in self.shadows
            if s.source.ref == ref and s.source.serving == serving and s.candidate.state == "live"
        )

    def segment_for(self, headers: Mapping[str, str | None]) -> Target | None:
        """The live segment a request's headers select, if any."""
        for target in self.segments:
            if target.segment is not None and target.segment.matches(headers):
                return target
        return None

    def shares_primary_build(self, flow: str, target: Target) -> bool:
        """Whether ``target`` serves the very build of ``flow`` its primary serves (``main`` beside a ``stable`` tag
        on the same content): aborting it would only move its weight to the same build."""
        primary = self.primary
        if target is primary or primary is None or primary.version is None or target.version is None:
            return False
        return target.version.blobs.get(flow, target.serving) == primary.version.blobs.get(flow, primary.serving)

    def abortable(self, flow: str, target: Target) -> bool:
        """Whether aborting ``target`` would stop something: a live canary serving another build than the
        primary's."""
        live = target.guard is not None and target.state == "live" and target.version is not None
        return live and not self.shares_primary_build(flow, target)

    def pick(self, point: float) -> Target:
        for bound, target in self.live:
            if point < bound:
                return target
        return self.live[-1][1]


@dataclass(frozen=True, slots=True)
class _Plan:
    """What planning a route needs beside the flow: the table's parts."""

    branch: str
    head: Version
    refs: Mapping[str, str]
    versions: Mapping[str, Version]
    aborted: frozenset[str]
    yanked: Callable[[str], bool]
    yanked_builds: frozenset[tuple[str, str]]
    progress: Mapping[str, Reached] = field(default_factory=dict)

    def target(
        self,
        flow: str,
        named: str,
        ref: str,
        sha: str | None,
        weight: float,
        guarded: bool,
        segment: Segment | None = None,
    ) -> Target:
        at = self.versions.get(sha) if sha is not None else None
        if at is None or at.status == "failed":
            return Target(named, ref, sha, weight, "missing" if at is None else "failed", segment=segment)
        serving = at.serving(flow)
        if self.yanked(at.sha) or serving is not None and self.yanked(serving):
            return Target(named, ref, sha, weight, "yanked", serving=serving, segment=segment)
        version = self.versions.get(serving) if serving is not None else None
        if serving is None or version is None or flow not in version.flows:
            state: TargetState = "failed" if flow in at.failed else "missing"
            return Target(named, ref, sha, weight, state, serving=serving, segment=segment)
        if (flow, version.blobs.get(flow)) in self.yanked_builds:  # a later commit serving a yanked commit's build
            return Target(named, ref, sha, weight, "yanked", serving=serving, segment=segment)
        key = analysis_key(flow, ref, version.blobs.get(flow, serving))
        # an abort holds the ref's build wherever the ref sits in the route (a routing change that makes the
        # aborted canary the first ref does not bring it back: only a resume does)
        state = "aborted" if key in self.aborted else "live"
        return Target(named, ref, sha, weight, state, key if guarded else None, serving, version, segment)

    def stopped(self, flow: str, version: Version) -> bool:
        """Whether ``version``'s build of ``flow`` was aborted as a canary on any ref."""
        content = version.blobs.get(flow, version.sha)
        return any(f == flow and c == content for f, _, c in map(split_key, self.aborted))

    def route(self, flow: str, routing: RoutingConfig | None) -> Route:
        configured = routing.routes if routing is not None else {}
        name = flow if flow in configured else DEFAULT_ROUTE
        entries: list[RouteTarget] = configured.get(name) or []
        guarded = routing is not None and routing.analysis is not None
        targets, segments, shadows = [], [], []
        weighted = [entry for entry in entries if entry.match is None]
        for entry in entries:
            ref, sha = self.resolve(flow, entry.ref)
            if entry.match is not None:  # a segment: never a canary, never drawn by weight
                segment = Segment(entry.match.header, frozenset(entry.match.values))
                segments.append(self.target(flow, entry.ref, ref, sha, 0.0, False, segment))
                continue
            guard = guarded and entry is not weighted[0]
            target = self.target(flow, entry.ref, ref, sha, entry.weight, guard)
            if entry.steps is not None and target.guard is not None and target.serving is not None:
                interval = entry.interval or (routing.analysis.window if routing and routing.analysis else 60.0)
                reached = self.progress.get(progress_key(target.guard, target.serving))
                steps = Steps.at(tuple(entry.steps), interval, reached)
                target = replace(target, weight=steps.share, steps=steps)
            targets.append(target)
            for rule in entry.shadow:  # a candidate is never a canary: it answers nobody
                candidate = self.target(flow, rule.ref, *self.resolve(flow, rule.ref), 0.0, False)
                shadows.append(Shadowed(target, candidate, rule))
        matched = tuple(t for t in segments if t.state == "live")
        live = [t for t in targets if t.state == "live" and t.weight > 0]
        if not live:  # no file, no route, or none of its refs can serve: the branch head serves it all, unless its
            # build is one aborted as a canary (on any ref): then nothing serves (503), never the stopped build
            fallback = self.target(flow, self.branch, self.branch, self.head.sha, 100.0, False)
            if fallback.version is not None and self.stopped(flow, fallback.version):
                fallback = replace(fallback, state="aborted")
            shown = tuple(targets) or (fallback,)
            return Route(
                name,
                (*shown, *segments),
                ((1.0, fallback),) if fallback.state == "live" else (),
                None,
                matched,
                tuple(shadows),
            )
        bounds, running = [], 0.0
        for target, share in _shares(live):
            running += share
            bounds.append((running, target))
        primary = next((t for t in live if t.guard is None), None)
        return Route(name, (*targets, *segments), tuple(bounds), primary, matched, tuple(shadows))

    def resolve(self, flow: str, named: str) -> tuple[str, str | None]:
        """The ref a route's name finds for ``flow`` (its flow-scoped tag first) and the commit it points at."""
        scoped = f"{flow}/{named}"
        ref = scoped if scoped in self.refs else named
        return ref, self.head.sha if ref == self.branch else self.refs.get(ref)


def _shares(live: list[Target]) -> list[tuple[Target, float]]:
    """Each live ref's share of the route's traffic, in [0, 1]: a progressive canary's is its step's percent (all of
    it when it is the only live ref), the others share the rest by their weights."""
    stepped = next((t for t in live if t.steps is not None), None)
    others = sum(t.weight for t in live if t is not stepped)
    if stepped is None or others <= 0:
        total = sum(t.weight for t in live)
        return [(t, t.weight / total) for t in live]
    part = stepped.weight / 100.0
    return [(t, part if t is stepped else (1.0 - part) * t.weight / others) for t in live]


def sticky_point(flow: str, user: str) -> float:
    """The user's place in [0, 1) for ``flow``: the same on every replica and every restart."""
    digest = hashlib.sha256(f"{flow}:{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _never(sha: str) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """Everything a request needs to pick its version. Never changed: the reconciler publishes a new one in one step,
    so a request that read the table keeps a consistent view while a deploy goes on.

    ``head`` is the last good version of the tracked branch (a commit that failed as a whole leaves it where it was);
    ``refs`` maps tag and branch names to commits as last fetched; ``versions`` holds every version seen;
    ``routes`` how each flow splits its traffic; ``aborted`` the analysis keys the guard or an operator aborted;
    ``yanked_builds`` the builds the routing file's yanked commits brought in, as (flow, blob of its file): a yank
    is by build, so every commit that serves one of them is unservable for that flow too.
    """

    branch: str
    head: Version | None = None
    refs: Mapping[str, str] = field(default_factory=dict)
    versions: Mapping[str, Version] = field(default_factory=dict)
    routes: Mapping[str, Route] = field(default_factory=dict)
    aborted: frozenset[str] = frozenset()
    yanked_builds: frozenset[tuple[str, str]] = frozenset()
    progress: Mapping[str, Reached] = field(default_factory=dict)

    @classmethod
    def publish(
        cls,
        branch: str,
        head: Version | None,
        refs: Mapping[str, str],
        versions: Mapping[str, Version],
        aborted: Iterable[str] = (),
        yanked_builds: Iterable[tuple[str, str]] = (),
        progress: Mapping[str, Reached] | None = None,
    ) -> RoutingTable:
        """A table with every flow's route planned from the head's routing file; ``progress``: the share each
        progressive canary reached, by progress_key."""
        stopped = frozenset(aborted)
        builds = frozenset(yanked_builds)
        routes: dict[str, Route] = {}
        if head is not None:
            yanked = head.routing.is_yanked if head.routing is not None else _never
            plan = _Plan(branch, head, refs, versions, stopped, yanked, builds, dict(progress or {}))
            referenced = [versions.get(sha) for sha in refs.values()]
            names = {*head.served(), *head.failed}
            names |= {n for v in referenced if v is not None and v.ready for n in v.names}
            for flow in sorted(names):
                routes[flow] = plan.route(flow, head.routing)
        return cls(branch, head, dict(refs), dict(versions), routes, stopped, builds, dict(progress or {}))

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

    def yanked(self, sha: str) -> bool:
        """Whether the routing file yanks the commit ``sha`` itself (for every flow)."""
        routing = self.routing
        return routing is not None and routing.is_yanked(sha)

    def yanked_for(self, flow: str, version: Version) -> bool:
        """Whether ``version``, the commit whose build of ``flow`` serves, may not serve ``flow``: the commit is
        yanked, or its build of the flow is one a yanked commit brought in (the same file's blob)."""
        return self.yanked(version.sha) or (flow, version.blobs.get(flow)) in self.yanked_builds

    def guarded(self) -> dict[str, Target]:
        """Every canary the guard watches, by analysis key."""
        return {t.guard: t for r in self.routes.values() for t in r.targets if t.guard and t.state == "live"}

    def progressive(self) -> dict[str, Target]:
        """Every live progressive canary, by progress_key."""
        return {
            progress_key(key, t.serving): t
            for key, t in self.guarded().items()
            if t.steps is not None and t.serving is not None
        }

    def canaries(self, flow: str) -> list[Target]:
        """The guarded refs of a flow's route, whatever their state (what an operator may abort or resume)."""
        route = self.routes.get(flow)
        return [t for t in route.targets if t.guard] if route is not None else []

    def default(
        self,
        flow: str,
        *,
        user: str | None = None,
        segment: str | None = None,
        rand: Callable[[], float] = random.random,
    ) -> Choice:
        """The version a request without a pin gets: its route's first live segment whose match the request's
        X-Flow-Segment (``segment``) or X-Flow-User (``user``) meets; else a draw over the route's live refs, at the
        user's sticky point when there is a user (and ``sticky: user``), else at random. A flow no commit has ever
        had gets the head, whose lack of the flow the caller reports; a flow no ref of whose route can serve (each
        aborted, yanked, failed or missing, and the branch head's build too) is NothingServable."""
        if self.head is None:
            raise NoReadyVersion("no good version is loaded yet")
        route = self.routes.get(flow)
        if route is None:
            return Choice(self.head, self.branch)
        if route.segments:
            chosen = route.segment_for({"x-flow-segment": segment, "x-flow-user": user})
            if chosen is not None:
                assert chosen.version is not None, "live targets have a version"
                return Choice(chosen.version, chosen.ref)
        if not route.live:
            raise NothingServable(self.why_not_served(flow))
        if len(route.live) == 1:
            target = route.live[0][1]
        else:
            sticky = user and (self.routing is None or self.routing.sticky == "user")
            target = route.pick(sticky_point(flow, user) if sticky and user else rand())
        assert target.version is not None, "live targets have a version"
        return Choice(target.version, target.ref, target.guard, route.primary if target.guard else None)

    def why_not_served(self, flow: str) -> str:
        """Why no ref serves ``flow``, naming the problems of the commit where it failed (codes and places only)."""
        route = self.routes.get(flow)
        failed = [t for t in route.targets if t.state == "failed"] if route is not None else []
        if failed and failed[0].sha is not None:
            at = self.versions.get(failed[0].sha)
            if at is not None:
                return failure_text(at, flow)
        states = {t.state for t in route.targets} if route is not None else set()
        if states == {"yanked"}:
            return f"every version of flow {flow!r} that a ref serves was yanked"
        if "aborted" in states:
            others = ", ".join(f"{t.named} {t.state}" for t in route.targets if t.state != "aborted") if route else ""
            rest = f"; {others}" if others else ""
            return f"no ref of flow {flow!r} can serve: its canary was aborted (an operator resumes it){rest}"
        if "yanked" in states:
            return f"every version of flow {flow!r} that a ref serves was yanked"
        return f"no ref serves flow {flow!r}"

    def session(self, sha: str, flow: str) -> Choice | None:
        """The version a session of ``flow`` is pinned to, if it can still serve it: None when it was retired or
        yanked, or when the guard aborted it as a canary of the flow (its conversations move to the live refs)."""
        version = self.versions.get(sha)
        if version is None or not version.ready or flow not in version.flows or self.yanked_for(flow, version):
            return None
        route = self.routes.get(flow)
        matches = [t for t in route.targets if t.serving == sha] if route is not None else []
        live = [t for t in matches if t.state == "live"]
        if live:
            primary = route.primary if route is not None and live[0].guard else None
            return Choice(version, live[0].ref, live[0].guard, primary)
        if any(t.state == "aborted" for t in matches):
            return None
        aborted = frozenset(split_key(k)[2] for k in self.aborted if split_key(k)[0] == flow)
        if version.blobs.get(flow, sha) in aborted:  # the build of a canary aborted since, under any ref
            return None
        return Choice(version, self.ref_of(sha))

    def current(self, flow: str) -> dict[str, Target]:
        """The live refs of a flow's route (its segments' too) by the commit whose build serves it: what a pin may
        reach by default."""
        route = self.routes.get(flow)
        live = [*(t for _, t in route.live), *route.segments] if route is not None else []
        return {t.serving: t for t in live if t.serving is not None}

    def ref_of(self, sha: str) -> str | None:
        if self.head is not None and self.head.sha == sha:
            return self.branch
        return next((name for name, target in self.refs.items() if target == sha and name != self.branch), None)


def failure_text(version: Version, flow: str) -> str:
    """``flow 'triage' failed at abc123 (flows/triage.json:7 missing-secret, ...)``: the codes and places of a flow's
    problems, never their messages (a public answer)."""
    if version.status == "failed":
        found = version.problems
        what = f"commit {version.sha[:12]} failed as a whole"
    else:
        found = version.failed.get(flow, ())
        what = f"flow {flow!r} failed at {version.sha[:12]}"
    places = ", ".join(f"{p.file}:{p.line or ''} {p.code}".strip() for p in found[:5])
    more = f" and {len(found) - 5} more" if len(found) > 5 else ""
    return f"{what} ({places}{more})" if places else what
