"""`gitops-flow eval`: a flow's datasets scored at the head and at a base revision of a real Git repository, the
delta and the changed cases, the routing file's threshold failing the check, the plan including it, and validation
of the datasets a flow names."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops_flow.cli.main import main
from gitops_flow.flow.datasets import parse_dataset
from gitops_flow.runtime.scorers import score
from tests.gitrepo import Remote
from tests.openaiapi import openai_standin
from tests.served import echo_flow

EVALS = [{"dataset": "evals/faq.jsonl", "scorers": ["exact", "contains", "json_schema", "judge:evals/rubric.md"]}]
DATASET = "\n".join(
    json.dumps(line)
    for line in (
        {"input": {"question": "when are you open?"}, "expected": "9 to 5"},
        {"input": {"question": "do you close?"}, "expected": "We never close."},
        {"name": "any text", "input": {"question": "hi"}, "schema": {"type": "string", "minLength": 1}},
        {"input": {"question": "be kind"}, "rubric": "polite and short"},
    )
)
ROUTING = {"routes": {"default": [{"ref": "main", "weight": 100}]}, "evals": {"min_delta": -0.05}}


def run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(args), environ={}, out=out)
    return code, out.getvalue()


def support(answer: str, **extra: Any) -> str:
    return echo_flow("support", answer, evals=EVALS, **extra)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Remote:
    """main answers "Our hours are 9 to 5."; branch ``better`` answers "We never close.", ``worse`` "Sorry."."""
    remote = Remote.create(tmp_path_factory.mktemp("eval"))
    remote.commit(
        {
            "flows/support.json": support("Our hours are 9 to 5."),
            "evals/faq.jsonl": DATASET,
            "evals/rubric.md": "Score 1 when the answer is polite, 0 otherwise.",
            "gitops-flow.yaml": yaml.safe_dump(ROUTING),
        },
        "main",
    )
    for branch, answer in (("better", "We never close."), ("worse", "Sorry.")):
        remote.git("checkout", "-q", "-b", branch, "main")
        remote.commit({"flows/support.json": support(answer)}, branch)
    remote.git("checkout", "-q", "better")
    return remote


def scores(found: dict[str, Any]) -> dict[str, tuple[Any, Any, Any]]:
    (flow,) = found["flows"]
    (dataset,) = flow["datasets"]
    return {s["scorer"]: (s["base"], s["head"], s["delta"]) for s in dataset["scorers"]}


def test_eval_against_a_base_shows_each_scorer_its_delta_and_the_changed_cases(repo: Remote) -> None:
    repo.git("checkout", "-q", "better")
    code, out = run("eval", str(repo.work), "--base", "main", "--format", "json")
    assert code == 0, out
    found = json.loads(out)
    assert found["base"] == "main" and found["failed"] is False
    assert scores(found) == {
        "exact": (0.0, 0.5, 0.5),
        "contains": (0.5, 0.5, 0.0),
        "json_schema": (1.0, 1.0, 0.0),
        "judge:evals/rubric.md": (None, None, None),
    }
    dataset = found["flows"][0]["datasets"][0]
    judge = next(s for s in dataset["scorers"] if s["scorer"].startswith("judge:"))
    assert "a judge needs a model" in judge["skipped"]
    changed = {c["line"]: c for c in dataset["changed"]}
    assert sorted(changed) == [1, 2]  # the schema case scores the same; the rubric case has no scorer that ran
    assert changed[1]["scores"] == {"contains": {"base": 1.0, "head": 0.0}}
    assert changed[2]["scores"] == {"exact": {"base": 0.0, "head": 1.0}, "contains": {"base": 0.0, "head": 1.0}}
    assert (changed[2]["base_output"], changed[2]["head_output"]) == ("Our hours are 9 to 5.", "We never close.")

    code, text = run("eval", str(repo.work), "--base", "main")
    assert code == 0
    assert "exact: base 0.000, head 0.500, delta +0.500" in text
    assert "changed line 2 (line 2): exact 0.000 -> 1.000, contains 0.000 -> 1.000" in text
    assert "judge:evals/rubric.md: skipped (a judge needs a model" in text


def test_a_score_falling_past_the_threshold_fails_the_check(repo: Remote) -> None:
    repo.git("checkout", "-q", "worse")
    try:
        code, out = run("eval", str(repo.work), "--base", "main", "--format", "json")
        assert code == 1, out
        flow = json.loads(out)["flows"][0]
        assert flow["failures"] == ["evals/faq.jsonl contains: the score fell by 0.500, more than 0.05"]
        code, markdown = run("eval", str(repo.work), "--base", "main", "--format", "markdown")
        assert code == 1
        assert "| `evals/faq.jsonl` | contains | 0.500 | 0.000 | -0.500 |" in markdown
        assert "❌ threshold: evals/faq.jsonl contains: the score fell by 0.500" in markdown
        # a flow's own threshold replaces the file's: this one lets the score fall
        routing = {**ROUTING, "evals": {"min_delta": -0.05, "flows": {"support": {"min_delta": -1}}}}
        (repo.work / "gitops-flow.yaml").write_text(yaml.safe_dump(routing))
        assert run("eval", str(repo.work), "--base", "main")[0] == 0
    finally:
        repo.git("checkout", "-q", "--", "gitops-flow.yaml")
        repo.git("checkout", "-q", "better")


def test_without_a_base_the_head_is_scored_alone_and_a_bad_base_is_a_usage_error(repo: Remote) -> None:
    code, out = run("eval", str(repo.work), "--format", "json")
    assert code == 0
    assert scores(json.loads(out))["exact"] == (None, 0.5, None)
    assert run("eval", str(repo.work), "--base", "no-such-branch")[0] == 2


def test_the_plan_and_its_comment_include_the_evaluation(repo: Remote) -> None:
    repo.git("checkout", "-q", "worse")
    try:
        code, out = run("plan", str(repo.work), "--base", "main", "--format", "json")
        assert code == 0
        evals = json.loads(out)["evals"]
        assert evals["failed"] is True and scores(evals)["contains"] == (0.5, 0.0, -0.5)
        markdown = run("plan", str(repo.work), "--base", "main", "--format", "markdown")[1]
        assert "#### Evaluation" in markdown and "| `evals/faq.jsonl` | contains | 0.500 | 0.000 | -0.500 |" in markdown
    finally:
        repo.git("checkout", "-q", "better")


@pytest.mark.parametrize(
    ("dataset", "files", "code", "where"),
    [
        ("../outside.jsonl", {}, "dataset-outside", "flows/support.json"),
        ("/etc/passwd", {}, "dataset-outside", "flows/support.json"),
        ("evals/none.jsonl", {}, "dataset-missing", "flows/support.json"),
        ("evals/link.jsonl", {"link": True}, "dataset-outside", "flows/support.json"),
        ("evals/bad.jsonl", {"evals/bad.jsonl": '{"input": 1, "expected": 1}\n{"input": \n'}, "invalid-json", "2"),
        ("evals/bad.jsonl", {"evals/bad.jsonl": '{"expected": 1}\n'}, "missing-key", "1"),
        ("evals/bad.jsonl", {"evals/bad.jsonl": '{"input": 1}\n'}, "dataset-bad-case", "1"),
        ("evals/big.jsonl", {"evals/big.jsonl": '{"input": 1, "expected": 1}\n' * 501}, "dataset-too-many-lines", ""),
        ("evals/big.jsonl", {"evals/big.jsonl": " " * (1024 * 1024 + 1)}, "dataset-too-large", "flows/support.json"),
    ],
)
def test_validate_names_the_file_line_and_code_of_a_bad_dataset(
    tmp_path: Path, dataset: str, files: dict[str, Any], code: str, where: str
) -> None:
    root = tmp_path / "repo"
    (root / "flows").mkdir(parents=True)
    (root / ".git").mkdir()
    (tmp_path / "outside.jsonl").write_text('{"input": 1, "expected": 1}\n')
    for name, content in files.items():
        if name == "link":
            (root / "evals").mkdir(exist_ok=True)
            (root / "evals/link.jsonl").symlink_to(tmp_path / "outside.jsonl")
            continue
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    flow = json.loads(echo_flow("support", "x"))
    flow["evals"] = [{"dataset": dataset, "scorers": ["exact"]}]
    (root / "flows/support.json").write_text(json.dumps(flow, indent=2))
    status, out = run("validate", str(root), "--format", "json")
    assert status == 1, out
    problems = [p for p in json.loads(out)["problems"] if p["code"] == code]
    assert problems, out
    problem = problems[0]
    if where == "flows/support.json":  # a reference that does not hold names the flow's file and line
        assert problem["file"].endswith("flows/support.json") and problem["line"] is not None
        assert problem["path"] == "$.evals[0].dataset"
    else:  # a case that does not hold names the dataset and its line
        assert problem["file"] == dataset
        assert str(problem["line"] or "") == where


def test_a_scorer_the_schema_does_not_know_is_refused(tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    flow = json.loads(echo_flow("support", "x"))
    flow["evals"] = [{"dataset": "d.jsonl", "scorers": ["similar"]}]
    (tmp_path / "flows/support.json").write_text(json.dumps(flow))
    status, out = run("validate", str(tmp_path))
    assert status == 1 and "$.evals[0].scorers[0]" in out


def test_a_judge_scores_with_the_rubric_only_when_a_real_model_key_is_configured(
    repo: Remote, capsys: pytest.CaptureFixture[str]
) -> None:
    repo.git("checkout", "-q", "better")
    with openai_standin() as standin:
        standin.reply = "0.75"
        environ = {
            "OPENAI_API_KEY": "sk-test-standin",
            "GITOPS_FLOW_EVAL_JUDGE_MODEL": "openai:gpt-4o-mini",
            "GITOPS_FLOW_EVAL_JUDGE_BASE_URL": standin.base_url,
            "GITOPS_FLOW_ALLOWED_BASE_URLS": f"openai={standin.base_url}",
        }
        out = io.StringIO()
        assert main(["eval", str(repo.work), "--base", "main", "--format", "json"], environ=environ, out=out) == 0
        judged = scores(json.loads(out.getvalue()))["judge:evals/rubric.md"]
        assert judged == (0.75, 0.75, 0.0)
        assert len(standin.prompts) == 8  # four cases, at the head and at the base
        assert "Score 1 when the answer is polite" in standin.prompts[0] and "polite and short" in standin.prompts[-1]
        assert "We never close." in " ".join(standin.prompts)
        # a reply without a score leaves the case unscored, and says so
        standin.reply = "I cannot say."
        out = io.StringIO()
        main(["eval", str(repo.work), "--format", "json"], environ=environ, out=out)
        assert scores(json.loads(out.getvalue()))["judge:evals/rubric.md"] == (None, None, None)
        assert "the judge's reply has no score: 'I cannot say.'" in capsys.readouterr().err
        # a key that may not go to this base URL: no judge, and the reason says why
        refused = {**environ, "GITOPS_FLOW_ALLOWED_BASE_URLS": ""}
        out = io.StringIO()
        main(["eval", str(repo.work), "--format", "json"], environ=refused, out=out)
        dataset = json.loads(out.getvalue())["flows"][0]["datasets"][0]
        skipped = next(s["skipped"] for s in dataset["scorers"] if s["scorer"].startswith("judge:"))
        assert "refused" in skipped and len(standin.prompts) == 12
    # a model but no key: skipped, naming the variable
    out = io.StringIO()
    main(["eval", str(repo.work), "--format", "json"], environ={"GITOPS_FLOW_EVAL_JUDGE_MODEL": "openai:x"}, out=out)
    dataset = json.loads(out.getvalue())["flows"][0]["datasets"][0]
    assert "needs its key (OPENAI_API_KEY)" in dataset["scorers"][3]["skipped"]


def test_the_shipped_workflow_fails_the_pull_request_whose_scores_fall(repo: Remote, tmp_path: Path) -> None:
    """The step `gitops-flow init` writes, run by bash as GitHub's runner does, on the branch whose score falls."""
    assert main(["init", str(tmp_path / "starter")], environ={}, out=io.StringIO()) == 0
    workflow = yaml.safe_load((tmp_path / "starter/.github/workflows/gitops-flow.yml").read_text())
    [step] = [s for s in workflow["jobs"]["flows"]["steps"] if s.get("name") == "Evaluate on the datasets"]
    summary = tmp_path / "summary.md"
    env = {**os.environ, "BASE": repo.sha("main"), "GITHUB_STEP_SUMMARY": str(summary)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    repo.git("checkout", "-q", "worse")
    try:
        done = subprocess.run(
            ["bash", "-e", "-c", step["run"]], cwd=repo.work, env=env, capture_output=True, timeout=120
        )
        assert done.returncode == 1
        assert "| `evals/faq.jsonl` | contains | 0.500 | 0.000 | -0.500 |" in summary.read_text()
        repo.git("checkout", "-q", "better")
        done = subprocess.run(
            ["bash", "-e", "-c", step["run"]], cwd=repo.work, env=env, capture_output=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
    finally:
        repo.git("checkout", "-q", "better")


@pytest.mark.parametrize(
    ("scorer", "case", "output", "expected"),
    [
        ("exact", {"expected": "Yes."}, " Yes.\n", 1.0),
        ("exact", {"expected": {"a": 1}}, {"a": 1}, 1.0),
        ("exact", {"expected": "Yes."}, "yes.", 0.0),
        ("exact", {"schema": {}}, "anything", None),  # nothing to compare with: not scored
        ("contains", {"expected": "OPEN"}, "we are open", 1.0),
        ("contains", {"expected": ["open", "24/7"]}, "open 24/7", 1.0),
        ("contains", {"expected": ["open", "24/7"]}, "open", 0.0),
        ("json_schema", {"schema": {"type": "object", "required": ["id"]}}, '{"id": 3}', 1.0),
        ("json_schema", {"schema": {"type": "object", "required": ["id"]}}, '{"other": 3}', 0.0),
        ("json_schema", {"schema": {"type": "object"}}, "not json", 0.0),
        ("json_schema", {"schema": {"type": "string", "pattern": "^Order [0-9]+$"}}, "Order 12", 1.0),
        ("json_schema", {"schema": {"properties": {"n": {"type": "integer", "maximum": 5}}}}, {"n": 6}, 0.0),
        ("json_schema", {"schema": {"additionalProperties": False, "properties": {}}}, {"x": 1}, 0.0),
        ("json_schema", {"schema": {"type": "array", "items": {"enum": [1, 2]}, "maxItems": 2}}, [1, 2], 1.0),
        ("json_schema", {"schema": {"type": "integer"}}, True, 0.0),  # a boolean is not a number in JSON Schema
    ],
)
def test_scorers(scorer: str, case: dict[str, Any], output: Any, expected: float | None) -> None:
    line = {"input": "q", **case}
    cases, problems = parse_dataset(json.dumps(line).encode(), file="d.jsonl")
    assert problems == []
    assert score(scorer, cases[0], output) == expected


def test_a_case_the_flow_fails_on_scores_zero_and_says_why(tmp_path: Path) -> None:
    """An input the flow's schema refuses (as the server would, 422) is a failed case at both sides, never a crash."""
    remote = Remote.create(tmp_path)
    flow = json.loads(support("9 to 5"))
    flow["evals"] = [{"dataset": "evals/faq.jsonl", "scorers": ["contains"]}]
    remote.commit({"flows/support.json": json.dumps(flow), "evals/faq.jsonl": '{"input": 42, "expected": "9"}\n'})
    code, out = run("eval", str(remote.work), "--base", "HEAD", "--format", "json")
    assert code == 0
    dataset = json.loads(out)["flows"][0]["datasets"][0]
    assert dataset["scorers"][0]["head"] == 0.0 and dataset["changed"] == []
    code, text = run("eval", str(remote.work))
    assert "contains: base –, head 0.000" in text
    assert "the flow failed on line 1: the server would refuse this input (422 bad-input)" in text


@pytest.mark.parametrize(
    ("evals", "code", "path"),
    [
        ({"min_delta": -2}, "invalid-value", "$.evals.min_delta"),
        ({"min_score": 1.5}, "invalid-value", "$.evals.min_score"),
        ({"min_delta": "low"}, "invalid-value", "$.evals.min_delta"),
        ({"min_detla": -0.1}, "unknown-key", "$.evals.min_detla"),
        ({"flows": {"support": {"min_scor": 0.5}}}, "unknown-key", "$.evals.flows.support.min_scor"),
    ],
)
def test_a_bad_evals_threshold_is_a_problem_of_the_routing_file(
    tmp_path: Path, evals: dict[str, Any], code: str, path: str
) -> None:
    (tmp_path / "gitops-flow.yaml").write_text(yaml.safe_dump({"evals": evals}))
    status, out = run("validate", str(tmp_path / "gitops-flow.yaml"), "--format", "json")
    assert status == 1
    [problem] = json.loads(out)["problems"]
    assert (problem["code"], problem["path"], problem["file"]) == (code, path, str(tmp_path / "gitops-flow.yaml"))
    if code == "unknown-key":
        assert "did you mean" in problem["message"]
    assert run("eval", str(tmp_path))[0] == 1  # eval refuses to run on a routing file it cannot read


def test_a_threshold_for_a_flow_that_does_not_exist_is_a_warning(repo: Remote) -> None:
    routing = {**ROUTING, "evals": {"flows": {"suport": {"min_delta": 0}}}}
    (repo.work / "gitops-flow.yaml").write_text(yaml.safe_dump(routing))
    try:
        status, out = run("validate", str(repo.work), "--format", "json")
        assert status == 0, out
        [problem] = json.loads(out)["problems"]
        assert (problem["code"], problem["severity"], problem["path"]) == (
            "unknown-flow",
            "warning",
            "$.evals.flows.suport",
        )
    finally:
        repo.git("checkout", "-q", "--", "gitops-flow.yaml")


def test_a_real_model_node_answers_with_its_tests_fakes_and_a_change_of_them_shows(tmp_path: Path) -> None:
    """A ChatModel is never called: it answers what the flow's first test fakes it with, at each side."""

    def writer(fake: str) -> str:
        doc = {
            "version": 1,
            "name": "writer",
            "nodes": [
                {"id": "prompt", "component": "PromptTemplate", "params": {"template": "Answer: {question}"}},
                {"id": "llm", "component": "ChatModel", "params": {"model": "openai:gpt-4o-mini"}},
                {"id": "out", "component": "StrOutputParser"},
            ],
            "edges": [{"source": "prompt", "target": "llm"}, {"source": "llm", "target": "out"}],
            "tests": [{"name": "t", "input": {"question": "q"}, "fakes": {"llm": [fake]}, "expect": {"equals": fake}}],
            "evals": [{"dataset": "evals/w.jsonl", "scorers": ["contains"]}],
        }
        return json.dumps(doc, indent=2)

    remote = Remote.create(tmp_path)
    line = '{"input": {"question": "refund?"}, "expected": "refund within 30 days"}\n'
    remote.commit({"flows/writer.json": writer("No refunds."), "evals/w.jsonl": line}, "main")
    remote.git("checkout", "-q", "-b", "feature")
    remote.commit({"flows/writer.json": writer("You get a refund within 30 days.")}, "feature")
    code, out = run("eval", str(remote.work), "--base", "main", "--format", "json")
    assert code == 0, out
    dataset = json.loads(out)["flows"][0]["datasets"][0]
    assert dataset["scorers"][0]["base"] == 0.0 and dataset["scorers"][0]["head"] == 1.0
    assert dataset["changed"][0]["head_output"] == "You get a refund within 30 days."


def test_the_cases_run_in_the_test_sandbox_under_its_budget(tmp_path: Path) -> None:
    """Past GITOPS_FLOW_TEST_BUDGET the remaining cases fail unrun (test-timeout): a dataset cannot hold CI."""
    remote = Remote.create(tmp_path)
    lines = "".join(json.dumps({"input": {"question": f"q{i}"}, "expected": "9"}) + "\n" for i in range(400))
    remote.commit({"flows/support.json": support("9 to 5"), "evals/faq.jsonl": lines})
    (remote.work / "flows/support.json").write_text(
        json.dumps({**json.loads(support("9 to 5")), "evals": [{"dataset": "evals/faq.jsonl", "scorers": ["exact"]}]})
    )
    out = io.StringIO()
    main(["eval", str(remote.work), "--format", "json"], environ={"GITOPS_FLOW_TEST_BUDGET": "0.2"}, out=out)
    dataset = json.loads(out.getvalue())["flows"][0]["datasets"][0]
    assert dataset["cases"] == 400
    # cases past the budget fail unrun; on a machine so loaded that the child overruns, it is killed: either way
    assert any("0.2 s" in failure for failure in dataset["failed"]), dataset["failed"]
