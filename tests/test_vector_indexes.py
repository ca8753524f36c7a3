"""One suite, every IndexStore backend (issue 23, point 2): what a Retriever's index promises whichever store the
operator chose: top-k by cosine, best first, ties by chunk order; texts and sources as written; each build's index
its own and never written again; the storage of an index nothing refers to freed; a build past its deadline leaves
nothing. Then what sqlite-vec adds: one file per process, deleted when it stops or by the next process when it
died, and the two backends answering the same hits for the same corpus."""

from __future__ import annotations

import fcntl
import gc
import random
import sys
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from gitops_flow.components.indexes import Hit, IndexStore, MemoryIndex, MemoryIndexes, VectorIndex
from gitops_flow.components.vectors import Matrix, hashing_vectors
from gitops_flow.exceptions import BuildError, StoreError
from gitops_flow.stores import sqlitevec
from gitops_flow.stores.sqlitevec import SqliteVecIndex, SqliteVecIndexes

DIMS = 64
BACKENDS: dict[str, Callable[[Path], IndexStore]] = {
    "memory": lambda tmp_path: MemoryIndexes(),
    "sqlite-vec": lambda tmp_path: SqliteVecIndexes(tmp_path / "vectors"),
}
FRUIT = ["red apples and pears", "green pears", "red cars, fast cars", "a blue sky", "red apples"]


@pytest.fixture(params=list(BACKENDS), ids=list(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[IndexStore]:
    made = BACKENDS[request.param](tmp_path)
    yield made
    made.close()


def embed(*texts: str) -> Matrix:
    return hashing_vectors(list(texts), DIMS)


def make(store: IndexStore, texts: list[str], *, deadline: float | None = None) -> VectorIndex:
    sources = [f"docs/{n}.md:{n + 1}" for n in range(len(texts))]
    return store.index(texts, sources, embed(*texts), deadline=deadline)


def alive(store: IndexStore, index: VectorIndex) -> Callable[[], bool]:
    """Whether ``index``'s storage is still held, asked after ``index`` itself is let go: its table (sqlite-vec),
    its matrix (memory)."""
    if isinstance(index, SqliteVecIndex):
        assert isinstance(store, SqliteVecIndexes)
        table = index.table
        return lambda: (store.drop_retired(), table in store.tables())[1]
    assert isinstance(index, MemoryIndex)
    held = weakref.ref(index._index)
    return lambda: held() is not None


def test_a_search_ranks_by_cosine_best_first_with_texts_and_sources(store: IndexStore) -> None:
    index = make(store, FRUIT)
    hits = index.search(embed("red apples")[0], 3)
    assert [h.text for h in hits] == ["red apples", "red apples and pears", "red cars, fast cars"]
    assert [h.source for h in hits] == ["docs/4.md:5", "docs/0.md:1", "docs/2.md:3"]
    assert [h.score for h in hits] == pytest.approx([1.0, 2 / 6**0.5, 1 / 12**0.5], abs=1e-6)  # {red, apples} ...
    assert len(index) == 5 and len(index.search(embed("red")[0], 50)) == 5  # k past the corpus: all of it
    assert index.search(embed("red")[0], 0) == []


def test_ties_rank_by_the_chunks_order_in_the_corpus(store: IndexStore) -> None:
    texts = ["same words here", "other thing", "same words here", "same words here"]
    hits = make(store, texts).search(embed("same words")[0], 3)
    assert [h.source for h in hits] == ["docs/0.md:1", "docs/2.md:3", "docs/3.md:4"]
    assert len({h.score for h in hits}) == 1


def test_texts_and_sources_come_back_as_written(store: IndexStore) -> None:
    texts = ["première ligne\navec «guillemets» et 'quotes' ; DROP TABLE x; --", "emoji 🙂 and tabs\tinside", ""]
    sources = ["kb/é.md:1", "kb/a b.md:12", "kb/empty.txt:1"]
    index = store.index(texts, sources, embed(*texts), deadline=None)
    found = {(h.text, h.source) for h in index.search(embed("ligne")[0], 3)}
    assert found == set(zip(texts, sources, strict=True))


def test_each_build_has_its_own_index_never_written_again(store: IndexStore) -> None:
    thirty = make(store, ["Returns are accepted within 30 days.", "Setup: hold the power button."])
    sixty = make(store, ["Returns are accepted within 60 days.", "Setup: hold the power button."])
    question = embed("returns accepted days")[0]
    assert thirty.search(question, 1)[0].text.endswith("30 days.")  # an earlier version answers as it did
    assert sixty.search(question, 1)[0].text.endswith("60 days.")
    make(store, ["Returns are never accepted."] * 50)  # another build, later: the first two are unchanged
    assert [h.text for h in thirty.search(question, 2)][0].endswith("30 days.") and len(thirty) == 2


def test_the_storage_of_an_index_nothing_refers_to_is_freed(store: IndexStore) -> None:
    kept = make(store, ["kept by a served version"])
    retired = make(store, ["an index of a version no longer served"])
    held = alive(store, retired)
    assert held()
    del retired
    gc.collect()
    make(store, ["a later build"])  # the sqlite-vec store drops what was let go when it next builds
    assert not held()
    assert kept.search(embed("served version")[0], 1)[0].text == "kept by a served version"


def test_a_build_past_its_deadline_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    # sqlite-vec's alone: it writes in batches, checking the deadline between them (the in-process matrix is made in
    # one numpy call, and the Retriever checks the deadline before and after it)
    store = SqliteVecIndexes(tmp_path / "vectors")
    texts = [f"chunk {n}" for n in range(2_500)]
    with pytest.raises(BuildError) as refused:
        make(store, texts, deadline=time.monotonic() - 1)
    assert refused.value.code == "build-timeout" and "vector store" in str(refused.value)
    assert store.tables() == []
    assert len(make(store, texts[:3])) == 3  # the store is fine after
    store.close()


def test_searches_at_once_answer_alike_while_another_build_writes(store: IndexStore) -> None:
    rand = random.Random(3)
    texts = [" ".join(rand.choices(FRUIT, k=3)) + f" n{n}" for n in range(2_000)]
    index = make(store, texts)
    question = embed("ripe red apples")[0]
    expected = index.search(question, 5)
    with ThreadPoolExecutor(16) as pool:
        writing = pool.submit(make, store, texts * 2)
        answers = list(pool.map(lambda _: index.search(question, 5), range(200)))
        assert len(writing.result()) == 4_000
    assert all(answer == expected for answer in answers)
    if isinstance(store, SqliteVecIndexes):  # idle readers are bounded, whatever the threads that searched
        assert len(store._readers) <= sqlitevec.READERS_KEPT


def test_a_search_never_waits_for_a_build_writing_the_store(tmp_path: Path) -> None:
    store = SqliteVecIndexes(tmp_path / "vectors")
    index = make(store, FRUIT)
    with ThreadPoolExecutor(1) as pool, store._lock:  # what a build holds while it writes its table, however long
        hits = pool.submit(index.search, embed("red apples")[0], 1).result(timeout=5)
    assert hits[0].text == "red apples"
    store.close()


def test_an_empty_corpus_answers_nothing(store: IndexStore) -> None:
    index = store.index([], [], np.zeros((0, 1), dtype=np.float32), deadline=None)
    assert len(index) == 0 and index.search(embed("x")[0], 4) == []


def test_both_backends_answer_the_same_hits_for_the_same_corpus(tmp_path: Path) -> None:
    rand = random.Random(5)
    words = [f"w{n}" for n in range(400)]
    texts = [" ".join(rand.choices(words, k=12)) for _ in range(3_000)]
    sources = [f"kb/{n // 10}.md:{n % 10 + 1}" for n in range(len(texts))]
    vectors = hashing_vectors(texts, 128)
    disk = SqliteVecIndexes(tmp_path / "vectors")
    try:
        on_disk = disk.index(texts, sources, vectors, deadline=None)
        in_memory = MemoryIndexes().index(texts, sources, vectors, deadline=None)
        for query in [" ".join(rand.choices(words, k=4)) for _ in range(60)]:
            q = hashing_vectors([query], 128)[0]
            for k in (1, 4, 10):
                assert on_disk.search(q, k) == in_memory.search(q, k), (query, k)
    finally:
        disk.close()


def test_each_process_writes_a_file_of_its_own_deleted_when_it_stops(tmp_path: Path) -> None:
    folder = tmp_path / "vectors"
    one, two = SqliteVecIndexes(folder), SqliteVecIndexes(folder)  # two processes (one lock file each)
    idle = SqliteVecIndexes(folder)  # a process that builds nothing (the supervisor of workers) makes no file
    index = make(one, ["in the first process"])
    make(two, ["in the second"])
    assert one.path != two.path and one.path.parent == folder
    third = SqliteVecIndexes(folder)
    make(third, ["a third one opens the folder: the two live files are left alone"])
    assert one.path.exists() and two.path.exists() and third.path.exists()
    third.close()
    idle.close()
    assert sorted(folder.glob("vectors-*.db")) == sorted([one.path, two.path])
    one.close()
    assert not one.path.exists() and not Path(f"{one.path}-wal").exists()
    with pytest.raises(StoreError, match="closed"):
        index.search(embed("first")[0], 1)
    two.close()


def test_the_file_of_a_process_that_died_is_deleted_by_the_next_one(tmp_path: Path) -> None:
    folder = tmp_path / "vectors"
    folder.mkdir()
    dead = folder / "vectors-0123456789abcdef.db"
    for path in (dead, Path(f"{dead}-wal"), folder / "vectors-0123456789abcdef.lock", folder / "vectors-lost.db"):
        path.write_bytes(b"left behind")
    with open(folder / "vectors-fedcba9876543210.lock", "w") as held:  # a live process's: locked
        fcntl.flock(held, fcntl.LOCK_EX)
        (folder / "vectors-fedcba9876543210.db").write_bytes(b"live")
        store = SqliteVecIndexes(folder)
        make(store, ["the first build makes the file, and sweeps the folder first"])
        names = sorted(p.name for p in folder.iterdir() if not p.name.endswith(("-wal", "-shm")))
        assert names == sorted(
            [store.path.name, f"{store.path.stem}.lock", "vectors-fedcba9876543210.db", "vectors-fedcba9876543210.lock"]
        )
        store.close()


def test_search_results_are_hits(store: IndexStore) -> None:
    [hit] = make(store, ["only one"]).search(embed("only one")[0], 1)
    assert hit == Hit("only one", "docs/0.md:1", pytest.approx(1.0))


def test_a_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "sqlite_vec", None)  # an import of it fails, as when it is not installed
    problem = sqlitevec.missing_package()
    assert problem is not None and "'sqlite_vec'" in problem and "pip install 'gitops-flow[sqlite-vec]'" in problem
    with pytest.raises(StoreError, match=r"gitops-flow\[sqlite-vec\]"):
        SqliteVecIndexes(tmp_path / "vectors")
    assert not (tmp_path / "vectors").exists()
