"""The reconciler: fetch Git, turn each new commit into a version off the request path, publish one routing table.

Fetching is separate from applying (Flux's source-controller): a fetch only moves refs in the local clone; each new
commit of the tracked branch then becomes a Version (builder.py), and so does every commit of the branch that a ref
named in the routing file points at. Publishing is the last step and a single assignment, so a request sees the old
table or the new one, never a mix. Deploy events go to the state store once per fact, however many replicas see it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import anyio

from gitops_flow.builder import VersionBuilder
from gitops_flow.exceptions import GitOpsFlowError, SourceError, StoreError, UnknownVersion
from gitops_flow.source import CommitInfo, GitSource, Refs
from gitops_flow.stores.base import Record, StateStore
from gitops_flow.traffic import Choice, RoutingTable
from gitops_flow.versions import MIN_SHORT_SHA, Version

log = logging.getLogger("gitops_flow.reconcile")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one reconcile did."""

    changed: bool
    head: str | None = None
    new: tuple[str, ...] = ()
    error: str | None = None


@dataclass(slots=True)
class SourceStatus:
    """How the last fetch went, for /readyz and /versions."""

    url: str
    branch: str
    fetches: int = 0
    last_fetch: float | None = None
    last_error: str | None = None
    trigger: str | None = None


class Reconciler:
    """Keeps the routing table in step with the tracked branch. One reconcile runs at a time."""

    def __init__(
        self,
        source: GitSource,
        store: StateStore,
        builder: VersionBuilder,
        *,
        branch: str = "main",
        keep: int = 10,
        poll_interval: float = 30.0,
        max_commits: int = 50,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        on_change: Callable[[], None] = lambda: None,
        on_event: Callable[[Record], None] = lambda event: None,
        scrub: Callable[[Record], Record] = lambda event: event,
    ) -> None:
        self.source = source
        self.store = store
        self.builder = builder
        self.branch = branch
        self.keep = keep
        self.poll_interval = poll_interval
        self.max_commits = max_commits
        self.clock = clock
        self.rand = rand
        self.on_change = on_change
        self.on_event = on_event
        self.scrub = scrub  # takes the secret values the server knows out of each event before it is stored
        self.table = RoutingTable(branch)
        self.status = SourceStatus(url=source.url, branch=branch)
        self._versions: dict[str, Version] = {}
        self._observed: str | None = None
        self._observed_refs: Refs | None = None
        self._fallback: Version | None = None
        self._aborted: frozenset[str] = frozenset()
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._reasons: list[str] = []

    # -- triggers ---------------------------------------------------------------------------------------------------

    def request(self, reason: str = "request") -> None:
        """Fetch now (a webhook delivery, a replica, an operator): wakes the loop; a burst makes one fetch."""
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
        """Read what a previous run of the server knew: the versions it saw (for /versions) and the aborts."""
        for record in await self.store.versions():
            version = Version.from_record(record)
            if version.status == "ready":
                version = version.retired()  # rebuilt from Git if the head, a ref or a session still needs it
            self._versions.setdefault(version.sha, version)
        self._aborted = frozenset(await self.store.aborts())

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
        previous, previous_refs = self._observed, self._observed_refs
        commits = await anyio.to_thread.run_sync(self._new_commits, previous, head)
        if (
            previous is not None
            and previous != head
            and not await anyio.to_thread.run_sync(self.source.is_ancestor, previous, head)
        ):
            detail = f"the branch was force-pushed from {previous[:12]}"
            await self._event("rewritten", head, trigger, once=f"rewritten:{previous}:{head}", detail=detail)
        new: list[str] = []
        for commit in commits:
            if commit.sha in self._versions and self._versions[commit.sha].ready:
                continue
            content_seen = {v.content: v.sha for v in self._versions.values() if v.content and v.sha != commit.sha}
            version = await self._build(commit)
            try:
                await self._announce(version, head, trigger, content_seen.get(version.content), previous)
            except StoreError:
                del self._versions[version.sha]  # not recorded: the next pass builds it (from the cache) and tells
                raise
            new.append(version.sha)
        self._observed, self._observed_refs = head, refs
        if self.table.head is None and not self._versions[head].ready:
            await self._find_last_good(head)
        if previous_refs is not None:
            await self._refs_moved(previous_refs.tags, refs.tags, trigger)
        await self._build_referenced(refs, head, trigger)
        self._publish()
        return Outcome(changed=True, head=head, new=tuple(new))

    async def _build(self, commit: CommitInfo) -> Version:
        """Build a commit and save its record; it joins the versions only once the store has it."""
        version = await anyio.to_thread.run_sync(self.builder.build, commit)
        known = self._versions.get(commit.sha)
        if known is not None:
            version = replace(version, seen=known.seen)
        await self.store.put_version(version.sha, version.record())
        self._versions[version.sha] = version
        return version

    async def _announce(
        self, version: Version, head: str, trigger: str, same_as: str | None, previous: str | None
    ) -> None:
        """Record what a newly built commit means: deployed (or rolled back, when it serves what an earlier commit
        served), built (an older commit of the same fetch), or failed with its problems."""
        if not version.ready:
            log.warning("failed %s %s: %d problems", version.sha[:12], version.summary, len(version.problems))
            problems = [p.as_dict() for p in version.problems]
            await self._event("failed", version.sha, trigger, problems=problems)
            return
        if version.sha != head:
            await self._event("built", version.sha, trigger)
            return
        current = self._versions.get(previous) if previous is not None else None
        if same_as is not None and (current is None or current.content != version.content):
            log.info("rolled back %s %s to the content of %s (%s)", head[:12], version.summary, same_as[:12], trigger)
            await self._event("rolled-back", head, trigger, restores=same_as)
            return
        log.info("deployed %s %s (%s)", head[:12], version.summary, trigger)
        await self._event("deployed", head, trigger)

    async def _refs_moved(self, before: Mapping[str, str], after: Mapping[str, str], trigger: str) -> None:
        """Record each tag created, moved or deleted; a moved or deleted tag's canary aborts are lifted, since the
        guard judges a ref anew at each commit it points to."""
        for name in sorted(before.keys() | after.keys()):
            old, new = before.get(name), after.get(name)
            if old == new:
                continue
            key = f"tag:{name}:{old}:{new}"
            await self._event("tag-moved", new or old or "", trigger, once=key, ref=name, before=old, after=new)
            if old is not None:
                for abort in [k for k in self._aborted if k.endswith(f":{name}:{old}")]:
                    await self.store.drop_abort(abort)
                self._aborted = frozenset(await self.store.aborts())

    async def _build_referenced(self, refs: Refs, head: str, trigger: str) -> None:
        """Build the commits that refs named by the routing file point at, if they are on the tracked branch; a ref
        off the branch is refused once, in the history (only what was merged is ever served)."""
        current = self._last_good()
        routing = current.routing if current is not None else None
        if routing is None:
            return
        named = {target.ref for targets in routing.routes.values() for target in targets}
        wanted = {n: sha for n, sha in refs.tags.items() if n in named or n.partition("/")[2] in named}
        for name, sha in sorted(wanted.items()):
            known = self._versions.get(sha)
            if known is not None and known.status != "retired":
                continue
            if await anyio.to_thread.run_sync(self.source.is_ancestor, sha, head):
                await self._build(await anyio.to_thread.run_sync(self.source.commit, sha))
            else:
                detail = f"tag {name!r} points at {sha[:12]}, which is not on branch {self.branch!r}; it is not served"
                log.warning("%s", detail)
                await self._event("ref-refused", sha, trigger, once=f"refused:{name}:{sha}", ref=name, detail=detail)

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
                version = await self._build(await anyio.to_thread.run_sync(self.source.commit, sha))
            if version.ready:
                self._fallback = version
                detail = f"the head {head[:12]} failed; serving its parent"
                await self._event("deployed", sha, "start", detail=detail)
                return

    def _new_commits(self, previous: str | None, head: str) -> list[CommitInfo]:
        if previous is not None and not self.source.has_commit(previous):
            previous = None
        commits = self.source.commits_between(previous, head, limit=self.max_commits)
        return commits or [self.source.commit(head)]

    def _publish(self) -> None:
        refs = self._observed_refs or Refs({}, {})
        self.table = RoutingTable.publish(
            self.branch,
            self._last_good(),
            {**refs.tags, **refs.branches},
            self._versions,
            self._aborted,
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

    async def _event(self, kind: str, sha: str, trigger: str, *, once: str | None = None, **extra: Any) -> None:
        """Add a deploy event to the shared history, once per fact (``once`` defaults to the kind and commit)."""
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
        event = self.scrub(event)
        if await self.store.add_event(event, once=once or f"{kind}:{sha}"):
            self.on_event(event)

    # -- the canary guard's decisions -------------------------------------------------------------------------------

    async def stop_canaries(self, new: Mapping[str, Record], aborted: Iterable[str]) -> None:
        """Take the guard's view: record each canary it aborted here, then publish the table with every abort known
        to the store (this replica's and the others'), so an abort holds everywhere."""
        for key, figures in new.items():
            route, ref, sha = key.rsplit(":", 2)
            log.warning("aborted ref %r at %s on route %r: %s", ref, sha[:12], route, figures.get("reason"))
            await self._event("aborted", sha, "analysis", once=f"aborted:{key}", route=route, ref=ref, **figures)
        stopped = frozenset(aborted)
        if stopped != self._aborted:
            self._aborted = stopped
            self._publish()

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
        """Build a commit the server has not loaded (a pin, a session pinned before a restart); None if Git lacks
        it."""
        async with self._lock:
            known = self._versions.get(sha)
            if known is not None and known.status != "retired":
                return known
            if not await anyio.to_thread.run_sync(self.source.has_commit, sha):
                return None
            version = await self._build(await anyio.to_thread.run_sync(self.source.commit, sha))
            if self._observed is not None:
                self._publish()
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
                self.builder.forget(v for v in self._versions.values() if v.ready)
                if self._observed is not None:
                    self._publish()
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
