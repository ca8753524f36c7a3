"""flow_tests.py: cases run as requests do (the served input check, the run config), never call a real model, are
bounded in time, and fail one by one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.runnables import RunnableConfig, RunnableLambda

from gitops_flow.components.base import Component
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.flow.document import Expectation, FlowSpec
from gitops_flow.runtime.flow_tests import CaseResult, check_expectation, run_flow_tests
from tests.helpers import Calls, edge, flow, node, registry_with

REGISTRY = ComponentRegistry.builtin()
LLM = ("ChatModel", {"model": "openai:gpt-4o-mini", "api_key": {"$env": "OPENAI_API_KEY"}})


@pytest.mark.parametrize(
    ("expect", "output", "ok"),
    [
        ({"equals": "Hi"}, "Hi", True),
        ({"equals": "Hi"}, "Hi!", False),
        ({"equals": {"a": [1]}}, {"a": [1]}, True),
        ({"equals": None}, None, True),
        ({"equals": None}, "x", False),
        ({"contains": "ell"}, "Hello", True),
        ({"contains": '"a": 1'}, {"a": 1}, False),
        ({"contains": '"a":1'}, {"a": 1}, True),
        ({"matches": "^H.*o$"}, "Hello", True),
        ({"matches": "^x"}, "Hello", False),
        ({"contains": "He", "matches": "z"}, "Hello", False),
    ],
)
def test_expectations(expect: dict[str, Any], output: Any, ok: bool) -> None:
    assert (check_expectation(Expectation.model_validate(expect), output) is None) is ok


def test_an_empty_expectation_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Expectation.model_validate({})


def _run(doc: dict[str, Any], registry: ComponentRegistry = REGISTRY, **kwargs: Any) -> list[CaseResult]:
    return asyncio.run(run_flow_tests(FlowSpec.model_validate(doc), registry, **kwargs))


def _asks(*cases: dict[str, Any], model: tuple[str, dict[str, Any]] = ("FakeChatModel", {"responses": ["ok"]})) -> Any:
    """A prompt of ``{question}`` into model node ``m`` and a parser, with ``cases`` as its tests."""
    component, params = model
    return flow(
        nodes=[
            node("p", "PromptTemplate", template="{question}"),
            node("m", component, **params),
            node("a", "StrOutputParser"),
        ],
        edges=[edge("p", "m"), edge("m", "a")],
        tests=list(cases),
    )


def test_a_case_whose_input_the_server_would_refuse_fails_naming_the_field_and_others_still_run() -> None:
    results = _run(
        _asks(
            {"name": "wrong field", "input": {"other": 1}, "fakes": {"m": ["x"]}, "expect": {"contains": "x"}},
            {"name": "fine", "input": {"question": "q"}, "fakes": {"m": ["ok then"]}, "expect": {"contains": "ok"}},
        )
    )
    assert [(r.case, r.passed) for r in results] == [("wrong field", False), ("fine", True)]
    assert results[0].message.startswith("the server would refuse this input (422 bad-input)")
    assert "question: Field required" in results[0].message
    assert results[0].path == "$.tests[0].input"


def test_a_node_that_would_call_a_real_model_must_be_faked_and_a_fake_model_need_not_be() -> None:
    real = _run(_asks({"name": "unfaked", "input": {"question": "q"}, "expect": {"contains": "x"}}, model=LLM))
    own = _run(_asks({"name": "own answer", "input": {"question": "q"}, "expect": {"equals": "ok"}}))
    assert not real[0].passed
    assert real[0].message.startswith("model node(s) m have no fakes")
    assert own[0].passed, own[0].message


def test_an_operator_model_or_agent_is_never_called_unfaked_and_answers_its_fakes_when_faked() -> None:
    calls = Calls()
    registry = registry_with(
        Component("OurModel", calls.component("OurModel", str).target, "model"),
        Component("OurAgent", calls.component("OurAgent", str).target, "agent"),
    )
    for component in ("OurModel", "OurAgent"):
        doc = _asks(
            {"name": "unfaked", "input": {"question": "q"}, "expect": {"contains": "q"}},
            {
                "name": "faked",
                "input": {"question": "q"},
                "fakes": {"m": ["scripted"]},
                "expect": {"equals": "scripted"},
            },
            model=(component, {}),
        )
        results = _run(doc, registry)
        assert [r.passed for r in results] == [False, True], results
    assert calls.seen == []


def test_a_case_runs_with_the_config_a_request_gets() -> None:
    seen: list[Any] = []

    def spy() -> Any:
        def run(value: Any, config: RunnableConfig) -> Any:
            seen.append(config)
            return value

        return RunnableLambda(run)

    registry = registry_with(Component("Spy", spy))
    doc = flow(
        nodes=[node("spy", "Spy"), node("p", "PromptTemplate", template="{question}")],
        edges=[edge("spy", "p")],
        tests=[{"name": "sees", "session": "s1", "input": {"question": "q"}, "expect": {"contains": "q"}}],
    )
    [result] = _run(doc, registry)
    assert result.passed, result.message
    assert len(seen) == 4  # invoked and streamed, on LangChain's runnable and on the lean program (testing.PATHS)
    for config in seen:  # the lean program hands a node it has no lean form for the run's config, as LangChain does
        assert config["configurable"]["session_id"] == "s1"
        assert config["metadata"]["test"] == "sees"


def test_a_fake_models_latency_is_not_waited_for_in_tests() -> None:
    slow = ("FakeChatModel", {"responses": ["ok"], "latency_ms": 60_000, "token_latency_ms": 1_000})
    [result] = _run(
        _asks({"name": "slow", "input": {"question": "q"}, "expect": {"equals": "ok"}}, model=slow), timeout=5
    )
    assert result.passed, result.message


def _stuck() -> Any:
    async def wait(value: Any) -> Any:
        await asyncio.sleep(3600)

    return RunnableLambda(wait)


def test_a_stuck_case_fails_at_its_timeout_and_the_budget_stops_the_rest() -> None:
    doc = flow(
        nodes=[node("stuck", "Stuck")],
        tests=[{"name": f"case {n}", "input": "x", "expect": {"contains": "x"}} for n in range(3)],
    )
    registry = registry_with(Component("Stuck", _stuck))
    results = _run(doc, registry, timeout=0.2, budget=0.3)
    assert not any(r.passed for r in results)
    assert results[0].message == "the flow did not answer within 0.2 s"
    assert results[-1].message == "not run: the flow's tests took their budget of 0.3 s"


def test_a_runtime_error_is_that_cases_failure() -> None:
    doc = flow(
        nodes=[node("p", "PromptTemplate", template="{question}"), node("t", "Pick", key="missing")],
        edges=[edge("p", "t")],
        tests=[{"name": "no such key", "input": {"question": "q"}, "expect": {"contains": "x"}}],
    )
    [result] = _run(doc)
    assert not result.passed
    assert "ValueError" in result.message and "missing" in result.message


def test_a_case_whose_paths_answer_differently_fails_naming_the_call_and_where() -> None:
    """Every case runs on the lean executor and on LangChain's runnables: a component that answers differently on
    each (here one that says which path called it) fails the case, naming the call and where the answers part."""
    witness = Component("Witness", "tests.operator_components:witness", "transform")  # not a model: tests run it
    doc = flow(
        nodes=[node("p", "PromptTemplate", template="{question}"), node("w", "Witness"), node("a", "StrOutputParser")],
        edges=[edge("p", "w"), edge("w", "a")],
        tests=[{"name": "which", "input": {"question": "q"}, "expect": {"contains": "path"}}],
    )
    [result] = _run(doc, registry_with(witness))
    assert not result.passed
    assert result.message == (
        "the lean path's invoke answers differently from LangChain's at "
        "$.output: 'answered on the langchain path' against 'answered on the lean path'"
    )
    assert result.path == "$.tests[0]"
