"""SqliteCounters: the limits' counters in a SQLite file beside the state file, shared by the processes of one
machine. The ``limits`` library has no SQLite storage, so the three counters are written here, each one transaction
that takes the file's write lock first (``BEGIN IMMEDIATE``), which makes it atomic across processes: a token
reservation reads what its window spent and adds to it under that lock."""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TypeVar

import anyio.to_thread

from gitops_flow.exceptions import StoreError
from gitops_flow.guardrails.counters import MIN_WAIT, Reserved, Window, window_at
from gitops_flow.stores.sqlitetx import write_transaction

T = TypeVar("T")

_BUSY_TIMEOUT = 5.0
_SWEEP_EVERY = 1_000  # writes between sweeps of every expired row (a key's own rows go at each of its writes)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS rates (key TEXT NOT NULL, slot INTEGER NOT NULL, count INTEGER NOT NULL,"
    " expires REAL NOT NULL, PRIMARY KEY (key, slot))",
    "CREATE INDEX IF NOT EXISTS rates_expires ON rates (expires)",
    "CREATE TABLE IF NOT EXISTS leases (key TEXT NOT NULL, lease TEXT NOT NULL, expires REAL NOT NULL,"
    " PRIMARY KEY (key, lease))",
    "CREATE INDEX IF NOT EXISTS leases_expires ON leases (expires)",
    "CREATE TABLE IF NOT EXISTS spent (key TEXT NOT NULL, slot INTEGER NOT NULL, used INTEGER NOT NULL,"
    " expires REAL NOT NULL, PRIMARY KEY (key, slot))",
    "CREATE INDEX IF NOT EXISTS spent_expires ON spent (expires)",
)


def counters_path(state_file: Path) -> Path:
    """The counters' file of a state file: ``state.db`` -> ``state-limits.db``, in the same folder."""
    return state_file.with_name(f"{state_file.stem}-limits.db")


class SqliteCounters:
    """Counters in one SQLite file (WAL mode); one connection used under a lock from worker threads, as the state
    store does. Windows are aligned to the epoch (slot = time // window), so every process agrees on them."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._writes = 0

    def __repr__(self) -> str:
        return f"SqliteCounters({str(self.path)!r})"

    async def open(self) -> None:
        await anyio.to_thread.run_sync(self._open)

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self._close)

    async def hit(self, key: str, window: Window) -> float | None:
        return await self._run(partial(self._hit, window.key(key), window))

    async def hit_many(self, keys: Sequence[str], window: Window) -> list[float | None]:
        return await self._run(partial(self._hit_many, [window.key(key) for key in keys], window))

    async def acquire(self, key: str, limit: int, lease: str, ttl: float) -> bool:
        return await self._run(partial(self._acquire, key, limit, lease, ttl))

    async def release(self, key: str, lease: str) -> None:
        await self._run(lambda db: db.execute("DELETE FROM leases WHERE key = ? AND lease = ?", (key, lease)))

    async def spent(self, key: str, window: float) -> tuple[int, float]:
        return await self._run(partial(self._spent, key, window))

    async def reserve(self, key: str, budget: int, window: float, amount: int) -> Reserved | float:
        return await self._run(partial(self._reserve, key, budget, window, amount))

    async def adjust(self, key: str, window: float, slot: int, amount: int) -> None:
        if amount != 0:
            await self._run(partial(self._adjust, key, window, slot, amount))

    # everything below runs in a worker thread

    async def _run(self, step: Callable[[sqlite3.Connection], T]) -> T:
        return await anyio.to_thread.run_sync(self._locked, step)

    def _locked(self, step: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock, self._errors():
            assert self._db is not None, "open() the counters before using them"
            return step(self._db)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"the limits file {self.path} cannot be used: {exc}") from exc

    def _open(self) -> None:
        with self._lock, self._errors():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")  # counters may lose their last writes to a power cut
                with write_transaction(db):
                    for statement in _SCHEMA:
                        db.execute(statement)
            except BaseException:
                db.close()
                raise
            self._db = db

    def _close(self) -> None:
        with self._lock, self._errors():
            db, self._db = self._db, None
            if db is not None:
                db.close()

    def _hit(self, key: str, window: Window, db: sqlite3.Connection) -> float | None:
        with write_transaction(db):
            return self._count(key, window, db)

    def _hit_many(self, keys: list[str], window: Window, db: sqlite3.Connection) -> list[float | None]:
        with write_transaction(db):  # one transaction for them all: one commit, one trip to a worker thread
            return [self._count(key, window, db) for key in keys]

    def _count(self, key: str, window: Window, db: sqlite3.Connection) -> float | None:
        """hit()'s step, inside the caller's write transaction."""
        size = window.seconds
        now = self._clock()
        slot = math.floor(now / size)
        elapsed = now - slot * size
        rows = db.execute("SELECT slot, count FROM rates WHERE key = ? AND slot >= ?", (key, slot - 1))
        counts: dict[int, int] = {int(s): int(n) for s, n in rows}
        before, current = counts.get(slot - 1, 0), counts.get(slot, 0)
        if before * (size - elapsed) / size + current + 1 > window.amount:
            if current + 1 > window.amount or before == 0:
                return size - elapsed  # the next slot starts; the count of this one then weighs less and less
            # the last slot weighs (size - t) / size at t seconds into this one: wait until it leaves room
            needed = size * (1 - (window.amount - current - 1) / before)
            return max(needed - elapsed, MIN_WAIT)
        db.execute(
            "INSERT INTO rates (key, slot, count, expires) VALUES (?, ?, 1, ?)"
            " ON CONFLICT (key, slot) DO UPDATE SET count = count + 1",
            (key, slot, (slot + 2) * size),
        )
        db.execute("DELETE FROM rates WHERE key = ? AND slot < ?", (key, slot - 1))
        self._sweep(db, now)
        return None

    def _acquire(self, key: str, limit: int, lease: str, ttl: float, db: sqlite3.Connection) -> bool:
        with write_transaction(db):
            now = self._clock()
            db.execute("DELETE FROM leases WHERE key = ? AND expires <= ?", (key, now))
            (held,) = db.execute("SELECT count(*) FROM leases WHERE key = ?", (key,)).fetchone()
            if held >= limit:
                return False
            db.execute("INSERT OR REPLACE INTO leases (key, lease, expires) VALUES (?, ?, ?)", (key, lease, now + ttl))
            self._sweep(db, now)
        return True

    def _spent(self, key: str, window: float, db: sqlite3.Connection) -> tuple[int, float]:
        slot, left = window_at(self._clock(), window)
        return self._used(db, key, slot), left

    def _reserve(self, key: str, budget: int, window: float, amount: int, db: sqlite3.Connection) -> Reserved | float:
        with write_transaction(db):  # the read and the write under one lock: no other process reserves between
            now = self._clock()
            slot, left = window_at(now, window)
            if self._used(db, key, slot) >= budget:
                return left
            self._add(db, key, slot, window, amount, now)
        return Reserved(slot)

    def _adjust(self, key: str, window: float, slot: int, amount: int, db: sqlite3.Connection) -> None:
        with write_transaction(db):
            now = self._clock()
            current, _ = window_at(now, window)
            if slot < current:  # that window ended: a refund has nothing to take from, a charge counts now
                if amount <= 0:
                    return
                slot = current
            self._add(db, key, slot, window, amount, now)

    def _used(self, db: sqlite3.Connection, key: str, slot: int) -> int:
        row = db.execute("SELECT used FROM spent WHERE key = ? AND slot = ?", (key, slot)).fetchone()
        return int(row[0]) if row else 0

    def _add(self, db: sqlite3.Connection, key: str, slot: int, window: float, amount: int, now: float) -> None:
        """Add ``amount`` (maybe negative) to window ``slot`` of ``key``, never below 0; earlier windows go."""
        db.execute(
            "INSERT INTO spent (key, slot, used, expires) VALUES (?, ?, max(0, ?), ?)"
            " ON CONFLICT (key, slot) DO UPDATE SET used = max(0, used + ?)",
            (key, slot, amount, (slot + 1) * window, amount),
        )
        db.execute("DELETE FROM spent WHERE key = ? AND slot < ?", (key, slot))
        self._sweep(db, now)

    def _sweep(self, db: sqlite3.Connection, now: float) -> None:
        """Every so many writes, the expired rows of every key (users who never came back) go."""
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0:
            for table in ("rates", "leases", "spent"):
                db.execute(f"DELETE FROM {table} WHERE expires <= ?", (now,))  # noqa: S608 -- our own table names
