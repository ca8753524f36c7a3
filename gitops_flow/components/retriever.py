"""Retriever: a node that finds the chunks of the repository's documents nearest a query.

Its index is made when the flow is built (off the request path, before the version goes live): the documents its
``paths`` match at the build's revision are read through the build's Knowledge, split, and embedded, each chunk
looked up first in the shared cache by (model, content hash), so only chunks never seen before are embedded, then
written to the operator's IndexStore (components/indexes.py: in process, or sqlite-vec on disk). The flow names no
backend: it cannot.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.runnables import Runnable, RunnableLambda

from gitops_flow.components.base import BuildContext, ParamIssue
from gitops_flow.components.documents import Chunk, chunks, readable, sections
from gitops_flow.components.indexes import VectorIndex
from gitops_flow.components.knowledge import MAX_PATTERNS, Knowledge, matching, path_problem
from gitops_flow.components.textify import message_text
from gitops_flow.components.vectors import HASHING, Embedder, Matrix, embedder, spec_problem
from gitops_flow.exceptions import BuildError, StoreError

EMBED_BATCH = 256  # chunks per call of the embedder: the deadline is checked between calls
CLAIM_TTL = 60.0  # seconds a build holds its claim on a batch it embeds (a build that dies frees it then)
WAIT_POLL = 0.05  # seconds between looks for the chunks another build claimed
MAX_QUERY_CHARS = 10_000

log = logging.getLogger("gitops_flow.knowledge")


def check(params: Mapping[str, Any]) -> list[ParamIssue]:
    """What the signature cannot say: each path stays in the repository, the embeddings name a known provider
    (with its key), and the overlap is smaller than a chunk."""
    issues: list[ParamIssue] = []
    paths = list(params.get("paths", ()))
    if len(paths) > MAX_PATTERNS:
        issues.append((("paths",), "bad-param", f"Retriever takes at most {MAX_PATTERNS} paths"))
    for index, pattern in enumerate(paths):
        why = path_problem(str(pattern))
        if why:
            issues.append((("paths", index), "path-outside-repo", why))
    found = spec_problem(str(params.get("embeddings", DEFAULT_EMBEDDINGS)), params.get("api_key") is not None)
    if found is not None:
        issues.append((("embeddings",), *found))
    if int(params.get("chunk_overlap", 100)) >= int(params.get("chunk_size", 1000)):
        issues.append((("chunk_overlap",), "bad-param", "chunk_overlap must be smaller than chunk_size"))
    return issues


DEFAULT_EMBEDDINGS = f"{HASHING}:256"


def build(
    ctx: BuildContext,
    *,
    paths: list[str],
    embeddings: str,
    k: int,
    chunk_size: int,
    chunk_overlap: int,
    api_key: str | None,
) -> Runnable[Any, Any]:
    """The Retriever's runnable (see the module's docstring); BuildError with a code for every refusal:
    ``no-knowledge`` (a real build given no repository; a dry-build then answers no documents, with a notice),
    ``no-documents``, ``corpus-too-large``, ``unreadable-document``, ``build-timeout``, ``vector-store-failed``."""
    knowledge = ctx.knowledge
    if knowledge is None and ctx.dry_run:  # a check of the document alone (`plan`, a contract's base): no corpus
        ctx.note("documents-not-read", "this dry-build was given no repository: Retriever answers no documents")
        return _searching(None, None, k)
    if knowledge is None:
        raise BuildError(
            "Retriever reads the repository's documents, and this build was given no repository", code="no-knowledge"
        )
    limits = knowledge.library.limits
    matched = {p: blob for p, blob in matching(knowledge.files.files(), paths).items() if readable(p)}
    if not matched:
        raise BuildError(f"paths {paths} match no document (text, Markdown, HTML, JSON, CSV, PDF)", code="no-documents")
    if len(matched) > limits.max_files:
        raise BuildError(
            f"paths match {len(matched):,} documents; a Retriever reads at most {limits.max_files:,} "
            "(GITOPS_FLOW_KNOWLEDGE_MAX_FILES)",
            code="corpus-too-large",
        )
    offline = ctx.dry_run and not embeddings.startswith(f"{HASHING}:")
    if offline:  # a dry-build never calls a provider: the corpus is read and bounded, nothing is embedded
        _read(knowledge, matched, chunk_size, chunk_overlap, ctx.deadline)
        ctx.note("embeddings-not-called", f"a dry-build does not call {embeddings!r}: Retriever answers no documents")
        return _searching(None, None, k)
    corpus = _corpus_key(embeddings, chunk_size, chunk_overlap, matched)
    index = knowledge.library.index(corpus)
    embed = embedder(embeddings, api_key)
    if index is None:
        found = _read(knowledge, matched, chunk_size, chunk_overlap, ctx.deadline)
        vectors = _vectors(knowledge, embed, found, ctx)
        index = knowledge.library.indexes.index(
            [c.text for c in found], [c.source for c in found], vectors, deadline=ctx.deadline
        )
        knowledge.library.keep(corpus, index)
    return _searching(index, embed, k)


def _corpus_key(embeddings: str, chunk_size: int, chunk_overlap: int, matched: Mapping[str, str]) -> str:
    lines = [embeddings, str(chunk_size), str(chunk_overlap), *(f"{p} {b}" for p, b in matched.items())]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _read(
    knowledge: Knowledge, matched: Mapping[str, str], chunk_size: int, chunk_overlap: int, deadline: float | None
) -> list[Chunk]:
    limits = knowledge.library.limits
    total, found = 0, []
    for path in matched:
        _check_deadline(deadline, f"reading {path}")
        raw = knowledge.files.read(path, max_bytes=limits.max_bytes - total)
        total += len(raw)
        if total > limits.max_bytes:
            raise BuildError(
                f"the documents paths match pass {limits.max_bytes:,} bytes at {path} "
                "(GITOPS_FLOW_KNOWLEDGE_MAX_BYTES)",
                code="corpus-too-large",
            )
        found += chunks(path, sections(path, raw), chunk_size=chunk_size, chunk_overlap=chunk_overlap)
        if len(found) > limits.max_chunks:
            raise BuildError(
                f"the documents paths match pass {limits.max_chunks:,} chunks at {path} "
                "(GITOPS_FLOW_KNOWLEDGE_MAX_CHUNKS)",
                code="corpus-too-large",
            )
    return found


def _vectors(knowledge: Knowledge, embed: Embedder, found: list[Chunk], ctx: BuildContext) -> Matrix:
    """Each chunk's vector: from the shared cache when any build embedded the same content with the same model,
    else embedded now (in batches, the build's deadline checked between them) and kept there."""
    keys = [c.key for c in found]
    cache = knowledge.library.vectors
    try:
        kept = cache.get(embed.model, list(dict.fromkeys(keys)))
    except StoreError as exc:  # a cache that cannot be read is a miss: the chunks are embedded here
        log.warning("embeddings could not be read: %s", exc)
        kept = {}
    known = {k: np.frombuffer(v, dtype=np.float32) for k, v in kept.items()}
    missing = list(dict.fromkeys(c.key for c in found if c.key not in known))
    text_of = {c.key: c.text for c in found}
    while missing:
        # batch by batch, each claimed first: another build (a worker, a replica) embedding the same chunks now
        # embeds the batches it claimed, this one the others, and each waits for the other's
        for start in range(0, len(missing), EMBED_BATCH):
            window = missing[start : start + EMBED_BATCH]
            try:
                mine = cache.claim(embed.model, window, CLAIM_TTL)
            except StoreError as exc:
                log.warning("embeddings could not be claimed: %s", exc)
                mine = window
            _embed(knowledge, embed, mine, text_of, known, ctx)
        missing = [k for k in missing if k not in known]
        if missing:  # claimed by others: wait for their vectors (a claim that ends unfed is claimed again)
            _check_deadline(ctx.deadline, f"waiting for {len(missing):,} chunks another build embeds")
            time.sleep(WAIT_POLL)
            try:
                kept = cache.get(embed.model, missing)
            except StoreError:
                kept = {}
            known.update((k, np.frombuffer(v, dtype=np.float32)) for k, v in kept.items())
            missing = [k for k in missing if k not in known]
    if not keys:
        return np.zeros((0, 1), dtype=np.float32)
    return np.stack([known[k] for k in keys]).astype(np.float32)


def _embed(
    knowledge: Knowledge,
    embed: Embedder,
    keys: list[str],
    text_of: Mapping[str, str],
    known: dict[str, Matrix],
    ctx: BuildContext,
) -> None:
    """Embed ``keys`` in batches (the build's deadline checked between them) and keep each batch in the cache."""
    cache = knowledge.library.vectors
    for start in range(0, len(keys), EMBED_BATCH):
        _check_deadline(ctx.deadline, f"embedding chunk {start:,} of {len(keys):,}")
        batch = keys[start : start + EMBED_BATCH]
        try:
            vectors = embed.embed([text_of[k] for k in batch])
        except Exception as exc:  # a provider's error (network, quota, a refused key) fails this flow's build only
            raise BuildError(
                f"embeddings {embed.model!r} failed: {type(exc).__name__}: {_first_line(exc)}", code="embeddings-failed"
            ) from None
        made = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in zip(batch, vectors, strict=True)}
        try:
            cache.put(embed.model, {k: v.tobytes() for k, v in made.items()})
        except StoreError as exc:
            log.warning("embeddings could not be kept: %s", exc)
        known.update(made)
        knowledge.library.count(len(batch))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else ""


def _check_deadline(deadline: float | None, doing: str) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise BuildError(f"the build ran past its time limit while {doing}", code="build-timeout")


def _searching(index: VectorIndex | None, embed: Embedder | None, k: int) -> Runnable[Any, Any]:
    def search(query: Any) -> list[Document]:
        text = message_text(query)
        if text is None:
            raise ValueError("Retriever takes the query's text")
        if index is None or embed is None:
            return []
        hits = index.search(embed.query(text[:MAX_QUERY_CHARS]), k)
        return [Document(page_content=h.text, metadata={"source": h.source, "score": round(h.score, 4)}) for h in hits]

    return RunnableLambda(search, name="retriever")
