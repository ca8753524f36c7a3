"""Versions: one per commit the server has seen, with its metadata, its status and, flow by flow, what serves.

The flow is the unit of delivery: a commit's flows are judged one by one. A flow that fails at a commit (validation,
build, secrets or its own tests) keeps serving the build of the newest commit before it where it was good (its
``carried`` commit); the commit's other flows go live. Only a commit-wide problem (the routing file) fails the whole
commit, which then serves what its parent served.

A flow whose tests have not answered within a moment of its commit's build (builder.VERDICT_WAIT_S) is ``pending``:
it keeps serving its earlier build, as a failed flow does, while the commit's other flows go live; once its verdict
arrives the reconciler builds the version again (reconcile.Reconciler.settle) and the flow goes live or fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from gitops_flow.exceptions import UnknownVersion
from gitops_flow.flow import commit_text as committext
from gitops_flow.flow.routing import RoutingConfig
from gitops_flow.problems import Problem
from gitops_flow.runtime.compiler import BuiltFlow

Status = Literal["ready", "failed", "retired"]
MIN_SHORT_SHA = 4


@dataclass(frozen=True, slots=True)
class Version:
    """A commit as the server knows it.

    ``status`` is the commit's: ``ready`` (its routing file is sound; some of its flows may still have failed),
    ``failed`` (a commit-wide problem: nothing of it is served) or ``retired`` (its builds were released to free
    memory). ``names`` are the flows good at this commit and ``flows`` their builds while in memory; ``failed`` maps
    each flow that failed here to its problems; ``pending`` names the flows whose tests are still running (they serve
    as failed ones do until their verdict); ``carried`` maps a flow to the earlier commit whose build of it serves
    here instead. ``problems`` are the commit-wide ones. ``changed`` names the flows this commit added, modified or
    deleted compared with its first parent. ``went_live`` says whether it ever served as the branch head or a ref.
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
    names: frozenset[str] = frozenset()
    flows: Mapping[str, BuiltFlow] = field(default_factory=dict, repr=False)
    failed: Mapping[str, tuple[Problem, ...]] = field(default_factory=dict)
    carried: Mapping[str, str] = field(default_factory=dict)
    # flow -> its build id: its file's blob, with the documents it reads (delivery/corpus.py); in memory only
    blobs: Mapping[str, str] = field(default_factory=dict, repr=False)
    routing: RoutingConfig | None = field(default=None, repr=False)
    rubrics: Mapping[str, str] = field(default_factory=dict, repr=False)  # the routing file's judges' rubrics, by path
    seen: float = 0.0
    content: str = ""  # a fingerprint of what the commit serves: equal for a revert and the commit it restores
    went_live: bool = False
    pending: frozenset[str] = frozenset()  # flows whose tests have not given their verdict yet
    # the description each flow that failed here gives in its document (it has no build to tell it), when it has one
    described: Mapping[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    @property
    def summary(self) -> str:
        return self.message.splitlines()[0] if self.message else ""

    def serving(self, flow: str) -> str | None:
        """The commit whose build of ``flow`` serves at this commit: itself when the flow is good here, the carried
        commit when it failed here (or the whole commit failed), None when no good build of it exists."""
        if self.status != "failed" and flow in self.names:
            return self.sha
        return self.carried.get(flow)

    def served(self) -> dict[str, str]:
        """Every flow that has a good build at this commit, with the commit whose build serves it."""
        own = {} if self.status == "failed" else dict.fromkeys(self.names, self.sha)
        return {**self.carried, **own}

    def all_problems(self) -> list[Problem]:
        """The commit-wide problems, then each failed flow's, in name order."""
        return [*self.problems, *(p for name in sorted(self.failed) for p in self.failed[name])]

    def retired(self) -> Version:
        """This version with its built flows released: it is listed, but no longer served."""
        return replace(self, status="retired", flows={}, blobs={})

    def keeping(self, flows: Iterable[str]) -> Version:
        """This version holding only the builds of ``flows`` (what later commits still serve from it)."""
        kept = set(flows)
        return replace(self, flows={n: f for n, f in self.flows.items() if n in kept})

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
            "flows": sorted(self.names),
            "failed": {name: [p.as_dict() for p in self.failed[name]] for name in sorted(self.failed)},
            "carried": dict(sorted(self.carried.items())),
            "seen": self.seen,
            "content": self.content,
            "went_live": self.went_live,
            "pending": sorted(self.pending),
            "described": dict(sorted(self.described.items())),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Version:
        """A version read back from a store: metadata and statuses only (a ready one is rebuilt from Git)."""
        failed = record.get("failed") or {}
        return cls(
            sha=record["sha"],
            author=committext.name(record.get("author", "")),
            email=committext.name(record.get("email", "")),
            time=float(record.get("time", 0.0)),
            message=committext.message(record.get("message", "")),  # kept uncut by an earlier release
            status=record.get("status", "retired"),
            changed=tuple(record.get("changed", ())),
            parents=tuple(record.get("parents", ())),
            problems=tuple(Problem.from_dict(p) for p in record.get("problems", [])),
            names=frozenset(record.get("flows", ())),
            failed={name: tuple(Problem.from_dict(p) for p in found) for name, found in failed.items()},
            carried=dict(record.get("carried") or {}),
            seen=float(record.get("seen", 0.0)),
            content=str(record.get("content", "")),
            went_live=bool(record.get("went_live", False)),
            pending=frozenset(record.get("pending") or ()),
            described=dict(record.get("described") or {}),
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
