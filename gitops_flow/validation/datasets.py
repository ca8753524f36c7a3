"""Checks of a flow's ``evals``: each dataset (and judge rubric) is a file of the repository, inside it, bounded, and
each of its lines a case -> problems naming the flow's file and line, or the dataset's file and line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gitops_flow.flow.datasets import MAX_DATASET_BYTES, EvalCase, parse_dataset
from gitops_flow.flow.document import FlowSpec
from gitops_flow.flow.locations import LineIndex
from gitops_flow.flow.routing import ROUTING_FILE
from gitops_flow.problems import Problem, json_path

MAX_RUBRIC_BYTES = 64 * 1024
JUDGE = "judge:"


@dataclass(frozen=True, slots=True)
class LoadedDataset:
    """A dataset of a flow's ``evals`` as read from the working tree: its cases, or the problems that stop it."""

    dataset: str
    scorers: tuple[str, ...]
    cases: tuple[EvalCase, ...]
    problems: tuple[Problem, ...]
    rubrics: dict[str, str]  # judge scorer -> the rubric's text

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)


def repository_root(flow_file: Path) -> Path:
    """The root datasets are named from: the nearest folder above ``flow_file`` holding ``.git`` or the routing file,
    else the folder above the flow's folder (``flows/``)."""
    start = flow_file.resolve().parent
    for folder in (start, *start.parents):
        if (folder / ".git").exists() or (folder / ROUTING_FILE).is_file():
            return folder
    return start.parent


def inside(root: Path, name: str) -> Path | None:
    """The file ``name`` (a relative POSIX path) names under ``root``, or None when it is absolute, climbs out with
    ``..``, or resolves (through a symbolic link) outside ``root``."""
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts or "\\" in name or not name.strip():
        return None
    real_root = root.resolve()
    target = (real_root / relative).resolve()
    return target if target.is_relative_to(real_root) else None


def load_evals(spec: FlowSpec, flow_file: Path, *, shown: str, text: str | None = None) -> list[LoadedDataset]:
    """Each dataset of ``spec.evals`` read and parsed. A problem of the reference itself (missing, outside the
    repository, too large) names the flow's file ``shown`` and the line of its ``evals`` entry (``text`` is the flow
    document, for the line); a problem of a case names the dataset's file and line."""
    root = repository_root(flow_file)
    lines = LineIndex(text) if text is not None else None
    loaded = []
    for index, entry in enumerate(spec.evals):
        where = json_path(["evals", index, "dataset"])

        def problem(code: str, message: str, path: str = where) -> Problem:
            return Problem(code=code, message=message, path=path, file=shown, line=lines.line(path) if lines else None)

        problems: list[Problem] = []
        cases: list[EvalCase] = []
        raw, trouble = _read(root, entry.dataset, MAX_DATASET_BYTES, "dataset")
        if trouble is not None:
            problems.append(problem(*trouble))
        elif raw is not None:
            cases, found = parse_dataset(raw, file=entry.dataset)
            problems += found
        rubrics: dict[str, str] = {}
        for number, scorer in enumerate(entry.scorers):
            if scorer.startswith(JUDGE):
                body, trouble = _read(root, scorer.removeprefix(JUDGE), MAX_RUBRIC_BYTES, "rubric")
                path = json_path(["evals", index, "scorers", number])
                if trouble is not None:
                    problems.append(problem(*trouble, path=path))
                elif body is not None:
                    rubrics[scorer] = body.decode("utf-8", "replace")
        loaded.append(LoadedDataset(entry.dataset, tuple(entry.scorers), tuple(cases), tuple(problems), rubrics))
    return loaded


def eval_problems(spec: FlowSpec, flow_file: Path, *, shown: str, text: str | None = None) -> list[Problem]:
    """The problems of every dataset of ``spec.evals`` (load_evals)."""
    return [p for loaded in load_evals(spec, flow_file, shown=shown, text=text) for p in loaded.problems]


def _read(root: Path, name: str, limit: int, what: str) -> tuple[bytes | None, tuple[str, str] | None]:
    target = inside(root, name)
    if target is None:
        return None, (f"{what}-outside", f"{name!r} is not a file inside the repository ({root.name}/)")
    if not target.is_file():
        return None, (f"{what}-missing", f"{name!r}: no such file in the repository ({root.name}/)")
    try:
        size = target.stat().st_size
        if size > limit:
            return None, (f"{what}-too-large", f"{name!r} is {size:,} bytes; a {what} is at most {limit:,}")
        return target.read_bytes(), None
    except OSError as exc:
        return None, ("unreadable", f"cannot read {name!r}: {exc.strerror}")
