"""Knowledge in Git (issue 23, point 1), against a real `gitops-flow serve` over real git pushes: a Retriever reads
the documents committed beside its flow, versioned with the commit. A commit that changes only a document changes
the answers of the flows that read it (and only those are built again), a pin or a session on an earlier version
answers with the earlier knowledge, and a revert brings it back at once."""

from __future__ import annotations

import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gitops_flow.cli import main as cli
from tests.gitrepo import Remote
from tests.process import ServeProcess, serve_process
from tests.redisenv import RedisSpace
from tests.served import echo_flow, wait_until
from tests.test_workers import workers

RETURNS = "# Returns\n\nReturns are accepted within {days} days of delivery.\n"
SETUP = "# Setup\n\nPlug the device in and hold the power button for three seconds.\n"


def kb_flow(name: str, paths: list[str], tweakable: list[str] | None = None, **params: Any) -> str:
    """A flow whose answer is what its Retriever finds, as prompt text (``[path:line] text``)."""
    return json.dumps(
        {
            **({"tweakable": {"search": tweakable}} if tweakable else {}),
            "version": 1,
            "name": name,
            "nodes": [
                {
                    "id": "search",
                    "component": "Retriever",
                    "params": {"paths": paths, "k": 1, "chunk_size": 50, "chunk_overlap": 0, **params},
                },
                {"id": "context", "component": "Text"},
            ],
            "edges": [{"source": "search", "target": "context"}],
        },
        indent=2,
    )


def ask(server: ServeProcess, flow: str, question: str, **body: Any) -> tuple[str, str]:
    headers = body.pop("headers", None)
    response = server.invoke(flow, question, headers=headers, **body)
    assert response.status_code == 200, response.text
    return response.json()["output"], response.headers["x-flow-version"]


def validations(server: ServeProcess) -> float:
    for family in text_string_to_metric_families(server.client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "gitops_flow_flow_validations_total":
                return sample.value
    raise AssertionError("no validations counter")


def session(name: str) -> dict[str, Any]:
    return {"config": {"configurable": {"session_id": name}}}


def test_a_document_commit_changes_only_the_flows_that_read_it_and_pins_sessions_and_reverts_keep_their_knowledge(
    remote: Remote, tmp_path: Path
) -> None:
    first = remote.publish(
        {
            "flows/policies.json": kb_flow("policies", ["docs/**/*.md"], tweakable=["k"]),
            "flows/manual.json": kb_flow("manual", ["manual/*.md"]),
            "flows/echo.json": echo_flow(),
            "flows/raw.json": json.dumps(
                {
                    "version": 1,
                    "name": "raw",
                    "nodes": [{"id": "search", "component": "Retriever", "params": {"paths": ["manual/*.md"], "k": 1}}],
                    "edges": [],
                }
            ),
            "docs/returns.md": RETURNS.format(days=30),
            "manual/setup.md": SETUP,
        },
        "flows and their knowledge",
    )
    with serve_process(remote, tmp_path, env={"GITOPS_FLOW_PINS": "history"}) as server:
        [document] = server.invoke("raw", "power button").json()["output"]  # the Retriever's own answer
        assert document["page_content"].startswith("# Setup\n\nPlug the device in")
        assert document["metadata"]["source"] == "manual/setup.md:1" and document["type"] == "Document"
        assert ask(server, "policies", "how many days to return?") == (
            "[docs/returns.md:3] Returns are accepted within 30 days of delivery.",
            first,
        )
        assert ask(server, "policies", "returns", **session("ada"))[1] == first  # a conversation begun at `first`
        judged = validations(server)

        second = remote.publish({"docs/returns.md": RETURNS.format(days=60)}, "longer returns")
        server.reconcile()
        assert ask(server, "policies", "how many days to return?") == (
            "[docs/returns.md:3] Returns are accepted within 60 days of delivery.",
            second,
        )
        assert validations(server) == judged + 1  # only the flow that reads the document was judged and built again
        [version] = [v for v in server.client.get("/versions").json()["versions"] if v["sha"] == second]
        assert version["changed"] == ["policies"]
        assert ask(server, "manual", "power button")[0].startswith("[manual/setup.md:3] Plug the device in")
        deployed = [e for e in server.client.get("/history").json()["events"] if e["sha"] == second]
        assert [e["event"] for e in deployed] == ["deployed"]

        # a LangFlow tweak rebuilds the flow over the documents of its own version
        body = {"input_value": "how many days to return?", "tweaks": {"search": {"k": 2}}}
        response = server.client.post("/api/v1/run/policies", json=body)
        assert response.status_code == 200, response.text
        text = response.json()["outputs"][0]["outputs"][0]["results"]["message"]["text"]
        assert text.splitlines() == [
            "[docs/returns.md:3] Returns are accepted within 60 days of delivery.",
            "[docs/returns.md:1] # Returns",
        ]

        # a pin, and a session begun before, answer with the knowledge of their version
        pinned = ask(server, "policies", "how many days?", headers={"X-Flow-Version": first})
        assert pinned == ("[docs/returns.md:3] Returns are accepted within 30 days of delivery.", first)
        assert ask(server, "policies", "how many days?", **session("ada"))[0].endswith("within 30 days of delivery.")
        assert ask(server, "policies", "how many days?", **session("bob"))[0].endswith("within 60 days of delivery.")

        reverted = remote.revert(second)
        remote.push()
        server.reconcile()
        assert ask(server, "policies", "how many days?") == (
            "[docs/returns.md:3] Returns are accepted within 30 days of delivery.",
            reverted,
        )
        assert validations(server) == judged + 1  # the revert built nothing: its knowledge was built before
        events = [e["event"] for e in server.client.get("/history").json()["events"] if e["sha"] == reverted]
        assert events == ["rolled-back"]


def test_a_pin_to_a_retired_version_rebuilds_it_with_its_own_knowledge(remote: Remote, tmp_path: Path) -> None:
    first = remote.publish(
        {"flows/policies.json": kb_flow("policies", ["docs/*.md"]), "docs/returns.md": RETURNS.format(days=30)}
    )
    env = {"GITOPS_FLOW_PINS": "history", "GITOPS_FLOW_KEEP_VERSIONS": "1"}
    with serve_process(remote, tmp_path, env=env) as server:
        for days in (60, 90):
            remote.publish({"docs/returns.md": RETURNS.format(days=days)}, f"{days} days")
            server.reconcile()
        versions = {v["sha"]: v["status"] for v in server.client.get("/versions").json()["versions"]}
        assert versions[first] == "retired"  # its build is gone from the server's memory: the pin rebuilds it from Git
        assert ask(server, "policies", "days", headers={"X-Flow-Version": first}) == (
            "[docs/returns.md:3] Returns are accepted within 30 days of delivery.",
            first,
        )
        assert ask(server, "policies", "days")[0].endswith("within 90 days of delivery.")


def test_a_retriever_the_repository_cannot_feed_is_a_problem_with_file_line_and_code_on_the_server_and_in_ci(
    remote: Remote, tmp_path: Path
) -> None:
    bad = {
        "outside": kb_flow("outside", ["docs/*.md", "../secrets/*.md"]),
        "nothing": kb_flow("nothing", ["nowhere/**/*.md"]),
        "unknown": kb_flow("unknown", ["docs/*.md"], embeddings="nope:model"),
        "keyless": kb_flow("keyless", ["docs/*.md"], embeddings="openai:text-embedding-3-small"),
        "large": kb_flow("large", ["big/*.txt"]),
    }
    expected = {
        "outside": ("path-outside-repo", "$.nodes[0].params.paths[1]"),
        "nothing": ("no-documents", "$.nodes[0].params"),
        "unknown": ("unknown-provider", "$.nodes[0].params.embeddings"),
        "keyless": ("missing-key", "$.nodes[0].params.embeddings"),
        "large": ("corpus-too-large", "$.nodes[0].params"),
    }
    files: dict[str, str | None] = {f"flows/{name}.json": doc for name, doc in bad.items()}
    files |= {"flows/echo.json": echo_flow(), "docs/a.md": "A document.\n", "big/huge.txt": "word " * 1_000}
    sha = remote.publish(files, "retrievers that cannot be fed")
    with serve_process(remote, tmp_path, env={"GITOPS_FLOW_KNOWLEDGE_MAX_BYTES": "1024"}) as server:
        [version] = [v for v in server.client.get("/versions").json()["versions"] if v["sha"] == sha]
        assert sorted(version["failed"]) == sorted(bad)
        for name, (code, path) in expected.items():
            [problem] = version["failed"][name]
            assert (problem["code"], problem["path"], problem["file"]) == (code, path, f"flows/{name}.json"), problem
            assert problem["line"] is not None
        assert "KNOWLEDGE_MAX_BYTES" in version["failed"]["large"][0]["message"]
        assert server.invoke("echo", {"question": "hi"}).status_code == 200

    # the same problems in CI, from a working tree (the files checked out as pushed)
    tree = tmp_path / "checkout"
    for path, text in files.items():
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_text(text or "")
    (tree / ".git").mkdir()
    out = io.StringIO()
    environ = {**_ci(), "GITOPS_FLOW_KNOWLEDGE_MAX_BYTES": "1024"}  # CI holds corpora to the server's bounds
    code = cli.main(["validate", str(tree / "flows"), "--format", "json"], environ=environ, out=out)
    assert code == 1
    found = {(Path(p["file"]).stem, p["code"], p["path"]) for p in json.loads(out.getvalue())["problems"]}
    for name, (problem, path) in expected.items():
        assert (name, problem, path) in found


def test_a_retrievers_key_goes_only_to_its_embeddings_provider(tmp_path: Path) -> None:
    tree = tmp_path / "repo"
    (tree / ".git").mkdir(parents=True)
    (tree / "docs").mkdir()
    (tree / "docs" / "a.md").write_text("A document.\n")
    (tree / "flows").mkdir()
    for name, key in (("keyed", "OPENAI_API_KEY"), ("misdirected", "ANTHROPIC_API_KEY")):
        doc = kb_flow(name, ["docs/*.md"], embeddings="openai:text-embedding-3-small", api_key={"$env": key})
        (tree / "flows" / f"{name}.json").write_text(doc)
    out = io.StringIO()
    assert cli.main(["validate", str(tree / "flows"), "--format", "json"], environ=_ci(), out=out) == 1
    errors = [
        (Path(p["file"]).stem, p["code"], p["path"])
        for p in json.loads(out.getvalue())["problems"]
        if p["severity"] == "error"
    ]
    assert errors == [("misdirected", "env-wrong-provider", "$.nodes[0].params.api_key")]


def test_a_retrievers_index_is_never_tweaked(tmp_path: Path) -> None:
    tree = tmp_path / "repo"
    (tree / ".git").mkdir(parents=True)
    (tree / "docs").mkdir()
    (tree / "docs" / "a.md").write_text("A document.\n")
    doc = json.loads(kb_flow("kb", ["docs/*.md"], tweakable=["k", "paths", "chunk_size"]))
    (tree / "flows").mkdir()
    (tree / "flows" / "kb.json").write_text(json.dumps(doc, indent=2))
    out = io.StringIO()
    assert cli.main(["validate", str(tree / "flows"), "--format", "json"], environ=_ci(), out=out) == 1
    found = [(p["code"], p["path"]) for p in json.loads(out.getvalue())["problems"]]
    assert found == [
        ("tweak-not-allowed", "$.tweakable.search[1]"),
        ("tweak-not-allowed", "$.tweakable.search[2]"),
    ]


def test_two_workers_embed_each_chunk_once_and_a_commit_only_its_changed_chunks(remote: Remote, tmp_path: Path) -> None:
    """`serve --workers 2` over one SQLite state: the fetch leader embeds the corpus, the follower builds the same
    flow from the shared embedding store without embedding anything, and a one-document commit embeds that
    document's changed chunks once across both workers."""
    docs = {f"docs/doc{n}.md": f"Document {n} tells fact {n}.\n\nIts second part tells more {n}.\n" for n in range(20)}
    first = remote.publish({"flows/kb.json": kb_flow("kb", ["docs/*.md"]), **docs}, "twenty documents")
    with workers(remote, tmp_path, count=2) as w:
        wait_until(lambda: w.all_serve(first), timeout=30, what="both workers to serve the first commit")
        chunks = w.metric("gitops_flow_chunks_embedded_total")
        assert chunks == 40  # two chunks a document, embedded by one worker only
        second = remote.publish({"docs/doc3.md": "Document 3 tells fact 3.\n\nIts second part changed.\n"}, "one doc")
        w.server.reconcile()
        wait_until(lambda: w.all_serve(second), timeout=30, what="both workers to serve the second commit")
        assert w.metric("gitops_flow_chunks_embedded_total") == chunks + 1  # the one chunk that changed
        for slot in w.pids:
            with w.only(slot) as http:
                response = http.post("/flows/kb/invoke", json={"input": "second part changed"})
            assert response.json()["output"] == "[docs/doc3.md:3] Its second part changed."


def test_the_response_cache_never_answers_with_the_knowledge_of_another_commit(remote: Remote, tmp_path: Path) -> None:
    routing = "cache:\n  policies:\n    ttl: 10m\n"
    remote.publish(
        {
            "gitops-flow.yaml": routing,
            "flows/policies.json": kb_flow("policies", ["docs/*.md"]),
            "docs/returns.md": RETURNS.format(days=30),
        },
        "a cached flow and its knowledge",
    )
    with serve_process(remote, tmp_path) as server:
        for _ in range(2):  # the second is answered from the cache
            assert ask(server, "policies", "days to return")[0].endswith("within 30 days of delivery.")
        assert _metric(server, "gitops_flow_cache_lookups_total", result="hit") == 1
        second = remote.publish({"docs/returns.md": RETURNS.format(days=60)}, "longer returns")
        server.reconcile()
        assert ask(server, "policies", "days to return") == (
            "[docs/returns.md:3] Returns are accepted within 60 days of delivery.",
            second,
        )


def _metric(server: ServeProcess, name: str, **labels: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(server.client.get("/metrics").text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def test_two_replicas_on_redis_embed_each_chunk_once(remote: Remote, tmp_path: Path, redis_space: RedisSpace) -> None:
    """Two servers sharing Redis state build the same commits independently (each fetches and builds): the
    embeddings are shared (and new chunks claimed) through Redis, so each chunk is embedded by one of them."""
    docs = {f"docs/doc{n}.md": f"Document {n} tells fact {n}.\n\nIts second part tells more {n}.\n" for n in range(20)}
    first = remote.publish({"flows/kb.json": kb_flow("kb", ["docs/*.md"]), **docs}, "twenty documents")
    env = {"GITOPS_FLOW_STATE": f"{redis_space.url}?prefix={redis_space.prefix}"}
    with ExitStack() as stack:
        replicas = [
            stack.enter_context(serve_process(remote, tmp_path / name, env=env, ready=False)) for name in ("a", "b")
        ]
        assert [r.wait_ready() for r in replicas] == [first, first]
        assert sum(_metric(r, "gitops_flow_chunks_embedded_total") for r in replicas) == 40
        second = remote.publish({"docs/doc3.md": "Document 3 tells fact 3.\n\nIts second part changed.\n"}, "one")
        with ThreadPoolExecutor(2) as pool:  # both fetch and build it at once
            list(pool.map(lambda r: r.reconcile(), replicas))
        assert sum(_metric(r, "gitops_flow_chunks_embedded_total") for r in replicas) == 41
        for replica in replicas:
            assert ask(replica, "kb", "second part changed") == ("[docs/doc3.md:3] Its second part changed.", second)


def test_the_plan_of_a_document_change_names_the_flows_that_read_it(remote: Remote) -> None:
    remote.publish(
        {
            "flows/policies.json": kb_flow("policies", ["docs/*.md"]),
            "flows/manual.json": kb_flow("manual", ["manual/*.md"]),
            "docs/returns.md": RETURNS.format(days=30),
            "manual/setup.md": SETUP,
        },
        "flows and their knowledge",
    )
    remote.git("checkout", "-q", "-b", "longer-returns")
    remote.commit({"docs/returns.md": RETURNS.format(days=60)}, "longer returns")
    out = io.StringIO()
    assert cli.main(["plan", str(remote.work), "--base", "main", "--format", "json"], environ=_ci(), out=out) == 0
    flows = {f["name"]: f["status"] for f in json.loads(out.getvalue())["flows"]}
    assert flows == {"policies": "changed", "manual": "unchanged"}


def test_ci_never_reads_past_the_working_tree(tmp_path: Path) -> None:
    """A symlink out of the repository is not a document; the flow's only match is then nothing."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("the secret\n")
    tree = tmp_path / "repo"
    (tree / ".git").mkdir(parents=True)
    (tree / "flows").mkdir()
    (tree / "docs").mkdir()
    os.symlink(outside / "secret.md", tree / "docs" / "secret.md")
    os.symlink(outside, tree / "docs" / "linked")
    (tree / "flows" / "kb.json").write_text(kb_flow("kb", ["docs/**/*.md"]))
    out = io.StringIO()
    assert cli.main(["validate", str(tree / "flows"), "--format", "json"], environ=_ci(), out=out) == 1
    [problem] = json.loads(out.getvalue())["problems"]
    assert problem["code"] == "no-documents" and problem["line"] is not None


def _ci() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GITOPS_FLOW_")}


def kb_flow_tested(days: int) -> str:
    """kb_flow with a test that expects the returns document to say ``days`` days."""
    doc = json.loads(kb_flow("policies", ["docs/**/*.md"]))
    doc["tests"] = [{"name": "returns", "input": "how many days to return?", "expect": {"contains": f"{days} days"}}]
    return json.dumps(doc, indent=2)


def test_a_flows_tests_run_in_their_sandbox_over_the_documents_of_their_commit(remote: Remote, tmp_path: Path) -> None:
    """The tests' child process is given the documents the flow reads at the commit built: a test that holds at the
    first commit lets the flow go live, and a document change that breaks it fails the flow (the first build is
    carried), named by the test's problem."""
    first = remote.publish(
        {"flows/policies.json": kb_flow_tested(30), "docs/returns.md": RETURNS.format(days=30)}, "a tested flow"
    )
    with serve_process(remote, tmp_path) as server:
        assert ask(server, "policies", "how many days?") == (
            "[docs/returns.md:3] Returns are accepted within 30 days of delivery.",
            first,
        )
        second = remote.publish({"docs/returns.md": RETURNS.format(days=60)}, "longer returns, the test not updated")
        server.reconcile()

        def failed() -> dict[str, Any]:
            found: dict[str, Any] = next(
                v for v in server.client.get("/versions").json()["versions"] if v["sha"] == second
            )["failed"]
            return found

        wait_until(lambda: "policies" in failed(), timeout=30, what="the policies flow's verdict")
        [problem] = failed()["policies"]
        assert problem["code"] == "test-failed" and "test 'returns' failed" in problem["message"], problem
        assert problem["file"] == "flows/policies.json" and problem["line"] is not None
        assert ask(server, "policies", "how many days?")[0].endswith("within 30 days of delivery.")  # carried


def test_ci_tests_a_flow_over_the_working_trees_documents(tmp_path: Path) -> None:
    """`gitops-flow test` runs a Retriever flow's tests in the sandbox over the working tree's documents."""
    tree = tmp_path / "repo"
    (tree / ".git").mkdir(parents=True)
    (tree / "flows").mkdir()
    (tree / "docs").mkdir()
    (tree / "flows" / "policies.json").write_text(kb_flow_tested(30))
    (tree / "docs" / "returns.md").write_text(RETURNS.format(days=30))
    out = io.StringIO()
    assert cli.main(["test", str(tree / "flows")], environ=_ci(), out=out) == 0, out.getvalue()
    (tree / "docs" / "returns.md").write_text(RETURNS.format(days=60))
    out = io.StringIO()
    assert cli.main(["test", str(tree / "flows")], environ=_ci(), out=out) == 1
    assert "FAIL policies :: returns" in out.getvalue(), out.getvalue()
