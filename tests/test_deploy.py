"""Deploys through Git, proved through the HTTP API: push, bad commit, revert, delete, force-push, restart."""

from __future__ import annotations

import gc
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gitops_flow.assembly import HEAP_SETTLE_DELAY
from gitops_flow.cli import process
from gitops_flow.exceptions import StoreError
from gitops_flow.stores.memory import MemoryStore
from gitops_flow.stores.sqlite import SqliteStore
from tests.gitrepo import Remote
from tests.served import ADMIN, echo_flow, on_loopback, served, wait_until

Q = {"question": "hi"}


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    remote = Remote.create(tmp_path)
    remote.commit({"flows/echo.json": echo_flow(answer="one")}, "first answer")
    remote.push()
    return remote


def answer(response: httpx.Response) -> tuple[Any, str]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["metadata"]["flow_version"] == response.headers["x-flow-version"]
    return body["output"], body["metadata"]["flow_version"]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_pushed_commit_is_served_after_the_fetch_and_a_conversation_stays_on_its_version(
    remote: Remote, tmp_path: Path
) -> None:
    first = remote.sha()
    with served(remote, tmp_path) as server:
        assert answer(server.invoke("echo", Q, {"X-Flow-Session": "alice"})) == ("one", first)
        second = remote.publish({"flows/echo.json": echo_flow(answer="two")}, "second answer")
        assert answer(server.invoke("echo", Q)) == ("one", first)  # nothing changes before the fetch
        outcome = server.reconcile()
        assert outcome == {"changed": True, "head": second, "new": [second], "error": None}
        assert answer(server.invoke("echo", Q)) == ("two", second)
        assert answer(server.invoke("echo", Q, {"X-Flow-Session": "alice"})) == ("one", first)
        assert answer(server.invoke("echo", Q, {"X-Flow-Session": "bob"})) == ("two", second)
        events = server.client.get("/history").json()["events"]
        assert [(e["event"], e["sha"], e["changed"]) for e in events] == [
            ("deployed", second, ["echo"]),
            ("deployed", first, ["echo"]),
        ]
        assert events[0]["message"] == "second answer" and events[0]["author"] == "Ada Lovelace"


def test_a_session_moves_to_the_head_after_being_idle_for_the_ttl(remote: Remote, tmp_path: Path) -> None:
    clock = Clock()
    remote.commit({"gitops-flow.yaml": "session_ttl: 10m\n"}, "ten minute sessions")
    first = remote.publish({})
    with served(remote, tmp_path, store=MemoryStore(clock=clock)) as server:
        assert answer(server.invoke("echo", Q, {"X-Flow-Session": "s"}))[1] == first
        second = remote.publish({"flows/echo.json": echo_flow(answer="two")})
        server.reconcile()
        clock.now += 9 * 60  # active within the TTL: stays, and the idle timer restarts
        assert answer(server.invoke("echo", Q, {"X-Flow-Session": "s"}))[1] == first
        clock.now += 9 * 60
        assert answer(server.invoke("echo", Q, {"X-Flow-Session": "s"}))[1] == first
        clock.now += 10 * 60 + 1
        assert answer(server.invoke("echo", Q, {"X-Flow-Session": "s"})) == ("two", second)


@pytest.mark.parametrize(
    ("content", "code"),
    [
        ("{ not json", "invalid-json"),
        (echo_flow().replace("PromptTemplate", "os.system"), "import-path"),
        (echo_flow().replace('"version": 1', '"version": 2'), "unsupported-version"),
    ],
    ids=["corrupt-json", "import-path", "wrong-format"],
)
def test_a_flow_that_fails_keeps_serving_its_last_good_version_and_is_recorded_with_its_problems(
    remote: Remote, tmp_path: Path, content: str, code: str
) -> None:
    good = remote.sha()
    with served(remote, tmp_path) as server:
        bad = remote.publish({"flows/echo.json": content, "flows/other.json": echo_flow("other", answer="x")}, "two")
        assert server.reconcile()["new"] == [bad]
        assert answer(server.invoke("echo", Q)) == ("one", good)
        assert answer(server.invoke("other", Q)) == ("x", bad)  # the commit's other flow goes live
        assert server.client.get("/readyz").json()["version"] == bad
        versions = {v["sha"]: v for v in server.client.get("/versions").json()["versions"]}
        assert versions[bad]["status"] == "ready" and versions[bad]["live"]
        assert versions[bad]["carried"] == {"echo": good}
        problem = versions[bad]["failed"]["echo"][0]
        assert (problem["file"], problem["code"]) == ("flows/echo.json", code)
        assert problem["line"] is not None
        pinned = server.invoke("echo", Q, {"X-Flow-Version": bad[:7]})
        assert pinned.status_code == 404 and pinned.json()["error"]["code"] == "version-not-servable"
        assert f"flows/echo.json:{problem['line']} {code}" in pinned.json()["error"]["message"]
        failed = server.client.get("/history").json()["events"][1]
        assert (failed["event"], failed["flow"], failed["serving"]) == ("failed", "echo", good)
        assert failed["problems"][0]["code"] == code


def test_a_server_starting_on_a_head_where_a_flow_failed_serves_that_flows_last_good_build(
    remote: Remote, tmp_path: Path
) -> None:
    good = remote.sha()
    bad = remote.publish({"flows/echo.json": "{", "flows/other.json": echo_flow("other", answer="x")}, "broken")
    with served(remote, tmp_path) as server:
        assert answer(server.invoke("echo", Q)) == ("one", good)
        assert answer(server.invoke("other", Q)) == ("x", bad)
        statuses = {v["sha"]: v["status"] for v in server.client.get("/versions").json()["versions"]}
        assert statuses == {bad: "ready", good: "ready"}


def test_a_commit_whose_routing_file_fails_changes_nothing_and_a_server_starting_on_it_serves_the_one_before(
    remote: Remote, tmp_path: Path
) -> None:
    good = remote.sha()
    with served(remote, tmp_path) as server:
        bad = remote.publish({"gitops-flow.yaml": "routes: [", "flows/echo.json": echo_flow(answer="two")}, "bad yaml")
        server.reconcile()
        assert answer(server.invoke("echo", Q)) == ("one", good)  # not even the commit's good flow goes live
        versions = {v["sha"]: v for v in server.client.get("/versions").json()["versions"]}
        assert versions[bad]["status"] == "failed"
        assert [p["code"] for p in versions[bad]["problems"]] == ["invalid-yaml"]
    with served(remote, tmp_path / "again") as server:
        assert answer(server.invoke("echo", Q)) == ("one", good)


def test_a_revert_reuses_what_was_built_and_is_live_at_once(remote: Remote, tmp_path: Path) -> None:
    first = remote.sha()
    with served(remote, tmp_path) as server:
        second = remote.publish({"flows/echo.json": echo_flow(answer="two")})
        server.reconcile()
        remote.revert(second)
        reverted = remote.sha()
        remote.push()
        server.reconcile()
        assert answer(server.invoke("echo", Q)) == ("one", reverted)
        table = server.deps.reconciler.table
        # same blob, same build: the revert cost no validation and no build
        assert table.versions[reverted].flows["echo"] is table.versions[first].flows["echo"]
        assert table.versions[second].flows["echo"] is not table.versions[first].flows["echo"]


def test_a_commit_that_deletes_a_flow_lets_its_sessions_finish(remote: Remote, tmp_path: Path) -> None:
    first = remote.publish({"flows/other.json": echo_flow("other", answer="x")})
    with served(remote, tmp_path) as server:
        assert answer(server.invoke("other", Q, {"X-Flow-Session": "old"}))[1] == first
        gone = remote.publish({"flows/other.json": None}, "drop other")
        server.reconcile()
        assert answer(server.invoke("other", Q, {"X-Flow-Session": "old"})) == ("x", first)
        for headers in ({}, {"X-Flow-Session": "new"}):
            response = server.invoke("other", Q, headers)
            assert response.status_code == 404 and response.json()["error"]["code"] == "unknown-flow"
        assert answer(server.invoke("echo", Q))[1] == gone
        versions = server.client.get("/versions").json()["versions"]
        assert versions[0]["changed"] == ["other"] and versions[0]["flows"] == ["echo"]


def test_a_force_push_that_rewrites_the_branch_is_followed(remote: Remote, tmp_path: Path) -> None:
    base = remote.sha()
    with served(remote, tmp_path) as server:
        dropped = remote.publish({"flows/echo.json": echo_flow(answer="two")})
        server.reconcile()
        assert answer(server.invoke("echo", Q, {"X-Flow-Session": "s"}))[1] == dropped
        remote.force_push_reset(base)
        rewritten = remote.publish({"flows/echo.json": echo_flow(answer="three")}, "rewritten")
        outcome = server.reconcile()
        assert outcome["head"] == rewritten
        assert answer(server.invoke("echo", Q)) == ("three", rewritten)
        assert answer(server.invoke("echo", Q, {"X-Flow-Session": "s"})) == ("two", dropped)  # finishes where it began
        events = [e["event"] for e in server.client.get("/history").json()["events"]]
        assert events[:2] == ["deployed", "rewritten"]


def test_every_commit_of_a_push_becomes_a_version_but_only_the_head_goes_live(remote: Remote, tmp_path: Path) -> None:
    with served(remote, tmp_path, pins="history") as server:
        shas = [remote.commit({"flows/echo.json": echo_flow(answer=str(n))}, f"answer {n}") for n in range(3)]
        remote.push()
        assert server.reconcile()["new"] == shas  # oldest first
        for sha in shas[:2]:  # never the branch head: never served, even to a history pin
            refused = server.invoke("echo", Q, {"X-Flow-Version": sha})
            assert refused.status_code == 404 and refused.json()["error"]["code"] == "unknown-version"
        assert answer(server.invoke("echo", Q, {"X-Flow-Version": shas[2]})) == ("2", shas[2])
        assert answer(server.invoke("echo", Q))[1] == shas[-1]
        events = [e["event"] for e in server.client.get("/history").json()["events"]][:3]
        assert events == ["deployed", "built", "built"]


def test_state_survives_a_restart_with_the_sqlite_store(remote: Remote, tmp_path: Path) -> None:
    first = remote.sha()
    state = tmp_path / "state.db"
    with served(remote, tmp_path, store=SqliteStore(state)) as server:
        answer(server.invoke("echo", Q, {"X-Flow-Session": "alice"}))
        second = remote.publish({"flows/echo.json": echo_flow(answer="two")})
        server.reconcile()
        history = server.client.get("/history").json()["events"]
    with served(remote, tmp_path, store=SqliteStore(state)) as server:
        assert answer(server.invoke("echo", Q)) == ("two", second)
        assert answer(server.invoke("echo", Q, {"X-Flow-Session": "alice"})) == ("one", first)
        assert server.client.get("/history").json()["events"][-len(history) :] == history
        statuses = {v["sha"]: v["status"] for v in server.client.get("/versions").json()["versions"]}
        assert statuses == {first: "ready", second: "ready"}


def test_versions_nothing_needs_are_retired_and_pinned_ones_are_kept(remote: Remote, tmp_path: Path) -> None:
    first = remote.sha()
    with served(remote, tmp_path, keep_versions=1, pins="history") as server:
        answer(server.invoke("echo", Q, {"X-Flow-Session": "keeps-first"}))
        shas = []
        for n in range(3):  # each one the head for a while: each went live
            shas.append(remote.publish({"flows/echo.json": echo_flow(answer=str(n))}))
            server.reconcile()
        statuses = {v["sha"]: v["status"] for v in server.client.get("/versions").json()["versions"]}
        assert statuses == {first: "ready", shas[0]: "retired", shas[1]: "retired", shas[2]: "ready"}
        assert answer(server.invoke("echo", Q, {"X-Flow-Session": "keeps-first"}))[1] == first
        # a retired version that went live is still reachable by a history pin: it is built again, off the lock
        assert answer(server.invoke("echo", Q, {"X-Flow-Version": shas[0]})) == ("0", shas[0])
        assert shas[0] in server.deps.reconciler.rebuilds


def test_a_repository_that_does_not_exist_is_not_ready_and_says_why(tmp_path: Path) -> None:
    missing = Remote(tmp_path / "nowhere.git", tmp_path / "work")
    with served(missing, tmp_path, wait=False, fetch_timeout=5) as server:
        wait_until(lambda: server.client.get("/readyz").json()["source"]["last_error"], what="a fetch error")
        ready = server.client.get("/readyz")
        assert ready.status_code == 503 and "nowhere.git" in ready.json()["source"]["last_error"]
        assert server.client.get("/healthz").status_code == 200
        response = server.invoke("echo", Q)
        assert response.status_code == 503 and response.json()["error"]["code"] == "not-ready"


def test_a_repository_that_goes_away_while_serving_keeps_the_server_serving(remote: Remote, tmp_path: Path) -> None:
    first = remote.sha()
    with served(remote, tmp_path) as server:
        shutil.rmtree(remote.bare)
        outcome = server.reconcile()
        assert outcome["error"] and "origin.git" in outcome["error"]
        assert answer(server.invoke("echo", Q)) == ("one", first)
        ready = server.client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["source"]["last_error"] == outcome["error"]
        assert server.client.get("/versions").json()["source"]["last_error"] == outcome["error"]


def test_deploys_under_load_drop_no_request(remote: Remote, tmp_path: Path) -> None:
    """Clients hammer a real loopback server while ten commits go live; every request succeeds."""
    pushed = [remote.sha()]
    failures: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()
    with on_loopback(remote, tmp_path, poll_interval=0.05) as (url, _app):
        wait_until(lambda: httpx.get(url + "/readyz").status_code == 200, what="readiness")

        def load() -> None:
            with httpx.Client(base_url=url) as client:
                while not stop.is_set():
                    try:
                        response = client.post("/flows/echo/invoke", json={"input": Q})
                        if response.status_code != 200:
                            failures.append(f"{response.status_code} {response.text}")
                        else:
                            seen.add(response.headers["x-flow-version"])
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))

        workers = [threading.Thread(target=load) for _ in range(4)]
        for worker in workers:
            worker.start()
        try:
            for n in range(10):
                pushed.append(remote.publish({"flows/echo.json": echo_flow(answer=f"v{n}")}))
                wait_until(lambda: httpx.get(url + "/readyz").json()["version"] == pushed[-1], what="the deploy")
        finally:
            stop.set()
            for worker in workers:
                worker.join()
    assert failures == []
    assert seen <= set(pushed) and len(seen) > 1


def test_a_deploy_settles_the_heap_out_of_the_collectors_sight(remote: Remote, tmp_path: Path) -> None:
    """A moment after each deploy the server collects once and freezes what is left (cli/process.py settle_heap, which
    `serve` passes with GITOPS_FLOW_FREEZE_HEAP on), so the garbage collector stops walking the built flows under
    load; the next deploy unfreezes them first."""
    gc.unfreeze()
    try:
        with served(remote, tmp_path, settle_heap=process.settle_heap) as server:
            wait_until(lambda: gc.get_freeze_count() > 0, what="the first deploy's freeze")
            gc.unfreeze()
            remote.publish({"flows/echo.json": echo_flow(answer="two")})
            assert server.reconcile()["changed"] is True
            assert gc.get_freeze_count() == 0  # not yet: the pause waits until the new version is serving
            wait_until(lambda: gc.get_freeze_count() > 0, what="the second deploy's freeze")
            gc.unfreeze()
            assert server.reconcile()["changed"] is False
            time.sleep(2 * HEAP_SETTLE_DELAY)
            assert gc.get_freeze_count() == 0  # a pass that changed nothing leaves the heap alone
    finally:
        gc.unfreeze()


class FailingStore(MemoryStore):
    """A store that refuses writes while ``down``, as Redis does when it is unreachable."""

    down = False

    async def add_event(self, event: dict[str, Any], *, once: str | None = None) -> bool:
        if self.down:
            raise StoreError("the state store is unreachable")
        return await super().add_event(event, once=once)


def test_a_deploy_waits_for_the_store_and_is_recorded_once_it_is_back(remote: Remote, tmp_path: Path) -> None:
    first = remote.sha()
    store = FailingStore()
    with served(remote, tmp_path, store=store) as server:
        second = remote.publish({"flows/echo.json": echo_flow(answer="two")}, "second answer")
        store.down = True
        failed = server.client.post("/admin/reconcile", headers=ADMIN)
        assert failed.status_code == 503 and failed.json()["error"]["code"] == "store-unavailable"
        assert answer(server.invoke("echo", Q)) == ("one", first)  # nothing half-deployed, the last version serves
        store.down = False
        assert server.reconcile()["new"] == [second]
        assert answer(server.invoke("echo", Q)) == ("two", second)
        deployed = [e["sha"] for e in server.client.get("/history").json()["events"] if e["event"] == "deployed"]
        assert deployed == [second, first]


def test_the_commits_of_one_fetch_do_not_all_sit_in_memory(remote: Remote, tmp_path: Path) -> None:
    """Issue 11: 20 commits of 10,000 flows, built before any was retired, peaked at 2.1 GB. Now each commit of a
    fetch, once its child is built, keeps only the builds its child still serves from it."""
    with served(remote, tmp_path) as server:
        shas = []
        for n in range(4):
            files = {f"flows/f{i}.json": echo_flow(f"f{i}", answer=f"{n}") for i in range(3)}
            if n == 3:
                files["flows/f0.json"] = "{ broken"  # f0 fails at the head: it keeps serving the commit before's
            shas.append(remote.commit(files, f"round {n}"))
        remote.push()
        server.reconcile()
        held = {v.sha: sorted(v.flows) for v in server.deps.reconciler.versions if v.sha in shas}
        assert held == {shas[0]: [], shas[1]: [], shas[2]: ["f0"], shas[3]: ["echo", "f1", "f2"]}
        assert answer(server.invoke("f0", Q)) == ("2", shas[2])
        assert answer(server.invoke("f1", Q)) == ("3", shas[3])
        cached = {id(r.built) for r in server.deps.reconciler.builder._cache.values() if r.built is not None}
        assert cached == {id(server.deps.reconciler.table.versions[s].flows[f]) for s, fs in held.items() for f in fs}


def test_a_merge_commit_is_a_deploy_not_a_rollback(remote: Remote, tmp_path: Path) -> None:
    """GitHub's merge button makes a --no-ff merge whose tree is the branch tip's: that tip is built in the same
    fetch but never served, so the merge deploys new content; it rolls nothing back."""
    with served(remote, tmp_path) as server:
        remote.git("checkout", "--quiet", "-b", "feature")
        remote.commit({"flows/echo.json": echo_flow(answer="two")}, "two")
        remote.git("checkout", "--quiet", "main")
        remote.git("merge", "--quiet", "--no-ff", "-m", "Merge pull request #1", "feature")
        remote.push()
        merged = remote.sha()
        server.reconcile()
        assert answer(server.invoke("echo", Q)) == ("two", merged)
        kinds = [(e["event"], e["sha"]) for e in server.client.get("/history").json()["events"]]
        assert kinds[0] == ("deployed", merged)
        assert not any(kind == "rolled-back" for kind, _ in kinds)
