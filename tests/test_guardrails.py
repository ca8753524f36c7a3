"""Limits and the response cache (issue 16) against a real `gitops-flow serve`: what a client meets over HTTP,
what replicas share through the state, and what the metrics show."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gitops_flow.stores import MemoryStore
from tests.gitrepo import Remote
from tests.metricsread import sample
from tests.process import ServeProcess, serve_process
from tests.redisenv import RedisSpace
from tests.served import echo_flow, served

Q = {"question": "hi"}
COMPONENTS = """\
components:
  Counting:
    target: tests.operator_components:counting
    kind: model
"""


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    return Remote.create(tmp_path)


def push(remote: Remote, files: dict[str, str | None], message: str = "change") -> str:
    sha = remote.commit(files, message)
    remote.push()
    return sha


def routing(**sections: Any) -> str:
    return yaml.safe_dump(sections)


def counting_flow(name: str = "echo", **params: Any) -> str:
    """echo_flow with a model whose answers report 7 input and 3 output tokens."""
    doc = json.loads(echo_flow(name))
    doc["nodes"][1] = {"id": "llm", "component": "Counting", "params": {"responses": ["counted"], **params}}
    return json.dumps(doc)


def metrics(server: ServeProcess) -> str:
    return server.client.get("/metrics").text


def test_a_rate_limit_answers_429_with_retry_after_and_counts_the_refusal_apart(remote: Remote, tmp_path: Path) -> None:
    push(
        remote,
        {"flows/echo.json": echo_flow(), "gitops-flow.yaml": routing(limits={"echo": {"requests_per_second": 0.001}})},
    )
    with serve_process(remote, tmp_path) as server:
        assert server.invoke("echo", Q).status_code == 200

        refused = server.invoke("echo", Q)

        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate-limited"
        assert "1 request per 1000 s" in refused.json()["error"]["message"]
        wait = int(refused.headers["retry-after"])
        assert 1 <= wait <= 1000
        text = metrics(server)
        # a refusal is not a run: counted neither as a success nor as a failure of the flow
        assert sample(text, "gitops_flow_requests_total", flow="echo", outcome="ok") == 1
        assert sample(text, "gitops_flow_requests_total", flow="echo", outcome="error") == 0
        assert sample(text, "gitops_flow_limited_requests_total", flow="echo", limit="requests", scope="flow") == 1
        # the schema endpoints are not flow runs: not limited
        assert server.client.get("/flows/echo/input_schema").status_code == 200


def test_servers_sharing_a_sqlite_state_share_their_limits(remote: Remote, tmp_path: Path) -> None:
    limits = {"echo": {"per_user": {"requests_per_second": 0.001}}}
    push(remote, {"flows/echo.json": echo_flow(), "gitops-flow.yaml": routing(limits=limits)})
    shared = ["--state", f"sqlite:///{tmp_path / 'shared' / 'state.db'}"]
    with serve_process(remote, tmp_path, args=shared) as one, serve_process(remote, tmp_path, args=shared) as two:
        assert one.invoke("echo", Q, headers={"X-Flow-User": "alice"}).status_code == 200

        refused = two.invoke("echo", Q, headers={"X-Flow-User": "alice"})

        assert refused.status_code == 429 and "per user" in refused.json()["error"]["message"]
        assert two.invoke("echo", Q, headers={"X-Flow-User": "bob"}).status_code == 200  # each user has their own
        assert two.invoke("echo", Q).status_code == 200  # a request naming no user meets no per-user limit
    assert (tmp_path / "shared" / "state-limits.db").is_file()


def test_runs_at_once_are_limited_and_let_go_when_the_answer_is_sent(remote: Remote, tmp_path: Path) -> None:
    slow = json.loads(echo_flow())
    slow["nodes"][1]["params"]["latency_ms"] = 5000  # the two requests overlap: each is sent before the other ends
    limits = routing(limits={"echo": {"concurrent": 1}})
    push(remote, {"flows/echo.json": json.dumps(slow), "gitops-flow.yaml": limits})
    with serve_process(remote, tmp_path) as server:
        answers: list[httpx.Response] = []

        def call() -> None:
            answers.append(httpx.post(f"{server.url}/flows/echo/invoke", json={"input": Q}, timeout=30))

        callers = [threading.Thread(target=call) for _ in range(2)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(timeout=30)

        assert sorted(a.status_code for a in answers) == [200, 429]
        refused = next(a for a in answers if a.status_code == 429)
        assert refused.json()["error"]["code"] == "too-many-runs" and refused.headers["retry-after"] == "1"
        assert server.invoke("echo", Q).status_code == 200  # the first request's place was let go


def test_a_token_budget_counts_what_the_models_report_and_refuses_once_spent(remote: Remote, tmp_path: Path) -> None:
    (tmp_path / "components.yaml").write_text(COMPONENTS)
    limits = {"echo": {"tokens": {"budget": 15, "window": "1h"}}}
    push(remote, {"flows/echo.json": counting_flow(), "gitops-flow.yaml": routing(limits=limits)})
    env = {"GITOPS_FLOW_COMPONENTS": str(tmp_path / "components.yaml")}
    with serve_process(remote, tmp_path, env=env) as server:
        assert server.invoke("echo", Q).json()["output"] == "counted"  # 10 tokens of 15
        assert server.invoke("echo", Q).status_code == 200  # under the budget when it starts: 20 of 15 after it

        refused = server.invoke("echo", Q)

        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "token-budget-exhausted"
        assert 1 <= int(refused.headers["retry-after"]) <= 3600
        text = metrics(server)
        assert sample(text, "gitops_flow_tokens_total", flow="echo", direction="input") == 14
        assert sample(text, "gitops_flow_tokens_total", flow="echo", direction="output") == 6
        assert sample(text, "gitops_flow_limited_requests_total", flow="echo", limit="tokens", scope="flow") == 1


def test_a_refused_request_pins_no_session(remote: Remote, tmp_path: Path) -> None:
    push(
        remote,
        {"flows/echo.json": echo_flow(), "gitops-flow.yaml": routing(limits={"echo": {"requests_per_second": 0.001}})},
    )
    store = MemoryStore()
    with served(remote, tmp_path, store=store) as server:
        assert server.invoke("echo", Q, headers={"X-Flow-Session": "first"}).status_code == 200
        assert server.invoke("echo", Q, headers={"X-Flow-Session": "second"}).status_code == 429

        pins = asyncio.run(store.pinned_versions())
        assert len(pins) == 1
        assert asyncio.run(store.claim_pin("echo:second", "none-yet", 60)) == "none-yet"  # never pinned


def cached_flow(*answers: str) -> str:
    doc = json.loads(echo_flow())
    doc["nodes"][1]["params"]["responses"] = list(answers)  # answered in turn: a second run answers the next one
    return json.dumps(doc)


def test_cached_answers_are_per_version_and_a_new_version_never_answers_from_an_old_ones(
    remote: Remote, tmp_path: Path
) -> None:
    cache = routing(cache={"echo": {"ttl": "1h"}})
    first = push(remote, {"flows/echo.json": cached_flow("one", "two"), "gitops-flow.yaml": cache})
    with serve_process(remote, tmp_path, env={"GITOPS_FLOW_PINS": "history"}) as server:
        miss = server.invoke("echo", Q)
        hit = server.invoke("echo", Q)
        other = server.invoke("echo", {"question": "else"})
        assert (miss.json()["output"], miss.headers["x-flow-cache"]) == ("one", "miss")
        assert (hit.json()["output"], hit.headers["x-flow-cache"]) == ("one", "hit")  # the model would say "two"
        assert (other.json()["output"], other.headers["x-flow-cache"]) == ("two", "miss")
        assert hit.headers["x-flow-version"] == first and hit.json()["metadata"]["flow_version"] == first
        assert hit.json()["metadata"]["run_id"] != miss.json()["metadata"]["run_id"]

        second = push(remote, {"flows/echo.json": cached_flow("three")})
        server.reconcile()
        fresh = server.invoke("echo", Q)
        assert (fresh.json()["output"], fresh.headers["x-flow-cache"], fresh.headers["x-flow-version"]) == (
            "three",
            "miss",
            second,
        )
        # a pin reaches the old version, and its own answers
        pinned = server.invoke("echo", Q, headers={"X-Flow-Version": first[:12]})
        assert (pinned.json()["output"], pinned.headers["x-flow-cache"]) == ("one", "hit")

        remote.revert(second)  # the flow's file as it was: the same blob finds its answers again
        remote.push()
        server.reconcile()
        back = server.invoke("echo", Q)
        assert (back.json()["output"], back.headers["x-flow-cache"]) == ("one", "hit")

        langflow = server.client.post("/api/v1/run/echo", json={"input_value": "hi"})
        assert langflow.status_code == 200 and langflow.headers["x-flow-cache"] in ("hit", "miss")

        text = metrics(server)
        assert sample(text, "gitops_flow_cache_lookups_total", flow="echo", version=first[:12], result="hit") == 2
        assert sample(text, "gitops_flow_cache_lookups_total", flow="echo", version=second[:12], result="miss") == 1
        assert sample(text, "gitops_flow_cache_entries") >= 3
        # hits are not runs
        assert sample(text, "gitops_flow_requests_total", flow="echo", version=first[:12], outcome="ok") == 2


def sampling_flow(*answers: str, **rule: Any) -> dict[str, str]:
    """A flow whose model samples (temperature 0.7), answered by fakes (the server runs with --fake-models)."""
    doc = json.loads(echo_flow())
    doc["nodes"][1] = {
        "id": "llm",
        "component": "ChatModel",
        "params": {"model": "openai:gpt-4o-mini", "temperature": 0.7},
    }
    doc["tests"] = [{"name": "t", "input": Q, "fakes": {"llm": list(answers)}, "expect": {"contains": answers[0]}}]
    return {"flows/echo.json": json.dumps(doc), "gitops-flow.yaml": routing(cache={"echo": rule})}


@pytest.mark.parametrize(
    ("allow", "outputs"), [([], ["a", "b"]), (["temperature"], ["a", "a"])], ids=["samples", "allowed"]
)
def test_a_flow_whose_model_samples_is_cached_only_when_its_owner_says_so(
    remote: Remote, tmp_path: Path, allow: list[str], outputs: list[str]
) -> None:
    push(remote, sampling_flow("a", "b", allow=allow))
    with served(remote, tmp_path, fake_models=True, run_tests=False) as server:
        answers = [server.invoke("echo", Q) for _ in range(2)]

    assert [a.json()["output"] for a in answers] == outputs
    assert ("x-flow-cache" in answers[0].headers) == bool(allow)


def test_replicas_on_one_redis_share_limits_and_cached_answers(
    remote: Remote, tmp_path: Path, redis_space: RedisSpace
) -> None:
    sections = routing(limits={"echo": {"per_user": {"requests_per_second": 0.001}}}, cache={"echo": {"ttl": "1h"}})
    push(remote, {"flows/echo.json": cached_flow("one", "two"), "gitops-flow.yaml": sections})
    state = ["--state", f"{redis_space.url}?prefix={redis_space.prefix}"]
    with serve_process(remote, tmp_path, args=state) as one, serve_process(remote, tmp_path, args=state) as two:
        assert one.invoke("echo", Q, headers={"X-Flow-User": "alice"}).json()["output"] == "one"

        assert two.invoke("echo", Q, headers={"X-Flow-User": "alice"}).status_code == 429
        shared = two.invoke("echo", Q, headers={"X-Flow-User": "bob"})
        assert (shared.json()["output"], shared.headers["x-flow-cache"]) == ("one", "hit")  # the other replica's
    assert any(key.startswith(f"{redis_space.prefix}cache:echo:") for key in redis_space.keys())
