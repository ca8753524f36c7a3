"""Evaluation datasets: JSON Lines files of cases (an ``input`` and what a good answer is) that `gitops-flow eval`
runs a flow on; parsed from bytes, bounded, every problem naming its line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gitops_flow.problems import Problem

MAX_DATASET_BYTES = 1024 * 1024  # a dataset is committed text, read whole
MAX_CASES = 500  # cases of one dataset; each runs the flow twice (head and base) in the test sandbox
CASE_KEYS = frozenset({"input", "expected", "schema", "rubric", "name"})


@dataclass(frozen=True, slots=True)
class EvalCase:
    """One line of a dataset. ``has_expected`` tells an ``expected`` of null from none given."""

    line: int
    input: Any
    expected: Any = None
    has_expected: bool = False
    schema: dict[str, Any] | None = None
    rubric: str | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or f"line {self.line}"


def parse_dataset(raw: bytes, *, file: str) -> tuple[list[EvalCase], list[Problem]]:
    """The cases of a dataset and the problems of its lines (each naming ``file`` and the line). Blank lines are
    skipped. A dataset over MAX_DATASET_BYTES or MAX_CASES is one problem and no case."""
    if len(raw) > MAX_DATASET_BYTES:
        message = f"the dataset is {len(raw):,} bytes; datasets are at most {MAX_DATASET_BYTES:,}"
        return [], [Problem(code="dataset-too-large", message=message, file=file)]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [], [Problem(code="not-utf8", message=f"the dataset is not UTF-8 text (byte {exc.start})", file=file)]
    lines = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if len(lines) > MAX_CASES:
        message = f"the dataset has {len(lines):,} cases; a dataset has at most {MAX_CASES:,}"
        return [], [Problem(code="dataset-too-many-lines", message=message, file=file)]
    cases: list[EvalCase] = []
    problems: list[Problem] = []
    for number, line in lines:
        case, problem = _case(number, line)
        if problem is not None:
            problems.append(Problem(code=problem[0], message=problem[1], file=file, line=number))
        elif case is not None:
            cases.append(case)
    if not lines:
        problems.append(Problem(code="dataset-empty", message="the dataset has no case", file=file))
    return cases, problems


def _case(number: int, line: str) -> tuple[EvalCase | None, tuple[str, str] | None]:
    try:
        data = json.loads(line, parse_constant=_no_constant)
    except (json.JSONDecodeError, ValueError, RecursionError) as exc:
        return None, ("invalid-json", f"this line is not a JSON value: {exc}")
    if not isinstance(data, dict):
        return None, ("dataset-bad-case", "each line is a JSON object with an 'input'")
    unknown = sorted(set(data) - CASE_KEYS)
    if unknown:
        return None, ("unknown-key", f"unknown key {unknown[0]!r}; a case has {', '.join(sorted(CASE_KEYS))}")
    if "input" not in data:
        return None, ("missing-key", "'input' is required: what the flow is asked")
    if not ({"expected", "schema", "rubric"} & set(data)):
        return None, ("dataset-bad-case", "a case needs an 'expected', a 'schema' or a 'rubric' to be scored by")
    schema, rubric, name = data.get("schema"), data.get("rubric"), data.get("name")
    if schema is not None and not isinstance(schema, dict):
        return None, ("wrong-type", "'schema' is a JSON Schema: an object")
    if rubric is not None and not isinstance(rubric, str):
        return None, ("wrong-type", "'rubric' is text")
    if name is not None and not isinstance(name, str):
        return None, ("wrong-type", "'name' is text")
    case = EvalCase(number, data["input"], data.get("expected"), "expected" in data, schema, rubric, name)
    return case, None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")
