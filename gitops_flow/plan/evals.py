"""Evaluation before the merge: each dataset a flow lists in ``evals`` (as the working tree holds it), run on the
flow at the head (the working tree) and on the same flow at a base revision, scored, compared, and held to the
routing file's ``evals`` threshold. `gitops-flow eval` prints it; `plan` and its pull-request comment summarise it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.delivery.source import read_at
from gitops_flow.flow.datasets import EvalCase
from gitops_flow.flow.routing import EvalRules
from gitops_flow.problems import Problem
from gitops_flow.runtime.evaluation import NO_JUDGE, DatasetRun, run_dataset
from gitops_flow.runtime.judge import Judge
from gitops_flow.runtime.sandbox import TestSandbox
from gitops_flow.security.policy import SecretPolicy
from gitops_flow.validation.datasets import load_evals
from gitops_flow.validation.documents import MAX_EXPORT_BYTES, validate_bytes

MAX_CHANGED = 20  # changed cases listed per dataset; the rest are counted
MAX_FAILED = 5  # failed cases named per dataset
MAX_SHOWN = 200  # characters of an input or an answer shown


@dataclass(frozen=True, slots=True)
class ScorerResult:
    """One scorer on one dataset: the mean score at the head and at the base (None: not scored there), or why it
    was skipped."""

    scorer: str
    head: float | None
    base: float | None
    skipped: str | None = None

    @property
    def delta(self) -> float | None:
        return None if self.head is None or self.base is None else self.head - self.base

    def as_dict(self) -> dict[str, Any]:
        return {
            "scorer": self.scorer,
            "head": self.head,
            "base": self.base,
            "delta": self.delta,
            "skipped": self.skipped,
        }


@dataclass(frozen=True, slots=True)
class ChangedCase:
    """A case some scorer scores differently at the head than at the base."""

    label: str
    line: int
    input: str
    base_output: str
    head_output: str
    scores: dict[str, tuple[float | None, float | None]]  # scorer -> (base, head)

    def as_dict(self) -> dict[str, Any]:
        return {
            "case": self.label,
            "line": self.line,
            "input": self.input,
            "base_output": self.base_output,
            "head_output": self.head_output,
            "scores": {s: {"base": b, "head": h} for s, (b, h) in self.scores.items()},
        }


@dataclass(frozen=True, slots=True)
class DatasetResult:
    dataset: str
    cases: int
    scorers: tuple[ScorerResult, ...]
    changed: tuple[ChangedCase, ...] = ()
    more_changed: int = 0
    failed: tuple[str, ...] = ()  # the first cases the head's flow failed on, and why (they score 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "cases": self.cases,
            "failed": list(self.failed),
            "scorers": [s.as_dict() for s in self.scorers],
            "changed": [c.as_dict() for c in self.changed],
            "more_changed": self.more_changed,
        }


@dataclass(frozen=True, slots=True)
class FlowEval:
    """A flow's evaluation; ``base_note`` says why there is no base to compare with (a new flow, say)."""

    flow: str
    file: str
    datasets: tuple[DatasetResult, ...] = ()
    problems: tuple[Problem, ...] = ()
    base_note: str | None = None
    failures: tuple[str, ...] = ()  # the threshold's breaches

    def as_dict(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "file": self.file,
            "base_note": self.base_note,
            "datasets": [d.as_dict() for d in self.datasets],
            "problems": [p.as_dict() for p in self.problems],
            "failures": list(self.failures),
        }


@dataclass(frozen=True, slots=True)
class EvalReport:
    base: str | None
    flows: tuple[FlowEval, ...] = field(default_factory=tuple)

    @property
    def failed(self) -> bool:
        """A threshold is breached, or a dataset or the head's flow has an error."""
        return any(f.failures or any(p.severity == "error" for p in f.problems) for f in self.flows)

    def as_dict(self) -> dict[str, Any]:
        return {"base": self.base, "failed": self.failed, "flows": [f.as_dict() for f in self.flows]}


def evaluate(
    files: Sequence[Path],
    base: str | None,
    registry: ComponentRegistry,
    sandbox: TestSandbox,
    *,
    rules: EvalRules | None = None,
    policy: SecretPolicy | None = None,
    names: Sequence[str] | None = None,
    judge: Judge | None = None,
    no_judge: str = NO_JUDGE,
) -> EvalReport:
    """Evaluate each flow file of the working tree that lists ``evals`` (``names``: only those flows). The datasets
    are the head's; the flow at ``base`` (when given) answers them too.

    Raises SourceError when ``base`` is given and the files are in no Git working tree, UnknownVersion when it names
    no commit. ``judge`` scores the ``judge:`` scorers (each case at the head and at the base); without one they are
    skipped, ``no_judge`` saying why.
    """
    before = read_at(list(files), base, max_bytes=MAX_EXPORT_BYTES) if base is not None and files else {}
    flows = []
    for path in files:
        raw = path.read_bytes()
        report = validate_bytes(raw, registry, file=str(path), stem=path.stem, policy=policy)
        spec = report.spec
        if spec is None or not spec.evals or (names is not None and spec.name not in names):
            continue
        if not report.ok:
            flows.append(FlowEval(spec.name, str(path), problems=tuple(report.problems)))
            continue
        text = raw.decode("utf-8-sig")
        loaded = load_evals(spec, path, shown=str(path), text=text)
        old_spec, note = None, "no base given" if base is None else None
        if base is not None:
            old = before.get(path)
            if old is None:
                note = f"the flow is new since {base}"
            else:
                old_report = validate_bytes(old, registry, file=str(path), stem=path.stem, policy=policy)
                old_spec = old_report.spec if old_report.ok else None
                note = None if old_spec is not None else f"the flow at {base} does not validate"
        problems = [p for d in loaded for p in d.problems]
        datasets = []
        for dataset in loaded:
            if not dataset.ok:
                continue
            options: dict[str, Any] = {"judge": judge, "rubrics": dataset.rubrics, "no_judge": no_judge}
            head = run_dataset(spec, dataset.cases, dataset.scorers, registry, sandbox, **options)
            then = (
                run_dataset(old_spec, dataset.cases, dataset.scorers, registry, sandbox, **options)
                if old_spec
                else None
            )
            datasets.append(_compare(dataset.dataset, dataset.scorers, dataset.cases, head, then))
        threshold = (rules or EvalRules()).for_flow(spec.name)
        failures = tuple(_breaches(datasets, threshold.min_delta, threshold.min_score))
        flows.append(FlowEval(spec.name, str(path), tuple(datasets), tuple(problems), note, failures))
    return EvalReport(base, tuple(flows))


def _compare(
    name: str, scorers: tuple[str, ...], cases: tuple[EvalCase, ...], head: DatasetRun, base: DatasetRun | None
) -> DatasetResult:
    results = tuple(
        ScorerResult(s, head.mean(s), base.mean(s) if base is not None else None, head.skipped.get(s)) for s in scorers
    )
    changed: list[ChangedCase] = []
    if base is not None:
        for now, then in zip(head.runs, base.runs, strict=True):
            moved = {
                s: (then.scores.get(s), now.scores.get(s))
                for s in scorers
                if s not in head.skipped and then.scores.get(s) != now.scores.get(s)
            }
            if moved:
                changed.append(
                    ChangedCase(
                        now.case.label,
                        now.case.line,
                        _short(now.case.input),
                        _answer(then.output, then.error),
                        _answer(now.output, now.error),
                        moved,
                    )
                )
    failed = tuple(f"{r.case.label}: {_short(r.error)}" for r in head.runs if r.error is not None)[:MAX_FAILED]
    more = max(len(changed) - MAX_CHANGED, 0)
    return DatasetResult(name, len(cases), results, tuple(changed[:MAX_CHANGED]), more, failed)


def _breaches(datasets: Sequence[DatasetResult], min_delta: float | None, min_score: float | None) -> list[str]:
    found = []
    for dataset in datasets:
        for result in dataset.scorers:
            delta = result.delta
            if min_delta is not None and delta is not None and delta < min_delta - 1e-9:
                found.append(
                    f"{dataset.dataset} {result.scorer}: the score fell by {-delta:.3f}, more than {-min_delta:g}"
                )
            if min_score is not None and result.head is not None and result.head < min_score - 1e-9:
                found.append(f"{dataset.dataset} {result.scorer}: the score {result.head:.3f} is below {min_score:g}")
    return found


def _answer(output: Any, error: str | None) -> str:
    return f"(failed: {_short(error)})" if error is not None else _short(output)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"
