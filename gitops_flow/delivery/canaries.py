"""The canaries that are stopped: the guard's verdicts and the operator's abort and resume, shared by every replica
through the store (an abort is an entry of the store's aborts; a resume, an entry that tells the guard since when to
count)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from gitops_flow.delivery.journal import DeployLog
from gitops_flow.delivery.routing_table import RESUMED_PREFIX, RoutingTable, split_key, stopped
from gitops_flow.exceptions import NotAbortable, UnknownFlow
from gitops_flow.stores.base import AbortStore, Record
from gitops_flow.stores.events import AbortedFacts, ResumedFacts

log = logging.getLogger("gitops_flow.reconcile")
Action = Literal["abort", "resume"]


class Canaries:
    """Which analysis keys are aborted (``aborted``), kept in step with the store."""

    def __init__(self, store: AbortStore, history: DeployLog, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.history = history
        self.clock = clock
        self.aborted: frozenset[str] = frozenset()

    async def restore(self) -> None:
        self.aborted = stopped(await self.store.aborts())

    async def judged(self, table: RoutingTable, new: Mapping[str, Record], known: Iterable[str]) -> bool:
        """Take the guard's view: record each canary it aborted here, then every abort the store knows (this
        replica's and the others'). Returns whether the aborted set changed (the table must be planned again)."""
        for key, figures in new.items():
            flow, ref, _ = split_key(key)
            target = table.guarded().get(key)
            sha = target.serving if target is not None and target.serving else ""
            log.warning("aborted flow %r on ref %r at %s: %s", flow, ref, sha[:12], figures.get("reason"))
            once = f"aborted:{key}:{figures.get('time')}"  # each abort, the one after a resume too (not the key's once)
            await self.history.record(sha, "analysis", _guarded(flow, ref, figures), once=once, at=figures.get("time"))
        now = stopped(dict.fromkeys(known))
        changed, self.aborted = now != self.aborted, now
        return changed

    async def operate(
        self, table: RoutingTable, action: Action, flow: str, ref: str | None, trigger: str
    ) -> list[dict[str, Any]]:
        """An operator aborts or resumes ``flow``'s canary on ``ref`` (every guarded ref of its route when None), at
        once and on every replica (through the store); each change is recorded in the history. Returns what was
        done, per ref. Raises UnknownFlow when the flow has no guarded ref (of that name)."""
        targets = [t for t in table.canaries(flow) if ref is None or ref in (t.ref, t.named)]
        if not targets:
            raise UnknownFlow(_no_canary(table, flow, ref))
        route = table.routes[flow]
        if action == "abort":
            targets = [t for t in targets if not route.shares_primary_build(flow, t)]
            if not targets:
                raise NotAbortable(
                    f"flow {flow!r}'s canary{f' on {ref!r}' if ref else ''} serves its primary's build: aborting it "
                    "would only move its weight to that same build"
                )
        done = []
        for target in targets:
            assert target.guard is not None, "canaries are guarded"
            key, sha, now = target.guard, target.serving or target.sha or "", self.clock()
            facts: AbortedFacts | ResumedFacts
            if action == "abort":
                reason = "aborted by an operator"
                changed = await self.store.abort(key, {"reason": reason, "by": trigger, "time": now})
                facts = {"event": "aborted", "flow": flow, "ref": target.ref, "reason": reason}
            else:
                changed = key in self.aborted
                await self.store.drop_abort(key)
                await self.store.drop_abort(RESUMED_PREFIX + key)
                await self.store.abort(RESUMED_PREFIX + key, {"since": now, "by": trigger})
                facts = {"event": "resumed", "flow": flow, "ref": target.ref}
            if changed:
                await self.history.record(sha, trigger, facts, once=f"{facts['event']}:{key}:{now}")
            done.append({"flow": flow, "ref": target.ref, "sha": sha, "changed": changed})
        self.aborted = stopped(await self.store.aborts())
        return done


def _guarded(flow: str, ref: str, figures: Record) -> AbortedFacts:
    """The guard's abort of ``flow``'s canary on ``ref``: why, and the window's figures (guard.py)."""
    facts: AbortedFacts = {"event": "aborted", "flow": flow, "ref": ref, "reason": str(figures.get("reason", ""))}
    if "requests" in figures:
        facts["requests"], facts["errors"] = int(figures["requests"]), int(figures["errors"])
        facts["error_rate"], facts["p99_ms"] = float(figures["error_rate"]), figures["p99_ms"]
    if "window_s" in figures:
        facts["window_s"] = float(figures["window_s"])
    if isinstance(figures.get("causes"), dict):
        facts["causes"] = {str(cause): int(count) for cause, count in figures["causes"].items()}
    if "error_class" in figures:
        facts["error_class"] = figures["error_class"]
    return facts


def _no_canary(table: RoutingTable, flow: str, ref: str | None) -> str:
    """Why ``flow`` (on ``ref``) has nothing to abort or resume: no such flow, or no such canary, and what is one."""
    head = table.head
    if flow not in table.routes and (head is None or (flow not in head.names and flow not in head.failed)):
        return f"no flow named {flow!r} is served here (GET /flows lists them)"
    if ref is not None and table.canaries(flow):
        named = ", ".join(t.ref for t in table.canaries(flow))
        return f"flow {flow!r} has no canary on ref {ref!r}; its canaries are on {named}"
    return (
        f"flow {flow!r} has no canary: a canary is a ref after the first of the flow's route in gitops-flow.yaml,"
        " when the file has an analysis section"
    )
