"""testing.py: expectations, sessions shared across cases, and failures reported per case."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gitops_flow.components import ComponentRegistry
from gitops_flow.spec import Expectation, FlowSpec
from gitops_flow.testing import check_expectation, run_flow_tests
from tests.helpers import edge, flow, node


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


def test_a_flow_that_raises_fails_its_case_without_stopping_the_others() -> None:
    doc = flow(
        nodes=[node("p", "PromptTemplate", template="{question}"), node("m", "FakeChatModel", responses=["ok"])],
        edges=[edge("p", "m")],
        tests=[
            {"name": "missing variable", "input": {"other": 1}, "expect": {"contains": "ok"}},
            {"name": "fine", "input": {"question": "q"}, "fakes": {"m": ["ok then"]}, "expect": {"contains": "ok"}},
        ],
    )
    results = asyncio.run(run_flow_tests(FlowSpec.model_validate(doc), ComponentRegistry.builtin()))
    assert [r.passed for r in results] == [False, True]
    assert results[0].message.startswith("model node(s) m have no fakes")


def test_a_runtime_error_is_that_cases_failure() -> None:
    doc = flow(
        nodes=[node("p", "PromptTemplate", template="{question}"), node("m", "FakeChatModel", responses=["ok"])],
        edges=[edge("p", "m")],
        tests=[{"name": "missing variable", "input": {"other": 1}, "fakes": {"m": ["x"]}, "expect": {"contains": "x"}}],
    )
    [result] = asyncio.run(run_flow_tests(FlowSpec.model_validate(doc), ComponentRegistry.builtin()))
    assert not result.passed
    assert "KeyError" in result.message and "question" in result.message
