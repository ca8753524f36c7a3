"""The operator's vector store (issue 23, point 2), against a real `gitops-flow serve` over real git pushes: with
GITOPS_FLOW_VECTOR_STORE=sqlite-vec each version's Retriever searches a table of its own in the process's sqlite-vec
file, built before the version goes live; a document commit changes the answer while a pin keeps the earlier
knowledge, a revert builds nothing, and the file goes with the process. A flow cannot name a store; `serve` refuses
to start, naming the extra, when the store chosen is not installed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import apsw
import pytest
import sqlite_vec

from gitops_flow.cli import main as cli
from gitops_flow.components.knowledge import INDEXES_KEPT
from tests.gitrepo import Remote
from tests.process import serve_process
from tests.served import wait_until
from tests.test_knowledge import RETURNS, SETUP, ask, kb_flow, validations
from tests.test_workers import workers


def tables(db: Path) -> list[str]:
    """The index tables of a server's sqlite-vec file, read as another process would (WAL: while it serves)."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.enable_load_extension(True)
        conn.load_extension(sqlite_vec.loadable_path())
        query = "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL TABLE%'"
        return sorted(str(name) for (name,) in conn.execute(query))
    finally:
        conn.close()


def test_on_sqlite_vec_each_version_answers_from_its_own_table_and_a_pin_keeps_the_earlier_knowledge(
    remote: Remote, tmp_path: Path
) -> None:
    first = remote.publish(
        {
            "flows/policies.json": kb_flow("policies", ["docs/*.md"]),
            "docs/returns.md": RETURNS.format(days=30),
            "docs/setup.md": SETUP,
        },
        "a flow and its knowledge",
    )
    folder = tmp_path / "vectors"
    env = {
        "GITOPS_FLOW_VECTOR_STORE": "sqlite-vec",
        "GITOPS_FLOW_VECTOR_STORE_PATH": str(folder),
        "GITOPS_FLOW_PINS": "history",
    }
    with serve_process(remote, tmp_path, env=env) as server:
        [db] = folder.glob("vectors-*.db")  # one file: this server's process
        assert tables(db) == ["idx_1"]  # built before the version went live
        assert ask(server, "policies", "how many days to return?") == (
            "[docs/returns.md:3] Returns are accepted within 30 days of delivery.",
            first,
        )
        assert ask(server, "policies", "power button")[0].startswith("[docs/setup.md:3] Plug the device in")
        judged = validations(server)

        second = remote.publish({"docs/returns.md": RETURNS.format(days=60)}, "longer returns")
        server.reconcile()
        assert tables(db) == ["idx_1", "idx_2"]  # the new version's own table; the first one's is untouched
        assert ask(server, "policies", "how many days to return?") == (
            "[docs/returns.md:3] Returns are accepted within 60 days of delivery.",
            second,
        )
        pinned = ask(server, "policies", "how many days?", headers={"X-Flow-Version": first})
        assert pinned == ("[docs/returns.md:3] Returns are accepted within 30 days of delivery.", first)

        reverted = remote.revert(second)
        remote.push()
        server.reconcile()
        assert ask(server, "policies", "how many days?") == (
            "[docs/returns.md:3] Returns are accepted within 30 days of delivery.",
            reverted,
        )
        assert validations(server) == judged + 1 and tables(db) == ["idx_1", "idx_2"]  # the revert built nothing
    assert list(folder.iterdir()) == []  # the server's file went with it: disk holds only what live servers serve


def test_the_tables_of_versions_no_longer_served_are_dropped(remote: Remote, tmp_path: Path) -> None:
    """Disk is bounded by what is served: past the retained versions (here one) and the indexes a process keeps
    for rebuilds (INDEXES_KEPT), each older version's table is dropped by a later build."""
    remote.publish({"flows/kb.json": kb_flow("kb", ["docs/*.md"]), "docs/returns.md": RETURNS.format(days=1)})
    folder = tmp_path / "vectors"
    env = {
        "GITOPS_FLOW_VECTOR_STORE": "sqlite-vec",
        "GITOPS_FLOW_VECTOR_STORE_PATH": str(folder),
        "GITOPS_FLOW_KEEP_VERSIONS": "1",
    }
    pushes = INDEXES_KEPT + 4
    with serve_process(remote, tmp_path, env=env) as server:
        [db] = folder.glob("vectors-*.db")
        for days in range(2, pushes + 2):
            remote.publish({"docs/returns.md": RETURNS.format(days=days)}, f"{days} days")
            server.reconcile()
        assert ask(server, "kb", "how many days?")[0].endswith(f"within {pushes + 1} days of delivery.")
        held = tables(db)
        assert f"idx_{pushes + 1}" in held and "idx_1" not in held  # the newest is there, the oldest gone
        assert len(held) <= INDEXES_KEPT + 1, held


def test_each_worker_keeps_a_file_of_its_own_and_both_answer_alike(remote: Remote, tmp_path: Path) -> None:
    """`serve --workers 2` on sqlite-vec: one file (and one held lock) per worker process in the shared folder; each
    worker builds its index from the shared embeddings, and both answer the new document after a push."""
    first = remote.publish({"flows/kb.json": kb_flow("kb", ["docs/*.md"]), "docs/returns.md": RETURNS.format(days=30)})
    folder = tmp_path / "vectors"
    env = {"GITOPS_FLOW_VECTOR_STORE": "sqlite-vec", "GITOPS_FLOW_VECTOR_STORE_PATH": str(folder)}
    with workers(remote, tmp_path, count=2, env=env) as w:
        wait_until(lambda: w.all_serve(first), timeout=30, what="both workers to serve the first commit")
        files = sorted(folder.glob("vectors-*.db"))
        assert len(files) == 2 and all(tables(db) == ["idx_1"] for db in files)
        second = remote.publish({"docs/returns.md": RETURNS.format(days=90)}, "ninety days")
        w.server.reconcile()
        wait_until(lambda: w.all_serve(second), timeout=30, what="both workers to serve the second commit")
        for slot in w.pids:
            with w.only(slot) as http:
                response = http.post("/flows/kb/invoke", json={"input": "how many days to return?"})
            assert response.json()["output"] == "[docs/returns.md:3] Returns are accepted within 90 days of delivery."
        assert sorted(folder.glob("vectors-*.db")) == files
    assert list(folder.iterdir()) == []


def test_serve_refuses_to_start_naming_the_extra_when_sqlite_vec_is_missing(
    remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    remote.publish({"flows/policies.json": kb_flow("policies", ["docs/*.md"]), "docs/returns.md": "Returns.\n"})
    monkeypatch.setitem(sys.modules, "sqlite_vec", None)  # its import fails, as when the extra is not installed
    data = tmp_path / "data"
    environ = {"GITOPS_FLOW_VECTOR_STORE": "sqlite-vec"}
    code = cli.main(["serve", "--repo", remote.url, "--data-dir", str(data), "--workers", "1"], environ=environ)
    assert code == 1
    err = capsys.readouterr().err
    assert "GITOPS_FLOW_VECTOR_STORE=sqlite-vec" in err and "pip install 'gitops-flow[sqlite-vec]'" in err
    assert not data.exists()  # refused before anything was made


def test_a_flow_cannot_name_a_vector_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("A document.\n")
    (tmp_path / "flows").mkdir()
    flow = json.loads(kb_flow("kb", ["docs/*.md"]))
    flow["nodes"][0]["params"]["vector_store"] = "sqlite-vec"
    (tmp_path / "flows" / "kb.json").write_text(json.dumps(flow, indent=2))
    code = cli.main(["validate", str(tmp_path / "flows"), "--format", "json"], environ={})
    assert code == 1
    [problem] = json.loads(capsys.readouterr().out)["problems"]
    assert (problem["code"], problem["path"]) == ("unknown-param", "$.nodes[0].params.vector_store")
