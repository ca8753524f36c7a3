"""GitLab's and Gitea's (and Forgejo's) webhooks beside GitHub's: their real payloads (tests/data/gitlab-webhooks,
tests/data/gitea-webhooks), verified each host's way, then deduplicated and coalesced as GitHub's are, on a real
server on loopback."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from gitops_flow.exceptions import MalformedDelivery, SignatureMismatch
from gitops_flow.githost import gitea_webhook as gitea
from gitops_flow.githost import gitlab_webhook as gitlab
from tests.gitrepo import Remote
from tests.served import echo_flow, wait_until
from tests.test_delivery import SECRET, Server, routing
from tests.test_delivery import serving as github_serving

DATA = Path(__file__).parent / "data"


def payload(host: str, name: str, **fields: Any) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((DATA / f"{host}-webhooks" / f"{name}.json").read_text())
    found.update(fields)
    return found


def gitea_signature(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def to_gitlab(server: Server, hook: str, body: dict[str, Any], *, token: str | None = SECRET, **headers: str) -> Any:
    sent = {"content-type": "application/json", "x-gitlab-event": hook, "user-agent": "GitLab/17.11.1-ee", **headers}
    if token is not None:
        sent["x-gitlab-token"] = token
    return server.http.post("/webhooks/gitlab", content=json.dumps(body).encode(), headers=sent)


def to_gitea(
    server: Server, event: str, body: dict[str, Any], *, forgejo: bool = False, sign: bool = True, **headers: str
) -> Any:
    raw = json.dumps(body).encode()
    prefix = "x-forgejo-" if forgejo else "x-gitea-"
    sent = {"content-type": "application/json", f"{prefix}event": event, f"{prefix}delivery": str(uuid.uuid4())}
    if sign:
        sent[f"{prefix}signature"] = gitea_signature(raw)
    return server.http.post("/webhooks/gitea", content=raw, headers={**sent, **headers})


def serving(remote: Remote, tmp_path: Path, **overrides: Any) -> Any:
    """The GitHub test server with GitLab's and Gitea's endpoints on too, each with its own setting."""
    hosts = {"gitlab_webhook_token": SECRET, "gitea_webhook_secret": SECRET}
    return github_serving(remote, tmp_path, **{**hosts, **overrides})


# -- reading deliveries ----------------------------------------------------------------------------------------------


def test_gitlab_push_and_tag_push_name_their_refs() -> None:
    headers = {"x-gitlab-token": SECRET, "x-gitlab-event": "Push Hook", "idempotency-key": "k-1"}
    push = gitlab.read(SECRET.encode(), json.dumps(payload("gitlab", "push")).encode(), headers)
    assert (push.id, push.event, push.ref) == ("k-1", "push", "refs/heads/master")
    assert push.action("master") == ("fetch", "branch 'master' changed")
    tags = {**headers, "x-gitlab-event": "Tag Push Hook", "idempotency-key": ""}
    tag = gitlab.read(
        SECRET.encode(), json.dumps(payload("gitlab", "tag_push")).encode(), {**tags, "x-gitlab-event-uuid": "e-2"}
    )
    assert (tag.id, tag.ref, tag.action("main")[0]) == ("e-2", "refs/tags/v1.0.0", "fetch")


def test_a_gitlab_delivery_without_an_id_is_named_by_its_body() -> None:
    body = json.dumps(payload("gitlab", "push")).encode()
    headers = {"x-gitlab-token": SECRET, "x-gitlab-event": "Push Hook"}
    first, again = gitlab.read(SECRET.encode(), body, headers), gitlab.read(SECRET.encode(), body, headers)
    assert first.id == again.id and first.id.startswith("sha256:")


@pytest.mark.parametrize(
    "headers, error, message",
    [
        ({"x-gitlab-event": "Push Hook"}, SignatureMismatch, "no X-Gitlab-Token header"),
        ({"x-gitlab-event": "Push Hook", "x-gitlab-token": "guess"}, SignatureMismatch, "is not the secret"),
        ({"x-gitlab-token": SECRET}, MalformedDelivery, "no X-Gitlab-Event header"),
    ],
    ids=["no-token", "wrong-token", "no-event"],
)
def test_a_gitlab_delivery_is_refused_naming_what_is_wrong(headers: dict[str, str], error: type, message: str) -> None:
    with pytest.raises(error, match=message) as caught:
        gitlab.read(SECRET.encode(), json.dumps(payload("gitlab", "push")).encode(), headers)
    assert SECRET not in str(caught.value)


def test_gitlab_events_other_than_pushes_are_ignored() -> None:
    headers = {"x-gitlab-token": SECRET, "x-gitlab-event": "Merge Request Hook"}
    delivery = gitlab.read(SECRET.encode(), b'{"object_kind": "merge_request"}', headers)
    assert delivery.action("main")[0] == "ignore"


def test_gitea_and_forgejo_deliveries_are_read_as_githubs() -> None:
    body = json.dumps(payload("gitea", "push")).encode()
    push = gitea.read(
        SECRET.encode(),
        body,
        {"x-gitea-event": "push", "x-gitea-delivery": "d", "x-gitea-signature": gitea_signature(body)},
    )
    assert (push.event, push.ref) == ("push", "refs/heads/develop")
    body = json.dumps(payload("gitea", "create-tag")).encode()
    forgejo = {"x-forgejo-event": "create", "x-forgejo-delivery": "f", "x-forgejo-signature": gitea_signature(body)}
    tag = gitea.read(SECRET.encode(), body, forgejo)
    assert (tag.event, tag.ref, tag.action("main")[0]) == ("create", "refs/tags/v1.0.0", "fetch")


def test_the_secret_field_of_an_old_gitea_body_is_never_a_credential() -> None:
    document = payload("gitea", "push", secret=SECRET)  # old Gitea copied the secret into the body
    body = json.dumps(document).encode()
    with pytest.raises(SignatureMismatch, match="no X-Gitea-Signature header"):
        gitea.read(SECRET.encode(), body, {"x-gitea-event": "push", "x-gitea-delivery": "d"})
    with pytest.raises(SignatureMismatch, match="does not match"):
        gitea.read(
            SECRET.encode(),
            body,
            {"x-gitea-event": "push", "x-gitea-delivery": "d", "x-gitea-signature": "sha256=" + gitea_signature(body)},
        )


# -- a real server ---------------------------------------------------------------------------------------------------


def test_a_gitlab_push_is_served_once_and_a_retry_is_a_duplicate(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    remote.commit({"flows/echo.json": echo_flow(answer="one")})
    remote.push()
    with serving(remote, tmp_path) as server:
        second = remote.commit({"flows/echo.json": echo_flow(answer="two")})
        remote.push()
        body = payload("gitlab", "push", ref="refs/heads/main", after=second, checkout_sha=second)
        response = to_gitlab(server, "Push Hook", body, **{"idempotency-key": "gl-1"})
        assert (response.status_code, response.json()["status"]) == (202, "fetching"), response.text
        wait_until(lambda: server.serves(second), what="the pushed commit")
        deployed = next(e for e in server.history() if e["event"] == "deployed" and e["sha"] == second)
        assert deployed["trigger"] == "GitLab webhook push refs/heads/main (delivery gl-1)"
        fetches = server.fetches
        retry = to_gitlab(server, "Push Hook", body, **{"idempotency-key": "gl-1"})
        assert retry.json()["status"] == "duplicate" and server.fetches == fetches
        assert to_gitlab(server, "Push Hook", payload("gitlab", "push")).json()["status"] == "ignored"  # master


def test_a_gitlab_tag_push_reroutes(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    one = remote.commit(
        {"flows/echo.json": echo_flow(answer="one"), "gitops-flow.yaml": routing(("stable", 100), ("main", 0))}
    )
    remote.tag("stable", one)
    two = remote.commit({"flows/echo.json": echo_flow(answer="two")})
    remote.push()
    remote.push_tags()
    with serving(remote, tmp_path) as server:
        assert server.serves(one)
        remote.tag("stable", two)
        remote.push_tags()
        body = payload("gitlab", "tag_push", ref="refs/tags/stable", after=two, checkout_sha=two)
        assert to_gitlab(server, "Tag Push Hook", body).json()["status"] == "fetching"
        wait_until(lambda: server.serves(two), what="stable to move")


@pytest.mark.parametrize("forgejo", [False, True], ids=["gitea", "forgejo"])
def test_a_gitea_push_and_tag_creation_are_served(tmp_path: Path, forgejo: bool) -> None:
    remote = Remote.create(tmp_path)
    config = routing(("stable", 50), ("main", 50))
    one = remote.commit({"flows/echo.json": echo_flow(answer="one"), "gitops-flow.yaml": config})
    remote.tag("stable", one)
    remote.push()
    remote.push_tags()
    with serving(remote, tmp_path) as server:
        two = remote.commit({"flows/echo.json": echo_flow(answer="two")})
        remote.push()
        push = payload("gitea", "push", ref="refs/heads/main", before=one, after=two)
        assert to_gitea(server, "push", push, forgejo=forgejo).json()["status"] == "fetching"
        wait_until(lambda: server.serves(two, {"x-flow-version": "main"}), what="main to move")
        remote.tag("stable", two)
        remote.push_tags()
        created = payload("gitea", "create-tag", ref="stable", sha=two)
        assert to_gitea(server, "create", created, forgejo=forgejo).json()["status"] == "fetching"
        wait_until(lambda: server.serves(two, {"x-flow-version": "stable"}), what="stable to move")


@pytest.mark.parametrize(
    "host, send",
    [
        ("gitlab", lambda s, b: to_gitlab(s, "Push Hook", b, token="wrong-token")),
        ("gitlab", lambda s, b: to_gitlab(s, "Push Hook", b, token=None)),
        ("gitea", lambda s, b: to_gitea(s, "push", b, sign=False)),
        ("gitea", lambda s, b: to_gitea(s, "push", b, **{"x-gitea-signature": "0" * 64})),
    ],
    ids=["gitlab-wrong", "gitlab-missing", "gitea-missing", "gitea-wrong"],
)
def test_an_unauthenticated_delivery_is_refused_and_changes_nothing(tmp_path: Path, host: str, send: Any) -> None:
    remote = Remote.create(tmp_path)
    first = remote.commit({"flows/echo.json": echo_flow(answer="one")})
    remote.push()
    with serving(remote, tmp_path) as server:
        remote.commit({"flows/echo.json": echo_flow(answer="two")})
        remote.push()
        fetches, history = server.fetches, server.history()
        response = send(server, payload(host, "push", ref="refs/heads/main"))
        assert response.status_code == 401 and response.json()["error"]["code"] == "bad-signature"
        assert SECRET not in response.text
        assert (server.fetches, server.history(), server.ask()[1]) == (fetches, history, first)
        metrics = server.http.get("/metrics").text
        assert 'gitops_flow_webhook_deliveries_total{event="push",outcome="refused"} 1.0' in metrics


def test_a_burst_of_gitea_deliveries_makes_few_fetches(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    first = remote.commit({"flows/echo.json": echo_flow(answer="one")})
    remote.push()
    with serving(remote, tmp_path) as server:
        second = remote.commit({"flows/echo.json": echo_flow(answer="two")})
        remote.push()
        body = payload("gitea", "push", ref="refs/heads/main", before=first, after=second)
        before = server.fetches
        answers: list[int] = []
        threads = [
            threading.Thread(target=lambda: answers.append(to_gitea(server, "push", body).status_code))
            for _ in range(20)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers == [202] * 20
        wait_until(lambda: server.serves(second), what="the pushed commit")
        assert 1 <= server.fetches - before <= 3


@pytest.mark.parametrize(
    ("host", "send", "setting"),
    [
        ("gitlab", lambda s, b: to_gitlab(s, "Push Hook", b), "GITOPS_FLOW_GITLAB_WEBHOOK_TOKEN"),
        ("gitea", lambda s, b: to_gitea(s, "push", b), "GITOPS_FLOW_GITEA_WEBHOOK_SECRET"),
    ],
    ids=["gitlab", "gitea"],
)
def test_each_hosts_endpoint_is_off_until_its_own_secret_is_set(
    tmp_path: Path, host: str, send: Any, setting: str
) -> None:
    """Issue 21: /webhooks/gitlab was always on and took GitHub's HMAC key, sent as it is, as GitLab's token."""
    remote = Remote.create(tmp_path)
    first = remote.commit({"flows/echo.json": echo_flow(answer="one")})
    remote.push()
    with github_serving(remote, tmp_path) as server:  # only GitHub's secret is set
        remote.commit({"flows/echo.json": echo_flow(answer="two")})
        remote.push()
        fetches = server.fetches
        response = send(server, payload(host, "push", ref="refs/heads/main"))  # signed with GitHub's secret
        assert response.status_code == 403 and response.json()["error"]["code"] == "webhook-disabled"
        assert setting in response.json()["error"]["message"]
        assert (server.fetches, server.ask()[1]) == (fetches, first)


def test_githubs_secret_is_not_gitlabs_token(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    remote.commit({"flows/echo.json": echo_flow(answer="one")})
    remote.push()
    with serving(remote, tmp_path, gitlab_webhook_token="a-gitlab-token") as server:
        refused = to_gitlab(server, "Push Hook", payload("gitlab", "push", ref="refs/heads/main"), token=SECRET)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "bad-signature"
        taken = to_gitlab(server, "Push Hook", payload("gitlab", "push"), token="a-gitlab-token")
        assert taken.status_code == 202


def test_guessing_gitlabs_token_is_braked(tmp_path: Path) -> None:
    """GitLab's token is compared as it is sent: a guesser gets ``guess_limit`` tries, then 429 until the window
    passes, even with the right token."""
    remote = Remote.create(tmp_path)
    remote.commit({"flows/echo.json": echo_flow(answer="one")})
    remote.push()
    with serving(remote, tmp_path, guess_limit=3) as server:
        body = payload("gitlab", "push")
        assert [to_gitlab(server, "Push Hook", body, token=f"guess-{n}").status_code for n in range(3)] == [401] * 3
        braked = to_gitlab(server, "Push Hook", body)
        assert braked.status_code == 429 and braked.json()["error"]["code"] == "too-many-failures"
        assert int(braked.headers["retry-after"]) >= 1
