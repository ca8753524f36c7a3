"""The experiment report (issue 24, point 2), against a real `gitops-flow serve` over a real git remote: two flows,
each split 50/50 between a stable tag and a canary tag, and a seeded simulation of 400 users per flow who like the
answers of each arm at a known rate. The report must find the canary that is better, with its probability, and must
not name a winner when both arms are alike."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from scipy import integrate, stats

from gitops_flow.cli import main as cli
from tests.gitrepo import Remote
from tests.process import ServeProcess, serve_process
from tests.served import echo_flow

Q = {"question": "hi"}
USERS = 400
ROUTES = {
    "routes": {name: [{"ref": "stable", "weight": 50}, {"ref": "canary", "weight": 50}] for name in ("bot", "twin")}
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("experiment")
    remote = Remote.create(tmp)
    remote.commit({"flows/bot.json": echo_flow("bot", "old"), "flows/twin.json": echo_flow("twin", "old")}, "v1")
    remote.tag("stable")
    files = {"flows/bot.json": echo_flow("bot", "new"), "flows/twin.json": echo_flow("twin", "new")}
    remote.commit({**files, "gitops-flow.yaml": yaml.safe_dump(ROUTES)}, "v2, split with stable")
    remote.tag("canary")
    remote.push()
    remote.push_tags()
    with serve_process(remote, tmp) as served:
        yield served


def simulate(server: ServeProcess, flow: str, liked: dict[str, float], seed: int) -> dict[str, list[tuple[int, int]]]:
    """Each user asks once and scores the answer: ``liked`` (1 with the arm's rate, else 0) and ``stars`` (1 to 5,
    4 on average where liked is likelier); returns each arm's scores as the users gave them."""
    rng = random.Random(seed)
    given: dict[str, list[tuple[int, int]]] = {}
    for n in range(USERS):
        user = {"x-flow-user": f"{flow}-user-{n}"}
        answer = server.invoke(flow, Q, headers=user)
        assert answer.status_code == 200, answer.text
        run = answer.json()["metadata"]
        like = int(rng.random() < liked[run["ref"]])
        stars = rng.choice([3, 4, 5] if liked[run["ref"]] > 0.5 else [2, 3, 4])
        for key, score in (("liked", like), ("stars", stars)):
            response = server.client.post(
                f"/flows/{flow}/feedback", json={"run_id": run["run_id"], "key": key, "score": score}, headers=user
            )
            assert response.status_code == 202, response.text
        given.setdefault(run["ref"], []).append((like, stars))
    return given


def exact_chance(a: list[int], b: list[int]) -> float:
    """P(rate of b > rate of a) for Beta(1 + ones, 1 + zeros) posteriors, by numerical integration (independent of
    the server's seeded draws)."""
    pa = stats.beta(1 + sum(a), 1 + len(a) - sum(a))
    pb = stats.beta(1 + sum(b), 1 + len(b) - sum(b))
    value, _ = integrate.quad(lambda x: pb.pdf(x) * pa.cdf(x), 0, 1, limit=200)
    return float(value)


@pytest.fixture(scope="module")
def better(server: ServeProcess) -> tuple[dict[str, list[tuple[int, int]]], dict[str, Any]]:
    given = simulate(server, "bot", {"canary": 0.8, "stable": 0.4}, seed=24)
    return given, server.client.get("/flows/bot/experiment").json()


def test_the_better_canary_wins_with_its_probability(better: tuple[dict[str, Any], dict[str, Any]]) -> None:
    given, report = better
    assert [(a["ref"], a["role"], a["share"]) for a in report["arms"]] == [
        ("stable", "primary", 0.5),
        ("canary", "canary", 0.5),
    ]
    liked = next(v for v in report["verdicts"] if v["key"] == "liked")
    assert liked["model"] == "beta-binomial"
    assert (liked["primary"], liked["canary"]) == ("stable", "canary")
    assert liked["winner"] == "canary" and liked["probability"] > 0.95 and liked["min_sample_reached"]
    stable = [like for like, _ in given["stable"]]
    canary = [like for like, _ in given["canary"]]
    assert liked["counts"] == [len(stable), len(canary)]
    assert abs(liked["chance_to_beat"] - exact_chance(stable, canary)) < 0.01
    expected = ((1 + sum(canary)) / (2 + len(canary))) / ((1 + sum(stable)) / (2 + len(stable))) - 1
    assert liked["expected_lift"] == pytest.approx(expected, abs=0.01)
    low, high = liked["difference"]
    assert low > 0 and high < 1  # the canary's rate is higher, surely
    stars = next(v for v in report["verdicts"] if v["key"] == "stars")
    assert stars["model"] == "normal" and stars["winner"] == "canary" and stars["probability"] > 0.95


def test_each_arm_shows_its_traffic_and_its_scores(better: tuple[dict[str, Any], dict[str, Any]]) -> None:
    given, report = better
    for arm in report["arms"]:
        scores = given[arm["ref"]]
        assert arm["requests"] == len(scores) and arm["errors"] == 0
        assert arm["p50_ms"] is not None and arm["p99_ms"] >= arm["p50_ms"]
        liked = arm["feedback"]["liked"]
        assert liked["count"] == len(scores)
        assert liked["mean"] == pytest.approx(sum(like for like, _ in scores) / len(scores))
        low, high = liked["interval"]
        assert low < liked["mean"] < high
        assert arm["feedback"]["stars"]["mean"] == pytest.approx(sum(s for _, s in scores) / len(scores))


def test_a_user_scoring_again_counts_once_per_arm(server: ServeProcess, better: tuple[Any, dict[str, Any]]) -> None:
    _, report = better
    before = {a["ref"]: a["feedback"]["liked"]["count"] for a in report["arms"]}
    user = {"x-flow-user": "bot-user-0"}
    for _ in range(3):
        run = server.invoke("bot", Q, headers=user).json()["metadata"]
        body = {"run_id": run["run_id"], "key": "liked", "score": 1}
        assert server.client.post("/feedback", json=body, headers=user).status_code == 202
    after = server.client.get("/flows/bot/experiment").json()
    assert {a["ref"]: a["feedback"]["liked"]["count"] for a in after["arms"]} == before


def test_alike_arms_give_no_confident_winner(server: ServeProcess) -> None:
    simulate(server, "twin", {"canary": 0.4, "stable": 0.4}, seed=24)
    report = server.client.get("/flows/twin/experiment").json()
    liked = next(v for v in report["verdicts"] if v["key"] == "liked")
    assert liked["min_sample_reached"]
    assert liked["winner"] is None and liked["probability"] < 0.95


def test_the_command_line_shows_the_report(server: ServeProcess, better: tuple[Any, dict[str, Any]]) -> None:
    out = io.StringIO()
    assert cli.main(["experiment", "bot", "--server", server.url], environ={}, out=out) == 0
    text = out.getvalue()
    assert "primary stable" in text and "canary  canary" in text
    assert "liked: canary beats stable with probability" in text and "winner canary" in text
    out = io.StringIO()
    assert cli.main(["experiment", "bot", "--server", server.url, "--json"], environ={}, out=out) == 0
    assert json.loads(out.getvalue())["flow"] == "bot"
    refused = io.StringIO()
    assert cli.main(["experiment", "nope", "--server", server.url], environ={}, out=refused) != 0


def test_the_console_shows_the_experiment(server: ServeProcess, better: tuple[Any, dict[str, Any]]) -> None:
    page = server.client.get("/ui/flows/bot")
    assert page.status_code == 200, page.text
    section = page.text.split('id="experiment"')[1].split("</div>")[0]
    assert 'data-ref="stable"' in section and 'data-ref="canary"' in section
    assert "liked: canary beats stable with probability" in section and "winner canary" in section


def test_a_new_version_on_an_arm_starts_a_new_experiment(server: ServeProcess) -> None:
    """Last: it moves the canary tag. Scores given on the old canary stay in the store but not in the report."""
    before = server.client.get("/flows/bot/experiment").json()
    remote = server.remote
    remote.commit({"flows/bot.json": echo_flow("bot", "newer")}, "v3")
    remote.tag("canary")
    remote.push()
    remote.push_tags()
    server.reconcile()
    after = server.client.get("/flows/bot/experiment").json()
    assert after["experiment"] != before["experiment"]
    canary = next(a for a in after["arms"] if a["ref"] == "canary")
    assert canary["version"] != next(a for a in before["arms"] if a["ref"] == "canary")["version"]
    assert canary["feedback"]["liked"]["count"] == 0
    liked = next(v for v in after["verdicts"] if v["key"] == "liked")
    assert liked["winner"] is None and liked["chance_to_beat"] is None
