"""StatusPublisher: deploy events written back to GitHub as commit statuses and deployments, off the deploy path.

Each event reaches one replica only (the store's once-claim that records it), which queues it here; an outbox sends
its updates in order, retrying with backoff. A deployment is found before it is made (GitHub lists them by commit and
environment, and ours carry a ``gitops-flow`` payload), so a retry after a lost answer never makes a second one. A
missing, refused or too weak token is a warning at start and in /readyz, never a crash: the server serves on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gitops_flow.exceptions import HostError, HostRejected
from gitops_flow.githost.deploys import CommitStatus, DeploymentUpdate, RefView, Translator, Update
from gitops_flow.githost.github import GitHub
from gitops_flow.githost.outbox import DEFAULT_BACKOFF, Backoff, Outbox
from gitops_flow.stores.events import DeployEvent

log = logging.getLogger("gitops_flow.server")
PAYLOAD_KEY = "gitops-flow"
_WHY = {
    401: "GitHub refused the token (401): it is wrong, expired or revoked",
    403: "GitHub refused the token (403): it may not read this repository",
    404: "GitHub does not show the repository to this token (404): check GITOPS_FLOW_GITHUB_REPO and its access",
}

_WRITE_WHY = {
    **_WHY,
    403: "GitHub refused the write (403): a fine-grained token or app needs 'Commit statuses' and 'Deployments' write",
}


@dataclass(slots=True)
class _Pending:
    """An event on its way: translated when first sent, then sent update by update (a retry resumes)."""

    event: DeployEvent
    updates: list[Update] | None = None
    done: int = 0


@dataclass(slots=True)
class _Check:
    problem: str | None = None
    checked: bool = False


class StatusPublisher:
    """Writes commit statuses (and, with ``deployments``, deployments) for the events it is given."""

    def __init__(
        self,
        github: GitHub,
        *,
        view: Callable[[], RefView],
        translator: Translator | None = None,
        deployments: bool = True,
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> None:
        self.github = github
        self._view = view
        self._translator = translator or Translator()
        self._deployments = deployments
        self._check = _Check()
        self.outbox: Outbox[_Pending] = Outbox(f"GitHub statuses of {github.repo}", self._send, backoff=backoff)

    def event(self, record: DeployEvent) -> None:
        """Queue what ``record`` means for GitHub; never waits."""
        self.outbox.put(_Pending(record))

    async def check(self) -> str | None:
        """Read the repository once with the token, and say (log and /readyz) why writes will fail if they will."""
        problem: str | None
        try:
            access = await self.github.access()
        except HostRejected as exc:
            problem = _WHY.get(exc.status or 0, str(exc))
        except HostError as exc:
            problem = f"GitHub could not be reached to check the token: {exc}"
        else:
            problem = access.problem()
        self._check.problem, self._check.checked = problem, True
        if problem is not None:
            log.warning("commit statuses and deployments on %s: %s", self.github.repo, problem)
        else:
            log.info("commit statuses and deployments go to GitHub repository %s", self.github.repo)
        return problem

    async def run(self) -> None:
        """Check the token, then send forever (the app's lifespan runs this as a task)."""
        await self.check()
        await self.outbox.run()

    def health(self) -> dict[str, Any]:
        health = self.outbox.health
        problem = self._check.problem if health.last_sent is None else None  # a write since the check settles it
        error = health.last_error or problem
        return {
            "repo": self.github.repo,
            "api": self.github.http.host,
            "deployments": self._deployments,
            "pending": self.outbox.pending,
            **health.as_dict(),
            "ok": error is None,
            "last_error": error,
        }

    async def _send(self, pending: _Pending) -> None:
        try:
            await self._write(pending)
        except HostRejected as exc:
            why = _WRITE_WHY.get(exc.status or 0)
            if why is None:
                raise
            raise HostRejected(f"{why} ({exc})", status=exc.status) from None

    async def _write(self, pending: _Pending) -> None:
        if pending.updates is None:
            pending.updates = self._translator.updates(pending.event, self._view())
        while pending.done < len(pending.updates):
            update = pending.updates[pending.done]
            if isinstance(update, CommitStatus):
                await self.github.create_status(
                    update.sha,
                    state=update.state,
                    context=update.context,
                    description=update.description,
                    target_url=update.target_url,
                )
            elif self._deployments:
                await self._deployment(update)
            pending.done += 1

    async def _deployment(self, update: DeploymentUpdate) -> None:
        found = [d for d in await self.github.deployments(sha=update.sha, environment=update.environment) if _ours(d)]
        if update.environment is None:  # every environment the commit went to: the newest deployment of each
            newest: dict[str, int] = {}
            for deployment in found:
                newest.setdefault(str(deployment.get("environment")), deployment["id"])
            targets = list(newest.values())
        elif found:
            targets = [found[0]["id"]]
        elif update.create:
            payload = {PAYLOAD_KEY: {"ref": update.environment, "event": update.state}}
            targets = [
                await self.github.create_deployment(
                    sha=update.sha,
                    environment=update.environment,
                    description=update.description,
                    production=update.production,
                    payload=payload,
                )
            ]
        else:
            targets = []
        for deployment_id in targets:
            await self.github.create_deployment_status(
                deployment_id,
                state=update.state,
                description=update.description,
                log_url=update.log_url,
                environment_url=update.environment_url,
            )


def _ours(deployment: Mapping[str, Any]) -> bool:
    payload = deployment.get("payload")
    return isinstance(payload, dict) and PAYLOAD_KEY in payload
