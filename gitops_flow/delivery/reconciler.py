"""The reconciler: fetch Git, turn each new commit into a version off the request path, publish one routing table.

Fetching is separate from applying (Flux's source-controller): a fetch only moves refs in the local clone; each new
commit of the tracked branch then becomes a Version (builder.py), its flows judged one by one, and so does every
commit of the branch that a ref named in the routing file points at. A flow that fails at a commit keeps serving its
last good build (carried from the commit's parent); the others go live. Publishing is the last step and a single
assignment, so a request sees the old table or the new one, never a mix. Deploy events go to the state store once
per fact, however many replicas see it.

Among the workers of one `serve --workers N` (leader.py) only the leader fetches, validates and tests; a follower
reads the refs the leader fetched into the shared clone, waits until the leader has recorded the head, and builds
each commit from the leader's record of it (which flows are good, which failed and why) without judging it again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

import anyio

from gitops_flow.config import PinPolicy
from gitops_flow.delivery.builds import VERDICT_WAIT_S, VersionBuilder, carry
from gitops_flow.delivery.canaries import Action, Canaries
from gitops_flow.delivery.journal import DeployLog
from gitops_flow.delivery.leader import Leadership
from gitops_flow.delivery.pins import Pins
from gitops_flow.delivery.progress import Rollouts
from gitops_flow.delivery.rebuilds import Rebuilds
from gitops_flow.delivery.routing_table import Choice, RoutingTable
from gitops_flow.delivery.source import CommitInfo, GitSource, Refs
from gitops_flow.delivery.versions import Version
from gitops_flow.exceptions import SourceError, StoreError, UnknownVersion
from gitops_flow.problems import Problem, log_text
from gitops_flow.stores.base import AbortStore, EventStore, PinStore, Record, VersionStore
from gitops_flow.stores.events import DeployedFacts, DeployEvent, Facts, FailedFacts, RolledBackFacts

MAX_CARRY_DEPTH = 20  # ancestors built to find a failed flow's last good build when the server has not seen them

log = logging.getLogger("gitops_flow.reconcile")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one reconcile did."""

    changed: bool
    head: str | None = None
    new: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Prepared:
    """A new head's commits (oldest first), whether the branch was rewritten, and the builds made off the loop."""

    commits: list[CommitInfo]
    rewritten: bool
    built: dict[str, Version]


@dataclass(slots=True)
class SourceStatus:
    """How the last fetch went, for /readyz and /versions."""

    url: str
    branch: str
    fetches: int = 0
    last_fetch: float | None = None
    last_error: str | None = None
    trigger: str | None = None
    building: str | None = None  # the commit being built now, for the console


class DeliveryStore(VersionStore, EventStore, AbortStore, PinStore, Protocol):
    """What delivery keeps in the store: version records, the deploy history (journal.py), canary aborts
    (canaries.py), and the pins that keep a version alive."""


MAX_LOGGED_PROBLEMS = 20  # per flow or commit; the rest are counted, and /versions lists them all


def _log_problems(problems: Iterable[Problem]) -> None:
    """One log line per problem: where it is, its code and what is wrong (so the log names each problem)."""
    found = list(problems)
    for problem in found[:MAX_LOGGED_PROBLEMS]:
        place = f"{problem.file}:{problem.line}" if problem.line else problem.file or problem.path
        log.warning("  %s %s: %s", place, problem.code, problem.message)
    if len(found) > MAX_LOGGED_PROBLEMS:
        log.warning("  and %d more problems (GET /versions lists them)", len(found) - MAX_LOGGED_PROBLEMS)


class Reconciler:
    """Keeps the routing table in step with the tracked branch. One reconcile runs at a time."""

    def __init__(
        self,
        source: GitSource,
        store: DeliveryStore,
        builder: VersionBuilder,
        *,
        branch: str = "main",
        keep: int = 10,
        pins: PinPolicy = "current",
        rebuilds_kept: int = 8,
        poll_interval: float = 30.0,
        max_commits: int = 50,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        on_change: Callable[[], None] = lambda: None,
        on_event: Callable[[DeployEvent], None] = lambda event: None,
        scrub: Callable[[Record], Record] = lambda event: event,
        leadership: Leadership | None = None,
        on_fetch: Callable[[], None] = lambda: None,
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
        self.leadership = leadership  # None: this process fetches itself (one worker, or a replica of its own)
        self.on_fetch = on_fetch
        self._records: dict[str, Record] = {}  # a follower's view of what the leader recorded, by sha
        self.history = DeployLog(store, lambda: self._versions, clock=clock, scrub=scrub, on_event=on_event)
        self.canaries = Canaries(store, self.history, clock=clock)
        self.rollouts = Rollouts(store, self.history, clock=clock)
        self.table = RoutingTable(branch)
        self.status = SourceStatus(url=source.url, branch=branch)
        self._versions: dict[str, Version] = {}
        self._observed: str | None = None
        self._observed_refs: Refs | None = None
        self._fallback: Version | None = None
        self._yanks: dict[str, tuple[str, dict[str, str]]] = {}  # a yanked entry -> (its commit, the builds it brought)
        self._ancestry: dict[tuple[str, str], bool] = {}
        self.rebuilds = Rebuilds(self._rebuild, limit=rebuilds_kept)
        self.pins = Pins(pins, versions=lambda: self._versions, on_branch=self._on_branch, rebuilds=self.rebuilds)
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
        trigger = "start"
        loop = asyncio.get_running_loop()

        def verdict() -> None:  # called in the builder's pool thread
            loop.call_soon_threadsafe(self.request, "verdict")

        self.builder.on_verdict = verdict
        threading.Thread(target=self.builder.sandbox.warm, name="gitops-flow test sandbox", daemon=True).start()
        while True:
            try:
                await self.step(trigger)
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
            self._records[str(record["sha"])] = record
            version = Version.from_record(record)
            if version.status == "ready":
                version = version.retired()  # rebuilt from Git if the head, a ref or a session still needs it
            self._versions.setdefault(version.sha, version)
        await self.canaries.restore()
        await self.rollouts.restore()

    # -- one reconcile ----------------------------------------------------------------------------------------------

    async def step(self, trigger: str) -> Outcome:
        """One pass of the loop: reconcile, then retire what nothing needs any more; ``on_change`` runs after a pass
        that published a new table."""
        if trigger == "verdict":  # a pending flow's tests ended: no fetch, only the verdicts
            outcome = Outcome(changed=False, head=self._observed)
        else:
            outcome = await self.reconcile(trigger)
        settled = await self.settle()
        retired = await self.collect()
        if outcome.changed or settled.changed or retired:
            self.on_change()
        return outcome

    async def reconcile(self, trigger: str = "poll") -> Outcome:
        """Fetch, then turn every new commit of the branch into a version and publish the routing table."""
        async with self._lock:
            self.status.trigger = trigger
            following = self.leadership is not None and not self.leadership.leading
            try:
                if following:  # the leader fetches: read what it fetched into the shared clone (no network)
                    refs = await anyio.to_thread.run_sync(self.source.refs)
                else:
                    refs = await self.source.fetch()
                    self.on_fetch()
            except SourceError as exc:
                self.status.last_error = str(exc)
                log.warning("%s", exc)
                return Outcome(changed=False, head=self._observed, error=str(exc))
            if not following:
                self.status.fetches += 1
            self.status.last_fetch = self.clock()
            head = refs.branches.get(self.branch)
            if head is None and following:
                return Outcome(changed=False, head=self._observed, error="waiting for the fetch leader")
            if head is None:
                self.status.last_error = f"branch {self.branch!r} does not exist in {self.source.url}"
                return Outcome(changed=False, head=self._observed, error=self.status.last_error)
            if following and (head != self._observed or refs != self._observed_refs):
                self._records = {str(r["sha"]): r for r in await self.store.versions()}
                if head not in self._records:  # the leader is still on it: its wake-up comes once it is recorded
                    return Outcome(changed=False, head=self._observed)
            self.status.last_error = None
            if head == self._observed and refs == self._observed_refs:
                return Outcome(changed=False, head=head)
            try:
                return await self._apply(refs, head, trigger)
            finally:
                self.status.building = None

    async def _apply(self, refs: Refs, head: str, trigger: str) -> Outcome:
        previous, previous_refs = self._observed, self._observed_refs
        prepared = await anyio.to_thread.run_sync(self._prepare, previous, head)
        if prepared.rewritten:
            detail = f"the branch was force-pushed from {previous[:12] if previous else ''}"
            facts: Facts = {"event": "rewritten", "detail": detail}
            await self.history.record(head, trigger, facts, once=f"rewritten:{previous}:{head}")
        new: list[str] = []
        for commit in prepared.commits:
            if commit.sha in self._versions and self._versions[commit.sha].ready:
                continue
            # only content that served counts: a merge commit (--no-ff) has its branch tip's content, built in the
            # same fetch but never live, and is a deploy, not a rollback
            content_seen = {
                v.content: v.sha for v in self._versions.values() if v.content and v.went_live and v.sha != commit.sha
            }
            self.status.building = commit.sha
            version = await self._build(commit, prepared.built.get(commit.sha), save=False)
            writes = [self._announce(version, head, trigger, content_seen.get(version.content), previous)]
            if self._trusted(version.sha) is None:  # a follower keeps the leader's record as it is
                writes.append(self.store.put_version(version.sha, version.record()))
            try:  # its record and what it means are written at once: one wait behind the requests, not two
                await asyncio.gather(*writes)
            except StoreError:
                del self._versions[version.sha]  # not recorded: the next pass builds it (from the cache) and tells
                raise
            new.append(version.sha)
            self._lighten(version)
        self._observed, self._observed_refs = head, refs
        self._ancestry.clear()
        if self.table.head is None and self._versions[head].status == "failed":
            await self._find_last_good(head)
        if previous_refs is not None:
            await self._refs_moved(previous_refs.tags, refs.tags, trigger)
        await self._build_referenced(refs, head, trigger)
        await self._hold_served()
        await self._read_yanks()
        await self._publish_live(trigger)
        return Outcome(changed=True, head=head, new=tuple(new))

    def _wait(self) -> float | None:
        """Seconds a build waits for its flows' tests: VERDICT_WAIT_S while a table is served (a flow still tested
        then goes live on its verdict, and holds nothing back); at start, until every verdict (each bounded by the
        test sandbox's time limit), so that a server starts serving its flows complete."""
        return VERDICT_WAIT_S if self.table.head is not None else None

    async def settle(self) -> Outcome:
        """Give each pending flow its verdict (its tests ended after its commit went out): every version that has
        pending flows is built again (from the builder's cache: nothing is judged twice), recorded and announced,
        and the table published, without a fetch. A flow that passed goes live; one that failed keeps its carried
        build. The other flows never waited for it."""
        async with self._lock:
            head = self._observed
            settled = False
            waiting = [v for v in self._versions.values() if v.pending and v.ready]
            if waiting and self.leadership is not None and not self.leadership.leading:
                # a follower's pending flows are the leader's: its record has their verdicts once it has them
                self._records = {str(r["sha"]): r for r in await self.store.versions()}
            for old in waiting:
                commit = await anyio.to_thread.run_sync(self.source.commit, old.sha)
                parent = self._versions.get(old.parents[0]) if old.parents else None
                record = self._trusted(old.sha)
                build = functools.partial(self.builder.build, commit, parent, record, wait=0)
                version = replace(await anyio.to_thread.run_sync(build), seen=old.seen, went_live=old.went_live)
                if version.pending == old.pending and version.carried == old.carried:
                    continue
                self._versions[version.sha] = version
                settled = True
                if record is None:
                    await self.store.put_version(version.sha, version.record())
                await self._announce_verdicts(old, version, head)
            if settled and head is not None:
                await self._publish_live("verdict")
            return Outcome(changed=settled, head=head)

    async def _announce_verdicts(self, old: Version, version: Version, head: str | None) -> None:
        """Record what the verdicts that arrived for ``version`` mean: each flow it changed that failed its tests,
        and, at the head, each that went live."""
        for name in sorted(old.pending - version.pending):
            if name not in version.changed:
                continue
            if name in version.failed:
                problems = [p.as_dict() for p in version.failed[name]]
                log.warning("failed %s at %s: %s", name, version.sha[:12], log_text(version.failed[name]))
                serving = version.carried.get(name)
                once = f"failed:{version.sha}:{name}"
                await self.history.record(
                    version.sha,
                    "verdict",
                    FailedFacts(event="failed", flow=name, problems=problems, serving=serving),
                    once=once,
                )
            elif name in version.names and version.sha == head:
                log.info("deployed %s at %s: its tests passed", name, version.sha[:12])
                await self.history.record(
                    version.sha,
                    "verdict",
                    DeployedFacts(event="deployed", flow=name),
                    once=f"verdict:{version.sha}:{name}",
                )

    def _prepare(self, previous: str | None, head: str) -> Prepared:
        """What Git says about a new head, and the builds of its new commits, in one call off the event loop.

        Under a saturated core every await of the reconciler waits behind a round of requests, so a deploy made of
        many small awaits (list the commits, check the ancestry, build each commit) took about a second from push
        to first answer; made here in one call, its work is not starved. A commit whose parent the server has not
        seen is left to ``_build`` (which builds its ancestors to carry failed flows), and so are the commits of a
        fetch that brought several (built one after another there, so that they do not all sit in memory at once).
        """
        commits = self._new_commits(previous, head)
        rewritten = previous is not None and previous != head and not self.source.is_ancestor(previous, head)
        pending = [c for c in commits if c.sha not in self._versions or not self._versions[c.sha].ready]
        built: dict[str, Version] = {}
        if len(pending) == 1:  # several are built one by one, each parent lightened once its child is built
            commit = pending[0]
            first = commit.parents[0] if commit.parents else None
            parent = self._versions.get(first) if first is not None else None
            if parent is not None or first is None:
                built[commit.sha] = self.builder.build(commit, parent, self._trusted(commit.sha), wait=self._wait())
        return Prepared(commits, rewritten, built)

    async def _build(
        self, commit: CommitInfo, prebuilt: Version | None = None, depth: int = 0, *, save: bool = True
    ) -> Version:
        """Build a commit (``prebuilt``: built already, by ``_prepare``) and, with ``save``, save its record first;
        it joins the versions once the store has it (without ``save``, the caller saves it before publishing).

        A flow that failed at it serves its parent's build of it; when the server has not seen the parent (a first
        start, a pin), the parent is built too, up to MAX_CARRY_DEPTH ancestors.
        """
        first = commit.parents[0] if commit.parents else None
        parent = self._versions.get(first) if first is not None else None
        record = self._trusted(commit.sha)
        if prebuilt is not None:
            version = prebuilt
        else:
            version = await anyio.to_thread.run_sync(
                functools.partial(self.builder.build, commit, parent, record, wait=self._wait())
            )
        waiting = version.failed or version.pending or not version.ready
        if parent is None and first is not None and waiting and depth < MAX_CARRY_DEPTH:
            parent = await self._build(await anyio.to_thread.run_sync(self.source.commit, first), None, depth + 1)
            version = carry(version, parent)
        known = self._versions.get(commit.sha)
        if known is not None:
            version = replace(version, seen=known.seen, went_live=known.went_live)
        if save and record is None:  # a follower keeps the leader's record as it is
            await self.store.put_version(version.sha, version.record())
        self._versions[version.sha] = version
        return version

    def _lighten(self, version: Version) -> None:
        """Keep a long fetch from holding every commit's builds at once: once ``version`` is built, its first parent
        (if it is neither a ref's nor the head's) keeps only the builds ``version`` still serves from it."""
        parent = self._versions.get(version.parents[0]) if version.parents else None
        if parent is None or not parent.ready or parent.sha in self._held():
            return
        needed = [name for name, sha in version.served().items() if sha == parent.sha]
        self._versions[parent.sha] = parent.keeping(needed)
        self.builder.forget(v for v in self._versions.values() if v.ready)

    def _held(self) -> set[str]:
        """What serves now: the head, the commit each ref points at, and the commits their carried flows come from."""
        refs = self._observed_refs.tags.values() if self._observed_refs is not None else ()
        holders = [self.table.head, *(self._versions.get(sha) for sha in refs)]
        held = {v.sha for v in holders if v is not None}
        return held | {sha for v in holders if v is not None for sha in v.served().values()}

    async def _hold_served(self) -> None:
        """Make sure every build the head and the refs serve is in memory (a carried build retired before a restart,
        say): rebuilt from Git here, once."""
        head = self._last_good()
        refs = self._observed_refs.tags.values() if self._observed_refs is not None else ()
        holders = [v for v in (head, *(self._versions.get(sha) for sha in refs)) if v is not None and v.ready]
        for holder in holders:
            for flow, sha in holder.served().items():
                version = self._versions.get(sha)
                if version is not None and (flow in version.flows or not version.ready and version.status != "retired"):
                    continue
                if not await anyio.to_thread.run_sync(self.source.has_commit, sha):
                    continue
                await self._build(await anyio.to_thread.run_sync(self.source.commit, sha))

    async def _announce(
        self, version: Version, head: str, trigger: str, same_as: str | None, previous: str | None
    ) -> None:
        """Record what a newly built commit means: deployed (or rolled back, when it serves what an earlier commit
        served), built (an older commit of the same fetch), or failed as a whole; and each flow it changed that
        failed, with its problems and the version it keeps serving."""
        if version.status == "failed":
            log.warning("failed %s %s: %s", version.sha[:12], version.summary, log_text(version.problems))
            _log_problems(version.problems)
            problems = [p.as_dict() for p in version.problems]
            await self.history.record(version.sha, trigger, {"event": "failed", "problems": problems})
            return
        changed = set(version.changed)
        for name in sorted(version.failed):
            if name in changed or previous is None:
                problems = [p.as_dict() for p in version.failed[name]]
                serving = version.carried.get(name)
                log.warning("failed %s at %s: %s", name, version.sha[:12], log_text(version.failed[name]))
                _log_problems(version.failed[name])
                once = f"failed:{version.sha}:{name}"
                facts: Facts = {"event": "failed", "problems": problems, "flow": name, "serving": serving}
                await self.history.record(version.sha, trigger, facts, once=once)
        if version.sha != head:
            await self.history.record(version.sha, trigger, {"event": "built"})
            return
        failed = sorted(version.failed)
        if changed and changed <= set(failed) | version.pending and previous is not None:
            return  # everything it changed failed or waits for its tests: nothing new goes live yet
        current = self._versions.get(previous) if previous is not None else None
        went: RolledBackFacts | DeployedFacts
        if same_as is not None and (current is None or current.content != version.content):
            log.info("rolled back %s %s to the content of %s (%s)", head[:12], version.summary, same_as[:12], trigger)
            went = {"event": "rolled-back", "restores": same_as}
        else:
            if version.failed and not version.served():
                log.error(
                    "not ready: every flow failed at %s %s and none has a good build to serve",
                    head[:12],
                    version.summary,
                )
                return  # nothing of it serves: it was not deployed (its failures were recorded above)
            log.info("deployed %s %s (%s)", head[:12], version.summary, trigger)
            went = {"event": "deployed"}
        if failed:
            went["failed_flows"] = failed
        await self.history.record(head, trigger, went)

    async def _refs_moved(self, before: Mapping[str, str], after: Mapping[str, str], trigger: str) -> None:
        """Record each tag created, moved or deleted."""
        for name in sorted(before.keys() | after.keys()):
            old, new = before.get(name), after.get(name)
            if old == new:
                continue
            key = f"tag:{name}:{old}:{new}"
            facts: Facts = {"event": "tag-moved", "ref": name, "before": old, "after": new}
            await self.history.record(new or old or "", trigger, facts, once=key)

    async def _build_referenced(self, refs: Refs, head: str, trigger: str) -> None:
        """Build the commits that refs named by the routing file (its routes' and their shadows') point at, if they are
        on the tracked branch; a ref off the branch is refused once, in the history (only what was merged is ever
        served)."""
        current = self._last_good()
        routing = current.routing if current is not None else None
        if routing is None:
            return
        named = {target.ref for targets in routing.routes.values() for target in targets}
        named |= {s.ref for targets in routing.routes.values() for target in targets for s in target.shadow}
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
                facts: Facts = {"event": "ref-refused", "ref": name, "detail": detail}
                await self.history.record(sha, trigger, facts, once=f"refused:{name}:{sha}")

    async def _find_last_good(self, head: str) -> None:
        """A server that starts on a head that failed as a whole serves the newest good commit before it."""
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
                await self.history.record(sha, "start", {"event": "deployed", "detail": detail})
                return

    def _new_commits(self, previous: str | None, head: str) -> list[CommitInfo]:
        if previous is not None and not self.source.has_commit(previous):
            previous = None
        commits = self.source.commits_between(previous, head, limit=self.max_commits)
        return commits or [self.source.commit(head)]

    async def _read_yanks(self) -> None:
        """The builds each commit the routing file yanks brought in (VersionBuilder.introduced), read from Git once
        per entry: a yank is by build. An entry the clone has no commit for yanks only what its sha names."""
        current = self._last_good()
        routing = current.routing if current is not None else None
        for prefix in routing.yanked if routing is not None else ():
            if prefix in self._yanks:
                continue
            try:
                commit = await anyio.to_thread.run_sync(self.source.commit, prefix)
                builds = await anyio.to_thread.run_sync(self.builder.introduced, commit.sha)
            except (UnknownVersion, SourceError) as exc:
                log.warning("yanked %s: its builds could not be read: %s", prefix, exc)
                continue
            self._yanks[prefix] = (commit.sha, builds)

    def _yanked_builds(self) -> set[tuple[str, str]]:
        """The builds the routing file of the table's head yanks, as (flow, blob)."""
        current = self._last_good()
        routing = current.routing if current is not None else None
        prefixes = routing.yanked if routing is not None else ()
        return {(flow, blob) for p in prefixes if p in self._yanks for flow, blob in self._yanks[p][1].items()}

    def _publish(self) -> None:
        refs = self._observed_refs or Refs({}, {})
        self.table = RoutingTable.publish(
            self.branch,
            self._last_good(),
            {**refs.tags, **refs.branches},
            self._versions,
            self.canaries.aborted,
            self._yanked_builds(),
            self.rollouts.reached,
        )
        self.rebuilds.drop(lambda sha: not self.table.yanked(sha))

    def _replan(self) -> None:
        """Publish the current table again with the aborts as they are now: the same head, refs and versions, so it
        is consistent even while a reconcile is half-way (that one publishes with the new aborts when it ends)."""
        table = self.table
        self.table = RoutingTable.publish(
            table.branch,
            table.head,
            table.refs,
            table.versions,
            self.canaries.aborted,
            table.yanked_builds,
            self.rollouts.reached,
        )

    async def _publish_live(self, trigger: str) -> None:
        """Publish, then remember which versions went live (the head, and what each flow's live refs serve), since
        history pins may reach those only; and record each commit the routing file newly yanked."""
        self._publish()
        table = self.table
        live = {table.head.sha} if table.head is not None else set()
        live |= {t.serving for route in table.routes.values() for _, t in route.live if t.serving is not None}
        for sha in sorted(live):
            version = self._versions.get(sha)
            if version is not None and not version.went_live:
                self._versions[sha] = replace(version, went_live=True)
                await self.store.put_version(sha, self._versions[sha].record())
        routing = table.routing
        for prefix in routing.yanked if routing is not None else ():
            matches = [v.sha for v in self._versions.values() if v.sha.startswith(prefix.lower())]
            for sha in matches:
                builds = sorted(self._yanks[prefix][1]) if prefix in self._yanks else []
                detail = "the routing file yanked it: it is never served again"
                if builds:
                    detail += f", nor is its build of {', '.join(builds)} in any other commit that serves it"
                facts: Facts = {"event": "yanked", "detail": detail, "flows": builds}
                await self.history.record(sha, trigger, facts, once=f"yanked:{sha}")

    def _last_good(self) -> Version | None:
        """The branch head unless it failed as a whole, else the newest ready ancestor we have."""
        if self._observed is None:
            return None
        current = self._versions.get(self._observed)
        if current is not None and current.ready:
            return current
        previous = self.table.head or self._fallback
        return self._versions.get(previous.sha) if previous is not None else None

    # -- the canary guard's decisions and the operator's ------------------------------------------------------------

    async def stop_canaries(self, new: Mapping[str, Record], aborted: Iterable[str]) -> None:
        """Take the guard's view (canaries.py), and plan the table again when the aborts changed, so an abort holds
        everywhere."""
        if await self.canaries.judged(self.table, new, aborted):
            self._replan()

    async def advance(self, holding: frozenset[str]) -> None:
        """Take the next steps of the progressive canaries the guard found holding (progress.py), and plan the table
        again when a share changed."""
        if await self.rollouts.advance(self.table, holding):
            self._replan()

    async def operate(self, action: Action, flow: str, ref: str | None, trigger: str) -> list[dict[str, Any]]:
        """An operator aborts or resumes one flow's canary (canaries.py), in force here at once."""
        done = await self.canaries.operate(self.table, action, flow, ref, trigger)
        self._replan()
        return done

    async def fetched(self, trigger: str, detail: str) -> None:
        """Record in the history that an operator asked for a fetch (which changes nothing by itself)."""
        facts: Facts = {"event": "fetch", "detail": detail}
        await self.history.record(self._observed or "", trigger, facts, once=f"fetch:{trigger}:{self.clock()}")

    # -- explicit pins ----------------------------------------------------------------------------------------------

    async def pinned(self, flow: str, text: str) -> Choice:
        """The version an explicit pin names for ``flow`` (SPEC 4), as the operator's pin policy allows (pins.py)."""
        return await self.pins.choose(self.table, flow, text)

    async def _on_branch(self, sha: str) -> bool:
        head = self._observed
        if head is None:
            return False
        known = self._ancestry.get((sha, head))
        if known is None:
            known = await anyio.to_thread.run_sync(self.source.is_ancestor, sha, head)
            self._ancestry[(sha, head)] = known
        return known

    # -- memory -----------------------------------------------------------------------------------------------------

    def _rebuild(self, sha: str) -> Version:
        """Build an old version again for a pin or a session, off the reconciler's lock (rebuilds.py); blocking."""
        commit = self.source.commit(sha)
        parent = self._versions.get(commit.parents[0]) if commit.parents else None
        return self.builder.build(commit, parent, self._trusted(sha))

    def _trusted(self, sha: str) -> Record | None:
        """The leader's record of ``sha`` when this worker follows (its flows are then built without being judged
        again); None when it leads, or the leader has not recorded ``sha`` (then it is judged here, as by one
        process)."""
        if self.leadership is None or self.leadership.leading:
            return None
        return self._records.get(sha)

    async def revive(self, sha: str, flow: str) -> Version | None:
        """A version a session is pinned to that this process does not hold (a restart, another replica): rebuilt,
        bounded (rebuilds.py); None when Git lacks it or the flow no longer builds there."""
        if not await anyio.to_thread.run_sync(self.source.has_commit, sha):
            return None
        version = await self.rebuilds.get(sha)
        return version if flow in version.flows else None

    async def collect(self) -> list[str]:
        """Retire ready versions that nothing needs, so memory stays bounded.

        Kept: the head, every version a ref points at, the versions whose builds they carry, every version a live
        session is pinned to, and the newest ``keep`` ready versions (so a revert or a pin to a recent version is
        instant). Build results no kept version uses are dropped with them.
        """
        async with self._lock:
            pinned = await self.store.pinned_versions()
            ready = [v for v in self._versions.values() if v.ready]
            keep = {v.sha for v in ready[-self.keep :]} | pinned | set(self.table.refs.values()) | self._held()
            keep -= {v.sha for v in ready if self.table.yanked(v.sha)}
            retired = [v.sha for v in ready if v.sha not in keep]
            for sha in retired:
                self._versions[sha] = self._versions[sha].retired()
                await self.store.put_version(sha, self._versions[sha].record())
                await self.history.record(sha, "collect", {"event": "retired"})
            if retired:
                self.builder.forget(v for v in self._versions.values() if v.ready)
                if self._observed is not None:
                    self._publish()
            return retired

    @property
    def versions(self) -> list[Version]:
        return list(self._versions.values())
