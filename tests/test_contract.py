"""`gitops-flow validate --base REV`: each flow's input and output schemas (as served) against the same flow at REV,
read from real Git repositories made by the git command line; breaking changes are problems on the flow's file and
line, compatible ones are not."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from gitops_flow.cli.main import main
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.delivery.source import read_at
from gitops_flow.exceptions import SourceError, UnknownVersion
from gitops_flow.flow.document import FlowSpec
from gitops_flow.runtime.compiler import build_flow
from gitops_flow.validation import contract
from tests.gitrepo import Remote, git
from tests.helpers import edge, flow, node

REGISTRY = ComponentRegistry.builtin()


def asks(*messages: tuple[str, str], parser: str = "StrOutputParser", name: str = "support-bot") -> dict[str, Any]:
    """A chat prompt of ``messages`` -> a fake model -> ``parser``."""
    return flow(
        name,
        nodes=[
            node("prompt", "ChatPromptTemplate", messages=[list(m) for m in messages]),
            node("llm", "FakeChatModel", responses=['{"answer": "ok"}']),
            node("answer", parser),
        ],
        edges=[edge("prompt", "llm"), edge("llm", "answer")],
    )


def fans_out(name: str = "support-bot") -> dict[str, Any]:
    """A Passthrough entry feeding a prompt of ``{question}``: it takes the question as an object or as text."""
    doc = asks(("human", "{question}"), name=name)
    doc["nodes"].insert(0, node("q", "Passthrough"))
    doc["edges"].insert(0, edge("q", "prompt"))
    return doc


QUESTION = ("human", "{question}")
BASE = asks(QUESTION)

CHANGES = [
    pytest.param(asks(("system", "Be brief."), QUESTION), [], id="a-new-prompt-text"),
    pytest.param(asks(("placeholder", "{history}"), QUESTION), [], id="a-new-optional-field"),
    pytest.param(fans_out(), [], id="the-input-also-taken-as-text"),
    pytest.param(
        asks(("human", "{question} in {language}")),
        [("input", "input field 'language' is a new required field")],
        id="a-new-required-field",
    ),
    pytest.param(
        asks(("human", "{query}")),
        [("input", "input field 'query' is a new required field"), ("input", "input field 'question' was removed")],
        id="a-renamed-field",
    ),
    pytest.param(
        asks(QUESTION, parser="JsonOutputParser"),
        [("output", "the output was a string and may now be any value")],
        id="a-retyped-output",
    ),
]


def _schemas(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    built = build_flow(FlowSpec.model_validate(doc), REGISTRY, dry_run=True)
    assert built.input_model is not None and built.output_model is not None
    return built.input_model.model_json_schema(), built.output_model.model_json_schema()


@pytest.mark.parametrize(("new", "expected"), CHANGES)
def test_changes_between_two_builds_of_a_flow(new: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    (old_in, old_out), (new_in, new_out) = _schemas(BASE), _schemas(new)
    found = [("input", c) for c in contract.changes("input", old_in, new_in)]
    found += [("output", c) for c in contract.changes("output", old_out, new_out)]
    assert found == expected


def test_text_no_longer_taken_is_a_breaking_input() -> None:
    old, _ = _schemas(fans_out())
    new, _ = _schemas(BASE)
    assert contract.changes("input", old, new) == ["the input no longer takes a string"]


OBJECT = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
SCHEMAS = [
    pytest.param("input", OBJECT, {**OBJECT, "properties": {"a": {"type": "number"}}}, [], id="int-to-number-input"),
    pytest.param(
        "output",
        OBJECT,
        {**OBJECT, "properties": {"a": {"type": "number"}}},
        ["output field 'a' may now be a number"],
        id="int-to-number-output",
    ),
    pytest.param(
        "input",
        OBJECT,
        {**OBJECT, "properties": {"a": {"type": "string"}}},
        ["input field 'a' no longer takes an integer"],
        id="retyped-input-field",
    ),
    pytest.param("output", OBJECT, {**OBJECT, "required": []}, ["output field 'a' may now be missing"], id="optional"),
    pytest.param("output", OBJECT, {**OBJECT, "properties": {"a": {"type": "integer"}, "b": {}}}, [], id="new-output"),
    pytest.param(
        "output",
        {"type": "array", "items": {"$ref": "#/$defs/Row"}, "$defs": {"Row": OBJECT}},
        {"type": "array", "items": {"$ref": "#/$defs/Row"}, "$defs": {"Row": {"type": "object", "properties": {}}}},
        ["output field '[].a' was removed"],
        id="a-field-of-items-by-ref",
    ),
    pytest.param(
        "input",
        {"anyOf": [{"type": "string"}, {"type": "null"}]},
        {"type": "string"},
        ["the input no longer takes null"],
        id="optional-no-more",
    ),
    pytest.param("input", {"type": "string"}, {}, [], id="now-takes-anything"),
    pytest.param("output", {}, {"type": "string"}, [], id="now-gives-less"),
]


@pytest.mark.parametrize(("side", "old", "new", "expected"), SCHEMAS)
def test_changes_between_schemas(side: Any, old: dict[str, Any], new: dict[str, Any], expected: list[str]) -> None:
    assert contract.changes(side, old, new) == expected


def test_a_recursive_schema_is_compared_to_a_bounded_depth() -> None:
    tree = {
        "$ref": "#/$defs/T",
        "$defs": {"T": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/T"}}}}},
    }
    assert contract.changes("input", tree, tree) == []
    assert contract.changes("output", tree, tree) == []


# -- reading a flow at a revision, with real git -----------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Remote:
    """A working clone whose first commit holds flows/support-bot.json (BASE), tagged ``v1``."""
    remote = Remote.create(tmp_path)
    remote.commit({"flows/support-bot.json": json.dumps(BASE, indent=2)}, "the support bot")
    remote.tag("v1")
    return remote


def validate(*argv: str) -> tuple[int, Any]:
    out = io.StringIO()
    code = main(["validate", *argv, "--format", "json"], environ={}, out=out)
    return code, json.loads(out.getvalue()) if out.getvalue() else None


def test_a_breaking_change_is_a_problem_on_the_flows_file_and_line(repo: Remote) -> None:
    flows = repo.work / "flows"
    changed = json.dumps(asks(("human", "{question} in {language}"), parser="JsonOutputParser"), indent=2)
    (flows / "support-bot.json").write_text(changed)
    code, body = validate(str(flows), "--base", "v1")
    assert code == 1
    problems = [(p["code"], p["severity"], p["path"], p["line"]) for p in body["problems"]]
    lines = changed.splitlines()
    prompt = next(n for n, t in enumerate(lines, 1) if '"id": "prompt"' in t) - 1  # the node's opening brace
    answer = next(n for n, t in enumerate(lines, 1) if '"id": "answer"' in t) - 1
    assert problems == [
        ("breaking-input", "error", "$.nodes[0]", prompt),
        ("breaking-output", "error", "$.nodes[2]", answer),
    ]
    assert body["problems"][0]["file"] == str(flows / "support-bot.json")
    assert body["problems"][0]["message"] == "breaks callers of v1: input field 'language' is a new required field"


def test_a_committed_change_is_compared_with_any_revision_name(repo: Remote) -> None:
    base = repo.sha()
    repo.commit({"flows/support-bot.json": json.dumps(asks(("human", "{query}")))}, "rename the field")
    for rev in (base, base[:10], "HEAD~1", "v1"):
        code, body = validate(str(repo.work / "flows"), "--base", rev)
        assert code == 1, rev
        assert {p["code"] for p in body["problems"]} == {"breaking-input"}
    assert validate(str(repo.work / "flows"), "--base", "HEAD")[0] == 0


def test_new_flows_compatible_changes_and_unchanged_flows_break_nothing(repo: Remote) -> None:
    flows = repo.work / "flows"
    (flows / "support-bot.json").write_text(json.dumps(asks(("placeholder", "{history}"), QUESTION)))
    (flows / "triage.json").write_text(json.dumps(asks(QUESTION, name="triage")))
    code, body = validate(str(flows), "--base", "v1")
    assert code == 0, body
    assert body["errors"] == 0


def test_a_flow_that_did_not_validate_at_the_base_has_no_contract_to_break(repo: Remote) -> None:
    repo.commit({"flows/support-bot.json": "{"}, "broken")
    (repo.work / "flows" / "support-bot.json").write_text(json.dumps(BASE))
    assert validate(str(repo.work / "flows"), "--base", "HEAD")[0] == 0


@pytest.mark.parametrize("rev", ["no-such-ref", "0" * 40, "v1:flows", "--all", "HEAD\nv1"])
def test_a_bad_revision_is_a_usage_error(repo: Remote, rev: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = validate(str(repo.work / "flows"), f"--base={rev}")
    assert code == 2
    assert "is not a commit of the repository at" in capsys.readouterr().err


def test_flows_outside_a_repository_are_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outside = tmp_path / "loose" / "flows"
    outside.mkdir(parents=True)
    (outside / "support-bot.json").write_text(json.dumps(BASE))
    code, _ = validate(str(outside), "--base", "main")
    assert code == 2
    assert "is not in a Git repository" in capsys.readouterr().err


def test_read_at_reads_the_commit_not_the_working_tree(repo: Remote, tmp_path: Path) -> None:
    flows = repo.work / "flows"
    (flows / "support-bot.json").write_text("changed")
    (flows / "new.json").write_text("{}")
    (flows / "link.json").symlink_to(flows / "support-bot.json")
    git("add", "--all", cwd=repo.work)
    git("commit", "-q", "-m", "a link", cwd=repo.work)
    first = read_at([flows / "support-bot.json", flows / "new.json"], "v1", max_bytes=10)
    assert first == {flows / "support-bot.json": json.dumps(BASE, indent=2).encode()[:11], flows / "new.json": None}
    # a symlinked file is read where it points (git stores the link, not the flow)
    assert read_at([flows / "link.json"], "HEAD", max_bytes=100) == {flows / "link.json": b"changed"}
    with pytest.raises(UnknownVersion):
        read_at([flows / "new.json"], "nope", max_bytes=10)
    with pytest.raises(SourceError):
        read_at([tmp_path / "elsewhere.json"], "v1", max_bytes=10)
