"""Progressive delivery (issue 24, point 4), against a real `gitops-flow serve` over a real git remote: a canary whose
route entry declares ``steps`` takes its share one step at a time while the analysis holds, its progress lives in the
SQLite state (a restart goes on from the step reached), it is aborted mid-way when its users' feedback turns, and bad
steps are refused with problems that say where."""

from __future__ import annotations

import io
import json
import random
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops_flow.cli import main as cli
from gitops_flow.delivery.routing_table import sticky_point
from gitops_flow.validation.routing import validate_routing_bytes
from tests.gitrepo import Remote
from tests.process import ADMIN, ServeProcess, serve_process
from tests.redisenv import RedisSpace
from tests.served import echo_flow, wait_until
from tests.test_outbound import Script, receiver

Q = {"question": "hi"}
FAST = {"GITOPS_FLOW_ANALYSIS_INTERVAL": "0.2"}  # the guard (and the steps) tick five times a second


def routing(steps: list[float], interval: str, **analysis: Any) -> str:
    checks = {"window": "3s", "min_requests": 5, "max_error_rate": 0.5, "max_p99_ms": 60000, **analysis}
    routes = {"bot": [{"ref": "stable", "weight": 100}, {"ref": "canary", "steps": steps, "interval": interval}]}
    return yaml.safe_dump({"routes": routes, "analysis": checks})


def repo(tmp_path: Path, config: str) -> Remote:
    """``stable`` answers "old", ``canary`` (the head) "new"; the head's routing file rolls the canary out."""
    remote = Remote.create(tmp_path)
    remote.commit({"flows/bot.json": echo_flow("bot", "old")}, "v1")
    remote.tag("stable")
    remote.commit({"flows/bot.json": echo_flow("bot", "new"), "gitops-flow.yaml": config}, "v2, rolled out in steps")
    remote.tag("canary")
    remote.push()
    remote.push_tags()
    return remote


def canary_of(server: ServeProcess) -> dict[str, Any]:
    """The canary's row of GET /flows: its weight (%), state and progress."""
    flows = server.client.get("/flows", headers=ADMIN).json()["flows"]
    bot = next(flow for flow in flows if flow["name"] == "bot")
    found: dict[str, Any] = next(ref for ref in bot["versions"] if ref["ref"] == "canary")
    return found


def drive(server: ServeProcess, until: Callable[[], bool], what: str, timeout: float = 40.0) -> None:
    """Send requests (users the canary's share sends either way) until ``until`` holds."""
    deadline = time.monotonic() + timeout
    while not until():
        for _ in range(10):
            assert server.invoke("bot", Q).status_code == 200
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {canary_of(server)}\n{server.log_text()[-3000:]}")


def split(server: ServeProcess, n: int) -> float:
    """The share of ``n`` requests (no user: drawn at random) that the canary answered."""
    answers = [server.invoke("bot", Q).json()["output"] for _ in range(n)]
    return answers.count("new") / n


def events(server: ServeProcess, kind: str) -> list[dict[str, Any]]:
    found = server.client.get("/history", params={"limit": 200}, headers=ADMIN).json()["events"]
    return [event for event in reversed(found) if event["event"] == kind]


def test_a_canary_reaches_all_traffic_step_by_step_and_the_tag_command_makes_it_durable(tmp_path: Path) -> None:
    remote = repo(tmp_path, routing([10, 50, 100], "1s"))
    canary = remote.sha("canary")
    ops = Script()
    with receiver(ops) as ops_url:
        sinks = {"notifications": [{"name": "ops", "url": ops_url + "/hooks", "events": ["stepped", "aborted"]}]}
        (tmp_path / "notify.yaml").write_text(yaml.safe_dump(sinks))
        env = {**FAST, "GITOPS_FLOW_NOTIFY_FILE": str(tmp_path / "notify.yaml"), "GITOPS_FLOW_OUTBOUND_BACKOFF": "0.05"}
        rolled_out(remote, tmp_path, env, canary, ops)


def rolled_out(remote: Remote, tmp_path: Path, env: dict[str, str], canary: str, ops: Script) -> None:
    with serve_process(remote, tmp_path, env=env) as server:
        seen: list[float] = []

        def at_last() -> bool:
            row = canary_of(server)
            if not seen or seen[-1] != row["weight"]:
                seen.append(row["weight"])
            return bool(row["progress"]["step"] == 3)

        drive(server, at_last, "the last step")
        assert seen == [10, 50, 100]  # one step at a time, each seen on the route
        row = canary_of(server)
        command = f"git tag -f stable {canary} && git push -f origin stable"
        assert row["progress"] | {"since": None} == {
            "steps": [10, 50, 100],
            "step": 3,
            "of": 3,
            "share": 100,
            "interval_s": 1.0,
            "since": None,
            "next_at": None,
            "command": command,
        }
        assert split(server, 40) == 1.0  # real traffic: every request is the canary's now
        stepped = events(server, "stepped")
        assert [(e["flow"], e["ref"], e["step"], e["steps"], e["share"]) for e in stepped] == [
            ("bot", "canary", 1, 3, 10),
            ("bot", "canary", 2, 3, 50),
            ("bot", "canary", 3, 3, 100),
        ]
        assert [e.get("command") for e in stepped] == [None, None, command]
        assert all(e["sha"] == canary for e in stepped)
        assert stepped[1]["time"] - stepped[0]["time"] >= 1.0 and stepped[2]["time"] - stepped[1]["time"] >= 1.0
        overview = server.client.get("/ui/overview.json", headers=ADMIN).json()
        shown = next(r for f in overview["flows"] if f["name"] == "bot" for r in f["refs"] if r["ref"] == "canary")
        assert shown["progress"]["command"] == command
        page = server.client.get("/ui", headers=ADMIN)
        assert page.status_code == 200, page.text
        assert "step 3 of 3" in page.text and "10 → 50 → 100 %" in page.text
        assert command.replace("&", "&amp;") in page.text
        out = io.StringIO()
        status = cli.main(
            ["status", "--server", server.url], out=out, environ={"GITOPS_FLOW_ADMIN_TOKEN": "test-admin-token"}
        )
        assert status == 0 and f"make it durable: {command}" in out.getvalue()
        metrics = server.client.get("/metrics").text
        assert 'gitops_flow_deploy_events_total{event="stepped"} 3.0' in metrics

        wait_until(lambda: len(ops.requests) == 3, what="a notification per step")
        summaries = [json.loads(body)["summary"] for _, _, body in ops.requests]
        assert summaries == [
            f"bot's canary on canary ({canary[:7]}): step 1 of 3: 10 % of the traffic",
            f"bot's canary on canary ({canary[:7]}): step 2 of 3: 50 % of the traffic",
            f"bot's canary on canary ({canary[:7]}): step 3 of 3: 100 % of the traffic; make it durable: {command}",
        ]

        # the operator runs the command: stable is the canary's commit, durable in Git
        subprocess.run(command.replace("git ", "git -C " + str(remote.work) + " ", 2), shell=True, check=True)
        server.reconcile()
        stable = next(
            r for f in server.client.get("/flows").json()["flows"] if f["name"] == "bot" for r in f["versions"]
        )
        assert stable["ref"] == "stable" and stable["serving"] == canary


def test_feedback_turning_aborts_the_canary_mid_way(tmp_path: Path) -> None:
    gate = {"key": "liked", "min_probability": 0.9, "min_sample": 20}
    remote = repo(tmp_path, routing([10, 50, 100], "8s", feedback=gate))
    with serve_process(remote, tmp_path, env=FAST) as server:
        drive(server, lambda: canary_of(server)["progress"]["step"] == 2, "the second step")
        rng = random.Random(24)
        liked = {"stable": 0.8, "canary": 0.2}  # the new answer disappoints: the canary's liked rate drops
        for n in range(400):
            user = {"x-flow-user": f"user-{n}"}
            run = server.invoke("bot", Q, headers=user).json()["metadata"]
            score = int(rng.random() < liked[run["ref"]])
            body = {"run_id": run["run_id"], "key": "liked", "score": score}
            assert server.client.post("/flows/bot/feedback", json=body, headers=user).status_code == 202
            if n % 20 == 19 and canary_of(server)["state"] == "aborted":
                break
        row = canary_of(server)
        assert row["state"] == "aborted" and row["weight"] == 0
        (aborted,) = events(server, "aborted")
        assert aborted["ref"] == "canary" and aborted["reason"].startswith("feedback 'liked': the primary is better")
        assert [e["share"] for e in events(server, "stepped")] == [10, 50]  # mid-way: it never reached 100 %
        assert split(server, 20) == 0.0  # every request is the primary's again


def test_progress_survives_a_restart_on_the_same_state_file(tmp_path: Path) -> None:
    # min_requests 20 in a 2 s window: the 24 users below (17 of them the canary's) cannot make it step further
    remote = repo(tmp_path, routing([20, 60, 100], "1s", window="2s", min_requests=20))
    state = {**FAST, "GITOPS_FLOW_STATE": f"sqlite:///{tmp_path / 'shared' / 'state.db'}"}
    (tmp_path / "shared").mkdir()
    with serve_process(remote, tmp_path, env=state) as first:
        drive(first, lambda: canary_of(first)["progress"]["step"] == 2, "the second step")
        (reached,) = [e for e in events(first, "stepped") if e["share"] == 60]
    stopped = time.monotonic()
    with serve_process(remote, tmp_path, env=state) as second:
        row = canary_of(second)
        assert (row["progress"]["step"], row["weight"], row["progress"]["since"]) == (2, 60, reached["time"])
        while time.monotonic() - stopped < 2.2:  # the first server's requests leave the window
            time.sleep(0.1)
        users = [f"user-{n}" for n in range(24)]
        landed = [second.invoke("bot", Q, headers={"x-flow-user": u}).json()["output"] for u in users]
        # each user lands where the 60 % share puts their sticky point: stable below 0.4, the canary above
        assert landed == ["old" if sticky_point("bot", u) < 0.4 else "new" for u in users]
        assert canary_of(second)["progress"]["step"] == 2
        # the steps change in Git (a commit of the branch, the canary tag stays): it re-bases on the 60 % it reached
        finer = routing([10, 30, 60, 80, 100], "1s", window="2s", min_requests=20)
        remote.publish({"gitops-flow.yaml": finer}, "finer steps")
        second.reconcile()
        row = canary_of(second)
        assert (row["progress"]["step"], row["progress"]["of"], row["weight"]) == (3, 5, 60)
        drive(second, lambda: canary_of(second)["progress"]["step"] == 5, "the last step")
        assert [e["share"] for e in events(second, "stepped")] == [20, 60, 80, 100]  # no step taken twice


@pytest.mark.parametrize(
    ("entries", "analysis", "path", "words"),
    [
        ([{"ref": "s", "weight": 1}, {"ref": "c", "steps": [50, 10]}], True, "$.routes.bot[1].steps", "must increase"),
        ([{"ref": "s", "weight": 1}, {"ref": "c", "steps": [10, 10]}], True, "$.routes.bot[1].steps", "must increase"),
        ([{"ref": "s", "steps": [10, 100]}, {"ref": "c", "weight": 1}], True, "$.routes.bot[0].steps", "primary"),
        (
            [{"ref": "s", "weight": 1}, {"ref": "c", "steps": [10], "weight": 5}],
            True,
            "$.routes.bot[1].weight",
            "drop weight",
        ),
        ([{"ref": "s", "weight": 1}, {"ref": "c", "steps": [10]}], False, "$.routes.bot[1].steps", "analysis"),
        (
            [{"ref": "s", "weight": 1}, {"ref": "c", "weight": 1, "interval": "5m"}],
            True,
            "$.routes.bot[1].interval",
            "",
        ),
        (
            [{"ref": "s", "weight": 1}, {"ref": "c", "steps": [10]}, {"ref": "d", "steps": [10]}],
            True,
            "$.routes.bot[2].steps",
            "one progressive canary",
        ),
    ],
    ids=["decreasing", "repeated", "on-the-primary", "with-a-weight", "unguarded", "interval-alone", "two"],
)
def test_bad_steps_are_problems_that_say_where(
    entries: list[dict[str, Any]], analysis: bool, path: str, words: str
) -> None:
    raw = yaml.safe_dump({"routes": {"bot": entries}, **({"analysis": {}} if analysis else {})}).encode()
    _, problems = validate_routing_bytes(raw, file="gitops-flow.yaml")
    assert [(p.code, p.path) for p in problems] == [("bad-steps", path)]
    assert words in problems[0].message and problems[0].line is not None


@pytest.mark.parametrize(
    ("steps", "path"),
    [([0, 50], "$.routes.bot[1].steps[0]"), ([10, 101], "$.routes.bot[1].steps[1]"), ([], "$.routes.bot[1].steps")],
    ids=["zero", "above-100", "empty"],
)
def test_shares_out_of_range_are_refused(steps: list[float], path: str) -> None:
    raw = yaml.safe_dump({"routes": {"bot": [{"ref": "s", "weight": 1}, {"ref": "c", "steps": steps}]}}).encode()
    config, problems = validate_routing_bytes(raw, file="gitops-flow.yaml")
    assert config is None and [(p.code, p.path) for p in problems] == [("invalid-value", path)]


def test_a_commit_with_bad_steps_is_refused_by_the_server(tmp_path: Path) -> None:
    remote = repo(tmp_path, routing([10, 100], "1s"))
    with serve_process(remote, tmp_path) as server:
        good = server.client.get("/readyz").json()["version"]
        bad = yaml.safe_load(routing([50, 10], "1s"))
        remote.publish({"gitops-flow.yaml": yaml.safe_dump(bad)}, "steps the wrong way round")
        server.reconcile()
        (failed,) = [e for e in events(server, "failed") if e["sha"] == remote.sha()]
        assert [(p["code"], p["path"]) for p in failed["problems"]] == [("bad-steps", "$.routes.bot[1].steps")]
        assert server.client.get("/readyz").json()["version"] == good  # the last good routing keeps serving


def test_plan_shows_the_steps(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    base = {"routes": {"bot": [{"ref": "stable", "weight": 100}, {"ref": "main", "weight": 10}]}, "analysis": {}}
    remote.publish({"flows/bot.json": echo_flow("bot"), "gitops-flow.yaml": yaml.safe_dump(base)}, "base")
    stepped = {"routes": {"bot": [{"ref": "stable", "weight": 100}, {"ref": "main", "steps": [5, 25, 100]}]}}
    (remote.work / "gitops-flow.yaml").write_text(yaml.safe_dump({**stepped, "analysis": {}}))
    (remote.work / "flows" / "bot.json").write_text(echo_flow("bot", "two"))
    out = io.StringIO()
    cli.main(["plan", str(remote.work), "--base", "main"], environ={}, out=out)
    text = out.getvalue()
    steps = "5 → 25 → 100 %, each step held at least the analysis window while the analysis holds"
    assert f"route bot: steps of main: {steps}" in text, text
    assert f"a progressive canary on main: {steps} (beside stable 100)" in text
    out = io.StringIO()
    cli.main(["plan", str(remote.work), "--base", "main", "--format", "json"], environ={}, out=out)
    changes = json.loads(out.getvalue())["routing"]["changes"]
    assert {"kind": "added", "what": "route bot: steps of main", "detail": steps} in changes


def test_replicas_sharing_redis_take_each_step_once_and_both_serve_it(tmp_path: Path, redis_space: RedisSpace) -> None:
    remote = repo(tmp_path, routing([25, 100], "1s"))
    env = {**FAST, "GITOPS_FLOW_STATE": f"{redis_space.url}?prefix={redis_space.prefix}"}
    with serve_process(remote, tmp_path / "a", env=env) as a, serve_process(remote, tmp_path / "b", env=env) as b:
        drive(a, lambda: canary_of(a)["progress"]["step"] == 2, "the last step on the replica with the traffic")
        wait_until(lambda: canary_of(b)["weight"] == 100, what="the other replica taking the step")
        assert split(b, 20) == 1.0
        for replica in (a, b):  # one history, each step in it once
            assert [e["share"] for e in events(replica, "stepped")] == [25, 100]
