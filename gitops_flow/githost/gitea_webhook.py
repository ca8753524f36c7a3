"""Gitea and Forgejo webhooks: verify a delivery's signature and read what it asks of the server; no Git I/O.

Gitea signs the raw body with HMAC-SHA256 under the webhook's secret and sends the hex digest, without GitHub's
``sha256=``, in ``X-Gitea-Signature`` (Forgejo: ``X-Forgejo-Signature`` too). Its ``push``, ``create`` and ``delete``
events have GitHub's shapes, so they are read as GitHub's are (github_webhook.py). A ``secret`` field that old Gitea
versions put in bodies is never read.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from gitops_flow.exceptions import MalformedDelivery, SignatureMismatch
from gitops_flow.githost.github_webhook import Delivery, parse

_PREFIXES = ("x-gitea-", "x-forgejo-")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Gitea's header, or Forgejo's of the same name."""
    for prefix in _PREFIXES:
        value = headers.get(prefix + name)
        if value:
            return value
    return None


def verify(secret: bytes, body: bytes, headers: Mapping[str, str]) -> None:
    """Raises SignatureMismatch when the signature is missing, malformed or wrong (compared in constant time)."""
    given = _header(headers, "signature")
    if not given:
        raise SignatureMismatch("the delivery has no X-Gitea-Signature header; set the webhook's secret on Gitea")
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), given.strip().lower().encode("ascii", "replace")):
        raise SignatureMismatch("X-Gitea-Signature does not match the body: the secrets differ or the body changed")


def read(secret: bytes, body: bytes, headers: Mapping[str, str]) -> Delivery:
    """A verified delivery of Gitea or Forgejo; raises SignatureMismatch or MalformedDelivery."""
    verify(secret, body, headers)
    event = _header(headers, "event")
    delivery = _header(headers, "delivery")
    if not event:
        raise MalformedDelivery("the delivery has no X-Gitea-Event header")
    if not delivery:
        raise MalformedDelivery("the delivery has no X-Gitea-Delivery header")
    return parse(event, delivery, body)
