"""Prompt templates are bounded at validation: plain {name} fields, mustache sections never nested (bad-template)."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest

from gitops_flow.cli.main import main
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.exceptions import BuildError
from gitops_flow.flow import prompts as templates
from gitops_flow.flow.document import FlowSpec
from gitops_flow.runtime.compiler import build_flow
from gitops_flow.validation.documents import validate_bytes
from tests.gitrepo import Remote
from tests.process import serve_process
from tests.served import echo_flow

LANGFLOW = Path(__file__).parent / "data" / "langflow"

ALLOWED = [
    "Q: {question}",
    "{a}{b} and {c_1}",
    "literal {{braces}} and {x}",
    "no fields at all",
    "",
]
REFUSED = {
    "{question:>3000000000}": "format spec",
    "{question:.100000}": "format spec",
    "{x:{y}}": "field nested in it",
    "{x:>{width}}": "field nested in it",
    "{x.__class__}": "reaches into a value",
    "{x.__class__.__init__.__globals__}": "reaches into a value",
    "{x[0]}": "reaches into a value",
    "{x[__class__]}": "reaches into a value",
    "{x!r}": "converts its value",
    "{x!s}": "converts its value",
    "{}": "has no name",
    "{0}": "is not a variable name",
    "Answer {question": "does not parse",
    "a } b": "does not parse",
}
MUSTACHE_ALLOWED = [
    "{{question}}",
    "{{user.name}} asks {{{question}}}",
    "{{#items}}- {{.}}\n{{/items}}{{#more}}{{text}}{{/more}}",
    "{{#items}}{{^done}}open{{/done}}{{/items}}",  # an inverted section renders once at most: allowed inside
    "single {braces:>30} are text in mustache",
]
MUSTACHE_REFUSED = {
    "{{#a}}{{#a}}{{#a}}x{{/a}}{{/a}}{{/a}}": "may not nest",
    "{{#a}}{{#b}}x{{/b}}{{/a}}": "may not nest",
    "{{^a}}{{#b}}{{#c}}x{{/c}}{{/b}}{{/a}}": "may not nest",
    "{{#a}}never closed": "does not parse",
}


@pytest.fixture(scope="module")
def registry() -> ComponentRegistry:
    return ComponentRegistry.builtin()


def _doc(prompt: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": 1,
        "name": "flow",
        "nodes": [
            prompt,
            {"id": "llm", "component": "FakeChatModel", "params": {"responses": ["Hi!"]}},
            {"id": "answer", "component": "StrOutputParser"},
        ],
        "edges": [{"source": "prompt", "target": "llm"}, {"source": "llm", "target": "answer"}],
    }


def _text_prompt(template: str, template_format: str = "f-string") -> dict[str, Any]:
    params = {"template": template, **({"template_format": template_format} if template_format != "f-string" else {})}
    return {"id": "prompt", "component": "PromptTemplate", "params": params}


def _chat_prompt(template: str) -> dict[str, Any]:
    messages = [["system", "You are a support agent."], ["human", template]]
    return {"id": "prompt", "component": "ChatPromptTemplate", "params": {"messages": messages}}


def _validate(doc: dict[str, Any], registry: ComponentRegistry) -> list[tuple[str, str, int | None]]:
    text = json.dumps(doc, indent=2)
    report = validate_bytes(text.encode(), registry, file="flow.json")
    return [(p.code, p.path, p.line) for p in report.problems if p.severity == "error"]


def _line_of(doc: dict[str, Any], needle: str) -> int:
    """The line of the dumped document that holds ``needle`` (as JSON writes it)."""
    lines = json.dumps(doc, indent=2).splitlines()
    return next(i for i, line in enumerate(lines, 1) if json.dumps(needle) in line)


# -- the rule --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("template", ALLOWED)
def test_plain_fields_are_allowed(template: str) -> None:
    assert templates.problem(template) is None


@pytest.mark.parametrize(("template", "why"), REFUSED.items(), ids=list(REFUSED))
def test_everything_else_of_str_format_is_refused_saying_why(template: str, why: str) -> None:
    found = templates.problem(template)

    assert found is not None and why in found


@pytest.mark.parametrize("template", MUSTACHE_ALLOWED)
def test_mustache_variables_and_flat_sections_are_allowed(template: str) -> None:
    assert templates.problem(template, "mustache") is None


@pytest.mark.parametrize(("template", "why"), MUSTACHE_REFUSED.items(), ids=list(MUSTACHE_REFUSED))
def test_nested_mustache_sections_are_refused(template: str, why: str) -> None:
    found = templates.problem(template, "mustache")

    assert found is not None and why in found


def test_a_refused_field_is_shown_short_however_long_it_is() -> None:
    found = templates.problem("{q:" + "9" * 100_000 + "}")

    assert found is not None and len(found) < 200


# -- where templates are: every prompt, with file, line and path ------------------------------------------------------


@pytest.mark.parametrize("template", list(REFUSED), ids=list(REFUSED))
def test_a_prompt_template_with_a_refused_field_is_a_bad_template_problem(
    template: str, registry: ComponentRegistry
) -> None:
    doc = _doc(_text_prompt(template))

    assert _validate(doc, registry) == [
        ("bad-template", "$.nodes[0].params.template", _line_of(doc, template)),
    ]


@pytest.mark.parametrize("template", list(REFUSED), ids=list(REFUSED))
def test_a_chat_message_with_a_refused_field_is_a_bad_template_problem(
    template: str, registry: ComponentRegistry
) -> None:
    doc = _doc(_chat_prompt(template))

    assert _validate(doc, registry) == [
        ("bad-template", "$.nodes[0].params.messages[1][1]", _line_of(doc, template)),
    ]


def test_each_bad_message_is_its_own_problem(registry: ComponentRegistry) -> None:
    doc = _doc(_chat_prompt("{x[0]}"))
    doc["nodes"][0]["params"]["messages"][0][1] = "{role:>99999999}"

    found = _validate(doc, registry)

    assert [(code, path) for code, path, _ in found] == [
        ("bad-template", "$.nodes[0].params.messages[0][1]"),
        ("bad-template", "$.nodes[0].params.messages[1][1]"),
    ]


def test_mustache_prompts_follow_the_mustache_rule(registry: ComponentRegistry) -> None:
    nested = _doc(_text_prompt("{{#a}}{{#b}}x{{/b}}{{/a}}", "mustache"))
    # single braces are plain text in mustache: what an f-string would refuse is fine here
    flat = _doc(_text_prompt("{{#a}}{x:>9999}{{/a}} {{question}}", "mustache"))

    assert [code for code, _, _ in _validate(nested, registry)] == ["bad-template"]
    assert _validate(flat, registry) == []


def test_the_example_flows_templates_are_all_plain(registry: ComponentRegistry) -> None:
    for path in sorted(Path(__file__).resolve().parent.parent.joinpath("flows").glob("*.json")):
        report = validate_bytes(path.read_bytes(), registry, file=path.name, stem=path.stem)
        assert not [p for p in report.problems if p.code == "bad-template"], path


def test_building_refuses_it_too_so_no_caller_can_skip_the_check(registry: ComponentRegistry) -> None:
    spec = FlowSpec.model_validate(_doc(_chat_prompt("{question:>3000000000}")))

    with pytest.raises(BuildError) as caught:
        build_flow(spec, registry, dry_run=True)

    assert (caught.value.code, caught.value.path) == ("bad-template", "$.nodes[0].params.messages[1][1]")


def test_a_langflow_prompt_with_a_refused_field_points_at_its_template_field(registry: ComponentRegistry) -> None:
    data = json.loads((LANGFLOW / "basic-prompting.json").read_text())
    index, prompt = next((i, n) for i, n in enumerate(data["data"]["nodes"]) if n["data"]["type"] == "Prompt")
    prompt["data"]["node"]["template"]["template"]["value"] = "Answer {question:>3000000000}"
    text = json.dumps(data, indent=2)

    report = validate_bytes(text.encode(), registry, file="basic-prompting.json", stem="basic-prompting")

    [problem] = [p for p in report.problems if p.code == "bad-template"]
    assert not report.ok
    assert problem.path == f"$.data.nodes[{index}].data.node.template.template.value"
    assert "Answer {question:>3000000000}" in text.splitlines()[problem.line - 1]  # type: ignore[operator]


# -- CI and the server -------------------------------------------------------------------------------------------------


def _flow_file(folder: Path, template: str) -> Path:
    doc = _doc(_text_prompt(template))
    doc["name"] = "greeter"
    doc["tests"] = [
        {"name": "greets", "input": {"question": "hi"}, "fakes": {"llm": ["Hi!"]}, "expect": {"equals": "Hi!"}}
    ]
    path = folder / "greeter.json"
    path.write_text(json.dumps(doc, indent=2))
    return path


@pytest.mark.parametrize("command", ["validate", "test"])
def test_validate_and_test_fail_on_a_bad_template(command: str, tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir(), bad.mkdir()
    _flow_file(good, "Q: {question}")
    path = _flow_file(bad, "Q: {question:>3000000000}")

    assert main([command, str(good)], environ={}, out=io.StringIO()) == 0
    out = io.StringIO()
    assert main([command, str(path)], environ={}, out=out) == 1
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "3000000000" in text)
    assert f"{path}:{line}: error[bad-template] $.nodes[0].params.template: " in out.getvalue()


def test_a_real_server_refuses_to_serve_a_bad_template_and_keeps_the_last_good_version(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    remote.commit({"flows/echo.json": echo_flow(answer="one")}, "good")
    remote.push()
    bad_doc = json.loads(echo_flow(answer="two"))
    bad_doc["nodes"][0]["params"]["template"] = "Q: {question:>3000000000}"
    with serve_process(remote, tmp_path) as server:
        good = server.wait_ready()
        bad = remote.commit({"flows/echo.json": json.dumps(copy.deepcopy(bad_doc), indent=2)}, "a huge width")
        remote.push()
        server.reconcile()

        versions = server.client.get("/versions").json()["versions"]
        record = next(v for v in versions if v["sha"] == bad)
        assert {
            name: [(p["code"], p["file"], p["path"]) for p in found] for name, found in record["failed"].items()
        } == {"echo": [("bad-template", "flows/echo.json", "$.nodes[0].params.template")]}
        answer = server.invoke("echo", {"question": "hi"})
        assert answer.status_code == 200
        assert (answer.json()["output"], answer.headers["x-flow-version"]) == ("one", good)
