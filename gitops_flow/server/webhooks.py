"""The Git hosts' webhooks: GitHub's, GitLab's and Gitea's (and Forgejo's), each verified its host's way, then
deduplicated and turned into one nudge to fetch, the same for all (SPEC 5; Flux's notification-controller receivers).

A delivery only wakes the fetcher, on this replica and (through the store) on every other; the fetch reads Git, never
the body. The answer comes at once (202), before the fetch; a burst of deliveries makes one fetch.

Each host's endpoint is on only when its own secret is set (GITOPS_FLOW_WEBHOOK_SECRET for GitHub,
GITOPS_FLOW_GITLAB_WEBHOOK_TOKEN for GitLab, GITOPS_FLOW_GITEA_WEBHOOK_SECRET for Gitea and Forgejo), so no host's
secret opens another's endpoint. A wrong signature or token counts against the sender's address on the brake that
guards every token (brake.py). A delivery is acted on once: its id is claimed, and so is its body's hash, so a signed
body replayed under a new delivery id is a duplicate too (GitHub's and GitLab's own retries keep their id).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import Response

from gitops_flow.config import Settings
from gitops_flow.exceptions import SignatureMismatch, WebhookError
from gitops_flow.githost import gitea_webhook as gitea
from gitops_flow.githost import github_webhook as webhook
from gitops_flow.githost import gitlab_webhook as gitlab
from gitops_flow.githost.github_webhook import Delivery
from gitops_flow.server.edge import RequestError, client_address, json_response, read_body
from gitops_flow.server.endpoints import get_deps

log = logging.getLogger("gitops_flow.server")

DELIVERY_TTL = 7 * 24 * 3600.0  # GitHub keeps deliveries for redelivery for about a week
_KNOWN_EVENTS = ("ping", "push", "create", "delete")  # metric labels come from this list, never from a header


BODY_PREFIX = "body:"  # a delivery's body hash, claimed beside its id


@dataclass(frozen=True, slots=True)
class Host:
    """How one Git host's deliveries are read: ``read(secret, body, headers)`` verifies and parses one (raises
    WebhookError); ``event`` is the header naming its event, for metrics; ``claim`` prefixes its delivery ids;
    ``secret`` reads its own secret from the settings, named ``setting`` (None: the endpoint is off)."""

    name: str
    event: tuple[str, ...]
    read: Callable[[bytes, bytes, Mapping[str, str]], Delivery]
    secret: Callable[[Settings], SecretStr | None]
    setting: str
    claim: str = ""


def _github(secret: bytes, body: bytes, headers: Mapping[str, str]) -> Delivery:
    webhook.verify(secret, body, headers.get("x-hub-signature-256"))
    return webhook.parse(headers.get("x-github-event"), headers.get("x-github-delivery"), body)


GITHUB = Host("GitHub", ("x-github-event",), _github, lambda s: s.webhook_secret, "GITOPS_FLOW_WEBHOOK_SECRET")
GITLAB = Host(
    "GitLab", (), gitlab.read, lambda s: s.gitlab_webhook_token, "GITOPS_FLOW_GITLAB_WEBHOOK_TOKEN", "gitlab:"
)
GITEA = Host(
    "Gitea",
    ("x-gitea-event", "x-forgejo-event"),
    gitea.read,
    lambda s: s.gitea_webhook_secret,
    "GITOPS_FLOW_GITEA_WEBHOOK_SECRET",
    "gitea:",
)


async def github_webhook(request: Request) -> Response:
    """``POST /webhooks/github``: ``X-Hub-Signature-256``, ``X-GitHub-Event``, ``X-GitHub-Delivery``."""
    return await receive(request, GITHUB)


async def gitlab_webhook(request: Request) -> Response:
    """``POST /webhooks/gitlab``: ``X-Gitlab-Token``, ``X-Gitlab-Event`` (push and tag push)."""
    return await receive(request, GITLAB)


async def gitea_webhook(request: Request) -> Response:
    """``POST /webhooks/gitea``: ``X-Gitea-Signature`` (or Forgejo's), ``X-Gitea-Event``, ``X-Gitea-Delivery``."""
    return await receive(request, GITEA)


async def receive(request: Request, host: Host) -> Response:
    """Verify, deduplicate, nudge: what every host's delivery goes through."""
    deps = get_deps(request)
    header = next((request.headers.get(name, "") for name in host.event if request.headers.get(name)), "")
    label = header if header in _KNOWN_EVENTS else "push" if host is GITLAB else "other"
    secret = host.secret(deps.settings)
    if secret is None:
        deps.metrics.delivery(label, "refused")
        message = f"{host.name} webhooks are off: set {host.setting} to the webhook's secret"
        raise RequestError(403, "webhook-disabled", message)
    client = client_address(request)
    assert deps.brake is not None, "the app's lifespan gives the handlers a brake"
    await deps.brake.admit(client)  # a sender with too many wrong signatures is refused before any comparison
    body = bytes(await read_body(request))
    try:
        delivery = host.read(secret.get_secret_value().encode(), body, request.headers)
    except WebhookError as exc:
        deps.metrics.delivery(label, "refused")
        log.warning("%s webhook delivery from %s refused: %s", host.name, client, exc)
        if isinstance(exc, SignatureMismatch):
            await deps.brake.failed(client)
        status, code = (401, "bad-signature") if isinstance(exc, SignatureMismatch) else (400, "bad-delivery")
        raise RequestError(status, code, str(exc)) from None
    label = delivery.event if delivery.event in _KNOWN_EVENTS else "other"
    if not await deps.store.claim_delivery(host.claim + delivery.id, DELIVERY_TTL):
        deps.metrics.delivery(label, "duplicate")
        return json_response({"status": "duplicate", "delivery": delivery.id}, 202)
    digest = hashlib.sha256(body).hexdigest()
    if not await deps.store.claim_delivery(host.claim + BODY_PREFIX + digest, DELIVERY_TTL):
        deps.metrics.delivery(label, "duplicate")  # a body acted on already, under another delivery id: a replay
        log.warning("%s webhook delivery %s from %s replays a body already delivered", host.name, delivery.id, client)
        detail = "this body was delivered already under another delivery id: nothing is done"
        return json_response({"status": "duplicate", "detail": detail, "delivery": delivery.id}, 202)
    action, why = delivery.action(deps.settings.branch)
    deps.metrics.delivery(label, action)
    if action == "fetch":
        trigger = delivery.trigger if host is GITHUB else f"{host.name} {delivery.trigger}"
        deps.reconciler.request(trigger)
        await deps.store.publish(f"{deps.replica} {trigger}")
    answer = {"pong": "pong", "fetch": "fetching", "ignore": "ignored"}[action]
    return json_response({"status": answer, "detail": why, "delivery": delivery.id}, 200 if action == "pong" else 202)
