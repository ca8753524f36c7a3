"""sqlite-vec: the Retrievers' indexes on disk, in an embedded SQLite file (``GITOPS_FLOW_VECTOR_STORE=sqlite-vec``),
for corpora too large to hold in every process's memory.

Each server process writes one file of its own, ``<GITOPS_FLOW_VECTOR_STORE_PATH>/vectors-<id>.db``, made by its
first build (WAL mode, so searches read while a build writes), and holds an exclusive lock on its ``.lock`` sibling
while it runs. Every index
a build makes is one ``vec0`` table (``idx_<n>``), written whole in one transaction before the build returns it and
never written again: a version, and a pin or a session on it, searches the table its build made, and a revert whose
build is still held finds its table at once. The table is dropped once nothing in the process refers to its index
(the versions that served it were retired, and it left the library's recent indexes): at the next build, or when the
process stops, which deletes the file. A file whose lock no process holds (a process that died) is deleted by the
next process that opens the folder. Disk is thus bounded by the indexes the live processes serve.

A search asks sqlite-vec for the ``k + 16`` nearest unit vectors (L2 distance on unit vectors ranks as cosine does),
then scores those candidates in process with the same arithmetic as the in-process index (vectors.cosines), ties by
chunk order, and asks for more while the last candidate ties with the k-th: both backends answer the same hits for
the same corpus (up to 4,096 tied chunks, sqlite-vec's limit of one query).

SQLite comes from ``apsw`` (its wheels bundle a recent SQLite that loads extensions; many Python builds' ``sqlite3``
cannot), and the extension from ``sqlite-vec``: ``pip install 'gitops-flow[sqlite-vec]'``.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import itertools
import os
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from gitops_flow.components.indexes import Hit, MemoryIndex, VectorIndex
from gitops_flow.components.vectors import Index, Matrix, ranked, unit_bytes, unit_rows
from gitops_flow.exceptions import BuildError, StoreError

EXTRA = "sqlite-vec"  # pip install 'gitops-flow[sqlite-vec]'
SPARE = 16  # candidates beyond k that sqlite-vec returns, ranked again in process (see the module's docstring)
MAX_CANDIDATES = 4096  # the most sqlite-vec's vec0 returns for one query
TIE = 1e-6  # scores this close may rank otherwise in sqlite-vec's float arithmetic than in ours
READERS_KEPT = 8  # idle read connections kept open (searches at once beyond it open their own, closed after)
_BATCH = 1_000  # rows per executemany (the deadline is checked between them)
_BUSY_TIMEOUT_MS = 5_000
_MMAP_BYTES = 256 * 1024 * 1024  # a reader maps the file: the OS page cache holds hot tables, not each connection


def missing_package() -> str | None:
    """Why this backend cannot load here (a package of its extra is missing), with the command that installs it;
    None when it can."""
    for module in ("apsw", "sqlite_vec"):
        try:
            importlib.import_module(module)
        except ImportError:
            return (
                f"GITOPS_FLOW_VECTOR_STORE=sqlite-vec needs the Python package {module!r}, which is not installed: "
                f"pip install 'gitops-flow[{EXTRA}]'"
            )
    return None


class SqliteVecIndexes:
    """An IndexStore in one sqlite-vec file of this process's own (the module's docstring)."""

    name = "sqlite-vec"

    def __init__(self, folder: Path) -> None:
        problem = missing_package()
        if problem is not None:
            raise StoreError(problem)
        self.folder = folder
        self._lock = threading.Lock()  # the writer connection (a build holds it while it writes), closing
        self._idle = threading.Lock()  # the idle readers' list alone: a search never waits for a build's write
        self._retired: deque[str] = deque()  # tables whose index was let go, dropped at the next build or close
        self._numbers = itertools.count(1)
        self._readers: list[Any] = []  # idle read connections
        self._closed = False
        # the file is made by the first build that writes an index (a process that builds none, such as the
        # supervisor checking the settings before its workers start, leaves nothing behind)
        self.path = folder / "vectors-(not yet made).db"
        self._writer: Any = None
        self._lockfile: IO[str] | None = None
        self._lockpath: Path | None = None

    def __repr__(self) -> str:
        return f"SqliteVecIndexes({str(self.path)!r})"

    def _open(self) -> Any:
        """The writer connection, the file made (and locked) on first use; under ``_lock``."""
        if self._closed:
            raise StoreError(f"the vector store {self.path} is closed")
        if self._writer is None:
            with _errors(f"the vector store's folder {self.folder}"):
                self.folder.mkdir(parents=True, exist_ok=True)
                sweep_orphans(self.folder)
                self._lockfile, self._lockpath, token = _locked_token(self.folder)
                self.path = self.folder / f"vectors-{token}.db"
                writer = _connect(self.path)
                writer.execute("PRAGMA journal_mode=WAL")
                # the file is this process's scratch (deleted when it stops or dies): no sync to disk is worth a wait
                writer.execute("PRAGMA synchronous=OFF")
                self._writer = writer
        return self._writer

    def index(
        self, texts: Sequence[str], sources: Sequence[str], vectors: Matrix, *, deadline: float | None
    ) -> VectorIndex:
        self.drop_retired()
        if not len(vectors):  # no chunk: nothing to store (a table needs its dimensions)
            return MemoryIndex(Index([], [], unit_rows(vectors)))
        units, dims = unit_bytes(vectors), int(vectors.shape[1])
        table = f"idx_{next(self._numbers)}"
        with self._lock, _errors(f"the vector store {self.path}", build=True):
            db = self._open()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    f"CREATE VIRTUAL TABLE {table} USING vec0(embedding float[{dims}], +text text, +source text)"
                )
                insert = f"INSERT INTO {table} (rowid, embedding, text, source) VALUES (?, ?, ?, ?)"  # noqa: S608
                for start in range(0, len(units), _BATCH):
                    stop = min(start + _BATCH, len(units))
                    if deadline is not None and time.monotonic() >= deadline:
                        raise BuildError(
                            f"the build ran past its time limit while writing chunk {start:,} of {len(units):,} "
                            "to the vector store",
                            code="build-timeout",
                        )
                    db.executemany(
                        insert,
                        [(row + 1, units[row], texts[row], sources[row]) for row in range(start, stop)],
                    )
            except BaseException:
                db.execute("ROLLBACK")
                db.execute(f"DROP TABLE IF EXISTS {table}")
                raise
            db.execute("COMMIT")
        found = SqliteVecIndex(self, table, len(units), dims)
        weakref.finalize(found, self._retired.append, table)  # a deque's append: safe from any thread, no lock
        return found

    def tables(self) -> list[str]:
        """The index tables the file holds now (the tests and the docs' figures look)."""
        with self._lock, _errors(f"the vector store {self.path}"):
            query = "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL TABLE%'"
            return sorted(str(name) for (name,) in self._open().execute(query))

    def drop_retired(self) -> None:
        """Drop the tables of the indexes nothing refers to any more (their versions are no longer served)."""
        while self._retired:
            table = self._retired.popleft()
            with self._lock, _errors(f"the vector store {self.path}"):
                if not self._closed and self._writer is not None:
                    self._writer.execute(f"DROP TABLE IF EXISTS {table}")

    def close(self) -> None:
        """Close every connection and delete this process's file (its indexes live as long as the process)."""
        with self._lock, self._idle:
            if self._closed:
                return
            self._closed = True
            for reader in self._readers:
                reader.close()
            if self._writer is None:  # never made
                return
            self._writer.close()
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{self.path}{suffix}")
            if self._lockpath is not None and self._lockfile is not None:
                self._lockpath.unlink(missing_ok=True)
                self._lockfile.close()

    def search(self, table: str, query: Matrix, k: int, size: int) -> list[Hit]:
        """The ``k`` best hits of ``table`` for ``query`` (SqliteVecIndex.search): sqlite-vec's nearest
        candidates, scored again in process; while the worst candidate scores as well as the k-th (ties may lie
        beyond), four times as many are asked for, up to sqlite-vec's limit."""
        [unit] = unit_bytes(query.reshape(1, -1))
        select = f"SELECT rowid, embedding, text, source FROM {table} WHERE embedding MATCH ? AND k = ?"  # noqa: S608
        wanted = min(k + SPARE, size, MAX_CANDIDATES)
        while True:
            with _errors(f"the vector store {self.path}"), self._reader() as reader:
                rows = list(reader.execute(select, (unit, wanted)))
            best = ranked(query, [bytes(r[1]) for r in rows], [int(r[0]) for r in rows])
            if not best:
                return []
            kth = best[min(k, len(best)) - 1][1]
            if wanted >= min(size, MAX_CANDIDATES) or best[-1][1] < kth - TIE:
                break
            wanted = min(wanted * 4, size, MAX_CANDIDATES)
        return [Hit(str(rows[i][2]), str(rows[i][3]), score) for i, score in best[:k]]

    @contextlib.contextmanager
    def _reader(self) -> Iterator[Any]:
        """A read connection for one search (readers never wait on the writer: WAL), taken from the idle ones or
        opened, and given back after; at most READERS_KEPT stay open while idle."""
        with self._idle:
            if self._closed:
                raise StoreError(f"the vector store {self.path} is closed")
            reader = self._readers.pop() if self._readers else None
        if reader is None:
            reader = _connect(self.path)
            reader.execute(f"PRAGMA mmap_size={_MMAP_BYTES}")
        try:
            yield reader
        finally:
            with self._idle:
                keep = not self._closed and len(self._readers) < READERS_KEPT
                if keep:
                    self._readers.append(reader)
            if not keep:
                reader.close()


class SqliteVecIndex:
    """One index: a table of the process's sqlite-vec file, made whole by one build and only read after."""

    def __init__(self, store: SqliteVecIndexes, table: str, size: int, dims: int) -> None:
        self.store, self.table, self.dims = store, table, dims
        self._size = size

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        return 0  # on disk; what is read stays in the OS page cache

    def search(self, query: Matrix, k: int) -> list[Hit]:
        if k < 1:
            return []
        return self.store.search(self.table, query, k, self._size)


def sweep_orphans(folder: Path) -> list[str]:
    """Delete the files of processes that died (a lock no process holds, or no lock at all); their names."""
    gone: list[str] = []
    locked: set[str] = set()
    for lock in sorted(folder.glob("vectors-*.lock")):
        with open(lock, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                locked.add(lock.stem)
                continue
            lock.unlink(missing_ok=True)  # unlinked while held: no other sweeper takes it for a live one
    for db in sorted(folder.glob("vectors-*.db")):
        if db.stem not in locked:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{db}{suffix}")
            gone.append(db.name)
    return gone


def _locked_token(folder: Path) -> tuple[IO[str], Path, str]:
    """A new file name's token and its lock file, made, locked, then renamed into place (so a sweeper never finds
    it free): the held handle, the lock's path and the token."""
    token = uuid.uuid4().hex[:16]
    staged = folder / f".vectors-{token}.lock"
    handle = open(staged, "w")  # noqa: SIM115 (held for the process's life, closed by close())
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    final = folder / f"vectors-{token}.lock"
    staged.rename(final)
    return handle, final, token


def _connect(path: Path) -> Any:
    import apsw
    import sqlite_vec

    db = apsw.Connection(str(path))
    db.setbusytimeout(_BUSY_TIMEOUT_MS)
    db.enable_load_extension(True)
    db.load_extension(sqlite_vec.loadable_path())
    db.enable_load_extension(False)
    return db


@contextlib.contextmanager
def _errors(what: str, *, build: bool = False) -> Iterator[None]:
    """apsw's and the file system's errors as StoreError (a search) or BuildError ``vector-store-failed`` (a build:
    that flow fails, nothing else), naming the file."""
    import apsw

    try:
        yield
    except (apsw.Error, OSError) as exc:
        message = f"{what} failed: {type(exc).__name__}: {exc}"
        if build:
            raise BuildError(message, code="vector-store-failed") from None
        raise StoreError(message) from None
