"""Embedding stores: the vectors of document chunks by (embedding model, chunk content hash), beside the state.

memory://          in this process
sqlite:///PATH     in PATH's sibling file ``<name>-embeddings.db``, shared by the processes of the machine
redis[s]://…       in the same Redis, under the same prefix, shared by every replica

The role (EmbeddingStore, in stores/base.py) is blocking, unlike the StateStore's: its only callers are builds,
which run in worker threads (a Retriever's index is made while its flow is built). A chunk is embedded once for a
model and kept, whatever commit, flow or worker meets it again; a write never replaces a vector already kept (one
model gives one vector per chunk, so two workers that embedded the same chunk at once agree).

Every backend keeps at most ``max_entries`` vectors, of every model together (GITOPS_FLOW_EMBEDDINGS_MAX_ENTRIES):
a write that takes the store past it evicts, the oldest in memory, arbitrary ones (by content hash) in SQLite and
Redis, which keep no age. An evicted chunk is embedded again by the next build that meets it; a build keeps the
vectors it wrote in its own memory, so eviction never fails a build. In SQLite and Redis the count is kept beside
the vectors (a ``counts`` row; a ``count`` key and a set of the models), so a write never counts the store; under
concurrent writers the bound may be passed by one batch for a moment.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gitops_flow.components.knowledge import MemoryVectors
from gitops_flow.exceptions import StoreError
from gitops_flow.security.redaction import redact
from gitops_flow.stores.base import EmbeddingStore, StateStore
from gitops_flow.stores.sqlite import SqliteStore

EMBEDDINGS_PREFIX = "emb:"
_BUSY_TIMEOUT = 5.0
_BATCH = 500  # keys per statement or pipeline
DEFAULT_MAX_ENTRIES = 200_000  # Settings.embeddings_max_entries: ~200 MiB of 256-dimension vectors


class MemoryEmbeddings(MemoryVectors):
    """Embeddings in this process (memory:// state, tests), at most ``max_entries`` (the oldest go first)."""

    def close(self) -> None:
        return None


def embeddings_path(state_file: Path) -> Path:
    """The embeddings' file of a state file: ``state.db`` -> ``state-embeddings.db``, in the same folder."""
    return state_file.with_name(f"{state_file.stem}-embeddings.db")


class SqliteEmbeddings:
    """Embeddings in one SQLite file (WAL mode), one connection used under a lock from build threads."""

    def __init__(self, path: Path, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.path = path
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"SqliteEmbeddings({str(self.path)!r})"

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            counted = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'counts'").fetchone() is not None
            db.execute(
                "CREATE TABLE IF NOT EXISTS embeddings (model TEXT NOT NULL, key TEXT NOT NULL, vector BLOB NOT NULL,"
                " PRIMARY KEY (model, key)) WITHOUT ROWID"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS claims (model TEXT NOT NULL, key TEXT NOT NULL, until REAL NOT NULL,"
                " PRIMARY KEY (model, key)) WITHOUT ROWID"
            )
            if not counted:  # a file of an earlier release: its vectors counted once
                db.execute("BEGIN IMMEDIATE")
                db.execute("CREATE TABLE IF NOT EXISTS counts (name TEXT PRIMARY KEY, n INTEGER NOT NULL)")
                db.execute("INSERT OR IGNORE INTO counts (name, n) SELECT 'vectors', COUNT(*) FROM embeddings")
                db.execute("COMMIT")
            self._db = db
        return self._db

    def get(self, model: str, keys: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        with self._lock, self._errors("read"):
            db = self._connect()
            for start in range(0, len(keys), _BATCH):
                batch = list(keys[start : start + _BATCH])
                marks = ",".join("?" * len(batch))
                query = f"SELECT key, vector FROM embeddings WHERE model = ? AND key IN ({marks})"  # noqa: S608
                found.update((str(k), bytes(v)) for k, v in db.execute(query, [model, *batch]))
        return found

    def put(self, model: str, vectors: Mapping[str, bytes]) -> None:
        rows = [(model, k, v) for k, v in vectors.items()]
        with self._lock, self._errors("written"):
            db = self._connect()
            db.execute("BEGIN IMMEDIATE")
            try:
                added = db.executemany(
                    "INSERT OR IGNORE INTO embeddings (model, key, vector) VALUES (?, ?, ?)", rows
                ).rowcount
                db.execute("UPDATE counts SET n = n + ? WHERE name = 'vectors'", (added,))
                (held,) = db.execute("SELECT n FROM counts WHERE name = 'vectors'").fetchone()
                if held > self.max_entries:  # arbitrary ones go (by model and content hash): SQLite keeps no age
                    evicted = db.execute(
                        "DELETE FROM embeddings WHERE (model, key) IN (SELECT model, key FROM embeddings LIMIT ?)",
                        (held - self.max_entries,),
                    ).rowcount
                    db.execute("UPDATE counts SET n = n - ? WHERE name = 'vectors'", (evicted,))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def claim(self, model: str, keys: Sequence[str], ttl: float) -> list[str]:
        now = time.time()
        mine: list[str] = []
        with self._lock, self._errors("written"):
            db = self._connect()
            db.execute("BEGIN IMMEDIATE")  # the file's write lock: one claimer at a time, across processes
            try:
                db.execute("DELETE FROM claims WHERE until <= ?", (now,))
                for key in dict.fromkeys(keys):
                    taken = db.execute(
                        "INSERT OR IGNORE INTO claims (model, key, until) VALUES (?, ?, ?)", (model, key, now + ttl)
                    )
                    if taken.rowcount == 1:
                        mine.append(key)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        return mine

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _errors(self, what: str) -> _SqliteErrors:
        return _SqliteErrors(self.path, what)


class _SqliteErrors:
    """sqlite3's errors as StoreError, naming the file."""

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = path, what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"the embeddings file {self.path} cannot be {self.what}: {exc}") from exc


class RedisEmbeddings:
    """Embeddings in Redis: one hash per model under the store's prefix, written with HSETNX (the first stays)."""

    def __init__(
        self, url: str, *, prefix: str = "gitops-flow:", timeout: float = 5.0, max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        import redis

        self.prefix = prefix
        self.max_entries = max_entries
        self._shown = redact(url)
        try:
            self._client: Any = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        except ValueError as exc:
            raise StoreError(f"embeddings at {self._shown}: {redact(str(exc))}") from None

    def __repr__(self) -> str:
        return f"RedisEmbeddings({self._shown!r}, prefix={self.prefix!r})"

    def _key(self, model: str) -> str:
        return f"{self.prefix}{EMBEDDINGS_PREFIX}{model}"

    def get(self, model: str, keys: Sequence[str]) -> dict[str, bytes]:
        import redis

        found: dict[str, bytes] = {}
        try:
            for start in range(0, len(keys), _BATCH):
                batch = list(keys[start : start + _BATCH])
                values = self._client.hmget(self._key(model), batch)
                found.update((k, bytes(v)) for k, v in zip(batch, values, strict=True) if v is not None)
        except redis.RedisError as exc:
            raise StoreError(redact(f"Redis at {self._shown} could not read embeddings: {exc}")) from None
        return found

    def put(self, model: str, vectors: Mapping[str, bytes]) -> None:
        import redis

        items = list(vectors.items())
        count, models = self._key("count"), f"{self.prefix}{EMBEDDINGS_PREFIX}models"
        try:
            for start in range(0, len(items), _BATCH):
                pipe = self._client.pipeline(transaction=False)
                for key, value in items[start : start + _BATCH]:
                    pipe.hsetnx(self._key(model), key, value)
                pipe.sadd(models, model)
                added = sum(1 for taken in pipe.execute()[:-1] if taken)
                held = int(self._client.incrby(count, added)) if added else 0
                if held > self.max_entries:
                    self._evict(models, count, held - self.max_entries)
        except redis.RedisError as exc:
            raise StoreError(redact(f"Redis at {self._shown} could not keep embeddings: {exc}")) from None

    def _evict(self, models: str, count: str, excess: int) -> None:
        """Delete ``excess`` arbitrary vectors (a random model's random fields, HRANDFIELD), and count them off."""
        while excess > 0:
            model = self._client.srandmember(models)
            if model is None:
                return
            key = self._key(model.decode())
            fields = self._client.hrandfield(key, min(excess, _BATCH))
            if not fields:
                self._client.srem(models, model)  # its hash is empty (or gone): it holds nothing to evict
                continue
            gone = int(self._client.hdel(key, *fields))
            self._client.decrby(count, gone)
            excess -= gone

    def claim(self, model: str, keys: Sequence[str], ttl: float) -> list[str]:
        import redis

        unique = list(dict.fromkeys(keys))
        mine: list[str] = []
        try:
            for start in range(0, len(unique), _BATCH):
                batch = unique[start : start + _BATCH]
                pipe = self._client.pipeline(transaction=False)
                for key in batch:
                    pipe.set(f"{self._key(model)}:claim:{key}", b"1", nx=True, px=max(1, int(ttl * 1000)))
                mine += [key for key, taken in zip(batch, pipe.execute(), strict=True) if taken]
        except redis.RedisError as exc:
            raise StoreError(redact(f"Redis at {self._shown} could not claim embeddings: {exc}")) from None
        return mine

    def close(self) -> None:
        self._client.close()


def embeddings_beside(store: StateStore, state_url: str, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> EmbeddingStore:
    """The embedding store of a server whose state is ``store`` (made from ``state_url``), holding at most
    ``max_entries`` vectors: what the state store shares, it shares."""
    if isinstance(store, SqliteStore):
        return SqliteEmbeddings(embeddings_path(store.path), max_entries=max_entries)
    if state_url.lower().startswith(("redis://", "rediss://")):
        from gitops_flow.stores.redis import DEFAULT_PREFIX, RedisStore

        parts = urlsplit(state_url)  # the password stays; ?prefix= is the store's, not redis-py's
        prefix = store.prefix if isinstance(store, RedisStore) else DEFAULT_PREFIX
        return RedisEmbeddings(f"{parts.scheme}://{parts.netloc}{parts.path}", prefix=prefix, max_entries=max_entries)
    try:
        from gitops_flow.stores.redis import RedisStore
    except ModuleNotFoundError:
        return MemoryEmbeddings(max_entries)
    if isinstance(store, RedisStore):  # handed in as an object (tests): its URL has no password
        return RedisEmbeddings(store.url, prefix=store.prefix, max_entries=max_entries)
    return MemoryEmbeddings(max_entries)
