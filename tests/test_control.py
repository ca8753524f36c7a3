"""Router and Map compiled (components/control.py, flow/graph.py's parts): how a router chooses, that only the chosen
branch runs and streams, that a map keeps order and its bounds, on LangChain's runnables and the lean program alike."""

from __future__ import annotations

import asyncio
import json
import time
import typing
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from langchain_core.messages import AIMessage
from langchain_core.runnables import Runnable, RunnableLambda

from gitops_flow.components.base import Component
from gitops_flow.components.control import Choice, Each, Match
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.exceptions import BuildError, TooManyItems
from gitops_flow.flow.document import FlowSpec, json_schema
from gitops_flow.flow.graph import analyse
from gitops_flow.flow.parts import MATCHES
from gitops_flow.runtime.compiler import BuiltFlow, build_flow
from gitops_flow.runtime.executor import run_lean
from gitops_flow.validation.documents import validate_bytes
from tests.helpers import edge, flow, node, registry_with

DATA = Path(__file__).parent / "data" / "flows"
PATHS = pytest.mark.parametrize("lean", [False, True], ids=["langchain", "lean"])


class Witness:
    """An operator component that records each value it is given and how many of its calls overlap."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.running = 0
        self.most = 0

    def component(self) -> Component:
        def factory(*, tag: str = "w", pause: float = 0.0) -> Runnable[Any, Any]:
            async def run(value: Any) -> Any:
                self.seen.append((tag, value))
                self.running += 1
                self.most = max(self.most, self.running)
                await asyncio.sleep(pause)
                self.running -= 1
                return f"{tag}:{value}"

            def sync(value: Any) -> Any:
                self.seen.append((tag, value))
                return f"{tag}:{value}"

            return RunnableLambda(sync, afunc=run)

        return Component("Witness", factory)


def _build(doc: dict[str, Any], registry: ComponentRegistry | None = None) -> BuiltFlow:
    return build_flow(FlowSpec.model_validate(doc), registry or ComponentRegistry.builtin())


def _invoke(built: BuiltFlow, value: Any, lean: bool) -> Any:
    return asyncio.run(run_lean(built, lean).ainvoke(value, {}))


def _stream(built: BuiltFlow, value: Any, lean: bool) -> list[Any]:
    async def chunks() -> list[Any]:
        return [c async for c in run_lean(built, lean).astream(value, {})]

    return asyncio.run(chunks())


@pytest.mark.parametrize(
    ("choice", "value", "label"),
    [
        (Choice("r", ("billing", "tech")), "billing", "billing"),
        (Choice("r", ("billing", "tech")), '  "Billing."\n', "billing"),  # a classifier's quotes, case and period
        (Choice("r", ("billing", "tech")), AIMessage(content="TECH"), "tech"),  # a model's message, as its text
        (Choice("r", ("billing", "tech")), "billing please", None),
        (Choice("r", ("billing", "tech"), match="contains"), "it is about Billing, I think", "billing"),
        (Choice("r", ("billing", "tech"), match="starts_with"), "tech: the printer", "tech"),
        (Choice("r", ("billing", "tech"), match="ends_with"), "the printer: tech", "tech"),
        (Choice("r", ("Billing",), case_sensitive=True), "billing", None),
        (Choice("r", ("Billing",), case_sensitive=True), "Billing", "Billing"),
        (Choice("r", ("fr", "en"), key="lang"), {"lang": " FR ", "question": "q"}, "fr"),
        (Choice("r", ("true",), key="ok"), {"ok": True}, "true"),  # not text: its JSON
        (Choice("r", ("3",), key="n"), {"n": 3}, "3"),
        (Choice("r", (r"^bill(ing)?\b", r"\btech"), match="regex"), "  Billing: invoice", r"^bill(ing)?\b"),
        (Choice("r", (r"^bill(ing)?\b", r"\btech"), match="regex"), "Bill me", r"^bill(ing)?\b"),
        (Choice("r", (r"^Bill",), match="regex", case_sensitive=True), "bill me", None),
        (Choice("r", (r"invoice|refund",), match="regex"), "a REFUND please", "invoice|refund"),
    ],
)
def test_a_choice_reads_the_text_trimmed_and_case_folded(choice: Choice, value: Any, label: str | None) -> None:
    assert choice.label(value) == label


def test_a_regex_router_refuses_a_pattern_it_cannot_run() -> None:
    doc = _router_flow(match="regex")
    doc["nodes"][1]["params"]["branches"] = {"(a": "billing", "(x)\\1": "tech"}
    with pytest.raises(BuildError) as raised:
        _build(doc, registry_with(Witness().component()))
    assert (raised.value.code, raised.value.path) == ("bad-regex", "$.nodes[1].params.branches['(a']")
    report = validate_bytes(json.dumps(doc).encode(), registry_with(Witness().component()), file="f.json")
    assert sorted(p.code for p in report.problems) == ["bad-regex", "unsupported-regex"]


def test_a_choice_by_key_refuses_a_value_without_the_key() -> None:
    with pytest.raises(ValueError, match="router 'r' expected an object with the key 'lang'"):
        Choice("r", ("fr",), key="lang").label("just text")


def _router_flow(**params: Any) -> dict[str, Any]:
    """question -> route (by ``params``), the exit: one of billing (a Witness), tech (a fake model), other."""
    return flow(
        name="routed",
        nodes=[
            node("question", "Passthrough"),
            node("route", "Router", branches={"billing": "billing", "tech": "tech"}, default="other", **params),
            node("billing", "Witness", tag="billing"),
            node("tech", "PromptTemplate", template="about {topic}"),
            node("tech_llm", "FakeChatModel", responses=["the tech answer, word by word", "second tech answer"]),
            node("tech_text", "StrOutputParser"),
            node("other", "Witness", tag="other"),
        ],
        edges=[edge("question", "route"), edge("tech", "tech_llm"), edge("tech_llm", "tech_text")],
    )


@PATHS
def test_only_the_chosen_branch_runs(lean: bool) -> None:
    witness = Witness()
    built = _build(_router_flow(key="topic"), registry_with(witness.component()))
    assert _invoke(built, {"topic": "Billing", "q": 1}, lean) == "billing:{'topic': 'Billing', 'q': 1}"
    assert _invoke(built, {"topic": "nothing known"}, lean) == "other:{'topic': 'nothing known'}"
    assert witness.seen == [("billing", {"topic": "Billing", "q": 1}), ("other", {"topic": "nothing known"})]
    # the tech branch's model was not called by the runs before: its first answer is still next
    assert _invoke(built, {"topic": "tech"}, lean) == "the tech answer, word by word"
    assert len(witness.seen) == 2


@PATHS
def test_the_chosen_branchs_tokens_stream_through(lean: bool) -> None:
    built = _build(_router_flow(key="topic"), registry_with(Witness().component()))
    chunks = _stream(built, {"topic": "tech"}, lean)
    assert len(chunks) > 3 and "".join(chunks) == "the tech answer, word by word"


@PATHS
def test_a_batch_routes_each_input_on_its_own(lean: bool) -> None:
    witness = Witness()
    built = _build(_router_flow(key="topic"), registry_with(witness.component()))
    inputs = [{"topic": "tech"}, {"topic": "billing"}, {"topic": "x"}, {"topic": "TECH"}]
    found = asyncio.run(run_lean(built, lean).abatch(inputs, [{"max_concurrency": 2}] * 4))
    assert found[1:3] == ["billing:{'topic': 'billing'}", "other:{'topic': 'x'}"]
    assert sorted(found[0::3]) == ["second tech answer", "the tech answer, word by word"]


@PATHS
def test_a_router_chooses_by_a_classifier_models_answer(lean: bool) -> None:
    doc = flow(
        name="classified",
        nodes=[
            node("question", "Passthrough"),
            node("classify", "FakeChatModel", responses=[" Tech.", "billing", "I do not know"]),
            node("route", "Router", key="intent", branches={"billing": "billing", "tech": "tech"}, default="other"),
            node("billing", "Text", key="question", template="billing: {text}"),
            node("tech", "Text", key="question", template="tech: {text}"),
            node("other", "Text", key="question", template="other: {text}"),
        ],
        edges=[
            edge("question", "classify"),
            edge("classify", "route", "intent"),
            edge("question", "route", "question"),
        ],
    )
    built = _build(doc)
    answers = [_invoke(built, "my printer", lean) for _ in range(3)]
    assert answers == ["tech: my printer", "billing: my printer", "other: my printer"]


def _map_flow(**params: Any) -> dict[str, Any]:
    return flow(
        name="mapped",
        nodes=[node("items", "Passthrough"), node("each", "Map", body="work", **params), node("work", "Witness")],
        edges=[edge("items", "each")],
    )


@PATHS
def test_a_map_answers_its_bodys_results_in_order_at_its_concurrency(lean: bool) -> None:
    witness = Witness()
    doc = _map_flow(concurrency=2, max_items=6)
    doc["nodes"][2]["params"] = {"pause": 0.02}
    built = _build(doc, registry_with(witness.component()))
    assert _invoke(built, ["a", "b", "c", "d", "e", "f"], lean) == ["w:a", "w:b", "w:c", "w:d", "w:e", "w:f"]
    assert witness.most == 2
    assert _invoke(built, [], lean) == []
    assert _stream(built, ["x", "y"], lean) == [["w:x", "w:y"]]  # one chunk: the whole list


@PATHS
def test_a_map_refuses_a_longer_list_than_its_limit_unless_told_to_truncate(lean: bool) -> None:
    witness = Witness()
    built = _build(_map_flow(max_items=3), registry_with(witness.component()))
    with pytest.raises(TooManyItems, match=r"map 'each' takes at most 3 items and was given 4"):
        _invoke(built, [1, 2, 3, 4], lean)
    assert witness.seen == []  # refused before any item ran
    cut = _build(_map_flow(max_items=3, truncate=True), registry_with(witness.component()))
    assert _invoke(cut, [1, 2, 3, 4], lean) == ["w:1", "w:2", "w:3"]


@PATHS
def test_a_map_by_key_puts_each_item_beside_the_input(lean: bool) -> None:
    doc = flow(
        name="mapped",
        nodes=[
            node("request", "Passthrough"),
            node("each", "Map", body="prompt", key="docs", item_key="doc"),
            node("prompt", "PromptTemplate", template="{topic}: {doc}"),
            node("text", "Text"),
        ],
        edges=[edge("request", "each"), edge("prompt", "text")],
    )
    built = _build(doc)
    assert _invoke(built, {"topic": "T", "docs": ["one", "two"]}, lean) == ["T: one", "T: two"]
    with pytest.raises(ValueError, match="map 'each' expected a list, not str"):
        _invoke(built, {"topic": "T", "docs": "one"}, lean)


@PATHS
def test_a_map_fails_as_its_first_failing_item_does(lean: bool) -> None:
    doc = flow(
        name="mapped",
        nodes=[node("items", "Passthrough"), node("each", "Map", body="pick"), node("pick", "Pick", key="a")],
        edges=[edge("items", "each")],
    )
    built = _build(doc)
    assert _invoke(built, [{"a": 1}, {"a": 2}], lean) == [1, 2]
    with pytest.raises(ValueError, match="expected an object with the key 'a'"):
        _invoke(built, [{"a": 1}, "no a", {"b": 3}], lean)


def test_the_servers_bounds_cap_a_maps_params() -> None:
    registry = ComponentRegistry.builtin(map_max_items=5, map_max_concurrency=2)
    _build(_map_flow(max_items=5, concurrency=2), registry_with(Witness().component()))
    for params, where in (({"max_items": 6}, "max_items"), ({"concurrency": 3}, "concurrency")):
        with pytest.raises(BuildError, match="above the server's bound") as raised:
            build_flow(FlowSpec.model_validate(_map_flow(**params)), registry.extended([Witness().component()]))
        assert (raised.value.code, raised.value.path) == ("map-limit", f"$.nodes[1].params.{where}")


def test_each_refuses_before_it_hands_out_anything() -> None:
    each = Each("m", "body", max_items=2, concurrency=1)
    assert each.inputs(("a", "b")) == ["a", "b"]
    with pytest.raises(TooManyItems):
        each.inputs([1, 2, 3])


def _problems(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p.code, p.path) for p in analyse(FlowSpec.model_validate(doc))[1]]


def test_a_misspelt_branch_says_which_node_was_meant() -> None:
    doc = flow(nodes=[node("route", "Router", branches={"a": "one"}, default="genral"), node("one", "Text")])
    doc["nodes"].append(node("general", "Text"))
    [problem, *_] = analyse(FlowSpec.model_validate(doc))[1]
    assert problem.code == "unknown-node" and problem.message.endswith("did you mean 'general'?")


def test_parts_are_checked_as_flows() -> None:
    nodes = [node("q", "Passthrough"), node("each", "Map", body="a"), node("a", "Text"), node("b", "Text")]
    assert _problems(flow(nodes=nodes, edges=[edge("q", "each"), edge("a", "b")])) == []
    # a part that leads back to its start, and one that ends twice
    assert _problems(flow(nodes=nodes, edges=[edge("q", "each"), edge("a", "b"), edge("b", "a")])) == [
        ("cycle", "$.edges[2]")
    ]
    forked = [*nodes, node("c", "Text")]
    assert _problems(flow(nodes=forked, edges=[edge("q", "each"), edge("a", "b"), edge("a", "c")])) == [
        ("several-exits", "$.nodes[4]")
    ]
    # the main graph reaching into a part
    assert ("crosses-part", "$.edges[1]") in _problems(
        flow(nodes=nodes, edges=[edge("q", "each"), edge("each", "b"), edge("a", "b")])
    )


def test_a_control_node_inside_its_own_part_is_a_cycle() -> None:
    nodes = [
        node("q", "Passthrough"),
        node("outer", "Map", body="inner"),
        node("inner", "Map", body="outer"),
    ]
    found = _problems(flow(nodes=nodes, edges=[edge("q", "outer")]))
    assert ("cycle", "$.nodes[1]") in found or ("cycle", "$.nodes[2]") in found
    assert ("cycle", "$.nodes[1].params.body") in _problems(
        flow(nodes=[node("q", "Passthrough"), node("each", "Map", body="each")], edges=[edge("q", "each")])
    )


def test_control_nodes_nest_at_most_sixteen_deep() -> None:
    def nested(depth: int) -> dict[str, Any]:
        nodes = [node("q", "Passthrough")]
        nodes += [node(f"m{i}", "Map", body=f"m{i + 1}", max_items=1) for i in range(depth)]
        nodes.append(node(f"m{depth}", "Text"))
        return flow(nodes=nodes, edges=[edge("q", "m0")])

    assert _problems(nested(16)) == []
    assert [code for code, _ in _problems(nested(17))] == ["too-deep"]
    started = time.perf_counter()
    assert _invoke(_build(nested(16)), [[[]]], lean=True) == [[[]]]  # each level maps over the list within
    assert time.perf_counter() - started < 5


def test_the_published_schema_checks_control_params_as_validation_does() -> None:
    schema = jsonschema.Draft202012Validator(json_schema())
    valid = json.loads((DATA / "valid" / "control.json").read_text())
    assert list(schema.iter_errors(valid)) == []
    [error] = schema.iter_errors(json.loads((DATA / "invalid" / "no-default-branch.json").read_text()))
    assert error.message == "'default' is a required property"
    unknown = flow(nodes=[node("m", "Map", body="b", max_itmes=3), node("b", "Text")])
    assert [e.validator for e in schema.iter_errors(unknown)] == ["additionalProperties"]
    assert list(typing.get_args(Match)) == list(MATCHES)


def test_maps_inside_maps_multiply_and_the_servers_bound_caps_the_product() -> None:
    def nested(outer: int, inner: int) -> dict[str, Any]:
        return flow(
            nodes=[
                node("q", "Passthrough"),
                node("rows", "Map", body="cells", max_items=outer),
                node("cells", "Map", body="cell", max_items=inner),
                node("cell", "Text"),
            ],
            edges=[edge("q", "rows")],
        )

    registry = ComponentRegistry.builtin(map_max_items=12)
    assert _invoke(_build(nested(3, 4), registry), [["a", "b"], ["c"]], lean=True) == [["a", "b"], ["c"]]
    with pytest.raises(BuildError, match=r"map 'rows' may run its body's nodes 16 times in one run") as raised:
        _build(nested(4, 4), registry)
    assert (raised.value.code, raised.value.path) == ("map-limit", "$.nodes[1].params")
