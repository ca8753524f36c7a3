"""The console over HTTP against a real `gitops-flow serve`: sign-in and its cookie, what a change needs (a session of
the admin token, its CSRF token, the console's own origin), the audit trail, the live feed, `gitops-flow status`, and
that no page carries a secret or runs text from Git as markup."""

from __future__ import annotations

import html
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gitops_flow.cli import main as cli
from tests.gitrepo import Remote
from tests.process import ADMIN_TOKEN, ServeProcess, serve_process
from tests.served import echo_flow

ROUTING = {
    "routes": {"default": [{"ref": "stable", "weight": 90}, {"ref": "main", "weight": 10}]},
    "analysis": {"window": "60s", "min_requests": 10_000, "max_failures": 10_000},
}
SECRET = "sk-proj-" + "S3cr3tV4lue" * 3  # in the server's environment, allowed to flows
LITERAL = "sk-" + "L1ter4lK3y" * 3  # written into a flow by mistake: Git has it, the console must not show it
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("console-http")
    remote = Remote.create(tmp)
    stable = remote.commit(
        {
            "flows/alpha.json": echo_flow("alpha", answer="one"),
            "flows/leaky.json": echo_flow("leaky"),
            "gitops-flow.yaml": yaml.safe_dump(ROUTING),
        },
        "two flows",
    )
    remote.push()
    remote.tag("stable", stable)
    remote.push_tags()
    leaky = json.loads(echo_flow("leaky", description=HOSTILE))
    leaky["nodes"][1] = {
        "id": "llm",
        "component": "ChatModel",
        "params": {"model": "openai:gpt-4o-mini", "api_key": LITERAL, "base_url": "http://127.0.0.1:9/v1"},
    }
    remote.commit(
        {"flows/alpha.json": echo_flow("alpha", answer="two"), "flows/leaky.json": json.dumps(leaky, indent=2)},
        f"alpha says two {HOSTILE}",
    )
    remote.push()
    with serve_process(remote, tmp, env={"OPENAI_API_KEY": SECRET}) as served:
        for user in range(20):
            served.invoke("alpha", {"question": "hi"}, headers={"X-Flow-User": f"user-{user}"})
        yield served


@pytest.fixture
def browser(server: ServeProcess) -> Iterator[httpx.Client]:
    """A client of its own (its own cookies), sending what a browser on the console's pages sends."""
    with httpx.Client(base_url=server.url, headers={"Origin": server.url}, timeout=30.0) as client:
        yield client


def sign_in(client: httpx.Client, name: str = "bob", **headers: str) -> httpx.Response:
    return client.post("/ui/login", data={"token": ADMIN_TOKEN, "name": name}, headers=headers)


def csrf(client: httpx.Client) -> str:
    page = client.get("/ui").text
    marker = 'name="csrf" value="'
    start = page.index(marker) + len(marker)
    return page[start : page.index('"', start)]


def events(server: ServeProcess, kind: str) -> list[dict[str, Any]]:
    return [e for e in server.client.get("/history?limit=1000").json()["events"] if e["event"] == kind]


def test_every_page_is_served_with_a_policy_that_runs_only_the_servers_own_files(server: ServeProcess) -> None:
    for path in ("/ui", "/ui/pending", "/ui/history", "/ui/flows/alpha", "/ui/flows/leaky", "/ui/login"):
        response = server.client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"
        for attribute in ('src="http', "src='http", 'href="http', "href='http", "//cdn", "@import"):
            assert attribute not in response.text, (path, attribute)  # nothing is loaded from elsewhere
    for name, kind in (("console.js", "text/javascript"), ("console.css", "text/css"), ("favicon.svg", "image/svg")):
        response = server.client.get(f"/ui/static/{name}")
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
    assert server.client.get("/ui/static/../app.py").status_code == 404
    assert server.client.get("/ui/static/nothing.js").status_code == 404
    assert server.client.get("/", follow_redirects=False).headers["location"] == "/ui"


def test_text_from_git_is_shown_as_text_never_as_markup(server: ServeProcess) -> None:
    for path in ("/ui", "/ui/history", "/ui/flows/leaky", "/ui/flows/alpha"):
        text = server.client.get(path).text
        assert "<script>alert" not in text and "<img src=x" not in text, path
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in server.client.get("/ui/history").text


def test_no_page_shows_a_secret(server: ServeProcess) -> None:
    sha = server.remote.sha()
    stable = server.remote.sha("stable")
    pages = [
        "/ui",
        "/ui/pending",
        "/ui/history",
        "/ui/overview.json",
        "/ui/flows/leaky",
        f"/ui/flows/leaky?before={stable}&after={sha}",
        f"/ui/flows/leaky?at={sha}",
    ]
    with httpx.Client(base_url=server.url, headers={"Origin": server.url}) as admin:
        sign_in(admin)
        for path in pages:
            for client in (server.client, admin):
                text = client.get(path).text
                assert SECRET not in text and LITERAL not in text and ADMIN_TOKEN not in text, path
        diff = admin.get(f"/ui/flows/leaky?before={stable}&after={sha}").text
        assert "(hidden: looks like a credential)" in diff  # the diff says a credential is there, not what it is
        assert "openai:gpt-4o-mini" in diff


def test_signing_in_trades_the_token_for_a_strict_http_only_cookie(server: ServeProcess, browser: httpx.Client) -> None:
    wrong = browser.post("/ui/login", data={"token": "not-it", "name": "eve"})
    assert wrong.status_code == 401 and "not a token of this server" in wrong.text
    assert "set-cookie" not in wrong.headers
    response = sign_in(browser)
    assert response.status_code == 303 and response.headers["location"] == "/ui?notice=signed-in"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("gitops-flow-console=")
    parts = {p.strip().lower() for p in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/ui"} <= parts
    assert "secure" not in parts  # plain http: a Secure cookie would never come back
    assert ADMIN_TOKEN not in cookie
    assert "signed in as <b>bob</b> (admin)" in browser.get("/ui").text

    with httpx.Client(base_url=server.url, headers={"Origin": server.url}) as claiming:
        # a client that is no trusted proxy cannot say it came over https: the header is not read
        claimed = sign_in(claiming, **{"X-Forwarded-Proto": "https"}).headers["set-cookie"]
        assert claimed.startswith("gitops-flow-console=") and "secure" not in claimed.lower()


def test_behind_a_trusted_proxy_that_says_https_the_cookie_is_secure(server: ServeProcess, tmp_path: Path) -> None:
    env = {"GITOPS_FLOW_TRUSTED_PROXIES": "127.0.0.1"}
    with serve_process(server.remote, tmp_path, env=env) as proxied_server:
        with httpx.Client(base_url=proxied_server.url, headers={"Origin": proxied_server.url}) as proxied:
            plain = sign_in(proxied).headers["set-cookie"]
            assert plain.startswith("gitops-flow-console=") and "secure" not in plain.lower()
            cookie = sign_in(proxied, **{"X-Forwarded-Proto": "https"}).headers["set-cookie"]
            parts = {p.strip().lower() for p in cookie.split(";")}
            assert cookie.startswith("__Host-gitops-flow-console=") and {"secure", "path=/", "httponly"} <= parts


def test_guessing_the_token_is_braked(server: ServeProcess) -> None:
    with serve_process(server.remote, server.log.parent.parent / "brake", ready=False) as fresh:
        with httpx.Client(base_url=fresh.url, headers={"Origin": fresh.url}) as guesser:
            statuses = [guesser.post("/ui/login", data={"token": f"guess-{n}"}).status_code for n in range(10)]
            assert statuses == [401] * 10
            braked = sign_in(guesser)  # even the right token, now
            assert braked.status_code == 429 and int(braked.headers["retry-after"]) > 0
            assert "set-cookie" not in braked.headers
        assert "a failed sign-in from 127.0.0.1" in fresh.log_text()
        assert "guess-" not in fresh.log_text()


@pytest.mark.parametrize(
    ("how", "status"),
    [
        ("no session", 401),
        ("no csrf", 403),
        ("wrong csrf", 403),
        ("another origin", 403),
        ("no origin", 403),
        ("json body", 415),
    ],
)
def test_a_change_without_everything_it_needs_is_refused_and_changes_nothing(
    server: ServeProcess, how: str, status: int
) -> None:
    before = len(events(server, "aborted"))
    with httpx.Client(base_url=server.url, headers={"Origin": server.url}) as client:
        if how != "no session":
            sign_in(client)
        token = csrf(client) if how != "no session" else ""
        form = {"ref": "main", "csrf": {"no csrf": "", "wrong csrf": token[::-1]}.get(how, token)}
        headers = {"another origin": {"Origin": "http://evil.example"}, "no origin": {"Origin": ""}}.get(how, {})
        if how == "json body":
            response = client.post("/ui/flows/alpha/abort", json=form)
        else:
            response = client.post("/ui/flows/alpha/abort", data=form, headers=headers)
        assert response.status_code == status
        assert "text/html" in response.headers["content-type"]
    assert len(events(server, "aborted")) == before
    assert [t["state"] for t in server.client.get("/flows").json()["flows"][0]["versions"]] == ["live", "live"]


def test_an_operator_aborts_resumes_and_fetches_from_the_console_each_audited(
    server: ServeProcess, browser: httpx.Client
) -> None:
    sign_in(browser, "carol")
    token = csrf(browser)
    done = browser.post("/ui/flows/alpha/abort", data={"ref": "main", "csrf": token, "back": "flow"})
    assert done.status_code == 303 and done.headers["location"] == "/ui/flows/alpha?notice=aborted"
    [aborted] = [e for e in events(server, "aborted") if e["trigger"].startswith("console: carol")]
    assert (aborted["flow"], aborted["ref"], aborted["trigger"]) == ("alpha", "main", "console: carol at 127.0.0.1")
    again = browser.post("/ui/flows/alpha/abort", data={"ref": "main", "csrf": token})
    assert again.headers["location"] == "/ui?notice=unchanged"
    resumed = browser.post("/ui/flows/alpha/resume", data={"csrf": token, "back": "pending"})
    assert resumed.headers["location"] == "/ui/pending?notice=resumed"
    assert events(server, "resumed")[0]["trigger"] == "console: carol at 127.0.0.1"

    unknown = browser.post("/ui/flows/nope/abort", data={"csrf": token})
    assert unknown.status_code == 404 and "no flow named" in unknown.text

    fetched = browser.post("/ui/fetch", data={"csrf": token})
    assert fetched.status_code == 303 and fetched.headers["location"] == "/ui?notice=fetched"
    [fetch] = events(server, "fetch")[:1]
    assert (fetch["trigger"], fetch["detail"]) == ("console: carol at 127.0.0.1", "nothing new")
    history = browser.get("/ui/history?kind=fetch").text
    assert "console: carol at 127.0.0.1" in history and "nothing new" in history

    out = browser.post("/ui/logout", data={"csrf": token})
    assert out.status_code == 303
    assert 'gitops-flow-console=""' in out.headers["set-cookie"] or "max-age=0" in out.headers["set-cookie"].lower()


def test_a_session_that_signed_out_can_no_longer_change_anything(server: ServeProcess) -> None:
    with httpx.Client(base_url=server.url, headers={"Origin": server.url}) as client:
        sign_in(client)
        token = csrf(client)
        kept = dict(client.cookies)
        client.post("/ui/logout", data={"csrf": token})
        client.cookies.update(kept)  # a copy of the cookie taken before signing out
        refused = client.post("/ui/flows/alpha/abort", data={"csrf": token})
        assert refused.status_code == 401
        forged = kept["gitops-flow-console"].replace(".v1", ".v2")
        client.cookies.clear()
        client.cookies.set("gitops-flow-console", forged[:-3] + "abc", path="/ui")
        assert "Sign in</a>" in client.get("/ui").text  # a forged cookie is nobody


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/ui/flows/nope", 404, "no flow 'nope' is served here"),
        ("/ui/flows/alpha?at=0123456789abcdef", 400, "is not a version of flow 'alpha'"),
        ("/ui/history?kind=exploded", 400, "kind is one of"),
    ],
)
def test_a_page_asked_for_what_is_not_there_says_so(server: ServeProcess, path: str, status: int, says: str) -> None:
    response = server.client.get(path)
    assert response.status_code == status and says in html.unescape(response.text)
    assert "text/html" in response.headers["content-type"]


def test_the_history_page_filters_by_flow_ref_and_kind(server: ServeProcess) -> None:
    page = server.client.get("/ui/history?flow=leaky&kind=failed").text
    assert 'data-kind="failed"' in page and 'data-kind="deployed"' not in page
    assert "leaky failed" in page and "flows/leaky.json:" in page and "literal-secret" in page
    assert 'data-kind="tag-moved"' not in server.client.get("/ui/history?ref=stable&kind=deployed").text


def test_the_live_feed_tells_an_open_page_about_a_deploy(server: ServeProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30.0) as client, client.stream("GET", "/ui/events") as feed:
        assert feed.headers["content-type"].startswith("text/event-stream")
        lines = feed.iter_lines()
        assert next(lines) == "retry: 1000"
        assert next(lines) == ""
        first = next(lines)
        assert first.startswith("id: ") and next(lines) == "event: hello"
        server.remote.commit({"flows/alpha.json": echo_flow("alpha", answer="three")}, "alpha says three")
        server.remote.push()
        server.reconcile()
        seen = []
        for line in lines:
            seen.append(line)
            if line == "event: change":
                break
        assert "event: change" in seen
    # a page that comes back with an old id hears of the change at once
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        with client.stream("GET", "/ui/events", headers={"Last-Event-ID": "0"}) as feed:
            lines = feed.iter_lines()
            assert [next(lines), next(lines), next(lines)][0] == "retry: 1000"
            assert next(lines) == "event: change"


def test_status_prints_the_overview_in_a_terminal(server: ServeProcess) -> None:
    out = io.StringIO()
    assert cli.main(["status", "--server", server.url], environ={}, out=out) == 0
    text = out.getvalue()
    head = server.remote.sha()
    assert f"{server.remote.url} (main): head {head[:12]}" in text
    assert "alpha" in text and "  stable" in text and "  main (canary)" in text
    assert "leaky failed" in text and "flows/leaky.json:" in text and "literal-secret" in text
    assert LITERAL not in text and SECRET not in text
    as_json = io.StringIO()
    assert cli.main(["status", "--server", server.url, "--json"], environ={}, out=as_json) == 0
    body = json.loads(as_json.getvalue())
    alpha = next(f for f in body["flows"] if f["name"] == "alpha")
    assert [r["ref"] for r in alpha["refs"]] == ["stable", "main"]
    stable = alpha["refs"][0]
    assert stable["figures"]["requests"] > 0 and stable["share"] > 0
    assert stable["figures"]["p99_ms"] >= stable["figures"]["p50_ms"] > 0


def test_status_of_a_server_that_is_not_there_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status", "--server", "http://127.0.0.1:9"], environ={}, out=io.StringIO()) == 2
    assert "cannot reach the server at http://127.0.0.1:9" in capsys.readouterr().err


def test_the_overview_counts_every_request_served_lately(server: ServeProcess) -> None:
    body = server.client.get("/ui/overview.json").json()
    alpha = next(f for f in body["flows"] if f["name"] == "alpha")
    measured = sum(r["figures"]["requests"] for r in alpha["refs"] if r["figures"]) + sum(
        o["figures"]["requests"] for o in alpha["others"]
    )
    before = measured
    for n in range(5):
        server.invoke("alpha", {"question": "hi"}, headers={"X-Flow-User": f"counted-{n}"})
    body = server.client.get("/ui/overview.json").json()
    alpha = next(f for f in body["flows"] if f["name"] == "alpha")
    after = sum(r["figures"]["requests"] for r in alpha["refs"] if r["figures"]) + sum(
        o["figures"]["requests"] for o in alpha["others"]
    )
    assert after == before + 5


def test_not_live_yet_lists_tags_off_the_branch_yanked_commits_and_unpromoted_builds(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    targets = [{"ref": "stable", "weight": 90}, {"ref": "main", "weight": 10}, {"ref": "candidate", "weight": 0}]
    routes = {"routes": {"default": targets}}
    first = remote.commit({"flows/echo.json": echo_flow(answer="one"), "gitops-flow.yaml": yaml.safe_dump(routes)})
    remote.push()
    remote.tag("stable", first)
    remote.git("checkout", "--quiet", "-b", "unmerged")
    unmerged = remote.commit({"flows/echo.json": echo_flow(answer="not reviewed")}, "unreviewed")
    remote.git("push", "--quiet", "origin", "unmerged")
    remote.tag("candidate", unmerged)
    remote.push_tags()
    remote.git("checkout", "--quiet", "main")
    with serve_process(remote, tmp_path) as server:
        leak = remote.commit({"flows/echo.json": echo_flow(answer="leak")}, "oops")
        remote.push()
        server.reconcile()
        remote.revert(leak)
        remote.commit({"gitops-flow.yaml": yaml.safe_dump({**routes, "yanked": [leak[:10]]})}, "yank the leak")
        remote.push()
        server.reconcile()
        waiting = server.client.get("/ui/pending").text
        assert 'id="waiting"' in waiting and "git tag --force stable" not in waiting  # the revert serves stable's
        head = remote.commit({"flows/echo.json": echo_flow(answer="two")}, "echo says two")
        remote.push()
        server.reconcile()
        anonymous = server.client.get("/ui/pending").text
        assert "tag &#39;candidate&#39; points at a commit which is not on branch &#39;main&#39;" in anonymous
        assert unmerged not in anonymous and unmerged[:12] not in anonymous  # only a signed-in reader sees it
        assert f"{leak[:10]}</span>: {leak[:12]}" in anonymous  # the yanked entry and the commit it matched
        assert f'its newest build <span class="sha">{head[:12]}</span>' in anonymous
        assert f"git tag --force stable {head}" in anonymous and "git push --force origin refs/tags/stable" in anonymous
        with httpx.Client(base_url=server.url, headers={"Origin": server.url}) as reader:
            sign_in(reader)
            assert f"points at {unmerged[:12]}, which is not on branch" in html.unescape(reader.get("/ui/pending").text)


def test_with_a_read_token_the_console_is_read_by_its_holders_only_and_steered_by_the_admin(
    server: ServeProcess, tmp_path: Path
) -> None:
    read = "test-read-token"
    with serve_process(server.remote, tmp_path, env={"GITOPS_FLOW_READ_TOKEN": read}) as guarded:
        anonymous = guarded.client
        for path in ("/ui", "/ui/pending", "/ui/history", "/ui/flows/alpha"):
            response = anonymous.get(path)
            assert response.status_code == 401 and "Sign in to read" in response.text, path
            assert "alpha says" not in response.text  # nothing of the server's state
        json_view = anonymous.get("/ui/overview.json")
        assert (json_view.status_code, json_view.json()["error"]["code"]) == (401, "read-token-required")
        assert anonymous.get("/ui/events").status_code == 401
        assert anonymous.get("/ui/static/console.css").status_code == 200  # the sign-in page needs its style
        bearer = {"Authorization": f"Bearer {read}"}
        assert anonymous.get("/ui/overview.json", headers=bearer).status_code == 200
        assert anonymous.get("/ui", headers={"Authorization": "Bearer wrong"}).status_code == 401

        with httpx.Client(base_url=guarded.url, headers={"Origin": guarded.url}) as reader:
            assert reader.post("/ui/login", data={"token": read, "name": "rita"}).status_code == 303
            page = reader.get("/ui")
            assert page.status_code == 200 and "signed in as <b>rita</b> (reader)" in page.text
            assert "Abort canary" not in page.text and "Fetch now" not in page.text
            refused = reader.post("/ui/flows/alpha/abort", data={"csrf": csrf(reader)})
            assert refused.status_code == 403 and "only a session of the admin token" in refused.text
        # the first flow page with an experiment imports scipy (in a thread): seconds on a loaded machine
        with httpx.Client(base_url=guarded.url, headers={"Origin": guarded.url}, timeout=60) as admin:
            sign_in(admin)
            assert "Abort canary" in admin.get("/ui/flows/alpha").text

        out = io.StringIO()
        assert cli.main(["status", "--server", guarded.url], environ={"GITOPS_FLOW_READ_TOKEN": read}, out=out) == 0
        assert "alpha" in out.getvalue()
        assert cli.main(["status", "--server", guarded.url], environ={}, out=io.StringIO()) == 2


def test_the_history_page_goes_back_page_by_page(server: ServeProcess) -> None:
    events = server.client.get("/history?limit=1000").json()["events"]
    assert len(events) >= 2
    newest = server.client.get("/ui/history").text
    assert newest.count('<tr class="event') == len(events) and 'id="older"' not in newest
    page = server.client.get(f"/ui/history?kind=&before={events[0]['id']}").text
    assert page.count('<tr class="event') == len(events) - 1  # the newest is on the page before
    assert 'href="/ui/history">Newest events' in page
    refused = server.client.get("/ui/history?before=-1")
    assert refused.status_code == 400 and "before is an event number" in refused.text
