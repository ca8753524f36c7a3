"""SqliteStore: the state kept in one SQLite file, the default; safe for several processes sharing the file."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TypeVar

import anyio.to_thread
import orjson

from gitops_flow.exceptions import StoreError
from gitops_flow.stores.base import (
    DEFAULT_QUOTA,
    MAX_EVENTS,
    PROBE_PREFIX,
    SWEEP_CONVERSATIONS,
    ConversationQuota,
    Record,
    ScoreBounds,
    Turn,
)
from gitops_flow.stores.events import DeployEvent
from gitops_flow.stores.sqlitetx import write_transaction

T = TypeVar("T")

_IDS_PER_QUERY = 500  # run ids one query reads (SQLite allows 32,766 parameters; shorter statements plan faster)
_BUSY_TIMEOUT = 5.0  # seconds a write waits for another process's write to finish before giving up
_PURGE_EVERY = 1_000  # pin writes between sweeps of expired pins
_LISTEN_EVERY = 0.1  # seconds between a listener's reads of the wake-ups table
_EVICT_BATCH = 64  # conversations read at once while making room within the quota
_WAKES_KEPT = 60.0  # seconds a wake-up stays in the table (listeners read it within _LISTEN_EVERY)

# _MIGRATIONS[n] takes the schema from version n to n + 1 (PRAGMA user_version); append, never edit
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE pins (key TEXT PRIMARY KEY, sha TEXT NOT NULL, expires REAL NOT NULL)",
        "CREATE INDEX pins_expires ON pins (expires)",
        "CREATE TABLE turns (id INTEGER PRIMARY KEY AUTOINCREMENT, session TEXT NOT NULL, role TEXT NOT NULL,"
        " text TEXT NOT NULL)",
        "CREATE INDEX turns_session ON turns (session, id)",
        "CREATE TABLE versions (sha TEXT PRIMARY KEY, seq INTEGER NOT NULL, record TEXT NOT NULL)",
        "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, record TEXT NOT NULL)",
    ),
    (
        "ALTER TABLE events ADD COLUMN once TEXT",
        "CREATE UNIQUE INDEX events_once ON events (once)",  # NULLs are distinct: only keyed events are unique
        "CREATE TABLE deliveries (id TEXT PRIMARY KEY, expires REAL NOT NULL)",
        "CREATE TABLE samples (key TEXT NOT NULL, slot INTEGER NOT NULL, field TEXT NOT NULL, count INTEGER NOT NULL,"
        " expires REAL NOT NULL, PRIMARY KEY (key, slot, field))",
        "CREATE INDEX samples_expires ON samples (expires)",
        "CREATE TABLE aborts (key TEXT PRIMARY KEY, record TEXT NOT NULL)",
    ),
    (
        "CREATE TABLE conversations (session TEXT PRIMARY KEY, expires REAL NOT NULL)",
        "CREATE INDEX conversations_expires ON conversations (expires)",
        # conversations kept before they could expire get the default idle time from now, not from their last turn
        "INSERT INTO conversations (session, expires)"
        " SELECT DISTINCT session, CAST(strftime('%s', 'now') AS REAL) + 2592000 FROM turns",
    ),
    (
        # wake-ups between processes sharing the file: published rows, read by each listener's poll
        "CREATE TABLE wakes (id INTEGER PRIMARY KEY AUTOINCREMENT, message TEXT NOT NULL, at REAL NOT NULL)",
        "CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires REAL NOT NULL)",
    ),
    (
        # the quota of all conversations: each one's bytes of turn text, and the totals in one row
        "ALTER TABLE conversations ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0",
        "UPDATE conversations SET bytes ="
        " (SELECT COALESCE(SUM(length(CAST(text AS BLOB))), 0) FROM turns WHERE turns.session = conversations.session)",
        "CREATE TABLE conversation_totals (id INTEGER PRIMARY KEY CHECK (id = 0), sessions INTEGER NOT NULL,"
        " bytes INTEGER NOT NULL)",
        "INSERT INTO conversation_totals SELECT 0, COUNT(*), COALESCE(SUM(bytes), 0) FROM conversations",
    ),
    (
        # experiments: the runs answered (newest rowid last) and the feedback scores, with each flow's live keys
        # no index on expires: runs come in time order, so the oldest rowids expire first (_remember_runs)
        "CREATE TABLE runs (id TEXT PRIMARY KEY, record TEXT NOT NULL, expires REAL NOT NULL)",
        "CREATE TABLE scores (flow TEXT NOT NULL, slot TEXT NOT NULL, key TEXT NOT NULL, record TEXT NOT NULL,"
        " expires REAL NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (flow, slot))",
        "CREATE INDEX scores_expires ON scores (flow, expires)",
        "CREATE INDEX scores_seq ON scores (flow, seq)",
        "CREATE TABLE score_keys (flow TEXT NOT NULL, key TEXT NOT NULL, count INTEGER NOT NULL,"
        " PRIMARY KEY (flow, key))",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)


class SqliteStore:
    """A StateStore in one SQLite file (WAL mode), created with its folder when missing.

    One connection, used by one thread at a time under a lock; every call runs in a worker thread, so the event loop
    never waits on the disk. Writes that must be atomic run in ``BEGIN IMMEDIATE`` transactions, which also makes
    ``claim_pin`` atomic across processes sharing the file. Every SQLite or OS error becomes a StoreError naming the
    file.
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time, max_events: int = MAX_EVENTS) -> None:
        self.path = path
        self._clock = clock
        self._max_events = max_events
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._pin_writes = 0
        self._closing = asyncio.Event()

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    async def open(self) -> None:
        await anyio.to_thread.run_sync(self._open)

    async def close(self) -> None:
        self._closing.set()
        await anyio.to_thread.run_sync(self._close)

    async def ping(self) -> None:
        await self._run("written", self._probe)

    async def claim_pin(self, key: str, sha: str, ttl: float) -> str:
        return await self._run("written", partial(self._claim_pin, key, sha, ttl))

    async def set_pin(self, key: str, sha: str, ttl: float) -> None:
        await self._run("written", partial(self._set_pin, key, sha, ttl))

    async def drop_pin(self, key: str) -> None:
        await self._run("written", lambda db: db.execute("DELETE FROM pins WHERE key = ?", (key,)))

    async def pinned_versions(self) -> set[str]:
        return await self._run("read", self._pinned_versions)

    async def load_turns(self, session_id: str, limit: int) -> list[Turn]:
        if limit < 1:
            return []
        query = (
            "SELECT role, text FROM (SELECT id, role, text FROM turns WHERE session = ?"
            " AND EXISTS (SELECT 1 FROM conversations WHERE session = ? AND expires > ?) ORDER BY id DESC LIMIT ?)"
            " ORDER BY id"
        )
        rows = await self._run(
            "read", lambda db: db.execute(query, (session_id, session_id, self._clock(), limit)).fetchall()
        )
        return [(role, text) for role, text in rows]

    async def append_turns(
        self, session_id: str, turns: Sequence[Turn], *, ttl: float, keep: int, quota: ConversationQuota = DEFAULT_QUOTA
    ) -> None:
        assert keep >= 1, "a conversation keeps at least its last turn"
        rows = [(session_id, role, text) for role, text in turns]
        if rows:
            await self._run("written", partial(self._append_turns, session_id, rows, ttl, keep, quota))

    async def put_version(self, sha: str, record: Record) -> None:
        # seq is given once, on the first save, so a replaced record keeps its place in versions()
        query = (
            "INSERT INTO versions (sha, seq, record) VALUES (?, (SELECT coalesce(max(seq), 0) + 1 FROM versions), ?)"
            " ON CONFLICT (sha) DO UPDATE SET record = excluded.record"
        )
        data = orjson.dumps(record).decode()
        await self._run("written", lambda db: db.execute(query, (sha, data)))

    async def versions(self) -> list[Record]:
        rows = await self._run("read", lambda db: db.execute("SELECT record FROM versions ORDER BY seq").fetchall())
        return [orjson.loads(record) for (record,) in rows]

    async def add_event(self, event: DeployEvent, *, once: str | None = None) -> bool:
        return await self._run("written", partial(self._add_event, orjson.dumps(event).decode(), once))

    async def events(self, limit: int, *, before: int | None = None) -> list[tuple[int, DeployEvent]]:
        if limit < 1:
            return []
        query = "SELECT id, record FROM events WHERE id < ? ORDER BY id DESC LIMIT ?"
        below = before if before is not None else 2**63 - 1
        rows = await self._run("read", lambda db: db.execute(query, (below, limit)).fetchall())
        return [(seq, orjson.loads(record)) for seq, record in rows]

    async def claim_delivery(self, delivery_id: str, ttl: float) -> bool:
        return await self._run("written", partial(self._claim_delivery, delivery_id, ttl))

    async def add_samples(self, slot: int, counts: Mapping[str, Mapping[str, int]], ttl: float) -> None:
        rows = [(key, slot, field, n) for key, fields in counts.items() for field, n in fields.items()]
        if rows:
            await self._run("written", partial(self._add_samples, rows, ttl))

    async def sum_samples(self, key: str, since: int) -> dict[str, int]:
        query = "SELECT field, sum(count) FROM samples WHERE key = ? AND slot >= ? GROUP BY field"
        rows = await self._run("read", lambda db: db.execute(query, (key, since)).fetchall())
        return {field: int(total) for field, total in rows}

    async def abort(self, key: str, record: Record) -> bool:
        query = "INSERT INTO aborts (key, record) VALUES (?, ?) ON CONFLICT (key) DO NOTHING"
        data = orjson.dumps(record).decode()
        return await self._run("written", lambda db: db.execute(query, (key, data)).rowcount == 1)

    async def aborts(self) -> dict[str, Record]:
        rows = await self._run("read", lambda db: db.execute("SELECT key, record FROM aborts").fetchall())
        return {key: orjson.loads(record) for key, record in rows}

    async def drop_abort(self, key: str) -> None:
        await self._run("written", lambda db: db.execute("DELETE FROM aborts WHERE key = ?", (key,)))

    async def remember_runs(self, runs: Sequence[tuple[str, Record]], *, ttl: float, max_runs: int) -> None:
        rows = [(run_id, orjson.dumps(record).decode()) for run_id, record in runs]
        if rows:
            await self._run("written", partial(self._remember_runs, rows, ttl, max_runs))

    async def answered(self, run_id: str) -> Record | None:
        return (await self.answered_many([run_id])).get(run_id)

    async def answered_many(self, run_ids: Sequence[str]) -> dict[str, Record]:
        if not run_ids:
            return {}
        rows = await self._run("read", partial(self._answered, list(run_ids)))
        return {run_id: orjson.loads(record) for run_id, record in rows}

    async def add_score(self, flow: str, key: str, slot: str, record: Record, bounds: ScoreBounds) -> bool:
        return (await self.add_scores(flow, [(key, slot, record)], bounds))[0]

    async def add_scores(self, flow: str, scores: Sequence[tuple[str, str, Record]], bounds: ScoreBounds) -> list[bool]:
        if not scores:
            return []
        rows = [(key, slot, orjson.dumps(record).decode()) for key, slot, record in scores]
        return await self._run("written", partial(self._add_scores, flow, rows, bounds))

    async def scores(self, flow: str) -> list[Record]:
        query = "SELECT record FROM scores WHERE flow = ? AND expires > ? ORDER BY seq"
        rows = await self._run("read", lambda db: db.execute(query, (flow, self._clock())).fetchall())
        return [orjson.loads(record) for (record,) in rows]

    async def publish(self, message: str) -> None:
        """A row in the wake-ups table, which every listener (of any process sharing the file) reads within
        _LISTEN_EVERY; rows older than _WAKES_KEPT go."""
        await self._run("written", partial(self._publish, message))

    def listen(self) -> AsyncIterator[str]:
        return self._poll_wakes(self._clock())

    async def _poll_wakes(self, since: float) -> AsyncIterator[str]:
        """The wake-ups published from ``since`` on: a read of the rows past the last one seen, every _LISTEN_EVERY
        (one indexed read of an almost empty table; SQLite has no notifications between processes)."""
        last: int | None = None  # the last row seen; the first read finds where ``since`` begins
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), _LISTEN_EVERY)
            if self._closing.is_set():
                return
            try:
                if last is None:
                    last = await self._run("read", partial(_last_wake_before, since))
                found = await self._run("read", partial(_wakes_after, last))
            except StoreError:
                continue  # a busy or briefly unreadable file: the next read tries again
            for seq, message in found:
                last = seq
                yield message

    async def lease(self, name: str, holder: str, ttl: float) -> bool:
        return await self._run("written", partial(self._lease, name, holder, ttl))

    async def release(self, name: str, holder: str) -> None:
        query = "DELETE FROM leases WHERE name = ? AND holder = ?"
        await self._run("written", lambda db: db.execute(query, (name, holder)))

    # everything below runs in a worker thread

    async def _run(self, what: str, step: Callable[[sqlite3.Connection], T]) -> T:
        return await anyio.to_thread.run_sync(self._locked, what, step)

    def _locked(self, what: str, step: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock, self._errors(what):
            assert self._db is not None, "open() the store before using it, and not after close()"
            return step(self._db)

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """The one place SQLite and OS errors become StoreError: ``what`` the file cannot be, and SQLite's reason.

        The message names the file for the operator (logs, the command line); the server never shows it to a client.
        """
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"the state file {self.path} cannot be {what}: {exc}") from exc

    def _open(self) -> None:
        with self._lock, self._errors("opened"):
            assert self._db is None, "the store is already open"
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: no implicit transactions; the ones we need are explicit BEGIN IMMEDIATE
            db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
            try:
                # the first statement reads the header, so a file that is not a database fails here, unchanged
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")  # in WAL mode: durable across crashes, not power loss
                self._migrate(db)
            except BaseException:
                db.close()
                raise
            self._db = db

    def _migrate(self, db: sqlite3.Connection) -> None:
        with write_transaction(db):
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the state file {self.path} has schema version {version}, newer than this gitops-flow knows"
                    f" ({SCHEMA_VERSION}); upgrade gitops-flow"
                )
            for steps in _MIGRATIONS[version:]:
                for statement in steps:
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")  # a PRAGMA takes no parameters

    def _close(self) -> None:
        with self._lock, self._errors("closed"):
            db, self._db = self._db, None
            if db is not None:
                db.close()

    def _claim_pin(self, key: str, sha: str, ttl: float, db: sqlite3.Connection) -> str:
        with write_transaction(db):
            now = self._clock()
            row = db.execute("SELECT sha FROM pins WHERE key = ? AND expires > ?", (key, now)).fetchone()
            sha = row[0] if row is not None else sha
            self._write_pin(db, key, sha, now + ttl)
        return sha

    def _set_pin(self, key: str, sha: str, ttl: float, db: sqlite3.Connection) -> None:
        with write_transaction(db):
            self._write_pin(db, key, sha, self._clock() + ttl)

    def _write_pin(self, db: sqlite3.Connection, key: str, sha: str, expires: float) -> None:
        db.execute(
            "INSERT INTO pins (key, sha, expires) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET sha = excluded.sha, expires = excluded.expires",
            (key, sha, expires),
        )
        self._pin_writes += 1
        if self._pin_writes % _PURGE_EVERY == 0:
            db.execute("DELETE FROM pins WHERE expires <= ?", (self._clock(),))

    def _pinned_versions(self, db: sqlite3.Connection) -> set[str]:
        with write_transaction(db):
            now = self._clock()
            db.execute("DELETE FROM pins WHERE expires <= ?", (now,))
            rows = db.execute("SELECT DISTINCT sha FROM pins WHERE expires > ?", (now,)).fetchall()
        return {sha for (sha,) in rows}

    def _probe(self, db: sqlite3.Connection) -> None:
        """A pin written, read back and removed in one transaction: the table every session request writes, so a
        damaged one fails here too. No flow name holds "!", so the key is nobody's pin; no reader ever sees it."""
        key, token = f"!{PROBE_PREFIX}{secrets.token_hex(8)}", secrets.token_hex(8)
        with write_transaction(db):
            db.execute("INSERT INTO pins (key, sha, expires) VALUES (?, ?, 0)", (key, token))
            row = db.execute("SELECT sha FROM pins WHERE key = ?", (key,)).fetchone()
            db.execute("DELETE FROM pins WHERE key = ?", (key,))
            if row is None or row[0] != token:
                raise sqlite3.DatabaseError("a probe written to the pins table did not read back")

    def _append_turns(
        self,
        session: str,
        rows: list[tuple[str, str, str]],
        ttl: float,
        keep: int,
        quota: ConversationQuota,
        db: sqlite3.Connection,
    ) -> None:
        with write_transaction(db):
            now = self._clock()
            expired = db.execute(
                "SELECT session FROM conversations WHERE expires <= ? ORDER BY expires LIMIT ?",
                (now, SWEEP_CONVERSATIONS),
            ).fetchall()
            own = db.execute("SELECT expires, bytes FROM conversations WHERE session = ?", (session,)).fetchone()
            if own is not None and own[0] <= now:
                expired.append((session,))  # an expired conversation starts anew, its old turns gone
                own = None
            for (gone,) in expired:
                _drop_conversation(db, gone)
            db.execute(
                "INSERT INTO conversations (session, expires, bytes) VALUES (?, ?, 0)"
                " ON CONFLICT (session) DO UPDATE SET expires = excluded.expires",
                (session, now + ttl),
            )
            db.executemany("INSERT INTO turns (session, role, text) VALUES (?, ?, ?)", rows)
            # the newest ``keep`` stay: every turn older than the keep-th newest goes
            db.execute(
                "DELETE FROM turns WHERE session = ?"
                " AND id <= (SELECT id FROM turns WHERE session = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (session, session, keep),
            )
            # its size after the trim: at most ``keep`` turns to add up, through the index
            (size,) = db.execute(
                "SELECT COALESCE(SUM(length(CAST(text AS BLOB))), 0) FROM turns WHERE session = ?", (session,)
            ).fetchone()
            db.execute("UPDATE conversations SET bytes = ? WHERE session = ?", (size, session))
            db.execute(
                "UPDATE conversation_totals SET sessions = sessions + ?, bytes = bytes + ?",
                (1 if own is None else 0, size - (own[1] if own is not None else 0)),
            )
            self._within_quota(db, session, quota)

    def _within_quota(self, db: sqlite3.Connection, session: str, quota: ConversationQuota) -> None:
        """Delete the conversations idle longest (other than ``session``) while the totals exceed ``quota``."""
        while True:
            sessions, size = db.execute("SELECT sessions, bytes FROM conversation_totals").fetchone()
            if sessions <= quota.max_sessions and size <= quota.max_bytes:
                return
            oldest = db.execute(
                "SELECT session FROM conversations WHERE session != ? ORDER BY expires LIMIT ?",
                (session, _EVICT_BATCH),
            ).fetchall()
            if not oldest:
                return
            for (gone,) in oldest:
                if sessions <= quota.max_sessions and size <= quota.max_bytes:
                    return
                freed = _drop_conversation(db, gone)
                sessions, size = sessions - 1, size - freed

    def _add_event(self, data: str, once: str | None, db: sqlite3.Connection) -> bool:
        with write_transaction(db):
            cursor = db.execute("INSERT INTO events (record, once) VALUES (?, ?) ON CONFLICT DO NOTHING", (data, once))
            if cursor.rowcount != 1:
                return False
            last = cursor.lastrowid
            assert last is not None
            db.execute("DELETE FROM events WHERE id <= ?", (last - self._max_events,))
        return True

    def _claim_delivery(self, delivery_id: str, ttl: float, db: sqlite3.Connection) -> bool:
        with write_transaction(db):
            now = self._clock()
            db.execute("DELETE FROM deliveries WHERE expires <= ?", (now,))
            query = "INSERT INTO deliveries (id, expires) VALUES (?, ?) ON CONFLICT (id) DO NOTHING"
            return db.execute(query, (delivery_id, now + ttl)).rowcount == 1

    def _publish(self, message: str, db: sqlite3.Connection) -> None:
        with write_transaction(db):
            now = self._clock()
            db.execute("INSERT INTO wakes (message, at) VALUES (?, ?)", (message, now))
            db.execute("DELETE FROM wakes WHERE at < ?", (now - _WAKES_KEPT,))

    def _lease(self, name: str, holder: str, ttl: float, db: sqlite3.Connection) -> bool:
        with write_transaction(db):
            now = self._clock()
            row = db.execute("SELECT holder, expires FROM leases WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] != holder and row[1] > now:
                return False
            db.execute(
                "INSERT INTO leases (name, holder, expires) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires",
                (name, holder, now + ttl),
            )
            return True

    def _add_samples(self, rows: list[tuple[str, int, str, int]], ttl: float, db: sqlite3.Connection) -> None:
        with write_transaction(db):
            now = self._clock()
            db.executemany(
                "INSERT INTO samples (key, slot, field, count, expires) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (key, slot, field) DO UPDATE SET count = count + excluded.count,"
                " expires = excluded.expires",
                [(*row, now + ttl) for row in rows],
            )
            db.execute("DELETE FROM samples WHERE expires <= ?", (now,))

    def _remember_runs(self, rows: list[tuple[str, str]], ttl: float, max_runs: int, db: sqlite3.Connection) -> None:
        with write_transaction(db):
            now = self._clock()
            db.executemany(
                "INSERT OR REPLACE INTO runs (id, record, expires) VALUES (?, ?, ?)", [(*r, now + ttl) for r in rows]
            )
            # the oldest rows, if expired: twice as many as were written, so expired rows never pile up
            db.execute(
                "DELETE FROM runs WHERE rowid IN (SELECT rowid FROM runs ORDER BY rowid LIMIT ?) AND expires <= ?",
                (2 * len(rows) + 16, now),
            )
            # a replaced row takes the next rowid, so the newest max_runs rows are those above this bound
            db.execute("DELETE FROM runs WHERE rowid <= (SELECT max(rowid) FROM runs) - ?", (max_runs,))

    def _answered(self, run_ids: list[str], db: sqlite3.Connection) -> list[tuple[str, str]]:
        now, found = self._clock(), []
        for start in range(0, len(run_ids), _IDS_PER_QUERY):
            chunk = run_ids[start : start + _IDS_PER_QUERY]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT id, record FROM runs WHERE id IN ({marks}) AND expires > ?"  # noqa: S608 -- only marks
            found += db.execute(query, (*chunk, now)).fetchall()
        return found

    def _add_scores(
        self, flow: str, rows: list[tuple[str, str, str]], bounds: ScoreBounds, db: sqlite3.Connection
    ) -> list[bool]:
        with write_transaction(db):  # the whole batch in one transaction: one commit
            now = self._clock()
            expired = db.execute("SELECT slot FROM scores WHERE flow = ? AND expires <= ?", (flow, now)).fetchall()
            for (old,) in expired:
                _drop_score(db, flow, old)
            return [_keep_score(db, flow, key, slot, data, now, bounds) for key, slot, data in rows]


def _keep_score(
    db: sqlite3.Connection, flow: str, key: str, slot: str, data: str, now: float, bounds: ScoreBounds
) -> bool:
    """One score of add_scores, in its transaction: False, nothing written, for a key past the flow's maximum."""
    keys = {k for (k,) in db.execute("SELECT key FROM score_keys WHERE flow = ?", (flow,)).fetchall()}
    if key not in keys and len(keys) >= bounds.max_keys:
        return False
    _drop_score(db, flow, slot)
    (seq,) = db.execute("SELECT coalesce(max(seq), 0) + 1 FROM scores WHERE flow = ?", (flow,)).fetchone()
    db.execute(
        "INSERT INTO scores (flow, slot, key, record, expires, seq) VALUES (?, ?, ?, ?, ?, ?)",
        (flow, slot, key, data, now + bounds.ttl, seq),
    )
    db.execute(
        "INSERT INTO score_keys (flow, key, count) VALUES (?, ?, 1)"
        " ON CONFLICT (flow, key) DO UPDATE SET count = count + 1",
        (flow, key),
    )
    (total,) = db.execute("SELECT sum(count) FROM score_keys WHERE flow = ?", (flow,)).fetchone()
    over = int(total) - bounds.max_scores
    if over > 0:
        query = "SELECT slot FROM scores WHERE flow = ? ORDER BY seq LIMIT ?"
        for (old,) in db.execute(query, (flow, over)).fetchall():
            _drop_score(db, flow, old)
    return True


def _drop_score(db: sqlite3.Connection, flow: str, slot: str) -> None:
    """Delete one score and lower its key's count (the key goes with its last score); nothing for an unknown slot."""
    row = db.execute("DELETE FROM scores WHERE flow = ? AND slot = ? RETURNING key", (flow, slot)).fetchone()
    if row is None:
        return
    db.execute("UPDATE score_keys SET count = count - 1 WHERE flow = ? AND key = ?", (flow, row[0]))
    db.execute("DELETE FROM score_keys WHERE flow = ? AND key = ? AND count <= 0", (flow, row[0]))


def _last_wake_before(since: float, db: sqlite3.Connection) -> int:
    row = db.execute("SELECT coalesce(max(id), 0) FROM wakes WHERE at < ?", (since,)).fetchone()
    return int(row[0])


def _wakes_after(last: int, db: sqlite3.Connection) -> list[tuple[int, str]]:
    return db.execute("SELECT id, message FROM wakes WHERE id > ? ORDER BY id", (last,)).fetchall()


def _drop_conversation(db: sqlite3.Connection, session: str) -> int:
    """Delete a conversation and take it off the totals; the bytes it took."""
    row = db.execute("DELETE FROM conversations WHERE session = ? RETURNING bytes", (session,)).fetchone()
    db.execute("DELETE FROM turns WHERE session = ?", (session,))
    if row is None:
        return 0
    db.execute("UPDATE conversation_totals SET sessions = sessions - 1, bytes = bytes - ?", (row[0],))
    return int(row[0])
