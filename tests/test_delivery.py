"""GitOps delivery end to end on a real loopback server over a real Git remote: GitHub webhooks (the real payloads of
tests/data/github-webhooks, rewritten to the test repository and signed as GitHub signs them), traffic by tags,
promotion and rollback, the canary guard, the audit trail and the metrics."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gitops_flow.githost import github_webhook as webhook
from tests.gitrepo import Remote
from tests.served import ADMIN, echo_flow, on_loopback, wait_until

SECRET = "It's a Secret to Everybody"
FIXTURES = Path(__file__).parent / "data" / "github-webhooks"
Q = {"question": "hi"}
ZERO = "0" * 40


class Server:
    """A client of a real server on loopback, with the app for reading its reconciler's counters."""

    def __init__(self, url: str, app: Any, remote: Remote) -> None:
        self.http = httpx.Client(base_url=url, timeout=10)
        self.app = app
        self.remote = remote

    @property
    def fetches(self) -> int:
        fetches: int = self.app.state.deps.reconciler.status.fetches
        return fetches

    def deliver(
        self,
        event: str,
        payload: dict[str, Any] | bytes,
        *,
        secret: str | None = SECRET,
        delivery: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POST a delivery as GitHub does: the raw JSON body, signed with ``secret`` (None: unsigned)."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        sent = {
            "content-type": "application/json",
            "user-agent": "GitHub-Hookshot/044aadd",
            "x-github-event": event,
            "x-github-delivery": delivery or str(uuid.uuid4()),
            "x-github-hook-id": "109948940",
        }
        if secret is not None:
            sent["x-hub-signature-256"] = webhook.sign(secret.encode(), body)
        return self.http.post("/webhooks/github", content=body, headers={**sent, **(headers or {})})

    def ask(self, headers: dict[str, str] | None = None) -> tuple[str, str, str | None]:
        """(answer, version, ref) of one invoke of ``echo``."""
        response = self.http.post("/flows/echo/invoke", json={"input": Q}, headers=headers or {})
        assert response.status_code == 200, response.text
        body = response.json()
        return body["output"], body["metadata"]["flow_version"], body["metadata"]["ref"]

    def serves(self, sha: str, headers: dict[str, str] | None = None) -> bool:
        return self.ask(headers)[1] == sha

    def history(self, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.http.get("/history", headers=headers or {}).json()["events"]
        return events


@contextmanager
def serving(remote: Remote, tmp_path: Path, **overrides: Any) -> Iterator[Server]:
    """A real server on loopback that fetches only when woken (no polling during a test)."""
    settings = {"webhook_secret": SECRET, "poll_interval": 3600.0, **overrides}
    with on_loopback(remote, tmp_path, **settings) as (url, app):
        server = Server(url, app, remote)
        wait_until(lambda: server.http.get("/readyz").status_code == 200, what="readiness")
        try:
            yield server
        finally:
            server.http.close()


def fixture(name: str, remote: Remote, **fields: Any) -> dict[str, Any]:
    """A real payload with its repository rewritten to the test repository and ``fields`` replaced."""
    payload: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    repository = payload["repository"]
    repository.update(
        name="flows", full_name="acme/flows", clone_url=remote.file_url, git_url=remote.file_url, url=remote.file_url
    )
    payload.update(fields)
    return payload


def routing(*targets: tuple[str, float], **extra: Any) -> str:
    return yaml.safe_dump({"routes": {"default": [{"ref": r, "weight": w} for r, w in targets]}, **extra})


# -- webhooks --------------------------------------------------------------------------------------------------------


def test_ping_is_answered_and_fetches_nothing(remote: Remote, tmp_path: Path) -> None:
    remote.commit({"flows/echo.json": echo_flow()})
    remote.push()
    with serving(remote, tmp_path) as server:
        before = server.fetches
        for name in ("ping", "ping-with-app_id"):
            response = server.deliver("ping", fixture(name, remote))
            assert response.status_code == 200
            assert response.json()["status"] == "pong"
        assert server.fetches == before


def test_a_push_to_the_branch_is_served_after_the_webhook(remote: Remote, tmp_path: Path) -> None:
    first = remote.commit({"flows/echo.json": echo_flow(answer="one")})
    remote.push()
    with serving(remote, tmp_path) as server:
        second = remote.commit({"flows/echo.json": echo_flow(answer="two")}, "second answer")
        remote.push()
        assert server.ask() == ("one", first, "main")  # no poll: nothing moves until GitHub says so
        payload = fixture("push-with-new-branch", remote, ref="refs/heads/main", before=first, after=second)
        response = server.deliver("push", payload)
        assert response.status_code == 202
        assert response.json()["status"] == "fetching"
        wait_until(lambda: server.serves(second), what="the pushed commit")
        deployed = server.history()[0]
        assert (deployed["event"], deployed["sha"]) == ("deployed", second)
        assert deployed["trigger"].startswith("webhook push refs/heads/main (delivery ")


def test_a_push_to_another_branch_is_acknowledged_and_ignored(remote: Remote, tmp_path: Path) -> None:
    remote.commit({"flows/echo.json": echo_flow()})
    remote.push()
    with serving(remote, tmp_path) as server:
        before = server.fetches
        response = server.deliver("push", fixture("push-with-new-branch", remote))  # refs/heads/master, as GitHub sent
        assert response.status_code == 202
        assert response.json()["status"] == "ignored"
        assert "refs/heads/master" in response.json()["detail"]
        other = server.deliver("issues", b'{"action": "opened"}')
        assert other.status_code == 202 and other.json()["status"] == "ignored"
        assert server.fetches == before


@pytest.mark.parametrize(
    "name, event", [("create", "create"), ("push", "push"), ("delete", "delete"), ("push-1", "push")]
)
def test_tag_deliveries_reroute_within_one_fetch(remote: Remote, tmp_path: Path, name: str, event: str) -> None:
    """create: a tag appears; push: a tag is force-moved; delete, and push-1 (a push deleting a tag, as GitHub
    sends it for ``git push origin :stable``): a tag goes. Each real payload, rewritten to the test repository."""
    v1 = remote.commit({"flows/echo.json": echo_flow(answer="one"), "gitops-flow.yaml": routing(("stable", 1))})
    remote.tag("stable", v1)
    v2 = remote.commit({"flows/echo.json": echo_flow(answer="two")}, "two")
    remote.push()
    if name != "create":
        remote.push_tags()
    with serving(remote, tmp_path) as server:
        start = v1 if name != "create" else v2  # without the tag, the head serves it all
        assert server.ask()[1] == start
        if name == "create":
            remote.push_tags()
            payload = fixture("create", remote, ref="stable")
            expected = (v1, "stable")
        elif name == "push":  # git tag -f stable <v2> && git push -f origin stable
            remote.tag("stable", v2)
            remote.push_tags()
            payload = fixture("push", remote, ref="refs/tags/stable", before=v1, after=v2, deleted=False, forced=True)
            expected = (v2, "stable")
        elif name == "delete":
            remote.delete_tag("stable")
            payload = fixture("delete", remote, ref="stable")
            expected = (v2, "main")
        else:
            remote.delete_tag("stable")
            payload = fixture("push-1", remote, ref="refs/tags/stable", before=v1, after=ZERO)
            expected = (v2, "main")
        assert server.deliver(event, payload).status_code == 202
        wait_until(lambda: server.ask()[1:] == expected, what="the new route")
        moved = [e for e in server.history() if e["event"] == "tag-moved"]
        assert [(e["ref"], e["before"], e["after"]) for e in moved] == [
            {"create": ("stable", None, v1), "push": ("stable", v1, v2)}.get(name, ("stable", v1, None))
        ]


@pytest.mark.parametrize(
    "case",
    ["unsigned", "wrong-secret", "tampered-body", "malformed-json", "no-event", "no-delivery-id", "too-large"],
)
def test_a_refused_delivery_gets_its_status_and_changes_nothing(remote: Remote, tmp_path: Path, case: str) -> None:
    first = remote.commit({"flows/echo.json": echo_flow(answer="one")})
    remote.push()
    with serving(remote, tmp_path, max_body_bytes=64 * 1024) as server:
        second = remote.commit({"flows/echo.json": echo_flow(answer="two")})
        remote.push()
        payload = fixture("push-with-new-branch", remote, ref="refs/heads/main", before=first, after=second)
        body = json.dumps(payload).encode()
        good = {"x-hub-signature-256": webhook.sign(SECRET.encode(), body)}
        sends: dict[str, tuple[Any, dict[str, Any], int, str]] = {
            "unsigned": (payload, {"secret": None}, 401, "bad-signature"),
            "wrong-secret": (payload, {"secret": "not the secret"}, 401, "bad-signature"),
            "tampered-body": (
                body.replace(b"refs/heads/main", b"refs/heads/mail"),
                {"headers": good},
                401,
                "bad-signature",
            ),
            "malformed-json": (b'{"ref": ', {}, 400, "bad-delivery"),
            "no-event": (payload, {"headers": {"x-github-event": ""}}, 400, "bad-delivery"),
            "no-delivery-id": (payload, {"headers": {"x-github-delivery": ""}}, 400, "bad-delivery"),
            "too-large": ({**payload, "padding": "x" * 70_000}, {}, 413, "body-too-large"),
        }
        sent, options, status, code = sends[case]
        history, fetches = server.history(), server.fetches
        response = server.deliver("push", sent, **options)
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
        assert SECRET not in response.text
        assert server.fetches == fetches
        assert server.history() == history
        assert server.ask()[1] == first


def test_a_replayed_delivery_is_acted_on_once(remote: Remote, tmp_path: Path) -> None:
    first = remote.commit({"flows/echo.json": echo_flow(answer="one")})
    remote.push()
    with serving(remote, tmp_path) as server:
        payload = fixture("push-with-new-branch", remote, ref="refs/heads/main", before=ZERO, after=first)
        assert server.deliver("push", payload, delivery="d-1").json()["status"] == "fetching"
        wait_until(lambda: server.fetches >= 2, what="the delivery's fetch")
        fetches = server.fetches
        replay = server.deliver("push", payload, delivery="d-1")
        assert replay.status_code == 202
        assert replay.json()["status"] == "duplicate"
        assert server.fetches == fetches


def test_a_signed_body_replayed_under_a_new_delivery_id_is_a_duplicate(remote: Remote, tmp_path: Path) -> None:
    """Issue 21: the id was the only thing remembered, so a captured delivery sent again with a fresh
    X-GitHub-Delivery was acted on again; its body's hash is claimed too now."""
    first = remote.commit({"flows/echo.json": echo_flow(answer="one")})
    remote.push()
    with serving(remote, tmp_path) as server:
        payload = fixture("push-with-new-branch", remote, ref="refs/heads/main", before=ZERO, after=first)
        assert server.deliver("push", payload, delivery="d-1").json()["status"] == "fetching"
        wait_until(lambda: server.fetches >= 2, what="the delivery's fetch")
        fetches, history = server.fetches, server.history()
        replay = server.deliver("push", payload, delivery="d-2")
        assert (replay.status_code, replay.json()["status"]) == (202, "duplicate")
        assert "delivered already under another delivery id" in replay.json()["detail"]
        assert (server.fetches, server.history()) == (fetches, history)


def test_without_a_secret_every_delivery_is_refused_and_says_why(remote: Remote, tmp_path: Path) -> None:
    remote.commit({"flows/echo.json": echo_flow()})
    remote.push()
    with serving(remote, tmp_path, webhook_secret=None) as server:
        response = server.deliver("ping", fixture("ping", remote))
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "webhook-disabled"
        assert "GITOPS_FLOW_WEBHOOK_SECRET" in response.json()["error"]["message"]


def test_a_burst_of_deliveries_makes_few_fetches(remote: Remote, tmp_path: Path) -> None:
    first = remote.commit({"flows/echo.json": echo_flow(answer="one")})
    remote.push()
    with serving(remote, tmp_path) as server:
        second = remote.commit({"flows/echo.json": echo_flow(answer="two")})
        remote.push()
        payload = fixture("push-with-new-branch", remote, ref="refs/heads/main", before=first, after=second)
        before = server.fetches
        answers: list[int] = []
        threads = [
            threading.Thread(target=lambda: answers.append(server.deliver("push", payload).status_code))
            for _ in range(20)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers == [202] * 20
        wait_until(lambda: server.serves(second), what="the pushed commit")
        assert 1 <= server.fetches - before <= 3  # 20 deliveries coalesce into one fetch (and at most a couple more)


# -- promotion, rollback, the canary guard ---------------------------------------------------------------------------


def test_promotion_by_moving_a_tag_and_rollback_by_revert(remote: Remote, tmp_path: Path) -> None:
    config = routing(("stable", 90), ("main", 10))
    v1 = remote.commit({"flows/echo.json": echo_flow(answer="one"), "gitops-flow.yaml": config}, "one")
    remote.tag("stable", v1)
    v2 = remote.commit({"flows/echo.json": echo_flow(answer="two")}, "two")
    remote.push()
    remote.push_tags()
    with serving(remote, tmp_path) as server:
        users = [f"user-{n}" for n in range(300)]
        seen = {user: server.ask({"X-Flow-User": user})[1:] for user in users}
        shares = Counter(ref for _, ref in seen.values())
        assert 0.8 < shares["stable"] / len(users) < 0.97 and shares.keys() == {"stable", "main"}
        assert all(seen[user] == server.ask({"X-Flow-User": user})[1:] for user in users[:50])  # sticky
        assert {sha for sha, _ in seen.values()} == {v1, v2}

        remote.tag("stable", v2)  # promote: stable moves to what main serves
        remote.push_tags()
        server.deliver("push", fixture("push", remote, ref="refs/tags/stable", before=v1, after=v2, deleted=False))
        wait_until(lambda: all(server.ask({"X-Flow-User": u})[1] == v2 for u in users[:50]), what="the promotion")

        reverted = remote.revert(v2)  # roll back: a new commit serving v1's content
        remote.push()
        server.deliver(
            "push", fixture("push-with-new-branch", remote, ref="refs/heads/main", before=v2, after=reverted)
        )
        wait_until(lambda: server.ask({"X-Flow-Version": "main"})[1] == reverted, what="the revert")
        assert server.ask({"X-Flow-Version": "main"})[0] == "one"
        kinds = [(e["event"], e["sha"]) for e in server.history()]
        assert ("rolled-back", reverted) in kinds
        rolled = next(e for e in server.history() if e["event"] == "rolled-back")
        assert rolled["restores"] == v1


def failing_flow(answer: str = "not json") -> str:
    """A flow whose JSON parser fails at run time on the fake model's answer: every request is a 500."""
    doc = json.loads(echo_flow(answer=answer))
    doc["nodes"][2]["component"] = "JsonOutputParser"
    return json.dumps(doc)


def test_a_failing_canary_is_aborted_its_weight_goes_to_stable_and_it_stays_aborted_until_main_moves(
    remote: Remote, tmp_path: Path
) -> None:
    """Its users never see its failures: each failed canary request is answered by the primary (stable), and counts
    against the canary because the primary succeeded on the same input."""
    config = routing(
        ("stable", 50),
        ("main", 50),
        # the error rate's rule, not the failure count's (25 by default), which a late tick under load meets first
        analysis={"window": "60s", "min_requests": 10, "max_error_rate": 0.2, "max_failures": 1000},
    )
    v1 = remote.commit({"flows/echo.json": echo_flow(answer='"one"'), "gitops-flow.yaml": config}, "good")
    remote.tag("stable", v1)
    bad = remote.commit({"flows/echo.json": failing_flow()}, "break the parser")
    remote.push()
    remote.push_tags()
    with serving(remote, tmp_path, analysis_interval=0.05) as server:
        answers = Counter()
        for n in range(60):
            response = server.http.post("/flows/echo/invoke", json={"input": Q}, headers={"X-Flow-User": f"u{n}"})
            body = response.json()
            answers[
                (response.status_code, body["output"], body["metadata"]["ref"], response.headers["x-flow-version"])
            ] += 1
        assert answers.keys() == {(200, '"one"', "stable", v1)}  # the canary's share was answered by stable
        wait_until(lambda: any(e["event"] == "aborted" for e in server.history()), what="the abort")
        aborted = next(e for e in server.history() if e["event"] == "aborted")
        assert (aborted["sha"], aborted["ref"], aborted["flow"]) == (bad, "main", "echo")
        assert aborted["requests"] >= 10 and aborted["error_rate"] > 0.2
        assert "error rate" in aborted["reason"]
        wait_until(lambda: all(server.ask({"X-Flow-User": f"u{n}"})[2] == "stable" for n in range(60)), what="stable")
        targets = server.http.get("/flows").json()["flows"][0]["versions"]
        assert [(t["ref"], t["state"], t["weight"]) for t in targets] == [
            ("stable", "live", 100.0),
            ("main", "aborted", 0),
        ]
        metrics = server.http.get("/metrics").text
        assert 'gitops_flow_deploy_events_total{event="aborted"} 1.0' in metrics

        fixed = remote.commit({"flows/echo.json": echo_flow(answer='"two"')}, "fix the parser")
        remote.push()
        server.deliver("push", fixture("push-with-new-branch", remote, ref="refs/heads/main", before=bad, after=fixed))
        wait_until(lambda: any(server.ask({"X-Flow-User": f"u{n}"})[1] == fixed for n in range(60)), what="main again")
        targets = server.http.get("/flows").json()["flows"][0]["versions"]
        assert [(t["ref"], t["state"]) for t in targets] == [("stable", "live"), ("main", "live")]


def test_a_tag_off_the_branch_is_refused_and_its_weight_goes_to_the_others(remote: Remote, tmp_path: Path) -> None:
    head = remote.commit({"flows/echo.json": echo_flow(answer="one"), "gitops-flow.yaml": routing(("stable", 1))})
    remote.git("checkout", "--quiet", "-b", "unreviewed")
    side = remote.commit({"flows/echo.json": echo_flow(answer="never merged")}, "unreviewed")
    remote.tag("stable", side)
    remote.git("checkout", "--quiet", "main")
    remote.push()
    remote.push_tags()
    with serving(remote, tmp_path) as server:
        assert server.ask() == ("one", head, "main")
        refused = next(e for e in server.history(ADMIN) if e["event"] == "ref-refused")
        assert (refused["ref"], refused["sha"]) == ("stable", side)
        assert side[:12] in refused["detail"]
        # an anonymous reader learns that a tag was refused, not which unmerged commit it names
        hidden = next(e for e in server.history() if e["event"] == "ref-refused")
        assert (hidden["ref"], hidden["sha"]) == ("stable", None)
        assert side[:12] not in hidden["detail"] and "(an unmerged commit)" in hidden["detail"]
        assert side not in server.http.get("/history").text
        pinned = server.http.post("/flows/echo/invoke", json={"input": Q}, headers={"X-Flow-Version": "stable"})
        assert pinned.status_code == 404


def test_metrics_count_runs_by_flow_version_and_ref_and_deliveries_by_event(remote: Remote, tmp_path: Path) -> None:
    sha = remote.commit({"flows/echo.json": echo_flow()})
    remote.push()
    with serving(remote, tmp_path) as server:
        for _ in range(3):
            server.ask()
        server.deliver("ping", fixture("ping", remote))
        server.deliver("ping", fixture("ping", remote), secret="wrong")
        response = server.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert f'gitops_flow_requests_total{{flow="echo",outcome="ok",ref="main",version="{sha[:12]}"}} 3.0' in text
    assert f'gitops_flow_request_duration_seconds_count{{flow="echo",ref="main",version="{sha[:12]}"}} 3.0' in text
    assert 'gitops_flow_webhook_deliveries_total{event="ping",outcome="pong"} 1.0' in text
    assert 'gitops_flow_webhook_deliveries_total{event="ping",outcome="refused"} 1.0' in text
    assert 'gitops_flow_deploy_events_total{event="deployed"} 1.0' in text
    assert "gitops_flow_live_versions 1.0" in text
