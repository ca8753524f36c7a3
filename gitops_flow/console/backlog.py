"""What is not live yet, and why: the seed's "changed but not yet published" hint, for the on-call's second look.

- the fetch: when the branch was last read, whether reading fails, what is being built now (a commit pushed since
  the last fetch is not known to the server until the next one: the page offers to fetch now);
- commits of the branch that failed as a whole, and flows that failed at the head, with their problems as CI
  prints them (``file:line code message``);
- flows whose newest build serves only part of their traffic (a canary) or none of it (the route's refs have not
  moved to it), with the `git tag` command that would promote it;
- tags named by the routing file that point at commits off the branch (never served until merged);
- canaries aborted, and commits yanked by the routing file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gitops_flow.console.commands import Command, promote
from gitops_flow.delivery.published import SourceState
from gitops_flow.delivery.routing_table import Route, RoutingTable, Target
from gitops_flow.delivery.versions import Version
from gitops_flow.stores.base import Record
from gitops_flow.stores.events import DeployEvent


@dataclass(frozen=True, slots=True)
class FailedCommit:
    """A commit of the branch that failed as a whole (its routing file): none of it is served."""

    sha: str
    summary: str
    author: str
    problems: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True)
class FailedFlow:
    """A flow that failed at the head: its problems, and the commit whose build serves instead (None: nothing)."""

    flow: str
    at: str
    problems: tuple[Mapping[str, Any], ...]
    serving: str | None


@dataclass(frozen=True, slots=True)
class Waiting:
    """A flow whose newest build (at the head) takes ``share`` % of its new traffic, less than all of it."""

    flow: str
    build: str  # the commit whose build of the flow the head serves
    share: float
    refs: tuple[str, ...]  # the refs that serve it
    command: Command | None  # how to promote it, when the route's primary is a tag


@dataclass(frozen=True, slots=True)
class RefusedTag:
    """A tag the routing file names that points at a commit off the branch (``sha`` hidden from anonymous readers)."""

    tag: str
    sha: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class Aborted:
    """A canary stopped by the guard or an operator."""

    flow: str
    ref: str
    serving: str | None
    reason: str
    by: str
    time: float | None


@dataclass(frozen=True, slots=True)
class Yanked:
    """An entry of the routing file's ``yanked`` list, the versions it matches and the refs still pointing there."""

    prefix: str
    versions: tuple[str, ...]
    refs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Pending:
    """The "not live yet" page."""

    branch: str
    head: str | None
    last_fetch: float | None
    last_error: str | None
    building: str | None
    failed_commits: tuple[FailedCommit, ...]
    failed_flows: tuple[FailedFlow, ...]
    waiting: tuple[Waiting, ...]
    refused: tuple[RefusedTag, ...]
    aborted: tuple[Aborted, ...]
    yanked: tuple[Yanked, ...]

    @property
    def count(self) -> int:
        return sum(
            len(part)
            for part in (
                self.failed_commits,
                self.failed_flows,
                self.waiting,
                self.refused,
                self.aborted,
                self.yanked,
            )
        )


def pending(
    table: RoutingTable,
    status: SourceState,
    versions: Iterable[Version],
    events: Sequence[DeployEvent],
    aborts: Mapping[str, Record],
    *,
    reader: bool,
) -> Pending:
    """What is not live of ``table``'s branch. ``events`` are the latest history (where refused tags are told);
    ``reader`` says whether the viewer may see the shas of commits off the branch."""
    head = table.head
    newer = [v for v in versions if head is None or (v.time, v.seen) > (head.time, head.seen)]
    failed_commits = tuple(
        FailedCommit(v.sha, v.summary, v.author, tuple(p.as_dict() for p in v.problems))
        for v in sorted(newer, key=lambda v: (v.time, v.seen), reverse=True)
        if v.status == "failed"
    )
    failed_flows = (
        tuple(
            FailedFlow(name, head.sha, tuple(p.as_dict() for p in head.failed[name]), head.carried.get(name))
            for name in sorted(head.failed)
        )
        if head is not None
        else ()
    )
    return Pending(
        branch=table.branch,
        head=head.sha if head else None,
        last_fetch=status.last_fetch,
        last_error=status.last_error,
        building=status.building,
        failed_commits=failed_commits,
        failed_flows=failed_flows,
        waiting=tuple(w for name, route in sorted(table.routes.items()) if (w := waiting(table, name, route))),
        refused=tuple(_refused(table, events, reader=reader)),
        aborted=tuple(_aborted(table, aborts)),
        yanked=tuple(_yanked(table, versions)),
    )


def waiting(table: RoutingTable, flow: str, route: Route) -> Waiting | None:
    """How far ``flow``'s newest build (the head's) is published: None when it takes all of its traffic."""
    head = table.head
    build = head.serving(flow) if head is not None else None
    if head is None or build is None or not route.live:
        return None
    newest = table.versions.get(build)
    blob = newest.blobs.get(flow) if newest is not None else None
    low, share, refs = 0.0, 0.0, []
    for bound, target in route.live:
        if _same_build(target, build, flow, blob):
            share += bound - low
            refs.append(target.ref)
        low = bound
    share = round(100 * share, 2)
    if share >= 100:
        return None
    primary = route.targets[0] if route.targets else None
    command = None
    if primary is not None and primary.ref != table.branch:  # the tracked branch moves by merging, not by a tag
        command = promote(flow, primary.ref, head.sha)
    return Waiting(flow, build, share, tuple(refs), command)


def _same_build(target: Target, build: str, flow: str, blob: str | None) -> bool:
    """Whether ``target`` serves the same content of ``flow`` as the build ``build`` (its file's blob, when known)."""
    if target.serving == build:
        return True
    theirs = target.version.blobs.get(flow) if target.version is not None else None
    return blob is not None and theirs == blob


def _refused(table: RoutingTable, events: Sequence[DeployEvent], *, reader: bool) -> list[RefusedTag]:
    found: dict[str, RefusedTag] = {}
    for event in events:  # newest first: the first word on each tag is the latest
        if event["event"] != "ref-refused" or not isinstance(event.get("ref"), str):
            continue
        tag, sha = event["ref"], event["sha"] or ""
        if tag in found or table.refs.get(tag) != sha:
            continue  # told already, or the tag has moved since
        where = f"{sha[:12]}, " if reader else "a commit "
        detail = f"tag {tag!r} points at {where}which is not on branch {table.branch!r}: it is not served until merged"
        found[tag] = RefusedTag(tag, sha if reader else None, detail)
    return list(found.values())


def _aborted(table: RoutingTable, aborts: Mapping[str, Record]) -> list[Aborted]:
    found = []
    for name, route in sorted(table.routes.items()):
        for target in route.targets:
            if target.state != "aborted" or target.guard is None:
                continue
            record = aborts.get(target.guard, {})
            when = record.get("time")
            found.append(
                Aborted(
                    flow=name,
                    ref=target.ref,
                    serving=target.serving,
                    reason=str(record.get("reason") or "aborted"),
                    by=str(record.get("by") or "the canary guard"),
                    time=float(when) if isinstance(when, int | float) else None,
                )
            )
    return found


def _yanked(table: RoutingTable, versions: Iterable[Version]) -> list[Yanked]:
    routing = table.routing
    if routing is None:
        return []
    known = [v.sha for v in versions]
    found = []
    for prefix in routing.yanked:
        low = prefix.lower()
        matches = tuple(sha for sha in known if sha.startswith(low))
        refs = tuple(sorted(name for name, sha in table.refs.items() if sha.startswith(low)))
        found.append(Yanked(prefix, matches, refs))
    return found
