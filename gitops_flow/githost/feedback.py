"""Feedback: the server's deploy events carried back out, to GitHub (commit statuses, deployments) and to the
operator's notification sinks, as the settings configure them.

The reconciler hands each event it records (once across replicas) to ``event``, which only queues it; the sending
runs in tasks of its own (``run``), so no deploy and no request ever waits on GitHub or a receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gitops_flow.config import Settings
from gitops_flow.exceptions import HostRejected
from gitops_flow.githost.deploys import Links, RefView, Translator
from gitops_flow.githost.github import HEADERS, GitHub
from gitops_flow.githost.http import Outbound
from gitops_flow.githost.notify import Notifier
from gitops_flow.githost.outbox import Backoff, Outbox
from gitops_flow.githost.repos import repo_from_url
from gitops_flow.githost.sinks import SinkSpec
from gitops_flow.githost.statuses import StatusPublisher
from gitops_flow.stores.events import DeployEvent

log = logging.getLogger("gitops_flow.server")
DRAIN_SECONDS = 5.0  # at shutdown, how long queued statuses and notifications get to go out


class TokenFile:
    """A token read from a file at each use, so a rotated token (a mounted secret, a GitHub App's installation
    token refreshed beside the server) is picked up without a restart."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self) -> str | None:
        try:
            token = self.path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise HostRejected(f"cannot read the GitHub token file {self.path}: {reason}") from None
        return token or None


class Feedback:
    """The publisher of statuses (when a GitHub token and repository are configured) and the notifier (when sinks
    are); ``warnings`` says what is configured wrong, at start and in /readyz."""

    def __init__(self, publisher: StatusPublisher | None, notifier: Notifier | None, warnings: list[str]) -> None:
        self.publisher = publisher
        self.notifier = notifier
        self.warnings = warnings
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def configured(
        cls, settings: Settings, *, repo_url: str, view: Callable[[], RefView], origin: Mapping[str, Any]
    ) -> Feedback:
        """What ``settings`` ask for; a missing or unusable part is a warning (logged once here), never an error."""
        warnings: list[str] = []
        backoff = Backoff(first=settings.outbound_backoff, attempts=settings.outbound_attempts)
        links = Links(settings.public_url, settings.status_url)
        token: Callable[[], str | None] | None = None
        if settings.github_token is not None:
            value = settings.github_token.get_secret_value()
            token = lambda: value  # noqa: E731 - the token stays in this closure, not on an object's repr
        elif settings.github_token_file is not None:
            token = TokenFile(settings.github_token_file)
        publisher = None
        repo = settings.github_repo or repo_from_url(repo_url, settings.github_api)
        if token is not None and repo is None:
            warnings.append(
                "a GitHub token is set but the repository is not known: set GITOPS_FLOW_GITHUB_REPO=owner/name"
                " (it is read from the repository URL only when that is on github.com); no statuses are written"
            )
        elif token is not None and repo is not None:
            http = Outbound(settings.github_api, token=token, headers=HEADERS)
            publisher = StatusPublisher(
                GitHub(http, repo),
                view=view,
                translator=Translator(links),
                deployments=settings.github_deployments,
                backoff=backoff,
            )
        elif settings.github_repo is not None:
            warnings.append(
                "GITOPS_FLOW_GITHUB_REPO is set but no token: set GITOPS_FLOW_GITHUB_TOKEN or _TOKEN_FILE;"
                " no statuses are written"
            )
        notifier = None
        if settings.notifications:
            notifier = Notifier(
                settings.notifications,
                branch=settings.branch,
                links=links,
                origin=origin,
                client=_sink_client,
                backoff=backoff,
            )
        if (publisher is not None or notifier is not None) and not settings.public_url:
            warnings.append("GITOPS_FLOW_PUBLIC_URL is not set: statuses and notifications carry no link to the server")
        for warning in warnings:
            log.warning("%s", warning)
        return cls(publisher, notifier, warnings)

    def event(self, record: DeployEvent) -> None:
        """Queue a recorded deploy event for GitHub and the sinks; never waits, never raises."""
        if self.publisher is not None:
            self.publisher.event(record)
        if self.notifier is not None:
            self.notifier.event(record)

    def start(self) -> None:
        """Start the sending tasks (in the app's lifespan)."""
        if self.publisher is not None:
            self._tasks.append(asyncio.create_task(self.publisher.run(), name="GitHub statuses"))
        if self.notifier is not None:
            for name, outbox in self.notifier.outboxes.items():
                self._tasks.append(asyncio.create_task(outbox.run(), name=f"notifications to {name}"))

    async def close(self, drain: float = DRAIN_SECONDS) -> None:
        """Give what is queued ``drain`` seconds to go out, then stop the tasks and close the clients."""
        outboxes: list[Outbox[Any]] = [self.publisher.outbox] if self.publisher is not None else []
        outboxes += list(self.notifier.outboxes.values()) if self.notifier is not None else []
        if outboxes:
            await asyncio.wait([asyncio.ensure_future(o.drain(drain)) for o in outboxes])
        lost = sum(o.pending for o in outboxes)
        if lost:
            log.warning("stopping with %d statuses and notifications unsent", lost)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.publisher is not None:
            await self.publisher.github.http.aclose()
        if self.notifier is not None:
            await self.notifier.aclose()

    def health(self) -> dict[str, Any]:
        """For /readyz: how writing to GitHub and notifying goes; it never makes the server unready."""
        return {
            "github": self.publisher.health() if self.publisher is not None else None,
            "notifications": self.notifier.health() if self.notifier is not None else [],
            "warnings": list(self.warnings),
        }


def _sink_client(sink: SinkSpec) -> Outbound:
    return Outbound(sink.url.get_secret_value())
