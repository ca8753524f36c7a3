"""routing_table.py: routes by refs and weights, flow-scoped tags, sticky users, refs that cannot serve, aborted
canaries."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import pytest

from gitops_flow.delivery.routing_table import RoutingTable, analysis_key, sticky_point
from gitops_flow.delivery.versions import Status, Version
from gitops_flow.exceptions import NoReadyVersion
from gitops_flow.flow.routing import RoutingConfig

SHAS = {name: name[0] * 40 for name in ("aaa", "bbb", "ccc", "ddd")}
BUILT: Any = object()  # plan_route only asks whether a version has a flow, never runs it


def version(sha: str, *flows: str, status: Status = "ready", routing: dict[str, Any] | None = None) -> Version:
    return Version(
        sha=sha,
        author="Ada",
        email="ada@example.com",
        time=0.0,
        message="m",
        status=status,
        names=frozenset(flows),
        flows={name: BUILT for name in flows} if status == "ready" else {},
        routing=RoutingConfig.model_validate(routing) if routing is not None else None,
    )


CANARY = {
    "routes": {"default": [{"ref": "stable", "weight": 90}, {"ref": "main", "weight": 10}]},
    "analysis": {"min_requests": 5},
}


def table(head: Version, refs: dict[str, str], *others: Version, aborted: frozenset[str] = frozenset()) -> RoutingTable:
    versions = {v.sha: v for v in (head, *others)}
    return RoutingTable.publish("main", head, {"main": head.sha, **refs}, versions, aborted)


def test_without_a_routing_file_the_head_serves_everything() -> None:
    head = version(SHAS["aaa"], "echo")
    routes = table(head, {}).routes
    choice = table(head, {}).default("echo", user="ada")
    assert (choice.version.sha, choice.ref, choice.guard) == (head.sha, "main", None)
    assert [(t.ref, t.weight, t.state) for t in routes["echo"].targets] == [("main", 100.0, "live")]


def test_a_90_10_split_over_10000_sticky_users_is_within_one_percent_and_each_user_stays() -> None:
    stable = version(SHAS["aaa"], "echo")
    head = version(SHAS["bbb"], "echo", routing=CANARY)
    routing = table(head, {"stable": stable.sha}, stable)
    users = [f"user-{n}" for n in range(10_000)]
    first = {user: routing.default("echo", user=user).ref for user in users}
    shares = Counter(first.values())
    assert abs(shares["stable"] / len(users) - 0.9) < 0.01
    assert abs(shares["main"] / len(users) - 0.1) < 0.01
    assert all(routing.default("echo", user=user).ref == ref for user, ref in first.items())


def test_the_sticky_point_is_the_same_in_every_process_and_differs_by_flow() -> None:
    assert sticky_point("echo", "ada") == sticky_point("echo", "ada")
    assert 0.0 <= sticky_point("echo", "ada") < 1.0
    assert sticky_point("echo", "ada") != sticky_point("chat", "ada")
    # a pinned value: changing the hash would move every user of every replica at the next upgrade
    assert sticky_point("echo", "ada") == pytest.approx(0.5823523784462952, abs=1e-12)


def test_without_a_user_the_draw_is_random_over_the_weights() -> None:
    stable = version(SHAS["aaa"], "echo")
    head = version(SHAS["bbb"], "echo", routing=CANARY)
    routing = table(head, {"stable": stable.sha}, stable)
    assert routing.default("echo", rand=lambda: 0.89).ref == "stable"
    assert routing.default("echo", rand=lambda: 0.9).ref == "main"
    draws = itertools.cycle([n / 1000 for n in range(1000)])
    shares = Counter(routing.default("echo", rand=lambda: next(draws)).ref for _ in range(1000))
    assert shares == {"stable": 900, "main": 100}


def test_sticky_none_ignores_the_user() -> None:
    stable = version(SHAS["aaa"], "echo")
    head = version(SHAS["bbb"], "echo", routing={**CANARY, "sticky": "none"})
    routing = table(head, {"stable": stable.sha}, stable)
    assert {routing.default("echo", user="ada", rand=lambda r=r: r).ref for r in (0.1, 0.95)} == {"stable", "main"}


def test_a_flow_scoped_tag_wins_over_the_repository_wide_one() -> None:
    stable = version(SHAS["aaa"], "echo", "chat")
    echo_stable = version(SHAS["ccc"], "echo", "chat")
    head = version(SHAS["bbb"], "echo", "chat", routing={"routes": {"default": [{"ref": "stable", "weight": 1}]}})
    routing = table(head, {"stable": stable.sha, "echo/stable": echo_stable.sha}, stable, echo_stable)
    echo, chat = routing.default("echo"), routing.default("chat")
    assert (echo.version.sha, echo.ref) == (echo_stable.sha, "echo/stable")
    assert (chat.version.sha, chat.ref) == (stable.sha, "stable")


def test_a_flows_own_route_wins_over_the_default_route() -> None:
    stable = version(SHAS["aaa"], "echo", "chat")
    routes = {"default": [{"ref": "main", "weight": 1}], "echo": [{"ref": "stable", "weight": 1}]}
    head = version(SHAS["bbb"], "echo", "chat", routing={"routes": routes})
    routing = table(head, {"stable": stable.sha}, stable)
    assert routing.routes["echo"].name == "echo" and routing.default("echo").ref == "stable"
    assert routing.routes["chat"].name == "default" and routing.default("chat").ref == "main"


@pytest.mark.parametrize(
    "refs, others, state, why",
    [
        ({}, (), "missing", "the tag does not exist"),
        ({"stable": SHAS["ccc"]}, (), "missing", "its commit was never built"),
        ({"stable": SHAS["ccc"]}, (version(SHAS["ccc"], status="failed"),), "failed", "its commit failed"),
        ({"stable": SHAS["ccc"]}, (version(SHAS["ccc"], "chat"),), "missing", "its commit lacks the flow"),
    ],
    ids=["missing-tag", "not-built", "failed", "flow-absent"],
)
def test_a_ref_that_cannot_serve_gives_its_weight_to_the_others(
    refs: dict[str, str], others: tuple[Version, ...], state: str, why: str
) -> None:
    head = version(SHAS["bbb"], "echo", "chat", routing=CANARY)
    routing = table(head, refs, *others)
    route = routing.routes["echo"]
    assert [(t.named, t.state) for t in route.targets] == [("stable", state), ("main", "live")], why
    assert all(routing.default("echo", rand=lambda r=r: r).ref == "main" for r in (0.0, 0.5, 0.99))


def test_when_no_ref_can_serve_the_head_does_and_a_flow_it_lacks_has_no_route() -> None:
    routes = {"default": [{"ref": "stable", "weight": 1}, {"ref": "canary", "weight": 1}]}
    head = version(SHAS["bbb"], "echo", routing={"routes": routes})
    routing = table(head, {})
    assert routing.default("echo").version.sha == head.sha
    assert "gone" not in routing.routes
    assert routing.default("gone").version.sha == head.sha  # the caller says the head has no such flow


def test_a_flow_deleted_at_the_head_is_still_served_by_a_ref_that_has_it() -> None:
    stable = version(SHAS["aaa"], "echo", "old")
    head = version(SHAS["bbb"], "echo", routing={"routes": {"default": [{"ref": "stable", "weight": 1}]}})
    routing = table(head, {"stable": stable.sha}, stable)
    assert routing.default("old").version.sha == stable.sha


def test_every_ref_but_the_first_is_guarded_and_an_aborted_one_gets_no_traffic() -> None:
    stable = version(SHAS["aaa"], "echo")
    head = version(SHAS["bbb"], "echo", routing=CANARY)
    key = analysis_key("echo", "main", head.sha)
    live = table(head, {"stable": stable.sha}, stable)
    assert list(live.guarded()) == [key]
    assert live.default("echo", rand=lambda: 0.95).guard == key
    assert live.default("echo", rand=lambda: 0.1).guard is None
    stopped = table(head, {"stable": stable.sha}, stable, aborted=frozenset({key}))
    assert [(t.ref, t.state) for t in stopped.routes["echo"].targets] == [("stable", "live"), ("main", "aborted")]
    assert stopped.guarded() == {}
    assert {stopped.default("echo", user=f"u{n}").ref for n in range(200)} == {"stable"}


def test_without_analysis_nothing_is_guarded() -> None:
    stable = version(SHAS["aaa"], "echo")
    head = version(SHAS["bbb"], "echo", routing={"routes": CANARY["routes"]})
    assert table(head, {"stable": stable.sha}, stable).guarded() == {}


def test_a_session_on_an_aborted_canary_moves_and_one_on_a_live_ref_keeps_its_guard() -> None:
    stable = version(SHAS["aaa"], "echo")
    head = version(SHAS["bbb"], "echo", routing=CANARY)
    key = analysis_key("echo", "main", head.sha)
    live = table(head, {"stable": stable.sha}, stable)
    session = live.session(head.sha, "echo")
    assert session is not None and (session.ref, session.guard) == ("main", key)
    stopped = table(head, {"stable": stable.sha}, stable, aborted=frozenset({key}))
    assert stopped.session(head.sha, "echo") is None
    kept = stopped.session(stable.sha, "echo")
    assert kept is not None and kept.ref == "stable"


def test_nothing_to_serve_before_the_first_good_version() -> None:
    with pytest.raises(NoReadyVersion):
        RoutingTable("main").default("echo")
