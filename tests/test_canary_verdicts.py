"""A canary's verdict is the canary's (issue 21), against a real `gitops-flow serve` over real git pushes: what a
client's inputs do on every version (a stream cut off after its first chunk, an answer slow everywhere) aborts no
healthy canary, on any path, while a canary that fails or is slow where its primary is not is still aborted; and
every abort, the guard's after a resume included, is in the history, the notifications and the commit's status."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.githubapi import GitHubStandIn, github_standin
from tests.gitrepo import Remote
from tests.process import ADMIN, ServeProcess, serve_process
from tests.served import echo_flow, wait_until
from tests.statefile import query
from tests.test_github_statuses import github_env
from tests.test_outbound import Script, receiver
from tests.test_per_flow import canary_users, events, targets

COMPONENTS = """\
components:
  Moody:
    target: tests.operator_components:moody
    kind: model
"""
BUDGET_MS = 300
ANALYSIS = {"window": "60s", "min_requests": 5, "max_error_rate": 0.5, "max_failures": 6, "max_p99_ms": BUDGET_MS}
ROUTING = {
    "routes": {"default": [{"ref": "stable", "weight": 50}, {"ref": "main", "weight": 50}]},
    "analysis": ANALYSIS,
}
SLOW = 0.6  # seconds an input holding "slow" takes on every version: twice the budget


def moody_flow(answer: str, **params: Any) -> str:
    """echo_flow with the Moody model: cut off after its first chunk on a question holding "cut", slow on one
    holding "slow", on every version alike."""
    doc = json.loads(echo_flow("echo"))
    doc["nodes"][1] = {"id": "llm", "component": "Moody", "params": {"answer": answer, "slow": SLOW, **params}}
    return json.dumps(doc)


def chat_flow(answer: str, **params: Any) -> str:
    """A conversational flow with the Moody model: its conversation kept per session."""
    nodes = [
        {"id": "memory", "component": "ChatHistory", "params": {}},
        {
            "id": "prompt",
            "component": "ChatPromptTemplate",
            "params": {"messages": [["placeholder", "{history}"], ["human", "{question}"]]},
        },
        {"id": "llm", "component": "Moody", "params": {"answer": answer, "slow": SLOW, **params}},
        {"id": "answer", "component": "StrOutputParser", "params": {}},
    ]
    edges = [{"source": a["id"], "target": b["id"]} for a, b in zip(nodes, nodes[1:], strict=False)]
    return json.dumps({"version": 1, "name": "chat", "nodes": nodes, "edges": edges})


def stream_text(server: ServeProcess, path: str, body: dict[str, Any], user: str) -> str:
    response = server.client.post(path, json=body, headers={"X-Flow-User": user})
    assert response.status_code == 200, response.text
    return response.text


def cut_off(server: ServeProcess, path: str, user: str) -> None:
    """One stream that fails after its first chunk, on ``path`` (LangServe's stream, stream_events, stream_log, or
    LangFlow's run API streaming)."""
    if path.startswith("/api/"):
        text = stream_text(server, path, {"input_value": "please cut", "stream": True}, user)
        assert '"event":"token"' in text and '"event":"error"' in text
    else:
        text = stream_text(server, path, {"input": {"question": "please cut"}}, user)
        assert "event: data" in text and "event: error" in text


STREAMS = [
    "/flows/echo/stream",
    "/flows/echo/stream_events",
    "/flows/echo/stream_log",
    "/api/v1/run/echo?stream=true",
    "/flows/echo/stream",
    "/flows/echo/stream_events",
]


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("verdicts")


@dataclass
class Stand:
    """One server for the module: its remote, the GitHub stand-in its statuses go to, and a notification sink."""

    remote: Remote
    server: ServeProcess
    github: GitHubStandIn
    sink: Script


@pytest.fixture(scope="module")
def stand(module_tmp: Path) -> Iterator[Stand]:
    remote = Remote.create(module_tmp)
    files = {
        "flows/echo.json": moody_flow("the stable answer"),
        "flows/chat.json": chat_flow("the stable chat"),
        "gitops-flow.yaml": yaml.safe_dump(ROUTING),
    }
    remote.tag("stable", remote.publish(files))
    remote.push_tags()
    (module_tmp / "components.yaml").write_text(COMPONENTS)
    sink = Script()
    with github_standin() as github, receiver(sink) as sink_url:
        (module_tmp / "notify.yaml").write_text(yaml.safe_dump({"notifications": [{"name": "ops", "url": sink_url}]}))
        env = {
            **github_env(github),
            "GITOPS_FLOW_NOTIFY_FILE": str(module_tmp / "notify.yaml"),
            "GITOPS_FLOW_ANALYSIS_INTERVAL": "0.1",
            "GITOPS_FLOW_COMPONENTS": str(module_tmp / "components.yaml"),
        }
        with serve_process(remote, module_tmp, env=env) as server:
            yield Stand(remote, server, github, sink)
        assert github.violations == []


def aborted_at(server: ServeProcess, sha: str) -> list[dict[str, Any]]:
    return [e for e in events(server, "aborted") if e["sha"] == sha]


def settle(server: ServeProcess) -> None:
    """Long enough for every run on the primary (SLOW at most) to end and the guard to judge it several times."""
    time.sleep(SLOW + 1.0)


def test_streams_cut_off_on_every_version_and_inputs_slow_on_every_version_leave_a_healthy_canary_live(
    stand: Stand,
) -> None:
    """The reproduction: six streams that fail after their first chunk on every version, then six inputs slow on
    every version, all from users that land on the canary, on every streaming path."""
    remote, server = stand.remote, stand.server
    canary = remote.publish({"flows/echo.json": moody_flow("a healthy canary")}, "a healthy canary")
    server.reconcile()
    users = canary_users("echo", 12)
    for path, user in zip(STREAMS, users[:6], strict=True):
        cut_off(server, path, user)
    settle(server)
    assert aborted_at(server, canary) == []
    for user in users[6:]:
        response = server.invoke("echo", {"question": "slow please"}, headers={"X-Flow-User": user})
        assert (response.status_code, response.headers["x-flow-version"]) == (200, canary)
    settle(server)
    assert aborted_at(server, canary) == []
    assert targets(server, "echo") == [("stable", "live"), ("main", "live")]


def test_a_canary_cut_off_where_its_primary_is_not_is_aborted(stand: Stand) -> None:
    remote, server = stand.remote, stand.server
    canary = remote.publish({"flows/echo.json": moody_flow("a broken canary", cut_always=True)}, "cuts every answer")
    server.reconcile()
    for path, user in zip(STREAMS, canary_users("echo", 6), strict=True):
        if path.startswith("/api/"):
            text = stream_text(server, path, {"input_value": "hello", "stream": True}, user)
            assert '"event":"error"' in text
        else:
            text = stream_text(server, path, {"input": {"question": "hello"}}, user)
            assert "event: error" in text
    wait_until(lambda: len(aborted_at(server, canary)) == 1, what="the broken canary's abort")
    assert "6 failures in the window" in aborted_at(server, canary)[0]["reason"]


def test_a_canary_slower_than_its_primary_on_the_same_inputs_is_aborted(
    stand: Stand,
) -> None:
    remote, server = stand.remote, stand.server
    canary = remote.publish({"flows/echo.json": moody_flow("a slow canary", latency=SLOW)}, "slow on every input")
    server.reconcile()
    # as many as the guard needs to judge, no more: once it has them it may abort before another request comes
    for user in canary_users("echo", ANALYSIS["min_requests"]):
        response = server.invoke("echo", {"question": "hello"}, headers={"X-Flow-User": user})
        assert (response.status_code, response.headers["x-flow-version"]) == (200, canary)
    wait_until(lambda: len(aborted_at(server, canary)) == 1, what="the slow canary's abort")
    assert "p99 latency" in aborted_at(server, canary)[0]["reason"]


def test_a_second_automatic_abort_after_a_resume_is_recorded_again(stand: Stand) -> None:
    remote, server = stand.remote, stand.server
    canary = remote.publish({"flows/echo.json": moody_flow("broken again", cut_always=True)}, "cuts again")
    server.reconcile()
    users = canary_users("echo", 6)

    def break_it() -> None:
        for user in users:
            stream_text(server, "/flows/echo/stream", {"input": {"question": "hello"}}, user)

    break_it()
    wait_until(lambda: len(aborted_at(server, canary)) == 1, what="the first abort")
    resumed = server.client.post("/admin/resume", json={"flow": "echo", "ref": "main"}, headers=ADMIN)
    assert resumed.status_code == 200, resumed.text
    wait_until(lambda: targets(server, "echo") == [("stable", "live"), ("main", "live")], what="the resume")
    time.sleep(1.1)  # the guard counts what comes after the resume's second
    break_it()
    wait_until(lambda: len(aborted_at(server, canary)) == 2, what="the second abort")
    assert targets(server, "echo") == [("stable", "live"), ("main", "aborted")]

    def told(kind: str) -> list[dict[str, Any]]:
        found = [json.loads(body) for _, headers, body in stand.sink.requests if headers["x-gitops-flow-event"] == kind]
        return [n for n in found if n["record"]["sha"] == canary]

    wait_until(lambda: len(told("aborted")) == 2 and len(told("resumed")) == 1, what="every abort's notification")

    def statuses() -> list[str]:
        mine = [s for s in stand.github.statuses if s["sha"] == canary and s["context"] == "gitops-flow/main"]
        return [s["state"] for s in mine if "canary" in s["description"]]

    wait_until(lambda: statuses() == ["failure", "success", "failure"], what="every abort's commit status")


def test_a_run_that_judges_a_canary_on_its_primary_keeps_no_conversation_turn(stand: Stand) -> None:
    remote, server = stand.remote, stand.server
    canary = remote.publish({"flows/chat.json": chat_flow("a healthy chat canary")}, "a chat canary")
    server.reconcile()
    [user] = canary_users("chat", 1)
    headers = {"X-Flow-User": user, "X-Flow-Session": "a-conversation"}
    response = server.invoke("chat", {"question": "a slow question"}, headers=headers)
    assert (response.status_code, response.headers["x-flow-version"]) == (200, canary)
    settle(server)  # the slow answer was judged by a run on the primary with the same session: it is over now
    rows = query(server.data_dir / "state.db", "SELECT role FROM turns WHERE session LIKE '%a-conversation%'")
    assert [role for (role,) in rows] == ["human", "ai"]  # the canary's turn, and nothing from the primary's run
    assert aborted_at(server, canary) == []
    # a client cannot ask for that mark: what it sends under the mark's name is a value like any other
    forged = {"configurable": {"gitops_flow_unsaved": "UNSAVED"}}
    response = server.invoke("chat", {"question": "hello"}, headers=headers, config=forged)
    assert response.status_code == 200, response.text
    rows = query(server.data_dir / "state.db", "SELECT role FROM turns WHERE session LIKE '%a-conversation%'")
    assert len(rows) == 4
