"""GitLab webhooks: check a delivery's secret token and read what it asks of the server; no Git I/O.

GitLab does not sign a body: it sends the webhook's secret token as it is, in ``X-Gitlab-Token``, which is compared in
constant time. Push and tag push events (``Push Hook``, ``Tag Push Hook``, and the same kinds from a ``System Hook``)
name a full ``refs/...`` ref; every other event is acknowledged and ignored. A delivery is named by GitLab's
``Idempotency-Key`` (the same on every retry, GitLab 17.4 and later), else ``X-Gitlab-Event-UUID``, else a hash of
the body, so that a retried delivery is recognised as the one already acted on.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import orjson

from gitops_flow.exceptions import MalformedDelivery, SignatureMismatch
from gitops_flow.githost.github_webhook import Delivery

TOKEN_HEADER = "x-gitlab-token"
EVENT_HEADER = "x-gitlab-event"
_PUSH_KINDS = ("push", "tag_push")
_HOOKS = ("Push Hook", "Tag Push Hook", "System Hook")


def verify(secret: bytes, headers: Mapping[str, str]) -> None:
    """Raises SignatureMismatch when ``X-Gitlab-Token`` is missing or not the secret; never names the secret."""
    given = headers.get(TOKEN_HEADER)
    if not given:
        raise SignatureMismatch("the delivery has no X-Gitlab-Token header; set the webhook's secret token on GitLab")
    if not hmac.compare_digest(secret, given.encode("utf-8", "replace")):
        raise SignatureMismatch("X-Gitlab-Token is not the secret this server was given")


def read(secret: bytes, body: bytes, headers: Mapping[str, str]) -> Delivery:
    """A verified delivery of GitLab; raises SignatureMismatch or MalformedDelivery naming what is wrong."""
    verify(secret, headers)
    hook = headers.get(EVENT_HEADER)
    if not hook:
        raise MalformedDelivery("the delivery has no X-Gitlab-Event header")
    payload = _object(body)
    identity = headers.get("idempotency-key") or headers.get("x-gitlab-event-uuid")
    delivery = identity or "sha256:" + hashlib.sha256(body).hexdigest()[:32]
    kind = payload.get("object_kind")
    if hook not in _HOOKS or kind not in _PUSH_KINDS:
        return Delivery(delivery, "other")
    ref = payload.get("ref")
    if not isinstance(ref, str) or not ref.startswith("refs/"):
        raise MalformedDelivery(f"a {kind} event names its ref as 'refs/heads/…' or 'refs/tags/…'")
    return Delivery(delivery, "push", ref)


def _object(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MalformedDelivery("the body is not JSON") from None
    if not isinstance(payload, dict):
        raise MalformedDelivery("the body is not a JSON object")
    return payload
