"""Author code never holds the server (issue 21), against a real `gitops-flow serve` over real git pushes: a flow's
tests run in a child process killed at its time limit, authors' regexes run on RE2, a slow flow's tests hold no
other flow's deploy or revert back, and a flow's schemas are computed once per build, never per request."""

from __future__ import annotations

import io
import json
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from gitops_flow.cli import main as cli
from tests.gitrepo import Remote
from tests.process import ServeProcess, serve_process
from tests.served import echo_flow, wait_until

Q = {"question": "hi"}
BUDGET = "6"  # seconds a flow's tests may take on these servers: past builder.VERDICT_WAIT_S (GITOPS_FLOW_TEST_BUDGET)
HEALTHZ_SLACK = 2.0  # /healthz must answer within 100 ms; slack for a loaded test machine (it stalled for minutes)
COMPONENTS = """\
components:
  Hog:
    target: tests.operator_components:hog
    kind: transform
"""
CATASTROPHIC = {"name": "backtracks", "input": Q, "expect": {"matches": "^(a+)+$"}}


def hog_flow(name: str = "hog", tests: bool = True) -> str:
    """A flow whose one node holds the interpreter's lock for minutes when it runs (tests.operator_components.hog);
    with ``tests``, a test runs it."""
    doc: dict[str, Any] = {"version": 1, "name": name, "nodes": [{"id": "hog", "component": "Hog"}]}
    if tests:
        doc["tests"] = [{"name": "hogs", "input": "x", "expect": {"equals": "False"}}]
    return json.dumps(doc, indent=2)


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def components_file(tmp_path: Path) -> Path:
    path = tmp_path / "components.yaml"
    path.write_text(COMPONENTS)
    return path


@pytest.fixture(scope="module")
def components(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return components_file(tmp_path_factory.mktemp("components"))


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Remote:
    tmp_path = tmp_path_factory.mktemp("sandbox")
    remote = Remote.create(tmp_path)
    remote.publish({"flows/echo.json": echo_flow(answer="one")}, "an ordinary flow")
    return remote


@pytest.fixture(scope="module")
def server(remote: Remote, components: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp_path = tmp_path_factory.mktemp("server")
    env = {"GITOPS_FLOW_TEST_BUDGET": BUDGET}
    with serve_process(remote, tmp_path, env=env, args=["--components", str(components)]) as process:
        yield process


def answer(server: ServeProcess, flow: str) -> tuple[Any, str]:
    response = server.invoke(flow, Q)
    assert response.status_code == 200, response.text
    return response.json()["output"], response.headers["x-flow-version"]


def version(server: ServeProcess, sha: str) -> dict[str, Any]:
    found: dict[str, Any] = next(v for v in server.client.get("/versions").json()["versions"] if v["sha"] == sha)
    return found


class Heartbeat:
    """/healthz asked every 50 ms on a thread of its own; ``slowest`` is its slowest answer (or a failure)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.slowest = 0.0
        self.asked = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.wait(0.05):
                started = time.perf_counter()
                try:
                    status = client.get("/healthz").status_code
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                self.asked += 1
                self.slowest = max(self.slowest, time.perf_counter() - started)
                if status != 200:
                    self.failures.append(f"status {status}")


def test_the_catastrophic_regex_of_a_merged_flows_test_runs_in_linear_time(server: ServeProcess) -> None:
    """The review's reproduction: ``^(a+)+$`` against ``"a" * 34 + "!"`` froze the server in its builder thread.
    On RE2 it is answered at once: the flow fails its test (the output does not match) and nothing else."""
    remote = server.remote
    with Heartbeat(server.url) as beat:
        sha = remote.publish(
            {"flows/regex.json": echo_flow("regex", answer="a" * 34 + "!", tests=[CATASTROPHIC])}, "a regex test"
        )
        server.reconcile()
        wait_until(lambda: "regex" in version(server, sha)["failed"], timeout=30, what="the regex flow's verdict")
        assert answer(server, "echo")[0] == "one"
    [problem] = version(server, sha)["failed"]["regex"]
    assert problem["code"] == "test-failed" and "expected the output to match /^(a+)+$/" in problem["message"]
    assert not beat.failures and beat.slowest < HEALTHZ_SLACK, (beat.slowest, beat.failures)
    remote.publish({"flows/regex.json": None}, "remove the regex flow")
    server.reconcile()


def test_a_test_holding_the_interpreter_lock_is_killed_at_its_limit_and_holds_nothing_back(
    server: ServeProcess, components: Path, tmp_path: Path
) -> None:
    """A test that holds the GIL for minutes (C code: Python's backtracking ``re``) runs in a child process: the
    server answers /healthz throughout, another team's change and its revert go live while the test runs, and the
    flow fails with test-timeout once the child is killed at the limit."""
    remote = server.remote
    with Heartbeat(server.url) as beat:
        hogging = remote.publish({"flows/hog.json": hog_flow()}, "a flow whose test hogs")
        server.reconcile()  # returns within VERDICT_WAIT_S: the hog flow waits for its verdict, pending
        assert "hog" in version(server, hogging)["pending"]
        fix = remote.publish({"flows/echo.json": echo_flow(answer="two")}, "another team's urgent fix")
        server.reconcile()
        assert answer(server, "echo") == ("two", fix)  # not held back behind the hog's test
        revert = remote.revert(fix)
        remote.push()
        server.reconcile()
        assert answer(server, "echo") == ("one", revert)  # content built before: no build, no wait
        wait_until(lambda: "hog" in version(server, revert)["failed"], timeout=30, what="the hog flow's verdict")
    assert beat.asked > 20 and not beat.failures, (beat.asked, beat.failures)
    assert beat.slowest < HEALTHZ_SLACK, beat.slowest
    for sha in (hogging, revert):
        [problem] = version(server, sha)["failed"]["hog"]
        assert problem["code"] == "test-timeout", problem
        assert f"ran past their time limit of {BUDGET} s" in problem["message"]
    assert version(server, revert)["pending"] == []
    assert server.invoke("hog", "x").status_code == 503  # never served: nothing-servable
    events = [(e["event"], e.get("flow")) for e in server.client.get("/history").json()["events"]]
    assert ("failed", "hog") in events

    # a restart runs the test again, and is ready once the test is killed at its limit (it never hung before)
    env = {"GITOPS_FLOW_TEST_BUDGET": BUDGET}
    with serve_process(remote, tmp_path, env=env, args=["--components", str(components)]) as again:
        assert answer(again, "echo") == ("one", revert)
        [problem] = version(again, revert)["failed"]["hog"]
        assert problem["code"] == "test-timeout"
    remote.publish({"flows/hog.json": None}, "remove the hog")
    server.reconcile()


def test_a_flows_schema_is_computed_once_per_build_not_per_request(server: ServeProcess) -> None:
    """A 60,000-field prompt: its input schema took a second per request on the event loop, so ten anonymous
    requests held every other flow back. It is computed with the build; the requests only send it."""
    remote = server.remote
    template = " ".join(f"{{v{i}}}" for i in range(60_000))
    big = {"version": 1, "name": "big", "nodes": [{"id": "prompt", "component": "PromptTemplate"}]}
    big["nodes"][0]["params"] = {"template": template}  # type: ignore[index]
    sha = remote.publish({"flows/big.json": json.dumps(big)}, "a prompt of 60,000 fields")
    server.reconcile()
    wait_until(lambda: "big" in version(server, sha)["flows"], timeout=120, what="the big flow to be built")

    def schema(_: int) -> int:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            response = client.get("/flows/big/input_schema")
            assert response.status_code == 200
            return len(response.json()["properties"])

    with ThreadPoolExecutor(10) as pool:
        asked = [pool.submit(schema, n) for n in range(10)]
        time.sleep(0.2)  # the ten are being answered
        started = time.perf_counter()
        assert answer(server, "echo")[0] == "one"
        held = time.perf_counter() - started
        assert [f.result() for f in asked] == [60_000] * 10
    assert held < 5.0, f"another flow's invoke waited {held:.1f} s behind the schema requests"
    remote.publish({"flows/big.json": None}, "remove the big flow")
    server.reconcile()


def test_gitops_flow_test_stops_a_hogging_test_at_its_limit(tmp_path: Path) -> None:
    """CI's `gitops-flow test` fails with the server's test-timeout instead of hanging on the hog's test."""
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "hog.json").write_text(hog_flow())
    out = io.StringIO()
    environ = {"GITOPS_FLOW_TEST_BUDGET": "1", "GITOPS_FLOW_COMPONENTS": str(components_file(tmp_path))}
    started = time.monotonic()
    assert cli.main(["test", str(flows)], environ=environ, out=out) == 1
    assert time.monotonic() - started < 60
    text = out.getvalue()
    assert "FAIL hog :: (all) [test-timeout]: the flow's tests ran past their time limit of 1 s" in text, text


def test_a_server_stopping_while_a_test_hogs_stops_at_once(
    server: ServeProcess, components: Path, tmp_path: Path
) -> None:
    """SIGTERM while a flow's test holds its child: the server stops at once, and the test's child and the sandbox's
    forkserver die with it (the forkserver would otherwise live on as long as its child, and the child as long as
    the forkserver)."""
    remote = server.remote
    remote.publish({"flows/hog.json": hog_flow()}, "a flow whose test hogs")
    env = {"GITOPS_FLOW_TEST_BUDGET": "60"}
    with serve_process(remote, tmp_path, env=env, args=["--components", str(components)], ready=False) as starting:
        wait_until(lambda: len(descendants(starting.process.pid)) >= 2, what="the hog's test in its child")
        assert starting.client.get("/readyz").status_code == 503  # its first build waits for the hog's verdict
        started = descendants(starting.process.pid)  # the forkserver and the test's child, at least
        starting.process.terminate()
        assert starting.process.wait(timeout=15) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it drained on
        for pid in started:  # nothing the server started outlives it (the test's child held by the hog least of all)
            wait_until(lambda p=pid: not alive(p), timeout=10, what=f"process {pid} to die with the server")
    remote.publish({"flows/hog.json": None}, "remove the hog")
    server.reconcile()
