"""The read views (/flows, /versions, /history) of a real `serve` process: the read token, what only a token holder
sees, pages, bounded problems, and the `versions`/`history` commands reading them."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops_flow.cli import main as cli
from gitops_flow.cli import remote as servercli
from gitops_flow.validation.documents import MAX_PROBLEMS
from tests.gitrepo import Remote
from tests.process import ADMIN, ADMIN_TOKEN, ServeProcess, serve_process
from tests.served import echo_flow

READ_TOKEN = "test-read-token"
READER = {"Authorization": f"Bearer {READ_TOKEN}"}
VIEWS = ("/flows", "/versions", "/history")


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    return one_commit(tmp_path)


def one_commit(tmp_path: Path) -> Remote:
    """A repository of one commit: the echo flow."""
    remote = Remote.create(tmp_path)
    remote.commit({"flows/echo.json": echo_flow()}, "first")
    remote.push()
    return remote


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """A server without a read token over the one-commit repository, shared by the tests that only read it."""
    tmp = tmp_path_factory.mktemp("public")
    with serve_process(one_commit(tmp), tmp) as server:
        yield server


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """A server with a read token over the one-commit repository, shared by the tests that only read it."""
    tmp = tmp_path_factory.mktemp("guarded")
    with serve_process(one_commit(tmp), tmp, env={"GITOPS_FLOW_READ_TOKEN": READ_TOKEN}) as server:
        yield server


def commits(remote: Remote, count: int) -> list[str]:
    """``count`` new commits of the echo flow, pushed; their shas, oldest first."""
    shas = [remote.commit({"flows/echo.json": echo_flow(answer=f"answer {n}")}, f"change {n}") for n in range(count)]
    remote.push()
    return shas


# -- the read token --------------------------------------------------------------------------------------------------


def test_with_a_read_token_the_views_need_it_or_the_admin_token(guarded: ServeProcess) -> None:
    server = guarded
    get = server.client.get
    refused = {
        (view, name): get(view, headers=headers)
        for view in VIEWS
        for name, headers in {
            "none": {},
            "wrong": {"Authorization": "Bearer nope"},
            "bare": {"Authorization": READ_TOKEN},
            "longer": {"Authorization": f"Bearer {READ_TOKEN}x"},
        }.items()
    }
    allowed = {(view, name): get(view, headers=h) for view in VIEWS for name, h in (("read", READER), ("admin", ADMIN))}
    public = [get("/readyz"), get("/healthz"), server.invoke("echo", {"question": "hi"})]
    log = server.log_text()
    for key, response in refused.items():
        assert response.status_code == 401, key
        assert response.json()["error"] == {
            "code": "read-token-required",
            "message": "this view needs Authorization: Bearer <read token>",
        }
    for key, response in allowed.items():
        assert response.status_code == 200, key
    assert [r.status_code for r in public] == [200, 200, 200]
    assert READ_TOKEN not in log


def test_without_a_read_token_the_views_are_public_but_emails_are_for_token_holders(public: ServeProcess) -> None:
    server = public
    anonymous = server.client.get("/versions")
    admin = server.client.get("/versions", headers=ADMIN)
    flows = server.client.get("/flows")
    history = server.client.get("/history")
    assert anonymous.status_code == admin.status_code == flows.status_code == 200
    assert [v["email"] for v in anonymous.json()["versions"]] == [None]
    assert [v["email"] for v in admin.json()["versions"]] == ["ada@example.com"]
    assert "ada@example.com" not in anonymous.text
    assert history.status_code == 200 and "@" not in history.text


def test_the_commit_of_a_routed_tag_off_the_branch_is_named_to_token_holders_only(
    remote: Remote, tmp_path: Path
) -> None:
    """The reproduction: ``routes:`` naming a tag on an unmerged commit showed its sha to anonymous readers in /flows
    and in the console."""
    remote.git("checkout", "--quiet", "-b", "unmerged")
    unmerged = remote.commit({"flows/echo.json": echo_flow(answer="not reviewed")}, "unreviewed")
    remote.git("checkout", "--quiet", "main")
    remote.tag("preview", unmerged)
    remote.push_tags()
    routing = {"routes": {"default": [{"ref": "main", "weight": 90}, {"ref": "preview", "weight": 10}]}}
    remote.commit({"gitops-flow.yaml": yaml.safe_dump(routing)}, "route a preview")
    remote.push()
    with serve_process(remote, tmp_path) as server:
        anonymous = {path: server.client.get(path) for path in ("/flows", "/ui", "/ui/overview.json", "/ui/flows/echo")}
        flows = server.client.get("/flows", headers=ADMIN).json()["flows"]
        overview = server.client.get("/ui/overview.json", headers=ADMIN).text
    for path, response in anonymous.items():
        assert response.status_code == 200, path
        assert unmerged[:7] not in response.text, path
    [preview] = [t for t in flows[0]["versions"] if t["ref"] == "preview"]
    assert (preview["sha"], preview["state"]) == (unmerged, "missing")
    assert unmerged in overview


# -- pages -----------------------------------------------------------------------------------------------------------


def pages(server: ServeProcess, view: str, key: str, limit: int) -> list[dict[str, Any]]:
    """Every page of a view, following ``next``."""
    found: list[dict[str, Any]] = []
    query: dict[str, Any] = {"limit": limit}
    while True:
        response = server.client.get(view, params=query, headers=ADMIN)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body[key]) <= limit
        found.append(body)
        if body["next"] is None:
            return found
        query = body["next"]


def test_versions_and_history_come_in_pages(remote: Remote, tmp_path: Path) -> None:
    first = remote.sha()
    with serve_process(remote, tmp_path) as server:
        shas = commits(remote, 6)
        server.reconcile()
        versions = pages(server, "/versions", "versions", 3)
        everything = server.client.get("/versions", headers=ADMIN).json()
        events = pages(server, "/history", "events", 4)
        all_events = server.client.get("/history").json()
    assert [[v["sha"] for v in page["versions"]] for page in versions] == [
        [shas[5], shas[4], shas[3]],
        [shas[2], shas[1], shas[0]],
        [first],
    ]
    assert versions[0]["next"] == {"before": shas[3], "limit": 3}
    assert everything["next"] is None and len(everything["versions"]) == 7  # the default page holds them all
    listed = [e for page in events for e in page["events"]]
    assert listed == all_events["events"]
    assert [e["id"] for e in listed] == sorted((e["id"] for e in listed), reverse=True)
    assert [len(page["events"]) for page in events][:-1] == [4] * (len(events) - 1)


BAD_QUERIES = [
    ("/versions", {"limit": "0"}, "bad-limit"),
    ("/versions", {"limit": "501"}, "bad-limit"),
    ("/versions", {"before": "0" * 40}, "bad-cursor"),  # no such version
    ("/versions", {"before": "abc"}, "bad-cursor"),  # a short sha is not a cursor
    ("/history", {"limit": "1001"}, "bad-limit"),
    ("/history", {"before": "-1"}, "bad-cursor"),
    ("/history", {"before": "1e3"}, "bad-cursor"),
    ("/history", {"before": "9" * 40}, "bad-cursor"),
]


def test_a_bad_page_query_is_a_400_naming_it(public: ServeProcess) -> None:
    server = public
    answers = [(view, query, code, server.client.get(view, params=query)) for view, query, code in BAD_QUERIES]
    for view, query, code, response in answers:
        assert response.status_code == 400, (view, query)
        assert response.json()["error"]["code"] == code, (view, query)


def test_the_commands_follow_the_pages_and_send_the_token_from_the_environment(
    remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servercli, "_PAGE", {"versions": 2, "history": 3})  # small pages, so a few entries take several
    with serve_process(remote, tmp_path, env={"GITOPS_FLOW_READ_TOKEN": READ_TOKEN}) as server:
        shas = commits(remote, 4)
        server.reconcile()

        def run(*argv: str, environ: dict[str, str]) -> tuple[int, str]:
            out = io.StringIO()
            code = cli.main([*argv, "--server", server.url], environ=environ, out=out)
            return code, out.getvalue()

        reader = {"GITOPS_FLOW_READ_TOKEN": READ_TOKEN}
        code, text = run("versions", "--limit", "5", "--json", environ=reader)
        assert code == 0
        listed = json.loads(text)
        assert [v["sha"] for v in listed["versions"]] == [*reversed(shas), remote.sha("HEAD~4")]
        assert listed["versions"][0]["email"] == "ada@example.com"
        assert listed["next"] is None

        code, text = run("versions", "--limit", "3", environ={"GITOPS_FLOW_ADMIN_TOKEN": ADMIN_TOKEN})
        assert code == 0
        assert [line[2:14] for line in text.splitlines()[1:4]] == [s[:12] for s in reversed(shas[1:])]
        assert text.splitlines()[-1] == "(more: --limit 6)"

        code, text = run("history", "--limit", "4", "--json", environ=reader)  # two pages of three
        assert code == 0
        events = json.loads(text)["events"]
        everything = server.client.get("/history", headers=READER).json()["events"]
        assert len(everything) > 4 and events == everything[:4]
        assert json.loads(text)["next"] is not None

        code, text = run("history", environ={})
    assert code == 2
    assert text == ""
    assert READ_TOKEN not in server.log_text()


def test_the_commands_say_a_token_is_missing(guarded: ServeProcess, capsys: pytest.CaptureFixture[str]) -> None:
    server = guarded
    code = cli.main(["versions", "--server", server.url], environ={}, out=io.StringIO())
    assert code == 2
    error = capsys.readouterr().err
    assert "answered 401: this view needs Authorization: Bearer <read token> (set GITOPS_FLOW_READ_TOKEN)" in error


# -- problems are bounded --------------------------------------------------------------------------------------------


def bad_nodes(count: int, name: str = "big") -> str:
    """A compact flow of ``count`` nodes naming a component that does not exist."""
    nodes = [{"id": f"n{n}", "component": "Nope"} for n in range(count)]
    return json.dumps({"version": 1, "name": name, "nodes": nodes, "edges": []}, separators=(",", ":"))


def test_flows_of_thousands_of_bad_nodes_make_bounded_records_events_and_reports(
    remote: Remote, tmp_path: Path
) -> None:
    """The reproduction: one 715 KB flow with 22,000 bad nodes made a 7.3 MB version record and event. (Such a flow
    now fails on its node count alone; one of 4,000, under that limit, has a problem per node, and is capped.)"""
    documents = {"big": bad_nodes(22_000, "big"), "wide": bad_nodes(4_000, "wide")}
    assert 700_000 < len(documents["big"]) < 1024 * 1024
    with serve_process(remote, tmp_path) as server:
        sha = remote.commit({f"flows/{name}.json": text for name, text in documents.items()}, "many bad nodes")
        remote.push()
        assert server.reconcile()["new"] == [sha]
        versions = server.client.get("/versions", headers=ADMIN)
        history = server.client.get("/history", headers=ADMIN)
    record = next(v for v in versions.json()["versions"] if v["sha"] == sha)
    events = {e["flow"]: e for e in history.json()["events"] if e["sha"] == sha and e["event"] == "failed"}
    assert sorted(record["failed"]) == sorted(events) == ["big", "wide"]  # the commit's echo flow went live
    for name in documents:
        assert events[name]["problems"] == record["failed"][name]
        assert len(record["failed"][name]) <= MAX_PROBLEMS + 1
    wide = record["failed"]["wide"]
    assert len(wide) == MAX_PROBLEMS + 1
    assert [p["code"] for p in wide].count("unknown-component") > MAX_PROBLEMS - 5  # and the graph's
    last = wide[-1]
    assert last["code"] == "too-many-problems" and last["file"] == "flows/wide.json"
    assert last["message"].endswith(" more problems are not listed; fix the ones above and validate again")
    assert int(last["message"].split()[0].replace(",", "")) + MAX_PROBLEMS >= 4_000  # every bad node is counted
    assert len(versions.content) < 100_000 and len(history.content) < 100_000  # where it was 7.3 MB each

    for name, document in documents.items():
        path = tmp_path / f"{name}.json"
        path.write_text(document)
        out = io.StringIO()
        assert cli.main(["validate", str(path), "--format", "json"], environ={}, out=out) == 1
        assert len(out.getvalue()) < 60_000
        assert len(json.loads(out.getvalue())["problems"]) <= MAX_PROBLEMS + 1


def test_a_flow_whose_many_tests_fail_on_the_server_keeps_a_bounded_record(remote: Remote, tmp_path: Path) -> None:
    """The server runs each flow's tests before it goes live: their failures are problems too, and capped alike."""
    cases = [{"name": f"case {n}", "input": {"question": "hi"}, "expect": {"equals": "never"}} for n in range(80)]
    with serve_process(remote, tmp_path) as server:
        sha = remote.commit({"flows/echo.json": echo_flow(answer="one", tests=cases)}, "eighty failing tests")
        remote.push()
        assert server.reconcile()["new"] == [sha]
        record = next(v for v in server.client.get("/versions").json()["versions"] if v["sha"] == sha)
    problems = record["failed"]["echo"]
    assert len(problems) == MAX_PROBLEMS + 1
    assert problems[-1]["code"] == "too-many-problems"
    assert problems[-1]["message"].startswith("30 more problems are not listed")
