"""`gitops-flow serve --workers N`: N processes on one port act as one server, with one fetch and one validation per
commit. Each test drives a real `serve` process; which worker answers is decided by stopping the others (SIGSTOP):
the kernel then hands every new connection to the one left running."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gitops_flow.delivery.routing_table import sticky_point
from gitops_flow.githost import github_webhook as webhook
from tests.githttp import git_http
from tests.gitrepo import Remote
from tests.process import ADMIN_TOKEN, ServeProcess, free_port, serve_process
from tests.redisenv import RedisSpace
from tests.served import echo_flow, wait_until
from tests.test_replicas import PUSH, chat_flow, routing
from tests.test_sandbox import components_file, hog_flow

SECRET = "workers-webhook-secret"
Q = {"question": "hi"}
CORES = len(os.sched_getaffinity(0))


class Workers:
    """A running `serve --workers N` seen worker by worker: their pids by slot, and a way to pick who answers."""

    def __init__(self, server: ServeProcess, count: int) -> None:
        self.server = server
        self.count = count
        self.http = httpx.Client(base_url=server.url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0))
        self.pids: dict[int, int] = {}
        wait_until(self._all_ready, timeout=60, what=f"{count} ready workers")

    def _all_ready(self) -> bool:
        response = self.http.get("/readyz")
        if response.status_code == 200:
            worker = response.json()["worker"]
            self.pids[worker["slot"]] = worker["pid"]
        return len(self.pids) == self.count

    def leader(self) -> int:
        """The slot of the fetch leader."""
        for slot in self.pids:
            with self.only(slot):
                if self.http.get("/readyz").json()["worker"]["leader"]:
                    return slot
        raise AssertionError("no worker leads")

    @contextmanager
    def only(self, slot: int) -> Iterator[httpx.Client]:
        """Every request of the block is answered by worker ``slot`` (the others are stopped meanwhile)."""
        others = [pid for s, pid in self.pids.items() if s != slot]
        for pid in others:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield self.http
        finally:
            for pid in others:
                os.kill(pid, signal.SIGCONT)

    def serving(self, slot: int) -> str:
        with self.only(slot) as http:
            body = http.get("/readyz").json()
            assert body["worker"]["slot"] == slot
            return str(body["version"])

    def answer(self, slot: int, flow: str = "echo", **headers: str) -> httpx.Response:
        with self.only(slot) as http:
            return http.post(f"/flows/{flow}/invoke", json={"input": Q}, headers=headers)

    def deliver_push(self, slot: int, before: str, after: str) -> None:
        body = json.dumps({**PUSH, "ref": "refs/heads/main", "before": before, "after": after}).encode()
        headers = {
            "content-type": "application/json",
            "x-github-event": "push",
            "x-github-delivery": f"push-{time.monotonic_ns()}",
            "x-hub-signature-256": webhook.sign(SECRET.encode(), body),
        }
        with self.only(slot) as http:
            response = http.post("/webhooks/github", content=body, headers=headers)
        assert response.status_code == 202, response.text

    def all_serve(self, sha: str) -> bool:
        return all(self.serving(slot) == sha for slot in self.pids)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples ``name`` whose labels include ``labels``, as one scrape of any worker gives it."""
        total = 0.0
        for family in text_string_to_metric_families(self.http.get("/metrics").text):
            for found in family.samples:
                if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                    total += found.value
        return total


@contextmanager
def workers(remote: Remote, tmp_path: Path, count: int | None = 2, **options: Any) -> Iterator[Workers]:
    env = {"GITOPS_FLOW_WEBHOOK_SECRET": SECRET, **options.pop("env", {})}
    with serve_process(remote, tmp_path, env=env, workers=count, ready=False, **options) as server:
        seen = Workers(server, count or CORES)
        try:
            yield seen
        finally:
            seen.http.close()


@pytest.mark.skipif(CORES < 2, reason="the default is one worker per core: this machine has one")
def test_by_default_one_worker_per_core_fetches_and_validates_each_commit_once(remote: Remote, tmp_path: Path) -> None:
    """The real default (no --workers): one worker per available core; a webhook to either worker makes every worker
    serve the new commit, fetched from the remote once and validated once, and /metrics counts all workers."""
    token = "workers-git-token"
    first = remote.publish({"flows/echo.json": echo_flow(answer="one")})
    env = {"GITOPS_FLOW_GIT_TOKEN": token}
    with git_http(tmp_path, username="x-access-token", password=token) as host:
        with workers(remote, tmp_path, count=None, env=env, repo=host.url("origin.git")) as w:
            assert len(set(w.pids.values())) == CORES
            assert w.all_serve(first)
            leader = w.leader()
            follower = next(slot for slot in w.pids if slot != leader)
            before = first
            for answer, told in (("two", follower), ("three", leader)):  # a webhook to a follower, then the leader
                after = remote.publish({"flows/echo.json": echo_flow(answer=answer)})
                w.deliver_push(told, before, after)
                wait_until(lambda a=after: w.all_serve(a), timeout=30, what=f"every worker to serve {answer}")
                before = after
            for slot in w.pids:
                assert w.answer(slot).json()["output"] == "three"
            fetches = [p for p, auth in host.requests if auth and "info/refs?service=git-upload-pack" in p]
            # serve's check that the repository and branch can be read (before any worker starts), the fetch
            # leader's first, and one per push: not one per worker
            assert len(fetches) == 4
            assert w.metric("gitops_flow_fetches_total") == 3
            assert w.metric("gitops_flow_flow_validations_total") == 3  # one flow file, judged once per commit
            assert w.metric("gitops_flow_requests_total", flow="echo") == CORES  # every worker's, from any
            events = w.http.get("/history").json()["events"]
            assert sorted(e["sha"] for e in events if e["event"] == "deployed") == sorted([first, *_heads(remote)])


def test_a_flow_the_leader_still_tests_is_tested_by_the_leader_alone(remote: Remote, tmp_path: Path) -> None:
    """A flow whose tests outlast the deploy's wait goes out pending: the leader's record says so, and a follower
    waits for the leader's verdict (it came to every worker through the record) instead of testing it again."""
    first = remote.publish({"flows/echo.json": echo_flow(answer="one")})
    env = {"GITOPS_FLOW_TEST_BUDGET": "6"}  # past the deploy's wait: the hog's test is killed at its limit
    with workers(remote, tmp_path, env=env, args=["--components", str(components_file(tmp_path))]) as w:
        assert w.all_serve(first)
        hogging = remote.publish({"flows/hog.json": hog_flow()}, "a flow whose test hogs")
        w.deliver_push(w.leader(), first, hogging)
        wait_until(lambda: w.all_serve(hogging), timeout=30, what="every worker on the new head")

        def judged(slot: int) -> dict[str, Any]:
            with w.only(slot) as http:
                return next(v for v in http.get("/versions").json()["versions"] if v["sha"] == hogging)

        wait_until(lambda: all("hog" in judged(slot)["failed"] for slot in w.pids), timeout=60, what="the verdict")
        for slot in w.pids:
            [problem] = judged(slot)["failed"]["hog"]
            assert problem["code"] == "test-timeout" and judged(slot)["pending"] == []
        assert w.metric("gitops_flow_flow_validations_total") == 2  # echo at the first commit, hog at the second


def _heads(remote: Remote) -> list[str]:
    return remote.git("rev-list", "--max-count=2", "HEAD").split()


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_session_a_pin_and_a_console_login_hold_whichever_worker_answers(
    remote: Remote, tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """With either shared store: a webhook to one worker makes the other serve the commit, and what a client began on
    one worker (a conversation, a console session) goes on on the other."""
    args: list[str] = []
    if backend == "redis":
        space: RedisSpace = request.getfixturevalue("redis_space")
        args = ["--state", f"{space.url}?prefix={space.prefix}"]
    first = remote.publish({"flows/echo.json": echo_flow(answer="one"), "flows/chat.json": chat_flow()})
    with workers(remote, tmp_path, env={"GITOPS_FLOW_PINS": "history"}, args=args) as w:
        with w.only(0) as http:
            said = http.post(
                "/flows/chat/invoke", json={"input": {"question": "My name is Ada."}}, headers={"X-Flow-Session": "s1"}
            )
            assert said.status_code == 200 and said.headers["x-flow-version"] == first
            login = http.post("/ui/login", data={"token": ADMIN_TOKEN, "name": "ada"}, headers={"Origin": w.server.url})
            assert login.status_code == 303
        second = remote.publish({"flows/echo.json": echo_flow(answer="two")})
        w.deliver_push(0, first, second)
        wait_until(lambda: w.all_serve(second), timeout=30, what="both workers to serve the new commit")
        with w.only(1) as http:
            again = http.post(
                "/flows/chat/invoke", json={"input": {"question": "Who am I?"}}, headers={"X-Flow-Session": "s1"}
            )
            assert again.status_code == 200, again.text
            assert again.headers["x-flow-version"] == first  # the conversation's version, on the other worker
            messages = [(m["type"], m["content"]) for m in again.json()["output"]["messages"]]
            assert messages[0] == ("human", "My name is Ada.")  # the turn worker 0 took, read from the store
            assert login.cookies  # the session cookie, kept by the client
            page = http.get("/ui")
            assert page.status_code == 200 and "ada" in page.text  # signed in on worker 0, known on worker 1
            marker = 'name="csrf" value="'
            start = page.text.index(marker) + len(marker)
            token = page.text[start : page.text.index('"', start)]
            kept = dict(http.cookies)
            out = http.post("/ui/logout", data={"csrf": token}, headers={"Origin": w.server.url})
            assert out.status_code == 303  # signed out on worker 1
        w.http.cookies.update(kept)  # a copy of the cookie taken before signing out

        def refused_on_worker_0() -> bool:
            with w.only(0) as http:
                return http.post("/ui/fetch", data={"csrf": token}, headers={"Origin": w.server.url}).status_code == 401

        wait_until(refused_on_worker_0, timeout=5, what="worker 0 to refuse the signed-out session")
        for slot in (0, 1):  # a pin to a version no longer live: rebuilt by each worker (a follower, from the record)
            pinned = w.answer(slot, **{"X-Flow-Version": first[:12]})
            assert (pinned.json()["output"], pinned.headers["x-flow-version"]) == ("one", first)
            assert w.answer(slot).json()["output"] == "two"


def test_commits_pushed_under_load_swap_with_no_dropped_request(remote: Remote, tmp_path: Path) -> None:
    first = remote.publish({"flows/echo.json": echo_flow(answer="v0")})
    with workers(remote, tmp_path) as w:
        stop = threading.Event()
        seen: list[tuple[int, str]] = []

        def load() -> None:
            with httpx.Client(base_url=w.server.url, timeout=30) as client:
                while not stop.is_set():
                    response = client.post("/flows/echo/invoke", json={"input": Q})
                    seen.append((response.status_code, response.json().get("output", response.text)))

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            before = first
            for n in range(1, 4):
                after = remote.publish({"flows/echo.json": echo_flow(answer=f"v{n}")})
                w.deliver_push(n % 2, before, after)
                wait_until(lambda a=after: w.all_serve(a), timeout=30, what=f"every worker to serve v{n}")
                before = after
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert seen and all(status == 200 for status, _ in seen), [s for s in seen if s[0] != 200][:3]
        assert {output for _, output in seen} <= {"v0", "v1", "v2", "v3"}
        assert seen[-1][1] == "v3"


def test_an_abort_decided_from_both_workers_traffic_holds_on_both(remote: Remote, tmp_path: Path) -> None:
    config = routing(("stable", 50), ("main", 50), analysis={"min_requests": 20, "max_error_rate": 0.2})
    stable = remote.commit({"flows/echo.json": echo_flow(answer='"one"'), "gitops-flow.yaml": config})
    remote.tag("stable", stable)
    failing = json.loads(echo_flow(answer="not json"))
    failing["nodes"][2]["component"] = "JsonOutputParser"  # every canary request fails while running
    bad = remote.publish({"flows/echo.json": json.dumps(failing)})
    remote.push_tags()
    with workers(remote, tmp_path) as w:  # the default state: one SQLite file
        users = [u for u in (f"user-{n}" for n in range(200)) if sticky_point("echo", u) >= 0.5][:24]
        for slot, some in ((0, users[:12]), (1, users[12:])):  # under min_requests each, over it together
            for user in some:
                response = w.answer(slot, **{"X-Flow-User": user})
                assert (response.status_code, response.headers["x-flow-version"]) == (200, stable)

        def aborted() -> dict[str, Any] | None:
            events = w.http.get("/history").json()["events"]
            return next((e for e in events if e["event"] == "aborted"), None)

        wait_until(lambda: aborted() is not None, timeout=20, what="the abort")
        event = aborted()
        assert event is not None and (event["sha"], event["ref"]) == (bad, "main")
        assert 12 < event["requests"] <= 24

        def states(slot: int) -> list[tuple[str, str]]:
            with w.only(slot) as http:
                return [(t["ref"], t["state"]) for t in http.get("/flows").json()["flows"][0]["versions"]]

        for slot in (0, 1):
            wait_until(lambda s=slot: states(s) == [("stable", "live"), ("main", "aborted")], what="the abort here")
            assert all(w.answer(slot, **{"X-Flow-User": u}).json()["metadata"]["ref"] == "stable" for u in users)


def test_a_dead_leader_is_restarted_and_replaced_and_sigterm_drains(remote: Remote, tmp_path: Path) -> None:
    slow = echo_flow(name="slow", answer="late")
    slow_doc = json.loads(slow)
    slow_doc["nodes"][1]["params"]["latency_ms"] = 1500
    first = remote.publish({"flows/echo.json": echo_flow(answer="one"), "flows/slow.json": json.dumps(slow_doc)})
    with workers(remote, tmp_path) as w:
        leader = w.leader()
        os.kill(w.pids[leader], signal.SIGKILL)
        old = w.pids.pop(leader)
        w.pids.clear()
        wait_until(w._all_ready, timeout=60, what="the killed worker to be started again")
        assert w.pids[leader] != old
        assert "starting it again" in w.server.log_text()
        wait_until(lambda: any(w.http.get("/readyz").json()["worker"]["leader"] for _ in range(4)), what="a leader")
        second = remote.publish({"flows/echo.json": echo_flow(answer="two")})
        w.deliver_push(1 - leader, first, second)
        wait_until(lambda: w.all_serve(second), timeout=30, what="both workers to serve after the takeover")

        answers: list[httpx.Response] = []
        pending = threading.Thread(target=lambda: answers.append(w.http.post("/flows/slow/invoke", json={"input": Q})))
        pending.start()
        time.sleep(0.5)  # the slow request is in flight
        w.server.process.send_signal(signal.SIGTERM)
        pending.join()
        assert w.server.process.wait(timeout=30) == 0
        assert answers[0].status_code == 200 and answers[0].json()["output"] == "late"  # drained, not dropped
        for pid in w.pids.values():
            wait_until(lambda p=pid: not _alive(p), what=f"worker {pid} to end")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def _serve(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GITOPS_FLOW_")}
    command = [sys.executable, "-m", "gitops_flow", "serve", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=environ, cwd=cwd)


def test_memory_state_with_several_workers_is_refused(remote: Remote, tmp_path: Path) -> None:
    done = _serve("--repo", remote.url, "--state", "memory://", "--workers", "2", "--port", "0", cwd=tmp_path)
    assert done.returncode == 2
    assert "--workers 2 with --state memory://: workers are processes and cannot share memory" in done.stderr


def test_a_port_in_use_stops_the_server_before_any_worker_starts(remote: Remote, tmp_path: Path) -> None:
    remote.publish({"flows/echo.json": echo_flow()})
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        done = _serve("--repo", remote.url, "--workers", "2", "--port", str(port), cwd=tmp_path)
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr
    assert "Started server process" not in done.stderr


def _workers_of(supervisor: int) -> list[int]:
    """The worker processes of a supervisor (not multiprocessing's resource tracker, its other child)."""
    found = []
    for pid in map(int, Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()):
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


def test_a_worker_that_keeps_dying_stops_the_server_and_workers_die_with_their_supervisor(
    remote: Remote, tmp_path: Path
) -> None:
    remote.publish({"flows/echo.json": echo_flow()})
    with workers(remote, tmp_path) as w:
        supervisor = w.server.process.pid
        killed: set[int] = set()
        deadline = time.monotonic() + 60
        while w.server.process.poll() is None and time.monotonic() < deadline:
            for pid in _workers_of(supervisor):
                if pid not in killed and pid != w.pids[1]:  # slot 0's worker, each time it is started again
                    killed.add(pid)
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        assert w.server.process.wait(timeout=30) == 1
        assert "worker 0 died 6 times in a minute; stopping the server" in w.server.log_text()
        assert not _alive(w.pids[1])  # the healthy worker was stopped too

    remote.publish({"flows/echo.json": echo_flow(answer="two")})
    with workers(remote, tmp_path / "again") as w:
        w.server.process.kill()  # the supervisor dies without a word to its workers
        for pid in w.pids.values():
            wait_until(lambda p=pid: not _alive(p), timeout=20, what=f"worker {pid} to die with its supervisor")


def test_workers_busy_in_c_code_die_with_their_supervisor(remote: Remote, tmp_path: Path) -> None:
    """A worker held in C code (a flow's operator component matching a backtracking regex: the interpreter's lock
    is never let go, so no Python signal handler runs) dies all the same when its supervisor is killed outright:
    PR_SET_PDEATHSIG sends SIGKILL, which no process can ignore, not SIGTERM."""
    components = tmp_path / "components.yaml"
    components.write_text("components:\n  Hog:\n    target: tests.operator_components:hog\n    kind: transform\n")
    hog = {"version": 1, "name": "hog", "nodes": [{"id": "hog", "component": "Hog"}]}
    remote.publish({"flows/echo.json": echo_flow(), "flows/hog.json": json.dumps(hog)})
    with workers(remote, tmp_path, args=["--components", str(components)]) as w:
        busy = [threading.Thread(target=_call_hog, args=(w.server.url,), daemon=True) for _ in range(4)]
        for thread in busy:
            thread.start()
        wait_until(lambda: any(_busy(pid) for pid in w.pids.values()), timeout=30, what="a worker busy in the regex")
        w.server.process.kill()  # the supervisor dies without a word to its workers
        for pid in w.pids.values():
            wait_until(lambda p=pid: not _alive(p), timeout=10, what=f"busy worker {pid} to die with its supervisor")


def _call_hog(url: str) -> None:
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(f"{url}/flows/hog/invoke", json={"input": "x"}, timeout=30)


def _busy(pid: int) -> bool:
    """Whether ``pid`` keeps a core busy for a part of the next second (the hog's regex)."""
    before = _cpu_seconds(pid)
    time.sleep(1.0)
    return _cpu_seconds(pid) - before > 0.05  # an idle worker spends nothing; the machine may be loaded


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
