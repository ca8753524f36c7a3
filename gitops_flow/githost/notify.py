"""Notifications: each deploy event a sink wants, sent as a signed JSON document or a Slack-compatible message.

A JSON notification carries the event as /history shows it (already scrubbed of every secret the server knows),
with a sentence for people and a link. Headers: ``X-GitOps-Flow-Event`` (the kind), ``X-GitOps-Flow-Delivery`` (a
UUID, the same on every retry, so receivers can drop repeats) and, when the sink has a secret,
``X-GitOps-Flow-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`` (GitHub's scheme, so existing verifiers
work). Nothing secret is ever in a body: not the signing secret, not the sink's URL, not a token.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gitops_flow.githost.deploys import Links
from gitops_flow.githost.http import Outbound
from gitops_flow.githost.outbox import DEFAULT_BACKOFF, Backoff, Outbox
from gitops_flow.githost.sinks import SinkSpec
from gitops_flow.stores.events import DeployEvent, step_text

EVENT_HEADER = "x-gitops-flow-event"
DELIVERY_HEADER = "x-gitops-flow-delivery"
SIGNATURE_HEADER = "x-gitops-flow-signature-256"
_COLOURS = {"good": "#2eb886", "bad": "#d40e0d", "neutral": "#439fe0"}
_BAD = frozenset({"failed", "aborted", "yanked", "ref-refused", "rewritten"})
_GOOD = frozenset({"deployed", "rolled-back", "resumed", "tag-moved", "stepped"})


def sign(secret: bytes, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of the exact body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def describe(event: DeployEvent, branch: str) -> str:
    """One sentence on what happened, for people."""
    kind = str(event.get("event", ""))
    sha = _short(event.get("sha"))
    message = f": {event['message']}" if event.get("message") else ""
    if event["event"] == "deployed":
        failed = [str(f) for f in event.get("failed_flows") or []]
        kept = "kept its last good build" if len(failed) == 1 else "kept their last good builds"
        also = f"; {', '.join(failed)} {kept}" if failed else ""
        detail = f" ({event['detail']})" if event.get("detail") else ""
        return f"Deployed {sha} on {branch}{message}{detail}{also}"
    if event["event"] == "rolled-back":
        return (
            f"Rolled back {branch} with {sha}{message}: it serves the content of {_short(event.get('restores'))} again"
        )
    if event["event"] == "failed":
        problem = _problem(event.get("problems"))
        flow = event.get("flow")
        if isinstance(flow, str):
            serving = event.get("serving")
            keeps = f"; it keeps serving {_short(serving)}" if serving else "; it is not served"
            return f"{flow} failed at {sha}{message}: {problem}{keeps}"
        return f"{sha} failed as a whole{message}: {problem}; nothing of it is served"
    if event["event"] == "aborted" or event["event"] == "resumed":
        flow = event.get("flow") if isinstance(event.get("flow"), str) else None
        reason = event.get("reason")
        return f"{flow}'s canary on {event.get('ref')} ({sha}) {kind}" + (f": {reason}" if reason else "")
    if event["event"] == "stepped":
        return f"{event['flow']}'s canary on {event['ref']} ({sha}): {step_text(event)}"
    if event["event"] == "tag-moved":
        ref, before, after = event.get("ref"), event.get("before"), event.get("after")
        if not after:
            return f"Tag {ref} deleted (it pointed at {_short(before)})"
        if not before:
            return f"Tag {ref} created at {_short(after)}"
        return f"Tag {ref} moved from {_short(before)} to {_short(after)}: promoted"
    if kind == "yanked":
        return f"{sha} yanked: it is never served again"
    if kind == "built":
        return f"Built {sha}{message} (not deployed: a newer commit followed it)"
    if kind == "retired":
        return f"Retired {sha} from memory"
    told = event.get("detail")
    return f"{kind} {sha}" + (f": {told}" if told else "")


def json_body(
    event: Mapping[str, Any], *, delivery: str, summary: str, link: str | None, origin: Mapping[str, Any]
) -> bytes:
    """The JSON notification: ``delivery``, ``event``, ``summary``, ``url``, where it comes from, and the record."""
    document = {
        "delivery": delivery,
        "event": event.get("event"),
        "summary": summary,
        "url": link,
        **origin,
        "record": dict(event),
    }
    return orjson.dumps(document)


def slack_body(event: DeployEvent, *, summary: str, link: str | None, origin: Mapping[str, Any]) -> bytes:
    """A Slack-compatible message: ``text`` for notifications and clients without attachments, one attachment
    with a colour, the commit, ref and flow as fields, and the link (Slack, Mattermost, Rocket.Chat and Discord's
    ``/slack`` endpoint all read this shape)."""
    kind = str(event.get("event", ""))
    colour = _COLOURS["bad" if kind in _BAD else "good" if kind in _GOOD else "neutral"]
    fields = [
        {"title": title, "value": _escape(str(value)), "short": True}
        for title, value in (
            ("Commit", _short(event.get("after") or event.get("sha"))),
            ("Ref", event.get("ref") or origin.get("branch")),
            ("Flow", event.get("flow")),
            ("Author", event.get("author")),
        )
        if value
    ]
    attachment: dict[str, Any] = {
        "fallback": _escape(summary),
        "color": colour,
        "title": f"gitops-flow: {kind}",
        "text": _escape(summary),
        "fields": fields,
        "footer": "gitops-flow",
        "ts": int(float(event.get("time") or time.time())),
    }
    if link:
        attachment["title_link"] = link
    text = _escape(summary) + (f" <{link}|history>" if link else "")
    return orjson.dumps({"text": text, "attachments": [attachment]})


@dataclass(frozen=True, slots=True)
class Notification:
    """One event on its way to one sink: the body and headers are fixed once, so every retry sends the same."""

    sink: str
    delivery: str
    kind: str
    body: bytes
    headers: Mapping[str, str]


class Notifier:
    """Sends each event to every sink that wants it, through an outbox per sink (a slow receiver delays only its
    own notifications)."""

    def __init__(
        self,
        sinks: Sequence[SinkSpec],
        *,
        branch: str,
        links: Links,
        origin: Mapping[str, Any],
        client: Callable[[SinkSpec], Outbound],
        backoff: Backoff = DEFAULT_BACKOFF,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.sinks = {sink.name: sink for sink in sinks}
        self._branch = branch
        self._links = links
        self._origin = dict(origin)
        self._clients = {sink.name: client(sink) for sink in sinks}
        self._new_id = new_id
        self.outboxes = {
            sink.name: Outbox(f"notification sink {sink.name!r}", self._send, backoff=backoff) for sink in sinks
        }

    def event(self, record: DeployEvent) -> None:
        """Queue ``record`` for every sink that wants it; never waits."""
        for name, sink in self.sinks.items():
            if sink.wants(record):
                self.outboxes[name].put(self.notification(sink, record))

    def notification(self, sink: SinkSpec, record: DeployEvent) -> Notification:
        delivery = self._new_id()
        kind = str(record.get("event", ""))
        summary = describe(record, self._branch)
        sha = str(record.get("after") or record.get("sha") or "")
        link = self._links.status(sha, str(record.get("ref") or self._branch), str(record.get("flow") or ""))
        headers = {EVENT_HEADER: kind, DELIVERY_HEADER: delivery, "content-type": "application/json"}
        if sink.format == "slack":
            body = slack_body(record, summary=summary, link=link, origin=self._origin)
        else:
            body = json_body(record, delivery=delivery, summary=summary, link=link, origin=self._origin)
        if sink.secret is not None:
            headers[SIGNATURE_HEADER] = sign(sink.secret.get_secret_value().encode(), body)
        return Notification(sink.name, delivery, kind, body, headers)

    async def _send(self, item: Notification) -> None:
        await self._clients[item.sink].request("POST", "", content=item.body, headers=item.headers)

    def health(self) -> list[dict[str, Any]]:
        return [
            {"name": name, "format": self.sinks[name].format, "pending": box.pending, **box.health.as_dict()}
            for name, box in self.outboxes.items()
        ]

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()


def _short(sha: Any) -> str:
    return str(sha)[:7] if sha else "?"


def _problem(problems: Any) -> str:
    if not isinstance(problems, list) or not problems or not isinstance(problems[0], dict):
        return "no problem recorded"
    first = problems[0]
    where = str(first.get("file") or "") + (f":{first['line']}" if first.get("line") else "")
    text = f"{where} {first.get('code', '')}: {first.get('message', '')}".strip()
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return text + more


def _escape(text: str) -> str:
    """Slack's three control characters, escaped as its message format asks."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
