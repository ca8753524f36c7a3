"""Commit statuses and deployments written by a real `gitops-flow serve` to a stand-in of GitHub's REST API that
checks every request against GitHub's OpenAPI description (tests/githubapi.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.githubapi import TOKEN, GitHubStandIn, github_standin
from tests.gitrepo import Remote
from tests.process import ADMIN, ServeProcess, serve_process
from tests.redisenv import RedisSpace
from tests.served import echo_flow, wait_until

PUBLIC = "https://flows.example.com"
ROUTING = {"routes": {"default": [{"ref": "stable", "weight": 90}, {"ref": "main", "weight": 10}]}}
BROKEN = json.dumps({"version": 1, "name": "other", "nodes": [{"id": "x", "component": "NoSuchThing"}]})


@pytest.fixture
def standin() -> Iterator[GitHubStandIn]:
    with github_standin() as running:
        yield running
        assert running.violations == [], "requests GitHub's OpenAPI description does not allow"


def github_env(standin: GitHubStandIn, **extra: str) -> dict[str, str]:
    return {
        "GITOPS_FLOW_GITHUB_API": standin.url,
        "GITOPS_FLOW_GITHUB_TOKEN": TOKEN,
        "GITOPS_FLOW_GITHUB_REPO": "acme/flows",
        "GITOPS_FLOW_PUBLIC_URL": PUBLIC,
        "GITOPS_FLOW_OUTBOUND_BACKOFF": "0.05",
        **extra,
    }


def repo_with_flows(tmp_path: Path) -> tuple[Remote, str]:
    remote = Remote.create(tmp_path)
    sha = remote.commit(
        {
            "flows/echo.json": echo_flow("echo", "one"),
            "flows/other.json": echo_flow("other", "two"),
            "gitops-flow.yaml": yaml.safe_dump(ROUTING),
        },
        "first flows",
    )
    remote.push()
    return remote, sha


def status_of(standin: GitHubStandIn, sha: str, context: str, description: str | None = None) -> dict[str, Any]:
    """The latest status of ``sha`` under ``context`` once there is one (with ``description``, once it is that)."""

    def there() -> bool:
        found = standin.latest_status(sha, context)
        return found is not None and (description is None or found["description"] == description)

    wait_until(there, what=f"status {context} on {sha[:7]}" + (f" saying {description!r}" if description else ""))
    found = standin.latest_status(sha, context)
    assert found is not None
    return found


def drained(server: ServeProcess) -> dict[str, Any]:
    """/readyz's GitHub part once nothing is left to send."""
    wait_until(lambda: server.client.get("/readyz").json()["github"]["pending"] == 0, what="the outbox to drain")
    github: dict[str, Any] = server.client.get("/readyz").json()["github"]
    return github


def test_the_loop_from_a_merge_to_statuses_and_deployments(tmp_path: Path, standin: GitHubStandIn) -> None:
    remote, first = repo_with_flows(tmp_path)
    with serve_process(remote, tmp_path, env=github_env(standin)) as server:
        status = status_of(standin, first, "gitops-flow/main")
        assert (status["state"], status["description"]) == ("success", "Live on main")
        assert status["target_url"] == f"{PUBLIC}/ui/history?ref=main"  # the console's trail of the ref
        wait_until(lambda: standin.deployment_states(first, "main") == ["success"], what="deployment of the first")
        deployment = next(d for d in standin.deployments if d["sha"] == first)
        assert deployment["payload"]["gitops-flow"]["ref"] == "main"
        assert deployment["production_environment"] is False  # main is the canary; stable is the route's primary

        # a commit that breaks one flow: the other goes live, the commit's status names the broken flow
        broken = remote.commit({"flows/other.json": BROKEN, "flows/echo.json": echo_flow("echo", "uno")}, "break")
        remote.push()
        server.reconcile()
        status = status_of(standin, broken, "gitops-flow/main", "Live on main except other, which failed here")
        assert status["state"] == "failure"
        wait_until(lambda: standin.deployment_states(broken, "main") == ["success"], what="deployment of the break")
        # GitHub's auto_inactive: the first commit's deployment to main is no longer the active one
        assert standin.deployment_states(first, "main") == ["success", "inactive"]
        first_failure = [
            s for s in standin.statuses if s["sha"] == broken and s["description"].startswith("other failed:")
        ]
        assert first_failure and "unknown-component" in first_failure[0]["description"]
        assert f"serving {first[:7]}" in first_failure[0]["description"]

        # promotion: the tag the routing file names gets its own context and environment
        remote.tag("stable", first)
        remote.push_tags()
        server.reconcile()
        status = status_of(standin, first, "gitops-flow/stable")
        assert (status["state"], status["description"]) == ("success", "stable points here: promoted (a new tag)")
        wait_until(lambda: standin.deployment_states(first, "stable") == ["success"], what="deployment to stable")
        stable = next(d for d in standin.deployments if d["environment"] == "stable")
        assert stable["production_environment"] is True

        # a tag the routing file does not name routes nothing: no status, no environment
        remote.tag("v1.0", first)
        remote.push_tags()
        server.reconcile()
        assert drained(server)["ok"] is True
        assert all(s["context"] != "gitops-flow/v1.0" for s in standin.statuses)

        # a revert is a rollback
        fixed = remote.revert(broken)
        remote.push()
        server.reconcile()
        status = status_of(standin, fixed, "gitops-flow/main")
        assert status["state"] == "success"
        assert status["description"] == f"Rolled back: main serves the content of {first[:7]} again"

        # a yank: the commit's status says so, its deployments become inactive
        remote.commit({"gitops-flow.yaml": yaml.safe_dump({**ROUTING, "yanked": [broken[:10]]})}, "yank the break")
        remote.push()
        server.reconcile()
        status = status_of(standin, broken, "gitops-flow/main", "Yanked by gitops-flow.yaml: never served again")
        assert status["state"] == "failure"
        wait_until(lambda: standin.deployment_states(broken, "main")[-1:] == ["inactive"], what="yank's inactive")
        github = drained(server)
        assert github["ok"] is True and github["failed"] == 0
    for seen in standin.seen:  # every call was authenticated and followed the description (the fixture checks it)
        assert seen.status < 400, seen


def test_an_aborted_canary_is_a_failure_on_its_ref(tmp_path: Path, standin: GitHubStandIn) -> None:
    remote = Remote.create(tmp_path)
    routing = {**ROUTING, "analysis": {"window": "60s", "min_requests": 5}}
    first = remote.commit({"flows/echo.json": echo_flow("echo", "one"), "gitops-flow.yaml": yaml.safe_dump(routing)})
    remote.tag("stable", first)
    remote.push()
    remote.push_tags()
    second = remote.commit({"flows/echo.json": echo_flow("echo", "two")}, "canary")
    remote.push()
    with serve_process(remote, tmp_path, env=github_env(standin)) as server:
        wait_until(lambda: standin.deployment_states(second, "main") == ["success"], what="the canary's deployment")
        response = server.client.post("/admin/abort", json={"flow": "echo", "ref": "main"}, headers=ADMIN)
        assert response.status_code == 200, response.text
        status = status_of(standin, second, "gitops-flow/main", "echo's canary on main aborted: aborted by an operator")
        assert status["state"] == "failure"
        wait_until(lambda: standin.deployment_states(second, "main") == ["success", "failure"], what="failure")
        server.client.post("/admin/resume", json={"flow": "echo", "ref": "main"}, headers=ADMIN)
        status_of(standin, second, "gitops-flow/main", "echo's canary on main resumed")
        assert [d["sha"] for d in standin.deployments if d["environment"] == "main"] == [second]


def test_a_whole_commit_that_fails_is_a_failed_deployment(tmp_path: Path, standin: GitHubStandIn) -> None:
    remote, first = repo_with_flows(tmp_path)
    with serve_process(remote, tmp_path, env=github_env(standin)) as server:
        status_of(standin, first, "gitops-flow/main")
        bad = remote.commit({"gitops-flow.yaml": "routes: {default: [{ref: main, weight: 0}]}\n"}, "no traffic")
        remote.push()
        server.reconcile()
        status = status_of(standin, bad, "gitops-flow/main")
        assert status["state"] == "failure"
        assert status["description"] == "Not deployed: gitops-flow.yaml:1 zero-weights"
        wait_until(lambda: standin.deployment_states(bad, "main") == ["failure"], what="failed deployment")


def test_lost_answers_and_outages_are_retried_without_duplicates(tmp_path: Path, standin: GitHubStandIn) -> None:
    remote, first = repo_with_flows(tmp_path)
    with serve_process(remote, tmp_path, env=github_env(standin)) as server:
        status_of(standin, first, "gitops-flow/main")
        drained(server)
        second = remote.commit({"flows/echo.json": echo_flow("echo", "dos")}, "second")
        remote.push()
        # the status is written but its answer lost, then the deployment's creation too; then two outages
        standin.fail_next(1, 502, after=True, operation="repos/create-commit-status")
        standin.fail_next(1, 504, after=True, operation="repos/create-deployment")
        standin.fail_next(1, 503, operation="repos/create-deployment-status")
        standin.fail_next(1, 429, {"retry-after": "0"}, operation="repos/create-deployment-status")
        server.reconcile()
        status_of(standin, second, "gitops-flow/main", "Live on main")
        wait_until(lambda: standin.deployment_states(second, "main") == ["success"], what="the second's deployment")
        github = drained(server)
        assert [d["sha"] for d in standin.deployments].count(second) == 1  # found again, never made twice
        assert github["ok"] is True and github["failed"] == 0
        assert sum(1 for s in standin.seen if s.status >= 500 or s.status == 429) == 4


def test_a_wrong_token_is_a_warning_not_a_crash(tmp_path: Path, standin: GitHubStandIn) -> None:
    remote, first = repo_with_flows(tmp_path)
    wrong = "ghp_wrongwrongwrongwrongwrongwrongwrong00"
    with serve_process(remote, tmp_path, env=github_env(standin, GITOPS_FLOW_GITHUB_TOKEN=wrong)) as server:
        ready = server.client.get("/readyz")
        assert ready.status_code == 200  # the server serves; GitHub's part is detail
        wait_until(lambda: server.client.get("/readyz").json()["github"]["last_error"] is not None, what="the check")
        github = server.client.get("/readyz").json()["github"]
        assert github["ok"] is False
        assert github["last_error"].startswith("GitHub refused the token (401): it is wrong, expired or revoked")
        assert server.invoke("echo", {"question": "hi"}).json()["output"] == "one"
        wait_until(lambda: server.client.get("/readyz").json()["github"]["failed"] >= 1, what="the status given up")
        log = server.log_text()
        assert "GitHub refused the token (401)" in log
        for shown in (log, ready.text, server.client.get("/history").text):
            assert wrong not in shown
    assert standin.statuses == []


def test_a_token_without_write_access_is_named(tmp_path: Path) -> None:
    remote, _ = repo_with_flows(tmp_path)
    with github_standin(push=False) as standin, serve_process(remote, tmp_path, env=github_env(standin)) as server:
        wait_until(lambda: server.client.get("/readyz").json()["github"]["failed"] >= 1, what="the write refused")
        github = server.client.get("/readyz").json()["github"]
        assert github["ok"] is False
        assert github["last_error"].startswith("GitHub refused the write (403): a fine-grained token or app needs")
        assert "the token can read the repository but not write to it" in server.log_text()


def test_a_classic_token_without_the_scopes_is_named(tmp_path: Path) -> None:
    remote, _ = repo_with_flows(tmp_path)
    with github_standin(scopes="read:org, gist") as standin:
        with serve_process(remote, tmp_path, env=github_env(standin)) as server:
            wait_until(lambda: "lacks the 'repo' scope" in server.log_text(), what="the check's warning")
            wait_until(lambda: server.client.get("/readyz").json()["github"]["failed"] >= 1, what="the write refused")
            assert server.client.get("/readyz").json()["github"]["ok"] is False


def test_a_token_from_a_file_is_read_at_each_request(tmp_path: Path, standin: GitHubStandIn) -> None:
    remote, first = repo_with_flows(tmp_path)
    token_file = tmp_path / "token"
    token_file.write_text("ghp_expiredexpiredexpiredexpiredexpired0\n")
    env = github_env(standin, GITOPS_FLOW_GITHUB_TOKEN_FILE=str(token_file))
    del env["GITOPS_FLOW_GITHUB_TOKEN"]
    with serve_process(remote, tmp_path, env=env) as server:
        wait_until(lambda: server.client.get("/readyz").json()["github"]["failed"] >= 1, what="the first given up")
        token_file.write_text(TOKEN + "\n")  # rotated beside the server, as a mounted secret is
        second = remote.commit({"flows/echo.json": echo_flow("echo", "dos")}, "second")
        remote.push()
        server.reconcile()
        status_of(standin, second, "gitops-flow/main", "Live on main")
        assert drained(server)["ok"] is True


def test_without_a_token_nothing_is_sent_and_nothing_is_said(tmp_path: Path, standin: GitHubStandIn) -> None:
    remote, _ = repo_with_flows(tmp_path)
    with serve_process(remote, tmp_path, env={"GITOPS_FLOW_GITHUB_API": standin.url}) as server:
        body = server.client.get("/readyz").json()
        assert body["github"] is None and body["warnings"] == []
    assert standin.seen == []


def test_a_repository_is_named_when_the_url_does_not_say_it(tmp_path: Path, standin: GitHubStandIn) -> None:
    remote, _ = repo_with_flows(tmp_path)
    env = github_env(standin)
    del env["GITOPS_FLOW_GITHUB_REPO"]
    with serve_process(remote, tmp_path, env=env) as server:
        warnings = server.client.get("/readyz").json()["warnings"]
        assert any("set GITOPS_FLOW_GITHUB_REPO=owner/name" in w for w in warnings)
        assert "set GITOPS_FLOW_GITHUB_REPO=owner/name" in server.log_text()


def test_the_stand_in_refuses_what_github_would(standin: GitHubStandIn) -> None:
    """The checks bite: a request outside GitHub's description is refused and recorded."""
    headers = {"authorization": f"Bearer {TOKEN}", "accept": "application/vnd.github+json"}
    sha = "a" * 40
    with httpx.Client(base_url=standin.url, headers=headers) as client:
        assert client.post(f"/repos/acme/flows/statuses/{sha}", json={"state": "ok"}).status_code == 422
        assert client.post(f"/repos/acme/flows/statuses/{sha}", json={"context": "x"}).status_code == 422
        assert client.post("/repos/acme/flows/deployments", json={"ref": sha, "auto_merge": "no"}).status_code == 422
        assert client.get("/repos/acme/flows/deployments", params={"per_page": "many"}).status_code == 422
        assert client.get("/repos/acme/flows/deployments", params={"colour": "red"}).status_code == 422
        assert client.post("/repos/acme/flows/deploys", json={}).status_code == 404
        long = {"state": "success", "description": "x" * 141}
        assert client.post(f"/repos/acme/flows/statuses/{sha}", json=long).status_code == 422
        assert client.get("/repos/acme/flows", headers={"authorization": "Bearer nope"}).status_code == 401
        assert client.get("/repos/acme/flows", headers={"accept": "text/html"}).status_code == 422
    assert len(standin.violations) == 8
    standin.violations.clear()


def test_replicas_write_each_status_once(tmp_path: Path, standin: GitHubStandIn, redis_space: RedisSpace) -> None:
    remote, first = repo_with_flows(tmp_path)
    state = ["--state", f"{redis_space.url}?prefix={redis_space.prefix}"]
    env = github_env(standin)
    with (
        serve_process(remote, tmp_path, env=env, args=state) as one,
        serve_process(remote, tmp_path, env=env, args=state) as two,
    ):
        second = remote.commit({"flows/echo.json": echo_flow("echo", "dos")}, "second")
        remote.push()
        one.reconcile()
        two.reconcile()
        for server in (one, two):
            assert server.wait_ready() == second
            drained(server)
        sent = [s for s in standin.statuses if s["context"] == "gitops-flow/main"]
        assert [s["sha"] for s in sent] == [first, second]  # each deploy written once, by one replica or the other
        assert [d["sha"] for d in standin.deployments] == [first, second]
        total = sum(server.client.get("/readyz").json()["github"]["sent"] for server in (one, two))
        assert total == 2
