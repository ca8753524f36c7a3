"""The fetch leader among the workers of one `serve --workers N`: a lease in the state store, renewed while held.

Workers of one server share one clone (``--data-dir``), so exactly one of them, the leader, fetches from the remote
and validates, tests and records each commit; the others (followers) read the refs the leader fetched from that
clone and build each commit's flows from what the leader recorded (reconciler.py, builds.py). The lease is named by
the server's group (a random id its supervisor draws at start), so separate servers (replicas, each with its own
clone) never share one. A leader that dies stops renewing: another worker takes the lease within ``ttl`` seconds;
a worker restarted in the slot of the leader that died takes it back at once (the holder is the group and the slot).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gitops_flow.exceptions import StoreError
from gitops_flow.stores.base import LeaseStore

LEASE_TTL = 10.0  # seconds a leader holds the fetch without renewing; renewed every third of it

log = logging.getLogger("gitops_flow.reconcile")


@dataclass(frozen=True, slots=True)
class Worker:
    """One worker's place in its server: the group (drawn by the supervisor), its slot (0 to N-1) and the folder of
    the workers' shared metrics (prometheus_client's multiprocess mode, metrics.py)."""

    group: str
    slot: int
    metrics_dir: str | None = None


class Leadership:
    """Whether this worker is the one that fetches. ``leading`` is what the last renewal found."""

    def __init__(self, store: LeaseStore, group: str, slot: int, *, ttl: float = LEASE_TTL) -> None:
        self.store = store
        self.name = f"fetch:{group}"
        self.slot = slot
        self.holder = f"{group}:{slot}"
        self.ttl = ttl
        self.leading = False

    @property
    def interval(self) -> float:
        """Seconds between renewals."""
        return self.ttl / 3

    async def renew(self) -> bool:
        """Take or renew the lease; True when this worker has just become the leader. A store that cannot be
        reached makes this worker a follower until it can (a leader that cannot record must not fetch alone)."""
        was = self.leading
        try:
            self.leading = await self.store.lease(self.name, self.holder, self.ttl)
        except StoreError as exc:
            log.warning("fetch lease: %s", exc)
            self.leading = False
        if self.leading != was:
            log.info("%s the fetch leader of this server's workers", "became" if self.leading else "is no longer")
        return self.leading and not was

    async def release(self) -> None:
        """Give the lease up (a worker that stops), so another worker fetches at once."""
        if self.leading:
            self.leading = False
            try:
                await self.store.release(self.name, self.holder)
            except StoreError as exc:
                log.warning("fetch lease: %s", exc)
