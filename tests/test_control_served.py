"""Control flow (issue 23, point 4) against a real `gitops-flow serve` over real git pushes: a Router chooses a
branch by a classifier model's answer or by a key's value (only that branch runs, and it streams), falls back to its
default, and a Map runs its body over a list within its limit and refuses one past it; the problems of a flow that
misuses them come back with file, line and code, from the server and from `gitops-flow validate` alike."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gitops_flow.cli import main as cli
from tests.gitrepo import Remote
from tests.process import ServeProcess, serve_process
from tests.test_api import events_of

DATA = Path(__file__).parent / "data" / "flows"


def _doc(name: str, nodes: list[dict[str, Any]], edges: list[tuple[str, ...]]) -> str:
    return json.dumps(
        {
            "version": 1,
            "name": name,
            "nodes": [{"id": n["id"], "component": n["component"], "params": n.get("params", {})} for n in nodes],
            "edges": [{"source": e[0], "target": e[1], **({"key": e[2]} if len(e) > 2 else {})} for e in edges],
        },
        indent=2,
    )


def triage() -> str:
    """A classifier model (its answers in turn: billing, technical, something else) routes each question."""
    return _doc(
        "triage",
        [
            {"id": "question", "component": "Passthrough"},
            {"id": "ask", "component": "PromptTemplate", "params": {"template": "billing or technical? {question}"}},
            {"id": "classify", "component": "FakeChatModel", "params": {"responses": ["Billing.", " technical ", "?"]}},
            {
                "id": "route",
                "component": "Router",
                "params": {"key": "intent", "branches": {"billing": "billing", "technical": "tech"}, "default": "desk"},
            },
            {"id": "billing", "component": "Text", "params": {"key": "question", "template": "billing: {text}"}},
            {"id": "tech", "component": "PromptTemplate", "params": {"template": "Technical: {question}"}},
            {
                "id": "tech_llm",
                "component": "FakeChatModel",
                "params": {"responses": ["first technical answer", "restart the router and try again"]},
            },
            {"id": "tech_text", "component": "StrOutputParser"},
            {"id": "desk", "component": "Text", "params": {"key": "question", "template": "front desk: {text}"}},
        ],
        [
            ("question", "ask"),
            ("ask", "classify"),
            ("classify", "route", "intent"),
            ("question", "route", "question"),
            ("tech", "tech_llm"),
            ("tech_llm", "tech_text"),
        ],
    )


def lang(greeting: str = "Bonjour") -> str:
    """A router by the value of the input's ``lang``."""
    return _doc(
        "lang",
        [
            {"id": "request", "component": "Passthrough"},
            {
                "id": "route",
                "component": "Router",
                "params": {"key": "lang", "branches": {"fr": "fr"}, "default": "en"},
            },
            {"id": "fr", "component": "Text", "params": {"key": "question", "template": f"{greeting} ! {{text}}"}},
            {"id": "en", "component": "Text", "params": {"key": "question", "template": "Hello! {text}"}},
        ],
        [("request", "route")],
    )


def each(name: str, **params: Any) -> str:
    """A Map over the input's ``items``, each beside the input's ``topic``."""
    return _doc(
        name,
        [
            {"id": "request", "component": "Passthrough"},
            {"id": "each", "component": "Map", "params": {"key": "items", "item_key": "item", "body": "say", **params}},
            {"id": "say", "component": "Text", "params": {"template": "{topic}: {item}"}},
        ],
        [("request", "each")],
    )


def _line(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


TYPO = _doc(
    "typo",
    [
        {"id": "route", "component": "Router", "params": {"branches": {"a": "one"}, "default": "tow"}},
        {"id": "one", "component": "Text"},
    ],
    [],
)
WIDE = each("wide", max_items=500)
BAD = {  # a default that names no node; a Map asking for more items than the server allows
    "typo": (TYPO, ("unknown-node", "$.nodes[0].params.default", _line(TYPO, '"default": "tow"'))),
    "wide": (WIDE, ("map-limit", "$.nodes[1].params.max_items", _line(WIDE, '"max_items": 500'))),
}
LIMIT_ENV = {"GITOPS_FLOW_MAP_MAX_ITEMS": "50"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("control")
    remote = Remote.create(tmp)
    files = {
        "flows/triage.json": triage(),
        "flows/lang.json": lang(),
        "flows/each.json": each("each", max_items=3),
        "flows/each-first.json": each("each-first", max_items=3, truncate=True),
        "flows/control.json": (DATA / "valid" / "control.json").read_text(),  # its tests fake nodes in parts
        **{f"flows/{name}.json": text for name, (text, _) in BAD.items()},
    }
    remote.publish(files, "routers and maps")
    with serve_process(remote, tmp, env=LIMIT_ENV) as harness:
        yield harness


def _output(server: ServeProcess, flow: str, value: Any) -> Any:
    response = server.invoke(flow, value)
    assert response.status_code == 200, response.text
    return response.json()["output"]


def test_a_router_chooses_by_a_classifier_models_answer_and_only_that_branch_runs(server: ServeProcess) -> None:
    assert _output(server, "triage", "my invoice is wrong") == "billing: my invoice is wrong"
    # the technical branch's model answers its first answer: the billing run did not call it
    assert _output(server, "triage", "my printer") == "first technical answer"
    assert _output(server, "triage", "hello there") == "front desk: hello there"  # no branch matches "?": default
    assert _output(server, "triage", "a refund") == "billing: a refund"

    # the next answer is "technical": the branch's model streams its tokens through the router
    response = server.client.post("/flows/triage/stream", json={"input": "my modem"})
    assert response.status_code == 200, response.text
    chunks = [data for event, data in events_of(response.text) if event == "data"]
    assert len(chunks) > 3 and "".join(chunks) == "restart the router and try again"


def test_a_router_chooses_by_a_keys_value_in_invoke_and_batch(server: ServeProcess) -> None:
    assert _output(server, "lang", {"lang": " FR", "question": "ça va ?"}) == "Bonjour ! ça va ?"
    assert _output(server, "lang", {"lang": "de", "question": "wie geht's?"}) == "Hello! wie geht's?"
    inputs = [{"lang": "fr", "question": "un"}, {"lang": "en", "question": "two"}, {"lang": "Fr", "question": "trois"}]
    response = server.client.post("/flows/lang/batch", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    assert response.json()["output"] == ["Bonjour ! un", "Hello! two", "Bonjour ! trois"]
    # the flow takes what its router reads: an object with a lang (and the question its branches read)
    schema = server.client.get("/flows/lang/input_schema").json()
    assert schema["required"] == ["lang"] and set(schema["properties"]) >= {"lang"}
    refused = server.invoke("lang", "no lang here")
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "bad-input", refused.text


def test_a_map_runs_its_body_per_item_within_its_limit_and_refuses_past_it(server: ServeProcess) -> None:
    assert _output(server, "each", {"topic": "T", "items": ["a", "b", "c"]}) == ["T: a", "T: b", "T: c"]
    assert _output(server, "each", {"topic": "T", "items": []}) == []
    refused = server.invoke("each", {"topic": "T", "items": ["a", "b", "c", "d"]})
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "too-many-items"
    assert "map 'each' takes at most 3 items and was given 4" in error["message"]
    streamed = server.client.post("/flows/each/stream", json={"input": {"topic": "T", "items": list("abcd")}})
    assert streamed.status_code == 422 and streamed.json()["error"]["code"] == "too-many-items", streamed.text
    batched = server.client.post("/flows/each/batch", json={"inputs": [{"topic": "T", "items": list("abcd")}]})
    assert batched.status_code == 422 and batched.json()["error"]["code"] == "too-many-items", batched.text
    # a map told to truncate runs the first max_items
    assert _output(server, "each-first", {"topic": "T", "items": ["a", "b", "c", "d"]}) == ["T: a", "T: b", "T: c"]


def test_a_misused_router_or_map_fails_alone_with_file_line_and_code(server: ServeProcess) -> None:
    [version] = server.client.get("/versions").json()["versions"]
    assert sorted(version["failed"]) == sorted(BAD)
    for name, (_, (code, path, line)) in BAD.items():
        [problem] = version["failed"][name]
        assert (problem["code"], problem["path"], problem["line"], problem["file"]) == (
            code,
            path,
            line,
            f"flows/{name}.json",
        ), problem
    assert "GITOPS_FLOW_MAP_MAX_ITEMS" in version["failed"]["wide"][0]["message"]


def test_a_pushed_change_of_a_branch_is_served_by_the_new_version(server: ServeProcess) -> None:
    sha = server.remote.publish({"flows/lang.json": lang("Salut")}, "a friendlier French branch")
    server.reconcile()
    response = server.invoke("lang", {"lang": "fr", "question": "ça va ?"})
    assert response.status_code == 200 and response.json()["output"] == "Salut ! ça va ?"
    assert response.headers["x-flow-version"] == sha


def test_a_flow_whose_tests_fake_models_inside_its_parts_passes_them_and_goes_live(server: ServeProcess) -> None:
    # the server ran its tests (a branch's classifier and a map's body faked) before it went live
    assert _output(server, "control", {"question": "my invoice", "parts": []}) == "billing: my invoice"


def test_validate_reports_the_same_problems_in_ci(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    for name, (text, _) in BAD.items():
        (flows / f"{name}.json").write_text(text)
    (flows / "each.json").write_text(each("each", max_items=3))
    out = io.StringIO()
    environ = {**{k: v for k, v in os.environ.items() if not k.startswith("GITOPS_FLOW_")}, **LIMIT_ENV}
    code = cli.main(["validate", str(flows), "--format", "json"], environ=environ, out=out)
    assert code == 1
    found = {(Path(p["file"]).stem, p["code"], p["path"], p["line"]) for p in json.loads(out.getvalue())["problems"]}
    assert found == {(name, *where) for name, (_, where) in BAD.items()}
