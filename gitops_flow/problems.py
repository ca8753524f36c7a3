"""Problem: one thing wrong with a file, with where it is and a stable code."""

from __future__ import annotations

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
