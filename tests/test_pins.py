"""Which versions an anonymous client reaches (issue 11, point 2), against a real `gitops-flow serve`: pins reach
only live versions, as the operator's pin policy allows; a force-push removes rewritten commits from reach; a
`yanked:` list makes a commit unservable everywhere; rebuilding old versions is bounded and never holds a deploy."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops_flow.delivery.rebuilds import Rebuilds
from gitops_flow.delivery.versions import Version
from gitops_flow.exceptions import Busy
from tests.gitrepo import Remote
from tests.process import ServeProcess, serve_process
from tests.served import echo_flow

Q = {"question": "hi"}


def pin(server: ServeProcess, text: str, **headers: str) -> tuple[int, Any, str]:
    response = server.invoke("echo", Q, headers={"X-Flow-Version": text, **headers})
    body = response.json()
    return response.status_code, body.get("output", body.get("error", {}).get("code")), response.text


@pytest.mark.parametrize("policy", ["current", "history"])
def test_pins_reach_live_versions_only(remote: Remote, tmp_path: Path, policy: str) -> None:
    live = remote.publish({"flows/echo.json": echo_flow(answer="one")}, "one")
    with serve_process(remote, tmp_path, env={"GITOPS_FLOW_PINS": policy}) as server:
        # a merged feature branch: its intermediate commit was never the branch head
        remote.git("checkout", "--quiet", "-b", "feature")
        middle = remote.commit({"flows/echo.json": echo_flow(answer="half done")}, "wip")
        feature = remote.commit({"flows/echo.json": echo_flow(answer="two")}, "done")
        remote.git("checkout", "--quiet", "main")
        remote.git("merge", "--quiet", "--ff-only", "feature")
        remote.push()
        server.reconcile()
        reverted = remote.revert(feature)
        remote.push()
        server.reconcile()
        assert pin(server, "main")[:2] == (200, "half done")  # the revert serves what the commit before it did
        assert pin(server, reverted)[:2] == (200, "half done")
        assert pin(server, middle)[:2] == (404, "unknown-version")  # never live, though the revert serves its content
        # the reverted commit went live and is still on the branch: only a history pin reaches it
        assert pin(server, feature)[:2] == ((200, "two") if policy == "history" else (404, "unknown-version"))
        assert pin(server, live)[:2] == ((200, "one") if policy == "history" else (404, "unknown-version"))

        # a force-push takes the rewritten commits out of reach, whatever the policy
        remote.force_push_reset(live)
        rewritten = remote.publish({"flows/echo.json": echo_flow(answer="three")}, "rewritten")
        server.reconcile()
        assert pin(server, rewritten)[:2] == (200, "three")
        status, code, text = pin(server, feature)
        assert (status, code) == (404, "unknown-version")
        assert pin(server, live)[:2] == ((200, "one") if policy == "history" else (404, "unknown-version"))


def test_pins_can_be_turned_off(remote: Remote, tmp_path: Path) -> None:
    remote.publish({"flows/echo.json": echo_flow()})
    with serve_process(remote, tmp_path, env={"GITOPS_FLOW_PINS": "off"}) as server:
        assert pin(server, "main")[:2] == (403, "pins-disabled")
        assert server.invoke("echo", Q).status_code == 200


def test_a_refused_pin_says_nothing_about_commits_that_were_not_merged(remote: Remote, tmp_path: Path) -> None:
    remote.publish({"flows/echo.json": echo_flow()})
    remote.git("checkout", "--quiet", "-b", "unmerged")
    secret_work = remote.publish({"flows/echo.json": echo_flow(answer="not reviewed")}, "unreviewed")
    remote.git("push", "--quiet", "origin", "unmerged")
    remote.tag("preview", secret_work)
    remote.push_tags()
    remote.git("checkout", "--quiet", "main")
    with serve_process(remote, tmp_path, env={"GITOPS_FLOW_PINS": "history"}) as server:
        answers = {text: pin(server, text) for text in ("unmerged", "preview", secret_work, secret_work[:7], "f" * 40)}
        for text, (status, code, body) in answers.items():
            assert (status, code) == (404, "unknown-version"), text
            assert secret_work not in body.replace(text, "") and secret_work[:7] not in body.replace(text, "")
        # an existing unmerged commit and a sha that exists nowhere get the same answer, but for the echoed pin
        assert answers[secret_work][2].replace(secret_work, "X") == answers["f" * 40][2].replace("f" * 40, "X")


def test_a_yanked_commit_is_never_served_again(remote: Remote, tmp_path: Path) -> None:
    routes = {"routes": {"default": [{"ref": "stable", "weight": 90}, {"ref": "main", "weight": 10}]}}
    good = remote.publish({"flows/echo.json": echo_flow(answer="fine"), "gitops-flow.yaml": yaml.safe_dump(routes)})
    with serve_process(remote, tmp_path, env={"GITOPS_FLOW_PINS": "history"}) as server:
        leak = remote.publish({"flows/echo.json": echo_flow(answer="the leaked key")}, "oops")
        remote.tag("stable", leak)
        remote.push_tags()
        server.reconcile()
        assert pin(server, "stable")[:2] == (200, "the leaked key")
        session = server.invoke("echo", Q, headers={"X-Flow-Session": "s", "X-Flow-User": "u"}).json()
        assert session["output"] == "the leaked key"

        remote.revert(leak)
        reverted = remote.publish({"gitops-flow.yaml": yaml.safe_dump({**routes, "yanked": [leak[:10]]})}, "yank it")
        server.reconcile()
        status, code, text = pin(server, leak)
        assert (status, code) == (404, "version-not-servable") and "yanked" in text
        assert pin(server, "stable")[:2] == (404, "version-not-servable")
        # stable still points at the leak: its weight goes to main, and the session moves off the leak
        assert {server.invoke("echo", Q, headers={"X-Flow-User": f"u{n}"}).json()["output"] for n in range(40)} == {
            "fine"
        }
        moved = server.invoke("echo", Q, headers={"X-Flow-Session": "s"})
        assert (moved.json()["output"], moved.headers["x-flow-version"]) == ("fine", reverted)
        targets = server.client.get("/flows").json()["flows"][0]["versions"]
        assert [(t["ref"], t["state"]) for t in targets] == [("stable", "yanked"), ("main", "live")]
        yanked = [e for e in server.client.get("/history").json()["events"] if e["event"] == "yanked"]
        assert [e["sha"] for e in yanked] == [leak]
        assert good  # the commit before the leak was not touched


@pytest.mark.parametrize("policy", ["current", "history"])
def test_a_yank_is_by_build_the_later_commits_that_carry_the_leaked_build_are_unservable_too(
    remote: Remote, tmp_path: Path, policy: str
) -> None:
    """The reproduction: yanking the commit that introduced a leak left a later commit with the same flow file live
    for sessions and pins; a session begun there kept getting the leaked answer after the revert and the yank."""
    routes = {"routes": {"default": [{"ref": "main", "weight": 50}, {"ref": "old", "weight": 50}]}}
    remote.publish(
        {
            "flows/echo.json": echo_flow(answer="fine"),
            "flows/other.json": echo_flow("other", answer="other one"),
            "gitops-flow.yaml": yaml.safe_dump(routes),
        }
    )
    with serve_process(remote, tmp_path, env={"GITOPS_FLOW_PINS": policy}) as server:
        leak = remote.publish({"flows/echo.json": echo_flow(answer="the leaked key")}, "oops")
        later = remote.publish({"flows/other.json": echo_flow("other", answer="other two")}, "an unrelated change")
        remote.tag("old", later)
        remote.push_tags()
        server.reconcile()
        began = server.invoke("echo", Q, headers={"X-Flow-Session": "s"})
        assert (began.json()["output"], began.headers["x-flow-version"]) == ("the leaked key", later)
        other = server.invoke("other", Q, headers={"X-Flow-Session": "s2"})
        assert (other.json()["output"], other.headers["x-flow-version"]) == ("other two", later)

        remote.revert(leak)
        yank = remote.publish({"gitops-flow.yaml": yaml.safe_dump({**routes, "yanked": [leak[:10]]})}, "yank it")
        server.reconcile()
        # the session begun on the later commit moves off it, to what serves now
        moved = server.invoke("echo", Q, headers={"X-Flow-Session": "s"})
        assert (moved.json()["output"], moved.headers["x-flow-version"]) == ("fine", yank)
        for text in (later, later[:10], "old"):  # pins to it, by sha or by the tag, whatever the policy
            status, code, _ = pin(server, text)
            assert (status, code) in ((404, "version-not-servable"), (404, "unknown-version")), text
        assert {server.invoke("echo", Q, headers={"X-Flow-User": f"u{n}"}).json()["output"] for n in range(30)} == {
            "fine"
        }
        echo = {f["name"]: f for f in server.client.get("/flows").json()["flows"]}
        assert [(t["ref"], t["state"]) for t in echo["echo"]["versions"]] == [("main", "live"), ("old", "yanked")]
        # by build, not by commit: the later commit's build of the flow the leak did not touch still serves
        assert [(t["ref"], t["state"]) for t in echo["other"]["versions"]] == [("main", "live"), ("old", "live")]
        kept = server.invoke("other", Q, headers={"X-Flow-Session": "s2"})
        assert (kept.json()["output"], kept.headers["x-flow-version"]) == ("other two", later)
        [event] = [e for e in server.client.get("/history").json()["events"] if e["event"] == "yanked"]
        assert (event["sha"], event["flows"]) == (leak, ["echo"])

        # a commit that changes the flow serves it again
        fixed = remote.publish({"flows/echo.json": echo_flow(answer="fixed")}, "a new answer")
        remote.tag("old", fixed)
        remote.push_tags()
        server.reconcile()
        assert pin(server, "old")[:2] == (200, "fixed")


def test_a_yanked_list_that_is_not_shas_is_a_problem_of_the_routing_file(tmp_path: Path) -> None:
    from gitops_flow.validation.routing import validate_routing_bytes

    _, problems = validate_routing_bytes(b"yanked:\n  - abc\n  - main\n", file="gitops-flow.yaml")
    assert [(p.code, p.path, p.line) for p in problems] == [
        ("bad-sha", "$.yanked[0]", 2),
        ("bad-sha", "$.yanked[1]", 3),
    ]


# -- rebuilds: bounded, one at a time, off the reconciler's lock ------------------------------------------------------


def version(sha: str) -> Version:
    return Version(sha=sha, author="", email="", time=0.0, message="", status="ready")


def test_rebuilds_run_one_at_a_time_let_a_few_wait_refuse_the_rest_and_keep_the_newest() -> None:
    release = threading.Event()
    built: list[str] = []

    def build(sha: str) -> Version:
        release.wait(5)
        built.append(sha)
        return version(sha)

    async def scenario() -> None:
        rebuilds = Rebuilds(build, limit=2, waiting=3)
        first = [asyncio.create_task(rebuilds.get(f"sha{n}")) for n in range(3)]
        await asyncio.sleep(0.05)
        with pytest.raises(Busy):  # three already wait: a fourth is told to come back
            await rebuilds.get("sha3")
        release.set()
        assert [v.sha for v in await asyncio.gather(*first)] == ["sha0", "sha1", "sha2"]
        assert len(rebuilds) == 2 and "sha0" not in rebuilds and "sha2" in rebuilds
        again = await rebuilds.get("sha2")  # kept: not built again
        assert again.sha == "sha2" and built.count("sha2") == 1

    asyncio.run(scenario())


@pytest.mark.parametrize(("policy", "code"), [("current", "unknown-version"), ("history", "version-not-servable")])
def test_a_pin_to_a_yanked_commit_answers_as_the_docs_say(
    remote: Remote, tmp_path: Path, policy: str, code: str
) -> None:
    """docs/server.md and delivery.md: under `history` a pin to a yanked commit is 404 version-not-servable, naming
    the yank; under `current` it is 404 unknown-version, as every version the refs do not serve now (a pin never
    tells what else exists)."""
    routes = {"routes": {"default": [{"ref": "stable", "weight": 90}, {"ref": "main", "weight": 10}]}}
    remote.publish({"flows/echo.json": echo_flow(answer="fine"), "gitops-flow.yaml": yaml.safe_dump(routes)})
    with serve_process(remote, tmp_path, env={"GITOPS_FLOW_PINS": policy}) as server:
        leak = remote.publish({"flows/echo.json": echo_flow(answer="the leaked key")}, "oops")
        remote.tag("stable", leak)
        remote.push_tags()
        server.reconcile()
        assert pin(server, leak)[:2] == (200, "the leaked key")
        remote.revert(leak)
        remote.publish({"gitops-flow.yaml": yaml.safe_dump({**routes, "yanked": [leak[:10]]})}, "yank it")
        server.reconcile()
        status, answered, text = pin(server, leak)
        assert (status, answered) == (404, code)
        assert ("yanked" in text) == (policy == "history")
