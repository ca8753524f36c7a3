"""One flow, one blast radius (issue 12), against a real `gitops-flow serve` over real git pushes: a commit's flows
are judged one by one, the server gates each flow on its own tests, and the canary guard judges one flow on one ref."""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops_flow.cli import main as cli
from gitops_flow.delivery.routing_table import sticky_point
from tests.gitrepo import Remote
from tests.process import ADMIN, ADMIN_TOKEN, ServeProcess, serve_process
from tests.served import echo_flow, needs_a_secret, wait_until

Q = {"question": "hi"}


def answer(server: ServeProcess, flow: str, **headers: str) -> tuple[Any, str]:
    response = server.invoke(flow, Q, headers={k.replace("_", "-"): v for k, v in headers.items()})
    assert response.status_code == 200, response.text
    return response.json()["output"], response.headers["x-flow-version"]


def flows_view(server: ServeProcess) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in server.client.get("/flows").json()["flows"]}


def test_a_failing_flow_stays_on_its_last_good_version_while_the_others_deploy(remote: Remote, tmp_path: Path) -> None:
    """The issue's reproduction: a commit with a flow that needs a missing secret held every later deploy back."""
    first = remote.publish(
        {
            "flows/support.json": echo_flow("support", answer="s1"),
            "flows/triage.json": echo_flow("triage", answer="t1"),
        },
        "two flows",
    )
    with serve_process(remote, tmp_path) as server:
        broken = remote.publish(
            {"flows/triage.json": needs_a_secret("triage"), "flows/support.json": echo_flow("support", answer="s2")},
            "triage needs a key",
        )
        server.reconcile()
        assert answer(server, "support") == ("s2", broken)
        assert answer(server, "triage") == ("t1", first)
        later = remote.publish({"flows/support.json": echo_flow("support", answer="s3")}, "only support")
        server.reconcile()
        assert answer(server, "support") == ("s3", later)  # not held back by triage
        assert answer(server, "triage") == ("t1", first)
        view = flows_view(server)
        assert view["support"]["summary"] == f"support live at {later[:12]}"
        assert view["triage"]["summary"] == f"triage failed at {later[:12]}, serving {first[:12]}"
        assert [p["code"] for p in view["triage"]["problems"]] == ["missing-secret"]

        pinned = server.invoke("triage", Q, headers={"X-Flow-Version": later})
        assert pinned.status_code == 404 and pinned.json()["error"]["code"] == "version-not-servable"
        assert f"flow 'triage' failed at {later[:12]} (flows/triage.json:" in pinned.json()["error"]["message"]
        assert "missing-secret" in pinned.json()["error"]["message"]
        assert answer(server, "triage", X_Flow_Version="main") == ("t1", first)  # a ref resolves per flow

        out = io.StringIO()
        assert cli.main(["versions", "--server", server.url], environ={}, out=out) == 0
        text = out.getvalue()
        assert f"* {later[:12]} ready" in text
        assert f"    triage failed, serving {first[:12]}" in text
        assert "flows/triage.json:" in text and "missing-secret" in text

        fixed = remote.publish({"flows/triage.json": echo_flow("triage", answer="t2")}, "fix triage")
        server.reconcile()
        assert answer(server, "triage") == ("t2", fixed)
        assert flows_view(server)["triage"]["summary"] == f"triage live at {fixed[:12]}"
        events = [(e["event"], e["sha"], e.get("flow")) for e in server.client.get("/history").json()["events"]]
        assert ("failed", broken, "triage") in events and ("deployed", broken, None) in events
        assert ("deployed", later, None) in events and ("deployed", fixed, None) in events


def test_a_flow_whose_own_tests_fail_is_never_served_even_when_ci_was_bypassed(remote: Remote, tmp_path: Path) -> None:
    first = remote.publish({"flows/echo.json": echo_flow(answer="one"), "flows/other.json": echo_flow("other")})
    with serve_process(remote, tmp_path) as server:
        failing_test = {"name": "says two", "input": Q, "expect": {"equals": "two"}}
        bad = remote.publish(
            {
                "flows/echo.json": echo_flow(answer="three", tests=[failing_test]),
                "flows/other.json": echo_flow("other", answer="new"),
            },
            "pushed straight to main",
        )
        server.reconcile()
        assert answer(server, "echo") == ("one", first)
        assert answer(server, "other") == ("new", bad)

        def judged() -> dict[str, Any]:  # its tests may outlast the deploy's wait on a loaded machine: pending
            return next(v for v in server.client.get("/versions").json()["versions"] if v["sha"] == bad)

        wait_until(lambda: "echo" in judged()["failed"], what="the verdict of echo's tests")
        assert answer(server, "echo") == ("one", first)
        [problem] = judged()["failed"]["echo"]
        assert (problem["code"], problem["path"]) == ("test-failed", "$.tests[0]")
        assert "test 'says two' failed" in problem["message"] and problem["line"] is not None
        good = remote.publish({"flows/echo.json": echo_flow(answer="two", tests=[failing_test])}, "make it pass")
        server.reconcile()
        wait_until(lambda: answer(server, "echo") == ("two", good), what="echo to go live once its tests passed")


# -- the canary guard, per flow and ref -------------------------------------------------------------------------------

CANARY = {
    "routes": {"default": [{"ref": "stable", "weight": 50}, {"ref": "main", "weight": 50}]},
    "analysis": {"window": "60s", "min_requests": 8, "max_error_rate": 0.2, "max_failures": 6},
}


def picky(name: str, answer: str, parser: str = "StrOutputParser") -> str:
    """A flow that reads its input's ``text`` (Pick): it fails at run time, on every version, for an input without
    it. With ``parser="JsonOutputParser"`` it also fails on every input that has it (its fake answers no JSON)."""
    doc = json.loads(echo_flow(name, answer=answer))
    doc["nodes"][0] = {"id": "read", "component": "Pick", "params": {"key": "text"}}
    doc["nodes"][2]["component"] = parser
    doc["edges"] = [{"source": "read", "target": "llm"}, {"source": "llm", "target": "answer"}]
    return json.dumps(doc)


def failing_at_run_time(name: str) -> str:
    """Every request fails while running: a JSON parser fed a fake model's text."""
    doc = json.loads(echo_flow(name, answer="not json"))
    doc["nodes"][2]["component"] = "JsonOutputParser"
    return json.dumps(doc)


def canary_users(flow: str, count: int) -> list[str]:
    return [u for u in (f"user-{n}" for n in range(10 * count)) if sticky_point(flow, u) >= 0.5][:count]


def stable_users(flow: str, count: int) -> list[str]:
    return [u for u in (f"user-{n}" for n in range(10 * count)) if sticky_point(flow, u) < 0.5][:count]


def events(server: ServeProcess, kind: str) -> list[dict[str, Any]]:
    return [e for e in server.client.get("/history").json()["events"] if e["event"] == kind]


def targets(server: ServeProcess, flow: str) -> list[tuple[str, str]]:
    return [(t["ref"], t["state"]) for t in flows_view(server)[flow]["versions"]]


def test_a_broken_canary_of_one_flow_is_aborted_for_that_flow_only_and_its_users_never_see_it_fail(
    remote: Remote, tmp_path: Path
) -> None:
    flows = {f"flows/{n}.json": echo_flow(n, answer=f"{n} stable") for n in ("alpha", "beta", "gamma")}
    stable = remote.publish({**flows, "gitops-flow.yaml": yaml.safe_dump(CANARY)}, "three flows")
    remote.tag("stable", stable)
    remote.push_tags()
    canary = remote.publish(
        {"flows/alpha.json": failing_at_run_time("alpha"), "flows/beta.json": echo_flow("beta", answer="beta canary")},
        "alpha breaks",
    )
    with serve_process(remote, tmp_path, env={"GITOPS_FLOW_ANALYSIS_INTERVAL": "0.1"}) as server:
        seen: Counter[tuple[str, int, str]] = Counter()
        for user in [f"user-{n}" for n in range(60)]:
            for flow in ("alpha", "beta", "gamma"):
                response = server.invoke(flow, Q, headers={"X-Flow-User": user})
                seen[(flow, response.status_code, response.headers.get("x-flow-version", ""))] += 1
        assert {status for _, status, _ in seen} == {200}  # no user of any flow saw a failure
        assert {sha for flow, _, sha in seen if flow == "alpha"} == {stable}  # alpha's canary share: answered by stable
        assert {sha for flow, _, sha in seen if flow == "beta"} == {stable, canary}
        wait_until(lambda: len(events(server, "aborted")) == 1, what="alpha's abort")
        time.sleep(0.5)  # a few more guard ticks: nothing else is aborted
        [aborted] = events(server, "aborted")
        assert (aborted["flow"], aborted["ref"], aborted["sha"]) == ("alpha", "main", canary)
        assert aborted["errors"] >= 6 and aborted["reason"]
        assert targets(server, "alpha") == [("stable", "live"), ("main", "aborted")]
        assert targets(server, "beta") == [("stable", "live"), ("main", "live")]
        assert targets(server, "gamma") == [("stable", "live"), ("main", "live")]


def test_a_client_cannot_abort_a_healthy_canary_with_inputs_that_fail_everywhere_nor_hide_a_broken_one(
    remote: Remote, tmp_path: Path
) -> None:
    stable = remote.publish({"flows/picky.json": picky("picky", "stable"), "gitops-flow.yaml": yaml.safe_dump(CANARY)})
    remote.tag("stable", stable)
    remote.push_tags()
    remote.publish({"flows/picky.json": picky("picky", "canary")}, "a healthy canary")
    on_canary = canary_users("picky", 30)
    with serve_process(remote, tmp_path, env={"GITOPS_FLOW_ANALYSIS_INTERVAL": "0.1"}) as server:
        for user in on_canary:  # the attack: users that land on the canary, inputs that fail on every version
            response = server.invoke("picky", {"nothing": "here"}, headers={"X-Flow-User": user})
            assert response.status_code == 500
        time.sleep(0.5)
        assert events(server, "aborted") == []
        assert targets(server, "picky") == [("stable", "live"), ("main", "live")]

        # the reverse: a broken canary (it fails on input the stable version takes) cannot be hidden under a flood
        # of good requests: a count of failures the primary did not share aborts it, whatever the rate
        remote.publish({"flows/picky.json": picky("picky", "not json", "JsonOutputParser")}, "a broken canary")
        server.reconcile()
        for n in range(200):  # the flood: requests that fail on both (not counted)
            server.invoke("picky", {"nothing": n}, headers={"X-Flow-User": on_canary[n % 30]})
        for user in on_canary[:6]:  # six real users on the canary: each answered by stable, each counted
            response = server.invoke("picky", {"text": "hi"}, headers={"X-Flow-User": user})
            assert (response.status_code, response.json()["output"]) == (200, "stable")
        wait_until(lambda: len(events(server, "aborted")) == 1, what="the broken canary's abort")
        assert "6 failures in the window" in events(server, "aborted")[0]["reason"]


def test_a_canary_whose_input_contract_broke_is_answered_by_stable_and_aborted(remote: Remote, tmp_path: Path) -> None:
    stable = remote.publish({"flows/echo.json": echo_flow(answer="stable"), "gitops-flow.yaml": yaml.safe_dump(CANARY)})
    remote.tag("stable", stable)
    remote.push_tags()
    needs_more = json.loads(echo_flow(answer="canary"))
    needs_more["nodes"][0]["params"]["template"] = "Q: {question} in {language}"  # callers do not send a language
    canary = remote.publish({"flows/echo.json": json.dumps(needs_more)}, "the prompt needs a language")
    with serve_process(remote, tmp_path, env={"GITOPS_FLOW_ANALYSIS_INTERVAL": "0.1"}) as server:
        for user in canary_users("echo", 8):
            response = server.invoke("echo", Q, headers={"X-Flow-User": user})
            assert (response.status_code, response.json()["output"]) == (200, "stable")
        wait_until(lambda: len(events(server, "aborted")) == 1, what="the abort")
        [aborted] = events(server, "aborted")
        assert (aborted["flow"], aborted["sha"]) == ("echo", canary)


def test_an_operator_aborts_and_resumes_one_flows_canary_on_every_replica(remote: Remote, tmp_path: Path) -> None:
    flows = {f"flows/{n}.json": echo_flow(n, answer=f"{n} stable") for n in ("alpha", "beta")}
    stable = remote.publish({**flows, "gitops-flow.yaml": yaml.safe_dump(CANARY)})
    remote.tag("stable", stable)
    remote.push_tags()
    canary = remote.publish({f"flows/{n}.json": echo_flow(n, answer=f"{n} canary") for n in ("alpha", "beta")})
    shared = ["--state", f"sqlite:///{tmp_path / 'shared.db'}"]
    environ = {"GITOPS_FLOW_ANALYSIS_INTERVAL": "0.1"}
    with (
        serve_process(remote, tmp_path, args=shared, env=environ) as one,
        serve_process(remote, tmp_path, args=shared, env=environ) as two,
    ):
        out = io.StringIO()
        assert (
            cli.main(["abort", "alpha", "--server", one.url], environ={"GITOPS_FLOW_ADMIN_TOKEN": ADMIN_TOKEN}, out=out)
            == 0
        )
        assert out.getvalue() == f"alpha on main ({canary[:12]}): aborted\n"
        for server in (one, two):  # at once here, within a guard tick on the other replica
            wait_until(
                lambda s=server: targets(s, "alpha") == [("stable", "live"), ("main", "aborted")],
                what="the abort on this replica",
            )
            assert targets(server, "beta") == [("stable", "live"), ("main", "live")]
            assert {answer(server, "alpha", X_Flow_User=u)[1] for u in canary_users("alpha", 10)} == {stable}
        [event] = events(two, "aborted")
        assert (event["flow"], event["ref"], event["reason"]) == ("alpha", "main", "aborted by an operator")
        assert event["trigger"].startswith("operator at 127.0.0.1")

        refused = one.client.post("/admin/resume", json={"flow": "alpha"})
        assert refused.status_code in (401, 403)
        out = io.StringIO()
        assert (
            cli.main(
                ["resume", "alpha", "--server", two.url], environ={"GITOPS_FLOW_ADMIN_TOKEN": ADMIN_TOKEN}, out=out
            )
            == 0
        )
        assert out.getvalue() == f"alpha on main ({canary[:12]}): resumed\n"
        for server in (one, two):
            wait_until(
                lambda s=server: targets(s, "alpha") == [("stable", "live"), ("main", "live")],
                what="the resume on this replica",
            )
        assert [e["event"] for e in one.client.get("/history").json()["events"]][:2] == ["resumed", "aborted"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"flow": "nope"}, 404, "unknown-flow"),
        ({"flow": "alpha", "ref": "stable"}, 404, "unknown-flow"),  # the primary is no canary
        ({"ref": "main"}, 400, "bad-body"),
        ({"flow": "alpha", "ref": 3}, 400, "bad-body"),
    ],
    ids=["unknown-flow", "not-a-canary", "no-flow", "bad-ref"],
)
def test_operator_aborts_that_name_no_canary_are_refused_and_change_nothing(
    remote: Remote, tmp_path: Path, body: dict[str, Any], status: int, code: str
) -> None:
    stable = remote.publish({"flows/alpha.json": echo_flow("alpha"), "gitops-flow.yaml": yaml.safe_dump(CANARY)})
    remote.tag("stable", stable)
    remote.push_tags()
    with serve_process(remote, tmp_path) as server:
        response = server.client.post("/admin/abort", json=body, headers=ADMIN)
        assert (response.status_code, response.json()["error"]["code"]) == (status, code)
        assert events(server, "aborted") == []


def test_without_the_primary_fallback_a_canarys_failures_reach_its_users_and_still_abort_it(
    remote: Remote, tmp_path: Path
) -> None:
    """GITOPS_FLOW_CANARY_FALLBACK=false, for flows whose runs must not be repeated: no retry on the primary."""
    stable = remote.publish({"flows/alpha.json": echo_flow("alpha"), "gitops-flow.yaml": yaml.safe_dump(CANARY)})
    remote.tag("stable", stable)
    remote.push_tags()
    remote.publish({"flows/alpha.json": failing_at_run_time("alpha")}, "alpha breaks")
    environ = {"GITOPS_FLOW_ANALYSIS_INTERVAL": "0.1", "GITOPS_FLOW_CANARY_FALLBACK": "false"}
    with serve_process(remote, tmp_path, env=environ) as server:
        users = canary_users("alpha", 6)  # max_failures: the guard may abort once this many have failed, not before
        statuses = Counter(server.invoke("alpha", Q, headers={"X-Flow-User": u}).status_code for u in users)
        assert statuses == {500: 6}
        wait_until(lambda: len(events(server, "aborted")) == 1, what="the abort")
        after = Counter(server.invoke("alpha", Q, headers={"X-Flow-User": u}).status_code for u in users)
        assert after == {200: 6}  # aborted: the canary's users are on the primary again


def test_the_flow_init_writes_holds_back_nothing_when_the_server_lacks_its_key(remote: Remote, tmp_path: Path) -> None:
    """The issue's reproduction: `init`'s hello.json (OPENAI_API_KEY) made the first `serve` not ready at all, while
    `validate` exits 0. Now the server is ready, says why hello does not serve, and serves the repository's others."""
    assert cli.main(["init", str(remote.work)], environ={}, out=io.StringIO()) == 0
    assert cli.main(["validate", str(remote.work)], environ={}, out=io.StringIO()) == 0
    remote.commit({"flows/echo.json": echo_flow()}, "init and a flow of our own")
    remote.push()
    with serve_process(remote, tmp_path) as server:
        ready = server.client.get("/readyz")
        assert (ready.status_code, ready.json()["failed_flows"]) == (200, ["hello"])
        hello = flows_view(server)["hello"]
        assert hello["state"] == "failed" and [p["code"] for p in hello["problems"]] == ["missing-secret"]
        refused = server.invoke("hello", Q)
        assert refused.status_code == 404 and "flows/hello.json:" in refused.json()["error"]["message"]
        assert server.invoke("echo", Q).status_code == 200
