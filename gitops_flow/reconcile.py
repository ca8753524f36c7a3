"""The reconciler: fetch Git, validate and build each new commit off the request path, publish one routing table.

Fetching is separate from applying (Flux's source-controller): a fetch only moves refs in the local clone; each new
commit of the tracked branch then becomes a Version, built from the blobs of its tree. A flow file's result is cached
by its blob sha, so content seen before (a revert, a commit that touches another flow) costs nothing to build again.
Publishing is the last step and a single assignment, so a request sees the old table or the new one, never a mix.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import anyio

from gitops_flow.build import BuiltFlow, build_flow
from gitops_flow.components import FAKEABLE, ComponentRegistry
from gitops_flow.exceptions import BuildError, GitOpsFlowError, SourceError, StoreError, UnknownVersion
from gitops_flow.jsonpos import LineIndex
from gitops_flow.problems import Problem
from gitops_flow.routing import ROUTING_FILE, RoutingConfig
from gitops_flow.secretrefs import ENV_KEY, env_refs
from gitops_flow.source import CommitInfo, GitSource, Refs
from gitops_flow.stores.base import StateStore
from gitops_flow.traffic import Choice, RoutingTable
from gitops_flow.validate import MAX_BYTES, MAX_EXPORT_BYTES, validate_bytes, validate_routing_bytes
from gitops_flow.versions import MIN_SHORT_SHA, Status, Version

log = logging.getLogger("gitops_flow.reconcile")

FAKE_ANSWER = "This is a fake answer from {node}."


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one reconcile did."""

    changed: bool
    head: str | None = None
    new: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _FileResult:
    """One flow file's validation and build, shared by every commit that carries the same blob."""

    name: str
    built: BuiltFlow | None
    problems: tuple[Problem, ...]


@dataclass(slots=True)
class SourceStatus:
    """How the last fetch went, for /readyz and /versions."""

    url: str
    branch: str
    fetches: int = 0
    last_fetch: float | None = None
    last_error: str | None = None
    trigger: str | None = None


@dataclass(slots=True)
class _Listing:
    flows_dir: str
    files: dict[str, str] = field(default_factory=dict)  # file name -> blob sha
    routing: tuple[str, bytes] | None = None


class Reconciler:
    """Keeps the routing table in step with the tracked branch. One reconcile runs at a time."""

    def __init__(
        self,
        source: GitSource,
        store: StateStore,
        registry: ComponentRegistry,
        *,
        branch: str = "main",
        secrets: Mapping[str, str] | None = None,
        fake_models: bool = False,
        keep: int = 10,
        poll_interval: float = 30.0,
        max_commits: int = 50,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.source = source
        self.store = store
        self.registry = registry
        self.branch = branch
        self.secrets = secrets or {}
        self.fake_models = fake_models
        self.keep = keep
        self.poll_interval = poll_interval
        self.max_commits = max_commits
        self.clock = clock
        self.rand = rand
        self.on_change = on_change
        self.table = RoutingTable(branch)
        self.status = SourceStatus(url=source.url, branch=branch)
        self._versions: dict[str, Version] = {}
        self._cache: dict[tuple[str, str], _FileResult] = {}
        self._observed: str | None = None
        self._observed_refs: Refs | None = None
        self._fallback: Version | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._reasons: list[str] = []
        self.secret_names: set[str] = set()  # every $env name a built flow reads, so logs can redact their values

    # -- triggers ---------------------------------------------------------------------------------------------------

    def request(self, reason: str = "request") -> None:
        """Fetch now (a webhook delivery, an operator): wakes the loop; a burst of requests makes one fetch."""
        self._reasons.append(reason)
        self._wake.set()

    async def run(self) -> None:
        """Reconcile at start, then on every request and every poll interval (with ±10 % jitter), forever."""
        trigger, revived = "start", False
        while True:
            try:
                await self.step(trigger)
                if not revived and self.table.head is not None:
                    await self.revive_pinned()
                    revived = True
            except StoreError as exc:
                log.warning("state store: %s", exc)
            except Exception:  # the loop must survive anything; the reason is logged, the last table keeps serving
                log.exception("reconcile failed")
            delay = self.poll_interval * (0.9 + 0.2 * self.rand())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
                reasons, self._reasons = self._reasons, []
                trigger = ", ".join(dict.fromkeys(reasons)) or "request"
            except TimeoutError:
                trigger = "poll"
            self._wake.clear()

    async def restore(self) -> None:
        """Read what a previous run of the server knew: the versions it saw (for /versions)."""
        for record in await self.store.versions():
            version = Version.from_record(record)
            if version.status == "ready":
                version = version.retired()  # rebuilt below from Git if the head or a session still needs it
            self._versions.setdefault(version.sha, version)

    # -- one reconcile ----------------------------------------------------------------------------------------------

    async def step(self, trigger: str) -> Outcome:
        """One pass of the loop: reconcile, then retire what nothing needs any more; ``on_change`` runs after a pass
        that published a new table."""
        outcome = await self.reconcile(trigger)
        retired = await self.collect()
        if outcome.changed or retired:
            self.on_change()
        return outcome

    async def reconcile(self, trigger: str = "poll") -> Outcome:
        """Fetch, then turn every new commit of the branch into a version and publish the routing table."""
        async with self._lock:
            self.status.trigger = trigger
            try:
                refs = await self.source.fetch()
            except SourceError as exc:
                self.status.last_error = str(exc)
                log.warning("%s", exc)
                return Outcome(changed=False, head=self._observed, error=str(exc))
            self.status.fetches += 1
            self.status.last_fetch = self.clock()
            head = refs.branches.get(self.branch)
            if head is None:
                self.status.last_error = f"branch {self.branch!r} does not exist in {self.source.url}"
                return Outcome(changed=False, head=self._observed, error=self.status.last_error)
            self.status.last_error = None
            if head == self._observed and refs == self._observed_refs:
                return Outcome(changed=False, head=head)
            return await self._apply(refs, head, trigger)

    async def _apply(self, refs: Refs, head: str, trigger: str) -> Outcome:
        previous = self._observed
        commits = await anyio.to_thread.run_sync(self._new_commits, previous, head)
        if (
            previous is not None
            and previous != head
            and not await anyio.to_thread.run_sync(self.source.is_ancestor, previous, head)
        ):
            await self._event("rewritten", head, trigger, detail=f"the branch was force-pushed from {previous[:12]}")
        new: list[str] = []
        for commit in commits:
            if commit.sha in self._versions and self._versions[commit.sha].ready:
                continue
            version = await anyio.to_thread.run_sync(self._prepare, commit)
            self._versions[version.sha] = version
            new.append(version.sha)
            await self.store.put_version(version.sha, version.record())
            if version.ready:
                kind = "deployed" if version.sha == head else "built"
                log.info("%s %s %s (%s)", kind, version.sha[:12], version.summary, trigger)
                await self._event(kind, version.sha, trigger)
            else:
                log.warning("failed %s %s: %d problems", version.sha[:12], version.summary, len(version.problems))
                problems = [p.as_dict() for p in version.problems]
                await self._event("failed", version.sha, trigger, problems=problems)
        self._observed, self._observed_refs = head, refs
        if self.table.head is None and not self._versions[head].ready:
            await self._find_last_good(head)
        self._publish(refs)
        return Outcome(changed=True, head=head, new=tuple(new))

    async def _find_last_good(self, head: str) -> None:
        """A server that starts on a broken head serves the newest good commit before it, if there is one."""
        sha = head
        for _ in range(self.max_commits):
            parents = self._versions[sha].parents if sha in self._versions else ()
            if not parents:
                return
            sha = parents[0]
            version = self._versions.get(sha)
            if version is None or version.status == "retired":
                commit = await anyio.to_thread.run_sync(self.source.commit, sha)
                version = await anyio.to_thread.run_sync(self._prepare, commit)
                self._versions[sha] = version
                await self.store.put_version(sha, version.record())
            if version.ready:
                self._fallback = version
                await self._event("deployed", sha, "start", detail=f"the head {head[:12]} failed; serving its parent")
                return

    def _new_commits(self, previous: str | None, head: str) -> list[CommitInfo]:
        if previous is not None and not self.source.has_commit(previous):
            previous = None
        commits = self.source.commits_between(previous, head, limit=self.max_commits)
        return commits or [self.source.commit(head)]

    def _publish(self, refs: Refs) -> None:
        head = self._last_good()
        self.table = RoutingTable(
            self.branch,
            head=head,
            refs={**refs.tags, **refs.branches},
            versions=dict(self._versions),
        )

    def _last_good(self) -> Version | None:
        """The branch head if it is ready, else the newest ready ancestor we have: a bad commit changes nothing."""
        if self._observed is None:
            return None
        current = self._versions.get(self._observed)
        if current is not None and current.ready:
            return current
        previous = self.table.head or self._fallback
        return self._versions.get(previous.sha) if previous is not None else None

    async def _event(self, kind: str, sha: str, trigger: str, **extra: Any) -> None:
        version = self._versions.get(sha)
        event = {
            "time": self.clock(),
            "event": kind,
            "sha": sha,
            "trigger": trigger,
            "author": version.author if version else None,
            "message": version.summary if version else None,
            "changed": list(version.changed) if version else [],
            **extra,
        }
        await self.store.add_event(event)

    # -- building (in a worker thread) ------------------------------------------------------------------------------

    def _prepare(self, commit: CommitInfo) -> Version:
        listing = self._listing(commit.sha)
        problems: list[Problem] = []
        routing: RoutingConfig | None = None
        names = [name.removesuffix(".json") for name in listing.files]
        if listing.routing is not None:
            _, raw = listing.routing
            routing, routing_problems = validate_routing_bytes(raw, file=ROUTING_FILE, flow_names=names)
            problems += routing_problems
        flows: dict[str, BuiltFlow] = {}
        for file_name, blob in sorted(listing.files.items()):
            result = self._flow(listing.flows_dir, file_name, blob)
            problems += result.problems
            if result.built is not None:
                flows[result.name] = result.built
        status: Status = "failed" if any(p.severity == "error" for p in problems) else "ready"
        return Version(
            sha=commit.sha,
            author=commit.author,
            email=commit.email,
            time=commit.time,
            message=commit.message,
            status=status,
            changed=self._changed(commit, listing),
            parents=commit.parents,
            problems=tuple(problems),
            flows=flows if status == "ready" else {},
            routing=routing,
            seen=self.clock(),
        )

    def _listing(self, sha: str) -> _Listing:
        routing = self.source.read_file(sha, ROUTING_FILE, max_bytes=MAX_BYTES)
        flows_dir = "flows"
        if routing is not None:
            config, _ = validate_routing_bytes(routing[1], file=ROUTING_FILE)
            if config is not None:
                flows_dir = config.flows_dir
        files = self.source.list_files(sha, flows_dir)
        return _Listing(flows_dir, files, routing)

    def _changed(self, commit: CommitInfo, listing: _Listing) -> tuple[str, ...]:
        before = self._listing(commit.parents[0]).files if commit.parents else {}
        names = {n for n in before.keys() | listing.files.keys() if before.get(n) != listing.files.get(n)}
        return tuple(sorted(n.removesuffix(".json") for n in names))

    def _flow(self, flows_dir: str, file_name: str, blob: str) -> _FileResult:
        key = (file_name, blob)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        path = f"{flows_dir}/{file_name}" if flows_dir not in ("", ".") else file_name
        stem = file_name.removesuffix(".json")
        raw = self.source.read_blob(blob, max_bytes=MAX_EXPORT_BYTES)
        report = validate_bytes(raw, self.registry, file=path, stem=stem, dry_build=False)  # the build below is real
        built: BuiltFlow | None = None
        problems = list(report.problems)
        if report.ok and report.spec is not None:
            for node in report.spec.nodes:
                self.secret_names.update(str(ref[ENV_KEY]) for _, ref in env_refs(node.params))
            try:
                built = build_flow(
                    report.spec,
                    self.registry,
                    secrets=self.secrets,
                    history=self.store,
                    fakes=self._fakes(report.spec) if self.fake_models else None,
                )
            except BuildError as exc:
                where = report.origin(exc.path)  # a converted LangFlow export: the path in the export
                line = LineIndex(raw.decode("utf-8-sig")).line(where)
                problems.append(Problem(code=exc.code, message=str(exc), path=where, file=path, line=line))
        result = _FileResult(stem, built, tuple(problems))
        self._cache[key] = result
        return result

    def _fakes(self, spec: Any) -> dict[str, Sequence[str]]:
        """Fake models for every model node: the answers its first test gives it, or a line saying it is fake."""
        fakes: dict[str, list[str]] = {}
        for case in spec.tests:
            for node_id, answers in case.fakes.items():
                fakes.setdefault(node_id, list(answers))
        for node in spec.nodes:
            if self.registry.kind_of(node.component) in FAKEABLE and node.id not in fakes:
                fakes[node.id] = [FAKE_ANSWER.format(node=node.id)]
        return dict(fakes)

    # -- explicit pins ----------------------------------------------------------------------------------------------

    async def pinned(self, text: str) -> Choice:
        """The version an explicit pin names (SPEC 4): a ref, a full or a short sha.

        A commit of the tracked branch's history that this process has not built (it predates the server's start)
        or has retired is built now. A commit off the branch is never served: only what was merged ships. Raises
        UnknownVersion when nothing matches, NotServable for a commit that failed validation.
        """
        table = self.table
        try:
            sha, ref = table.resolve(text)
        except UnknownVersion:
            found = await anyio.to_thread.run_sync(self._commit_named, text)
            if found is None:
                raise
            sha, ref = found, None
        version = table.versions.get(sha)
        if version is None or version.status == "retired":
            if not await self._on_branch(sha):
                named = f"ref {ref!r} points at" if ref is not None else "commit"
                if version is not None:
                    table.servable(version)  # raises: retired
                raise UnknownVersion(
                    f"{named} {sha[:12]}, which this server has not built: only commits of branch {self.branch!r}"
                    " are served"
                )
            version = await self.ensure(sha)
            assert version is not None, "ensure() finds every commit of the branch"
        return Choice(table.servable(version), ref)

    def _commit_named(self, text: str) -> str | None:
        """The full sha of the commit a (short) sha names in the clone, None for anything else: a pin is never a
        revision expression (``main~3``), only a sha or a ref the table knows."""
        text = text.strip().lower()
        if len(text) < MIN_SHORT_SHA or any(c not in "0123456789abcdef" for c in text):
            return None
        try:
            return self.source.commit(text).sha
        except UnknownVersion:
            return None

    async def _on_branch(self, sha: str) -> bool:
        head = self._observed
        return head is not None and await anyio.to_thread.run_sync(self.source.is_ancestor, sha, head)

    # -- memory -----------------------------------------------------------------------------------------------------

    async def ensure(self, sha: str) -> Version | None:
        """Build a commit the server has not loaded (a session pinned before a restart); None if Git lacks it."""
        async with self._lock:
            known = self._versions.get(sha)
            if known is not None and known.status != "retired":
                return known
            if not await anyio.to_thread.run_sync(self.source.has_commit, sha):
                return None
            commit = await anyio.to_thread.run_sync(self.source.commit, sha)
            version = await anyio.to_thread.run_sync(self._prepare, commit)
            if known is not None:
                version = replace(version, seen=known.seen)
            self._versions[sha] = version
            await self.store.put_version(sha, version.record())
            if self._observed_refs is not None:
                self._publish(self._observed_refs)
            return version

    async def collect(self) -> list[str]:
        """Retire ready versions that nothing needs, so memory stays bounded.

        Kept: the head, every version a ref points at, every version a live session is pinned to, and the newest
        ``keep`` ready versions (so a revert or a pin to a recent version is instant). Build results no kept
        version uses are dropped with them.
        """
        async with self._lock:
            pinned = await self.store.pinned_versions()
            ready = [v for v in self._versions.values() if v.ready]
            keep = {v.sha for v in ready[-self.keep :]} | pinned | set(self.table.refs.values())
            if self.table.head is not None:
                keep.add(self.table.head.sha)
            retired = [v.sha for v in ready if v.sha not in keep]
            for sha in retired:
                self._versions[sha] = self._versions[sha].retired()
                await self.store.put_version(sha, self._versions[sha].record())
                await self._event("retired", sha, "collect")
            if retired:
                used = {id(f) for v in self._versions.values() if v.ready for f in v.flows.values()}
                self._cache = {k: r for k, r in self._cache.items() if r.built is None or id(r.built) in used}
                if self._observed_refs is not None:
                    self._publish(self._observed_refs)
            return retired

    async def revive_pinned(self) -> None:
        """After a restart: rebuild every version a live session is still pinned to."""
        for sha in await self.store.pinned_versions():
            version = self._versions.get(sha)
            if version is None or version.status == "retired":
                try:
                    await self.ensure(sha)
                except GitOpsFlowError as exc:
                    log.warning("cannot rebuild pinned version %s: %s", sha[:12], exc)

    @property
    def versions(self) -> list[Version]:
        return list(self._versions.values())
