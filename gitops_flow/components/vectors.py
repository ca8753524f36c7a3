"""Vectors: the embedders a Retriever names (built-in ``hashing:<dims>``, or any provider LangChain's
``init_embeddings`` knows) and the in-process index searched by cosine similarity over one numpy matrix."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gitops_flow.exceptions import BuildError

Matrix = npt.NDArray[np.float32]
HASHING = "hashing"
MIN_DIMS, MAX_DIMS = 16, 4096
_WORD = re.compile(r"\w+")
# words too common to tell documents apart: left out, so they never cancel a word that does in a shared bucket
_STOPWORDS = frozenset(
    "a an and are as at be by can do does for from has have how i if in is it its me my no not of on or our so that "
    "the their them there these they this to was we what when where which who why will with you your".split()
)
# providers whose embeddings are paid for with a key: a Retriever naming one must pass its ``api_key`` (a secret)
KEYED_PROVIDERS = frozenset({"openai", "azure_openai", "cohere", "mistralai", "google_genai"})


@dataclass(frozen=True, slots=True)
class Embedder:
    """Texts -> float32 vectors of one model; ``model`` (``provider:name``) keys the vectors in the cache."""

    model: str
    embed: Callable[[Sequence[str]], Matrix]
    query: Callable[[str], Matrix]  # one query's vector (a provider may embed queries differently)


# what init_embeddings knows when its private table cannot be read (langchain 1.x's list)
_KNOWN = (
    "azure_openai",
    "bedrock",
    "cohere",
    "google_genai",
    "google_vertexai",
    "huggingface",
    "mistralai",
    "ollama",
    "openai",
)


def providers() -> frozenset[str]:
    """The embedding providers ``init_embeddings`` knows (its table, read here only), and the built-in hashing."""
    from gitops_flow.components.langchain_internals import embedding_providers

    return frozenset({*(embedding_providers() or _KNOWN), HASHING})


def spec_problem(spec: str, has_key: bool) -> tuple[str, str] | None:
    """(code, message) when ``embeddings`` cannot name an embedder: not ``provider:model``, an unknown provider, a
    hashing size out of bounds, or a provider that needs a key and was given none; None when it can."""
    provider, sep, name = spec.partition(":")
    if not sep or not provider or not name:
        return "bad-param", f"embeddings {spec!r} is not 'provider:model' (e.g. 'openai:text-embedding-3-small')"
    if provider == HASHING:
        if not name.isdigit() or not MIN_DIMS <= int(name) <= MAX_DIMS:
            return "bad-param", f"hashing takes its dimensions, {MIN_DIMS} to {MAX_DIMS} (e.g. 'hashing:256')"
        return None
    known = providers()
    if provider not in known:
        return "unknown-provider", f"unknown embeddings provider {provider!r}; known: {', '.join(sorted(known))}"
    if provider in KEYED_PROVIDERS and not has_key:
        return "missing-key", f'embeddings provider {provider!r} needs api_key (a secret: {{"$env": "NAME"}})'
    return None


def embedder(spec: str, api_key: str | None) -> Embedder:
    """The embedder ``spec`` names; BuildError when its provider package is missing (spec_problem checked the
    rest)."""
    provider, _, name = spec.partition(":")
    if provider == HASHING:
        dims = int(name)
        return Embedder(
            f"{HASHING}:{dims}", lambda texts: hashing_vectors(texts, dims), lambda t: hashing_vectors([t], dims)[0]
        )
    from langchain.embeddings import init_embeddings

    kwargs = {"api_key": api_key} if api_key is not None else {}
    try:
        model = init_embeddings(name, provider=provider, **kwargs)
    except ImportError as exc:
        raise BuildError(f"embeddings {spec!r}: {exc}", code="component-unavailable") from None
    except ValueError as exc:
        raise BuildError(f"embeddings {spec!r}: {exc}", code="bad-param") from None

    def embed(texts: Sequence[str]) -> Matrix:
        return np.asarray(model.embed_documents(list(texts)), dtype=np.float32)

    def query(text: str) -> Matrix:
        return np.asarray(model.embed_query(text), dtype=np.float32)

    return Embedder(spec, embed, query)


def hashing_vectors(texts: Sequence[str], dims: int) -> Matrix:
    """Deterministic bag-of-words vectors: each lower-cased word (but a few dozen English stopwords) adds ±1 at the
    bucket its sha1 picks, so texts sharing words point alike. Needs no key, no network and no model: for CI, tests
    and small FAQs."""
    out = np.zeros((len(texts), dims), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in _WORD.findall(text.lower()):
            if word in _STOPWORDS:
                continue
            digest = hashlib.sha1(word.encode(), usedforsecurity=False).digest()
            value = int.from_bytes(digest[:8], "little")
            out[row, value % dims] += 1.0 if value >> 63 else -1.0
    return out


SIMILARITY_DIMS = 1024  # buckets of the hashing vectors two answers are compared by


def similarity(first: str, second: str, dims: int = SIMILARITY_DIMS) -> float:
    """How alike two texts are, from 0 to 1: the cosine of their hashing vectors (hashing_vectors), negative cosines
    taken as 0. Two texts without a word that counts are alike only when they are equal."""
    vectors = hashing_vectors([first, second], dims)
    norms = np.linalg.norm(vectors, axis=1)
    if not norms[0] or not norms[1]:
        return float(first.strip() == second.strip())
    return float(max(0.0, min(1.0, float(vectors[0] @ vectors[1]) / float(norms[0] * norms[1]))))


def unit_rows(vectors: Matrix) -> Matrix:
    """``vectors`` scaled to length 1, row by row (a zero row stays zero), as float32."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True) if len(vectors) else np.ones((0, 1), np.float32)
    return (vectors / np.where(norms == 0, 1.0, norms)).astype(np.float32)


def cosines(units: Matrix, query: Matrix) -> Matrix:
    """The cosine of ``query`` with each row of ``units`` (unit rows): the one scoring every backend uses, so two
    backends give a chunk the same score to the last bit."""
    norm = float(np.linalg.norm(query))
    # einsum's own loop, not BLAS: OpenBLAS's threads for a matrix-vector product wait on each other under load
    # (p99 ~100 ms at 10,000 rows on a busy 2-core host against ~1 ms here), and would compete with the server
    scores: Matrix = np.einsum("ij,j->i", units, (query / norm if norm else query).astype(np.float32))
    return scores


def unit_bytes(vectors: Matrix) -> list[bytes]:
    """Each row of ``vectors`` as unit float32 bytes (a zero row stays zero): how a store on disk keeps them."""
    return [row.tobytes() for row in unit_rows(vectors)]


def ranked(query: Matrix, candidates: Sequence[bytes], order: Sequence[int]) -> list[tuple[int, float]]:
    """Candidates (unit float32 bytes, as unit_bytes made them) scored against ``query`` as Index.search scores
    rows, best first, ties by ``order`` (each candidate's row in its corpus): (position in ``candidates``, cosine)."""
    if not candidates:
        return []
    units = np.frombuffer(b"".join(candidates), dtype=np.float32).reshape(len(candidates), -1)
    scores = cosines(units, query)
    best = sorted(range(len(candidates)), key=lambda i: (-float(scores[i]), order[i]))
    return [(i, float(scores[i])) for i in best]


class Index:
    """Chunks and their unit vectors as one matrix; a search is one matrix-vector product and a partial sort."""

    def __init__(self, texts: Sequence[str], sources: Sequence[str], vectors: Matrix) -> None:
        self.texts = list(texts)
        self.sources = list(sources)
        self.matrix: Matrix = unit_rows(vectors)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def nbytes(self) -> int:
        return int(self.matrix.nbytes)

    def search(self, query: Matrix, k: int) -> list[tuple[int, float]]:
        """The ``k`` rows most similar to ``query`` (a vector), best first (ties by row), as (row, cosine)."""
        if not len(self.texts) or k < 1:
            return []
        scores = cosines(self.matrix, query)
        k = min(k, len(scores))
        if k < len(scores):
            # ties rank by row (the chunk's order in the corpus), as every IndexStore's backend ranks them: every
            # row as good as the k-th is a candidate (argpartition picks among the k-th's ties at random)
            kth = scores[np.argpartition(-scores, k - 1)[k - 1]]
            top = np.flatnonzero(scores >= kth)
        else:
            top = np.arange(len(scores))
        ranked = top[np.argsort(-scores[top], kind="stable")][:k]
        return [(int(i), float(scores[i])) for i in ranked]
