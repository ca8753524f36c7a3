"""One suite, every backend: what any EmbeddingStore promises (vectors by model and chunk hash, the first write
stays, shared by every process on the backend), and which backend sits beside which state store."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from gitops_flow.exceptions import StoreError
from gitops_flow.stores import MemoryStore, SqliteStore
from gitops_flow.stores.embeddings import (
    EmbeddingStore,
    MemoryEmbeddings,
    RedisEmbeddings,
    SqliteEmbeddings,
    embeddings_beside,
    embeddings_path,
)
from gitops_flow.stores.redis import RedisStore
from tests.redisenv import RedisSpace

BOUND = 40  # the stores of this suite keep at most this many vectors (GITOPS_FLOW_EMBEDDINGS_MAX_ENTRIES)
BACKENDS: dict[str, Callable[..., EmbeddingStore]] = {
    "memory": lambda tmp_path, space: MemoryEmbeddings(BOUND),
    "sqlite": lambda tmp_path, space: SqliteEmbeddings(tmp_path / "state-embeddings.db", max_entries=BOUND),
    "redis": lambda tmp_path, space: RedisEmbeddings(space.url, prefix=space.prefix, max_entries=BOUND),
}


@pytest.fixture(params=list(BACKENDS), ids=list(BACKENDS))
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], EmbeddingStore]]:
    space = request.getfixturevalue("redis_space") if request.param == "redis" else None
    made: list[EmbeddingStore] = []
    shared = BACKENDS[request.param](tmp_path, space)  # memory: one process, one store

    def another() -> EmbeddingStore:
        store = shared if request.param == "memory" else BACKENDS[request.param](tmp_path, space)
        made.append(store)
        return store

    yield another
    for store in made:
        store.close()


def vector(*values: float) -> bytes:
    return np.asarray(values, dtype=np.float32).tobytes()


def test_vectors_are_kept_by_model_and_chunk(make: Callable[[], EmbeddingStore]) -> None:
    store = make()
    assert store.get("hashing:4", ["a", "b"]) == {}
    store.put("hashing:4", {"a": vector(1, 0, 0, 0), "b": vector(0, 1, 0, 0)})
    assert store.get("hashing:4", ["a", "b", "c"]) == {"a": vector(1, 0, 0, 0), "b": vector(0, 1, 0, 0)}
    assert store.get("openai:text-embedding-3-small", ["a"]) == {}  # another model's vectors are its own
    assert store.get("hashing:4", []) == {}


def test_the_first_write_of_a_chunk_stays(make: Callable[[], EmbeddingStore]) -> None:
    store = make()
    store.put("m", {"a": vector(1, 2)})
    store.put("m", {"a": vector(3, 4), "b": vector(5, 6)})
    assert store.get("m", ["a", "b"]) == {"a": vector(1, 2), "b": vector(5, 6)}


def test_what_one_process_keeps_another_reads(make: Callable[[], EmbeddingStore]) -> None:
    one, two = make(), make()
    one.put("m", {f"k{i}": vector(i, i) for i in range(30)})
    found = two.get("m", [f"k{i}" for i in range(1_300)])  # more than one batch of keys
    assert len(found) == 30 and found["k29"] == vector(29, 29)


def test_the_store_keeps_at_most_its_bound_of_every_model_together(make: Callable[[], EmbeddingStore]) -> None:
    one, two = make(), make()
    one.put("a:1", {f"k{i}": vector(i) for i in range(30)})
    two.put("b:1", {f"k{i}": vector(i) for i in range(30, 50)})  # another process, another model: 50 > 40
    held = {**one.get("a:1", [f"k{i}" for i in range(50)]), **one.get("b:1", [f"k{i}" for i in range(50)])}
    assert len(held) == BOUND and all(value == vector(int(key[1:])) for key, value in held.items())
    one.put("a:1", {f"k{i}": vector(i) for i in range(50, 60)})  # each write past the bound evicts as many
    two.put("a:1", {"k50": vector(0)})  # held already (unless evicted): counted once
    every = [f"k{i}" for i in range(60)]
    assert len(one.get("a:1", every)) + len(two.get("b:1", every)) == BOUND


def test_the_memory_store_evicts_the_oldest_first() -> None:
    store = MemoryEmbeddings(3)
    store.put("m", {"a": vector(1), "b": vector(2)})
    store.put("m", {"c": vector(3), "d": vector(4)})
    assert sorted(store.get("m", ["a", "b", "c", "d"])) == ["b", "c", "d"]


def test_a_sqlite_file_of_an_earlier_release_is_counted_once(tmp_path: Path) -> None:
    path = tmp_path / "state-embeddings.db"
    with sqlite3.connect(path) as db:  # the schema before the bound: no counts table
        db.execute(
            "CREATE TABLE embeddings (model TEXT NOT NULL, key TEXT NOT NULL, vector BLOB NOT NULL,"
            " PRIMARY KEY (model, key)) WITHOUT ROWID"
        )
        db.executemany("INSERT INTO embeddings VALUES ('m', ?, ?)", [(f"k{i}", vector(i)) for i in range(8)])
    db.close()
    store = SqliteEmbeddings(path, max_entries=10)
    store.put("m", {"new1": vector(1), "new2": vector(2), "new3": vector(3)})  # 11 > 10: one goes
    assert len(store.get("m", [f"k{i}" for i in range(8)] + ["new1", "new2", "new3"])) == 10
    store.close()


def test_concurrent_writers_agree(make: Callable[[], EmbeddingStore]) -> None:
    stores = [make() for _ in range(4)]
    threads = [
        threading.Thread(target=s.put, args=("m", {f"k{i}": vector(n, i) for i in range(BOUND)}))
        for n, s in enumerate(stores)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seen = [s.get("m", [f"k{i}" for i in range(BOUND)]) for s in stores]
    assert all(found == seen[0] and len(found) == BOUND for found in seen)


def test_each_chunk_is_claimed_by_one_builder_until_its_claim_ends(make: Callable[[], EmbeddingStore]) -> None:
    one, two = make(), make()
    assert one.claim("m", ["a", "b", "a"], ttl=0.3) == ["a", "b"]
    assert two.claim("m", ["b", "c"], ttl=0.3) == ["c"]  # b is one's
    assert two.claim("other-model", ["a"], ttl=0.3) == ["a"]  # a claim is per model
    time.sleep(0.6)  # past the claims' end (with slack): a builder that died frees its chunks
    assert two.claim("m", ["a", "b"], ttl=30) == ["a", "b"]
    assert one.claim("m", ["a", "b"], ttl=30) == []


def test_the_store_beside_each_state_store(tmp_path: Path, redis_space: RedisSpace) -> None:
    assert isinstance(embeddings_beside(MemoryStore(), "memory://"), MemoryEmbeddings)
    sqlite = embeddings_beside(SqliteStore(tmp_path / "state.db"), "sqlite://")
    assert isinstance(sqlite, SqliteEmbeddings) and sqlite.path == embeddings_path(tmp_path / "state.db")
    assert sqlite.path.name == "state-embeddings.db"
    url = f"{redis_space.url}?prefix={redis_space.prefix}"
    beside = embeddings_beside(RedisStore.from_url(url), url)
    assert isinstance(beside, RedisEmbeddings) and beside.prefix == redis_space.prefix
    beside.put("m", {"a": vector(1)})
    assert RedisEmbeddings(redis_space.url, prefix=redis_space.prefix).get("m", ["a"]) == {"a": vector(1)}
    beside.close()


def test_an_unreachable_backend_is_a_store_error_without_the_password() -> None:
    store = RedisEmbeddings("redis://:hunter2@127.0.0.1:1/0", timeout=0.5)
    with pytest.raises(StoreError) as raised:
        store.get("m", ["a"])
    assert "hunter2" not in str(raised.value)
    store.close()
