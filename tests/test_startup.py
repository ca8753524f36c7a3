"""`gitops-flow serve` tells the truth at start-up: a setting that cannot work (a branch the repository lacks, a
repository that cannot be read, a state store that cannot be opened, a port that is taken) is exit status 1 at once
with the reason and the fix on stderr; a head where every flow failed is not ready, with the reasons, and the log
names each problem. Each test runs the real command line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gitrepo import Remote
from tests.process import free_port, serve_process
from tests.served import echo_flow, needs_a_secret, wait_until


def _serve(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GITOPS_FLOW_")}
    command = [sys.executable, "-m", "gitops_flow", "serve", "--data-dir", str(cwd / "data"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environ, cwd=cwd)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_branch_the_repository_lacks_stops_serve_naming_the_branches_it_has(
    remote: Remote, tmp_path: Path, workers: str
) -> None:
    remote.publish({"flows/echo.json": echo_flow()})
    done = _serve("--repo", remote.url, "--branch", "master", "--workers", workers, "--port", "0", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert f"branch 'master' does not exist in {remote.url} (its branches: main)" in done.stderr
    assert "fix: give --branch NAME (or GITOPS_FLOW_BRANCH)" in done.stderr
    assert "Started server process" not in done.stderr and "Traceback" not in done.stderr


def test_a_repository_that_cannot_be_read_stops_serve_with_the_reason(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-repo"
    done = _serve("--repo", str(missing), "--workers", "1", "--port", "0", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert f"cannot read the repository: fetch of {missing} failed:" in done.stderr
    assert "does not appear to be a git repository" in done.stderr
    assert "fix: give --repo (or GITOPS_FLOW_REPO)" in done.stderr
    assert "Started server process" not in done.stderr and "Traceback" not in done.stderr


def test_a_state_store_that_cannot_be_opened_stops_serve_with_the_fix(remote: Remote, tmp_path: Path) -> None:
    remote.publish({"flows/echo.json": echo_flow()})
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    state = f"sqlite:///{blocker}/state.db"
    done = _serve("--repo", remote.url, "--state", state, "--workers", "1", "--port", "0", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "cannot be opened" in done.stderr and "fix: give a state the server can open" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_port_in_use_stops_a_single_worker_serve_at_once(remote: Remote, tmp_path: Path) -> None:
    remote.publish({"flows/echo.json": echo_flow()})
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        done = _serve("--repo", remote.url, "--workers", "1", "--port", str(port), cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use; fix: stop what holds the port" in done.stderr
    assert "Started server process" not in done.stderr and "Traceback" not in done.stderr


def test_an_empty_repository_is_waited_for_and_served_once_pushed(remote: Remote, tmp_path: Path) -> None:
    with serve_process(remote, tmp_path, ready=False) as server:
        assert server.client.get("/readyz").status_code == 503
        sha = remote.publish({"flows/echo.json": echo_flow()})
        server.reconcile()
        assert server.wait_ready() == sha
    assert "has no branch yet: the server waits for a first push to 'main'" in server.log_text()


def test_a_head_where_every_flow_failed_is_not_ready_and_the_log_names_each_problem(
    remote: Remote, tmp_path: Path
) -> None:
    bad = remote.publish({"flows/one.json": needs_a_secret("one"), "flows/two.json": needs_a_secret("two")})
    with serve_process(remote, tmp_path, ready=False) as server:
        wait_until(lambda: server.client.get("/readyz").json()["version"] == bad, what="the head built")
        ready = server.client.get("/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["ready"] is False and body["failed_flows"] == ["one", "two"]
        assert set(body["unserved"]) == {"one", "two"}
        assert f"flow 'one' failed at {bad[:12]} (flows/one.json:" in body["unserved"]["one"]
        invoked = server.invoke("one", {"question": "hi"})
        assert invoked.status_code == 503 and invoked.json()["error"]["code"] == "nothing-servable"
        assert invoked.headers["retry-after"]
        good = remote.publish({"flows/two.json": echo_flow("two")})
        server.reconcile()
        assert server.wait_ready() == good  # one flow serving is enough: the other keeps failing, listed
        assert server.client.get("/readyz").json()["unserved"].keys() == {"one"}
    log = server.log_text()
    for name in ("one", "two"):
        assert f"failed {name} at {bad[:12]}" in log
        assert f"flows/{name}.json" in log and "missing-secret" in log and "OPENAI_API_KEY" in log
    assert f"not ready: every flow failed at {bad[:12]}" in log
    assert f"deployed {bad[:12]}" not in log
