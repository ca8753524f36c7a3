"""Notifications: sinks configured by the operator (githost/sinks.py), the messages (githost/notify.py), and a real
`gitops-flow serve` delivering them, signed and retried, to receivers on loopback."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops_flow.config import Settings
from gitops_flow.exceptions import ConfigError
from gitops_flow.githost.deploys import Links
from gitops_flow.githost.notify import Notifier, describe, sign, slack_body
from gitops_flow.githost.sinks import SinkSpec
from tests.gitrepo import Remote
from tests.process import ADMIN_TOKEN, serve_process
from tests.served import echo_flow, wait_until
from tests.test_outbound import Script, receiver

SIGNING = "notify-signing-secret-0123"
BROKEN = json.dumps({"version": 1, "name": "other", "nodes": [{"id": "x", "component": "NoSuchThing"}]})


# -- configuration -------------------------------------------------------------------------------------------------


def test_sinks_come_from_a_file_and_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("from-a-file\n")
    config = {
        "notifications": [
            {"name": "ops", "url_env": "OPS_URL", "secret_file": str(tmp_path / "secret"), "events": ["failed"]},
            {"name": "chat", "url": "https://hooks.slack.example/T/B/X", "format": "slack", "flows": "a, b"},
        ]
    }
    (tmp_path / "notify.yaml").write_text(yaml.safe_dump(config))
    environ = {
        "GITOPS_FLOW_NOTIFY_FILE": str(tmp_path / "notify.yaml"),
        "OPS_URL": "https://ops.example/hook",
        "GITOPS_FLOW_NOTIFY_URL": "http://127.0.0.1:9/x",
        "GITOPS_FLOW_NOTIFY_EVENTS": "deployed,aborted",
    }
    ops, chat, env = Settings.from_env(environ).notifications
    assert (ops.name, ops.url.get_secret_value(), ops.events) == ("ops", "https://ops.example/hook", ("failed",))
    assert ops.secret is not None and ops.secret.get_secret_value() == "from-a-file"
    assert (chat.format, chat.flows, chat.secret) == ("slack", ("a", "b"), None)
    assert (env.name, env.events, env.format) == ("env", ("deployed", "aborted"), "json")
    assert "hooks.slack.example" not in repr(chat)  # the URL is a SecretStr


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"name": "x", "url": "ftp://h/"}, "url: the URL is an http:// or https:// address"),
        ({"name": "x", "url": "https://h/", "events": ["deploy"]}, "events: unknown event kinds deploy"),
        ({"name": "x", "url": "https://h/", "format": "teams"}, "format: Input should be 'json' or 'slack'"),
        ({"name": "x", "url_env": "NOT_SET"}, "url_env names NOT_SET, which is not set"),
        ({"name": "x", "url": "https://h/", "url_env": "A"}, "give one of url, url_env"),
        ({"name": "x", "url": "https://h/", "flows": ["Bad Name"]}, "flows: 'Bad Name' are not flow names"),
        ({"name": "x", "url": "https://h/", "colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"url": "https://h/"}, "name: Field required"),
    ],
    ids=["scheme", "event", "format", "unset-env", "two-urls", "flow", "unknown-key", "no-name"],
)
def test_a_wrong_sink_is_refused_naming_the_file_sink_and_field(
    tmp_path: Path, entry: dict[str, Any], message: str
) -> None:
    path = tmp_path / "notify.yaml"
    path.write_text(yaml.safe_dump({"notifications": [entry]}))
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"GITOPS_FLOW_NOTIFY_FILE": str(path)})
    assert str(caught.value).startswith(f"{path}: notifications[0]: ")
    assert message in str(caught.value)


def test_a_wrong_url_is_not_repeated_in_the_error() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"GITOPS_FLOW_NOTIFY_URL": "hooks.slack.example/T/B/secretpart"})
    assert "secretpart" not in str(caught.value)


def test_sink_names_are_distinct(tmp_path: Path) -> None:
    path = tmp_path / "n.yaml"
    path.write_text(yaml.safe_dump({"notifications": [{"name": "a", "url": "https://h/"}] * 2}))
    with pytest.raises(ConfigError, match="'a'|a is used twice"):
        Settings.from_env({"GITOPS_FLOW_NOTIFY_FILE": str(path)})


def test_the_serve_command_refuses_a_wrong_notification_file(tmp_path: Path) -> None:
    from gitops_flow.cli.main import main

    path = tmp_path / "n.yaml"
    path.write_text("notifications: {}\n")
    assert main(["serve", "--repo", str(tmp_path)], environ={"GITOPS_FLOW_NOTIFY_FILE": str(path)}) == 2


@pytest.mark.parametrize(
    "event, wanted",
    [
        ({"event": "failed", "flow": "a"}, True),
        ({"event": "failed", "flow": "c"}, False),
        ({"event": "deployed", "changed": ["c", "b"]}, True),
        ({"event": "deployed", "changed": ["c"], "failed_flows": ["a"]}, True),
        ({"event": "deployed", "changed": ["c"]}, False),
        ({"event": "tag-moved", "ref": "stable"}, True),  # names no flow: it concerns every flow
        ({"event": "retired"}, False),  # not a kind the sink takes
    ],
)
def test_a_sink_takes_the_kinds_and_flows_it_names(event: dict[str, Any], wanted: bool) -> None:
    sink = SinkSpec(name="s", url="https://h/", flows=("a", "b"), events=("failed", "deployed", "tag-moved"))
    assert sink.wants(event) is wanted


# -- messages ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event, sentence",
    [
        ({"event": "deployed", "sha": "1234567890", "message": "m"}, "Deployed 1234567 on main: m"),
        (
            {"event": "deployed", "sha": "1234567890", "failed_flows": ["a"]},
            "Deployed 1234567 on main; a kept its last good build",
        ),
        (
            {
                "event": "failed",
                "sha": "1234567890",
                "flow": "a",
                "serving": "abcdef0123",
                "problems": [{"file": "flows/a.json", "line": 3, "code": "bad-param", "message": "no"}],
            },
            "a failed at 1234567: flows/a.json:3 bad-param: no; it keeps serving abcdef0",
        ),
        (
            {"event": "aborted", "sha": "1234567", "flow": "a", "ref": "main", "reason": "p99"},
            "a's canary on main (1234567) aborted: p99",
        ),
        (
            {"event": "tag-moved", "sha": "b", "ref": "stable", "before": "a" * 9, "after": "b" * 9},
            "Tag stable moved from aaaaaaa to bbbbbbb: promoted",
        ),
        ({"event": "yanked", "sha": "1234567890"}, "1234567 yanked: it is never served again"),
    ],
    ids=["deployed", "deployed-with-failures", "failed", "aborted", "promoted", "yanked"],
)
def test_each_event_is_one_sentence(event: dict[str, Any], sentence: str) -> None:
    assert describe(event, "main") == sentence


def test_a_slack_message_escapes_what_slack_reads_as_markup() -> None:
    event = {"event": "deployed", "sha": "1234567890", "message": "<!channel> & friends", "time": 1.0}
    body = json.loads(slack_body(event, summary=describe(event, "main"), link="https://x/h", origin={}))
    assert body["text"] == "Deployed 1234567 on main: &lt;!channel&gt; &amp; friends <https://x/h|history>"
    attachment = body["attachments"][0]
    assert attachment["color"] == "#2eb886" and attachment["title_link"] == "https://x/h"
    assert {"title": "Commit", "value": "1234567", "short": True} in attachment["fields"]


def test_a_notification_is_fixed_once_so_a_retry_sends_the_same() -> None:
    sink = SinkSpec(name="s", url="https://h/", secret=SIGNING)
    notifier = Notifier([sink], branch="main", links=Links(), origin={}, client=lambda s: None)  # type: ignore[arg-type,return-value]
    made = notifier.notification(sink, {"event": "deployed", "sha": "1" * 40})
    assert made.headers["x-gitops-flow-signature-256"] == sign(SIGNING.encode(), made.body)
    assert json.loads(made.body)["delivery"] == made.headers["x-gitops-flow-delivery"] == made.delivery


# -- a real server -------------------------------------------------------------------------------------------------


def verified(headers: dict[str, str], body: bytes, secret: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers.get("x-gitops-flow-signature-256", ""))


def test_a_served_deploy_notifies_each_sink_as_it_asks(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    first = remote.commit({"flows/echo.json": echo_flow("echo"), "flows/other.json": echo_flow("other")}, "first")
    remote.push()
    ops, chat = Script((503, {}, b""), (503, {"retry-after": "0"}, b"")), Script()
    with receiver(ops) as ops_url, receiver(chat) as chat_url:
        config = {
            "notifications": [
                {"name": "ops", "url": ops_url + "/hooks/gitops", "secret_env": "OPS_SECRET"},
                {
                    "name": "chat",
                    "url": chat_url + "/T0/B0/chatsecret",
                    "format": "slack",
                    "events": ["failed"],
                    "flows": ["other"],
                },
            ]
        }
        (tmp_path / "notify.yaml").write_text(yaml.safe_dump(config))
        env = {
            "GITOPS_FLOW_NOTIFY_FILE": str(tmp_path / "notify.yaml"),
            "OPS_SECRET": SIGNING,
            "GITOPS_FLOW_PUBLIC_URL": "https://flows.example.com",
            "GITOPS_FLOW_OUTBOUND_BACKOFF": "0.05",
        }
        with serve_process(remote, tmp_path, env=env) as server:
            # the first notification (deployed) met two outages, then went through, the same each time
            wait_until(lambda: len(ops.requests) >= 3, what="the first notification")
            bodies = [body for _, _, body in ops.requests[:3]]
            assert bodies[0] == bodies[1] == bodies[2]
            ids = {headers["x-gitops-flow-delivery"] for _, headers, _ in ops.requests[:3]}
            assert len(ids) == 1
            path, headers, body = ops.requests[2]
            assert path == "/hooks/gitops" and headers["x-gitops-flow-event"] == "deployed"
            assert verified(headers, body, SIGNING)
            document = json.loads(body)
            assert document["event"] == "deployed" and document["record"]["sha"] == first
            assert document["summary"] == f"Deployed {first[:7]} on main: first"
            assert document["url"] == "https://flows.example.com/ui/history?ref=main"
            assert (document["server"], document["branch"]) == ("https://flows.example.com", "main")

            # a commit whose message quotes secrets the server knows; it breaks one flow
            message = f"break other (admin {ADMIN_TOKEN}, signing {SIGNING})"
            broken = remote.commit({"flows/other.json": BROKEN, "flows/echo.json": echo_flow("echo", "2")}, message)
            remote.push()
            server.reconcile()
            wait_until(lambda: len(chat.requests) == 1, what="the chat's one notification")
            wait_until(lambda: any(b"Deployed " + broken[:7].encode() in b for _, _, b in ops.requests), what="ops")
            health = server.client.get("/readyz").json()["notifications"]
        kinds = [h["x-gitops-flow-event"] for _, h, _ in ops.requests[2:]]
        assert kinds == ["deployed", "failed", "deployed"]
        assert all(verified(h, b, SIGNING) for _, h, b in ops.requests)
        _, chat_headers, chat_body = chat.requests[0]
        assert chat_headers["x-gitops-flow-event"] == "failed" and "x-gitops-flow-signature-256" not in chat_headers
        slack = json.loads(chat_body)
        assert slack["text"].startswith(f"other failed at {broken[:7]}: break other")
        assert "unknown-component" in slack["text"]
        everything = b"".join(b for _, _, b in ops.requests + chat.requests) + json.dumps(health).encode()
        for secret in (ADMIN_TOKEN, SIGNING, "chatsecret", "/hooks/gitops"):
            assert secret.encode() not in everything
        assert b"<$env:GITOPS_FLOW_ADMIN_TOKEN>" in everything
        assert {h["name"]: (h["ok"], h["sent"], h["pending"]) for h in health} == {
            "ops": (True, 3, 0),
            "chat": (True, 1, 0),
        }
