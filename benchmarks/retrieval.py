"""Knowledge in Git: indexing a committed corpus, re-indexing after a one-document commit, and searching it.

A local Git repository holds 1,000 Markdown documents (ten paragraphs each, words drawn from a seeded vocabulary,
so 10,000 chunks) and one flow whose Retriever reads them with ``hashing:256``. The server's own VersionBuilder
(GitSource clone, the embedding store beside a SQLite state file) builds:

1. the first commit: every chunk read, split, embedded and indexed (the figure the target "a 1,000-document corpus
   indexes with ``hashing:`` in under 10 s" is about);
2. a commit changing one document: how many chunks were embedded again (the target: only that document's);
3. a retrieval of the built flow's Retriever (k=4) over the 10,000 chunks, in process, ``--queries`` times after a
   warm-up (the target: p99 under 5 ms): wall-clock time, and the thread's CPU time, which leaves out the waits for a
   core on a shared host (the load average is printed with the figures).

Each of it once per vector store (``--backends``): the in-process index (``memory``) and the sqlite-vec file on disk
(``sqlite-vec``, GITOPS_FLOW_VECTOR_STORE's choice for large corpora), each from a cold embedding store, with the
same corpus and queries; the script checks that both answer the same documents to every query.

    python benchmarks/retrieval.py
    python benchmarks/retrieval.py --quick            # 100 documents, 200 queries: a smoke run
    python benchmarks/retrieval.py --backends sqlite-vec
    python benchmarks/retrieval.py --json benchmarks/results/retrieval.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _machine import describe, machine, save, stats

from gitops_flow.components.indexes import IndexStore, MemoryIndexes
from gitops_flow.components.knowledge import CorpusLimits, Library
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.delivery.builds import VersionBuilder
from gitops_flow.delivery.source import GitSource
from gitops_flow.runtime.conversations import MemoryHistoryStore
from gitops_flow.stores.embeddings import SqliteEmbeddings
from gitops_flow.stores.sqlitevec import SqliteVecIndexes

BACKENDS = ("memory", "sqlite-vec")

PARAGRAPHS = 10  # a document's paragraphs: one chunk each


def flow() -> str:
    return json.dumps(
        {
            "version": 1,
            "name": "kb",
            "nodes": [
                {
                    "id": "search",
                    "component": "Retriever",
                    "params": {"paths": ["docs/**/*.md"], "embeddings": "hashing:256", "k": 4, "chunk_size": 200},
                }
            ],
            "edges": [],
        }
    )


def document(rand: random.Random, vocabulary: list[str], title: str) -> str:
    paragraphs = [" ".join(rand.choices(vocabulary, k=20)).capitalize() + "." for _ in range(PARAGRAPHS)]
    return f"# {title}\n\n" + "\n\n".join(paragraphs) + "\n"


def git(*args: str, cwd: Path) -> str:
    env = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@x"}
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout.strip()


def indexes(backend: str, folder: Path) -> IndexStore:
    return SqliteVecIndexes(folder / "vectors") if backend == "sqlite-vec" else MemoryIndexes()


def run(documents: int, queries: int, backend: str) -> dict[str, Any]:
    rand = random.Random(7)
    vocabulary = [f"w{n}{rand.choice('abcdefgh')}" for n in range(5_000)]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "repo"
        (work / "docs").mkdir(parents=True)
        (work / "flows").mkdir()
        git("init", "-q", "-b", "main", cwd=work)
        (work / "flows" / "kb.json").write_text(flow())
        for n in range(documents):
            (work / "docs" / f"doc{n:04}.md").write_text(document(rand, vocabulary, f"Document {n}"))
        git("add", "-A", cwd=work)
        git("commit", "-qm", "corpus", cwd=work)
        source = GitSource(str(work), Path(tmp) / "clone", timeout=60)
        store = indexes(backend, Path(tmp))
        library = Library(
            vectors=SqliteEmbeddings(Path(tmp) / "state-embeddings.db"), limits=CorpusLimits(), indexes=store
        )
        builder = VersionBuilder(
            source, ComponentRegistry.builtin(), history=MemoryHistoryStore(), run_tests=False, library=library
        )
        asyncio.run(source.fetch())
        started = time.perf_counter()
        first = builder.build(source.commit(git("rev-parse", "HEAD", cwd=work)))
        index_s = time.perf_counter() - started
        assert "kb" in first.flows, first.failed
        chunks_first = library.embedded

        middle = documents // 2
        (work / "docs" / f"doc{middle:04}.md").write_text(document(rand, vocabulary, f"Document {middle}, rewritten"))
        git("commit", "-qam", "one document", cwd=work)
        asyncio.run(source.fetch())
        started = time.perf_counter()
        second = builder.build(source.commit(git("rev-parse", "HEAD", cwd=work)), first)
        reindex_s = time.perf_counter() - started
        assert second.changed == ("kb",), second.changed
        re_embedded = library.embedded - chunks_first

        search = second.flows["kb"].runnable
        questions = [" ".join(rand.choices(vocabulary, k=6)) for _ in range(queries)]
        for question in questions[:50]:
            search.invoke(question)
        samples, cpu, answers = [], [], []
        gc.collect()
        for question in questions:
            began, began_cpu = time.perf_counter_ns(), time.thread_time_ns()
            found = search.invoke(question)
            samples.append((time.perf_counter_ns() - began) / 1000)
            cpu.append((time.thread_time_ns() - began_cpu) / 1000)
            answers.append([d.metadata["source"] for d in found])
        assert len(found) == 4
        source.close()
        library.vectors.close()  # type: ignore[attr-defined]
        disk = sum(p.stat().st_size for p in (Path(tmp) / "vectors").glob("vectors-*")) if backend != "memory" else 0
        store.close()
    return {
        "backend": backend,
        "answers": answers,
        "disk_bytes": disk,
        "documents": documents,
        "chunks": chunks_first,
        "index_s": index_s,
        "reindex_one_document_s": reindex_s,
        "re_embedded_chunks": re_embedded,
        "chunks_of_the_changed_document": PARAGRAPHS,
        "search": stats(samples),
        "search_cpu": stats(cpu),  # this thread's CPU time: the wall clock minus waiting for a core on a busy host
        "load_average": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=1_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--quick", action="store_true", help="100 documents and 200 queries")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="vector stores, comma-separated")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    documents, queries = (100, 200) if args.quick else (args.documents, args.queries)
    backends = [b for b in args.backends.split(",") if b]
    unknown = set(backends) - set(BACKENDS)
    if unknown or not backends:
        parser.error(f"--backends takes {', '.join(BACKENDS)}")
    info = machine()
    print(describe(info))
    figures = {backend: run(documents, queries, backend) for backend in backends}
    for backend, results in figures.items():
        search = results["search"]
        print(f"\n[{backend}] {results['documents']:,} documents, {results['chunks']:,} chunks")
        print(f"first index (read, split, embed with hashing:256, keep, index): {results['index_s']:.2f} s")
        print(
            f"a commit changing one document: {results['re_embedded_chunks']} chunks embedded again "
            f"(the document has {PARAGRAPHS}), built in {results['reindex_one_document_s']:.2f} s"
        )
        print(
            f"retrieval, k=4 over {results['chunks']:,} chunks: median {search['median_us'] / 1000:.2f} ms, "
            f"p99 {search['p99_us'] / 1000:.2f} ms, max {search['max_us'] / 1000:.2f} ms"
        )
        cpu = results["search_cpu"]
        print(f"  its CPU time: median {cpu['median_us'] / 1000:.2f} ms, p99 {cpu['p99_us'] / 1000:.2f} ms")
        if results["disk_bytes"]:
            print(f"  its file on disk (two versions' tables): {results['disk_bytes'] / 2**20:.1f} MiB")
        print(f"load average while it ran: {', '.join(f'{x:.1f}' for x in results['load_average'])}")
    answers = [results.pop("answers") for results in figures.values()]
    same = all(a == answers[0] for a in answers)
    print(f"\nthe same documents, in the same order, for every query on every backend: {'yes' if same else 'NO'}")
    assert same, "the backends answered differently"
    save(args.json, "retrieval", {"machine": info, "backends": figures})


if __name__ == "__main__":
    main()
