"""Progressive delivery: a canary whose route entry declares ``steps`` takes its share of the traffic one step at a
time, at most one step per ``interval``, while the canary guard judges it within bounds on enough requests (and
not worse than its primary on the analysis's feedback key); the guard aborts it when it is not (guard.py).

Git declares the steps; the store records where each canary is, so a restart or another replica goes on from the
step reached. Each step reached is an entry of the store's aborts named ``step|<analysis key>|<commit>|<share>``
and written with the store's first-write-wins ``abort``: replicas that decide the same step together record it
once, and only the one that wrote it announces it. A canary's steps are kept per commit serving it, so a new commit
of its ref starts from the first step. When the steps change in Git, a canary holds the largest new step not above
the share it reached (never more traffic than it earned), and waits out the interval from when it reached it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from gitops_flow.delivery.journal import DeployLog
from gitops_flow.delivery.routing_table import STEP_PREFIX, Reached, Route, RoutingTable, Target, split_key
from gitops_flow.stores.base import AbortStore, Record
from gitops_flow.stores.events import SteppedFacts

log = logging.getLogger("gitops_flow.reconcile")
FORGET_AFTER = 7 * 86400.0  # a step record of a canary no route serves any more is dropped this long after it


def step_record(key: str, share: float) -> str:
    """The abort store entry of a canary (its progress_key) that reached ``share`` percent."""
    return f"{STEP_PREFIX}{key}|{share:g}"


def reached(records: Mapping[str, Record]) -> dict[str, Reached]:
    """The largest share each progressive canary reached, and since when, from the store's aborts."""
    found: dict[str, Reached] = {}
    for name, record in records.items():
        if not name.startswith(STEP_PREFIX):
            continue
        key, _, share = name.removeprefix(STEP_PREFIX).rpartition("|")
        try:
            step = Reached(float(share), float(record.get("since", 0.0)))
        except (TypeError, ValueError):
            continue
        if key not in found or step.share > found[key].share:
            found[key] = step
    return found


def tag_command(route: Route | None, branch: str, target: Target) -> str | None:
    """The one git command that makes a canary at its last step of 100 % durable: move the route's primary tag to
    the canary's commit. None before that, or when the primary is the tracked branch (a merge, not a tag)."""
    steps = target.steps
    primary = next((t for t in route.targets if t.guard is None and t.segment is None), None) if route else None
    if steps is None or not steps.last or steps.share < 100 or primary is None or target.sha is None:
        return None
    if primary.ref == branch or primary.ref == target.ref:
        return None
    return f"git tag -f {primary.ref} {target.sha} && git push -f origin {primary.ref}"


def progress_view(route: Route | None, branch: str, target: Target) -> dict[str, Any] | None:
    """A progressive canary's steps as the views show them: the shares, the step it holds (1 for the first), since
    when, the earliest its next step may come, and at its last step of 100 % the command that makes it durable."""
    steps = target.steps
    if steps is None:
        return None
    return {
        "steps": list(steps.shares),
        "step": steps.index + 1,
        "of": len(steps.shares),
        "share": steps.share,
        "interval_s": steps.interval,
        "since": steps.since,
        "next_at": None if steps.last or steps.since is None else steps.since + steps.interval,
        "command": tag_command(route, branch, target),
    }


class Rollouts:
    """Where every progressive canary is (``reached``, by progress_key), kept in step with the store; ``advance``
    takes the next steps the guard's verdicts allow."""

    def __init__(self, store: AbortStore, history: DeployLog, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.history = history
        self.clock = clock
        self.reached: dict[str, Reached] = {}

    async def restore(self) -> None:
        self.reached = reached(await self.store.aborts())

    async def advance(self, table: RoutingTable, holding: frozenset[str], trigger: str = "analysis") -> bool:
        """Record the first step of each progressive canary new to the store, and the next step of each one that
        held its step ``interval`` seconds and that the guard's last verdict found holding; announce each step this
        replica recorded; read every replica's. Returns whether any canary's share changed (plan the table again).
        Raises StoreError when the store is unreachable."""
        now = self.clock()
        records = await self.store.aborts()
        known = reached(records)
        canaries = table.progressive()
        for key, target in canaries.items():
            steps = target.steps
            assert steps is not None and target.guard is not None, "progressive canaries have steps and a guard"
            at = known.get(key)
            if at is None:
                index = 0
            elif steps.last or target.guard not in holding or now - at.since < steps.interval:
                continue
            else:
                index = steps.index + 1
            share = steps.shares[index]
            if await self.store.abort(step_record(key, share), {"since": now, "share": share}):
                await self._announce(table, target, index, share, trigger, now)
        for name, record in records.items():  # the steps of canaries gone long ago
            key = name.removeprefix(STEP_PREFIX).rpartition("|")[0]
            if name.startswith(STEP_PREFIX) and key not in canaries:
                if now - float(record.get("since", now)) > FORGET_AFTER:
                    await self.store.drop_abort(name)
        before, self.reached = self.reached, reached(await self.store.aborts())
        return before != self.reached

    async def _announce(
        self, table: RoutingTable, target: Target, index: int, share: float, trigger: str, now: float
    ) -> None:
        assert target.steps is not None and target.guard is not None, "progressive canaries have steps and a guard"
        flow = split_key(target.guard)[0]
        total = len(target.steps.shares)
        facts: SteppedFacts = {
            "event": "stepped",
            "flow": flow,
            "ref": target.ref,
            "step": index + 1,
            "steps": total,
            "share": share,
        }
        command = tag_command(table.routes.get(flow), table.branch, _at(target, index))
        if command is not None:
            facts["command"] = command
        log.info(
            "flow %r's canary on %r: step %d of %d, %g %% of the traffic", flow, target.ref, index + 1, total, share
        )
        sha = target.serving or target.sha or ""
        await self.history.record(sha, trigger, facts, once=f"stepped:{target.guard}:{sha}:{share:g}", at=now)


def _at(target: Target, index: int) -> Target:
    """``target`` as it is at step ``index``."""
    assert target.steps is not None, "a progressive canary"
    return replace(target, steps=replace(target.steps, index=index), weight=target.steps.shares[index])
