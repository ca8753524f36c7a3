"""The ledger of answered runs: which runs this server answered (flow, version, ref, user, time), kept in the state
store for the feedback window, so feedback can name them from any worker or replica.

Noting a run is on the request path, so it costs an append to a list: a background task writes what was noted in
one batch every ``interval`` seconds (one store write for a whole batch, however many runs it holds). A run is found
in this process's pending batch before it reaches the store; a worker that did not answer the run finds it once the
batch is written, and the feedback handler waits one interval for it (``find``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gitops_flow.exceptions import StoreError
from gitops_flow.stores.base import FeedbackStore, Record

log = logging.getLogger("gitops_flow.server")

FLUSH_INTERVAL = 0.2  # seconds between batch writes
MAX_PENDING = 50_000  # runs waiting for a write; past it the newest are not noted (a store that is away)


def new_run_id() -> uuid.UUID:
    """A run's id: a UUID in version 7's layout (RFC 9562), its first 48 bits the time in milliseconds and 74 bits
    random. Ids made later sort later, so the store appends them where its index ends (a random UUID lands on a new
    page of the index each time: three times the cost of noting a run in SQLite), and 74 random bits keep them as
    unguessable as a feedback capability needs."""
    random = secrets.randbits(74)
    value = (time.time_ns() // 1_000_000 & (1 << 48) - 1) << 80 | 0x7 << 76 | (random >> 62) << 64
    return uuid.UUID(int=value | 0b10 << 62 | random & (1 << 62) - 1)


def session_key(flow: str, session: str) -> str:
    """Where the ledger keeps a session's last run of ``flow`` (``session`` is the session id's hash): beside the
    runs, under the same window and maximum."""
    return f"session:{flow}:{session}"


@dataclass(frozen=True, slots=True)
class RunBounds:
    """How long a run takes feedback (``window`` seconds after its answer) and how many runs are kept at once."""

    window: float = 86400.0
    max_runs: int = 1_000_000


class RunLedger:
    """Notes answered runs and writes them to ``store`` in batches; ``find`` looks one up."""

    def __init__(
        self,
        store: FeedbackStore,
        bounds: RunBounds = RunBounds(),
        *,
        interval: float = FLUSH_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.bounds = bounds
        self.interval = interval
        self.clock = clock
        self._pending: dict[str, Record] = {}
        self._dropped = 0

    def note(
        self,
        run_id: str,
        flow: str,
        version: str,
        ref: str | None,
        user: str | None,
        *,
        counted: bool = True,
        session: str | None = None,
    ) -> Record | None:
        """Remember that this server answered ``run_id``; ``counted`` is False for a run the report must leave out
        (a pinned request: the client chose its version, not the experiment). With ``session`` (its hash), the run
        is also the session's last run of the flow (``session_key``), which feedback may name instead of the run.
        Returns the run's record (None when the ledger is full)."""
        if len(self._pending) >= MAX_PENDING:
            self._dropped += 1
            return None
        record: dict[str, Any] = {"flow": flow, "version": version, "ref": ref, "user": user, "at": self.clock()}
        if not counted:
            record["counted"] = False
        self._pending[run_id] = record
        if session is not None:
            self._pending.pop(session_key(flow, session), None)  # re-inserted last: the batch keeps the newest
            self._pending[session_key(flow, session)] = {**record, "run_id": run_id}
        return record

    async def find(self, run_id: str) -> Record | None:
        """The record of a run answered within the window, by this process or another; None when there is none.
        Raises StoreError when the store cannot be read."""
        record = self._pending.get(run_id)
        if record is not None:
            return dict(record)
        found = await self.store.answered(run_id)
        if found is None:  # another worker's batch may not be written yet
            await asyncio.sleep(self.interval)
            record = self._pending.get(run_id)
            found = dict(record) if record is not None else await self.store.answered(run_id)
        return found

    async def find_many(self, run_ids: Sequence[str]) -> dict[str, Record]:
        """``find`` for several runs, in one read of the store, without waiting: run id -> record, for the runs
        found now (the caller waits an interval and asks again for the others, see Scores)."""
        found = {run_id: dict(self._pending[run_id]) for run_id in run_ids if run_id in self._pending}
        missing = [run_id for run_id in run_ids if run_id not in found]
        if missing:
            found.update(await self.store.answered_many(missing))
        return found

    async def flush(self) -> None:
        """Write what was noted since the last write, in one batch; on a StoreError the batch is kept for the next
        try (within MAX_PENDING) and the error raised."""
        if self._dropped:
            log.warning("%d answered runs were not noted for feedback: the state store is behind", self._dropped)
            self._dropped = 0
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        try:
            await self.store.remember_runs(list(batch.items()), ttl=self.bounds.window, max_runs=self.bounds.max_runs)
        except StoreError:
            self._pending = {**batch, **self._pending}
            raise

    async def run(self) -> None:
        """Write batches until cancelled; the batch pending then is written before it ends."""
        try:
            while True:
                await asyncio.sleep(self.interval)
                try:
                    await self.flush()
                except StoreError as exc:
                    log.warning("answered runs were not written: %s", exc)
        finally:
            try:
                await asyncio.shield(self.flush())
            except (StoreError, asyncio.CancelledError) as exc:  # shutting down: said once, not raised
                log.warning("the last answered runs were not written: %s", exc)
