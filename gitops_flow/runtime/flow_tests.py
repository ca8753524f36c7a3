"""Run flows' ``tests`` as the server runs requests, every model faked: `gitops-flow test`, and the server's gate."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from gitops_flow.components.knowledge import Knowledge
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.exceptions import BadInput, BuildError
from gitops_flow.flow.document import Expectation, FlowSpec, FlowTest
from gitops_flow.flow.regexes import search
from gitops_flow.problems import json_path
from gitops_flow.runtime.compiler import BuiltFlow, build_flow, runnable_config
from gitops_flow.runtime.conversations import MemoryHistoryStore
from gitops_flow.runtime.executor import run_lean
from gitops_flow.runtime.lean.identity import difference


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
    line: int | None = None  # of ``path`` in the flow's file, when the caller knows the file
    code: str = "test-failed"  # the problem code of a failure: ``test-timeout`` when it ran out of time


# every case runs four times, each on a build and a conversation of its own: invoked and streamed, on LangChain's
# runnable and on the lean program; their answers (and failures) must be the same. LangChain's invoke is the answer
PATHS = (("langchain", "invoke"), ("lean", "invoke"), ("langchain", "stream"), ("lean", "stream"))
CASE_TIMEOUT_S = 10.0  # what one case may take; a dry-build's fakes never wait, so only a stuck flow takes that long
BUDGET_S = 60.0  # what all the cases of one flow may take together (Settings.test_budget)
TIMEOUT = "test-timeout"  # the problem code of a case that ran out of time


async def run_flow_tests(
    spec: FlowSpec,
    registry: ComponentRegistry,
    *,
    timeout: float = CASE_TIMEOUT_S,
    budget: float = BUDGET_S,
    knowledge: Knowledge | None = None,
) -> list[CaseResult]:
    """Run every case of ``spec`` in order as the server runs a request: the input is checked against the input
    schema the flow serves, then the flow runs with the config a request's run gets. Cases naming the same
    ``session`` share one conversation.

    No real model is ever called: a case that leaves a node that would call one without ``fakes`` fails unrun.
    The cost is bounded: fakes never wait (a dry-build), a case fails after ``timeout`` seconds, and once ``budget``
    seconds are spent the remaining cases fail unrun. Never raises for what a flow does.

    Each case runs on both of the server's paths, invoked and streamed (PATHS); a case whose answers differ fails,
    naming where. ``knowledge`` is the repository's files at the revision tested (a Retriever's documents).
    """
    histories = {path: MemoryHistoryStore() for path in PATHS}
    models = [n.id for n in spec.nodes if registry.calls_a_model(n.component)]
    deadline = time.monotonic() + budget
    results = []
    for index, case in enumerate(spec.tests):
        left = deadline - time.monotonic()
        if left <= 0:
            message = f"not run: the flow's tests took their budget of {budget:g} s"
            where = json_path(["tests", index])
            results.append(CaseResult(spec.name, case.name, False, message, path=where, code=TIMEOUT))
            continue
        results.append(await _run_case(spec, index, case, registry, models, histories, min(timeout, left), knowledge))
    return results


async def _run_case(
    spec: FlowSpec,
    index: int,
    case: FlowTest,
    registry: ComponentRegistry,
    models: list[str],
    histories: dict[tuple[str, str], MemoryHistoryStore],
    timeout: float,
    knowledge: Knowledge | None = None,
) -> CaseResult:
    path = json_path(["tests", index])
    unfaked = [m for m in models if m not in case.fakes]
    if unfaked:
        return CaseResult(
            spec.name,
            case.name,
            False,
            f"model node(s) {', '.join(unfaked)} have no fakes; tests never call a real model"
            if not any(registry.kind_of(_component(spec, m)) == "tool" for m in unfaked)
            else f"model or tool node(s) {', '.join(unfaked)} have no fakes; tests never call a real model nor "
            "reach a site",
            path=path,
        )
    started = time.perf_counter()
    deadline = time.monotonic() + timeout  # the case's time bounds its builds too (checked between nodes)
    builds: dict[tuple[str, str], BuiltFlow] = {}
    for which in PATHS:
        try:
            builds[which] = build_flow(
                spec,
                registry,
                fakes=case.fakes,
                history=histories[which],
                dry_run=True,
                deadline=deadline,
                knowledge=knowledge,
            )
        except BuildError as exc:
            return CaseResult(spec.name, case.name, False, f"the flow does not build: {exc}", path=exc.path)
    try:
        builds[PATHS[0]].check_input(case.input)
    except BadInput as exc:
        message = f"the server would refuse this input (422 bad-input): {exc}"
        return CaseResult(spec.name, case.name, False, message, path=json_path(["tests", index, "input"]))
    session = case.session or f"test:{case.name}"
    config = runnable_config({"configurable": {"session_id": session}}, spec.name, uuid.uuid4(), {"test": case.name})
    try:
        answers = await asyncio.wait_for(_answers(builds, case.input, config), max(deadline - time.monotonic(), 0))
    except TimeoutError:
        message = f"the flow did not answer within {timeout:g} s"
        return CaseResult(spec.name, case.name, False, message, path=path, code=TIMEOUT)
    elapsed = (time.perf_counter() - started) * 1000
    expected = answers[PATHS[0]]
    for call in ("invoke", "stream"):
        differs = difference(answers[("langchain", call)], answers[("lean", call)])
        if differs is not None:
            message = f"the lean path's {call} answers differently from LangChain's at {differs}"
            return CaseResult(spec.name, case.name, False, message, expected.get("output"), elapsed, path)
    if "raised" in expected:
        return CaseResult(spec.name, case.name, False, f"the flow raised {expected['raised']}", path=path)
    output = expected["output"]
    failure = check_expectation(case.expect, output)
    return CaseResult(spec.name, case.name, failure is None, failure or "", output, elapsed, path)


async def _answers(builds: dict[tuple[str, str], BuiltFlow], value: Any, config: Any) -> dict[tuple[str, str], Any]:
    """What each path answers: ``{"output": …}`` for an invoke, ``{"chunks": […]}`` for a stream, or
    ``{"raised": "Type: message"}``."""
    found: dict[tuple[str, str], Any] = {}
    for (runtime, call), built in builds.items():
        runner = run_lean(built, runtime == "lean")
        try:
            if call == "invoke":
                found[(runtime, call)] = {"output": await runner.ainvoke(value, config)}
            else:
                found[(runtime, call)] = {"chunks": [chunk async for chunk in runner.astream(value, config)]}
        except Exception as exc:  # noqa: BLE001 - any failure of the flow under test is that test's result
            found[(runtime, call)] = {"raised": f"{type(exc).__name__}: {exc}"}
    return found


def check_expectation(expect: Expectation, output: Any) -> str | None:
    """None when ``output`` meets every check given in ``expect``; otherwise what it missed."""
    text = output if isinstance(output, str) else orjson.dumps(output, default=str).decode()
    given = expect.model_fields_set
    if "equals" in given and output != expect.equals:
        return f"expected the output to equal {_show(expect.equals)}; got {_show(output)}"
    if expect.contains is not None and expect.contains not in text:
        return f"expected the output to contain {expect.contains!r}; got {_show(output)}"
    if expect.matches is not None and not search(expect.matches, text):
        return f"expected the output to match /{expect.matches}/; got {_show(output)}"
    return None


def _show(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _component(spec: FlowSpec, node_id: str) -> str:
    return next(n.component for n in spec.nodes if n.id == node_id)
