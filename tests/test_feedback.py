"""Feedback on a run (issue 24, point 1), against a real `gitops-flow serve` of two workers over a real git remote:
LangServe's feedback shape on a run the server answered, tied to the run's flow, version, ref and user, refused
clearly when it names no such run or is malformed, and bounded (body size, keys per flow, rate per user, window)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gitrepo import Remote
from tests.process import ServeProcess, serve_process
from tests.redisenv import RedisSpace
from tests.served import echo_flow

Q = {"question": "hi"}
WINDOW = 6.0  # seconds a run takes feedback on this server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("feedback")
    remote = Remote.create(tmp)
    remote.publish({"flows/echo.json": echo_flow("echo"), "flows/other.json": echo_flow("other")}, "two flows")
    env = {
        "GITOPS_FLOW_FEEDBACK_WINDOW": str(WINDOW),
        "GITOPS_FLOW_FEEDBACK_MAX_KEYS": "3",
        "GITOPS_FLOW_FEEDBACK_RATE": "3",
        "GITOPS_FLOW_FEEDBACK_MAX_BYTES": "1024",
    }
    with serve_process(remote, tmp, env=env, workers=2) as served:
        yield served


def answered(server: ServeProcess, flow: str = "echo", **headers: str) -> dict[str, Any]:
    response = server.invoke(flow, Q, headers=headers)
    assert response.status_code == 200, response.text
    metadata: dict[str, Any] = response.json()["metadata"]
    return metadata


def give(server: ServeProcess, body: Any, path: str = "/flows/echo/feedback", **headers: str) -> Any:
    return server.client.post(path, json=body, headers=headers)


def test_feedback_on_an_answered_run_is_kept_with_its_flow_version_ref_and_user(server: ServeProcess) -> None:
    run = answered(server, **{"x-flow-user": "alice"})
    # several requests: with two workers, most land on a worker that did not answer the run
    for n, path in enumerate(["/flows/echo/feedback", "/feedback", "/flows/echo/feedback"]):
        body = {"run_id": run["run_id"], "key": ["liked", "helpful"][n % 2], "score": n % 2 == 0, "comment": "great"}
        response = give(server, body, path, **{"x-flow-user": "alice"})
        assert response.status_code == 202, response.text
        kept = response.json()
        assert kept["run_id"] == run["run_id"] and kept["flow"] == "echo"
        assert (kept["version"], kept["ref"]) == (run["flow_version"], run["ref"])
        assert kept["score"] == (1.0 if n % 2 == 0 else 0.0)
    report = server.client.get("/flows/echo/experiment").json()
    (arm,) = report["arms"]
    assert arm["version"] == run["flow_version"]
    assert arm["feedback"]["liked"]["count"] == 1  # alice's later score replaced her first: one user, one score


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"key": "liked", "score": 1}, "bad-run-id"),
        ({"run_id": "not-a-uuid", "key": "liked", "score": 1}, "bad-run-id"),
        ({"run_id": "RUN", "key": "has space", "score": 1}, "bad-key"),
        ({"run_id": "RUN", "key": "", "score": 1}, "bad-key"),
        ({"run_id": "RUN", "key": "x" * 65, "score": 1}, "bad-key"),
        ({"run_id": "RUN", "key": "liked", "score": "good"}, "bad-score"),
        ({"run_id": "RUN", "key": "liked", "score": 1e12}, "bad-score"),
        ({"run_id": "RUN", "key": "liked"}, "bad-score"),
        ({"run_id": "RUN", "key": "liked", "score": 1, "comment": 7}, "bad-comment"),
        ({"run_id": "RUN", "key": "liked", "score": 1, "stars": 5}, "bad-feedback"),
    ],
    ids=[
        "no-run",
        "run-not-uuid",
        "key-space",
        "key-empty",
        "key-long",
        "score-text",
        "score-huge",
        "no-score",
        "comment-number",
        "unknown-field",
    ],
)
def test_a_bad_feedback_is_refused_with_422_naming_what_is_wrong(
    server: ServeProcess, body: dict[str, Any], code: str
) -> None:
    run = answered(server)
    body = {k: run["run_id"] if v == "RUN" else v for k, v in body.items()}
    response = give(server, body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code


def test_feedback_naming_no_run_of_this_server_or_of_another_flow_or_user_is_404(server: ServeProcess) -> None:
    unknown = give(server, {"run_id": str(uuid.uuid4()), "key": "liked", "score": 1})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown-run"
    other = answered(server, "other", **{"x-flow-user": "bob"})
    elsewhere = give(server, {"run_id": other["run_id"], "key": "liked", "score": 1})  # /flows/echo/feedback
    assert elsewhere.status_code == 404
    someone_else = give(
        server, {"run_id": other["run_id"], "key": "liked", "score": 1}, "/feedback", **{"x-flow-user": "eve"}
    )
    assert someone_else.status_code == 404
    owner = give(server, {"run_id": other["run_id"], "key": "liked", "score": 1}, "/feedback", **{"x-flow-user": "bob"})
    assert owner.status_code == 202, owner.text


def test_a_body_past_the_feedback_size_is_413(server: ServeProcess) -> None:
    run = answered(server)
    response = give(server, {"run_id": run["run_id"], "key": "liked", "score": 1, "comment": "x" * 2000})
    assert response.status_code == 413, response.text


def test_a_flow_takes_at_most_its_feedback_keys(server: ServeProcess) -> None:
    """other has its own keys: three of them fill it, a fourth is refused, an existing one still taken."""
    keys = ["liked", "helpful", "accurate"]
    for n, key in enumerate(keys):
        run = answered(server, "other", **{"x-flow-user": f"keys-{n}"})
        response = give(server, {"run_id": run["run_id"], "key": key, "score": 1}, "/feedback")
        assert response.status_code == 202, response.text
    run = answered(server, "other", **{"x-flow-user": "keys-9"})
    refused = give(server, {"run_id": run["run_id"], "key": "polite", "score": 1}, "/feedback")
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "too-many-keys"
    assert "3 feedback keys" in refused.json()["error"]["message"]
    again = give(server, {"run_id": run["run_id"], "key": "liked", "score": 0}, "/feedback")
    assert again.status_code == 202, again.text


def test_one_user_gives_feedback_at_most_at_the_rate_on_every_worker(server: ServeProcess) -> None:
    run = answered(server, **{"x-flow-user": "eager"})
    statuses = [give(server, {"run_id": run["run_id"], "key": "liked", "score": 1}) for _ in range(12)]
    codes = [r.status_code for r in statuses]
    assert 202 in codes and 429 in codes, codes
    limited = next(r for r in statuses if r.status_code == 429)
    assert limited.json()["error"]["code"] == "rate-limited" and int(limited.headers["retry-after"]) >= 1
    other_user = answered(server, **{"x-flow-user": "calm"})
    assert give(server, {"run_id": other_user["run_id"], "key": "liked", "score": 1}).status_code == 202


def test_every_api_that_answers_names_a_run_that_takes_feedback(server: ServeProcess) -> None:
    ids = []
    streamed = server.client.post("/flows/echo/stream", json={"input": Q})
    assert streamed.status_code == 200
    ids.append(streamed.text.split('"run_id":"')[1].split('"')[0])
    batch = server.client.post("/flows/echo/batch", json={"inputs": [Q, Q]}).json()
    ids += batch["metadata"]["run_ids"]
    langflow = server.client.post("/api/v1/run/echo", json={"input_value": "hi"})
    assert langflow.status_code == 200, langflow.text
    ids.append(langflow.json()["metadata"]["run_id"])
    for run_id in ids:
        response = give(server, {"run_id": run_id, "key": "liked", "score": 1}, "/feedback")
        assert response.status_code == 202, (run_id, response.text)


def test_a_pinned_run_takes_feedback_but_is_not_counted_in_the_experiment(server: ServeProcess) -> None:
    run = answered(server, **{"x-flow-user": "pinner"})
    pinned = answered(server, **{"x-flow-version": run["flow_version"], "x-flow-user": "pinner2"})
    before = server.client.get("/flows/echo/experiment").json()["arms"][0]["feedback"].get("pinned-check")
    assert before is None
    assert give(server, {"run_id": pinned["run_id"], "key": "pinned-check", "score": 1}).status_code == 202
    counted = server.client.get("/flows/echo/experiment").json()["arms"][0]["feedback"]
    assert "pinned-check" not in counted  # its only score was a pinned run's
    assert give(server, {"run_id": run["run_id"], "key": "pinned-check", "score": 1}).status_code == 202
    counted = server.client.get("/flows/echo/experiment").json()["arms"][0]["feedback"]
    assert counted["pinned-check"]["count"] == 1


def test_a_run_takes_feedback_only_within_the_window(server: ServeProcess) -> None:
    run = answered(server, **{"x-flow-user": "late"})
    time.sleep(WINDOW + 0.5)
    response = give(server, {"run_id": run["run_id"], "key": "liked", "score": 1})
    assert response.status_code == 404, response.text


def test_replicas_sharing_redis_take_feedback_on_each_others_runs(tmp_path: Path, redis_space: RedisSpace) -> None:
    """A run answered by one replica takes feedback on another, and both report the score."""
    remote = Remote.create(tmp_path)
    remote.publish({"flows/echo.json": echo_flow("echo")}, "one flow")
    env = {"GITOPS_FLOW_STATE": f"{redis_space.url}?prefix={redis_space.prefix}"}
    with serve_process(remote, tmp_path / "a", env=env) as a, serve_process(remote, tmp_path / "b", env=env) as b:
        run = answered(a, **{"x-flow-user": "roamer"})
        response = give(b, {"run_id": run["run_id"], "key": "liked", "score": 1}, **{"x-flow-user": "roamer"})
        assert response.status_code == 202, response.text
        for replica in (a, b):
            (arm,) = replica.client.get("/flows/echo/experiment").json()["arms"]
            assert arm["feedback"]["liked"]["count"] == 1


def test_the_openapi_document_lists_feedback_and_the_report(server: ServeProcess) -> None:
    paths = server.client.get("/openapi.json").json()["paths"]
    assert {"/feedback", "/flows/echo/feedback", "/flows/echo/experiment"} <= set(paths)
    assert paths["/feedback"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Feedback"
    }
