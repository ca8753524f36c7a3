"""VersionBuilder: a commit -> a Version, its flow files read from the commit's tree, validated and built.

Each flow file's result is cached by its name, its blob sha and the fingerprint of the documents its Retrievers read
(corpus.py), so content seen before costs nothing to build again: a revert, or a commit that touches one flow (or one
document) of a thousand, builds only what changed. Every method here does blocking
Git and CPU work and runs in a worker thread.

Given the record another worker made of the commit (the fetch leader, leader.py), a flow is not judged again: the
record says which flows are good, so those are parsed (a LangFlow export converted) and built, and the failed ones
keep the problems recorded; neither validation nor the flow's tests run. ``validated`` and ``trusted`` count the
flow files judged and those built on trust, for /metrics.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from gitops_flow.components.fake_answers import fake_answers
from gitops_flow.components.knowledge import Knowledge, Library
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.delivery import corpus
from gitops_flow.delivery.source import CommitInfo, GitSource
from gitops_flow.delivery.versions import Status, Version
from gitops_flow.exceptions import BuildError
from gitops_flow.flow.document import FlowSpec
from gitops_flow.flow.locations import LineIndex
from gitops_flow.flow.routing import ROUTING_FILE, RoutingConfig
from gitops_flow.langflow import convert as langflow
from gitops_flow.problems import Problem, capped
from gitops_flow.runtime.compiler import BuiltFlow, build_flow
from gitops_flow.runtime.conversations import HistoryStore
from gitops_flow.runtime.flow_tests import run_flow_tests
from gitops_flow.security.policy import SecretPolicy
from gitops_flow.security.references import Scrubber
from gitops_flow.validation.documents import (
    MAX_BYTES,
    MAX_EXPORT_BYTES,
    MAX_PROBLEMS,
    duplicate_names,
    flow_name,
    validate_bytes,
)
from gitops_flow.validation.routing import validate_routing_bytes

TREES_KEPT = 4  # commits whose file listings a builder keeps


@dataclass(frozen=True, slots=True)
class _FileResult:
    """One flow file's validation and build, shared by every commit that carries the same blob."""

    name: str
    built: BuiltFlow | None
    problems: tuple[Problem, ...]


@dataclass(slots=True)
class _Listing:
    """What a commit holds that the server reads: the flows folder's files and the routing file."""

    flows_dir: str
    files: dict[str, str] = field(default_factory=dict)  # file name -> blob sha
    routing: tuple[str, bytes] | None = None  # (blob sha, bytes)
    knowledge: dict[str, str] = field(default_factory=dict)  # file name -> fingerprint of the documents it reads
    tree: dict[str, str] = field(default_factory=dict)  # every file of the commit (listed only when a flow reads some)

    def build(self, file_name: str) -> str:
        """The build id of a flow file at this commit (corpus.build_id)."""
        return corpus.build_id(self.files[file_name], self.knowledge.get(file_name, ""))

    def builds(self) -> dict[str, str]:
        return {name: self.build(name) for name in self.files}

    @property
    def content(self) -> str:
        """A fingerprint of everything served from the commit: equal for two commits that serve the same (the
        documents flows read included)."""
        lines = [self.flows_dir, *(f"{name} {build}" for name, build in sorted(self.builds().items()))]
        lines.append(self.routing[0] if self.routing is not None else "-")
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _Judged:
    """What the fetch leader's record of a commit says of its flows: the good ones and the failed ones' problems."""

    good: frozenset[str]
    failed: Mapping[str, tuple[Problem, ...]]

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> _Judged:
        failed = record.get("failed") or {}
        return cls(
            good=frozenset(record.get("flows") or ()),
            failed={name: tuple(Problem.from_dict(p) for p in found) for name, found in failed.items()},
        )


def carry(version: Version, parent: Version | None) -> Version:
    """``version`` with what it serves from ``parent``: each flow that failed at it keeps the build its parent
    served, and a commit that failed as a whole serves everything its parent served."""
    if parent is None:
        return replace(version, carried={})
    before = parent.served()
    if version.status == "failed":
        return replace(version, carried=before)
    return replace(version, carried={name: before[name] for name in version.failed if name in before})


class VersionBuilder:
    """Builds versions from commits. Flows read only the ``secrets`` that ``policy`` allows, and ``scrubber`` takes
    every secret value the server knows out of the problems and messages a version records."""

    def __init__(
        self,
        source: GitSource,
        registry: ComponentRegistry,
        *,
        history: HistoryStore,
        secrets: Mapping[str, str] | None = None,
        policy: SecretPolicy | None = None,
        scrubber: Scrubber | None = None,
        fake_models: bool = False,
        run_tests: bool = True,
        clock: Callable[[], float] = time.time,
        build_timeout: float | None = None,
        library: Library | None = None,
    ) -> None:
        self.source = source
        self.registry = registry
        self.history = history
        self.policy = policy or SecretPolicy()
        self.secrets = self.policy.select(secrets or {})
        self.scrubber = scrubber or Scrubber(self.secrets)
        self.fake_models = fake_models
        self.run_tests = run_tests
        self.clock = clock
        self.build_timeout = build_timeout  # seconds one flow's build may take (Settings.build_timeout)
        self.library = library or Library()  # the embeddings and indexes every Retriever's build shares
        self._cache: dict[tuple[str, str, str], _FileResult] = {}
        self._reads: dict[str, tuple[str, ...]] = {}  # a flow file's blob -> the globs its Retrievers read
        self._trees: OrderedDict[str, dict[str, str]] = OrderedDict()  # a commit -> its files (path -> blob)
        self.on_validated: Callable[[], None] = lambda: None  # a flow file judged (the metrics' counter)
        self.validated = 0
        self.trusted = 0

    def build(
        self, commit: CommitInfo, parent: Version | None = None, record: Mapping[str, Any] | None = None
    ) -> Version:
        """The version of ``commit``, its flows judged one by one: each good flow built (and its tests passed), each
        failed one with its problems and carried on ``parent``'s build of it when there was one. A problem of the
        routing file fails the whole commit, which then serves what ``parent`` served. With ``record`` (the leader's
        record of this commit) the flows are not judged again (the module's docstring)."""
        listing = self._listing(commit.sha)
        problems: list[Problem] = []
        routing: RoutingConfig | None = None
        names = [flow_name(name.removesuffix(".json")) for name in listing.files]
        if listing.routing is not None:
            routing, routing_problems = validate_routing_bytes(listing.routing[1], file=ROUTING_FILE, flow_names=names)
            problems += routing_problems
        flows: dict[str, BuiltFlow] = {}
        failed: dict[str, tuple[Problem, ...]] = {}
        blobs: dict[str, str] = {}
        judged = _Judged.of(record) if record is not None else None
        results = {f: self._flow(listing, f, judged) for f in sorted(listing.files)}
        clashes = duplicate_names((f"{listing.flows_dir}/{f}", r.name) for f, r in results.items())
        for file_name, result in results.items():
            blobs[result.name] = listing.build(file_name)
            clash = [p for p in clashes if p.file == f"{listing.flows_dir}/{file_name}"]
            if result.built is not None and not clash:
                flows[result.name] = result.built
            else:  # two files of one name: neither is served, and each says why
                failed[result.name] = (*failed.get(result.name, ()), *result.problems, *clash)
        status: Status = "failed" if any(p.severity == "error" for p in problems) else "ready"
        version = Version(
            sha=commit.sha,
            author=commit.author,
            email=commit.email,
            time=commit.time,
            message=self.scrubber.text(commit.message),
            status=status,
            changed=self._changed(commit, listing),
            parents=commit.parents,
            problems=tuple(self.scrubber.problem(p) for p in problems),
            names=frozenset(flows),
            flows=flows,
            failed=failed,
            blobs=blobs,
            routing=routing,
            seen=self.clock(),
            content=listing.content,
        )
        return carry(version, parent)

    def introduced(self, sha: str) -> dict[str, str]:
        """The builds commit ``sha`` brought in: each flow whose file (or a document it reads) it added or changed
        against its first parent, by flow name, with its build id (corpus.build_id: one id builds one flow, cached by
        it). What a yank of ``sha`` makes unservable wherever it serves. Raises UnknownVersion when the clone lacks
        the commit."""
        commit = self.source.commit(sha)
        now = self._listing(commit.sha).builds()
        before = self._listing(commit.parents[0]).builds() if commit.parents else {}
        return {flow_name(f.removesuffix(".json")): build for f, build in now.items() if before.get(f) != build}

    def build_spec(self, spec: FlowSpec, knowledge: Knowledge | None = None) -> BuiltFlow:
        """Build a flow document as a commit's flow is built (registry, secrets, history, fakes and time limit):
        what a request's LangFlow tweaks run on. ``knowledge``: the commit's files, for a Retriever (without
        them a Retriever does not build). Raises BuildError."""
        deadline = time.monotonic() + self.build_timeout if self.build_timeout is not None else None
        fakes = self._fakes(spec) if self.fake_models else None
        return build_flow(
            spec,
            self.registry,
            secrets=self.secrets,
            history=self.history,
            fakes=fakes,
            deadline=deadline,
            knowledge=knowledge,
        )

    def forget(self, kept: Iterable[Version]) -> None:
        """Drop the built flows no kept version uses (their versions were retired); failed results stay cached."""
        used = {id(flow) for version in kept for flow in version.flows.values()}
        self._cache = {k: r for k, r in self._cache.items() if r.built is None or id(r.built) in used}

    def _listing(self, sha: str) -> _Listing:
        routing = self.source.read_file(sha, ROUTING_FILE, max_bytes=MAX_BYTES)
        flows_dir = "flows"
        if routing is not None:
            config, _ = validate_routing_bytes(routing[1], file=ROUTING_FILE)
            if config is not None:
                flows_dir = config.flows_dir
        listing = _Listing(flows_dir, self.source.list_files(sha, flows_dir), routing)
        reads = {name: self._globs(blob) for name, blob in listing.files.items()}
        if any(reads.values()):  # the whole tree is listed only when some flow reads documents
            listing.tree = self._tree(sha)
            listing.knowledge = {name: corpus.fingerprint(listing.tree, globs) for name, globs in reads.items()}
        return listing

    def _tree(self, sha: str) -> dict[str, str]:
        """Every file of commit ``sha`` (GitSource.tree_files), kept for the last few commits: a build lists its
        commit's and its parent's, and the next build's parent is this one."""
        if sha not in self._trees:
            self._trees[sha] = self.source.tree_files(sha)
            while len(self._trees) > TREES_KEPT:
                self._trees.popitem(last=False)
        return self._trees[sha]

    def _globs(self, blob: str) -> tuple[str, ...]:
        """The globs a flow file's Retrievers read (corpus.reads), read once per blob."""
        if blob not in self._reads:
            if len(self._reads) > 10_000:
                self._reads.clear()
            self._reads[blob] = corpus.reads(self.source.read_blob(blob, max_bytes=MAX_EXPORT_BYTES))
        return self._reads[blob]

    def _changed(self, commit: CommitInfo, listing: _Listing) -> tuple[str, ...]:
        before = self._listing(commit.parents[0]).builds() if commit.parents else {}
        now = listing.builds()
        names = {n for n in before.keys() | now.keys() if before.get(n) != now.get(n)}
        return tuple(sorted(n.removesuffix(".json") for n in names))

    def _flow(self, listing: _Listing, file_name: str, judged: _Judged | None = None) -> _FileResult:
        blob, fingerprint = listing.files[file_name], listing.knowledge.get(file_name, "")
        key = (file_name, blob, fingerprint)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        flows_dir = listing.flows_dir
        knowledge = self.library.at(corpus.CommitFiles(self.source, listing.tree)) if fingerprint else None
        path = f"{flows_dir}/{file_name}" if flows_dir not in ("", ".") else file_name
        stem = file_name.removesuffix(".json")
        name = flow_name(stem)
        if judged is not None and (name in judged.good or name in judged.failed):
            result = self._trust(name, stem, path, blob, judged, knowledge)
            if result.built is not None or name in judged.failed:
                self._cache[key] = result
                return result
        self.validated += 1
        self.on_validated()
        raw = self.source.read_blob(blob, max_bytes=MAX_EXPORT_BYTES)
        # the build below is real, so validation does not dry-build
        report = validate_bytes(raw, self.registry, file=path, stem=stem, dry_build=False, policy=self.policy)
        built: BuiltFlow | None = None
        problems = list(report.problems)
        if report.ok and report.spec is not None:
            try:
                built = build_flow(
                    report.spec,
                    self.registry,
                    secrets=self.secrets,
                    history=self.history,
                    fakes=self._fakes(report.spec) if self.fake_models else None,
                    deadline=time.monotonic() + self.build_timeout if self.build_timeout is not None else None,
                    knowledge=knowledge,
                )
            except BuildError as exc:
                where = report.origin(exc.path)  # a converted LangFlow export: the path in the export
                line = LineIndex(raw.decode("utf-8-sig")).line(where)
                problems.append(Problem(code=exc.code, message=str(exc), path=where, file=path, line=line))
        if built is not None and report.spec is not None and report.spec.tests and self.run_tests:
            failures = self._test(report.spec, raw, path, report.origin, knowledge)
            if failures:
                built, problems = None, [*problems, *failures]
        # capped once the tests' failures are in too; scrubbed of every known secret value
        result = _FileResult(name, built, tuple(self.scrubber.problem(p) for p in capped(problems, MAX_PROBLEMS)))
        self._cache[key] = result
        return result

    def _trust(
        self, name: str, stem: str, path: str, blob: str, judged: _Judged, knowledge: Knowledge | None
    ) -> _FileResult:
        """A flow as the leader judged it: its recorded problems when it failed there, else parsed and built without
        validation or tests. A flow that does not build here after all (a component or secret this worker lacks) is
        judged in full by the caller, so the problem is the one a single process would report."""
        if name in judged.failed:
            return _FileResult(name, None, judged.failed[name])
        self.trusted += 1
        raw = self.source.read_blob(blob, max_bytes=MAX_EXPORT_BYTES)
        try:
            data = orjson.loads(raw.decode("utf-8-sig"))
            if isinstance(data, dict) and langflow.is_export(data):
                data = langflow.convert(data, name=name).document
            spec = FlowSpec.model_validate(data)
            built = self.build_spec(spec, knowledge)
        except (ValueError, BuildError):  # orjson's and pydantic's errors are ValueErrors
            return _FileResult(name, None, ())
        return _FileResult(name, built, ())

    def _test(
        self, spec: FlowSpec, raw: bytes, path: str, origin: Callable[[str], str], knowledge: Knowledge | None
    ) -> list[Problem]:
        """The flow's own tests, run as `gitops-flow test` runs them (every model answered by its fakes): each
        failing case is a problem, so a flow whose tests fail never goes live, even when CI was bypassed."""
        results = asyncio.run(run_flow_tests(spec, self.registry, knowledge=knowledge))
        lines = LineIndex(raw.decode("utf-8-sig"))
        found = []
        for result in results:
            if not result.passed:
                where = origin(result.path)
                message = f"test {result.case!r} failed: {result.message}"
                found.append(
                    Problem(code="test-failed", message=message, path=where, file=path, line=lines.line(where))
                )
        return found

    def _fakes(self, spec: FlowSpec) -> dict[str, Sequence[str]]:
        """Fake models for every node that would call a real model (fake_answers.py)."""
        return dict(fake_answers(spec, self.registry))
