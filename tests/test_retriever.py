"""The Retriever as a built flow runs it: each document kind read with its sources (``path:line``), `Text` turning
documents into prompt text beside the question, and indexing that embeds each chunk once per model."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gitops_flow.components.knowledge import (
    CorpusLimits,
    Documents,
    Library,
    MemoryVectors,
    glob_regex,
    path_problem,
)
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.components.vectors import Index, hashing_vectors
from gitops_flow.exceptions import BuildError
from gitops_flow.flow.document import FlowSpec
from gitops_flow.runtime import sandbox as test_sandbox
from gitops_flow.runtime.compiler import build_flow
from gitops_flow.validation.worktree import WorkingTree

REGISTRY = ComponentRegistry.builtin()


class Files:
    """A repository's files in memory (a RepoFiles), counting reads."""

    def __init__(self, files: Mapping[str, bytes]) -> None:
        self.data = dict(files)
        self.reads = 0

    def files(self) -> Mapping[str, str]:
        return {path: str(hash(data)) for path, data in self.data.items()}

    def read(self, path: str, *, max_bytes: int) -> bytes:
        self.reads += 1
        return self.data[path][: max_bytes + 1]


def pdf(lines: list[str]) -> bytes:
    """A one-page PDF whose page shows ``lines`` (Helvetica), written by hand."""
    content = "BT /F1 12 Tf 72 720 Td " + " ".join(f"({line}) Tj 0 -16 Td" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        " /Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n{body}\nendobj\n".encode())
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def flow(paths: list[str], **params: Any) -> FlowSpec:
    """question -> Retriever -> Text, fanned in beside the question by a prompt (the RAG shape)."""
    return FlowSpec.model_validate(
        {
            "version": 1,
            "name": "kb",
            "nodes": [
                {"id": "question", "component": "Passthrough"},
                {"id": "search", "component": "Retriever", "params": {"paths": paths, "chunk_size": 200, **params}},
                {"id": "context", "component": "Text", "params": {"separator": "\n\n"}},
                {"id": "prompt", "component": "PromptTemplate", "params": {"template": "{context}\n\nQ: {question}"}},
            ],
            "edges": [
                {"source": "question", "target": "search"},
                {"source": "search", "target": "context"},
                {"source": "context", "target": "prompt", "key": "context"},
                {"source": "question", "target": "prompt", "key": "question"},
            ],
        }
    )


def searcher(files: Files, library: Library, **params: Any) -> Any:
    spec = FlowSpec.model_validate(
        {
            "version": 1,
            "name": "search",
            "nodes": [{"id": "search", "component": "Retriever", "params": params}],
            "edges": [],
        }
    )
    return build_flow(spec, REGISTRY, knowledge=library.at(files)).runnable


CORPUS = {
    "kb/returns.md": b"# Returns\n\nYou may return an order within 30 days.\n",
    "kb/page.html": b"<html><head><style>p {color: red}</style></head>\n<body>\n<p>Our office is in Lisbon.</p></body>",
    "kb/plans.json": json.dumps({"plan": "pro", "seats": 25}).encode(),
    "kb/events.jsonl": b'{"event": "launch"}\n\n{"event": "webinar on pricing"}\n',
    "kb/stock.csv": b"item,count\nlamps,12\nchairs,40\n",
    "kb/manual.pdf": pdf(["Warranty lasts two years.", "Batteries one year."]),
    "kb/skipped.bin": b"\x00\x01",
}


@pytest.mark.parametrize(
    ("question", "source", "text"),
    [
        ("return an order days", "kb/returns.md:3", "You may return an order within 30 days."),
        ("office Lisbon", "kb/page.html:3", "Our office is in Lisbon."),
        ("seats plan", "kb/plans.json:1", '{"plan": "pro", "seats": 25}'),
        ("webinar pricing", "kb/events.jsonl:3", '{"event": "webinar on pricing"}'),
        ("chairs count", "kb/stock.csv:3", "item: chairs\ncount: 40"),
        ("warranty years", "kb/manual.pdf:1", "Warranty lasts two years.\nBatteries one year."),
    ],
    ids=["markdown", "html", "json", "jsonl", "csv", "pdf"],
)
def test_each_kind_of_document_is_read_with_its_source(question: str, source: str, text: str) -> None:
    search = searcher(Files(CORPUS), Library(), paths=["kb/*"], k=1, chunk_size=50, chunk_overlap=0)
    [found] = search.invoke(question)
    assert (found.metadata["source"], found.page_content.strip()) == (source, text)


def test_text_puts_documents_with_their_sources_beside_the_question() -> None:
    built = build_flow(flow(["kb/*.md", "kb/*.csv"], k=2), REGISTRY, knowledge=Library().at(Files(CORPUS)))
    prompt = built.runnable.invoke("how many chairs in stock?").to_string()
    assert prompt.startswith("[kb/stock.csv:3] item: chairs\ncount: 40\n\n[")
    assert prompt.endswith("\n\nQ: how many chairs in stock?")


def test_only_changed_chunks_are_embedded_and_an_unchanged_corpus_is_not_read_again() -> None:
    docs = {
        f"kb/doc{n}.md": f"Document {n} says fact number {n}.\n\nIt has a second part {n}.\n".encode()
        for n in range(50)
    }
    library = Library()
    files = Files(docs)
    searcher(files, library, paths=["kb/**/*.md"], chunk_size=40, chunk_overlap=0)
    assert library.embedded == 100  # two chunks a document
    searcher(files, library, paths=["kb/**/*.md"], chunk_size=40, chunk_overlap=0)
    assert library.embedded == 100 and files.reads == 50  # the same corpus: its index, kept
    changed = Files({**docs, "kb/doc7.md": b"Document 7 now says something else.\n\nIt has a second part 7.\n"})
    search = searcher(changed, library, paths=["kb/**/*.md"], chunk_size=40, chunk_overlap=0)
    assert library.embedded == 101  # only the chunk whose content changed
    assert search.invoke("something else")[0].metadata["source"] == "kb/doc7.md:1"
    searcher(changed, library, paths=["kb/**/*.md"], chunk_size=40, chunk_overlap=0, embeddings="hashing:128")
    assert library.embedded == 201  # another model embeds its own vectors


class SlowVectors(MemoryVectors):
    """A shared cache whose writes take a while (a remote store, a slow provider), so concurrent builds overlap."""

    def put(self, model: str, vectors: Mapping[str, bytes]) -> None:
        time.sleep(0.2)
        super().put(model, vectors)


def test_concurrent_builds_sharing_a_store_embed_each_chunk_once() -> None:
    """Two replicas building the same new corpus at once: each chunk is embedded by one of them."""
    docs = {f"kb/doc{n}.md": f"Document {n} says fact {n}.\n\nIts second part {n}.\n".encode() for n in range(20)}
    shared = SlowVectors()
    replicas = [Library(vectors=shared), Library(vectors=shared)]
    searches: list[Any] = []
    threads = [
        threading.Thread(
            target=lambda lib=lib: searches.append(
                searcher(Files(docs), lib, paths=["kb/*.md"], chunk_size=30, chunk_overlap=0)
            )
        )
        for lib in replicas
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(lib.embedded for lib in replicas) == 40  # two chunks a document, each embedded once in all
    assert all(len(s.invoke("fact 3")) == 4 for s in searches)


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (CorpusLimits(max_bytes=1024), "GITOPS_FLOW_KNOWLEDGE_MAX_BYTES"),
        (CorpusLimits(max_files=3), "GITOPS_FLOW_KNOWLEDGE_MAX_FILES"),
        (CorpusLimits(max_chunks=5), "GITOPS_FLOW_KNOWLEDGE_MAX_CHUNKS"),
    ],
    ids=["bytes", "files", "chunks"],
)
def test_a_corpus_past_its_bounds_does_not_build(limits: CorpusLimits, message: str) -> None:
    docs = {f"kb/{n}.md": ("word " * 100).encode() for n in range(5)}
    with pytest.raises(BuildError) as raised:
        searcher(Files(docs), Library(limits=limits), paths=["kb/*.md"], chunk_size=100, chunk_overlap=0)
    assert raised.value.code == "corpus-too-large" and message in str(raised.value)


def test_the_tests_child_is_given_only_the_matched_documents_within_the_bounds() -> None:
    """What the sandbox hands a flow's tests (Documents.of): the readable documents the Retrievers' globs match,
    read up to the first one past a bound, so that the child refuses the corpus as the build does."""
    docs = {f"kb/{n}.md": ("word " * 100).encode() for n in range(5)}
    files = Files({**docs, "other/secret.md": b"secret", "kb/blob.bin": b"\x00"})
    held = Documents.of(files, ["kb/*", "../other/*.md"], CorpusLimits())
    assert set(held.files()) == set(docs) and files.reads == 5 and held.nbytes == 2500
    assert len(Documents.of(Files(docs), ["kb/*.md"], CorpusLimits(max_files=3)).files()) == 4
    over = Documents.of(Files(docs), ["kb/*.md"], CorpusLimits(max_bytes=1024))
    assert (len(over.files()), over.nbytes) == (3, 1025)

    spec = FlowSpec.model_validate(
        {
            "version": 1,
            "name": "kb",
            "nodes": [
                {"id": "search", "component": "Retriever", "params": {"paths": ["kb/*.md"], "k": 1}},
                {"id": "context", "component": "Text"},
            ],
            "edges": [{"source": "search", "target": "context"}],
            "tests": [{"name": "finds", "input": "word", "expect": {"contains": "[kb/"}}],
        }
    )
    sandbox = test_sandbox.TestSandbox(REGISTRY, budget=30)
    [passed] = sandbox.run(spec, Library().at(Files(docs)))
    assert passed.passed, passed
    [refused] = sandbox.run(spec, Library(limits=CorpusLimits(max_bytes=1024)).at(Files(docs)))
    assert not refused.passed and "GITOPS_FLOW_KNOWLEDGE_MAX_BYTES" in refused.message, refused
    [unfed] = sandbox.run(spec)  # a dry-build given no repository: the Retriever answers no documents
    assert not unfed.passed and unfed.output == "", unfed


def test_a_build_without_the_repository_or_past_its_deadline_is_refused() -> None:
    spec = flow(["kb/*.md"])
    with pytest.raises(BuildError) as raised:
        build_flow(spec, REGISTRY)
    assert raised.value.code == "no-knowledge"
    checked = build_flow(spec, REGISTRY, dry_run=True)  # a document checked alone (a plan, a contract's base)
    assert "documents-not-read" in {n.code for n in checked.notes}
    with pytest.raises(BuildError) as raised:
        build_flow(spec, REGISTRY, knowledge=Library().at(Files(CORPUS)), deadline=0.0, clock=lambda: -1.0)
    assert raised.value.code == "build-timeout"


def test_a_dry_build_with_a_provider_reads_the_corpus_but_calls_nothing() -> None:
    built = build_flow(
        flow(["kb/*.md"], embeddings="openai:text-embedding-3-small", api_key={"$env": "OPENAI_API_KEY"}),
        REGISTRY,
        knowledge=Library().at(Files(CORPUS)),
        dry_run=True,
    )
    assert "embeddings-not-called" in {n.code for n in built.notes}
    assert built.runnable.invoke("returns").to_string() == "\n\nQ: returns"


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("kb/**/*.md", ["kb/a.md", "kb/x/y/a.md"], ["kb/a.txt", "other/kb/a.md"]),
        ("kb/*.md", ["kb/a.md"], ["kb/x/a.md"]),
        ("kb/[ab].md", ["kb/a.md"], ["kb/c.md"]),
        ("**/*.md", ["a.md", "x/a.md"], ["a.txt"]),
    ],
)
def test_globs(pattern: str, matches: list[str], misses: list[str]) -> None:
    regex = glob_regex(pattern)
    assert all(regex.match(p) for p in matches) and not any(regex.match(p) for p in misses)


@pytest.mark.parametrize("pattern", ["../x/*.md", "/etc/*", "kb/../../x", "C:/x", "kb\\x", "./kb/*.md", ""])
def test_paths_that_leave_the_repository_are_refused(pattern: str) -> None:
    assert path_problem(pattern) is not None


def test_the_working_tree_follows_links_only_inside_it(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "examples" / "kb").mkdir(parents=True)
    (root / "examples" / "kb" / "a.md").write_text("inside")
    (root / "flows").symlink_to(root / "examples")
    (tmp_path / "secret.md").write_text("outside")
    (root / "leak.md").symlink_to(tmp_path / "secret.md")
    (root / ".venv").mkdir()
    (root / ".venv" / "b.md").write_text("hidden")
    tree = WorkingTree(root)
    assert list(tree.files()) == ["examples/kb/a.md"] or list(tree.files()) == ["flows/kb/a.md"]
    with pytest.raises(KeyError):
        tree.read("leak.md", max_bytes=100)


def test_search_is_cosine_over_one_matrix() -> None:
    vectors = hashing_vectors(["red apples", "green pears", "red cars"], 64)
    index = Index(["red apples", "green pears", "red cars"], ["a:1", "b:1", "c:1"], vectors)
    ranked = index.search(hashing_vectors(["red apples"], 64)[0], 3)
    assert [row for row, _ in ranked][0] == 0 and ranked[0][1] == pytest.approx(1.0)
    assert (
        index.search(np.zeros(64, dtype=np.float32), 2) != []
        and Index([], [], np.zeros((0, 64))).search(vectors[0], 2) == []
    )
