"""Run the ``tests`` of flow documents with every model node answered by a fake: `gitops-flow test`."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import orjson
from langchain_core.runnables import RunnableConfig

from gitops_flow.build import build_flow
from gitops_flow.components import FAKEABLE, ComponentRegistry
from gitops_flow.exceptions import BuildError
from gitops_flow.history import MemoryHistoryStore
from gitops_flow.problems import json_path
from gitops_flow.spec import Expectation, FlowSpec, FlowTest


@dataclass(frozen=True, slots=True)
class CaseResult:
    """The outcome of one test case; ``message`` says what went wrong when it failed."""

    flow: str
    case: str
    passed: bool
    message: str = ""
    output: Any = None
    duration_ms: float = 0.0
    path: str = "$.tests"


async def run_flow_tests(spec: FlowSpec, registry: ComponentRegistry) -> list[CaseResult]:
    """Run every case of ``spec`` in order; cases naming the same ``session`` share one conversation."""
    history = MemoryHistoryStore()
    models = [n.id for n in spec.nodes if registry.kind_of(n.component) in FAKEABLE]
    return [await _run_case(spec, index, case, registry, models, history) for index, case in enumerate(spec.tests)]


async def _run_case(
    spec: FlowSpec,
    index: int,
    case: FlowTest,
    registry: ComponentRegistry,
    models: list[str],
    history: MemoryHistoryStore,
) -> CaseResult:
    path = json_path(["tests", index])
    unfaked = [m for m in models if m not in case.fakes]
    if unfaked:
        return CaseResult(
            spec.name,
            case.name,
            False,
            f"model node(s) {', '.join(unfaked)} have no fakes; tests never call a real model",
            path=path,
        )
    started = time.perf_counter()
    try:
        built = build_flow(spec, registry, fakes=case.fakes, history=history, dry_run=True)
        config: RunnableConfig = {
            "configurable": {"session_id": case.session or f"test:{case.name}"},
            "run_name": case.name,
        }
        output = await built.runnable.ainvoke(case.input, config)
    except BuildError as exc:
        return CaseResult(spec.name, case.name, False, f"the flow does not build: {exc}", path=exc.path)
    except Exception as exc:  # noqa: BLE001 - any failure of the flow under test is that test's result
        return CaseResult(spec.name, case.name, False, f"the flow raised {type(exc).__name__}: {exc}", path=path)
    elapsed = (time.perf_counter() - started) * 1000
    failure = check_expectation(case.expect, output)
    return CaseResult(spec.name, case.name, failure is None, failure or "", output, elapsed, path)


def check_expectation(expect: Expectation, output: Any) -> str | None:
    """None when ``output`` meets every check given in ``expect``; otherwise what it missed."""
    text = output if isinstance(output, str) else orjson.dumps(output, default=str).decode()
    given = expect.model_fields_set
    if "equals" in given and output != expect.equals:
        return f"expected the output to equal {_show(expect.equals)}; got {_show(output)}"
    if expect.contains is not None and expect.contains not in text:
        return f"expected the output to contain {expect.contains!r}; got {_show(output)}"
    if expect.matches is not None and re.search(expect.matches, text) is None:
        return f"expected the output to match /{expect.matches}/; got {_show(output)}"
    return None


def _show(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
