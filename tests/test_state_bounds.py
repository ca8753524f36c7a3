"""What a client can make the state store keep, and what the store's failures show, against a real `serve` process.

Conversations: a turn's size, the turns per session and the idle time are bounded, so the SQLite file stops growing
(the reproduction: 50 calls of a chat flow with a 1 MB question grew the file by 98 MB for good). Readiness writes
and reads the store (the reproduction: `/readyz` said `store ok` on a damaged file while every session request
failed), and a store's failure reaches clients without the state file's path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gitrepo import Remote
from tests.process import ServeProcess, serve_process
from tests.statefile import bump, corrupt_table, query

LIMIT = 64 * 1024  # the default max_turn_bytes
ANSWERS = ["first answer", "second answer", "third answer"]


def chat_flow(name: str = "chat") -> str:
    """ChatHistory entry, a prompt with the history, a fake model answering ANSWERS in turn."""
    nodes = [
        {"id": "memory", "component": "ChatHistory", "params": {}},
        {
            "id": "prompt",
            "component": "ChatPromptTemplate",
            "params": {"messages": [["placeholder", "{history}"], ["human", "{question}"]]},
        },
        {"id": "llm", "component": "FakeChatModel", "params": {"responses": ANSWERS}},
        {"id": "answer", "component": "StrOutputParser", "params": {}},
    ]
    edges = [{"source": a["id"], "target": b["id"]} for a, b in zip(nodes, nodes[1:], strict=False)]
    return json.dumps({"version": 1, "name": name, "nodes": nodes, "edges": edges})


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    remote = Remote.create(tmp_path)
    remote.commit({"flows/chat.json": chat_flow()}, "a chat")
    remote.push()
    return remote


def state_file(server: ServeProcess) -> Path:
    return server.data_dir / "state.db"


def on_disk(path: Path) -> int:
    """Bytes the state takes on disk: the file and its write-ahead log."""
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def ask(server: ServeProcess, session: str, question: str) -> httpx.Response:
    return server.invoke("chat", {"question": question}, {"X-Flow-Session": session})


def turns(server: ServeProcess, session: str) -> list[tuple[str, str]]:
    rows = query(state_file(server), "SELECT role, text FROM turns WHERE session = ? ORDER BY id", session)
    return [(role, text) for role, text in rows]


def refusals(server: ServeProcess, question: str) -> list[httpx.Response]:
    """One request of every kind that would keep ``question`` as a turn: LangServe's invoke, batch and stream, and
    LangFlow's run API with and without streaming."""
    body: dict[str, Any] = {"input": {"question": question}, "config": {"configurable": {"session_id": "big"}}}
    post = server.client.post
    return [
        post("/flows/chat/invoke", json=body),
        post("/flows/chat/stream", json=body),
        post("/flows/chat/batch", json={"inputs": [body["input"]], "config": body["config"]}),
        post("/api/v1/run/chat", json={"input_value": question, "session_id": "big"}),
        post("/api/v1/run/chat?stream=true", json={"input_value": question, "session_id": "big"}),
    ]


# -- conversations ---------------------------------------------------------------------------------------------------


def test_fifty_one_megabyte_questions_are_refused_before_they_run_and_the_file_does_not_grow(
    remote: Remote, tmp_path: Path
) -> None:
    """The reproduction: 50 calls with a 1 MB question grew the SQLite file by 98 MB for good."""
    with serve_process(remote, tmp_path) as server:
        assert ask(server, "ada", "hello").json()["output"] == ANSWERS[0]
        before = on_disk(state_file(server))
        question = "x" * 1_000_000  # the body (about 1,000,060 bytes) is within the 1 MiB body limit
        answers = [response for _ in range(10) for response in refusals(server, question)]
        after = on_disk(state_file(server))
        # the model was not called by any of them: the conversation goes on with its next answer
        assert ask(server, "ada", "still there?").json()["output"] == ANSWERS[1]
        log = server.log_text()
    assert len(answers) == 50
    for response in answers:
        assert response.status_code == 413, response.text
        error = response.json()["error"]
        assert error["code"] == "turn-too-large"
        assert f"{LIMIT:,} bytes" in error["message"] and "1,000,000 bytes" in error["message"]
    assert after - before < 100_000  # nothing kept (a page or two of WAL at most), where 98 MB were
    assert turns(server, "big") == []
    assert query(state_file(server), "SELECT count(*) FROM pins WHERE key LIKE '%big'") == [(0,)]  # nor pinned
    assert query(state_file(server), "SELECT max(length(text)) FROM turns")[0][0] < LIMIT
    assert "Traceback" not in log


def test_a_turn_at_the_limit_is_kept_and_one_byte_more_is_refused(remote: Remote, tmp_path: Path) -> None:
    with serve_process(remote, tmp_path, env={"GITOPS_FLOW_MAX_TURN_BYTES": "1000"}) as server:
        at_limit = ask(server, "ada", "é" * 500)  # 1,000 bytes of UTF-8 in 500 characters
        over = ask(server, "ada", "é" * 500 + "x")
    assert at_limit.status_code == 200, at_limit.text
    assert over.status_code == 413 and "at most 1,000 bytes" in over.json()["error"]["message"]
    assert turns(server, "ada") == [("human", "é" * 500), ("ai", ANSWERS[0])]


def test_a_session_keeps_its_newest_turns(remote: Remote, tmp_path: Path) -> None:
    with serve_process(remote, tmp_path, env={"GITOPS_FLOW_MAX_TURNS": "4"}) as server:
        for n in range(3):
            assert ask(server, "ada", f"question {n}").status_code == 200
        ask(server, "bob", "mine")
    assert turns(server, "ada") == [
        ("human", "question 1"),
        ("ai", ANSWERS[1]),
        ("human", "question 2"),
        ("ai", ANSWERS[2]),
    ]
    assert turns(server, "bob") == [("human", "mine"), ("ai", ANSWERS[0])]


def test_idle_conversations_are_deleted_and_their_space_reused(remote: Remote, tmp_path: Path) -> None:
    """Rounds of new sessions, each idle past the TTL before the next: the expired ones are deleted by the next
    round's writes, so the file holds one round and stays the size of one round."""
    question = "y" * 30_000
    sizes = []
    with serve_process(remote, tmp_path, env={"GITOPS_FLOW_HISTORY_TTL": "1"}) as server:
        for round_ in range(4):
            for n in range(20):
                assert ask(server, f"r{round_}-{n}", question).status_code == 200
            sizes.append(query(state_file(server), "PRAGMA page_count")[0][0])
            time.sleep(1.2)  # past the idle TTL of one second
        sessions = query(state_file(server), "SELECT DISTINCT session FROM turns")
        expired = ask(server, "r3-0", "anyone?")  # idle past its TTL: it starts anew
    assert sorted(s for (s,) in sessions) == sorted(f"r3-{n}" for n in range(20))
    assert expired.status_code == 200
    assert turns(server, "r3-0") == [("human", "anyone?"), ("ai", expired.json()["output"])]
    assert sizes[-1] - sizes[0] < sizes[0] // 4, sizes  # kept growing by a round each time without the deletes


def test_made_up_session_ids_stay_within_the_quota_and_an_active_conversation_survives(
    remote: Remote, tmp_path: Path
) -> None:
    """The reproduction of issue 21's finding 6: 1,500 anonymous session ids with 65 KB turns added 96 MiB in 2 s,
    kept 30 days. Scaled down: 150 made-up sessions of 60 KB questions (9 MB) against a quota of 20 conversations
    and 1 MiB; one conversation keeps talking between them. The store holds the quota, the made-up sessions idle
    longest are gone, and the active conversation has every turn."""
    quota = 1024 * 1024
    env = {"GITOPS_FLOW_MAX_CONVERSATIONS": "20", "GITOPS_FLOW_MAX_CONVERSATION_BYTES": str(quota)}
    question = "q" * 60_000
    with serve_process(remote, tmp_path, env=env) as server:
        for n in range(150):
            assert ask(server, f"made-up-{n}", question).status_code == 200
            if n % 10 == 0:
                assert ask(server, "active", f"still here {n}").status_code == 200
            ((count, size),) = query(
                state_file(server), "SELECT COUNT(DISTINCT session), SUM(length(CAST(text AS BLOB))) FROM turns"
            )
            assert count <= 20 and size <= quota, (n, count, size)
        sessions = {s for (s,) in query(state_file(server), "SELECT DISTINCT session FROM turns")}
    assert "active" in sessions and len(turns(server, "active")) == 30
    assert "made-up-0" not in sessions and "made-up-149" in sessions
    made_up = sorted(int(s.rpartition("-")[2]) for s in sessions - {"active"})
    assert made_up == list(range(150 - len(made_up), 150))  # the newest are kept, the ones idle longest went


# -- the store failing -----------------------------------------------------------------------------------------------


def test_a_damaged_state_file_makes_the_server_unready_and_its_path_stays_in_the_log(
    remote: Remote, tmp_path: Path
) -> None:
    """The reproduction: /readyz said `store ok` on a damaged file while every session request failed."""
    state = tmp_path / "state" / "state.db"
    args = ["--state", f"sqlite:///{state}"]
    with serve_process(remote, tmp_path, args=args) as server:
        for n in range(50):
            assert ask(server, f"s{n}", "hello").status_code == 200
        assert server.client.get("/readyz").json()["store"] == {"ok": True, "error": None}
        corrupt_table(state, "pins")
        bump(state)  # another process's write: the server's next read sees the damaged file, not its cache
        query_session = ask(server, "s1", "again")
        ready = server.client.get("/readyz")
        plain = server.invoke("chat", {"question": "no session"})
        log = server.log_text()
    assert query_session.status_code == 503
    assert query_session.json()["error"] == {
        "code": "store-unavailable",
        "message": "the state store cannot be read or written; the server's log says why",
    }
    assert ready.status_code == 503
    assert ready.json()["ready"] is False
    assert ready.json()["store"] == {"ok": False, "error": query_session.json()["error"]["message"]}
    assert plain.status_code == 422 and plain.json()["error"]["code"] == "missing-session"
    for text in (query_session.text, ready.text):
        assert str(state.parent) not in text and "state.db" not in text and "malformed" not in text
    assert f"the state file {state} cannot be written: database disk image is malformed" in log


def test_a_server_does_not_start_on_a_damaged_state_file(remote: Remote, tmp_path: Path) -> None:
    state = tmp_path / "state" / "state.db"
    with serve_process(remote, tmp_path, args=["--state", f"sqlite:///{state}"]) as server:
        assert ask(server, "ada", "hello").status_code == 200
    corrupt_table(state, "pins")
    command = ["serve", "--repo", remote.url, "--state", f"sqlite:///{state}", "--data-dir", str(tmp_path / "again")]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GITOPS_FLOW_")}
    done = subprocess.run(
        [sys.executable, "-m", "gitops_flow", *command], capture_output=True, text=True, timeout=60, env=environ
    )
    assert done.returncode == 1
    assert f"the state file {state} cannot be written: database disk image is malformed" in done.stderr
