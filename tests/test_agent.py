"""calculator.py, agent.py and the Agent, Text and Pick components: safe arithmetic, the tool loop, text of values."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate

from gitops_flow.components.agent import fake_tool_model, make_tools
from gitops_flow.components.base import BuildContext
from gitops_flow.components.calculator import CalculationError, evaluate, format_number
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.validation.documents import validate_bytes
from tests.helpers import chain


def call(name: str, **args: Any) -> str:
    return json.dumps({"tool_calls": [{"name": name, "args": args}]})


@pytest.mark.parametrize(
    "expression, shown",
    [
        ("2+3*4", "14"),
        ("(2 + 3) * 4", "20"),
        ("-3 // 2", "-2"),
        ("7 % 3", "1"),
        ("2 ** 10", "1024"),
        ("1 / 3", "0.3333333333"),
        ("10 / 4", "2.5"),
        ("-(-2.5)", "2.5"),
        ("+4", "4"),
        ("(2000+1000+3000) * 1.3 / 200", "39"),
    ],
)
def test_arithmetic(expression: str, shown: str) -> None:
    assert format_number(evaluate(expression)) == shown


@pytest.mark.parametrize(
    "expression, reason",
    [
        ("__import__('os').system('true')", "a function call"),
        ("x + 1", "the name 'x'"),
        ("(1).real", "Attribute"),
        ("[1][0]", "Subscript"),
        ("'a' * 3", "the value 'a'"),
        ("True + 1", "the value True"),
        ("lambda: 1", "Lambda"),
        ("1 < 2", "Compare"),
        ("2 ** 1001", "exponents are at most 1000"),
        ("99999999 ** 999", "too large"),
        ("10.0 ** 400", "too large"),
        ("1 / 0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("(-8) ** 0.5", "not a real number"),
        ("1 +", "not an arithmetic expression"),
        ("", "empty"),
        ("1+" * 300 + "1", "longer than 500"),
        ("1+" * 150 + "1", "more than 200 parts"),
    ],
)
def test_anything_but_bounded_arithmetic_is_refused(expression: str, reason: str) -> None:
    with pytest.raises(CalculationError) as raised:
        evaluate(expression)
    assert reason in str(raised.value)


def test_the_calculator_tool_answers_errors_as_text_for_the_model() -> None:
    [tool] = make_tools(["calculator"])

    assert tool.invoke({"expression": "6*7"}) == "42"
    assert tool.invoke({"expression": "open('/etc/passwd')"}).startswith("Error: only numbers")


def agent(responses: list[str], **params: Any) -> Any:
    registry = ComponentRegistry.builtin()
    factory = registry.factory(registry.get("Agent"))
    return factory(BuildContext(fake_responses=responses), model="openai:gpt-4o-mini", **params)


def test_the_agent_runs_tool_calls_until_the_model_answers() -> None:
    runnable = agent([call("calculator", expression="2+3*4"), call("current_date"), "done"], tools=["calculator"])

    answer = runnable.invoke("what is 2+3*4?")

    assert isinstance(answer, AIMessage) and answer.content == "done"


def test_an_unknown_tool_is_reported_to_the_model_and_the_loop_is_bounded() -> None:
    runnable = agent([call("shell", command="rm -rf /")], tools=["calculator"], max_iterations=3)
    seen: list[Any] = []
    runnable.tools["calculator"].callbacks = None
    original = runnable._call
    runnable._call = lambda c, config: seen.append(original(c, config)) or seen[-1]  # type: ignore[method-assign]

    answer = asyncio.run(runnable.ainvoke([HumanMessage("clean up")]))

    assert seen == ["Error: there is no tool 'shell'; the tools are calculator"] * 3
    assert answer.content == "I stopped after 3 tool calls without reaching an answer."


def test_the_agent_takes_prompts_and_adds_its_system_prompt() -> None:
    runnable = agent(["ok"], system_prompt="Be brief.")
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")]).invoke({"q": "hi"})

    messages = runnable._messages(prompt)

    assert [(m.type, m.text) for m in messages] == [("system", "Be brief."), ("human", "hi")]
    with pytest.raises(ValueError, match="an agent takes text, messages or a prompt"):
        runnable._messages({"q": "hi"})


def test_agent_tools_are_a_closed_list() -> None:
    doc = chain(("agent", "Agent", {"model": "openai:gpt-4o-mini", "tools": ["calculator", "shell"]}))

    report = validate_bytes(json.dumps(doc).encode(), ComponentRegistry.builtin(), file="demo.json", stem="demo")

    problem = next(p for p in report.problems if p.severity == "error")
    assert (problem.code, problem.path) == ("bad-param", "$.nodes[0].params.tools[1]")


def test_fake_tool_model_turns_json_tool_calls_into_tool_call_messages() -> None:
    model = fake_tool_model([call("calculator", expression="1+1"), '{"tool_calls": "no"}', "plain"])

    first, second, third = (model.invoke("x") for _ in range(3))

    assert first.tool_calls[0]["name"] == "calculator" and first.tool_calls[0]["args"] == {"expression": "1+1"}
    assert second.content == '{"tool_calls": "no"}' and not second.tool_calls
    assert third.content == "plain"


def build(component: str, **params: Any) -> Any:
    registry = ComponentRegistry.builtin()
    return registry.factory(registry.get(component))(BuildContext(), **params)


def test_text_of_messages_prompts_objects() -> None:
    history = [HumanMessage("hi"), AIMessage("hello")]

    assert build("Text").invoke("plain") == "plain"
    assert build("Text").invoke(AIMessage("answer")) == "answer"
    assert build("Text").invoke(PromptTemplate.from_template("Q: {q}").invoke({"q": "x"})) == "Q: x"
    assert build("Text").invoke(history) == "hi\nhello"
    assert build("Text", key="history", template="{sender_name}: {text}").invoke({"history": history}) == (
        "User: hi\nAI: hello"
    )
    assert build("Text", template="{title} ({year}) {missing} {title.__class__}").invoke(
        {"title": "Dune", "year": 1965}
    ) == ("Dune (1965) {missing} {title.__class__}")  # plain substitution: nothing reaches into objects
    with pytest.raises(ValueError, match="'history'"):
        build("Text", key="history").invoke("no object")


def test_pick() -> None:
    assert build("Pick", key="a").invoke({"a": [1], "b": 2}) == [1]
    with pytest.raises(ValueError, match="'a'"):
        build("Pick", key="a").invoke({"b": 2})
