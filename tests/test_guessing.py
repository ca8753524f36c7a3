"""Issue 21 against a real `gitops-flow serve --workers 2` behind a (pretend) reverse proxy: every endpoint that checks
a token counts failed checks per client address in the state store, shared by the workers, so a guesser is braked
wherever it guesses while the token's holder, at another address, is not; and a console sign-out is kept in the store,
so the signed-out cookie does not work again after a restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gitops_flow.githost.github_webhook import sign
from tests.gitrepo import Remote
from tests.process import ADMIN_TOKEN, ServeProcess, serve_process
from tests.served import echo_flow
from tests.test_console_http import csrf, sign_in

READ_TOKEN = "test-read-token"
WEBHOOK_SECRET = "test-webhook-secret"
LIMIT = 4
GUESSER, HOLDER = "203.0.113.66", "198.51.100.7"  # the addresses the proxy puts in X-Forwarded-For
ENV = {
    "GITOPS_FLOW_READ_TOKEN": READ_TOKEN,
    "GITOPS_FLOW_WEBHOOK_SECRET": WEBHOOK_SECRET,
    "GITOPS_FLOW_GUESS_LIMIT": str(LIMIT),
    "GITOPS_FLOW_GUESS_WINDOW": "600",
    "GITOPS_FLOW_TRUSTED_PROXIES": "127.0.0.1",  # the test client plays the proxy
}


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Remote:
    tmp = tmp_path_factory.mktemp("guessing")
    remote = Remote.create(tmp)
    remote.commit({"flows/echo.json": echo_flow()}, "a flow")
    remote.push()
    return remote


def ask(server: ServeProcess, method: str, path: str, address: str, **headers: str) -> httpx.Response:
    """One request on a connection of its own (so the workers share the requests), as the proxy forwards it; a
    webhook's carries its body."""
    content = PING if path.startswith("/webhooks/") else None
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        return client.request(method, path, content=content, headers={"X-Forwarded-For": address, **headers})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


PING = b'{"zen": "Keep it logically awesome."}'


def webhook(secret: str) -> dict[str, str]:
    """A GitHub ping's headers, signed with ``secret``."""
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": "ping",
        "X-GitHub-Delivery": "d-1",
        "X-Hub-Signature-256": sign(secret.encode(), PING),
    }


# every kind of token check the server makes, each with a wrong and a right credential
CHECKS = {
    "console json": ("GET", "/ui/overview.json", bearer("wrong"), bearer(READ_TOKEN)),
    "operator": ("POST", "/admin/reconcile", bearer("wrong"), bearer(ADMIN_TOKEN)),
    "read view": ("GET", "/versions", bearer("wrong"), bearer(READ_TOKEN)),
    "openapi": ("GET", "/openapi.json", bearer("wrong"), bearer(ADMIN_TOKEN)),
}


def test_a_guesser_is_braked_on_every_token_check_across_workers_and_the_holder_is_not(
    remote: Remote, tmp_path: Path
) -> None:
    """The review: about 2,000 bearer guesses a second, never throttled; the login form's brake was per worker."""
    with serve_process(remote, tmp_path, env=ENV, workers=2) as server:
        kinds = list(CHECKS.values())
        statuses = []
        for n in range(LIMIT):  # each guess on a connection of its own: either worker may answer
            method, path, wrong, _ = kinds[n % len(kinds)]
            statuses.append(ask(server, method, path, GUESSER, **wrong).status_code)
        assert statuses == [401] * LIMIT
        for name, (method, path, wrong, right) in CHECKS.items():
            for headers in (wrong, right):  # the guesser's right guess is not even compared now
                braked = ask(server, method, path, GUESSER, **headers)
                assert braked.status_code == 429, (name, braked.text)
                assert braked.json()["error"]["code"] == "too-many-failures"
                assert 0 < int(braked.headers["retry-after"]) <= 600
            assert ask(server, method, path, HOLDER, **right).status_code == 200, name
        webhook_braked = ask(server, "POST", "/webhooks/github", GUESSER, **webhook(WEBHOOK_SECRET))
        assert webhook_braked.status_code == 429
        assert ask(server, "POST", "/webhooks/github", HOLDER, **webhook(WEBHOOK_SECRET)).status_code == 200
        login = httpx.post(
            f"{server.url}/ui/login",
            data={"token": ADMIN_TOKEN, "name": "bob"},
            headers={"X-Forwarded-For": GUESSER, "Origin": server.url},
        )
        assert login.status_code == 429 and "Too many failed sign-ins from 203.0.113.66" in login.text
        with httpx.Client(base_url=server.url, headers={"Origin": server.url}) as holder:
            assert sign_in(holder, **{"X-Forwarded-For": HOLDER}).status_code == 303  # the admin is not locked out
        # what a client writes itself in X-Forwarded-For, left of what the proxy appended, is never its address
        spoofed = ask(server, "GET", "/versions", f"{HOLDER}, {GUESSER}", **bearer(READ_TOKEN))
        assert spoofed.status_code == 429
        assert READ_TOKEN not in server.log_text() and "wrong" not in server.log_text()


def test_without_a_token_nothing_is_counted_and_a_wrong_webhook_signature_is(remote: Remote, tmp_path: Path) -> None:
    with serve_process(remote, tmp_path, env={k: v for k, v in ENV.items() if k != "GITOPS_FLOW_READ_TOKEN"}) as server:
        for _ in range(LIMIT * 2):  # anonymous readers of public views are no guessers
            assert ask(server, "GET", "/versions", GUESSER).status_code == 200
        for _ in range(LIMIT):
            assert ask(server, "POST", "/webhooks/github", GUESSER, **webhook("guess")).status_code == 401
        assert ask(server, "POST", "/webhooks/github", GUESSER, **webhook(WEBHOOK_SECRET)).status_code == 429
        assert ask(server, "GET", "/versions", GUESSER, **bearer(ADMIN_TOKEN)).status_code == 429


@pytest.fixture
def state(tmp_path: Path) -> Iterator[list[str]]:
    """Arguments that keep the state in one file across restarts of the server."""
    yield ["--state", f"sqlite:///{tmp_path / 'kept' / 'state.db'}"]


def test_a_signed_out_cookie_stays_signed_out_after_a_restart(remote: Remote, tmp_path: Path, state: list[str]) -> None:
    """The review: a signed-out console cookie worked again once the server restarted (the sign-out lived in memory)."""
    (tmp_path / "kept").mkdir()
    with serve_process(remote, tmp_path, args=state) as server:
        with (
            httpx.Client(base_url=server.url, headers={"Origin": server.url}) as gone,
            httpx.Client(base_url=server.url, headers={"Origin": server.url}) as kept,
        ):
            assert sign_in(gone, "alice").status_code == 303 and sign_in(kept, "carol").status_code == 303
            cookie, other = dict(gone.cookies), dict(kept.cookies)
            assert gone.post("/ui/logout", data={"csrf": csrf(gone)}).status_code == 303
    with serve_process(remote, tmp_path, args=state) as restarted:
        with httpx.Client(base_url=restarted.url, cookies=cookie) as replay:
            page = replay.get("/ui").text
            assert "signed in as" not in page and "Sign in</a>" in page
            token = csrf_of_any(page)
            assert replay.post("/ui/fetch", data={"csrf": token}, headers={"Origin": restarted.url}).status_code == 401
        with httpx.Client(base_url=restarted.url, cookies=other) as still:
            assert "signed in as <b>carol</b> (admin)" in still.get("/ui").text  # a session not signed out lives on


def csrf_of_any(page: str) -> str:
    """The CSRF token a page carries, or "" (a page for nobody carries none)."""
    marker = 'name="csrf" value="'
    start = page.find(marker)
    return page[start + len(marker) : page.index('"', start + len(marker))] if start >= 0 else ""
