"""compiler.py: flows compile to one runnable that invokes, streams, fans out and in, and keeps chat history."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import RunnableSequence

from gitops_flow.components.base import Component
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.exceptions import BadInput, BuildError
from gitops_flow.flow.document import FlowSpec
from gitops_flow.runtime.compiler import build_flow
from gitops_flow.runtime.conversations import MemoryHistoryStore, MissingSession
from tests.helpers import Calls, chain, edge, flow, node, registry_with

REGISTRY = ComponentRegistry.builtin()
CHAT = (
    ("prompt", "ChatPromptTemplate", {"messages": [["system", "Be brief."], ["human", "{question}"]]}),
    ("llm", "FakeChatModel", {"responses": ["Hello there, friend!", "Second answer"]}),
    ("answer", "StrOutputParser", {}),
)


def test_a_chain_compiles_to_a_sequence_that_answers_in_turn() -> None:
    built = build_flow(FlowSpec.model_validate(chain(*CHAT)), REGISTRY)
    assert isinstance(built.runnable, RunnableSequence)  # no wrapper layers: names are set, not bound
    assert [step.name for step in built.runnable.steps] == ["prompt", "llm", "answer"]
    assert built.runnable.invoke({"question": "hi"}) == "Hello there, friend!"
    assert built.runnable.invoke({"question": "again"}) == "Second answer"


def test_a_chain_streams_token_by_token() -> None:
    built = build_flow(FlowSpec.model_validate(chain(*CHAT)), REGISTRY)
    chunks = list(built.runnable.stream({"question": "hi"}))
    assert chunks == ["Hello", " ", "there,", " ", "friend!"]


def test_async_batch_runs_each_input() -> None:
    built = build_flow(FlowSpec.model_validate(chain(*CHAT[:2], ("answer", "StrOutputParser", {}))), REGISTRY)
    outputs = asyncio.run(built.runnable.abatch([{"question": "a"}, {"question": "b"}]))
    assert sorted(outputs) == ["Hello there, friend!", "Second answer"]


def test_a_diamond_runs_every_node_once_and_fans_in_by_key() -> None:
    calls = Calls()
    registry = registry_with(
        calls.component("Upper", str.upper),
        calls.component("Reverse", lambda text: text[::-1]),
        calls.component("Join", lambda parts: f"{parts['a']}|{parts['b']}"),
        calls.component("Root", lambda text: text + "!"),
    )
    doc = flow(
        nodes=[node("root", "Root"), node("up", "Upper"), node("rev", "Reverse"), node("join", "Join")],
        edges=[edge("root", "up"), edge("root", "rev"), edge("up", "join", "a"), edge("rev", "join", "b")],
    )
    built = build_flow(FlowSpec.model_validate(doc), registry)
    assert built.runnable.invoke("abc") == "ABC!|!cba"
    assert sorted(label for label, _ in calls.seen) == ["Join", "Reverse", "Root", "Upper"]


def test_fan_out_then_a_chain_to_the_exit_still_streams() -> None:
    doc = flow(
        nodes=[
            node("q", "Passthrough"),
            node("a", "PromptTemplate", template="A: {question}"),
            node("b", "PromptTemplate", template="B: {question}"),
            node("both", "PromptTemplate", template="{a} / {b}"),
            node("llm", "FakeChatModel", responses=["one two three"]),
            node("out", "StrOutputParser"),
        ],
        edges=[
            edge("q", "a"),
            edge("q", "b"),
            edge("a", "both", "a"),
            edge("b", "both", "b"),
            edge("both", "llm"),
            edge("llm", "out"),
        ],
    )
    built = build_flow(FlowSpec.model_validate(doc), REGISTRY)
    assert list(built.runnable.stream({"question": "x"})) == ["one", " ", "two", " ", "three"]


def _two_prompts_into(template: str) -> FlowSpec:
    """q fans out to prompts a and b, which fan in (keys "a" and "b") to a prompt with ``template``."""
    doc = flow(
        nodes=[
            node("q", "Passthrough"),
            node("a", "PromptTemplate", template="A={question}"),
            node("b", "PromptTemplate", template="B={question}"),
            node("both", "PromptTemplate", template=template),
        ],
        edges=[edge("q", "a"), edge("q", "b"), edge("a", "both", "a"), edge("b", "both", "b")],
    )
    return FlowSpec.model_validate(doc)


def test_prompt_values_reach_the_fan_in_node() -> None:
    built = build_flow(_two_prompts_into("{a} {b}"), REGISTRY)
    assert built.runnable.invoke({"question": "x"}).to_string() == "A=x B=x"


class _Names(BaseCallbackHandler):
    def __init__(self) -> None:
        self.names: list[str] = []

    def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
        self.names.append(kwargs.get("name") or "")


def test_callbacks_see_the_flow_and_each_node_by_id() -> None:
    handler = _Names()
    built = build_flow(FlowSpec.model_validate(chain(*CHAT)), REGISTRY)
    built.runnable.invoke({"question": "hi"}, {"callbacks": [handler]})
    assert handler.names[0] == "demo"
    assert {"prompt", "answer"} <= set(handler.names)


def test_fakes_replace_model_nodes_only() -> None:
    doc = FlowSpec.model_validate(chain(CHAT[0], ("llm", "ChatModel", {"model": "openai:gpt-4o-mini"}), CHAT[2]))
    built = build_flow(doc, REGISTRY, fakes={"llm": ["faked"]})
    assert built.runnable.invoke({"question": "hi"}) == "faked"
    with pytest.raises(BuildError, match="only model and tool nodes can be faked") as caught:
        build_flow(doc, REGISTRY, fakes={"prompt": ["x"]})
    assert caught.value.path == "$.nodes[0]"


def _echo_registry() -> ComponentRegistry:
    from langchain_core.runnables import RunnableLambda

    def echo(*, value: str, label: Any = None) -> Any:
        return RunnableLambda(lambda _: value)

    return registry_with(Component("Echo", echo, secrets=frozenset({"value"})))


def test_secrets_are_resolved_from_the_given_environment() -> None:
    doc = FlowSpec.model_validate(chain(("e", "Echo", {"value": {"$env": "MY_SECRET"}})))
    built = build_flow(doc, _echo_registry(), secrets={"MY_SECRET": "s3cret"})
    assert built.runnable.invoke("x") == "s3cret"


def test_a_missing_secret_fails_a_real_build_and_is_a_placeholder_in_a_dry_build() -> None:
    doc = FlowSpec.model_validate(chain(("e", "Echo", {"value": {"$env": "MY_SECRET"}})))
    with pytest.raises(BuildError, match="MY_SECRET") as caught:
        build_flow(doc, _echo_registry(), secrets={})
    assert caught.value.code == "missing-secret"
    dry = build_flow(doc, _echo_registry(), dry_run=True)
    assert dry.runnable.invoke("x") == "<$env:MY_SECRET>"
    assert [n.code for n in dry.notes] == ["secret-placeholder"]


@pytest.mark.parametrize(
    "params, path",
    [
        ({"value": "x", "label": {"$env": "MY_SECRET"}}, "$.nodes[0].params.label"),
        ({"value": "x", "label": [{"$env": "MY_SECRET"}]}, "$.nodes[0].params.label[0]"),
        ({"value": {"nested": {"$env": "MY_SECRET"}}}, "$.nodes[0].params.value.nested"),
    ],
    ids=["other-param", "in-a-list", "nested-in-the-secret-param"],
)
def test_a_build_never_reads_a_reference_outside_a_secret_param(params: dict[str, Any], path: str) -> None:
    """Validation refuses these first (env-not-secret); a flow built without it still never reads one."""
    doc = FlowSpec.model_validate(chain(("e", "Echo", params)))
    for dry_run in (False, True):
        with pytest.raises(BuildError) as caught:
            build_flow(doc, _echo_registry(), secrets={"MY_SECRET": "s3cret-value"}, dry_run=dry_run)
        assert (caught.value.code, caught.value.path) == ("env-not-secret", path)
        assert "s3cret-value" not in str(caught.value)


# a provider whose package no extra installs (the dev extra has langchain-openai and langchain-anthropic)
NOT_INSTALLED = "mistralai"


def test_the_provider_taken_as_not_installed_is_not() -> None:
    import importlib.util

    from gitops_flow.security.providers import PROVIDER_MODULES

    assert importlib.util.find_spec(PROVIDER_MODULES[NOT_INSTALLED]) is None


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"model": "nosuchprovider:model-x"}, "bad-param"),
        ({"model": "mystery-model"}, "bad-param"),
        ({"model": f"{NOT_INSTALLED}:some-model"}, "component-unavailable"),
    ],
    ids=["unknown-provider", "uninferable-provider", "package-missing"],
)
def test_chat_model_problems_are_build_errors(params: dict[str, Any], code: str) -> None:
    doc = FlowSpec.model_validate(chain(CHAT[0], ("llm", "ChatModel", params)))
    with pytest.raises(BuildError) as caught:
        build_flow(doc, REGISTRY)
    assert caught.value.code == code
    assert caught.value.path.startswith("$.nodes[1]")


def test_a_dry_build_of_a_model_whose_package_is_missing_says_so() -> None:
    doc = FlowSpec.model_validate(chain(CHAT[0], ("llm", "ChatModel", {"model": f"{NOT_INSTALLED}:some-model"})))
    built = build_flow(doc, REGISTRY, dry_run=True)
    assert [n.code for n in built.notes] == ["provider-not-installed"]
    assert f"pip install 'gitops-flow[{NOT_INSTALLED}]'" in built.notes[0].message  # its extra names the provider


HISTORY_FLOW = flow(
    nodes=[
        node("memory", "ChatHistory", max_messages=2),
        node("prompt", "ChatPromptTemplate", messages=[["placeholder", "{history}"], ["human", "{question}"]]),
        node("llm", "FakeChatModel", responses=["first answer", "second answer", "third answer"]),
        node("answer", "StrOutputParser"),
    ],
    edges=[edge("memory", "prompt"), edge("prompt", "llm"), edge("llm", "answer")],
)


def test_chat_history_keeps_each_session_apart_and_windows_it() -> None:
    store = MemoryHistoryStore()
    built = build_flow(FlowSpec.model_validate(HISTORY_FLOW), REGISTRY, history=store)

    async def talk() -> None:
        ada = {"configurable": {"session_id": "ada"}}
        assert await built.runnable.ainvoke({"question": "I am Ada"}, ada) == "first answer"
        chunks = [c async for c in built.runnable.astream({"question": "Who am I?"}, ada)]
        assert "".join(chunks) == "second answer"
        await built.runnable.ainvoke({"question": "hello"}, {"configurable": {"session_id": "bob"}})

    asyncio.run(talk())
    turns = asyncio.run(store.load_turns("ada", 10))
    assert turns == [("human", "I am Ada"), ("ai", "first answer"), ("human", "Who am I?"), ("ai", "second answer")]
    assert asyncio.run(store.load_turns("bob", 10)) == [("human", "hello"), ("ai", "third answer")]


def test_the_prompt_receives_the_windowed_history() -> None:
    store = MemoryHistoryStore()
    asyncio.run(store.append_turns("s", [("human", "one"), ("ai", "two"), ("human", "three"), ("ai", "four")]))
    doc = flow(
        nodes=HISTORY_FLOW["nodes"][:2],
        edges=[edge("memory", "prompt")],
    )
    built = build_flow(FlowSpec.model_validate(doc), REGISTRY, history=store)
    value = asyncio.run(built.runnable.ainvoke({"question": "five"}, {"configurable": {"session_id": "s"}}))
    assert [m.content for m in value.to_messages()] == ["three", "four", "five"]


def test_a_conversational_flows_input_is_its_text_and_the_other_prompt_variables_but_not_the_history() -> None:
    doc = flow(
        nodes=[
            node("memory", "ChatHistory", input_key="ask"),
            node("prompt", "ChatPromptTemplate", messages=[["placeholder", "{history}"], ["human", "{ask} in {lang}"]]),
        ],
        edges=[edge("memory", "prompt")],
    )
    built = build_flow(FlowSpec.model_validate(doc), REGISTRY, history=MemoryHistoryStore())
    schema = built.runnable.get_input_schema().model_json_schema()
    assert set(schema["properties"]) == {"ask", "lang"}
    assert set(schema["required"]) == {"ask", "lang"}
    assert schema["properties"]["ask"]["type"] == "string"


def test_a_conversational_flow_needs_a_session() -> None:
    built = build_flow(FlowSpec.model_validate(HISTORY_FLOW), REGISTRY, history=MemoryHistoryStore())
    with pytest.raises(MissingSession):
        asyncio.run(built.runnable.ainvoke({"question": "hi"}))


def test_chat_history_must_be_the_entry() -> None:
    doc = flow(
        nodes=[node("p", "PromptTemplate", template="{question}"), node("memory", "ChatHistory")],
        edges=[edge("p", "memory")],
    )
    with pytest.raises(BuildError) as caught:
        build_flow(FlowSpec.model_validate(doc), REGISTRY, history=MemoryHistoryStore())
    assert caught.value.code == "history-not-entry"


def test_a_real_build_of_a_conversational_flow_needs_a_store() -> None:
    with pytest.raises(BuildError, match="history store"):
        build_flow(FlowSpec.model_validate(HISTORY_FLOW), REGISTRY)


def test_a_broken_graph_is_a_build_error_with_its_path() -> None:
    doc = flow(nodes=[node("a", "Passthrough"), node("b", "Passthrough")], edges=[edge("a", "zz")])
    with pytest.raises(BuildError) as caught:
        build_flow(FlowSpec.model_validate(doc), REGISTRY)
    assert caught.value.code == "dangling-edge"
    assert caught.value.path == "$.edges[0].target"


def test_a_fan_in_prompt_must_find_its_variables_among_the_keys() -> None:
    doc = _two_prompts_into("{a} {bb}")
    with pytest.raises(BuildError, match="uses bb, but its inputs are a, b") as caught:
        build_flow(doc, REGISTRY)
    assert (caught.value.code, caught.value.path) == ("prompt-variables", "$.nodes[3].params")


# -- the input schema a flow serves ----------------------------------------------------------------------------------
# A fan-out graph compiles to a RunnableParallel, whose own input schema turns an entry that takes anything (a
# Passthrough, a transform) into a required property named "root": served, it refused every real request.


def _ask(node_id: str, variable: str = "question") -> dict[str, Any]:
    return node(node_id, "ChatPromptTemplate", messages=[["human", "{" + variable + "}"]])


def _fake(node_id: str, answer: str) -> dict[str, Any]:
    return node(node_id, "FakeChatModel", responses=[answer])


def _fan_in(entry: dict[str, Any], left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    """``entry`` fans out to ``left`` and ``right``, each answered by a fake model and parsed, which fan in to a
    prompt answered by a fake model: the shape of the triage example."""
    nodes = [
        entry,
        left,
        _fake("left-llm", "billing"),
        node("left-text", "StrOutputParser"),
        right,
        _fake("right-llm", "a draft"),
        node("right-text", "StrOutputParser"),
        node("reply-prompt", "ChatPromptTemplate", messages=[["human", "[{left}] {right}"]]),
        _fake("writer", "[billing] a reply"),
        node("reply", "StrOutputParser"),
    ]
    edges = [
        edge(entry["id"], left["id"]),
        edge(left["id"], "left-llm"),
        edge("left-llm", "left-text"),
        edge(entry["id"], right["id"]),
        edge(right["id"], "right-llm"),
        edge("right-llm", "right-text"),
        edge("left-text", "reply-prompt", "left"),
        edge("right-text", "reply-prompt", "right"),
        edge("reply-prompt", "writer"),
        edge("writer", "reply"),
    ]
    return flow(nodes=nodes, edges=edges)


SHAPES = [
    pytest.param(
        _fan_in(node("q", "Passthrough"), _ask("left"), _ask("right")),
        [{"question": "I was charged twice"}, "I was charged twice"],
        [{"other": "x"}, {}],
        id="passthrough-fans-out-to-prompts-of-one-variable",
    ),
    pytest.param(
        _fan_in(node("q", "Passthrough"), _ask("left"), _ask("right", "topic")),
        # each prompt takes one variable: bare text fills both (a LangFlow File read by two nodes); an object must
        # name both
        [{"question": "why?", "topic": "billing"}, "why?"],
        [{"question": "why?"}],
        id="passthrough-fans-out-to-prompts-of-different-variables",
    ),
    pytest.param(
        _fan_in(node("q", "Pick", key="question"), _ask("left"), _ask("right")),
        [{"question": "why?"}],
        [],
        id="transform-entry-fans-out",
    ),
    pytest.param(
        flow(
            nodes=[
                _ask("prompt"),
                _fake("a", "one"),
                _fake("b", "two"),
                node("join", "PromptTemplate", template="{a}{b}"),
            ],
            edges=[edge("prompt", "a"), edge("prompt", "b"), edge("a", "join", "a"), edge("b", "join", "b")],
        ),
        [{"question": "why?"}],
        ["why?", {"other": "x"}],
        id="prompt-entry-fans-out",
    ),
    pytest.param(
        chain(("q", "Passthrough", {}), ("prompt", *CHAT[0][1:]), CHAT[1], CHAT[2]),
        [{"question": "hi"}, "hi"],
        [{"other": "x"}],
        id="passthrough-chain",
    ),
]


@pytest.mark.parametrize(("doc", "accepted", "refused"), SHAPES)
def test_a_flow_takes_what_its_entry_takes_and_runs_every_input_it_accepts(
    doc: dict[str, Any], accepted: list[Any], refused: list[Any]
) -> None:
    built = build_flow(FlowSpec.model_validate(doc), REGISTRY)
    assert built.input_model is not None
    schema = built.input_model.model_json_schema()
    assert "root" not in schema.get("properties", {}), schema
    for value in accepted:
        built.check_input(value)
        asyncio.run(built.runnable.ainvoke(value))  # what the check lets through runs
    for value in refused:
        with pytest.raises(BadInput):
            built.check_input(value)


def test_a_refused_input_is_told_by_the_field_it_lacks() -> None:
    built = build_flow(FlowSpec.model_validate(SHAPES[1].values[0]), REGISTRY)
    with pytest.raises(BadInput, match="topic: Field required"):
        built.check_input({"question": "why?"})


def test_an_operator_agent_is_faked_whole_and_never_built() -> None:
    built_agents: list[str] = []

    def agent(*, model: str) -> Any:
        built_agents.append(model)
        raise AssertionError("a faked agent is never built")

    registry = registry_with(Component("OurAgent", agent, "agent"))
    doc = FlowSpec.model_validate(chain(CHAT[0], ("llm", "OurAgent", {"model": "big"}), CHAT[2]))
    built = build_flow(doc, registry, fakes={"llm": ["scripted"]}, dry_run=True)
    assert built.runnable.invoke({"question": "hi"}) == "scripted"
    assert built_agents == []
