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

import functools
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from gitops_flow.components.breaker import Breakers
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
from gitops_flow.runtime.compiler import BuiltFlow, build_flow, with_schemas
from gitops_flow.runtime.conversations import HistoryStore
from gitops_flow.runtime.sandbox import TestSandbox
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
from gitops_flow.validation.routing import RUBRIC_MAX_BYTES, load_rubrics, validate_routing_bytes

VERDICT_WAIT_S = 5.0  # seconds a deploy waits for its flows' tests; a flow still tested then goes live on its verdict
TREES_KEPT = 4  # commits whose file listings a builder keeps
_Key = tuple[str, str, str]  # a flow's build: (file name, blob, fingerprint of the documents it reads or "")


MAX_DESCRIPTION = 500  # characters of a failed flow's description kept (its document's)


@dataclass(frozen=True, slots=True)
class _FileResult:
    """One flow file's validation and build, shared by every commit that carries the same blob."""

    name: str
    built: BuiltFlow | None
    problems: tuple[Problem, ...]
    description: str = ""  # a failed flow's, from its document (a good one's is its build's)


@dataclass(frozen=True, slots=True)
class _Judging:
    """A flow file validated and built, waiting for its tests (``tested``) or not."""

    name: str
    path: str
    raw: bytes
    built: BuiltFlow | None
    problems: list[Problem]
    origin: Callable[[str], str]
    tested: bool
    knowledge: Knowledge | None  # the commit's files, when the flow reads documents (its tests read them too)


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

    def key(self, file_name: str) -> _Key:
        """What a flow file's result is cached by at this commit."""
        return (file_name, self.files[file_name], self.knowledge.get(file_name, ""))

    @property
    def content(self) -> str:
        """A fingerprint of everything served from the commit: equal for two commits that serve the same (the
        documents flows read included)."""
        lines = [self.flows_dir, *(f"{name} {build}" for name, build in sorted(self.builds().items()))]
        lines.append(self.routing[0] if self.routing is not None else "-")
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _Judged:
    """What the fetch leader's record of a commit says of its flows: the good ones, the failed ones' problems, and
    the pending ones (the leader still tests them: a follower waits for the leader's verdict, never tests them)."""

    good: frozenset[str]
    failed: Mapping[str, tuple[Problem, ...]]
    described: Mapping[str, str]
    pending: frozenset[str] = frozenset()

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> _Judged:
        failed = record.get("failed") or {}
        return cls(
            good=frozenset(record.get("flows") or ()),
            failed={name: tuple(Problem.from_dict(p) for p in found) for name, found in failed.items()},
            described=dict(record.get("described") or {}),
            pending=frozenset(record.get("pending") or ()),
        )


def described(raw: bytes) -> str:
    """The description a flow document (or a LangFlow export) gives at its top, however else it fails: a failed flow
    has no build to tell it. Bounded to MAX_DESCRIPTION characters; empty when the file is not such JSON."""
    try:
        data = orjson.loads(raw.decode("utf-8-sig"))
    except (ValueError, UnicodeDecodeError):
        return ""
    text = data.get("description") if isinstance(data, dict) else None
    if not isinstance(text, str):
        return ""
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 1] + "…"


def carry(version: Version, parent: Version | None) -> Version:
    """``version`` with what it serves from ``parent``: each flow that failed at it (or whose tests are pending) keeps
    the build its parent served, and a commit that failed as a whole serves everything its parent served."""
    if parent is None:
        return replace(version, carried={})
    before = parent.served()
    if version.status == "failed":
        return replace(version, carried=before)
    waiting = [*version.failed, *version.pending]
    return replace(version, carried={name: before[name] for name in waiting if name in before})


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
        sandbox: TestSandbox | None = None,
        breakers: Breakers | None = None,
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
        self.sandbox = sandbox or TestSandbox(registry)  # where flows' tests run: a child process each, bounded
        self.breakers = breakers  # the provider endpoints' circuit breakers the built models call through
        self.library = library or Library()  # the embeddings and indexes every Retriever's build shares
        self._cache: dict[_Key, _FileResult] = {}
        self._reads: dict[tuple[str, str], tuple[str, ...]] = {}  # (file, blob) -> the globs its Retrievers read
        self._trees: OrderedDict[str, dict[str, str]] = OrderedDict()  # a commit -> its files (path -> blob)
        # flows being tested in the test pool, by build (_Key); their results move to the cache when a build
        # takes them; ``_awaited``: those a version went out without (their verdict calls ``on_verdict``)
        self._builds = ThreadPoolExecutor(self.sandbox.processes, thread_name_prefix="gitops-flow-build")
        self._tests = ThreadPoolExecutor(self.sandbox.processes, thread_name_prefix="gitops-flow-tests")
        self._judging: dict[_Key, futures.Future[_FileResult]] = {}
        self._awaited: set[_Key] = set()
        self._lock = threading.RLock()
        self.on_verdict: Callable[[], None] = lambda: None  # a pending flow has its verdict (called in a pool thread)
        self.on_validated: Callable[[], None] = lambda: None  # a flow file judged (the metrics' counter)
        self.validated = 0
        self.trusted = 0

    def build(
        self,
        commit: CommitInfo,
        parent: Version | None = None,
        record: Mapping[str, Any] | None = None,
        *,
        wait: float | None = None,
    ) -> Version:
        """The version of ``commit``, its flows judged one by one: each good flow built (and its tests passed), each
        failed one with its problems and carried on ``parent``'s build of it when there was one. A problem of the
        routing file fails the whole commit, which then serves what ``parent`` served. With ``record`` (the leader's
        record of this commit) the flows are not judged again (the module's docstring).

        ``wait``: seconds to wait for the flows being judged (their tests); the ones still running then are
        ``pending`` in the version (carried on ``parent`` meanwhile), and ``on_verdict`` is called once each has its
        verdict, so the caller builds the version again. None waits for every verdict."""
        listing = self._listing(commit.sha)
        problems: list[Problem] = []
        routing: RoutingConfig | None = None
        names = [flow_name(name.removesuffix(".json")) for name in listing.files]
        rubrics: dict[str, str] = {}
        if listing.routing is not None:

            def read(path: str) -> bytes | None:  # a rubric a shadow's judge names, at this commit
                found = self.source.read_file(commit.sha, path, max_bytes=RUBRIC_MAX_BYTES)
                return found[1] if found is not None else None

            routing, routing_problems = validate_routing_bytes(
                listing.routing[1], file=ROUTING_FILE, flow_names=names, read=read
            )
            problems += routing_problems
            if routing is not None and routing.rubrics():
                rubrics = load_rubrics(routing, read, file=ROUTING_FILE)[0]
        flows: dict[str, BuiltFlow] = {}
        failed: dict[str, tuple[Problem, ...]] = {}
        descriptions: dict[str, str] = {}
        blobs: dict[str, str] = {}
        judged = _Judged.of(record) if record is not None else None
        results, waiting = self._flows(listing, judged, wait)
        clashes = duplicate_names(
            (f"{listing.flows_dir}/{f}", name) for f, name in [*((f, r.name) for f, r in results.items()), *waiting]
        )
        pending = {name for f, name in waiting if not any(p.file == f"{listing.flows_dir}/{f}" for p in clashes)}
        for file_name, name in waiting:
            blobs[name] = listing.build(file_name)
            clash = [p for p in clashes if p.file == f"{listing.flows_dir}/{file_name}"]
            if clash:
                failed[name] = (*failed.get(name, ()), *clash)
        for file_name, result in results.items():
            blobs[result.name] = listing.build(file_name)
            clash = [p for p in clashes if p.file == f"{listing.flows_dir}/{file_name}"]
            if result.built is not None and not clash:
                flows[result.name] = result.built
            else:  # two files of one name: neither is served, and each says why
                failed[result.name] = (*failed.get(result.name, ()), *result.problems, *clash)
                if result.description:
                    descriptions[result.name] = result.description
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
            rubrics=rubrics,
            seen=self.clock(),
            content=listing.content,
            pending=frozenset(pending),
            described=descriptions,
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
            breakers=self.breakers,
            knowledge=knowledge,
            fake_embeddings=self.fake_models,
            egress=self.policy.egress,
        )

    def close(self) -> None:
        """Stop judging (the server stops): running tests are killed, queued ones dropped, so that no thread of
        the pools keeps the process from exiting."""
        self.sandbox.close()
        self._tests.shutdown(wait=False, cancel_futures=True)
        self._builds.shutdown(wait=False, cancel_futures=True)

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
        reads = {name: self._globs(name, blob) for name, blob in listing.files.items()}
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

    def _globs(self, file_name: str, blob: str) -> tuple[str, ...]:
        """The globs a flow file's Retrievers read (corpus.reads), read once per file and blob (a LangFlow export's
        Retrievers read the folder its flow's name makes)."""
        key = (file_name, blob)
        if key not in self._reads:
            if len(self._reads) > 10_000:
                self._reads.clear()
            raw = self.source.read_blob(blob, max_bytes=MAX_EXPORT_BYTES)
            self._reads[key] = corpus.reads(raw, name=flow_name(file_name.removesuffix(".json")))
        return self._reads[key]

    def _changed(self, commit: CommitInfo, listing: _Listing) -> tuple[str, ...]:
        before = self._listing(commit.parents[0]).builds() if commit.parents else {}
        now = listing.builds()
        names = {n for n in before.keys() | now.keys() if before.get(n) != now.get(n)}
        return tuple(sorted(n.removesuffix(".json") for n in names))

    def _flows(
        self, listing: _Listing, judged: _Judged | None, wait: float | None
    ) -> tuple[dict[str, _FileResult], list[tuple[str, str]]]:
        """Every flow file's result, by file name, and the (file name, flow name) of those whose tests still run
        after ``wait`` seconds. Cached ones come at once (a revert builds nothing); the others are validated and
        built side by side (at most ``sandbox.processes`` at a time), then their tests run in the test pool, the
        smallest documents first, so that one heavy flow does not hold the commit's other flows back. A flow
        already being tested (its build came in an earlier commit) is not tested twice. A flow that reads documents
        is keyed by their fingerprint too, and built (and tested) with the commit's files. Flow files are read here;
        a Retriever reads its documents through GitSource, whose lock makes that safe from the pools' threads."""
        results: dict[str, _FileResult] = {}
        todo: list[tuple[_Key, bytes]] = []
        deferred: set[_Key] = set()  # flows the leader still tests: pending here until its record has their verdict
        files = self.library.at(corpus.CommitFiles(self.source, listing.tree)) if listing.tree else None
        for file_name in sorted(listing.files):
            key = listing.key(file_name)
            knowledge = files if key[2] else None
            cached = self._cache.get(key) or self._settled(key)
            if cached is None and judged is not None:
                if flow_name(file_name.removesuffix(".json")) in judged.pending and key not in self._judging:
                    deferred.add(key)
                    continue
                cached = self._trusted_result(listing.flows_dir, key, judged, knowledge)
            if cached is not None:
                results[file_name] = cached
            elif key not in self._judging:
                self.validated += 1
                self.on_validated()
                todo.append((key, self.source.read_blob(key[1], max_bytes=MAX_EXPORT_BYTES)))
        todo.sort(key=lambda item: len(item[1]))
        builds = [
            (key, self._builds.submit(self._judge, listing.flows_dir, key[0], raw, files if key[2] else None))
            for key, raw in todo
        ]
        for key, build in builds:
            judging = build.result()
            if not judging.tested:
                results[key[0]] = self._cache[key] = self._verdict(judging)
                continue
            future = self._tests.submit(self._verdict, judging)
            self._judging[key] = future
            future.add_done_callback(functools.partial(self._judged, key))
        keys = [listing.key(f) for f in sorted(listing.files) if f not in results]
        with self._lock:  # a flow some version already went out without is not waited for again
            fresh = [self._judging[key] for key in keys if key not in self._awaited and key not in deferred]
        futures.wait(fresh, timeout=wait)
        waiting: list[tuple[str, str]] = []  # (file name, flow name)
        with self._lock:
            for key in keys:
                result = self._settled(key)
                if result is not None:
                    results[key[0]] = result
                else:
                    if key not in deferred:
                        self._awaited.add(key)
                    waiting.append((key[0], flow_name(key[0].removesuffix(".json"))))
        return dict(sorted(results.items())), waiting

    def _settled(self, key: _Key) -> _FileResult | None:
        """The result of a flow judged in the pool, once it has one (it moves to the cache)."""
        with self._lock:  # a reconcile and a rebuild may take the same verdict at once
            future = self._judging.get(key)
            if future is None or not future.done():
                return None
            del self._judging[key]
            result = future.result()  # done: it does not wait
            self._cache[key] = result
            return result

    def _judged(self, key: _Key, future: futures.Future[_FileResult]) -> None:
        """A flow's verdict arrived: tell the caller when a version went out with the flow pending."""
        with self._lock:
            told = key in self._awaited
            self._awaited.discard(key)
        if told:
            self.on_verdict()

    def _trusted_result(
        self, flows_dir: str, key: _Key, judged: _Judged, knowledge: Knowledge | None
    ) -> _FileResult | None:
        """A flow as the fetch leader recorded it, cached; None when it must be judged here after all."""
        file_name, blob, _ = key
        path = f"{flows_dir}/{file_name}" if flows_dir not in ("", ".") else file_name
        stem = file_name.removesuffix(".json")
        name = flow_name(stem)
        if name not in judged.good and name not in judged.failed:
            return None
        result = self._trust(name, path, blob, judged, knowledge)
        if result.built is None and name not in judged.failed:
            return None
        self._cache[key] = result
        return result

    def _judge(self, flows_dir: str, file_name: str, raw: bytes, knowledge: Knowledge | None) -> _Judging:
        """Validate and build one flow file (``raw``), with the commit's files when it reads documents; its tests are
        left to ``_verdict``."""
        path = f"{flows_dir}/{file_name}" if flows_dir not in ("", ".") else file_name
        stem = file_name.removesuffix(".json")
        name = flow_name(stem)
        # the build below is real, so validation does not dry-build
        report = validate_bytes(
            raw, self.registry, file=path, stem=stem, dry_build=False, policy=self.policy, tools_faked=self.fake_models
        )
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
                    breakers=self.breakers,
                    knowledge=knowledge,
                    fake_embeddings=self.fake_models,
                    egress=self.policy.egress,
                )
            except BuildError as exc:
                where = report.origin(exc.path)  # a converted LangFlow export: the path in the export
                line = LineIndex(raw.decode("utf-8-sig")).line(where)
                problems.append(Problem(code=exc.code, message=str(exc), path=where, file=path, line=line))
        if built is not None:
            built = with_schemas(built)  # here, in the builder's thread, not per request on the event loop
        tested = built is not None and report.spec is not None and bool(report.spec.tests) and self.run_tests
        return _Judging(name, path, raw, built, problems, report.origin, tested, knowledge)

    def _verdict(self, judging: _Judging) -> _FileResult:
        """One flow's result: its tests run (when it has any) in the sandbox, its problems capped and scrubbed."""
        built, problems = judging.built, judging.problems
        if judging.tested and built is not None:
            failures = self._test(built.spec, judging.raw, judging.path, judging.origin, judging.knowledge)
            if failures:
                built, problems = None, [*problems, *failures]
        # capped once the tests' failures are in too; scrubbed of every known secret value
        found = tuple(self.scrubber.problem(p) for p in capped(problems, MAX_PROBLEMS))
        description = self.scrubber.text(described(judging.raw)) if built is None else ""
        return _FileResult(judging.name, built, found, description)

    def _trust(self, name: str, path: str, blob: str, judged: _Judged, knowledge: Knowledge | None) -> _FileResult:
        """A flow as the leader judged it: its recorded problems when it failed there, else parsed and built without
        validation or tests. A flow that does not build here after all (a component or secret this worker lacks) is
        judged in full by the caller, so the problem is the one a single process would report."""
        if name in judged.failed:
            return _FileResult(name, None, judged.failed[name], judged.described.get(name, ""))
        self.trusted += 1
        raw = self.source.read_blob(blob, max_bytes=MAX_EXPORT_BYTES)
        try:
            data = orjson.loads(raw.decode("utf-8-sig"))
            if isinstance(data, dict) and langflow.is_export(data):
                data = langflow.convert(data, name=name).document
            spec = FlowSpec.model_validate(data)
            built = with_schemas(self.build_spec(spec, knowledge))
        except (ValueError, BuildError):  # orjson's and pydantic's errors are ValueErrors
            return _FileResult(name, None, ())
        return _FileResult(name, built, ())

    def _test(
        self, spec: FlowSpec, raw: bytes, path: str, origin: Callable[[str], str], knowledge: Knowledge | None
    ) -> list[Problem]:
        """The flow's own tests, run as `gitops-flow test` runs them (every model answered by its fakes), in the test
        sandbox (a child process with a time and a memory limit; given the documents the flow's Retrievers read):
        each failing case is a problem, so a flow whose tests fail or run past their limit (``test-timeout``) never
        goes live, even when CI was bypassed."""
        results = self.sandbox.run(spec, knowledge)
        lines = LineIndex(raw.decode("utf-8-sig"))
        found = []
        for result in results:
            if not result.passed:
                where = origin(result.path)
                message = f"test {result.case!r} failed: {result.message}"
                found.append(Problem(code=result.code, message=message, path=where, file=path, line=lines.line(where)))
        return found

    def _fakes(self, spec: FlowSpec) -> dict[str, Sequence[str]]:
        """Fake models for every node that would call a real model (fake_answers.py)."""
        return dict(fake_answers(spec, self.registry))
