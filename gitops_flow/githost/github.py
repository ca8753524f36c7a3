"""GitHub's REST API, the calls gitops-flow makes: the repository (to check the token), commit statuses,
deployments and their statuses, and issue comments (the plan on a pull request). Requests follow GitHub's published
OpenAPI description (the tests check each one against it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gitops_flow.exceptions import HostRejected
from gitops_flow.githost.http import Outbound, Reply
from gitops_flow.githost.repos import check_repo

API_VERSION = "2022-11-28"
HEADERS = {"accept": "application/vnd.github+json", "x-github-api-version": API_VERSION}
MAX_DESCRIPTION = 140  # GitHub refuses longer status descriptions (422)
MAX_PAGES = 20  # pages of 100 read when looking for something (a comment, a deployment)


def shorten(text: str, limit: int = MAX_DESCRIPTION) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


ACTIONS_BOT = "github-actions[bot]"  # who writes what GitHub Actions' GITHUB_TOKEN writes


@dataclass(frozen=True, slots=True)
class Author:
    """Who wrote a comment, as GitHub names them: a login, and its numeric id when known (None: the login alone)."""

    login: str
    id: int | None = None

    def wrote(self, comment: dict[str, Any]) -> bool:
        """Whether ``comment`` (an issue comment as GitHub lists it) is this author's."""
        user = comment.get("user")
        if not isinstance(user, dict) or user.get("login") != self.login:
            return False
        return self.id is None or user.get("id") == self.id


@dataclass(frozen=True, slots=True)
class Access:
    """What the token may do with the repository, as far as GitHub says: ``push`` from the repository's
    ``permissions``, and the OAuth scopes of a classic token (None for other kinds of token)."""

    push: bool | None
    scopes: frozenset[str] | None

    def problem(self) -> str | None:
        """Why the token cannot write statuses and deployments, when GitHub's answer shows it; None otherwise."""
        if self.push is False:
            return "the token can read the repository but not write to it (statuses and deployments need write)"
        if self.scopes is not None and not (
            {"repo"} <= self.scopes or {"repo:status", "repo_deployment"} <= self.scopes
        ):
            return "the classic token lacks the 'repo' scope (or 'repo:status' and 'repo_deployment')"
        return None


class GitHub:
    """The REST calls on one repository (``owner/name``) through an Outbound client of the API."""

    def __init__(self, http: Outbound, repo: str) -> None:
        self.http = http
        self.repo = check_repo(repo)
        self._base = f"/repos/{repo}"

    def __repr__(self) -> str:
        return f"GitHub({self.http.host!r}, {self.repo!r})"

    async def access(self) -> Access:
        """Read the repository: raises HostRejected for a bad token (401) or a repository it cannot see (404)."""
        reply = await self.http.request("GET", self._base, headers=HEADERS)
        permissions = reply.body.get("permissions") if isinstance(reply.body, dict) else None
        push = permissions.get("push") if isinstance(permissions, dict) else None
        raw = reply.headers.get("x-oauth-scopes")
        scopes = frozenset(s.strip() for s in raw.split(",") if s.strip()) if raw is not None else None
        return Access(push if isinstance(push, bool) else None, scopes)

    async def create_status(
        self, sha: str, *, state: str, context: str, description: str, target_url: str | None = None
    ) -> None:
        body: dict[str, Any] = {"state": state, "context": context, "description": shorten(description)}
        if target_url:
            body["target_url"] = target_url
        await self.http.request("POST", f"{self._base}/statuses/{sha}", json=body, headers=HEADERS)

    async def deployments(self, *, sha: str, environment: str | None = None) -> list[dict[str, Any]]:
        """Deployments of ``sha`` (to ``environment``), newest first, as GitHub lists them (one page of 100)."""
        params: dict[str, str | int] = {"sha": sha, "per_page": 100}
        if environment is not None:
            params["environment"] = environment
        reply = await self.http.request("GET", f"{self._base}/deployments", params=params, headers=HEADERS)
        return [d for d in _items(reply) if isinstance(d.get("id"), int)]

    async def create_deployment(
        self, *, sha: str, environment: str, description: str, production: bool, payload: dict[str, Any]
    ) -> int:
        """A deployment of ``sha`` to ``environment``, created as a record only: GitHub merges nothing and checks no
        status first (``auto_merge`` false, no ``required_contexts``). Returns its id."""
        body = {
            "ref": sha,
            "task": "deploy",
            "auto_merge": False,
            "required_contexts": [],
            "environment": environment,
            "description": shorten(description),
            "production_environment": production,
            "transient_environment": False,
            "payload": payload,
        }
        reply = await self.http.request("POST", f"{self._base}/deployments", json=body, headers=HEADERS)
        if reply.status != 201 or not isinstance(reply.body, dict) or not isinstance(reply.body.get("id"), int):
            raise HostRejected(
                f"POST {self.http.host} answered {reply.status} without a deployment", status=reply.status
            )
        deployment_id: int = reply.body["id"]
        return deployment_id

    async def create_deployment_status(
        self,
        deployment_id: int,
        *,
        state: str,
        description: str,
        log_url: str | None = None,
        environment_url: str | None = None,
    ) -> None:
        body: dict[str, Any] = {"state": state, "description": shorten(description), "auto_inactive": True}
        if log_url:
            body["log_url"] = log_url
        if environment_url:
            body["environment_url"] = environment_url
        path = f"{self._base}/deployments/{deployment_id}/statuses"
        await self.http.request("POST", path, json=body, headers=HEADERS)

    async def deployment_state(self, deployment_id: int) -> str | None:
        """The state of a deployment's latest status, None when it has none."""
        path = f"{self._base}/deployments/{deployment_id}/statuses"
        reply = await self.http.request("GET", path, params={"per_page": 1}, headers=HEADERS)
        statuses = _items(reply)
        state = statuses[0].get("state") if statuses else None
        return state if isinstance(state, str) else None

    async def me(self, app_bot: str = ACTIONS_BOT) -> Author:
        """Who the token writes as: the user ``GET /user`` names (a personal token's, an OAuth app's), or, for an
        installation token (GitHub Actions' GITHUB_TOKEN, a GitHub App's), which ``GET /user`` refuses with 403, the
        app's bot ``app_bot``. Raises HostRejected for a bad token (401)."""
        try:
            reply = await self.http.request("GET", "/user", headers=HEADERS)
        except HostRejected as exc:
            if exc.status == 403:  # "Resource not accessible by integration": an installation token
                return Author(app_bot)
            raise
        login = reply.body.get("login") if isinstance(reply.body, dict) else None
        user_id = reply.body.get("id") if isinstance(reply.body, dict) else None
        if not isinstance(login, str) or not login:
            raise HostRejected(f"GET {self.http.host}/user answered without a login", status=reply.status)
        return Author(login, user_id if isinstance(user_id, int) else None)

    async def find_comment(self, issue: int, marker: str, author: Author) -> int | None:
        """The id of the first comment on issue (or pull request) ``issue`` that ``author`` wrote and whose body
        holds ``marker``: anyone may write the marker, only the author's own comment is ever edited."""
        for page in range(1, MAX_PAGES + 1):
            reply = await self.http.request(
                "GET",
                f"{self._base}/issues/{issue}/comments",
                params={"per_page": 100, "page": page},
                headers=HEADERS,
            )
            comments = _items(reply)
            for comment in comments:
                if (
                    marker in str(comment.get("body") or "")
                    and author.wrote(comment)
                    and isinstance(comment.get("id"), int)
                ):
                    found: int = comment["id"]
                    return found
            if len(comments) < 100:
                return None
        return None

    async def create_comment(self, issue: int, body: str) -> int:
        reply = await self.http.request(
            "POST", f"{self._base}/issues/{issue}/comments", json={"body": body}, headers=HEADERS
        )
        return int(reply.body["id"]) if isinstance(reply.body, dict) and "id" in reply.body else 0

    async def update_comment(self, comment_id: int, body: str) -> None:
        path = f"{self._base}/issues/comments/{comment_id}"
        await self.http.request("PATCH", path, json={"body": body}, headers=HEADERS)


def _items(reply: Reply) -> list[dict[str, Any]]:
    return [item for item in reply.body if isinstance(item, dict)] if isinstance(reply.body, list) else []
