"""`gitops-flow plan`: what merging a branch does, computed offline in a real Git repository, and the pull-request
comment the workflow keeps current, against the GitHub stand-in (tests/githubapi.py)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops_flow.cli.main import main
from gitops_flow.plan.render import MARKER
from tests.githubapi import TOKEN, GitHubStandIn, github_standin
from tests.gitrepo import Remote
from tests.npmdata import webhook_examples
from tests.served import echo_flow

ROUTING = {"routes": {"default": [{"ref": "stable", "weight": 90}, {"ref": "main", "weight": 10}]}}
OPENAI = {
    "version": 1,
    "name": "writer",
    "nodes": [
        {"id": "prompt", "component": "PromptTemplate", "params": {"template": "Write about {topic}"}},
        {
            "id": "llm",
            "component": "ChatModel",
            "params": {"model": "openai:gpt-4o-mini", "api_key": {"$env": "OPENAI_API_KEY"}},
        },
        {"id": "out", "component": "StrOutputParser"},
    ],
    "edges": [{"source": "prompt", "target": "llm"}, {"source": "llm", "target": "out"}],
    "tests": [{"name": "writes", "input": {"topic": "x"}, "fakes": {"llm": ["text"]}, "expect": {"equals": "text"}}],
}


def plan(root: Path, *args: str, environ: dict[str, str] | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["plan", str(root), *args], environ=environ or {}, out=out)
    return code, out.getvalue()


@pytest.fixture
def branch(tmp_path: Path) -> Iterator[tuple[Remote, str]]:
    """A repository whose main has three flows, and a branch off it that changes them all and the routing."""
    remote = Remote.create(tmp_path)
    tests = [{"name": "answers", "input": {"question": "q"}, "expect": {"equals": "one"}}]
    base = remote.commit(
        {
            "flows/echo.json": echo_flow("echo", "one", tests=tests),
            "flows/other.json": echo_flow("other", "two"),
            "flows/gone.json": echo_flow("gone", "three"),
            "flows/same.json": echo_flow("same", "four"),
            "gitops-flow.yaml": yaml.safe_dump(ROUTING),
        },
        "main",
    )
    remote.push()
    remote.git("checkout", "-q", "-b", "feature")
    echo = json.loads(echo_flow("echo", "one", tests=tests))
    echo["nodes"][0]["params"]["template"] = "Q: {question} in {language}"  # a new required input
    echo["tests"][0]["input"]["language"] = "en"
    echo["nodes"][1]["params"]["responses"] = ["uno"]
    echo["tests"][0]["expect"] = {"equals": "uno"}
    broken = json.loads(echo_flow("other", "two"))
    broken["nodes"][1]["component"] = "NoSuchModel"
    routing = {
        "routes": {"default": [{"ref": "stable", "weight": 80}, {"ref": "main", "weight": 20}]},
        "yanked": ["abcdef1"],
    }
    remote.commit(
        {
            "flows/echo.json": json.dumps(echo, indent=2),
            "flows/other.json": json.dumps(broken, indent=2),
            "flows/gone.json": None,
            "flows/writer.json": json.dumps(OPENAI, indent=2),
            "gitops-flow.yaml": yaml.safe_dump(routing),
        },
        "feature",
    )
    yield remote, base


def test_the_plan_says_what_each_flow_will_do(branch: tuple[Remote, str]) -> None:
    remote, base = branch
    code, out = plan(remote.work, "--base", "main", "--format", "json")
    assert code == 0
    found = json.loads(out)
    flows = {f["name"]: f for f in found["flows"]}
    assert {n: (f["status"], f["verdict"]) for n, f in flows.items()} == {
        "echo": ("changed", "live"),
        "gone": ("removed", "removed"),
        "other": ("changed", "fails"),
        "same": ("unchanged", "unchanged"),
        "writer": ("added", "live"),
    }
    echo = flows["echo"]
    assert echo["changes"]["params"] == [
        {
            "kind": "changed",
            "what": "param prompt.template",
            "detail": "'Q: {question}' → 'Q: {question} in {language}'",
        },
        {"kind": "changed", "what": "param llm.responses", "detail": '["one"] → ["uno"]'},
    ]
    assert echo["changes"]["tests"] == [{"kind": "changed", "what": "test 'answers'", "detail": ""}]
    assert echo["tests"] == {"passed": 1, "failed": 0}
    assert echo["breaking"] is True
    assert {"side": "input", "text": "input field 'language' is a new required field", "breaking": True} in echo[
        "contract"
    ]
    other = flows["other"]
    assert other["changes"]["nodes"] == [
        {"kind": "changed", "what": "node llm", "detail": "FakeChatModel → NoSuchModel"}
    ]
    assert [p["code"] for p in other["problems"]] == ["unknown-component"]
    assert other["problems"][0]["file"] == "flows/other.json" and other["problems"][0]["line"] is not None
    writer = flows["writer"]
    assert (writer["secrets"], writer["new_secrets"]) == (["OPENAI_API_KEY"], ["OPENAI_API_KEY"])
    assert found["routing"]["changes"] == [
        {"kind": "changed", "what": "route default: weight of stable", "detail": "90 → 80"},
        {"kind": "changed", "what": "route default: weight of main", "detail": "10 → 20"},
        {"kind": "added", "what": "yanked", "detail": "abcdef1"},
    ]
    assert found["whole_commit_fails"] is False


def test_the_markdown_plan_reads_as_a_comment(branch: tuple[Remote, str]) -> None:
    remote, _ = branch
    code, out = plan(remote.work, "--base", "main", "--format", "markdown")
    assert code == 0
    assert out.startswith(MARKER + "\n### gitops-flow plan\n")
    assert "**2 flows will go live, 1 will fail, 1 will be removed.**" in out
    assert "a flow that fails keeps serving its last good version, and the others go live" in out
    assert "| `echo` | changed: 2 params, 1 test | ⚠️ goes live, with a breaking contract change |" in out
    line = next(
        n for n, t in enumerate((remote.work / "flows/other.json").read_text().splitlines(), 1) if "NoSuch" in t
    )
    verdict = f"❌ fails; keeps serving its last good version (flows/other.json:{line} unknown-component)"
    assert f"| `other` | changed: 1 node | {verdict} |" in out
    assert "| `writer` | added | ✅ goes live if the server has OPENAI_API_KEY |" in out
    assert "| `gone` | removed | 🗑️ removed: no longer served from the branch head |" in out
    assert "- ⚠️ **breaking input**: input field 'language' is a new required field" in out
    assert "Unchanged: `same`." in out
    assert "- added yanked: abcdef1" in out


def test_a_broken_routing_file_blocks_the_whole_commit(branch: tuple[Remote, str]) -> None:
    remote, _ = branch
    (remote.work / "gitops-flow.yaml").write_text("routes: {default: [{ref: main, weight: 0}]}\n")
    code, out = plan(remote.work, "--base", "main", "--format", "json")
    found = json.loads(out)
    assert found["whole_commit_fails"] is True
    assert {f["verdict"] for f in found["flows"] if f["status"] != "unchanged"} == {"blocked"}
    assert [p["code"] for p in found["routing"]["problems"]] == ["zero-weights"]
    assert plan(remote.work, "--base", "main")[1].splitlines()[0].endswith("nothing of it goes live.")


def test_the_base_defaults_to_the_tracked_branch_of_origin(branch: tuple[Remote, str]) -> None:
    remote, base = branch
    remote.git("fetch", "-q", "origin")
    assert plan(remote.work, "--format", "json")[1] == plan(remote.work, "--base", "origin/main", "--format", "json")[1]
    code, _ = plan(remote.work, "--format", "json", environ={"GITOPS_FLOW_BRANCH": "trunk"})
    assert code == 2  # neither origin/trunk nor trunk exists


def test_a_base_that_is_not_a_commit_is_a_usage_error(
    branch: tuple[Remote, str], capsys: pytest.CaptureFixture[str]
) -> None:
    remote, _ = branch
    assert plan(remote.work, "--base", "no-such-rev")[0] == 2
    assert "--base no-such-rev: 'no-such-rev' is not a commit" in capsys.readouterr().err


def test_nothing_changed_says_so(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    remote.commit({"flows/echo.json": echo_flow("echo")})
    code, out = plan(remote.work, "--base", "HEAD")
    assert code == 0 and out.startswith("Plan against HEAD: Nothing the server serves changes.")


# -- the pull-request comment --------------------------------------------------------------------------------------


def actions_env(tmp_path: Path, standin: GitHubStandIn, event: dict[str, Any], token: str = TOKEN) -> dict[str, str]:
    """What GitHub Actions sets for a step, the event being a real payload of @octokit/webhooks-examples."""
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    return {
        "GITHUB_TOKEN": token,
        "GITHUB_REPOSITORY": standin.repo,
        "GITHUB_API_URL": standin.url,
        "GITHUB_EVENT_PATH": str(path),
        "GITHUB_EVENT_NAME": "pull_request",
    }


def pull_request_event() -> dict[str, Any]:
    return next(e for e in webhook_examples()["pull_request"] if e["action"] == "opened")


@pytest.fixture
def standin() -> Iterator[GitHubStandIn]:
    with github_standin() as running:
        yield running
        assert running.violations == []


def test_the_plan_is_one_comment_updated_on_each_run(
    branch: tuple[Remote, str], standin: GitHubStandIn, tmp_path: Path
) -> None:
    remote, _ = branch
    event = pull_request_event()
    number = event["pull_request"]["number"]
    for i in range(3):  # others' comments stay as they are
        standin.add_comment(number, f"a reviewer's note {i}")
    env = actions_env(tmp_path, standin, event)
    assert plan(remote.work, "--base", "main", "--format", "markdown", "--comment", environ=env)[0] == 0
    ours = [c for c in standin.comments[number] if MARKER in c["body"]]
    assert len(ours) == 1 and "1 will fail" in ours[0]["body"]
    (remote.work / "flows/other.json").write_text(echo_flow("other", "fixed"))  # the author fixes the flow
    assert plan(remote.work, "--base", "main", "--comment", environ=env)[0] == 0
    ours = [c for c in standin.comments[number] if MARKER in c["body"]]
    assert len(ours) == 1 and "1 will fail" not in ours[0]["body"] and "3 flows will go live" in ours[0]["body"]
    assert [c["body"] for c in standin.comments[number][:3]] == [f"a reviewer's note {i}" for i in range(3)]
    assert [s.operation for s in standin.seen].count("issues/create-comment") == 1
    assert [s.operation for s in standin.seen].count("issues/update-comment") == 1


def test_the_comment_is_found_past_the_first_page(
    branch: tuple[Remote, str], standin: GitHubStandIn, tmp_path: Path
) -> None:
    remote, _ = branch
    event = pull_request_event()
    number = event["pull_request"]["number"]
    env = actions_env(tmp_path, standin, event)
    assert plan(remote.work, "--base", "main", "--comment", environ=env)[0] == 0
    ours = standin.comments[number].pop()
    for _ in range(150):
        standin.add_comment(number, "chatter")
    standin.comments[number].append(ours)
    assert plan(remote.work, "--base", "main", "--comment", environ=env)[0] == 0
    assert sum(MARKER in c["body"] for c in standin.comments[number]) == 1


def test_a_comment_someone_else_wrote_with_the_marker_is_never_edited(
    branch: tuple[Remote, str], standin: GitHubStandIn, tmp_path: Path
) -> None:
    """Issue 21: the first comment holding the marker was updated, whoever wrote it; anyone who may comment can write
    the marker, and the plan then rewrote a maintainer's or an attacker's comment under their name."""
    remote, _ = branch
    event = pull_request_event()
    number = event["pull_request"]["number"]
    planted = [
        standin.add_comment(number, f"{MARKER}\nplanted by a person", login="mallory"),
        standin.add_comment(number, f"{MARKER}\nplanted by another app", login="mallory-app[bot]"),
    ]
    env = actions_env(tmp_path, standin, event)  # GITHUB_TOKEN: an installation token, writing as the Actions bot
    for _ in range(2):
        assert plan(remote.work, "--base", "main", "--comment", environ=env)[0] == 0
    comments = standin.comments[number]
    assert [c["body"] for c in comments[:2]] == [c["body"] for c in planted]  # untouched
    ours = [c for c in comments if c["user"]["login"] == "github-actions[bot]"]
    assert len(ours) == 1 and MARKER in ours[0]["body"] and len(comments) == 3
    updated = [s.path for s in standin.calls("issues/update-comment")]
    assert updated == [f"/repos/{standin.repo}/issues/comments/{ours[0]['id']}"]
    assert len(standin.calls("users/get-authenticated")) == 2  # asked (and refused: an installation token) each run


def test_a_personal_tokens_comment_is_found_by_its_user(branch: tuple[Remote, str], tmp_path: Path) -> None:
    remote, _ = branch
    with github_standin(user="alice") as standin:
        event = pull_request_event()
        number = event["pull_request"]["number"]
        env = actions_env(tmp_path, standin, event)
        planted = standin.add_comment(number, f"{MARKER}\nthe Actions bot's, not alice's", login="github-actions[bot]")
        for _ in range(2):
            assert plan(remote.work, "--base", "main", "--comment", environ=env)[0] == 0
        comments = standin.comments[number]
        assert comments[0]["body"] == planted["body"]
        assert [c["user"]["login"] for c in comments] == ["github-actions[bot]", "alice"]
        assert len(standin.calls("issues/update-comment")) == 1
        assert standin.violations == []


def test_a_github_apps_bot_is_named_by_a_setting(
    branch: tuple[Remote, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    remote, _ = branch
    with github_standin(bot="acme-planner[bot]") as standin:
        event = pull_request_event()
        number = event["pull_request"]["number"]
        env = {**actions_env(tmp_path, standin, event), "GITOPS_FLOW_COMMENT_BOT": "acme-planner[bot]"}
        for _ in range(2):
            assert plan(remote.work, "--base", "main", "--comment", environ=env)[0] == 0
        assert [c["user"]["login"] for c in standin.comments[number]] == ["acme-planner[bot]"]
        wrong = {**env, "GITOPS_FLOW_COMMENT_BOT": "not a bot"}
        assert plan(remote.work, "--base", "main", "--comment", environ=wrong)[0] == 2
        assert "GITOPS_FLOW_COMMENT_BOT 'not a bot' is not an app's bot login" in capsys.readouterr().err
        assert standin.violations == []


def test_a_read_only_token_keeps_the_plan_in_the_summary(
    branch: tuple[Remote, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    remote, _ = branch
    with github_standin(push=False) as standin:  # a fork's pull request: GitHub's token may not write
        env = actions_env(tmp_path, standin, pull_request_event())
        code, out = plan(remote.work, "--base", "main", "--format", "markdown", "--comment", environ=env)
    assert code == 0 and out.startswith(MARKER)
    err = capsys.readouterr().err
    assert "::warning title=gitops-flow plan::the plan could not be put on the pull request" in err
    assert "403" in err and TOKEN not in err
    assert standin.comments == {}


def test_a_push_has_no_pull_request_to_comment_on(
    branch: tuple[Remote, str], standin: GitHubStandIn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    remote, _ = branch
    env = actions_env(tmp_path, standin, webhook_examples()["push"][0])
    assert plan(remote.work, "--base", "main", "--comment", environ=env)[0] == 0
    assert "this run is not for a pull request: no comment" in capsys.readouterr().err
    assert standin.seen == []


def test_commenting_outside_actions_names_what_is_missing(
    branch: tuple[Remote, str], capsys: pytest.CaptureFixture[str]
) -> None:
    remote, _ = branch
    assert plan(remote.work, "--base", "main", "--comment")[0] == 2
    assert "commenting needs GITHUB_TOKEN, GITHUB_REPOSITORY, GITHUB_EVENT_PATH" in capsys.readouterr().err


# -- the workflow init writes --------------------------------------------------------------------------------------


def test_the_shipped_workflow_publishes_the_plan_as_summary_and_comment(tmp_path: Path, standin: GitHubStandIn) -> None:
    """The workflow's own steps, run by bash as GitHub's runner does, on a pull request against the stand-in."""
    root = tmp_path / "repo"
    assert main(["init", str(root)], environ={}, out=io.StringIO()) == 0
    remote_git = ["git", "-c", "user.name=A", "-c", "user.email=a@b", "-c", "init.defaultBranch=main"]
    subprocess.run([*remote_git, "init", "-q"], cwd=root, check=True)
    subprocess.run([*remote_git, "add", "--all"], cwd=root, check=True)
    subprocess.run([*remote_git, "commit", "-q", "-m", "init"], cwd=root, check=True)
    base = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    hello = json.loads((root / "flows/hello.json").read_text())
    hello["description"] = "Says hello, politely."
    (root / "flows/hello.json").write_text(json.dumps(hello, indent=2))

    workflow = yaml.safe_load((root / ".github/workflows/gitops-flow.yml").read_text())
    assert workflow["permissions"] == {"contents": "read", "pull-requests": "write"}
    [step] = [s for s in workflow["jobs"]["flows"]["steps"] if s.get("name") == "Plan the merge"]
    assert "pull_request" in step["if"] and "!cancelled()" in step["if"]
    summary = tmp_path / "summary.md"
    expressions = {"github.event.pull_request.base.sha": base, "github.token": TOKEN}
    env = {
        k: re.sub(r"\$\{\{\s*(.+?)\s*\}\}", lambda m: expressions.get(m[1], ""), str(v)) for k, v in step["env"].items()
    }
    runner = {**actions_env(tmp_path, standin, pull_request_event()), **env, "GITHUB_STEP_SUMMARY": str(summary)}
    runner["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    for _ in range(2):  # two pushes to the pull request: one comment
        done = subprocess.run(
            ["bash", "-e", "-c", step["run"]],
            cwd=root,
            env={**os.environ, **runner},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
    text = summary.read_text()
    assert text.count(MARKER) == 2  # appended by each run to its own summary file
    assert "| `hello` | changed: 1 setting | ✅ goes live |" in text
    [comment] = standin.comments[pull_request_event()["pull_request"]["number"]]
    assert comment["body"].rstrip() == text[text.rindex(MARKER) :].rstrip()  # print() adds a line feed


@pytest.mark.parametrize(
    "spec",
    [
        "gitops-flow==0.2.0",
        "gitops-flow @ git+https://github.com/acme/gitops-flow@v0.2.0",
        "gitops-flow[redis]>=0.2,<0.3",
    ],
)
def test_init_writes_the_install_spec_it_is_given(tmp_path: Path, spec: str) -> None:
    out = io.StringIO()
    assert main(["init", str(tmp_path), "--install", spec], environ={}, out=out) == 0
    workflow = yaml.safe_load((tmp_path / ".github/workflows/gitops-flow.yml").read_text())
    [install] = [s for s in workflow["jobs"]["flows"]["steps"] if s.get("name") == "Install gitops-flow"]
    assert install["env"]["GITOPS_FLOW_INSTALL"] == f"${{{{ vars.GITOPS_FLOW_INSTALL || '{spec}' }}}}"
    assert install["run"] == 'pip install "$GITOPS_FLOW_INSTALL"'
    assert f"CI installs: {spec}" in out.getvalue()


@pytest.mark.parametrize(
    "spec, why",
    [
        ("gitops-flow'==1", "without quotes"),
        ("gitops-flow; rm -rf $HOME", "without quotes, $"),
        ("gitops-flow @ https://user:tok@host/x.whl", "holds a credential"),
        ("gitops-flow #0.2", "' #'"),
    ],
)
def test_init_refuses_a_spec_the_workflow_cannot_carry(
    tmp_path: Path, spec: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", str(tmp_path), "--install", spec], environ={}, out=io.StringIO()) == 2
    assert why in capsys.readouterr().err
    assert not (tmp_path / ".github").exists()


def test_the_default_install_spec_is_where_this_copy_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    from email.message import Message
    from importlib import metadata

    from gitops_flow.cli import install

    class Dist:
        def __init__(
            self, direct_url: str | None, repository: str | None = "https://github.com/acme/gitops-flow"
        ) -> None:
            self.direct_url = direct_url
            self.metadata = Message()
            self.metadata["Project-URL"] = "Changelog, https://github.com/acme/gitops-flow/blob/main/CHANGELOG.md"
            if repository is not None:
                self.metadata["Project-URL"] = f"Repository, {repository}"

        def read_text(self, name: str) -> str | None:
            return self.direct_url

    cases = {
        None: ("gitops-flow==9.9", None),
        json.dumps({"url": "https://github.com/acme/gitops-flow", "vcs_info": {"vcs": "git", "commit_id": "c0ffee"}}): (
            "gitops-flow @ git+https://github.com/acme/gitops-flow@c0ffee",
            None,
        ),
        json.dumps({"url": "https://pkgs.example.com/gitops_flow-9.9-py3-none-any.whl", "archive_info": {}}): (
            "gitops-flow @ https://pkgs.example.com/gitops_flow-9.9-py3-none-any.whl",
            None,
        ),
    }
    for direct_url, expected in cases.items():
        monkeypatch.setattr(metadata, "distribution", lambda name, d=direct_url: Dist(d))
        assert install.default_spec("9.9") == expected
    # from what CI cannot reach (a checkout, a local wheel): the release's wheel, never a pin an index may not have
    release = "https://github.com/acme/gitops-flow/releases/download/v9.9/gitops_flow-9.9-py3-none-any.whl"
    for local in (
        {"url": "file:///src", "dir_info": {}},
        {"url": "file:///tmp/gitops_flow-9.9.whl", "archive_info": {}},
    ):
        monkeypatch.setattr(metadata, "distribution", lambda name, d=local: Dist(json.dumps(d)))
        spec, note = install.default_spec("9.9")
        assert spec == f"gitops-flow @ {release}" and install.check_spec(spec) == spec
        assert note is not None and "a local file or folder CI cannot reach" in note and release in note
    # metadata naming no GitHub repository: the pin, and a note saying what to do
    for repository in (None, "https://gitlab.example.com/acme/gitops-flow", "http://github.com/acme/gitops-flow"):
        monkeypatch.setattr(metadata, "distribution", lambda name, r=repository: Dist('{"url": "file:///src"}', r))
        spec, note = install.default_spec("9.9")
        assert spec == "gitops-flow==9.9" and note is not None and "--install SPEC" in note


def test_a_literal_key_in_a_pull_request_never_reaches_the_plan(tmp_path: Path) -> None:
    """A flow that fails validation may hold a literal key: Git has it, a plan (a PR comment anyone reads) not."""
    remote = Remote.create(tmp_path)
    base = remote.commit({"flows/writer.json": json.dumps(OPENAI)}, "main")
    leaky = json.loads(json.dumps(OPENAI))
    key = "sk-proj-" + "A1b2C3d4" * 6
    leaky["nodes"][1]["params"]["api_key"] = key
    leaky["nodes"][1]["params"]["model_kwargs"] = {"note": key}
    remote.commit({"flows/writer.json": json.dumps(leaky, indent=2)}, "oops")
    for format in ("text", "markdown", "json"):
        code, text = plan(remote.work, "--base", base, "--format", format)
        assert code == 0 and key not in text and key[:20] not in text, format
        assert "hidden: looks like a credential" in text
