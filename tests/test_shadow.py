"""Shadows and judges (issue 24, point 5), against a real `gitops-flow serve` following a real git remote: a candidate
ref runs on a share of the primary's requests, its answer never sent, scored against the primary's by exact,
contains or a judge (a ChatModel at an OpenAI-compatible stand-in, tests/openaiapi.py), under its budget; the scores
and the drops are in the experiment report. A slow candidate is held at the stand-in until the test lets it go, so
the primary's answer is shown to come first by the order of events, not by a timing."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops_flow.cli import main as cli
from gitops_flow.flow.routing import RoutingConfig
from gitops_flow.plan.diff import routing_diff
from gitops_flow.runtime.scorers import compare
from gitops_flow.stores.sqlite import SqliteStore
from tests.gitrepo import Remote
from tests.openaiapi import OpenAIStandIn, model_flow, openai_standin
from tests.process import ServeProcess, serve_process
from tests.served import echo_flow, wait_until
from tests.test_api import chat_flow

Q = {"question": "When are you open?"}
ANSWER = "nine to five"
N = 200
SHARE = 30
RUBRIC = "Score 1 when the answer is as helpful as the reference, 0 when it is not."


def shadow_arm(report: dict[str, Any], ref: str) -> dict[str, Any]:
    return next(s for s in report["shadows"] if s["ref"] == ref)


def report_of(server: ServeProcess, flow: str) -> dict[str, Any]:
    response = server.client.get(f"/flows/{flow}/experiment")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def settled(server: ServeProcess, flow: str, ref: str) -> dict[str, Any]:
    """The shadow arm once every run drawn has ended (run, failed or dropped) and its scores are in the store."""

    def done() -> bool:
        arm = shadow_arm(report_of(server, flow), ref)
        ended = arm["runs"] + arm["failed"] + sum(arm["dropped"].values())
        return arm["running"] == 0 and ended == arm["drawn"] and arm["score"]["count"] == arm["scored"]

    wait_until(done, what=f"the shadow runs of {flow} on {ref}")
    return shadow_arm(report_of(server, flow), ref)


# -- fake candidates: the share, exact and contains, the rate budget, streams ------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("shadow")
    remote = Remote.create(tmp)
    remote.commit({"flows/bot.json": echo_flow("bot", ANSWER), "flows/rated.json": echo_flow("rated", ANSWER)}, "v1")
    remote.tag("stable")
    remote.commit({"flows/bot.json": echo_flow("bot", "We open nine to five."), "flows/rated.json": None}, "v2")
    remote.commit({"flows/rated.json": echo_flow("rated", "Nine to five, on weekdays")}, "v3")
    remote.tag("candidate")
    remote.commit({"flows/bot.json": echo_flow("bot", "Nine to five, every day")}, "v4")
    remote.tag("twin")
    routes = {
        "routes": {
            "bot": [
                {
                    "ref": "stable",
                    "weight": 100,
                    "shadow": [
                        {"ref": "candidate", "share": SHARE, "scorer": "exact", "budget": {"requests_per_second": 1e4}},
                        {"ref": "twin", "share": 100, "scorer": "contains", "budget": {"requests_per_second": 1e4}},
                    ],
                }
            ],
            "rated": [
                {
                    "ref": "stable",
                    "weight": 100,
                    "shadow": {
                        "ref": "candidate",
                        "share": 100,
                        "scorer": "similarity",
                        "budget": {"requests_per_second": 0.01},
                    },
                }
            ],
        }
    }
    remote.commit({"gitops-flow.yaml": yaml.safe_dump(routes)}, "shadow the candidates")
    remote.push()
    remote.push_tags()
    with serve_process(remote, tmp, env={"GITOPS_FLOW_SHADOW_QUEUE": "1000"}) as served:
        yield served


@pytest.fixture(scope="module")
def shared(server: ServeProcess) -> dict[str, Any]:
    """N users ask bot once each; every answer is the primary's."""
    for n in range(N):
        answer = server.invoke("bot", Q, headers={"x-flow-user": f"user-{n}"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["output"] == ANSWER and answer.json()["metadata"]["ref"] == "stable"
    settled(server, "bot", "candidate")
    settled(server, "bot", "twin")
    return report_of(server, "bot")


def test_a_shadow_runs_on_its_share_of_the_primary_requests(shared: dict[str, Any]) -> None:
    candidate, twin = shadow_arm(shared, "candidate"), shadow_arm(shared, "twin")
    # 30 % of 200: 60, with a standard deviation of 6.5; 4 of them either way
    assert abs(candidate["drawn"] - N * SHARE / 100) <= 26, candidate
    assert twin["drawn"] == N
    for arm in (candidate, twin):
        assert arm["runs"] == arm["drawn"] and arm["failed"] == 0 and sum(arm["dropped"].values()) == 0
        assert arm["of"] == "stable" and arm["role"] == "shadow" and arm["state"] == "live"


def test_exact_and_contains_scores_join_the_report(shared: dict[str, Any]) -> None:
    candidate, twin = shadow_arm(shared, "candidate"), shadow_arm(shared, "twin")
    assert candidate["scorer"] == "exact" and candidate["share"] == SHARE / 100
    assert candidate["score"]["count"] == candidate["runs"] and candidate["score"]["mean"] == 0.0
    assert twin["scorer"] == "contains"
    assert twin["score"]["count"] == N and twin["score"]["mean"] == 1.0
    low, high = twin["score"]["interval"]
    assert 0.9 < low < high <= 1.0  # 200 of 200: the beta posterior's 95 % interval


def test_shadow_runs_are_not_the_primary_traffic(server: ServeProcess, shared: dict[str, Any]) -> None:
    assert [(a["ref"], a["requests"]) for a in shared["arms"]] == [("stable", N)]
    assert all(not k.startswith("shadow:") for a in shared["arms"] for k in a["feedback"])
    assert shared["verdicts"] == []  # a shadow is no arm of the experiment's verdicts
    metrics = server.client.get("/metrics").text
    twin = [line for line in metrics.splitlines() if line.startswith("gitops_flow_shadow_runs_total{")]
    assert any('ref="twin"' in line and 'outcome="scored"' in line and line.endswith(f" {float(N)}") for line in twin)
    assert 'gitops_flow_shadow_score_count{flow="bot",ref="twin",scorer="contains"} 200.0' in metrics


def test_the_rate_budget_drops_the_excess_and_counts_it(server: ServeProcess) -> None:
    for n in range(10):
        answer = server.invoke("rated", Q, headers={"x-flow-user": f"user-{n}"})
        assert answer.status_code == 200 and answer.json()["output"] == ANSWER
    arm = settled(server, "rated", "candidate")
    # one run per 100 s: the first, and a second only if the test straddles the boundary of two windows
    assert arm["drawn"] == 10 and arm["runs"] in (1, 2)
    assert arm["dropped"]["rate"] == 10 - arm["runs"] and arm["dropped"]["queue"] == 0
    assert arm["scorer"] == "similarity" and arm["score"]["count"] == arm["runs"]
    assert 0.5 < arm["score"]["mean"] < 1.0  # "Nine to five, on weekdays" against "nine to five": alike, not the same


def test_a_stream_is_shadowed_on_its_whole_answer(server: ServeProcess, shared: dict[str, Any]) -> None:
    before = shadow_arm(report_of(server, "bot"), "twin")
    with server.client.stream("POST", "/flows/bot/stream", json={"input": Q}) as response:
        assert response.status_code == 200
        text = "".join(response.iter_text())
    assert "event: end" in text
    after = settled(server, "bot", "twin")
    assert after["drawn"] == before["drawn"] + 1 and after["score"]["count"] == before["score"]["count"] + 1
    assert after["score"]["mean"] == 1.0  # the joined chunks "nine to five" are in the twin's answer


def test_a_batch_is_shadowed_input_by_input(server: ServeProcess, shared: dict[str, Any]) -> None:
    before = shadow_arm(report_of(server, "bot"), "twin")
    response = server.client.post("/flows/bot/batch", json={"inputs": [Q, Q, Q]})
    assert response.status_code == 200 and response.json()["output"] == [ANSWER] * 3
    after = settled(server, "bot", "twin")
    assert after["drawn"] == before["drawn"] + 3 and after["score"]["count"] == before["score"]["count"] + 3


def test_the_command_line_and_the_console_show_the_shadows(server: ServeProcess, shared: dict[str, Any]) -> None:
    out = io.StringIO()
    assert cli.main(["experiment", "bot", "--server", server.url], environ={}, out=out) == 0
    text = out.getvalue()
    assert "shadow  twin" in text and "of stable" in text and "contains:" in text
    page = server.client.get("/ui/flows/bot")
    assert page.status_code == 200
    assert 'data-shadow="twin"' in page.text


def test_the_flows_view_shows_each_ref_shadows(server: ServeProcess, shared: dict[str, Any]) -> None:
    flows = server.client.get("/flows").json()
    bot = next(f for f in flows["flows"] if f["name"] == "bot")
    stable = next(r for r in bot["versions"] if r["ref"] == "stable")
    assert [(s["ref"], s["share"], s["scorer"], s["state"]) for s in stable["shadows"]] == [
        ("candidate", SHARE, "exact", "live"),
        ("twin", 100, "contains", "live"),
    ]


def test_the_plan_names_the_shadows_a_change_adds_or_removes() -> None:
    plain = RoutingConfig.model_validate({"routes": {"bot": [{"ref": "stable", "weight": 100}]}})
    shadow = {"ref": "candidate", "share": 10, "scorer": "exact", "budget": {"tokens": 2000, "window": "1h"}}
    shadowed = RoutingConfig.model_validate({"routes": {"bot": [{"ref": "stable", "weight": 100, "shadow": shadow}]}})
    detail = "10% scored by exact, at most 1 runs/s, 2,000 tokens per 3600 s"
    assert [(c.kind, c.what, c.detail) for c in routing_diff(plain, shadowed)] == [
        ("added", "route bot: stable shadowed by candidate", detail)
    ]
    assert [c.kind for c in routing_diff(shadowed, plain)] == ["removed"]
    assert routing_diff(shadowed, shadowed) == []


def test_a_pinned_request_is_not_shadowed(server: ServeProcess, shared: dict[str, Any]) -> None:
    before = shadow_arm(report_of(server, "bot"), "twin")["drawn"]
    answer = server.invoke("bot", Q, headers={"x-flow-version": "stable"})
    assert answer.status_code == 200
    server.invoke("bot", Q)  # an unpinned one is, and ends after the pinned one
    after = settled(server, "bot", "twin")
    assert after["drawn"] == before + 1


def test_a_shadow_keeps_no_turn_of_the_user_conversation(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    remote.commit({"flows/chat.json": chat_flow(answers=("first answer",))}, "v1")
    remote.tag("stable")
    remote.commit({"flows/chat.json": chat_flow(answers=("another answer",))}, "v2")
    remote.tag("candidate")
    shadow = {"ref": "candidate", "share": 100, "scorer": "exact", "budget": {"requests_per_second": 1e4}}
    routes = {"routes": {"chat": [{"ref": "stable", "weight": 100, "shadow": shadow}]}}
    remote.commit({"gitops-flow.yaml": yaml.safe_dump(routes)}, "shadow the candidate")
    remote.push()
    remote.push_tags()
    with serve_process(remote, tmp_path) as server:
        for question in ("My name is Ada.", "Who am I?"):
            answer = server.invoke("chat", {"question": question}, headers={"x-flow-session": "ada"})
            assert answer.status_code == 200 and answer.json()["output"] == "first answer"
        arm = settled(server, "chat", "candidate")
        turns = asyncio.run(turns_of(server.data_dir / "state.db", "ada"))
    # the candidate read the session (it did not fail for want of one) and wrote nothing to it
    assert arm["runs"] == 2 and arm["failed"] == 0 and arm["score"]["mean"] == 0.0
    assert turns == [
        ("human", "My name is Ada."),
        ("ai", "first answer"),
        ("human", "Who am I?"),
        ("ai", "first answer"),
    ]


async def turns_of(path: Path, session: str) -> list[tuple[str, str]]:
    store = SqliteStore(path)
    await store.open()
    try:
        return list(await store.load_turns(session, 10))
    finally:
        await store.close()


# -- a slow candidate: the primary answers first; a full queue drops -----------------------------------------------


@pytest.fixture(scope="module")
def held() -> Iterator[OpenAIStandIn]:
    with openai_standin(answer_tokens=3) as running:
        yield running


def test_the_primary_never_waits_for_a_slow_candidate(tmp_path: Path, held: OpenAIStandIn) -> None:
    remote = Remote.create(tmp_path)
    remote.commit({"flows/bot.json": echo_flow("bot", ANSWER)}, "v1")
    remote.tag("stable")
    remote.commit({"flows/bot.json": model_flow("bot", held.base_url, max_tokens=3)}, "v2: a real model")
    remote.tag("candidate")
    shadow = {"ref": "candidate", "share": 100, "scorer": "exact", "budget": {"requests_per_second": 1e4}}
    routes = {"routes": {"bot": [{"ref": "stable", "weight": 100, "shadow": shadow}]}}
    remote.commit({"gitops-flow.yaml": yaml.safe_dump(routes)}, "shadow the candidate")
    remote.push()
    remote.push_tags()
    env = {
        "OPENAI_API_KEY": "sk-test-standin",
        "GITOPS_FLOW_ALLOWED_BASE_URLS": f"openai={held.base_url}",
        "GITOPS_FLOW_SHADOW_CONCURRENCY": "1",
        "GITOPS_FLOW_SHADOW_QUEUE": "1",
    }
    release = threading.Event()
    held.hold = release
    try:
        with serve_process(remote, tmp_path, env=env) as server:
            first = server.invoke("bot", Q, headers={"x-flow-user": "a"})
            assert first.status_code == 200 and first.json()["output"] == ANSWER
            # the candidate's model call has reached the provider and is held there: the primary answered first
            wait_until(lambda: held.received == 1, what="the candidate's call")
            arm = shadow_arm(report_of(server, "bot"), "candidate")
            assert arm["running"] == 1 and arm["runs"] == 0 and held.calls() == []
            # one more waits in the queue (of 1); the third finds it full, and is dropped, not waited for
            for user in ("b", "c"):
                answer = server.invoke("bot", Q, headers={"x-flow-user": user})
                assert answer.status_code == 200 and answer.json()["output"] == ANSWER
            arm = shadow_arm(report_of(server, "bot"), "candidate")
            assert arm["drawn"] == 3 and arm["dropped"]["queue"] == 1 and arm["running"] == 1
            release.set()
            arm = settled(server, "bot", "candidate")
            assert arm["runs"] == 2 and arm["scored"] == 2 and arm["score"]["mean"] == 0.0  # " tok tok tok"
            assert held.received == 2 and len(held.calls()) == 2
            assert arm["tokens"] == sum(call.total for call in held.calls())
            assert [a["requests"] for a in report_of(server, "bot")["arms"]] == [3]
    finally:
        held.hold = None
        release.set()


# -- a judge: its score in the report, its tokens against the budget ----------------------------------------------


def test_a_judge_scores_a_shadow_within_its_token_budget(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    remote.commit({"flows/bot.json": echo_flow("bot", ANSWER)}, "v1")
    remote.tag("stable")
    remote.commit({"flows/bot.json": echo_flow("bot", "We are open from nine to five.")}, "v2")
    remote.tag("candidate")
    shadow = {
        "ref": "candidate",
        "share": 100,
        "scorer": "judge:evals/helpful.md",
        "budget": {"tokens": 1, "requests_per_second": 1e4},
    }
    routes = {"routes": {"bot": [{"ref": "stable", "weight": 100, "shadow": shadow}]}}
    remote.commit({"gitops-flow.yaml": yaml.safe_dump(routes), "evals/helpful.md": RUBRIC}, "judge the candidate")
    remote.push()
    remote.push_tags()
    with openai_standin() as judge:
        judge.reply = "0.75"
        env = {
            "OPENAI_API_KEY": "sk-test-standin",
            "GITOPS_FLOW_ALLOWED_BASE_URLS": f"openai={judge.base_url}",
            "GITOPS_FLOW_EVAL_JUDGE_MODEL": "openai:gpt-4o-mini",
            "GITOPS_FLOW_EVAL_JUDGE_BASE_URL": judge.base_url,
            "GITOPS_FLOW_SHADOW_CONCURRENCY": "1",
        }
        with serve_process(remote, tmp_path, env=env) as server:
            for n in range(5):
                answer = server.invoke("bot", Q, headers={"x-flow-user": f"user-{n}"})
                assert answer.status_code == 200 and answer.json()["output"] == ANSWER
            arm = settled(server, "bot", "candidate")
    # the first run spends the whole budget (its judge's call, billed by the stand-in); the next four are dropped
    assert arm["runs"] == 1 and arm["dropped"]["tokens"] == 4
    assert arm["tokens"] == judge.calls()[0].total > 1
    assert arm["score"] == {"key": "shadow:judge:evals/helpful.md", "count": 1, "mean": 0.75, "interval": None}
    (prompt,) = judge.prompts
    assert RUBRIC in prompt and "We are open from nine to five." in prompt and ANSWER in prompt


def test_a_judge_without_a_model_drops_its_runs_and_says_why(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    remote.commit({"flows/bot.json": echo_flow("bot", ANSWER)}, "v1")
    remote.tag("stable")
    remote.commit({"flows/bot.json": echo_flow("bot", "other")}, "v2")
    remote.tag("candidate")
    shadow = {"ref": "candidate", "share": 100, "scorer": "judge:evals/helpful.md"}
    routes = {"routes": {"bot": [{"ref": "stable", "weight": 100, "shadow": shadow}]}}
    remote.commit({"gitops-flow.yaml": yaml.safe_dump(routes), "evals/helpful.md": RUBRIC}, "judge the candidate")
    remote.push()
    remote.push_tags()
    with serve_process(remote, tmp_path) as server:
        assert server.invoke("bot", Q).status_code == 200
        assert server.invoke("bot", Q).status_code == 200  # known to have no judge now: dropped as it is drawn
        arm = settled(server, "bot", "candidate")
    assert arm["drawn"] == 2 and arm["dropped"]["judge"] == 2 and arm["runs"] == 0
    assert "GITOPS_FLOW_EVAL_JUDGE_MODEL" in arm["unscored"]


@pytest.mark.parametrize(
    ("scorer", "candidate", "primary", "schema", "expected"),
    [
        ("exact", " nine to five\n", "nine to five", None, 1.0),
        ("exact", "Nine to five", "nine to five", None, 0.0),
        ("exact", {"a": 1}, {"a": 1}, None, 1.0),
        ("contains", "We open NINE TO FIVE daily", "nine to five", None, 1.0),
        ("contains", "nine", "nine to five", None, 0.0),
        ("json_schema", '{"order_id": 7}', "anything", {"type": "object", "required": ["order_id"]}, 1.0),
        ("json_schema", "no JSON here", "anything", {"type": "object"}, 0.0),
        ("similarity", "open nine five", "open nine five", None, 1.0),
        ("similarity", "refunds take a week", "open nine five", None, 0.0),
    ],
    ids=["exact", "exact-case", "exact-json", "contains", "contains-not", "schema", "schema-not", "alike", "unlike"],
)
def test_a_scorer_compares_the_candidate_answer_with_the_primary(
    scorer: str, candidate: Any, primary: Any, schema: Any, expected: float
) -> None:
    assert compare(scorer, candidate, primary, schema) == pytest.approx(expected)


# -- bad shadow entries ------------------------------------------------------------------------------------------


BAD = {
    "routes": {
        "bot": [
            {
                "ref": "stable",
                "weight": 100,
                "shadow": [
                    {"ref": "stable", "share": 10, "scorer": "exact"},
                    {"ref": "a", "share": 10, "scorer": "bleu"},
                    {"ref": "b", "share": 10, "scorer": "json_schema"},
                    {"ref": "c", "share": 150, "scorer": "exact"},
                    {"ref": "d", "share": 10, "scorer": "judge:evals/missing.md"},
                    {"ref": "e", "share": 10, "scorer": "exact", "budget": {"rps": 5}},
                ],
            },
            {
                "ref": "vip",
                "match": {"header": "X-Flow-Segment", "values": ["vip"]},
                "shadow": {"ref": "f", "share": 5, "scorer": "exact"},
            },
        ]
    }
}


def test_bad_shadow_entries_are_refused_with_their_places(tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows/bot.json").write_text(echo_flow("bot"))
    (tmp_path / "gitops-flow.yaml").write_text(yaml.safe_dump(BAD, sort_keys=False))
    out = io.StringIO()
    assert cli.main(["validate", str(tmp_path), "--format", "json"], environ={}, out=out) == 1
    found = {(p["code"], p["path"]) for p in json.loads(out.getvalue())["problems"]}
    # the schema's problems first (the rest is checked once the file parses)
    assert ("unknown-scorer", "$.routes.bot[0].shadow[1].scorer") in found
    assert ("invalid-value", "$.routes.bot[0].shadow[3].share") in found
    assert ("unknown-key", "$.routes.bot[0].shadow[5].budget.rps") in found
    shadows = BAD["routes"]["bot"][0]["shadow"]
    fixed = {
        "routes": {
            "bot": [
                {**BAD["routes"]["bot"][0], "shadow": [shadows[0], shadows[2], shadows[4]]},
                BAD["routes"]["bot"][1],
            ]
        }
    }
    (tmp_path / "gitops-flow.yaml").write_text(yaml.safe_dump(fixed, sort_keys=False))
    out = io.StringIO()
    assert cli.main(["validate", str(tmp_path), "--format", "json"], environ={}, out=out) == 1
    found = {(p["code"], p["path"]) for p in json.loads(out.getvalue())["problems"]}
    assert found >= {
        ("shadow-of-itself", "$.routes.bot[0].shadow[0].ref"),
        ("shadow-needs-schema", "$.routes.bot[0].shadow[1].scorer"),
        ("rubric-missing", "$.routes.bot[0].shadow[2].scorer"),
        ("shadow-on-segment", "$.routes.bot[1].shadow[0]"),
    }


def test_the_server_refuses_a_commit_whose_rubric_is_missing(server: ServeProcess, shared: dict[str, Any]) -> None:
    """Last: it pushes to the module's server. The commit fails as a whole and the shadows go on as they were."""
    remote = server.remote
    routing = yaml.safe_load((remote.work / "gitops-flow.yaml").read_text())
    routing["routes"]["bot"][0]["shadow"][1]["scorer"] = "judge:evals/nowhere.md"
    sha = remote.commit({"gitops-flow.yaml": yaml.safe_dump(routing)}, "a judge whose rubric is not committed")
    remote.push()
    server.reconcile()
    versions = server.client.get("/versions").json()
    failed = next(v for v in versions["versions"] if v["sha"] == sha)
    assert failed["status"] == "failed"
    assert any(p["code"] == "rubric-missing" and p["file"] == "gitops-flow.yaml" for p in failed["problems"])
    assert shadow_arm(report_of(server, "bot"), "twin")["scorer"] == "contains"
