"""LangFlow's If-Else becomes a Router whose branches are parts; a Loop and a Batch Run are refused, saying what
they would iterate.

tests/data/langflow/if-else-prompting.json is the Basic Prompting starter project (langflow-base 1.13.0) with the
If-Else node of the Youtube Analysis starter project (langflow-base 0.4.3) copied into it unchanged (its regex matches
a YouTube link): its True output feeds the model, its False output a second Chat Output.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from gitops_flow.flow.document import FlowSpec
from tests.gitrepo import Remote
from tests.served import served
from tests.test_langflow import DATA, load, validated

ROUTER = "ConditionalRouter-7lzPh"
MODEL = "LanguageModelComponent-FLeYF"
YOUTUBE = "https://www.youtube.com/watch?v=dQw4w9WgXcQ"
FAKE = f"This is a fake answer from {MODEL}."


def _router_node(data: dict[str, Any]) -> dict[str, Any]:
    node: dict[str, Any] = next(n for n in data["data"]["nodes"] if n["id"] == ROUTER)
    return node


def _with(**fields: Any) -> dict[str, Any]:
    """The fixture with the If-Else's fields set to these values."""
    data = load("if-else-prompting")
    template = _router_node(data)["data"]["node"]["template"]
    for name, value in fields.items():
        template[name]["value"] = value
    return data


def _router(report: Any) -> dict[str, Any]:
    doc = report.conversion.document
    node: dict[str, Any] = next(n for n in doc["nodes"] if n["id"] == ROUTER)
    return node


def test_if_else_becomes_a_router_whose_branches_are_the_nodes_after_each_output() -> None:
    report = validated("if-else-prompting")

    assert report.ok, [p.describe() for p in report.problems]
    doc = report.conversion.document
    FlowSpec.model_validate(doc)
    pattern = _router_node(load("if-else-prompting"))["data"]["node"]["template"]["match_text"]["value"]
    assert _router(report)["params"] == {
        "branches": {f"^(?:{pattern})": f"{ROUTER}.true"},  # LangFlow's re.match: anchored at the start
        "default": f"{ROUTER}.false",
        "match": "regex",
        "case_sensitive": True,  # LangFlow's regex minds case whatever case_sensitive says
    }
    assert doc["output"] == ROUTER and doc["input"] == "ChatInput-b6UCc"
    edges = {(e["source"], e["target"]) for e in doc["edges"]}
    assert ("ChatInput-b6UCc", ROUTER) in edges
    assert (f"{ROUTER}.true", f"{MODEL}.messages") in edges and (f"{ROUTER}.false", "ChatOutput-nOtYt") in edges
    # the branches are detached from the main graph: nothing but the router leads into them
    assert not any(target in (f"{ROUTER}.true", f"{ROUTER}.false") for _, target in edges)
    # a problem in the router's params points at the If-Else's field
    index = next(i for i, n in enumerate(doc["nodes"]) if n["id"] == ROUTER)
    origin = report.conversion.origin(f"$.nodes[{index}].params.branches")
    assert origin == "$.data.nodes[6].data.node.template.match_text.value"


@pytest.mark.parametrize(
    ("operator", "match", "swapped"),
    [
        ("equals", "equals", False),
        ("not equals", "equals", True),
        ("contains", "contains", False),
        ("starts with", "starts_with", False),
        ("ends with", "ends_with", False),
    ],
)
def test_each_text_operator_maps_onto_the_routers_match(operator: str, match: str, swapped: bool) -> None:
    report = validated("if-else", _with(operator=operator, match_text="Refund", case_sensitive=False))

    assert report.ok, [p.describe() for p in report.problems]
    chosen, other = (f"{ROUTER}.false", f"{ROUTER}.true") if swapped else (f"{ROUTER}.true", f"{ROUTER}.false")
    assert _router(report)["params"] == {
        "branches": {"Refund": chosen},
        "default": other,
        "match": match,
        "case_sensitive": False,
    }


def test_case_sensitive_is_kept() -> None:
    report = validated("if-else", _with(operator="contains", match_text="Refund", case_sensitive=True))

    assert _router(report)["params"]["case_sensitive"] is True


def _refusal(data: dict[str, Any]) -> Any:
    report = validated("if-else", data)
    assert not report.ok and report.conversion is None
    [problem] = [p for p in report.problems if p.severity == "error"]
    assert problem.code == "langflow-unsupported" and problem.message.startswith(ROUTER)
    assert problem.file == "if-else.json" and problem.line is not None
    return problem


def test_a_number_comparison_is_refused_naming_the_operator() -> None:
    problem = _refusal(_with(operator="less than", match_text="3"))

    assert problem.path == "$.data.nodes[6].data.node.template.operator.value"
    assert "'less than' compares numbers" in problem.message


def test_an_empty_match_text_is_refused() -> None:
    problem = _refusal(_with(operator="equals", match_text=""))

    assert problem.path == "$.data.nodes[6].data.node.template.match_text.value"


def _wire(data: dict[str, Any], source: str, output: str, target: str, field: str) -> None:
    edge = copy.deepcopy(data["data"]["edges"][0])
    edge["source"], edge["target"] = source, target
    edge["data"]["sourceHandle"].update(id=source, name=output)
    edge["data"]["targetHandle"].update(id=target, fieldName=field)
    edge["id"] = f"{source}-{output}-{target}-{field}"
    data["data"]["edges"].append(edge)


def test_a_match_text_another_node_writes_is_refused() -> None:
    data = load("if-else-prompting")
    _wire(data, "Prompt-t2oaK", "prompt", ROUTER, "match_text")

    problem = _refusal(data)

    assert problem.path == "$.data.nodes[6].data.node.template.match_text.value"
    assert "match_text is wired" in problem.message


def test_passing_on_another_message_than_the_compared_text_is_refused() -> None:
    data = load("if-else-prompting")
    data["data"]["edges"] = [
        e
        for e in data["data"]["edges"]
        if not (e["target"] == ROUTER and e["data"]["targetHandle"]["fieldName"] == "message")
    ]
    _wire(data, "Prompt-t2oaK", "prompt", ROUTER, "message")

    problem = _refusal(data)

    assert problem.path == f"$.data.edges[{len(data['data']['edges']) - 1}]"
    assert "message passes on Prompt-t2oaK's output, not the compared text" in problem.message


def test_branches_that_read_the_main_graph_are_refused() -> None:
    data = load("if-else-prompting")
    template = next(n for n in data["data"]["nodes"] if n["id"] == "Prompt-t2oaK")["data"]["node"]["template"]
    template["template"]["value"] = "Answer {question}"
    template["question"] = {"value": "", "type": "str", "input_types": ["Message"]}
    _wire(data, "ChatInput-b6UCc", "message", "Prompt-t2oaK", "question")

    problem = _refusal(data)

    assert "its true_result branch reads a node outside it (Prompt-t2oaK, which is not after that output)" in (
        problem.message
    )


def test_an_unwired_output_is_a_warning_and_that_branch_answers_the_compared_text() -> None:
    data = load("if-else-prompting")
    data["data"]["edges"] = [e for e in data["data"]["edges"] if e["target"] != "ChatOutput-nOtYt"]
    data["data"]["nodes"] = [n for n in data["data"]["nodes"] if n["id"] != "ChatOutput-nOtYt"]

    report = validated("if-else", data)

    assert report.ok, [p.describe() for p in report.problems]
    [warning] = [p for p in report.problems if p.code == "langflow-unwired-branch"]
    assert "false_result" in warning.message and warning.severity == "warning"


# -- served: LangFlow's run API takes the branch the input selects ----------------------------------------------


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    remote = Remote.create(tmp_path)
    remote.commit({"flows/if-else-prompting.json": (DATA / "if-else-prompting.json").read_text()}, "an If-Else")
    remote.push()
    return remote


def _answer(harness: Any, text: str) -> tuple[str, str]:
    response = harness.client.post("/api/v1/run/if-else-prompting", json={"input_value": text})
    assert response.status_code == 200, response.text
    [component] = response.json()["outputs"][0]["outputs"]
    return component["component_id"], component["results"]["message"]["text"]


def test_a_served_if_else_runs_only_the_branch_its_input_selects(remote: Remote, tmp_path: Path) -> None:
    with served(remote, tmp_path, fake_models=True) as harness:
        to_model = _answer(harness, YOUTUBE)
        echoed = _answer(harness, "just a question")
        upper = _answer(harness, YOUTUBE.replace("youtube", "YOUTUBE"))  # LangFlow's regex minds case

    assert to_model == (ROUTER, FAKE)
    assert echoed == (ROUTER, "just a question")
    assert upper == (ROUTER, YOUTUBE.replace("youtube", "YOUTUBE"))


# -- Loop and Batch Run: refused, saying what they would iterate -----------------------------------------------


def test_a_loop_is_refused_naming_its_body_and_what_it_would_iterate() -> None:
    report = validated("research-translation-loop")

    assert not report.ok
    problems = {p.message.split(" ")[0]: p for p in report.problems if p.severity == "error"}
    loop = problems["LoopComponent-E7Ur0"]
    assert loop.code == "langflow-unsupported" and loop.path == "$.data.nodes[5]"
    assert "its body (LanguageModelComponent-ps5yd, ParserComponent-V2o48: the nodes from its item output" in (
        loop.message
    )
    assert "the table ArXivComponent-zGqWh (ArXivComponent) gives its data input from 'dataframe'" in loop.message
    assert "a native Map" in loop.message
    # the wire back into the loop is read as the body's end: no bad edge, no cycle, no unused body
    assert {p.code for p in report.problems} <= {"langflow-unsupported", "langflow-default-model"}
    assert set(problems) == {"LoopComponent-E7Ur0", "ArXivComponent-zGqWh"}


def test_a_batch_run_is_refused_naming_the_table_and_column_it_would_run_over() -> None:
    report = validated("content-aggregator")

    batch = next(p for p in report.problems if p.message.startswith("BatchRun-ca"))
    assert batch.code == "langflow-unsupported" and batch.path == "$.data.nodes[2]"
    assert "it calls its model once per row (its column 'summary') of the table WebSearch-ca (UnifiedWebSearch)" in (
        batch.message
    )
