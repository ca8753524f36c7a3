"""The plan of a merge: what the server will do with the flows and the routing file of a working tree, compared with
a base revision of the same repository, computed offline as the server would judge them.

Each flow is judged on its own (the server's rule): validated, dry-built, its tests run with fakes; a flow that fails
keeps serving its last good version and does not hold the others back. A routing file that fails fails the whole
commit. Contract changes come from the same comparison as `validate --base` (contract.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from gitops_flow.components import provider_packages
from gitops_flow.components.documents import readable
from gitops_flow.components.knowledge import Knowledge, matching
from gitops_flow.components.provider_packages import ProviderPackage
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.delivery import corpus
from gitops_flow.delivery.source import Refs, files_at, read_at, refs_at, tree_at
from gitops_flow.flow.locations import LineIndex
from gitops_flow.flow.routing import DEFAULT_ROUTE, ROUTING_FILE, RoutingConfig
from gitops_flow.plan.diff import Change, FlowDiff, flow_diff, rollout_text, routing_diff, secrets
from gitops_flow.plan.evals import EvalReport, evaluate
from gitops_flow.problems import Problem
from gitops_flow.runtime.sandbox import TestSandbox
from gitops_flow.security.policy import SecretPolicy
from gitops_flow.validation import contract
from gitops_flow.validation.documents import MAX_BYTES, MAX_EXPORT_BYTES, FileReport, validate_bytes
from gitops_flow.validation.routing import validate_routing_bytes
from gitops_flow.validation.worktree import WorkingTree

Status = Literal["added", "removed", "changed", "unchanged"]
Verdict = Literal["live", "canary", "waits", "fails", "blocked", "removed", "unchanged"]


@dataclass(frozen=True, slots=True)
class ContractChange:
    """A change of the flow's input or output schema; ``breaking`` when it breaks callers (contract.py)."""

    side: Literal["input", "output"]
    text: str
    breaking: bool

    def as_dict(self) -> dict[str, Any]:
        return {"side": self.side, "text": self.text, "breaking": self.breaking}


@dataclass(frozen=True, slots=True)
class FlowPlan:
    """What merging does to one flow."""

    name: str
    file: str
    status: Status
    verdict: Verdict
    problems: tuple[Problem, ...] = ()  # why it fails (errors), and warnings
    diff: FlowDiff = field(default_factory=FlowDiff)
    secrets: tuple[str, ...] = ()
    new_secrets: tuple[str, ...] = ()
    contract: tuple[ContractChange, ...] = ()
    tests: tuple[int, int] = (0, 0)  # cases passed, failed
    packages: tuple[ProviderPackage, ...] = ()  # the model provider packages the flow needs where it is served
    serves: str = ""  # how its route serves the merged commit: "the first ref", "a canary at 10 %", "no ref", ...

    @property
    def breaking(self) -> bool:
        return any(c.breaking for c in self.contract)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "file": self.file,
            "status": self.status,
            "verdict": self.verdict,
            "problems": [p.as_dict() for p in self.problems],
            "changes": self.diff.as_dict(),
            "secrets": list(self.secrets),
            "new_secrets": list(self.new_secrets),
            "contract": [c.as_dict() for c in self.contract],
            "breaking": self.breaking,
            "tests": {"passed": self.tests[0], "failed": self.tests[1]},
            "packages": [
                {
                    "package": p.distribution,
                    "provider": p.provider,
                    "install": p.install_hint(),
                    "installed": p.installed,
                }
                for p in self.packages
            ],
            "serves": self.serves,
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """What merging the working tree into the branch at ``base`` does, flow by flow, and to the routing."""

    base: str
    flows_dir: str
    flows: tuple[FlowPlan, ...]
    routing: tuple[Change, ...] = ()
    routing_problems: tuple[Problem, ...] = ()
    evals: EvalReport | None = None  # the changed flows' datasets, scored at the head and at the base

    @property
    def whole_fails(self) -> bool:
        """The routing file fails: the server will refuse the whole commit."""
        return any(p.severity == "error" for p in self.routing_problems)

    def as_dict(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "flows_dir": self.flows_dir,
            "whole_commit_fails": self.whole_fails,
            "flows": [f.as_dict() for f in self.flows],
            "routing": {
                "changes": [c.as_dict() for c in self.routing],
                "problems": [p.as_dict() for p in self.routing_problems],
            },
            "evals": self.evals.as_dict() if self.evals is not None else None,
        }


def make_plan(
    root: Path,
    base: str,
    registry: ComponentRegistry,
    *,
    policy: SecretPolicy | None = None,
    run_tests: bool = True,
    knowledge: Knowledge | None = None,
) -> Plan:
    """The plan of merging the repository at ``root`` (its working tree) into ``base`` (a revision of it).
    ``knowledge``: the working tree's files, which the flows' Retrievers read in their dry-builds and tests.

    Raises SourceError when ``root`` is not in a Git working tree, UnknownVersion when ``base`` names no commit.
    """
    routing_path = root / ROUTING_FILE
    old_routing_raw = read_at([routing_path], base, max_bytes=MAX_BYTES)[routing_path]
    new_routing_raw = routing_path.read_bytes() if routing_path.is_file() else None
    old_routing = _routing(old_routing_raw)
    new_routing, routing_problems = (
        validate_routing_bytes(new_routing_raw, file=ROUTING_FILE) if new_routing_raw is not None else (None, [])
    )
    old_dir = old_routing.flows_dir if old_routing is not None else "flows"
    new_dir = new_routing.flows_dir if new_routing is not None else "flows"
    before = files_at(root / old_dir, base, suffix=".json", max_bytes=MAX_EXPORT_BYTES)
    folder = root / new_dir
    now = {p.name: p.read_bytes() for p in sorted(folder.glob("*.json")) if p.is_file()} if folder.is_dir() else {}
    if new_routing_raw is not None:  # routes naming flows that do not exist, as the server checks them
        names = [name.removesuffix(".json") for name in now]
        new_routing, routing_problems = validate_routing_bytes(new_routing_raw, file=ROUTING_FILE, flow_names=names)
    sandbox = TestSandbox(registry)
    judge = _Judge(registry, policy or SecretPolicy(), base, run_tests, sandbox, knowledge)
    documents = _Documents(root, base)
    plans = []
    for file_name in sorted(before.keys() | now.keys()):
        old, new = before.get(file_name), now.get(file_name)
        moved = old is not None and old == new and documents.changed(new)
        plans.append(judge.flow(file_name, f"{new_dir}/{file_name}", old, new, documents_changed=moved))
    scored = None
    changed = [p.name for p in plans if p.status in ("added", "changed") and p.verdict == "live"]
    if run_tests and changed:  # the datasets of the flows that change, as `gitops-flow eval --base` scores them
        files = [folder / f"{name}.json" for name in changed if (folder / f"{name}.json").is_file()]
        rules = new_routing.evals if new_routing is not None else None
        scored = evaluate(files, base, registry, sandbox, rules=rules, policy=policy, names=changed)
        scored = scored if scored.flows else None
    if any(p.severity == "error" for p in routing_problems):
        plans = [_blocked(p) for p in plans]
    else:
        plans = [_reach(p, new_routing, _branch(base)) for p in plans]
    changes = routing_diff(old_routing, new_routing) if old_routing_raw != new_routing_raw else []
    if new_routing is not None and not any(p.severity == "error" for p in routing_problems):
        names = sorted({p.name for p in plans if p.status != "removed"})
        routing_problems = [*routing_problems, *route_warnings(new_routing, refs_at(root), names)]
    return Plan(base, new_dir, tuple(plans), tuple(changes), tuple(routing_problems), scored)


def route_warnings(routing: RoutingConfig, refs: Refs, flows: list[str], *, file: str = ROUTING_FILE) -> list[Problem]:
    """Warnings for the routes this routing file leaves with nothing servable as Git stands: each ref a tag that does
    not exist or whose commit the file yanks, or weighted 0 (``route-unservable``); or whose first ref is such, so
    that only guarded canaries serve (``route-canary-only``: a canary the server has aborted then leaves the route
    nothing, and its requests get 503 nothing-servable). A branch is taken as servable: merging moves it."""
    found: list[Problem] = []
    for name, entries in sorted(routing.routes.items()):
        flow = name if name in flows else None
        states = [(entry, _ref_state(routing, refs, flow, entry.ref)) for entry in entries]
        said = ", ".join(f"{e.ref} {state}" for e, state in states if state != "servable")
        servable = [e.ref for e, state in states if state == "servable" and e.weight > 0]
        if not servable:
            text = (
                f"route {name!r}: no ref it names can serve after this change ({said or 'every weight is 0'}); the"
                " branch head serves alone, and if its build is yanked or an aborted canary's, requests get 503"
                " nothing-servable"
            )
            found.append(Problem("route-unservable", text, f"$.routes.{name}", file, severity="warning"))
        elif routing.analysis is not None and states and states[0][1] != "servable":
            text = (
                f"route {name!r}: its first ref {entries[0].ref!r} is {states[0][1]}, so only its canaries"
                f" ({', '.join(servable)}) serve; if the server has aborted one, nothing serves the route (503"
                " nothing-servable) until an operator resumes it"
            )
            found.append(Problem("route-canary-only", text, f"$.routes.{name}", file, severity="warning"))
    return found


def _ref_state(routing: RoutingConfig, refs: Refs, flow: str | None, ref: str) -> str:
    if ref in refs.branches and (flow is None or f"{flow}/{ref}" not in refs.tags):
        return "servable"
    sha = refs.tags.get(f"{flow}/{ref}") if flow is not None else None
    sha = sha or refs.tags.get(ref)
    if sha is None:
        return "missing (no such tag or branch)"
    if routing.is_yanked(sha):
        return f"yanked (its commit {sha[:12]})"
    return "servable"


def _branch(base: str) -> str:
    """The branch a merge lands on, from the base it is compared with (``origin/main`` -> ``main``)."""
    return base.removeprefix("refs/heads/").removeprefix("refs/remotes/").removeprefix("origin/")


def _reach(plan: FlowPlan, routing: RoutingConfig | None, branch: str) -> FlowPlan:
    """A flow that builds, as its route will serve the merged commit (the branch's head): live when the branch is
    the route's first ref (or there is no route: the head serves everything); a canary at its share of the weights
    when it is a later ref; waiting when no ref of the route is the branch (it serves once a tag is moved to it)."""
    if plan.verdict != "live":
        return plan
    routes = routing.routes if routing is not None else {}
    entries = routes.get(plan.name) or routes.get(DEFAULT_ROUTE) or []
    refs = [e.ref.removeprefix(f"{plan.name}/") for e in entries]
    if not entries or refs[0] == branch:
        return replace(plan, serves="the branch head serves it" if not entries else f"{branch}, the route's first ref")
    if branch not in refs:
        named = ", ".join(f"{e.ref} {e.weight:g}" for e in entries)
        return replace(plan, verdict="waits", serves=f"its route serves {named}: none is {branch}")
    entry = entries[refs.index(branch)]
    if entry.steps is not None:
        others = ", ".join(f"{e.ref} {e.weight:g}" for e, r in zip(entries, refs, strict=True) if r != branch)
        return replace(
            plan, verdict="canary", serves=f"a progressive canary on {branch}: {rollout_text(entry)} (beside {others})"
        )
    total = sum(e.weight for e in entries)
    weight = entry.weight
    share = 100 * weight / total if total else 0.0
    others = ", ".join(f"{e.ref} {e.weight:g}" for e, r in zip(entries, refs, strict=True) if r != branch)
    return replace(plan, verdict="canary", serves=f"a canary at {share:.3g} % on {branch} (beside {others})")


class _Documents:
    """The documents flows' Retrievers read, at the base and in the working tree, each listed once if needed."""

    def __init__(self, root: Path, base: str) -> None:
        self.root, self.base = root, base
        self._before: dict[str, str] | None = None
        self._tree = WorkingTree(root)
        self._shas: dict[str, str] = {}

    def changed(self, raw: bytes | None) -> bool:
        """Whether the documents the flow document ``raw`` reads differ between the base and the working tree."""
        globs = corpus.reads(raw) if raw is not None else ()
        if not globs:
            return False
        if self._before is None:
            self._before = {p: blob for p, blob in tree_at(self.root, self.base).items() if readable(p)}
        now = {p: self._sha(p) for p in matching(self._tree.files(), globs)}  # only the documents it reads
        return corpus.fingerprint(self._before, globs) != corpus.fingerprint(now, globs)

    def _sha(self, path: str) -> str:
        if path not in self._shas:
            self._shas[path] = _blob_sha(self._tree.read(path, max_bytes=MAX_DOCUMENT_BYTES))
        return self._shas[path]


MAX_DOCUMENT_BYTES = 64 * 1024 * 1024  # a document's bytes hashed for the plan, at most (past it, a prefix's hash)


def _blob_sha(data: bytes) -> str:
    """Git's id of a blob of ``data`` (what the base's tree names it by)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _routing(raw: bytes | None) -> RoutingConfig | None:
    if raw is None:
        return None
    config, _ = validate_routing_bytes(raw, file=ROUTING_FILE)
    return config


def _blocked(plan: FlowPlan) -> FlowPlan:
    return replace(plan, verdict="blocked") if plan.status in ("added", "changed", "removed") else plan


@dataclass(frozen=True, slots=True)
class _Judge:
    """Judges one flow file as the server would, and compares it with the base."""

    registry: ComponentRegistry
    policy: SecretPolicy
    base: str
    run_tests: bool
    sandbox: TestSandbox  # the flows' tests run in a child process with a time and a memory limit, as on the server
    knowledge: Knowledge | None = None  # the working tree's files the flows' Retrievers read (in their tests too)

    def flow(
        self, file_name: str, shown: str, old: bytes | None, new: bytes | None, *, documents_changed: bool = False
    ) -> FlowPlan:
        stem = file_name.removesuffix(".json")
        old_report = self._validate(old, shown, stem) if old is not None else None
        if new is None:
            return FlowPlan(stem, shown, "removed", "removed")
        report = self._validate(new, shown, stem)
        name = report.spec.name if report.spec is not None else stem
        # a flow whose file is the same but whose Retrievers' documents changed is a new build, as on the server
        status: Status = "added" if old is None else "unchanged" if old == new and not documents_changed else "changed"
        if status == "unchanged":
            return FlowPlan(name, shown, status, "unchanged")
        problems = [p for p in report.problems if p.severity != "notice"]  # notices are for `validate`, not a plan
        passed = failed = 0
        if report.ok and report.spec is not None and report.spec.tests and self.run_tests:
            results = self.sandbox.run(report.spec, self.knowledge)
            lines = LineIndex(new.decode("utf-8-sig"))
            for result in results:
                if result.passed:
                    passed += 1
                    continue
                failed += 1
                where = report.origin(result.path)
                message = f"test {result.case!r} failed: {result.message}"
                problems.append(Problem(result.code, message, where, shown, lines.line(where)))
        fails = any(p.severity == "error" for p in problems)
        needed = tuple(secrets(report.spec)) if report.spec is not None else ()
        known = set(secrets(old_report.spec)) if old_report is not None and old_report.spec is not None else set()
        diff = FlowDiff()
        if old_report is not None and old_report.spec is not None and report.spec is not None:
            diff = flow_diff(old_report.spec, report.spec)
        return FlowPlan(
            name,
            shown,
            status,
            "fails" if fails else "live",
            tuple(problems),
            diff,
            needed,
            tuple(n for n in needed if n not in known),
            self._contract(report, old_report, new) if old_report is not None else (),
            (passed, failed),
            tuple(provider_packages.needed((n.component, dict(n.params)) for n in report.spec.nodes))
            if report.spec is not None
            else (),
        )

    def _validate(self, raw: bytes, shown: str, stem: str) -> FileReport:
        return validate_bytes(raw, self.registry, file=shown, stem=stem, policy=self.policy, knowledge=self.knowledge)

    def _contract(self, now: FileReport, before: FileReport, raw: bytes) -> tuple[ContractChange, ...]:
        if now.built is None or before.built is None:
            return ()
        found: list[ContractChange] = []
        sides: tuple[Literal["input", "output"], ...] = ("input", "output")
        for side in sides:
            old_schema, new_schema = _schema(before, side), _schema(now, side)
            breaking = contract.changes(side, old_schema, new_schema)
            found += [ContractChange(side, text, True) for text in breaking]
            if not breaking and old_schema != new_schema:
                found.append(ContractChange(side, f"the {side} schema changed without breaking callers", False))
        return tuple(found)


def _schema(report: FileReport, side: Literal["input", "output"]) -> Mapping[str, Any]:
    built = report.built
    model = None if built is None else built.input_model if side == "input" else built.output_model
    return model.model_json_schema() if model is not None else {}
