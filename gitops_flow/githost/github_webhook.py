"""GitHub webhooks: verify a delivery's signature and read what it asks of the server; no Git I/O.

A delivery is only ever a nudge (Flux's receiver): the server fetches and reads Git itself, so nothing in a body is
trusted beyond the ref name it uses to decide whether a fetch is worth starting.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from gitops_flow.exceptions import MalformedDelivery, SignatureMismatch

SIGNATURE_PREFIX = "sha256="
Action = Literal["pong", "fetch", "ignore"]
_HEADS, _TAGS = "refs/heads/", "refs/tags/"


def verify(secret: bytes, body: bytes, header: str | None) -> None:
    """Check ``X-Hub-Signature-256`` (``sha256=`` + hex HMAC-SHA256 of the raw body) in constant time.

    Raises SignatureMismatch when the header is missing, malformed or wrong; the message never holds the secret.
    """
    if not header:
        raise SignatureMismatch("the delivery has no X-Hub-Signature-256 header; set the webhook's secret on GitHub")
    if not header.startswith(SIGNATURE_PREFIX):
        raise SignatureMismatch("X-Hub-Signature-256 must start with 'sha256='")
    expected = SIGNATURE_PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), header.strip().encode("ascii", "replace")):
        raise SignatureMismatch("X-Hub-Signature-256 does not match the body: the secrets differ or the body changed")


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body`` (for tests, the demo and the benchmarks)."""
    return SIGNATURE_PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Delivery:
    """One verified delivery: its id, its event, and the ref it is about (a full ``refs/...`` name) if any."""

    id: str
    event: str
    ref: str | None = None

    @property
    def trigger(self) -> str:
        """How deploy history names what woke the server."""
        about = f" {self.ref}" if self.ref else ""
        return f"webhook {self.event}{about} (delivery {self.id})"

    def action(self, branch: str) -> tuple[Action, str]:
        """What the server does with it, and why: ``ping`` is answered, a change to the tracked branch or to any
        tag is fetched (tags route traffic), everything else is acknowledged and ignored."""
        if self.event == "ping":
            return "pong", "the webhook reaches this server"
        if self.ref is None:
            return "ignore", f"{self.event!r} events do not change what this server serves"
        if self.ref.startswith(_TAGS):
            return "fetch", f"tag {self.ref.removeprefix(_TAGS)!r} changed"
        if self.ref == _HEADS + branch:
            return "fetch", f"branch {branch!r} changed"
        return "ignore", f"{self.ref} is not the tracked branch {branch!r} or a tag"


def parse(event: str | None, delivery_id: str | None, body: bytes) -> Delivery:
    """The delivery a verified body and GitHub's headers describe; raises MalformedDelivery naming what is wrong."""
    if not event:
        raise MalformedDelivery("the delivery has no X-GitHub-Event header")
    if not delivery_id:
        raise MalformedDelivery("the delivery has no X-GitHub-Delivery header")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MalformedDelivery("the body is not JSON; set the webhook's content type to application/json") from None
    if not isinstance(payload, dict):
        raise MalformedDelivery("the body is not a JSON object")
    return Delivery(delivery_id, event, _ref(event, payload))


def _ref(event: str, payload: dict[str, Any]) -> str | None:
    """The full ref a push, create or delete event is about; None for other events."""
    if event == "push":
        ref = payload.get("ref")
        if not isinstance(ref, str) or not ref.startswith("refs/"):
            raise MalformedDelivery("a push event names its ref as 'refs/heads/…' or 'refs/tags/…'")
        return ref
    if event in ("create", "delete"):
        ref, kind = payload.get("ref"), payload.get("ref_type")
        if not isinstance(ref, str) or kind not in ("branch", "tag"):
            raise MalformedDelivery(f"a {event} event has a 'ref' and a 'ref_type' of 'branch' or 'tag'")
        return (_TAGS if kind == "tag" else _HEADS) + ref
    return None
