"""main.py: validate/test/schema/init as a user runs them, exit codes 0/1/2, and the shipped CI workflow."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops_flow.cli.main import main
from gitops_flow.flow.document import json_schema
from tests.gitrepo import git

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "flows"


def run(*argv: str, environ: dict[str, str] | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), environ=environ or {}, out=out)
    return code, out.getvalue()


def write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2))
    return path


def test_the_example_flows_validate_and_pass_their_tests() -> None:
    code, text = run("validate", str(EXAMPLES))
    assert code == 0, text
    assert "4 files checked: 0 errors" in text
    code, text = run("test", str(EXAMPLES))
    assert code == 0, text
    assert text.strip().endswith("7 passed, 0 failed")


def test_validate_defaults_to_the_flows_folder_of_the_current_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code, text = run("validate", "--format", "json")
    assert code == 0
    assert json.loads(text)["files"] == 4


def test_a_broken_flow_exits_1_with_its_problems_and_the_others_still_checked(tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / "support-bot.json", tmp_path / "support-bot.json")
    broken = json.loads((EXAMPLES / "support-bot.json").read_text())
    broken["name"] = "broken"
    broken["nodes"][1]["component"] = "ChatModle"
    write(tmp_path / "broken.json", broken)
    code, text = run("validate", str(tmp_path), "--format", "json")
    body = json.loads(text)
    assert code == 1
    assert body["files"] == 2
    errors = [p for p in body["problems"] if p["severity"] == "error"]
    assert [(Path(p["file"]).name, p["code"], p["path"]) for p in errors] == [
        ("broken.json", "unknown-component", "$.nodes[1].component")
    ]
    assert "did you mean 'ChatModel'" in errors[0]["message"]


def test_github_format_prints_workflow_annotations_with_file_and_line(tmp_path: Path) -> None:
    write(tmp_path / "flows" / "bad.json", '{\n  "version": 1,\n  "name": "bad",\n  "nodez": []\n}\n')
    code, text = run("validate", str(tmp_path), "--format", "github")
    assert code == 1
    lines = text.splitlines()
    assert f"::error file={tmp_path}/flows/bad.json,line=4,title=unknown-key::$.nodez: unknown key 'nodez'" in text
    assert any(line.startswith("::error ") and "missing-key" in line for line in lines)


def test_annotation_messages_are_escaped_for_the_runner(tmp_path: Path) -> None:
    write(tmp_path / "x.json", "[1, 2]")
    code, text = run("validate", str(tmp_path / "x.json"), "--format", "github")
    assert code == 1
    assert "title=not-an-object::" in text
    from gitops_flow.cli.report import annotation

    line = annotation("error", "a,b:c.json", 3, "t", "50% done\nnext")
    assert line == "::error file=a%2Cb%3Ac.json,line=3,title=t::50%25 done%0Anext"


def test_a_path_that_does_not_exist_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run("validate", str(tmp_path / "missing"))
    assert code == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_an_unknown_format_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as caught:
        run("validate", "--format", "xml")
    assert caught.value.code == 2


def test_the_routing_file_is_validated_with_the_flows(tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / "support-bot.json", write(tmp_path / "flows" / "x", "").parent / "support-bot.json")
    (tmp_path / "flows" / "x").unlink()
    write(
        tmp_path / "gitops-flow.yaml",
        "routes:\n  support-bot:\n    - {ref: stable, weight: 100}\n  nope:\n"
        "    - {ref: main, weight: 1}\nstiky: user\n",
    )
    code, text = run("validate", str(tmp_path), "--format", "json")
    problems = {(p["code"], p["line"]) for p in json.loads(text)["problems"] if p["severity"] != "notice"}
    assert code == 1
    assert ("unknown-key", 6) in problems


def test_a_routing_file_moves_the_flows_folder(tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / "support-bot.json", write(tmp_path / "llm" / "x", "").parent / "support-bot.json")
    (tmp_path / "llm" / "x").unlink()
    write(tmp_path / "gitops-flow.yaml", "flows_dir: llm\n")
    code, text = run("validate", str(tmp_path), "--format", "json")
    assert code == 0
    assert json.loads(text)["files"] == 2  # the flow and the routing file


def test_test_reports_a_failing_expectation_and_exits_1(tmp_path: Path) -> None:
    doc = json.loads((EXAMPLES / "support-bot.json").read_text())
    doc["tests"][0]["expect"] = {"contains": "Goodbye"}
    write(tmp_path / "support-bot.json", doc)
    code, text = run("test", str(tmp_path))
    assert code == 1
    assert "FAIL support-bot :: greets: expected the output to contain 'Goodbye'; got 'Hello! How can I help" in text
    assert "PASS support-bot :: answers refunds" in text
    assert text.strip().endswith("1 passed, 1 failed")


def test_test_never_calls_an_unfaked_model(tmp_path: Path) -> None:
    doc = json.loads((EXAMPLES / "support-bot.json").read_text())
    doc["tests"][0]["fakes"] = {}
    write(tmp_path / "support-bot.json", doc)
    code, text = run("test", str(tmp_path), "--format", "json")
    body = json.loads(text)
    assert code == 1
    assert body["results"][0]["message"].startswith("model node(s) llm have no fakes")


def test_test_fails_a_case_whose_input_the_server_would_refuse_naming_the_case_the_field_and_the_line(
    tmp_path: Path,
) -> None:
    doc = json.loads((EXAMPLES / "support-bot.json").read_text())
    doc["tests"][0]["input"] = {"query": "hi"}
    path = write(tmp_path / "support-bot.json", doc)
    code, text = run("test", str(tmp_path))
    assert code == 1
    assert "FAIL support-bot :: greets: the server would refuse this input (422 bad-input)" in text
    assert "(question: Field required)" in text
    code, text = run("test", str(tmp_path), "--format", "github")
    line = next(n for n, t in enumerate(path.read_text().splitlines(), 1) if '"input": {' in t)  # the case's input
    assert f"::error file={path},line={line},title=test failed%3A greets::the server would refuse" in text


def test_test_counts_an_invalid_flow_as_a_failure(tmp_path: Path) -> None:
    write(tmp_path / "x.json", "{not json")
    code, text = run("test", str(tmp_path))
    assert code == 1
    assert "invalid-json" in text
    assert text.strip().endswith("0 passed, 0 failed, 1 flow invalid")


def test_schema_prints_the_published_schema() -> None:
    code, text = run("schema")
    assert code == 0
    assert json.loads(text) == json_schema()


def test_components_lists_the_allowlist() -> None:
    code, text = run("components")
    assert code == 0
    names = [line.split()[0] for line in text.splitlines()]
    assert {"ChatModel", "FakeChatModel", "ChatPromptTemplate", "StrOutputParser", "ChatHistory"} <= set(names)
    secret = {line.split()[0]: line.rpartition("(secret: ")[2] for line in text.splitlines() if "(secret: " in line}
    assert secret == {  # the only built-ins that take a secret, and where
        "Agent": "api_key, search_api_key)",
        "ChatModel": "api_key)",
        "HttpRequest": "api_key)",
        "Retriever": "api_key)",
        "WebSearch": "api_key)",
    }


def test_init_writes_the_workflow_and_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run("init", str(tmp_path))
    assert code == 0
    assert (tmp_path / ".github/workflows/gitops-flow.yml").is_file()
    assert (tmp_path / "flows/hello.json").is_file()
    assert run("validate", str(tmp_path))[0] == 0
    assert run("test", str(tmp_path))[0] == 0
    code, _ = run("init", str(tmp_path))
    assert code == 2
    error = capsys.readouterr().err
    assert ".github/workflows/gitops-flow.yml exists already; pass --force to overwrite it" in error
    assert run("init", str(tmp_path), "--force")[0] == 0


def run_workflow_steps(root: Path, event: dict[str, str]) -> list[subprocess.CompletedProcess[str]]:
    """Run the shipped workflow's gitops-flow steps in ``root`` as GitHub's runner does: each ``run`` by bash, with
    the step's ``env`` whose ``${{ expressions }}`` are taken from ``event`` (GitHub makes a missing one empty)."""
    workflow = yaml.safe_load((root / ".github/workflows/gitops-flow.yml").read_text())
    steps = [s for s in workflow["jobs"]["flows"]["steps"] if s.get("run", "").startswith("gitops-flow ")]
    assert len(steps) == 4
    # the plan (tests/test_plan.py) and the evaluation (tests/test_eval.py) run on pull requests only
    steps = [s for s in steps if "pull_request" not in s.get("if", "")]
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # where pip put gitops-flow
    done = []
    for step in steps:
        env = {
            k: re.sub(r"\$\{\{\s*(.+?)\s*\}\}", lambda m: event.get(m[1], ""), str(v))
            for k, v in step.get("env", {}).items()
        }
        environ = {**os.environ, "PATH": path, **env}
        argv = ["bash", "-e", "-c", step["run"]]
        done.append(
            subprocess.run(argv, cwd=root, env=environ, capture_output=True, text=True, timeout=120, check=False)
        )
    return done


def test_a_repository_using_the_shipped_workflow_gets_annotations_for_a_broken_flow(tmp_path: Path) -> None:
    """Run the workflow's own gitops-flow steps, as GitHub would on a push, in a repository with a broken flow."""
    assert run("init", str(tmp_path))[0] == 0
    doc = json.loads((tmp_path / "flows/hello.json").read_text())
    doc["nodes"][1]["params"]["api_key"] = "sk-proj-abcdefghijklmnopqrstuvwx1234"
    write(tmp_path / "flows/hello.json", doc)
    results = run_workflow_steps(tmp_path, {})
    assert [r.returncode for r in results] == [1, 1], [r.stderr for r in results]
    outputs = [r.stdout for r in results]
    text = (tmp_path / "flows/hello.json").read_text().splitlines()
    line = next(n for n, t in enumerate(text, 1) if '"api_key"' in t)
    assert f"::error file=flows/hello.json,line={line},title=literal-secret::$.nodes[1].params.api_key" in outputs[0]
    assert "sk-proj-abcdefghijklmnopqrstuvwx1234" not in "".join(outputs)
    assert "::error file=flows/hello.json" in outputs[1]


def test_the_shipped_workflow_reports_a_breaking_change_against_the_pull_requests_base(tmp_path: Path) -> None:
    """A pull request whose flow now needs an input its callers do not send: the checkout holds the whole history,
    and the validate step compares with the base GitHub names in the event."""
    assert run("init", str(tmp_path))[0] == 0
    git("init", "-q", cwd=tmp_path)
    git("add", "--all", cwd=tmp_path)
    git("commit", "-q", "-m", "init", cwd=tmp_path)
    base = git("rev-parse", "HEAD", cwd=tmp_path)
    doc = json.loads((tmp_path / "flows/hello.json").read_text())
    doc["nodes"][0]["params"]["messages"][1] = ["human", "{question} (in {language})"]
    doc["tests"][0]["input"]["language"] = "English"
    write(tmp_path / "flows/hello.json", doc)
    git("commit", "-q", "-am", "answer in the caller's language", cwd=tmp_path)

    validate, test = run_workflow_steps(tmp_path, {"github.event.pull_request.base.sha": base})
    assert validate.returncode == 1, validate.stderr
    assert test.returncode == 0, test.stdout  # the flow's own tests were updated with it; its callers were not
    lines = (tmp_path / "flows/hello.json").read_text().splitlines()
    line = next(n for n, t in enumerate(lines, 1) if '"id": "prompt"' in t) - 1  # the entry node's opening brace
    expected = f"::error file=flows/hello.json,line={line},title=breaking-input::$.nodes[0]: breaks callers of {base}"
    assert expected in validate.stdout
    assert "input field 'language' is a new required field" in validate.stdout
    [push] = run_workflow_steps(tmp_path, {})[:1]  # after the merge, a push has no base: nothing to compare with
    assert push.returncode == 0, push.stdout


def test_python_dash_m_runs_the_command_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gitops_flow", "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.startswith("gitops-flow ")


def test_an_operator_components_file_comes_from_the_flag_or_the_environment(tmp_path: Path) -> None:
    module = write(
        tmp_path / "gf_extra_components.py",
        "from langchain_core.runnables import RunnableLambda\n"
        "def shout(*, suffix: str = '!'):\n    return RunnableLambda(lambda t: t.upper() + suffix)\n",
    )
    sys.path.insert(0, str(module.parent))
    try:
        components = write(tmp_path / "components.yaml", "components:\n  Shout: gf_extra_components:shout\n")
        flow = {
            "version": 1,
            "name": "loud",
            "nodes": [{"id": "s", "component": "Shout", "params": {"suffix": "?"}}],
            "tests": [{"name": "shouts", "input": "hey", "expect": {"equals": "HEY?"}}],
        }
        write(tmp_path / "flows" / "loud.json", flow)
        assert run("test", str(tmp_path))[0] == 1  # Shout is not allowlisted by default
        assert run("test", str(tmp_path), "--components", str(components))[0] == 0
        assert run("test", str(tmp_path), environ={"GITOPS_FLOW_COMPONENTS": str(components)})[0] == 0
    finally:
        sys.path.remove(str(module.parent))
        sys.modules.pop("gf_extra_components", None)


def test_a_broken_components_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    components = write(tmp_path / "components.yaml", "components:\n  Bad: not-a-target\n")
    code, _ = run("components", "--components", str(components))
    assert code == 1
    assert "needs a target of the form 'module:attr'" in capsys.readouterr().err


# -- import-langflow ------------------------------------------------------------------------------------------------

LANGFLOW = Path(__file__).resolve().parent / "data" / "langflow"


def test_import_langflow_writes_native_documents_that_validate_and_pass_tests(tmp_path: Path) -> None:
    out = tmp_path / "flows"
    code, text = run(
        "import-langflow",
        str(LANGFLOW / "basic-prompting.json"),
        str(LANGFLOW / "v1.1-saas-pricing.json"),
        "-o",
        str(out),
    )

    assert code == 0, text
    assert sorted(p.name for p in out.iterdir()) == ["basic-prompting.json", "v1-1-saas-pricing.json"]
    written = (out / "basic-prompting.json").read_text()
    assert written.startswith('{\n  "version": 1,\n  "name": "basic-prompting",') and written.endswith("}\n")
    assert "code" not in json.loads(written)["nodes"][0]
    assert f"wrote {out / 'basic-prompting.json'}" in text
    # round trip: the written documents validate, and tests written for them pass with fakes
    code, text = run("validate", str(out))
    assert code == 0, text
    doc = json.loads(written)
    doc["tests"] = [
        {
            "name": "answers",
            "input": "hello",
            "fakes": {"LanguageModelComponent-FLeYF": ["Hello there"]},
            "expect": {"equals": "Hello there"},
        }
    ]
    write(out / "basic-prompting.json", doc)
    saas = json.loads((out / "v1-1-saas-pricing.json").read_text())
    calc = {"tool_calls": [{"name": "calculator", "args": {"expression": "(2000+1000+3000) * 1.3 / 200"}}]}
    saas["tests"] = [
        {
            "name": "prices",
            "input": {},
            "fakes": {"Agent-GgGua": [json.dumps(calc), "39 a month"]},
            "expect": {"contains": "39"},
        }
    ]
    write(out / "v1-1-saas-pricing.json", saas)
    code, text = run("test", str(out))
    assert code == 0, text
    assert "2 passed, 0 failed" in text


def test_import_langflow_writes_nothing_for_an_export_it_cannot_convert(tmp_path: Path) -> None:
    code, text = run(
        "import-langflow",
        str(LANGFLOW / "memory-chatbot.json"),
        str(LANGFLOW / "basic-prompting.json"),
        "-o",
        str(tmp_path),
    )

    assert code == 1
    assert [p.name for p in tmp_path.iterdir()] == ["basic-prompting.json"]
    assert "MemoryBase-xePih (MemoryBase, 'Memory Base') cannot be converted" in text
    assert not list(tmp_path.glob(".*.tmp"))


def test_import_langflow_defaults_to_the_current_folder_and_refuses_native_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, text = run("import-langflow", str(LANGFLOW / "v1.0-memory-chatbot.json"), str(EXAMPLES / "triage.json"))

    assert code == 1
    assert (tmp_path / "v1-0-memory-chatbot.json").is_file()
    assert "not-langflow" in text and not (tmp_path / "triage.json").exists()


@pytest.mark.parametrize(
    "argv",
    [["import-langflow", "missing.json"], ["import-langflow", "x.json", "-o", "file.txt"]],
    ids=["missing-file", "output-is-a-file"],
)
def test_import_langflow_usage_errors_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(LANGFLOW / "basic-prompting.json", tmp_path / "x.json")
    (tmp_path / "file.txt").write_text("")

    assert run(*argv)[0] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "x.json"]


def test_import_langflow_needs_a_file() -> None:
    with pytest.raises(SystemExit) as exited:
        run("import-langflow")
    assert exited.value.code == 2


def test_import_langflow_never_overwrites_the_export_itself(tmp_path: Path) -> None:
    shutil.copy(LANGFLOW / "basic-prompting.json", tmp_path / "basic-prompting.json")
    before = (tmp_path / "basic-prompting.json").read_bytes()

    code, _ = run("import-langflow", str(tmp_path / "basic-prompting.json"), "-o", str(tmp_path))

    assert code == 2
    assert (tmp_path / "basic-prompting.json").read_bytes() == before


def test_a_langflow_export_in_flows_validates_with_lines_in_the_export(tmp_path: Path) -> None:
    shutil.copy(LANGFLOW / "document-qa.json", tmp_path / "document-qa.json")

    code, text = run("validate", str(tmp_path), "--format", "github")

    assert code == 1  # its Knowledge node reads documents committed under knowledge/document-qa/: none are
    assert f"::warning file={tmp_path}/document-qa.json,line=662,title=langflow-knowledge::$.data.nodes[2]" in text
    assert f"::error file={tmp_path}/document-qa.json,line=662,title=no-documents::$.data.nodes[2]" in text
