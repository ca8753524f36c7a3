"""The plan as one pull-request comment, updated in place: found by its marker (an HTML comment GitHub does not
show) among the comments the token itself wrote, edited when it is there, made when it is not, so a pull request
pushed ten times has one comment, current. A comment someone else wrote is never edited, whatever it holds: anyone
who may comment can write the marker."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gitops_flow.exceptions import HostUnavailable
from gitops_flow.githost.github import ACTIONS_BOT, HEADERS, GitHub
from gitops_flow.githost.http import Outbound
from gitops_flow.githost.outbox import Backoff
from gitops_flow.githost.repos import API_URL, check_repo

Outcome = Literal["created", "updated"]
RETRIES = Backoff(first=1.0, attempts=4)
_BOT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}\[bot\]$")


class NotAPullRequest(ValueError):
    """The workflow run is not for a pull request (a push, a schedule): there is nothing to comment on."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where the comment goes: a pull request of a repository, through an API, with a token."""

    api: str
    repo: str
    number: int
    token: str = ""
    app_bot: str = ACTIONS_BOT  # who an installation token writes as (GITOPS_FLOW_COMMENT_BOT)

    def __repr__(self) -> str:
        return f"Target({self.api!r}, {self.repo!r}, {self.number})"

    @classmethod
    def from_actions(cls, environ: Mapping[str, str]) -> Target:
        """The pull request a GitHub Actions run is for: GITHUB_REPOSITORY, GITHUB_API_URL, the event in
        GITHUB_EVENT_PATH, and the token in GITHUB_TOKEN; GITOPS_FLOW_COMMENT_BOT names the bot a GitHub App's
        installation token writes as (default github-actions[bot], GITHUB_TOKEN's). Raises NotAPullRequest, or
        ValueError naming what is missing."""
        missing = [name for name in ("GITHUB_TOKEN", "GITHUB_REPOSITORY", "GITHUB_EVENT_PATH") if not environ.get(name)]
        if missing:
            raise ValueError(f"commenting needs {', '.join(missing)} (GitHub Actions sets them; pass the token)")
        try:
            event = json.loads(Path(environ["GITHUB_EVENT_PATH"]).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read the event in GITHUB_EVENT_PATH: {exc}") from None
        pull = event.get("pull_request") if isinstance(event, dict) else None
        number = pull.get("number") if isinstance(pull, dict) else None
        if not isinstance(number, int):
            raise NotAPullRequest("this run is not for a pull request")
        bot = environ.get("GITOPS_FLOW_COMMENT_BOT") or ACTIONS_BOT
        if not _BOT.match(bot):
            raise ValueError(f"GITOPS_FLOW_COMMENT_BOT {bot!r} is not an app's bot login (NAME[bot])")
        return cls(
            environ.get("GITHUB_API_URL") or API_URL,
            check_repo(environ["GITHUB_REPOSITORY"]),
            number,
            environ["GITHUB_TOKEN"],
            bot,
        )


async def publish(
    github: GitHub,
    number: int,
    body: str,
    marker: str,
    *,
    app_bot: str = ACTIONS_BOT,
    backoff: Backoff = RETRIES,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Outcome:
    """Put ``body`` (which holds ``marker``) on pull request ``number``: update the comment the token wrote holding
    ``marker`` (GitHub.me: the token's user, or ``app_bot`` for an installation token), or make one. A failure that
    may pass is tried again; raises HostError (HostRejected: no permission) when it stays."""
    assert marker in body, "the body must carry its marker, or the next run cannot find it"
    for attempt in range(1, backoff.attempts + 1):
        try:
            found = await github.find_comment(number, marker, await github.me(app_bot))
            if found is not None:
                await github.update_comment(found, body)
                return "updated"
            await github.create_comment(number, body)
            return "created"
        except HostUnavailable as exc:
            if attempt == backoff.attempts:
                raise
            await sleep(max(backoff.delay(attempt), min(exc.retry_after or 0.0, 60.0)))
    raise AssertionError("unreachable")  # pragma: no cover


def post(target: Target, body: str, marker: str) -> Outcome:
    """``publish`` from synchronous code (the command line)."""

    async def run() -> Outcome:
        http = Outbound(target.api, token=lambda: target.token, headers=HEADERS)
        try:
            return await publish(GitHub(http, target.repo), target.number, body, marker, app_bot=target.app_bot)
        finally:
            await http.aclose()

    return asyncio.run(run())
