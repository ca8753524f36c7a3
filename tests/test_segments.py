"""Segments (issue 24, point 3): a route entry with a ``match`` sends the requests whose X-Flow-Segment (or
X-Flow-User) it names to its ref before the weights are drawn, against a real `gitops-flow serve`; the routing file's
new keys are validated with clear problems, and `plan` shows the segments."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from gitops_flow.cli.main import main
from gitops_flow.validation.routing import validate_routing_bytes
from tests.gitrepo import Remote
from tests.process import ServeProcess, serve_process
from tests.served import echo_flow

Q = {"question": "hi"}
ROUTING = {
    "routes": {
        "bot": [
            {"ref": "stable", "weight": 100},
            {"ref": "vip", "match": {"header": "X-Flow-Segment", "values": ["vip", "gold"]}},
            {"ref": "main", "match": {"header": "X-Flow-User", "values": ["qa-1"]}},
            {"ref": "gone", "match": {"header": "X-Flow-Segment", "values": ["lost"]}},
        ]
    }
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("segments")
    remote = Remote.create(tmp)
    remote.commit({"flows/bot.json": echo_flow("bot", "stable answer")}, "v1")
    remote.tag("stable")
    remote.commit({"flows/bot.json": echo_flow("bot", "vip answer")}, "v2")
    remote.tag("vip")
    remote.commit({"flows/bot.json": echo_flow("bot", "newest answer"), "gitops-flow.yaml": yaml.safe_dump(ROUTING)})
    remote.push()
    remote.push_tags()
    with serve_process(remote, tmp) as served:
        yield served


def answer(server: ServeProcess, **headers: str) -> tuple[str, str]:
    response = server.invoke("bot", Q, headers={k.replace("_", "-"): v for k, v in headers.items()})
    assert response.status_code == 200, response.text
    body = response.json()
    return body["output"], body["metadata"]["ref"]


def test_a_segment_takes_the_requests_it_matches_before_the_weights(server: ServeProcess) -> None:
    assert answer(server, x_flow_segment="vip") == ("vip answer", "vip")
    assert answer(server, x_flow_segment="gold", x_flow_user="anyone") == ("vip answer", "vip")
    assert answer(server, x_flow_user="qa-1") == ("newest answer", "main")
    for headers in ({}, {"x_flow_segment": "VIP"}, {"x_flow_segment": "other"}, {"x_flow_user": "qa-2"}):
        assert answer(server, **headers) == ("stable answer", "stable"), headers


def test_a_segment_whose_ref_cannot_serve_gives_its_requests_to_the_weights(server: ServeProcess) -> None:
    assert answer(server, x_flow_segment="lost") == ("stable answer", "stable")


def test_the_segment_is_read_from_the_gateways_header_only(server: ServeProcess) -> None:
    """A client's body cannot name a segment: only the header does, which the gateway sets."""
    body = {"input": Q, "config": {"configurable": {"segment": "vip", "x-flow-segment": "vip"}}}
    response = server.client.post("/flows/bot/invoke", json=body)
    assert response.status_code == 200 and response.json()["metadata"]["ref"] == "stable"


def test_flows_shows_each_segment(server: ServeProcess) -> None:
    (bot,) = [f for f in server.client.get("/flows").json()["flows"] if f["name"] == "bot"]
    shown = {v["ref"]: v for v in bot["versions"]}
    assert shown["vip"]["segment"] == {"header": "x-flow-segment", "values": ["gold", "vip"]}
    assert shown["vip"]["state"] == "live" and shown["vip"]["weight"] == 0
    assert shown["gone"]["state"] == "missing"
    assert "segment" not in shown["stable"] and shown["stable"]["weight"] == 100


def test_a_segments_session_stays_on_its_version(server: ServeProcess) -> None:
    first = answer(server, x_flow_segment="vip", x_flow_session="s-vip")
    assert first == ("vip answer", "vip")
    assert answer(server, x_flow_session="s-vip") == first  # the session's pin, as for any ref


@pytest.mark.parametrize(
    ("entry", "code", "path", "says"),
    [
        (
            {"ref": "vip", "match": {"header": "X-Custom", "values": ["vip"]}},
            "invalid-value",
            "$.routes.bot[1].match.header",
            "X-Flow-Segment or X-Flow-User",
        ),
        (
            {"ref": "vip", "match": {"header": "X-Flow-Segment", "values": []}},
            "invalid-value",
            "$.routes.bot[1].match.values",
            "at least 1",
        ),
        (
            {"ref": "vip", "match": {"header": "X-Flow-Segment"}},
            "missing-key",
            "$.routes.bot[1].match.values",
            "required",
        ),
        (
            {"ref": "vip", "match": {"header": "X-Flow-Segment", "value": ["vip"]}},
            "unknown-key",
            "$.routes.bot[1].match.value",
            "did you mean 'values'",
        ),
        (
            {"ref": "vip", "weight": 5, "match": {"header": "X-Flow-Segment", "values": ["vip"]}},
            "segment-weight",
            "$.routes.bot[1].weight",
            "drop weight",
        ),
        ({"ref": "vip"}, "invalid-value", "$.routes.bot[1]", "a weight (its share of the traffic) or a match"),
        (
            {"ref": "vip", "match": {"header": "x-flow-segment", "values": ["a", "b"]}},
            "duplicate-segment",
            "$.routes.bot[2].match.values",
            "a request goes to the first segment",
        ),
    ],
    ids=["header-untrusted", "no-values", "values-missing", "values-misspelt", "weight-too", "neither", "duplicate"],
)
def test_a_bad_segment_is_a_clear_problem(entry: dict[str, Any], code: str, path: str, says: str) -> None:
    entries = [{"ref": "stable", "weight": 100}, entry]
    if code == "duplicate-segment":
        entries = [entries[0], {"ref": "gold", "match": {"header": "X-Flow-Segment", "values": ["b"]}}, entry]
    raw = yaml.safe_dump({"routes": {"bot": entries}}).encode()
    _, problems = validate_routing_bytes(raw, file="gitops-flow.yaml", flow_names=["bot"])
    found = next((p for p in problems if p.code == code), None)
    assert found is not None, problems
    assert found.path == path and says in found.message and found.line is not None, found


def test_a_route_of_segments_only_is_refused() -> None:
    raw = b"routes:\n  bot:\n    - {ref: vip, match: {header: X-Flow-Segment, values: [vip]}}\n"
    _, problems = validate_routing_bytes(raw, file="gitops-flow.yaml", flow_names=["bot"])
    assert [p.code for p in problems] == ["zero-weights"]
    assert "but to its segments" in problems[0].message


def test_plan_shows_the_segments(tmp_path: Any) -> None:
    remote = Remote.create(tmp_path)
    routing = {"routes": {"bot": [{"ref": "main", "weight": 100}]}}
    remote.publish({"flows/bot.json": echo_flow("bot"), "gitops-flow.yaml": yaml.safe_dump(routing)}, "base")
    (remote.work / "gitops-flow.yaml").write_text(yaml.safe_dump(ROUTING))
    out = io.StringIO()
    main(["plan", str(remote.work), "--base", "main"], environ={}, out=out)
    text = out.getvalue()
    assert "route bot: segment vip: X-Flow-Segment in [vip, gold]" in text, text
    assert "route bot: segment main: X-Flow-User in [qa-1]" in text
    out = io.StringIO()
    main(["plan", str(remote.work), "--base", "main", "--format", "json"], environ={}, out=out)
    changes = json.loads(out.getvalue())["routing"]["changes"]
    assert {"kind": "added", "what": "route bot: segment vip", "detail": "X-Flow-Segment in [vip, gold]"} in changes
