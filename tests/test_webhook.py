"""github_webhook.py: GitHub's signature, and what each real delivery (tests/data/github-webhooks) asks of the
server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gitops_flow.exceptions import MalformedDelivery, SignatureMismatch
from gitops_flow.githost import github_webhook as webhook

FIXTURES = Path(__file__).parent / "data" / "github-webhooks"
SECRET = b"It's a Secret to Everybody"


def fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def test_githubs_documented_test_vector() -> None:
    header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert webhook.sign(SECRET, b"Hello, World!") == header
    webhook.verify(SECRET, b"Hello, World!", header)


@pytest.mark.parametrize(
    "header, message",
    [
        (None, "no X-Hub-Signature-256 header"),
        ("", "no X-Hub-Signature-256 header"),
        ("sha1=757107ea0eb2509fc211221cce984b8a37570b6d", "must start with 'sha256='"),
        ("sha256=" + "0" * 64, "does not match"),
        ("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1", "does not match"),
        ("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17é", "does not match"),
    ],
    ids=["missing", "empty", "sha1", "wrong", "truncated", "non-ascii"],
)
def test_a_bad_signature_is_refused_without_revealing_the_secret(header: str | None, message: str) -> None:
    with pytest.raises(SignatureMismatch, match=message) as caught:
        webhook.verify(SECRET, b"Hello, World!", header)
    assert "Secret to Everybody" not in str(caught.value)


def test_a_signature_is_of_the_exact_bytes() -> None:
    body = fixture("push")
    header = webhook.sign(SECRET, body)
    webhook.verify(SECRET, body, header)
    for changed in (body + b"\n", body.replace(b"simple-tag", b"simple-tah"), body[:-1]):
        with pytest.raises(SignatureMismatch):
            webhook.verify(SECRET, changed, header)
    with pytest.raises(SignatureMismatch):
        webhook.verify(b"another secret", body, header)


@pytest.mark.parametrize(
    "name, event, ref, action",
    [
        ("ping", "ping", None, "pong"),
        ("ping-with-app_id", "ping", None, "pong"),
        ("push", "push", "refs/tags/simple-tag", "fetch"),  # a tag deleted by a push
        ("push-1", "push", "refs/tags/simple-tag", "fetch"),
        ("push-with-new-branch", "push", "refs/heads/master", "ignore"),  # not the tracked branch
        ("create", "create", "refs/tags/simple-tag", "fetch"),
        ("delete", "delete", "refs/tags/simple-tag", "fetch"),
    ],
)
def test_each_real_delivery_asks_what_its_event_needs(name: str, event: str, ref: str | None, action: str) -> None:
    delivery = webhook.parse(event, "72d3162e-cc78-11e3-81ab-4c9367dc0958", fixture(name))
    assert delivery.ref == ref
    assert delivery.action("main")[0] == action
    assert "72d3162e-cc78-11e3-81ab-4c9367dc0958" in delivery.trigger


def test_a_push_to_the_tracked_branch_fetches_and_other_branches_are_ignored() -> None:
    body = fixture("push-with-new-branch")
    delivery = webhook.parse("push", "d1", body)
    assert delivery.action("master") == ("fetch", "branch 'master' changed")
    action, why = delivery.action("main")
    assert action == "ignore" and "refs/heads/master" in why


def test_a_branch_created_or_deleted_matters_only_when_it_is_the_tracked_one() -> None:
    payload = json.loads(fixture("create"))
    payload.update(ref="main", ref_type="branch")
    delivery = webhook.parse("create", "d1", json.dumps(payload).encode())
    assert delivery.ref == "refs/heads/main"
    assert delivery.action("main")[0] == "fetch"
    assert delivery.action("production")[0] == "ignore"


def test_other_events_are_acknowledged_and_ignored() -> None:
    delivery = webhook.parse("issues", "d1", b'{"action": "opened"}')
    assert delivery.ref is None
    action, why = delivery.action("main")
    assert action == "ignore" and "'issues'" in why


@pytest.mark.parametrize(
    "event, delivery_id, body, message",
    [
        (None, "d1", b"{}", "no X-GitHub-Event"),
        ("push", None, b"{}", "no X-GitHub-Delivery"),
        ("push", "d1", b"payload=%7B%7D", "not JSON; set the webhook's content type to application/json"),
        ("push", "d1", b"[1, 2]", "not a JSON object"),
        ("push", "d1", b'{"ref": 7}', "a push event names its ref"),
        ("push", "d1", b'{"ref": "main"}', "a push event names its ref"),
        ("create", "d1", b'{"ref": "v1", "ref_type": "repository"}', "'ref_type' of 'branch' or 'tag'"),
        ("delete", "d1", b'{"ref_type": "tag"}', "a delete event has a 'ref'"),
    ],
    ids=[
        "no-event",
        "no-delivery-id",
        "form-encoded",
        "array",
        "ref-not-text",
        "ref-not-full",
        "bad-ref-type",
        "no-ref",
    ],
)
def test_a_malformed_delivery_says_what_is_wrong(
    event: str | None, delivery_id: str | None, body: bytes, message: str
) -> None:
    with pytest.raises(MalformedDelivery, match=message.replace("(", r"\(")):
        webhook.parse(event, delivery_id, body)
