"""Where an experiment's numbers come from besides a user's click (issue 24, points 1 and 2), against a real
`gitops-flow serve` over a real git remote: scores a flow takes from its own output (named in the routing file),
tokens and cost per arm (a price table; a model without a price said so), feedback a LangFlow client gives by its
session, and the report's cache, which new feedback refreshes at once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.gitrepo import Remote
from tests.openaiapi import OpenAIStandIn, openai_standin
from tests.process import ServeProcess, serve_process
from tests.served import echo_flow

Q = {"question": "hi"}
PRICES = {"gpt-4o-mini": (0.15, 0.60)}  # USD per million input, output tokens
EXPERIMENTS = {
    "triage": {
        "scores": [
            {"key": "resolved", "from": "verdict.resolved"},
            {"key": "stars", "from": "verdict.stars"},
            {"key": "said", "from": "verdict.text"},  # a string: no score
            {"key": "early", "from": "prompt.resolved"},  # not the output node: no score
        ]
    }
}


def triage_flow() -> str:
    """prompt -> fake model answering JSON -> JsonOutputParser (``verdict``, the output node)."""
    doc = {
        "version": 1,
        "name": "triage",
        "nodes": [
            {"id": "prompt", "component": "PromptTemplate", "params": {"template": "Q: {question}"}},
            {
                "id": "llm",
                "component": "FakeChatModel",
                "params": {"responses": ['{"resolved": true, "stars": 4, "text": "done"}']},
            },
            {"id": "verdict", "component": "JsonOutputParser"},
        ],
        "edges": [{"source": "prompt", "target": "llm"}, {"source": "llm", "target": "verdict"}],
    }
    return json.dumps(doc)


def model_flow(name: str, model: str, base_url: str) -> str:
    """prompt -> ChatModel at the OpenAI stand-in -> parser."""
    params = {"model": f"openai:{model}", "base_url": base_url, "api_key": {"$env": "OPENAI_API_KEY"}}
    doc = json.loads(echo_flow(name))
    doc["nodes"][1] = {"id": "llm", "component": "ChatModel", "params": {**params, "temperature": 0}}
    return json.dumps(doc)


@pytest.fixture(scope="module")
def standin() -> Iterator[OpenAIStandIn]:
    with openai_standin(answer_tokens=7) as running:
        yield running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, standin: OpenAIStandIn) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("sources")
    remote = Remote.create(tmp)
    files = {
        "flows/triage.json": triage_flow(),
        "flows/echo.json": echo_flow("echo"),
        "flows/priced.json": model_flow("priced", "gpt-4o-mini", standin.base_url),
        "flows/unpriced.json": model_flow("unpriced", "gpt-4o", standin.base_url),
        "gitops-flow.yaml": yaml.safe_dump({"experiments": EXPERIMENTS}),
    }
    remote.publish(files, "flows that score themselves, and flows that cost")
    env = {
        "OPENAI_API_KEY": "sk-test-standin",
        "GITOPS_FLOW_ALLOWED_BASE_URLS": f"openai={standin.base_url}",
        "GITOPS_FLOW_TOKEN_METRICS": "true",
        "GITOPS_FLOW_MODEL_PRICES": ",".join(f"{m}={i}/{o}" for m, (i, o) in PRICES.items()),
        "GITOPS_FLOW_EXPERIMENT_CACHE": "60",  # only new feedback refreshes a report within a test
    }
    with serve_process(remote, tmp, env=env) as served:
        yield served


def report(server: ServeProcess, flow: str) -> dict[str, Any]:
    response = server.client.get(f"/flows/{flow}/experiment")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def until_scored(server: ServeProcess, flow: str, key: str, count: int) -> dict[str, Any]:
    """The report once ``count`` scores of ``key`` are in it (output scores are kept in the next batch, without a
    request waiting for them); a deadline, not a timing."""
    deadline = time.monotonic() + 10
    while True:
        shown = server.client.get(f"/flows/{flow}/experiment").json()
        feedback = shown["arms"][0]["feedback"].get(key)
        if feedback is not None and feedback["count"] >= count or time.monotonic() > deadline:
            return dict(shown)
        time.sleep(0.05)  # the scores kept make a new report: the cache holds one only while no feedback comes


def test_a_flow_scores_its_own_runs_from_its_output_on_every_api(server: ServeProcess) -> None:
    for n in range(3):
        assert server.invoke("triage", Q, headers={"x-flow-user": f"u{n}"}).status_code == 200
    batch = server.client.post("/flows/triage/batch", json={"inputs": [Q]}, headers={"x-flow-user": "u3"})
    assert batch.status_code == 200, batch.text
    langflow = server.client.post("/api/v1/run/triage", json={"input_value": "hi"}, headers={"x-flow-user": "u4"})
    assert langflow.status_code == 200, langflow.text

    shown = until_scored(server, "triage", "stars", 5)

    feedback = shown["arms"][0]["feedback"]
    assert feedback["resolved"]["count"] == 5 and feedback["resolved"]["mean"] == 1.0  # true kept as 1
    assert feedback["stars"]["count"] == 5 and feedback["stars"]["mean"] == 4.0
    assert "said" not in feedback and "early" not in feedback  # text, and a node that is not the output


def test_each_arm_shows_its_tokens_and_their_cost_from_the_price_table(
    server: ServeProcess, standin: OpenAIStandIn
) -> None:
    before = len(standin.calls())
    for _ in range(2):
        assert server.invoke("priced", Q).status_code == 200
    billed = standin.calls()[before:]
    assert len(billed) == 2
    given, taken = sum(b.prompt_tokens for b in billed), sum(b.completion_tokens for b in billed)

    (arm,) = report(server, "priced")["arms"]

    assert arm["tokens"] == {"input": given, "output": taken}
    price = PRICES["gpt-4o-mini"]
    assert arm["cost"]["usd"] == pytest.approx(given * price[0] / 1e6 + taken * price[1] / 1e6, abs=1e-6)
    assert arm["cost"]["unpriced"] == []


def test_a_model_without_a_price_is_named_and_its_cost_not_guessed(server: ServeProcess) -> None:
    assert server.invoke("unpriced", Q).status_code == 200

    (arm,) = report(server, "unpriced")["arms"]

    assert arm["tokens"]["input"] > 0 and arm["tokens"]["output"] > 0
    assert arm["cost"] == {"usd": None, "unpriced": ["gpt-4o"]}


def test_a_langflow_client_scores_its_sessions_last_run(server: ServeProcess) -> None:
    runs = []
    for _ in range(2):
        answer = server.client.post("/api/v1/run/echo", json={"input_value": "hi", "session_id": "chat-42"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["session_id"] == "chat-42"
        runs.append(answer.json()["metadata"]["run_id"])

    kept = server.client.post("/flows/echo/feedback", json={"session_id": "chat-42", "key": "liked", "score": True})

    assert kept.status_code == 202, kept.text
    assert kept.json()["run_id"] == runs[1]  # the session's last run
    assert kept.json()["score"] == 1.0
    by_run = server.client.post("/flows/echo/feedback", json={"run_id": runs[0], "key": "liked", "score": 0})
    assert by_run.status_code == 202  # the run id of the run API's answer works as well
    unknown = server.client.post("/flows/echo/feedback", json={"session_id": "nobody", "key": "liked", "score": 1})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown-run"
    elsewhere = server.client.post("/flows/triage/feedback", json={"session_id": "chat-42", "key": "x", "score": 1})
    assert elsewhere.status_code == 404  # a session's runs are per flow
    flowless = server.client.post("/feedback", json={"session_id": "chat-42", "key": "liked", "score": 1})
    assert flowless.status_code == 422 and flowless.json()["error"]["code"] == "bad-session-id"


def test_the_report_is_reused_until_new_feedback_comes(server: ServeProcess) -> None:
    run = server.invoke("echo", Q, headers={"x-flow-user": "cache-user"}).json()["metadata"]["run_id"]
    first = report(server, "echo")
    again = report(server, "echo")
    assert again["generated_at"] == first["generated_at"]  # the same report: not made again

    given = {"run_id": run, "key": "helpful", "score": 1}
    assert server.client.post("/flows/echo/feedback", json=given).status_code == 202
    after = report(server, "echo")

    assert after["generated_at"] > first["generated_at"]
    assert after["arms"][0]["feedback"]["helpful"]["count"] == 1
