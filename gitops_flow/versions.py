"""Versions: one per commit the server has seen, with its metadata, status, problems and built flows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from gitops_flow.build import BuiltFlow
from gitops_flow.exceptions import UnknownVersion
from gitops_flow.problems import Problem
from gitops_flow.routing import RoutingConfig

Status = Literal["ready", "failed", "retired"]
MIN_SHORT_SHA = 4


@dataclass(frozen=True, slots=True)
class Version:
    """A commit as the server knows it. Only a ``ready`` version has flows, and only a ready version is served.

    ``changed`` names the flows this commit added, modified or deleted compared with its first parent.
    """

    sha: str
    author: str
    email: str
    time: float
    message: str
    status: Status
    changed: tuple[str, ...] = ()
    parents: tuple[str, ...] = ()
    problems: tuple[Problem, ...] = ()
    flows: Mapping[str, BuiltFlow] = field(default_factory=dict, repr=False)
    routing: RoutingConfig | None = field(default=None, repr=False)
    seen: float = 0.0
    content: str = ""  # a fingerprint of what the commit serves: equal for a revert and the commit it restores

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    @property
    def summary(self) -> str:
        return self.message.splitlines()[0] if self.message else ""

    def retired(self) -> Version:
        """This version with its built flows released: it is listed, but no longer served."""
        return replace(self, status="retired", flows={})

    def record(self) -> dict[str, Any]:
        """What a store keeps and ``/versions`` shows (JSON-able)."""
        return {
            "sha": self.sha,
            "author": self.author,
            "email": self.email,
            "time": self.time,
            "message": self.message,
            "status": self.status,
            "changed": list(self.changed),
            "parents": list(self.parents),
            "problems": [p.as_dict() for p in self.problems],
            "flows": sorted(self.flows),
            "seen": self.seen,
            "content": self.content,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Version:
        """A version read back from a store: metadata and status only (a ready one is rebuilt from Git)."""
        problems = tuple(
            Problem(
                code=p["code"],
                message=p["message"],
                path=p.get("path", "$"),
                file=p.get("file", ""),
                line=p.get("line"),
                severity=p.get("severity", "error"),
            )
            for p in record.get("problems", [])
        )
        return cls(
            sha=record["sha"],
            author=record.get("author", ""),
            email=record.get("email", ""),
            time=float(record.get("time", 0.0)),
            message=record.get("message", ""),
            status=record.get("status", "retired"),
            changed=tuple(record.get("changed", ())),
            parents=tuple(record.get("parents", ())),
            problems=problems,
            seen=float(record.get("seen", 0.0)),
            content=str(record.get("content", "")),
        )


def find(versions: Mapping[str, Version], text: str) -> Version:
    """The version a full or short sha (at least 4 hex digits) names; raises UnknownVersion if none or several."""
    text = text.strip().lower()
    exact = versions.get(text)
    if exact is not None:
        return exact
    if len(text) >= MIN_SHORT_SHA and all(c in "0123456789abcdef" for c in text):
        matches = [v for sha, v in versions.items() if sha.startswith(text)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise UnknownVersion(f"short sha {text!r} names {len(matches)} versions; give more digits")
    raise UnknownVersion(f"no version {text!r}: give a commit sha, a short sha or a ref the server has seen")
