"""Cost bounds: node and edge limits, what large flows report (the same as small ones), and the build's time limit.

The shapes come from tests/bigflows.py; benchmarks/validate_large.py times them. Nothing here asserts a duration:
each test asserts what is reported, on flows large enough that the old quadratic and cubic code took minutes.
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from typing import Any

import pytest

from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.config import Settings
from gitops_flow.exceptions import BuildError, ConfigError
from gitops_flow.flow.bounds import MAX_EDGES, MAX_NODES
from gitops_flow.flow.document import FlowSpec
from gitops_flow.runtime.compiler import build_flow
from gitops_flow.validation.documents import MAX_PROBLEMS, FileReport, validate_bytes
from tests import bigflows
from tests.gitrepo import Remote
from tests.process import serve_process
from tests.served import echo_flow


@pytest.fixture(scope="module")
def registry() -> ComponentRegistry:
    return ComponentRegistry.builtin()


def _validate(doc: dict[str, Any], stem: str, registry: ComponentRegistry) -> tuple[FileReport, list[str]]:
    text = bigflows.text(doc)
    return validate_bytes(text, registry, file=f"{stem}.json", stem=stem), text.decode().splitlines()


def _errors(report: FileReport) -> list[tuple[str, str, int | None]]:
    return [(p.code, p.path, p.line) for p in report.problems if p.severity == "error"]


def _line(lines: list[str], needle: str) -> int:
    return next(i for i, line in enumerate(lines, 1) if needle in line)


# -- the limits: reported first, and nothing else --------------------------------------------------------------------


def test_a_10000_node_export_with_a_cycle_meets_the_node_limit_and_nothing_else(registry: ComponentRegistry) -> None:
    report, lines = _validate(bigflows.langflow_chain(10_000), "generated-chain", registry)

    assert _errors(report) == [("too-many-nodes", "$.data.nodes", _line(lines, '"nodes": ['))]
    assert "10,000 nodes; a flow has at most 5,000" in report.problems[0].message
    assert report.conversion is None and report.built is None  # stopped before converting


def test_a_native_flow_over_the_node_limit(registry: ComponentRegistry) -> None:
    report, lines = _validate(bigflows.native_chain(MAX_NODES + 1), "chain", registry)

    assert _errors(report) == [("too-many-nodes", "$.nodes", _line(lines, '"nodes": ['))]
    assert report.spec is None  # stopped before the schema check


def test_a_native_flow_at_the_node_limit_is_checked_and_built(registry: ComponentRegistry) -> None:
    report, _ = _validate(bigflows.native_chain(MAX_NODES), "chain", registry)

    assert _errors(report) == []
    assert report.built is not None and len(report.built.graph.order) == MAX_NODES


def test_a_flow_over_the_edge_limit(registry: ComponentRegistry) -> None:
    doc = bigflows.native_chain(10)
    doc["edges"] += [{"source": "n0", "target": f"x{i}"} for i in range(MAX_EDGES)]

    report, lines = _validate(doc, "chain", registry)

    assert _errors(report) == [("too-many-edges", "$.edges", _line(lines, '"edges": ['))]


def test_an_export_that_converts_to_more_nodes_than_the_limit(registry: ComponentRegistry) -> None:
    # 2,000 LangFlow nodes, each model becoming a prompt, a model and a parser: 5,996 nodes
    report, lines = _validate(bigflows.langflow_chain(2_000, cycle=None), "generated-chain", registry)

    assert _errors(report) == [("too-many-nodes", "$.data.nodes", _line(lines, '"nodes": ['))]
    assert report.problems[-1].message == "the flow this export converts to has 5,996 nodes; a flow has at most 5,000"


# -- large flows report what small ones do ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["whole", "head", "tail"])
def test_a_3000_node_export_with_a_cycle_names_the_nodes_on_it(
    shape: bigflows.Cycle, registry: ComponentRegistry
) -> None:
    report, lines = _validate(bigflows.langflow_chain(3_000, cycle=shape), "generated-chain", registry)

    on_cycle = bigflows.cycle_ids(3_000, shape)
    first = 1 + int(on_cycle[0].rsplit("-", 1)[1])  # the wire out of the cycle's first model (wire 0 is the input's)
    assert _errors(report) == [("cycle", f"$.data.edges[{first}]", _line(lines, f'"source": "{on_cycle[0]}"'))]
    more = f" and {len(on_cycle) - 20:,} more" if len(on_cycle) > 20 else ""  # a message stays short
    named = ", ".join(on_cycle[:20]) + more
    assert report.problems[0].message == f"the flow has a cycle through {named}; flows are acyclic graphs"


def test_a_3000_node_native_cycle_names_the_nodes_on_it(registry: ComponentRegistry) -> None:
    report, _ = _validate(bigflows.native_chain(3_000, cycle=True), "chain", registry)

    [cycle] = [p for p in report.problems if p.code == "cycle"]
    assert cycle.message == f"the graph has a cycle through {', '.join(f'n{i}' for i in range(1, 21))} and 2,979 more"
    # n1 is fed twice (by n0 and by the edge closing the cycle), so each of its edges needs a key
    assert sorted(p.path for p in report.problems if p.code == "missing-edge-key") == ["$.edges[0]", "$.edges[2999]"]


def test_a_wide_fan_in_points_at_the_one_edge_without_a_key(registry: ComponentRegistry) -> None:
    doc = bigflows.native_fan(3_000)
    index = len(doc["edges"]) - 7
    del doc["edges"][index]["key"]

    report, lines = _validate(doc, "fan", registry)

    edge = doc["edges"][index]
    assert _errors(report) == [
        ("missing-edge-key", f"$.edges[{index}]", _line(lines, f'"source": "{edge["source"]}", "target": "join"}}')),
    ]


def test_thousands_of_dangling_edges_each_have_their_path_and_line(registry: ComponentRegistry) -> None:
    report, lines = _validate(bigflows.native_dangling(3_000), "dangling", registry)

    *found, more = _errors(report)  # the first MAX_PROBLEMS, then one counting the rest (docs/problems.md)
    assert len(found) == MAX_PROBLEMS
    for i, (code, path, line) in enumerate(found):
        assert (code, path) == ("dangling-edge", f"$.edges[{2_999 + i}].source")
        assert line is not None and f'"ghost{i}"' in lines[line - 1]
    assert more[0] == "too-many-problems" and report.problems[-1].message.startswith(f"{3_000 - MAX_PROBLEMS:,} more")


def test_thousands_of_bad_nodes_each_have_their_path_and_line(registry: ComponentRegistry) -> None:
    report, lines = _validate(bigflows.native_problems(3_000), "problems", registry)

    *found, more = _errors(report)  # the first MAX_PROBLEMS, then one counting the rest (docs/problems.md)
    assert [(code, path) for code, path, _ in found] == [
        ("unknown-component", f"$.nodes[{i}].component") for i in range(MAX_PROBLEMS)
    ]
    assert more[0] == "too-many-problems" and report.problems[-1].message.startswith(f"{3_000 - MAX_PROBLEMS:,} more")
    assert all(f'"id": "n{i}"' in lines[line - 1] for i, (_, _, line) in enumerate(found) if line is not None)


def test_a_long_graph_that_is_no_chain_builds_as_one_flat_sequence(registry: ComponentRegistry) -> None:
    doc = bigflows.native_fan(4)
    tail = [{"id": f"t{i}", "component": "Passthrough"} for i in range(2_000)]
    doc["nodes"] += tail
    doc["edges"] += [
        {"source": a["id"], "target": b["id"]} for a, b in zip([doc["nodes"][3], *tail], tail, strict=False)
    ]

    report, _ = _validate(doc, "fan", registry)

    assert report.built is not None
    steps = report.built.runnable.steps  # type: ignore[attr-defined]
    assert len(steps) == 1 + 1 + 1 + 1 + 2_000  # entry, the branches' level, the join's input, the join, the tail
    assert report.built.runnable.invoke({"q": "x"}).to_string() == "x x"  # the join's template, passed along


# -- the build's time limit ------------------------------------------------------------------------------------------


def _spec(nodes: int = 10) -> FlowSpec:
    return FlowSpec.model_validate(bigflows.native_chain(nodes))


def test_a_build_past_its_deadline_fails_before_the_next_node(registry: ComponentRegistry) -> None:
    ticks = itertools.count()  # a clock that moves one second per reading

    with pytest.raises(BuildError) as caught:
        build_flow(_spec(10), registry, deadline=3, clock=lambda: next(ticks))

    assert (caught.value.code, caught.value.path) == ("build-timeout", "$.nodes[3]")
    assert "before node 'n3' (3 of 10 nodes built)" in str(caught.value)


def test_a_deadline_already_past_builds_nothing(registry: ComponentRegistry) -> None:
    with pytest.raises(BuildError) as caught:
        build_flow(_spec(), registry, deadline=0.0, clock=lambda: 1.0)

    assert (caught.value.code, caught.value.path) == ("build-timeout", "$.nodes[0]")


def test_a_build_within_its_deadline_is_unaffected(registry: ComponentRegistry) -> None:
    built = build_flow(_spec(11), registry, deadline=1.0, clock=lambda: 0.0)

    assert built.runnable.invoke({"question": "hi"}) == "a"


def test_the_build_timeout_is_a_setting() -> None:
    assert Settings().build_timeout == 30.0
    assert Settings.from_env({"GITOPS_FLOW_BUILD_TIMEOUT": "2.5"}).build_timeout == 2.5
    with pytest.raises(ConfigError):
        Settings.from_env({"GITOPS_FLOW_BUILD_TIMEOUT": "0"})


# -- a real server -----------------------------------------------------------------------------------------------------


def _failed(server: Any, sha: str) -> dict[str, list[tuple[str, str, str]]]:
    """Flow name -> its errors (code, file, path), for the flows of commit ``sha`` that failed."""
    versions = server.client.get("/versions").json()["versions"]
    record = next(v for v in versions if v["sha"] == sha)
    return {
        name: [(p["code"], p["file"], p["path"]) for p in problems if p["severity"] == "error"]
        for name, problems in record["failed"].items()
    }


def test_a_real_server_fails_a_huge_export_and_keeps_answering(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    remote.commit({"flows/echo.json": echo_flow(answer="one")}, "good")
    remote.push()
    with serve_process(remote, tmp_path) as server:
        server.wait_ready()
        huge = bigflows.text(bigflows.langflow_chain(10_000)).decode()
        sha = remote.commit({"flows/huge.json": huge, "flows/echo.json": echo_flow(answer="two")}, "10,000 nodes")
        remote.push()

        health: list[int] = []
        reconcile = threading.Thread(target=server.reconcile)
        reconcile.start()
        while reconcile.is_alive() or not health:
            health.append(server.client.get("/healthz").status_code)
        reconcile.join()

        assert set(health) == {200}
        assert _failed(server, sha) == {"huge": [("too-many-nodes", "flows/huge.json", "$.data.nodes")]}
        answer = server.invoke("echo", {"question": "hi"})  # the commit's other flow went live
        assert (answer.status_code, answer.json()["output"], answer.headers["x-flow-version"]) == (200, "two", sha)
        refused = server.invoke("huge", {"input_value": "hi"})  # no ref can serve it: 503, with the reason
        assert (refused.status_code, refused.json()["error"]["code"]) == (503, "nothing-servable")


def test_a_real_server_fails_a_flow_whose_build_runs_out_of_time(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    sha = remote.commit({"flows/echo.json": echo_flow()}, "first")
    remote.push()
    # a limit no build can meet: the first check, before the first node, is already past it
    with serve_process(remote, tmp_path, env={"GITOPS_FLOW_BUILD_TIMEOUT": "0.000001"}, ready=False) as server:
        server.reconcile()

        assert _failed(server, sha) == {"echo": [("build-timeout", "flows/echo.json", "$.nodes[0]")]}
        assert server.client.get("/healthz").status_code == 200
        refused = server.invoke("echo", {"question": "hi"})
        assert (refused.status_code, refused.json()["error"]["code"]) == (503, "nothing-servable")
        assert server.client.get("/readyz").status_code == 503  # its only flow serves nowhere: not ready
