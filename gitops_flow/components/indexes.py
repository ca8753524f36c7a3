"""Indexes: the boundary between a Retriever and where its vectors are searched (``VectorIndex``, ``IndexStore``),
and the in-process backend.

The operator chooses the backend (``GITOPS_FLOW_VECTOR_STORE``); a flow never names one. Whatever the backend, an
index is made once by a build (off the request path, before its version goes live) and never written again: a
version, and a pin or session on it, searches the index its build made. Two backends answer the same hits for the
same corpus and query (ties aside): each ranks by the cosine of the query and the unit vectors, best first, ties by
the chunk's order in the corpus.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gitops_flow.components.vectors import Index, Matrix


@dataclass(frozen=True, slots=True)
class Hit:
    """A chunk found by a search: its text, its source (``path:line``) and its cosine with the query."""

    text: str
    source: str
    score: float


class VectorIndex(Protocol):
    """One corpus's chunks and their vectors, made by one build and never written again."""

    def __len__(self) -> int: ...

    @property
    def nbytes(self) -> int:
        """The bytes this index holds in this process's memory (its vectors in process; ~0 for a store on disk)."""
        ...

    def search(self, query: Matrix, k: int) -> list[Hit]:
        """The ``k`` chunks most similar to ``query`` (one vector), best first. A store that cannot be read raises
        StoreError."""
        ...


class IndexStore(Protocol):
    """Where a process keeps the indexes its builds make: the operator's choice, blocking (builds run in threads)."""

    name: str  # the backend's name, as GITOPS_FLOW_VECTOR_STORE spells it

    def index(
        self, texts: Sequence[str], sources: Sequence[str], vectors: Matrix, *, deadline: float | None
    ) -> VectorIndex:
        """A new index of these chunks (row ``i``: ``texts[i]``, ``sources[i]``, ``vectors[i]``), fully written
        before it is returned. Past ``deadline`` (a ``time.monotonic()`` reading) it raises BuildError
        ``build-timeout`` and leaves nothing behind; a store that cannot be written raises BuildError
        ``vector-store-failed``. The index's storage is freed once nothing refers to the returned object."""
        ...

    def close(self) -> None: ...


class MemoryIndex:
    """A VectorIndex in this process: one numpy matrix (vectors.Index), searched with one matrix-vector product."""

    def __init__(self, index: Index) -> None:
        self._index = index

    def __len__(self) -> int:
        return len(self._index)

    @property
    def nbytes(self) -> int:
        return self._index.nbytes

    def search(self, query: Matrix, k: int) -> list[Hit]:
        index = self._index
        return [Hit(index.texts[row], index.sources[row], score) for row, score in index.search(query, k)]


class MemoryIndexes:
    """The in-process backend (``memory``, the default): indexes are matrices, freed with the builds that hold them.
    Fast to search (p99 ~1 ms over 10,000 chunks), but each process holds each served corpus's vectors in RAM."""

    name = "memory"

    def index(
        self, texts: Sequence[str], sources: Sequence[str], vectors: Matrix, *, deadline: float | None
    ) -> VectorIndex:
        return MemoryIndex(Index(texts, sources, vectors))

    def close(self) -> None:
        return None
