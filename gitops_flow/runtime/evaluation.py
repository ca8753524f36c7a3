"""One evaluation run: a flow answers every case of a dataset in the test sandbox, every model faked, and each
answer is scored by each scorer (scorers.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gitops_flow.components.fake_answers import fake_answers
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.flow.datasets import EvalCase
from gitops_flow.flow.document import Expectation, FlowSpec, FlowTest
from gitops_flow.runtime.judge import Judge
from gitops_flow.runtime.sandbox import TestSandbox
from gitops_flow.runtime.scorers import SCORERS, score

NO_JUDGE = "a judge needs a model (GITOPS_FLOW_EVAL_JUDGE_MODEL); eval answers with fakes, and a fake cannot judge"


@dataclass(frozen=True, slots=True)
class CaseRun:
    """What the flow answered to one case (``error`` when it failed: every scorer gives it 0), and its scores."""

    case: EvalCase
    output: Any
    error: str | None
    scores: dict[str, float | None]


@dataclass(frozen=True, slots=True)
class DatasetRun:
    """A flow's answers to one dataset; ``skipped`` says, per scorer that did not run, why."""

    runs: tuple[CaseRun, ...]
    skipped: dict[str, str]

    def mean(self, scorer: str) -> float | None:
        """The mean of the scores ``scorer`` gave (cases it did not score left out); None when it scored none."""
        found = [r.scores[scorer] for r in self.runs if r.scores.get(scorer) is not None]
        return sum(s for s in found if s is not None) / len(found) if found else None


def run_dataset(
    spec: FlowSpec,
    cases: tuple[EvalCase, ...],
    scorers: tuple[str, ...],
    registry: ComponentRegistry,
    sandbox: TestSandbox,
    *,
    judge: Judge | None = None,
    rubrics: Mapping[str, str] | None = None,
    no_judge: str = NO_JUDGE,
) -> DatasetRun:
    """Run ``spec`` on every case as `gitops-flow test` runs a test (the sandbox: a child process with a time and
    a memory limit), every model node answering what ``fake_answers`` gives it; then score. Blocking. Never raises
    for what the flow does: a case the flow fails on scores 0."""
    fakes = fake_answers(spec, registry)
    tests = [
        FlowTest(name=f"eval {case.label} #{index}", input=case.input, fakes=fakes, expect=Expectation(contains=""))
        for index, case in enumerate(cases)
    ]
    results = sandbox.run(spec.model_copy(update={"tests": tests})) if tests else []
    by_name = {r.case: r for r in results}
    whole = next((r for r in results if r.case == "(all)"), None)  # the sandbox stopped them all
    judged = [s for s in scorers if s not in SCORERS and judge is not None]
    skipped = {s: no_judge for s in scorers if s not in SCORERS and s not in judged}
    runs = []
    for test, case in zip(tests, cases, strict=True):
        result = by_name.get(test.name, whole)
        if result is None or not result.passed:
            error = result.message if result is not None else "not run"
            failed = {s: 0.0 if score(s, case, None) is not None else None for s in scorers if s in SCORERS}
            runs.append(CaseRun(case, None, error, failed))
            continue
        scores = {s: score(s, case, result.output) for s in scorers if s in SCORERS}
        for scorer in judged:
            assert judge is not None
            rubric = "\n".join(part for part in ((rubrics or {}).get(scorer, ""), case.rubric or "") if part)
            scores[scorer] = judge.score(rubric, case.input, result.output)
        runs.append(CaseRun(case, result.output, None, scores))
    return DatasetRun(tuple(runs), skipped)
