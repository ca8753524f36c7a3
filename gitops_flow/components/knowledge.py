"""Knowledge: what a Retriever is given at build: the repository's files at one commit, the shared embedding cache,
and the bounds of a corpus.

A flow never names a folder of the server: its ``paths`` are globs relative to the repository's root, matched
against the files a ``RepoFiles`` lists (a commit's tree on the server, a working tree in CI), and read through it
alone. The embedding cache is keyed by (embedding model, chunk content hash), so a chunk seen before, at any
commit, in any flow, on any worker sharing the state store, is never embedded again.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from gitops_flow.components.documents import readable
from gitops_flow.config import Settings

if TYPE_CHECKING:
    from gitops_flow.components.indexes import IndexStore, VectorIndex

MAX_PATTERNS = 20  # globs one Retriever may list
MAX_PATTERN_LENGTH = 200
INDEXES_KEPT = 16  # indexes a process keeps by corpus, so rebuilding a flow whose documents did not change is free
INDEXES_KEPT_BYTES = 256 * 1024 * 1024  # and the memory their matrices may take together (the newest is always kept)


class RepoFiles(Protocol):
    """The regular files of one repository at one revision; nothing outside it can be named."""

    def files(self) -> Mapping[str, str]:
        """Each file's path (relative to the root, ``/``-separated) -> an id of its content (the blob sha)."""
        ...

    def read(self, path: str, *, max_bytes: int) -> bytes:
        """The file's bytes (only the first ``max_bytes + 1`` of a larger one); KeyError for a path not listed."""
        ...


class VectorCache(Protocol):
    """Embeddings by (model, chunk hash), shared by every flow and commit; blocking (builds run in threads)."""

    def get(self, model: str, keys: Sequence[str]) -> dict[str, bytes]:
        """The vectors held of ``keys`` (float32 bytes); a missing key is absent from the result."""
        ...

    def put(self, model: str, vectors: Mapping[str, bytes]) -> None:
        """Keep ``vectors``; a key already held keeps its value (one model gives one vector per chunk)."""
        ...

    def claim(self, model: str, keys: Sequence[str], ttl: float) -> list[str]:
        """The ``keys`` this call may embed: those no other live claim holds, each now held for ``ttl`` seconds,
        atomically against every process sharing the cache (so two builds never embed one chunk)."""
        ...


class MemoryVectors:
    """A VectorCache in this process: the CLI's, tests', and the server's first layer; at most ``max_entries`` (of
    every model together), the oldest evicted first."""

    def __init__(self, max_entries: int = 200_000) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._claims: dict[tuple[str, str], float] = {}  # (model, key) -> when its claim ends (time.monotonic)
        self._lock = threading.Lock()

    def get(self, model: str, keys: Sequence[str]) -> dict[str, bytes]:
        with self._lock:
            return {k: self._data[(model, k)] for k in keys if (model, k) in self._data}

    def put(self, model: str, vectors: Mapping[str, bytes]) -> None:
        with self._lock:
            for key, value in vectors.items():
                self._data.setdefault((model, key), value)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def claim(self, model: str, keys: Sequence[str], ttl: float) -> list[str]:
        now = time.monotonic()
        with self._lock:
            if len(self._claims) > self.max_entries:
                self._claims = {k: until for k, until in self._claims.items() if until > now}
            mine = [k for k in dict.fromkeys(keys) if self._claims.get((model, k), 0.0) <= now]
            self._claims.update(((model, k), now + ttl) for k in mine)
            return mine


@dataclass(frozen=True, slots=True)
class CorpusLimits:
    """What one Retriever's corpus may hold: bytes read, files, chunks (each chunk one vector in memory and, with a
    provider, one paid embedding)."""

    max_bytes: int = 20 * 1024 * 1024
    max_files: int = 5_000
    max_chunks: int = 50_000

    @classmethod
    def of(cls, settings: Settings) -> CorpusLimits:
        """The bounds the settings set (GITOPS_FLOW_KNOWLEDGE_MAX_*)."""
        return cls(settings.knowledge_max_bytes, settings.knowledge_max_files, settings.knowledge_max_chunks)


def _memory_indexes() -> IndexStore:
    from gitops_flow.components.indexes import MemoryIndexes  # numpy's import is paid by the builds that need it

    return MemoryIndexes()


@dataclass(slots=True)
class Library:
    """What every build of a server (or a CI run) shares: the embedding cache, the corpus bounds, where indexes are
    kept (the operator's IndexStore), the indexes made lately (by corpus), and how many chunks were embedded (a
    chunk found in the cache is not counted)."""

    vectors: VectorCache = field(default_factory=MemoryVectors)
    limits: CorpusLimits = field(default_factory=CorpusLimits)
    indexes: IndexStore = field(default_factory=_memory_indexes)
    embedded: int = 0
    on_embedded: Callable[[int], None] = lambda count: None  # chunks embedded by one batch (the metrics' counter)
    _indexes: OrderedDict[str, VectorIndex] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def at(self, files: RepoFiles) -> Knowledge:
        """The knowledge a build of one revision reads: ``files`` with what this library shares."""
        return Knowledge(files, self)

    def index(self, key: str) -> VectorIndex | None:
        with self._lock:
            found = self._indexes.get(key)
            if found is not None:
                self._indexes.move_to_end(key)
            return found

    def keep(self, key: str, index: VectorIndex) -> None:
        with self._lock:
            self._indexes[key] = index
            while len(self._indexes) > 1 and (
                len(self._indexes) > INDEXES_KEPT or sum(i.nbytes for i in self._indexes.values()) > INDEXES_KEPT_BYTES
            ):
                self._indexes.popitem(last=False)

    def count(self, embedded: int) -> None:
        with self._lock:
            self.embedded += embedded
        self.on_embedded(embedded)


@dataclass(frozen=True, slots=True)
class Knowledge:
    """The repository's files at one revision, and the library every build shares."""

    files: RepoFiles
    library: Library


class Documents:
    """Some files of a repository held in memory (a RepoFiles that pickles): what the test sandbox's child process
    is given of the documents a flow's Retrievers read (``of``)."""

    def __init__(self, contents: Mapping[str, tuple[str, bytes]]) -> None:
        self._contents = dict(contents)  # path -> (content id, the bytes read)

    @classmethod
    def of(cls, files: RepoFiles, patterns: Sequence[str], limits: CorpusLimits) -> Documents:
        """The readable documents of ``files`` that ``patterns`` match, read within ``limits`` as a Retriever reads
        them: reading stops at the first file past ``limits.max_files`` or past ``limits.max_bytes`` in all (that
        file kept, cut at one byte over), so a Retriever over these refuses the corpus as it would over ``files``.
        A file that cannot be read is left out."""
        contents: dict[str, tuple[str, bytes]] = {}
        total = 0
        for path, content_id in matching(files.files(), [p for p in patterns if path_problem(p) is None]).items():
            if not readable(path):
                continue
            try:
                raw = files.read(path, max_bytes=max(limits.max_bytes - total, 0))
            except KeyError:
                continue
            contents[path] = (content_id, raw)
            total += len(raw)
            if total > limits.max_bytes or len(contents) > limits.max_files:
                break
        return cls(contents)

    @property
    def nbytes(self) -> int:
        return sum(len(raw) for _, raw in self._contents.values())

    def files(self) -> Mapping[str, str]:
        return {path: content_id for path, (content_id, _) in self._contents.items()}

    def read(self, path: str, *, max_bytes: int) -> bytes:
        return self._contents[path][1][: max_bytes + 1]  # KeyError: not held


def path_problem(pattern: str) -> str | None:
    """Why a ``paths`` glob cannot be used (it leaves the repository, or is not a relative glob); None if it can."""
    if not pattern or len(pattern) > MAX_PATTERN_LENGTH:
        return f"a path is a glob of 1 to {MAX_PATTERN_LENGTH} characters relative to the repository's root"
    if pattern.startswith("/") or "\\" in pattern or re.match(r"^[A-Za-z]:", pattern):
        return f"{pattern!r} is not relative to the repository's root"
    if any(part in ("..", ".") for part in pattern.split("/")) or "//" in pattern:
        return f"{pattern!r} leaves the repository (or names a folder by '.' or '..'); write it from the root"
    return None


def glob_regex(pattern: str) -> re.Pattern[str]:
    """``pattern`` as a regex over ``/``-separated paths: ``**`` spans folders, ``*`` and ``?`` stay in one, and
    ``[...]`` is a character class; everything else is literal."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end].replace("\\", "\\\\")
            out.append(f"[{'^' + body[1:] if body.startswith('!') else body}]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def matching(files: Mapping[str, str], patterns: Sequence[str]) -> dict[str, str]:
    """The files (path -> content id) that any of ``patterns`` matches, sorted by path."""
    regexes = [glob_regex(p) for p in patterns]
    return {path: files[path] for path in sorted(files) if any(r.match(path) for r in regexes)}
