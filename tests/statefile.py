"""A SQLite state file seen from outside the server: what it holds, how large it is, and damage done to it."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

PAGE_GARBAGE = b"\xde\xad\xbe\xef"


def query(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of a read-only query; it sees what the server committed, in the WAL as well as in the file."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return db.execute(sql, args).fetchall()


def pages(path: Path) -> int:
    """The file's size in pages once checkpointed: free pages included, so it says how far the file has grown."""
    ((count,),) = query(path, "PRAGMA page_count")
    return int(count)


def corrupt_table(path: Path, table: str) -> None:
    """Overwrite the root page of ``table`` with garbage, in a file no process has open (checkpointed first): the
    file still opens and its schema reads, but every use of that table fails as "database disk image is
    malformed"."""
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        ((root,),) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchall()
        ((size,),) = db.execute("PRAGMA page_size").fetchall()
    with path.open("r+b") as file:
        file.seek((root - 1) * size)
        file.write(PAGE_GARBAGE * (size // len(PAGE_GARBAGE)))


def bump(path: Path) -> None:
    """Commit a write (and undo it) from another connection: a server's connection reads the file anew afterwards
    instead of from its page cache, as it would after any other process's write."""
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO deliveries (id, expires) VALUES ('statefile-bump', 0)")
        db.execute("DELETE FROM deliveries WHERE id = 'statefile-bump'")
        db.execute("COMMIT")
