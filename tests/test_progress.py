"""Progressive canaries in the routing table and their steps in the store (delivery/progress.py), on every backend:
the share a step gives, the re-basing of a changed list of steps, one step per interval while the guard finds the
canary holding, each step recorded once by replicas deciding together, and a new commit starting again."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import pytest

from gitops_flow.delivery.journal import DeployLog
from gitops_flow.delivery.progress import Rollouts, progress_view
from gitops_flow.delivery.routing_table import Reached, RoutingTable, progress_key, stopped
from gitops_flow.delivery.versions import Version
from gitops_flow.flow.routing import Analysis, RouteTarget, RoutingConfig
from gitops_flow.runtime.compiler import BuiltFlow
from gitops_flow.stores import StateStore
from tests.redisenv import RedisSpace
from tests.stores.test_contract import BACKENDS, FakeClock

FLOW = "bot"
BUILT = cast(BuiltFlow, object())
STABLE, CANARY, NEWER = (f"{n:040x}" for n in (1, 2, 3))


def version(sha: str, content: str, routing: RoutingConfig) -> Version:
    return Version(
        sha=sha,
        author="a",
        email="a@example.com",
        time=float(int(sha, 16)),
        message="m",
        status="ready",
        routing=routing,
        names=frozenset({FLOW}),
        flows={FLOW: BUILT},
        blobs={FLOW: content},
    )


def table(
    steps: list[float] | None = None,
    progress: dict[str, Reached] | None = None,
    *,
    canary: str = CANARY,
    primary: str = "stable",
) -> RoutingTable:
    routing = RoutingConfig(
        routes={
            FLOW: [
                RouteTarget(ref=primary, weight=100),
                RouteTarget(ref="canary", steps=steps or [10, 50, 100], interval=5.0),
            ]
        },
        analysis=Analysis(),
    )
    versions = {
        sha: version(sha, content, routing) for sha, content in ((STABLE, "old"), (CANARY, "new"), (NEWER, "newer"))
    }
    refs = {"stable": STABLE, "canary": canary, "main": NEWER}
    return RoutingTable.publish("main", versions[NEWER], refs, versions, (), (), progress)


def shares(t: RoutingTable) -> dict[str, float]:
    route = t.routes[FLOW]
    found, low = {}, 0.0
    for bound, target in route.live:
        found[target.ref] = round(bound - low, 6)
        low = bound
    return found


def canary_key(t: RoutingTable) -> str:
    (key,) = t.progressive()
    return key


def test_a_step_gives_its_share_and_the_others_share_the_rest() -> None:
    first = table()
    assert shares(first) == {"stable": 0.9, "canary": 0.1}
    key = canary_key(first)
    assert shares(table(progress={key: Reached(50, 0.0)})) == {"stable": 0.5, "canary": 0.5}
    assert shares(table(progress={key: Reached(100, 0.0)})) == {"stable": 0.0, "canary": 1.0}
    assert first.routes[FLOW].pick(0.95).ref == "canary" and first.routes[FLOW].pick(0.5).ref == "stable"


@pytest.mark.parametrize(
    ("steps", "reached", "index"),
    [([10, 50, 100], 50, 1), ([5, 25, 50, 75, 100], 50, 2), ([20, 40, 100], 50, 1), ([60, 100], 50, 0)],
    ids=["same", "finer", "no-step-at-the-share", "all-above"],
)
def test_changed_steps_rebase_on_the_largest_step_not_above_the_share_reached(
    steps: list[float], reached: float, index: int
) -> None:
    key = canary_key(table(steps))
    t = table(steps, {key: Reached(reached, 7.0)})
    target = t.progressive()[key]
    assert target.steps is not None and target.steps.index == index and target.steps.since == 7.0


def test_the_tag_command_moves_the_primary_tag_and_none_when_the_primary_is_the_branch() -> None:
    key = canary_key(table())
    done = table(progress={key: Reached(100, 1.0)})
    view = progress_view(done.routes[FLOW], "main", done.progressive()[key])
    assert view is not None and view["command"] == f"git tag -f stable {CANARY} && git push -f origin stable"
    on_branch = table(progress={key: Reached(100, 1.0)}, primary="main")
    target = on_branch.progressive()[canary_key(on_branch)]
    assert progress_view(on_branch.routes[FLOW], "main", target)["command"] is None  # type: ignore[index]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=list(BACKENDS), ids=list(BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[StateStore, FakeClock]]:
    clock = FakeClock(1000.0)
    options: dict[str, Any] = {}
    if request.param == "redis":
        space: RedisSpace = request.getfixturevalue("redis_space")
        options["space"] = space
    made = BACKENDS[request.param](tmp_path, clock, **options)
    await made.open()
    try:
        yield made, clock
    finally:
        await made.close()


def rollouts(store: StateStore, clock: Callable[[], float]) -> Rollouts:
    return Rollouts(store, DeployLog(store, lambda: {}, clock=clock), clock=clock)


@pytest.mark.anyio
async def test_steps_advance_once_per_interval_while_holding_and_replicas_record_each_once(
    store: tuple[StateStore, FakeClock],
) -> None:
    state, clock = store
    a, b = rollouts(state, clock), rollouts(state, clock)  # two replicas sharing the store

    def now() -> RoutingTable:
        return table(progress=a.reached)

    key = canary_key(now())
    guard = now().progressive()[key].guard
    assert guard is not None
    assert await a.advance(now(), frozenset()) and a.reached[key] == Reached(10, 1000.0)  # the first step recorded
    clock.now += 10
    assert not await a.advance(now(), frozenset())  # not holding: it stays
    clock.now += 1
    assert await a.advance(now(), frozenset({guard})) and a.reached[key].share == 50
    clock.now += 1
    assert not await a.advance(now(), frozenset({guard}))  # within the interval
    clock.now += 5
    seen = table(progress=a.reached)
    assert await a.advance(seen, frozenset({guard})) | await b.advance(seen, frozenset({guard}))
    assert a.reached[key] == b.reached[key] == Reached(100, 1017.0)
    stepped = [e for _, e in reversed(await state.events(50)) if e["event"] == "stepped"]
    assert [(e["step"], e["share"]) for e in stepped] == [(1, 10), (2, 50), (3, 100)]  # each once, both replicas
    assert stepped[-1].get("command") == f"git tag -f stable {CANARY} && git push -f origin stable"
    assert stopped(await state.aborts()) == frozenset()  # step records are never read as aborts
    # a new commit of the canary's ref: a new version starts from the first step
    moved = table(progress=a.reached, canary=NEWER)
    new_key = canary_key(moved)
    assert new_key != key and new_key == progress_key(moved.progressive()[new_key].guard or "", NEWER)
    assert shares(moved)["canary"] == 0.1
    assert await a.advance(moved, frozenset({guard})) and a.reached[new_key].share == 10
