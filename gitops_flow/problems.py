"""Problem: one thing wrong with a file, with where it is and a stable code."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

Severity = Literal["error", "warning", "notice"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding of validation.

    ``path`` is a JSON path into the document (``$.nodes[2].component``); ``code`` is stable and documented in
    docs/problems.md, so tools and people can rely on it; ``line`` is 1-based when known.
    """

    code: str
    message: str
    path: str = "$"
    file: str = ""
    line: int | None = None
    severity: Severity = "error"

    def describe(self) -> str:
        where = self.file or "<flow>"
        if self.line is not None:
            where += f":{self.line}"
        return f"{where}: {self.severity}[{self.code}] {self.path}: {self.message}"

    def located(self, file: str, line: int | None) -> Problem:
        return replace(self, file=file, line=self.line if self.line is not None else line)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Problem:
        """A problem read back from ``as_dict`` (a store, a server's JSON)."""
        return cls(
            code=data["code"],
            message=data["message"],
            path=data.get("path", "$"),
            file=data.get("file", ""),
            line=data.get("line"),
            severity=data.get("severity", "error"),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "path": self.path,
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
        }


def listing(names: list[str], limit: int = 20) -> str:
    """``a, b, c`` — or the first ``limit`` and how many more, so that a message stays short however large the
    document it speaks of."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit:,} more"


LOGGED_PROBLEMS = 3  # problems a log line names; the others are counted (all of them are in /versions, /history)
LOGGED_TEXT = 160  # characters of each problem's message a log line keeps


def log_text(problems: Sequence[Problem], limit: int = LOGGED_PROBLEMS) -> str:
    """The problems as a log line names them, bounded: ``flows/hello.json:3 bad-param: ...; and 2 more``."""
    shown = []
    for problem in problems[:limit]:
        where = (problem.file or "<flow>") + (f":{problem.line}" if problem.line is not None else "")
        message = problem.message if len(problem.message) <= LOGGED_TEXT else problem.message[: LOGGED_TEXT - 1] + "…"
        shown.append(f"{where} {problem.code}: {message}")
    more = f"; and {len(problems) - limit} more" if len(problems) > limit else ""
    return "; ".join(shown) + more if shown else "no problem recorded"


def json_path(parts: tuple[str | int, ...] | list[str | int]) -> str:
    """``("nodes", 2, "component")`` -> ``$.nodes[2].component``."""
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier():
            out += f".{part}"
        else:
            out += "[" + repr(part) + "]"
    return out


MAX_TEXT = 500  # characters of a problem's message and path: a key or a value quoted in one is the author's to size
TOO_MANY = "too-many-problems"
_MORE = "{:,} more problems are not listed; fix the ones above and validate again"
_RANK: dict[Severity, int] = {"notice": 0, "warning": 1, "error": 2}


def capped(problems: Sequence[Problem], limit: int) -> list[Problem]:
    """The first ``limit`` problems, each message and path cut to MAX_TEXT characters, then, when there were more,
    one `too-many-problems` saying how many, as severe as the worst of them (so capping never changes whether a file
    passes): what a file can make validation report is bounded, and so is every record, event and page that carries
    its problems. Capping a capped list again (more problems found later) adds to the count it already had."""
    listed = [p for p in problems if p.code != TOO_MANY]
    earlier = [p for p in problems if p.code == TOO_MANY]
    left_out = listed[limit:] + earlier
    rest = len(listed[limit:]) + sum(_count(p) for p in earlier)
    kept = [_cut(p) for p in listed[:limit]]
    if rest > 0:
        severity = max((p.severity for p in left_out), key=_RANK.__getitem__)
        file = problems[0].file
        kept.append(Problem(code=TOO_MANY, message=_MORE.format(rest), file=file, severity=severity))
    return kept


def _count(problem: Problem) -> int:
    """How many problems an earlier `too-many-problems` stood for (its message starts with the number)."""
    head = problem.message.split(" ", 1)[0].replace(",", "")
    return int(head) if head.isdigit() else 1


def _cut(problem: Problem) -> Problem:
    if len(problem.message) <= MAX_TEXT and len(problem.path) <= MAX_TEXT:
        return problem
    return replace(problem, message=_shorter(problem.message), path=_shorter(problem.path))


def _shorter(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"
