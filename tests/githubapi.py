"""A local stand-in of GitHub's REST API that checks every request against GitHub's published OpenAPI description.

It serves on a loopback port (a real HTTP server, so the real `gitops-flow serve` and CLI talk to it as to
api.github.com) and keeps what it is told: commit statuses, deployments and their statuses, issue comments. Each
request is checked for its token, the headers GitHub documents, its method and path, its parameters and its body
against the description of @octokit/openapi; a request that does not fit is answered 422 (404 for an unknown path)
and recorded in ``violations``, which every test asserts is empty. Its own answers are validated against the
description too, so the client under test reads what GitHub would send. Beyond the description it enforces what
GitHub's documentation states: descriptions of at most 140 characters, and ``auto_inactive`` on deployment
statuses.
"""

from __future__ import annotations

import copy
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.npmdata import openapi
from tests.openapi import OpenApi, Violation

TOKEN = "ghp_standin0123456789abcdefghijklmnopqrstu"
OWNER, NAME = "acme", "flows"
_API: OpenApi | None = None


def api() -> OpenApi:
    """GitHub's description, parsed once per test session."""
    global _API
    if _API is None:
        _API = OpenApi(openapi())
    return _API


@dataclass
class Seen:
    """One request as the stand-in received it."""

    method: str
    path: str
    query: list[tuple[str, str]]
    body: Any
    operation: str | None
    status: int


@dataclass
class GitHubStandIn:
    """The state of the fake GitHub, what it saw, and what it is asked to do (fail, limit)."""

    token: str = TOKEN
    repo: str = f"{OWNER}/{NAME}"
    push: bool = True
    scopes: str | None = None  # X-OAuth-Scopes of a classic token; None for fine-grained and app tokens
    # whom the token belongs to: a user's login (a personal token), or None for an installation token (GitHub
    # Actions' GITHUB_TOKEN, a GitHub App's), which GET /user refuses and whose comments its app's bot writes
    user: str | None = None
    bot: str = "github-actions[bot]"
    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    deployments: list[dict[str, Any]] = field(default_factory=list)
    deployment_statuses: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    failures: list[tuple[int, dict[str, str], bool, str | None]] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1001))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(
        self,
        times: int,
        status: int = 502,
        headers: dict[str, str] | None = None,
        *,
        after: bool = False,
        operation: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests (for ``operation``, an operationId, when given) with ``status`` (a 5xx,
        or 403/429 with rate-limit headers); with ``after``, each is done first and only its answer is lost (a
        gateway that timed out on a slow GitHub)."""
        self.failures.extend([(status, headers or {}, after, operation)] * times)

    def _failure(self, operation: str) -> tuple[int, dict[str, str], bool, str | None] | None:
        for index, failure in enumerate(self.failures):
            if failure[3] in (None, operation):
                return self.failures.pop(index)
        return None

    def add_comment(self, issue: int, body: str, login: str = "octocat") -> dict[str, Any]:
        """A comment someone else (``login``) made on the issue or pull request, as GitHub keeps it."""
        status, comment, _ = self._create_comment({"issue_number": str(issue)}, {}, {"body": body})
        assert status == 201
        comment["user"].update(self._simple_user(login))
        return dict(comment)

    def _simple_user(self, login: str) -> dict[str, Any]:
        """The fields of a simple-user that name ``login`` (a bot's ``type`` is Bot); ids are stable per login."""
        bot = login.endswith("[bot]")
        number = 41898282 if login == "github-actions[bot]" else 1 if login == "octocat" else 5000 + sum(login.encode())
        return {
            "login": login,
            "id": number,
            "type": "Bot" if bot else "User",
            "url": f"{self.url}/users/{login}",
            "html_url": f"https://github.com/{login}",
        }

    def calls(self, operation: str) -> list[Seen]:
        return [s for s in self.seen if s.operation == operation]

    def latest_status(self, sha: str, context: str) -> dict[str, Any] | None:
        found = [s for s in self.statuses if s["sha"] == sha and s["context"] == context]
        return found[-1] if found else None

    def deployment_states(self, sha: str, environment: str) -> list[str]:
        """The states of the deployment of ``sha`` to ``environment``, oldest first ([] when there is none)."""
        found = [d for d in self.deployments if d["sha"] == sha and d["environment"] == environment]
        return [s["state"] for d in found for s in reversed(self.deployment_statuses.get(d["id"], []))]

    # -- the HTTP side --------------------------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        path = request.url.path
        query = list(request.query_params.multi_items())
        method = request.method
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return self._answer(method, path, query, None, None, 401, {"message": "Bad credentials"})
        try:
            self._check_headers(request)
            op, params, parsed = api().check_request(method, path, query, body, request.headers.get("content-type", ""))
        except Violation as exc:
            self.violations.append(str(exc))
            status = 404 if "no such path" in str(exc) else 422
            return self._answer(method, path, query, body, None, status, {"message": f"stand-in: {exc}"})
        failure = self._failure(op.operation_id)
        if failure is not None and not failure[2]:
            return self._answer(
                method, path, query, parsed, op.operation_id, failure[0], {"message": "failing"}, failure[1]
            )
        if "owner" in params and f"{params.get('owner')}/{params.get('repo')}" != self.repo:
            return self._answer(method, path, query, parsed, op.operation_id, 404, {"message": "Not Found"})
        if method != "GET" and not self._may_write():
            message = {"message": "Resource not accessible by personal access token"}
            return self._answer(method, path, query, parsed, op.operation_id, 403, message)
        if op.operation_id == "users/get-authenticated" and self.user is None:
            message = {"message": "Resource not accessible by integration"}
            return self._answer(method, path, query, parsed, op.operation_id, 403, message)
        with self._lock:
            handler = _HANDLERS.get(op.operation_id)
            if handler is None:
                return self._answer(method, path, query, parsed, op.operation_id, 501, {"message": "not in stand-in"})
            status, answer, headers = handler(self, params, dict(query), parsed)
        if failure is not None:  # done, but the answer is lost
            return self._answer(
                method, path, query, parsed, op.operation_id, failure[0], {"message": "lost"}, failure[1]
            )
        if status < 300:
            try:
                api().check_response(op, status, answer)
            except Violation as exc:
                self.violations.append(f"the stand-in's own answer: {exc}")
        elif status == 422 and isinstance(answer, dict):
            self.violations.append(f"{op.operation_id}: {answer.get('message')}")
        return self._answer(method, path, query, parsed, op.operation_id, status, answer, headers)

    def _may_write(self) -> bool:
        scopes = {s.strip() for s in (self.scopes or "repo").split(",")}
        return self.push and ("repo" in scopes or {"repo:status", "repo_deployment"} <= scopes)

    def _check_headers(self, request: Request) -> None:
        accept = request.headers.get("accept", "")
        if "application/vnd.github+json" not in accept:
            raise Violation(f"Accept is {accept!r}; GitHub asks for application/vnd.github+json")
        version = request.headers.get("x-github-api-version")
        if version not in (None, "2022-11-28", "2026-03-10"):
            raise Violation(f"X-GitHub-Api-Version {version!r} is not a version GitHub serves")
        if not request.headers.get("user-agent"):
            raise Violation("GitHub refuses requests without a User-Agent")

    def _answer(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        body: Any,
        operation: str | None,
        status: int,
        answer: Any,
        headers: dict[str, str] | None = None,
    ) -> Response:
        self.seen.append(Seen(method, path, query, body, operation, status))
        content = orjson.dumps(answer) if answer is not None else b""
        return Response(content, status, headers, media_type="application/json")

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self.handle, methods=["GET", "POST", "PATCH", "PUT", "DELETE"])])

    # -- GitHub's behaviour, per operation --------------------------------------------------------------------------

    def _repo(self, params: dict[str, str], query: dict[str, str], body: Any) -> Answer:
        repo = _example("full-repository-default-response")
        repo.update(name=NAME, full_name=self.repo, has_discussions=False, language=None)
        for key in ("parent", "source", "template_repository", "organization"):  # forks' and templates' extras
            repo.pop(key, None)
        repo["permissions"] = {"admin": False, "maintain": False, "push": self.push, "triage": True, "pull": True}
        headers = {"x-oauth-scopes": self.scopes} if self.scopes is not None else {}
        return 200, repo, headers

    def _create_status(self, params: dict[str, str], query: dict[str, str], body: Any) -> Answer:
        description = body.get("description") or ""
        if len(description) > 140:
            return _invalid("description is too long (maximum is 140 characters)")
        status = _example("status")
        status.update(
            id=next(self._ids),
            state=body["state"],
            description=description,
            target_url=body.get("target_url"),
            context=body.get("context", "default"),
            url=f"{self.url}/repos/{self.repo}/statuses/{params['sha']}",
        )
        self.statuses.append({**status, "sha": params["sha"]})
        return 201, status, {}

    def _list_deployments(self, params: dict[str, str], query: dict[str, str], body: Any) -> Answer:
        found = [
            d
            for d in reversed(self.deployments)
            if all(query.get(k) in (None, "none", d[k]) for k in ("sha", "ref", "task", "environment"))
        ]
        return 200, _page(found, query), {}

    def _create_deployment(self, params: dict[str, str], query: dict[str, str], body: Any) -> Answer:
        if body.get("auto_merge", True) or body.get("required_contexts") is None:
            return _invalid("the stand-in takes only record-keeping deployments (auto_merge false, no contexts)")
        deployment = _example("deployment")
        number = next(self._ids)
        environment = body.get("environment", "production")
        deployment.update(
            id=number,
            sha=body["ref"],
            ref=body["ref"],
            task=body.get("task", "deploy"),
            payload=body.get("payload", {}),
            environment=environment,
            original_environment=environment,
            description=body.get("description", ""),
            production_environment=body.get("production_environment", environment == "production"),
            transient_environment=body.get("transient_environment", False),
            url=f"{self.url}/repos/{self.repo}/deployments/{number}",
            statuses_url=f"{self.url}/repos/{self.repo}/deployments/{number}/statuses",
        )
        self.deployments.append(deployment)
        self.deployment_statuses[number] = []
        return 201, deployment, {}

    def _create_deployment_status(self, params: dict[str, str], query: dict[str, str], body: Any) -> Answer:
        number = int(params["deployment_id"])
        deployment = next((d for d in self.deployments if d["id"] == number), None)
        if deployment is None:
            return 404, {"message": "Not Found"}, {}
        if len(body.get("description", "")) > 140:
            return _invalid("description is too long (maximum is 140 characters)")
        status = _example("deployment-status")
        status.update(
            id=next(self._ids),
            state=body["state"],
            description=body.get("description", ""),
            environment=body.get("environment", deployment["environment"]),
            target_url=body.get("log_url", body.get("target_url", "")),
            log_url=body.get("log_url", body.get("target_url", "")),
            environment_url=body.get("environment_url", ""),
            deployment_url=deployment["url"],
        )
        if body["state"] == "success" and body.get("auto_inactive", True):
            for other in self.deployments:  # GitHub's auto_inactive: earlier successful ones of the environment
                history = self.deployment_statuses.get(other["id"], [])
                if (
                    other["id"] != number
                    and other["environment"] == deployment["environment"]
                    and not other["transient_environment"]
                    and not other["production_environment"]
                    and history
                    and history[0]["state"] == "success"
                ):
                    inactive = {**copy.deepcopy(history[0]), "id": next(self._ids), "state": "inactive"}
                    history.insert(0, inactive)
        self.deployment_statuses[number].insert(0, status)
        return 201, status, {}

    def _list_deployment_statuses(self, params: dict[str, str], query: dict[str, str], body: Any) -> Answer:
        return 200, _page(self.deployment_statuses.get(int(params["deployment_id"]), []), query), {}

    def _list_comments(self, params: dict[str, str], query: dict[str, str], body: Any) -> Answer:
        return 200, _page(self.comments.get(int(params["issue_number"]), []), query), {}

    def _create_comment(self, params: dict[str, str], query: dict[str, str], body: Any) -> Answer:
        issue = int(params["issue_number"])
        comment = _example("issue-comment")
        number = next(self._ids)
        comment.update(
            id=number,
            body=body["body"],
            url=f"{self.url}/repos/{self.repo}/issues/comments/{number}",
            html_url=f"https://github.com/{self.repo}/pull/{issue}#issuecomment-{number}",
            issue_url=f"{self.url}/repos/{self.repo}/issues/{issue}",
        )
        comment["user"].update(self._simple_user(self.user or self.bot))  # whom the token writes as
        self.comments.setdefault(issue, []).append(comment)
        return 201, comment, {}

    def _authenticated(self, params: dict[str, str], query: dict[str, str], body: Any) -> Answer:
        assert self.user is not None
        user = _example("private-user")
        user.update(self._simple_user(self.user), name=self.user)
        return 200, user, {}

    def _update_comment(self, params: dict[str, str], query: dict[str, str], body: Any) -> Answer:
        for comments in self.comments.values():
            for comment in comments:
                if comment["id"] == int(params["comment_id"]):
                    comment["body"] = body["body"]
                    comment["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                    return 200, comment, {}
        return 404, {"message": "Not Found"}, {}


Answer = tuple[int, Any, dict[str, str]]

_HANDLERS = {
    "repos/get": GitHubStandIn._repo,
    "repos/create-commit-status": GitHubStandIn._create_status,
    "repos/list-deployments": GitHubStandIn._list_deployments,
    "repos/create-deployment": GitHubStandIn._create_deployment,
    "repos/create-deployment-status": GitHubStandIn._create_deployment_status,
    "repos/list-deployment-statuses": GitHubStandIn._list_deployment_statuses,
    "issues/list-comments": GitHubStandIn._list_comments,
    "issues/create-comment": GitHubStandIn._create_comment,
    "issues/update-comment": GitHubStandIn._update_comment,
    "users/get-authenticated": GitHubStandIn._authenticated,
}


def _example(name: str) -> dict[str, Any]:
    value: dict[str, Any] = copy.deepcopy(openapi()["components"]["examples"][name]["value"])
    return value


def _page(items: list[dict[str, Any]], query: dict[str, str]) -> list[dict[str, Any]]:
    size, page = int(query.get("per_page", 30)), int(query.get("page", 1))
    return items[(page - 1) * size : page * size]


def _invalid(message: str) -> Answer:
    return 422, {"message": "Validation Failed", "errors": [{"message": message}]}, {}


@contextmanager
def github_standin(**options: Any) -> Iterator[GitHubStandIn]:
    """The stand-in on a free loopback port; ``.url`` is its base URL (what GITOPS_FLOW_GITHUB_API is set to)."""
    standin = GitHubStandIn(**options)
    api()  # parse the description before serving, so the first request is not slow
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    standin.url = f"http://127.0.0.1:{port}"
    server = uvicorn.Server(uvicorn.Config(standin.app(), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline:
                raise AssertionError("the GitHub stand-in did not start")
            time.sleep(0.01)
        yield standin
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
