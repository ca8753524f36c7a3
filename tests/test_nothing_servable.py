"""Routing never serves what was stopped, against a real `gitops-flow serve`: the issue's sequence (stable 90 / main 10,
main's canary aborted, then stable's commit yanked) sent every request to the aborted canary, and /flows said
"live". Now no request is served by it: the answer is 503 `nothing-servable` with Retry-After, and /flows, /readyz
and the console say why; a resume brings the canary back. The plan warns of the yank before the merge."""

from __future__ import annotations

import io
import json
from pathlib import Path

import yaml

from gitops_flow.cli.main import main
from tests.gitrepo import Remote
from tests.process import ADMIN, serve_process
from tests.served import echo_flow
from tests.test_per_flow import flows_view

Q = {"question": "hi"}
ANALYSIS = {"window": "60s", "min_requests": 1000}  # the operator aborts here, not the guard


def _routing(yanked: list[str] | None = None) -> str:
    routes = {"default": [{"ref": "stable", "weight": 90}, {"ref": "main", "weight": 10}]}
    return yaml.safe_dump({"routes": routes, "analysis": ANALYSIS, "yanked": yanked or []})


def test_a_yank_beside_an_aborted_canary_serves_nothing_and_says_so(remote: Remote, tmp_path: Path) -> None:
    good = remote.publish({"flows/hello.json": echo_flow("hello", "good"), "gitops-flow.yaml": _routing()})
    remote.tag("stable", good)
    remote.push_tags()
    canary = remote.publish({"flows/hello.json": echo_flow("hello", "canary")})
    with serve_process(remote, tmp_path) as server:
        assert server.wait_ready() == canary
        aborted = server.client.post("/admin/abort", json={"flow": "hello", "ref": "main"}, headers=ADMIN)
        assert aborted.status_code == 200, aborted.text
        users = [f"u{n}" for n in range(30)]
        answers = {server.invoke("hello", Q, {"X-Flow-User": u}).json()["output"] for u in users}
        assert answers == {"good"}
        yanked = remote.publish({"gitops-flow.yaml": _routing([good])})
        server.reconcile()
        for user in users:
            refused = server.invoke("hello", Q, {"X-Flow-User": user})
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "nothing-servable"
            assert "its canary was aborted" in refused.json()["error"]["message"]
            assert refused.headers["retry-after"]
        hello = flows_view(server)["hello"]
        assert hello["state"] == "unserved" and "its canary was aborted" in hello["reason"]
        assert [(v["ref"], v["state"], v["weight"]) for v in hello["versions"]] == [
            ("stable", "yanked", 0),
            ("main", "aborted", 0),
        ]
        ready = server.client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["version"] == yanked  # its only flow serves nowhere
        assert "its canary was aborted" in ready.json()["unserved"]["hello"]
        overview = server.client.get("/ui/overview.json").json()  # the console names it among what needs a person
        [row] = [f for f in overview["flows"] if f["name"] == "hello"]
        assert row["state"] == "unserved" and "its canary was aborted" in row["summary"]
        assert "hello is not served" in json.dumps(overview["alerts"])
        resumed = server.client.post("/admin/resume", json={"flow": "hello", "ref": "main"}, headers=ADMIN)
        assert resumed.status_code == 200, resumed.text
        assert server.invoke("hello", Q, {"X-Flow-User": "u1"}).json()["output"] == "canary"


def test_the_plan_warns_of_a_yank_that_leaves_a_route_only_its_canary(remote: Remote) -> None:
    good = remote.publish({"flows/hello.json": echo_flow("hello", "good"), "gitops-flow.yaml": _routing()})
    remote.tag("stable", good)
    remote.git("checkout", "-q", "-b", "yank")
    (remote.work / "gitops-flow.yaml").write_text(_routing([good[:12]]))
    out = io.StringIO()
    assert main(["plan", str(remote.work), "--base", "main", "--format", "json"], environ={}, out=out) == 0
    problems = json.loads(out.getvalue())["routing"]["problems"]
    assert [(p["code"], p["severity"]) for p in problems] == [("route-canary-only", "warning")]
    assert f"its first ref 'stable' is yanked (its commit {good[:12]})" in problems[0]["message"]
    assert "nothing serves the route (503 nothing-servable)" in problems[0]["message"]
    (remote.work / "gitops-flow.yaml").write_text(
        yaml.safe_dump({"routes": {"default": [{"ref": "stable", "weight": 100}]}, "yanked": [good]})
    )
    out = io.StringIO()
    assert main(["plan", str(remote.work), "--base", "main"], environ={}, out=out) == 0
    assert "route-unservable" in out.getvalue() and "stable yanked" in out.getvalue()


def test_validate_with_a_base_warns_of_a_route_left_with_nothing_servable(remote: Remote) -> None:
    good = remote.publish({"flows/hello.json": echo_flow("hello", "good"), "gitops-flow.yaml": _routing()})
    remote.tag("stable", good)
    (remote.work / "gitops-flow.yaml").write_text(
        yaml.safe_dump({"routes": {"default": [{"ref": "stable", "weight": 100}]}, "yanked": [good]})
    )
    out = io.StringIO()
    assert main(["validate", str(remote.work), "--base", "main"], environ={}, out=out) == 0  # a warning, not an error
    assert "route-unservable" in out.getvalue() and "no ref it names can serve after this change" in out.getvalue()
    out = io.StringIO()
    assert main(["validate", str(remote.work)], environ={}, out=out) == 0
    assert "route-unservable" not in out.getvalue()  # without --base, validate reads no Git
