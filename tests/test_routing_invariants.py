"""Seeded random sequences of deliveries (commits, failed commits, tag moves and deletions, yanks, aborts, resumes)
driven against the routing table (delivery/routing_table.py) and the session rule the chooser uses (choice.py),
checking after every step what must always hold:

- an aborted canary never serves: no request is answered by a ref at the build it was aborted at, and the branch
  head standing in for a route with nothing live never serves a build aborted on any ref;
- a yanked commit's build never serves, neither by a route nor by a session;
- when no ref can serve, the table says NothingServable (a 503 on the wire), and only then;
- the live refs' shares sum to the whole and follow their weights;
- a user stays on their ref while the live refs and weights stay the same;
- a session finishes on its version unless that version was yanked or its build aborted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any, cast

import pytest

from gitops_flow.delivery.routing_table import Choice, RoutingTable, analysis_key, split_key
from gitops_flow.delivery.versions import Version
from gitops_flow.exceptions import NothingServable
from gitops_flow.flow.routing import Analysis, RouteTarget, RoutingConfig
from gitops_flow.problems import Problem
from gitops_flow.runtime.compiler import BuiltFlow

FLOW = "f"
BRANCH = "main"
TAGS = ("stable", "canary")
BUILT = cast(BuiltFlow, object())  # the table only asks whether a version holds a build of the flow
WEIGHTS = (0.0, 10.0, 50.0, 90.0)
USERS = tuple(f"user-{n}" for n in range(12))


@dataclass
class World:
    """The repository and the server's decisions as the sequence has made them."""

    rng: random.Random
    versions: dict[str, Version] = field(default_factory=dict)
    head: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    aborted: set[str] = field(default_factory=set)
    sessions: dict[str, str] = field(default_factory=dict)  # session -> the sha it is pinned to
    count: int = 0

    def routing(self, yanked: list[str] | None = None) -> RoutingConfig:
        refs = [RouteTarget(ref=ref, weight=self.rng.choice(WEIGHTS)) for ref in ("stable", "canary", BRANCH)]
        refs = [t for t in refs if self.rng.random() < 0.8] or refs[:1]
        current = self.versions[self.head].routing if self.head else None
        kept = list(current.yanked) if current is not None and yanked is None else (yanked or [])
        return RoutingConfig(routes={FLOW: refs}, analysis=Analysis(), yanked=kept)

    def commit(self, *, fails: bool = False, routing: RoutingConfig | None = None) -> None:
        self.count += 1
        sha = f"{self.count:040x}"
        parent = self.versions.get(self.head)
        content = self.rng.choice(("blob-a", "blob-b", "blob-c", f"blob-{self.count}"))
        common: dict[str, Any] = {
            "sha": sha,
            "author": "a",
            "email": "a@example.com",
            "time": float(self.count),
            "message": f"commit {self.count}",
            "status": "ready",
            "parents": (parent.sha,) if parent else (),
            "routing": routing or self.routing(),
        }
        if fails and parent is not None:
            serving = parent.serving(FLOW)
            version = Version(
                **common,
                failed={FLOW: (Problem("missing-secret", "no key", file="flows/f.json", line=3),)},
                carried={FLOW: serving} if serving else {},
            )
        else:
            version = Version(**common, names=frozenset({FLOW}), flows={FLOW: BUILT}, blobs={FLOW: content})
        self.versions[sha] = version
        self.head = sha

    def table(self) -> RoutingTable:
        head = self.versions[self.head]
        routing = head.routing
        assert routing is not None
        yanked_builds = {
            (FLOW, v.blobs[FLOW]) for v in self.versions.values() if routing.is_yanked(v.sha) and FLOW in v.blobs
        }
        refs = {**self.tags, BRANCH: self.head}
        return RoutingTable.publish(BRANCH, head, refs, self.versions, self.aborted, yanked_builds)


def _content(version: Version) -> str:
    return version.blobs.get(FLOW, version.sha)


def _step(world: World) -> str:
    """One random change; returns its name (for the failure message)."""
    rng = world.rng
    table = world.table()
    kind = rng.choice(("commit", "commit", "fail", "tag", "tag", "untag", "yank", "abort", "abort", "resume"))
    if kind == "commit":
        world.commit()
    elif kind == "fail":
        world.commit(fails=True)
    elif kind == "tag":
        world.tags[rng.choice(TAGS)] = rng.choice(list(world.versions))
    elif kind == "untag" and world.tags:
        del world.tags[rng.choice(sorted(world.tags))]
    elif kind == "yank":
        head = world.versions[world.head]
        assert head.routing is not None
        victim = rng.choice(list(world.versions))
        yanked = [*head.routing.yanked, victim[: rng.choice((7, 12, 40))]]
        world.commit(routing=world.routing(yanked))
    elif kind == "abort":
        guarded = list(table.guarded())
        if guarded:
            world.aborted.add(rng.choice(guarded))
    elif kind == "resume" and world.aborted:
        world.aborted.discard(rng.choice(sorted(world.aborted)))
    return kind


def _check(world: World, table: RoutingTable, before: RoutingTable | None, picks: dict[str, str | None]) -> None:
    route = table.routes[FLOW]
    configured = {t.ref for t in route.targets}
    stopped_builds = {split_key(k)[2] for k in world.aborted}
    # weights: the live refs' shares cover the whole, in proportion to their weights
    if route.live:
        assert route.live[-1][0] == pytest.approx(1.0)
        total = sum(t.weight for _, t in route.live)
        low = 0.0
        for bound, target in route.live:
            assert bound - low == pytest.approx(target.weight / total)
            low = bound
    for user in USERS:
        try:
            choice = table.default(FLOW, user=user, rand=world.rng.random)
        except NothingServable:
            assert not route.live, "NothingServable while a ref is live"
            picks[user] = None
            continue
        assert route.live, "a request was served by a route with nothing live"
        version = choice.version
        assert choice.ref is not None
        # an aborted canary never serves: not on its ref, nor through the head standing in for the route
        assert analysis_key(FLOW, choice.ref, _content(version)) not in world.aborted
        if choice.ref not in configured:
            assert _content(version) not in stopped_builds, "the head served a build aborted as a canary"
        assert not table.yanked_for(FLOW, version), "a yanked build served"
        # sticky: the same table sends a user to the same ref every time
        assert table.default(FLOW, user=user, rand=world.rng.random).ref == choice.ref
        same_split = before is not None and [(t.ref, t.weight) for _, t in before.routes[FLOW].live] == [
            (t.ref, t.weight) for _, t in route.live
        ]
        if same_split and picks.get(user) is not None:
            assert choice.ref == picks[user], "a user moved while the live refs and weights stayed the same"
        picks[user] = choice.ref
        world.sessions.setdefault(f"s-{user}-{world.count}", version.sha)
    # sessions finish on their version unless it was yanked or its build aborted
    for session, sha in list(world.sessions.items()):
        version = world.versions[sha]
        kept = table.session(sha, FLOW)
        yanked = table.yanked_for(FLOW, version)
        live_here = any(t.serving == sha and t.state == "live" for t in route.targets)
        if yanked:
            assert kept is None, f"{session}: a session stayed on a yanked version"
            del world.sessions[session]
        elif _content(version) in stopped_builds and not live_here:
            assert kept is None, f"{session}: a session stayed on an aborted canary's build"
            del world.sessions[session]
        else:
            assert isinstance(kept, Choice) and kept.version.sha == sha, f"{session}: a session lost its version"


@pytest.mark.parametrize("seed", range(40))
def test_random_deliveries_keep_the_routing_invariants(seed: int) -> None:
    world = World(random.Random(seed))
    world.commit()
    world.tags["stable"] = world.head
    before: RoutingTable | None = None
    picks: dict[str, str | None] = {}
    steps: list[str] = []
    for _ in range(80):
        steps.append(_step(world))
        table = world.table()
        try:
            _check(world, table, before, picks)
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}, after {steps}: {exc}") from exc
        before = table


def test_the_issue_s_sequence_yank_stable_with_the_canary_aborted_serves_nothing() -> None:
    """stable 90 / main 10 with main's canary aborted, then stable's commit yanked: every request was answered by
    the aborted canary (through the branch head standing in); now none is, and the table says why."""
    world = World(random.Random(0))
    world.commit(routing=RoutingConfig(routes={FLOW: [RouteTarget(ref="stable", weight=90)]}, analysis=Analysis()))
    world.tags["stable"] = world.head
    routes = {FLOW: [RouteTarget(ref="stable", weight=90), RouteTarget(ref=BRANCH, weight=10)]}
    world.commit(routing=RoutingConfig(routes=routes, analysis=Analysis()))
    world.versions[world.head] = replace(world.versions[world.head], blobs={FLOW: "broken"})
    [key] = world.table().guarded()
    world.aborted.add(key)
    assert {world.table().default(FLOW, user=u).version.sha for u in USERS} == {world.tags["stable"]}
    world.commit(routing=RoutingConfig(routes=routes, analysis=Analysis(), yanked=[world.tags["stable"]]))
    world.versions[world.head] = replace(world.versions[world.head], blobs={FLOW: "broken"})
    table = world.table()
    with pytest.raises(NothingServable, match="its canary was aborted"):
        table.default(FLOW, user="ada")
    assert [t.state for t in table.routes[FLOW].targets] == ["yanked", "aborted"]
