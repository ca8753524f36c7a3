"""Issue 15's export cases: LangFlow's own file names, true refusal reasons, provider model nodes, inputs a flow cannot
pass on, fakes that fit their parser, aliases and tweakable params."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from gitops_flow.cli import main as cli
from gitops_flow.components.fake_answers import fake_answers
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.flow.document import FlowSpec
from gitops_flow.langflow.convert import convert
from gitops_flow.runtime.compiler import build_flow
from gitops_flow.validation.documents import flow_name, validate_bytes

DATA = Path(__file__).resolve().parent / "data" / "langflow"
REGISTRY = ComponentRegistry.builtin()


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return data


def node_of(data: dict[str, Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next(n for n in data["data"]["nodes"] if n["data"].get("type") == kind)
    return found


def errors(data: dict[str, Any], name: str = "flow") -> list[str]:
    conversion = convert(data, name=name)
    return [p.message for p in conversion.problems if p.severity == "error"]


@pytest.mark.parametrize(
    ("stem", "name"),
    [("Basic Prompting", "basic-prompting"), ("basic-prompting", "basic-prompting"), ("My.Flow v2", "my-flow-v2")],
)
def test_a_file_name_is_served_as_its_slug(stem: str, name: str) -> None:
    assert flow_name(stem) == name
    report = validate_bytes((DATA / "basic-prompting.json").read_bytes(), REGISTRY, file=f"{stem}.json", stem=stem)
    assert report.ok, report.problems
    assert report.spec is not None and report.spec.name == name


def test_validate_says_two_files_are_one_flow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    raw = (DATA / "basic-prompting.json").read_text()
    (flows / "Basic Prompting.json").write_text(raw)
    (flows / "basic-prompting.json").write_text(raw)
    assert cli.main(["validate", str(tmp_path)], environ={}) == 1
    out = capsys.readouterr().out
    assert out.count("duplicate-name") == 2 and "are each the flow 'basic-prompting'" in out


def test_langflow_1_12s_prompt_template_is_a_prompt() -> None:
    data = load("basic-prompting")
    prompt = node_of(data, "Prompt")
    prompt["data"]["type"] = "Prompt Template"
    text = prompt["data"]["node"]["template"]["template"]["value"]
    conversion = convert(data, name="basic-prompting")
    assert conversion.ok, conversion.problems
    assert conversion.document is not None
    [messages] = [
        n["params"]["messages"] for n in conversion.document["nodes"] if n["component"] == "ChatPromptTemplate"
    ]
    assert messages[0] == ["system", text]  # the prompt's text, folded in as before


def test_a_second_input_names_the_flows_input() -> None:
    data = load("basic-prompting")
    first = node_of(data, "ChatInput")
    first["data"]["type"] = "TextInput"
    second = copy.deepcopy(first)
    second["id"] = second["data"]["id"] = "TextInput-2"
    data["data"]["nodes"].append(second)
    [message] = errors(data)
    assert "TextInput-2 (TextInput" in message and "ChatInput-b6UCc (TextInput) is this flow's" in message
    assert "chat input" not in message


@pytest.mark.parametrize(
    ("kind", "provider", "model"),
    [("OllamaModel", "ollama", "llama3.2"), ("GroqModel", "groq", "llama-3.1-8b-instant")],
)
def test_a_provider_model_node_is_a_chat_model(kind: str, provider: str, model: str) -> None:
    data = load("basic-prompting")
    node = node_of(data, "LanguageModelComponent")
    node["data"]["type"] = kind
    template = node["data"]["node"]["template"]
    for key in ("model", "provider"):
        template.pop(key, None)
    template["model_name"] = {"value": model}
    conversion = convert(data, name="flow")
    assert conversion.document is not None, conversion.problems
    [chat] = [n for n in conversion.document["nodes"] if n["component"] == "ChatModel"]
    assert chat["params"]["model"] == f"{provider}:{model}"


@pytest.mark.parametrize("kind", ["NovitaModel", "SambaNovaModel"])
def test_a_provider_init_chat_model_does_not_know_is_refused_saying_so(kind: str) -> None:
    data = load("basic-prompting")
    node = node_of(data, "LanguageModelComponent")
    node["data"]["type"] = kind
    template = node["data"]["node"]["template"]
    template.pop("model", None)
    template.pop("provider", None)
    template["model_name"] = {"value": "some-model"}
    [message] = errors(data)
    assert f"({kind}" in message and "init_chat_model knows no model provider" in message


def test_a_flow_whose_input_carries_an_image_is_refused_not_dropped() -> None:
    data = load("basic-prompting")
    data["description"] = "Upload an image; a vision model describes it."
    [message] = errors(data)
    assert "ChatInput-b6UCc" in message and "'Upload an image'" in message and "refused rather than dropped" in message
    data = load("basic-prompting")
    node_of(data, "ChatInput")["data"]["node"]["template"]["files"]["value"] = ["uploads/cat.png"]
    [message] = errors(data)
    assert "files attached to the input" in message


def test_an_export_answers_to_its_id_and_endpoint_name() -> None:
    data = load("basic-prompting")
    data["endpoint_name"] = "basic"
    conversion = convert(data, name="basic-prompting")
    assert conversion.document is not None
    assert conversion.document["aliases"] == [data["id"], "basic"]


def test_fakes_fit_a_json_parser() -> None:
    doc = {
        "version": 1,
        "name": "parsed",
        "nodes": [
            {"id": "prompt", "component": "PromptTemplate", "params": {"template": "{q}"}},
            {"id": "llm", "component": "ChatModel", "params": {"model": "openai:gpt-4o-mini"}},
            {"id": "json", "component": "JsonOutputParser"},
        ],
        "edges": [{"source": "prompt", "target": "llm"}, {"source": "llm", "target": "json"}],
    }
    spec = FlowSpec.model_validate(doc)
    built = build_flow(spec, REGISTRY, fakes=fake_answers(spec, REGISTRY))
    assert asyncio.run(built.runnable.ainvoke({"q": "hi"})) == {"answer": "This is a fake answer from llm."}


@pytest.mark.parametrize(
    ("tweakable", "code"),
    [
        ({"llm": ["api_key"]}, "tweak-not-allowed"),
        ({"llm": ["base_url"]}, "tweak-not-allowed"),
        ({"llm": ["model"]}, "tweak-not-allowed"),
        ({"llm": ["model_kwargs"]}, "tweak-not-allowed"),
        ({"nope": ["temperature"]}, "unknown-node"),
        ({"llm": ["temprature"]}, "unknown-param"),
    ],
    ids=["api-key", "base-url", "model", "model-kwargs", "unknown-node", "misspelt"],
)
def test_a_flow_may_not_declare_a_guarded_or_unknown_tweak(tweakable: dict[str, list[str]], code: str) -> None:
    doc = {
        "version": 1,
        "name": "t",
        "nodes": [
            {"id": "prompt", "component": "PromptTemplate", "params": {"template": "{q}"}},
            {"id": "llm", "component": "ChatModel", "params": {"model": "openai:gpt-4o-mini"}},
        ],
        "edges": [{"source": "prompt", "target": "llm"}],
        "tweakable": tweakable,
    }
    report = validate_bytes(json.dumps(doc).encode(), REGISTRY, file="t.json", stem="t")
    assert [p.code for p in report.problems if p.severity == "error"] == [code]
    assert report.problems[0].path.startswith("$.tweakable")
    allowed = {**doc, "tweakable": {"llm": ["temperature", "max_tokens"]}}
    assert validate_bytes(json.dumps(allowed).encode(), REGISTRY, file="t.json", stem="t").ok


def test_a_file_as_the_only_input_is_the_files_text_sent_with_the_request() -> None:
    data = load("basic-prompting")
    node_of(data, "ChatInput")["data"]["type"] = "File"
    conversion = convert(data, name="reader")
    assert conversion.ok, conversion.problems
    assert "langflow-file-input" in [p.code for p in conversion.problems]
    assert conversion.document is not None and conversion.document["input"] == "ChatInput-b6UCc"
    spec = FlowSpec.model_validate(conversion.document)
    built = build_flow(spec, REGISTRY, fakes={n.id: ["read it"] for n in spec.nodes if n.component == "ChatModel"})
    assert asyncio.run(built.runnable.ainvoke("the file's text")) == "read it"

    beside = load("basic-prompting")
    node_of(beside, "ChatInput")["data"]["type"] = "TextInput"  # beside a chat input, a File is committed documents
    extra = copy.deepcopy(node_of(beside, "TextInput"))
    extra["id"] = extra["data"]["id"] = "File-1"
    extra["data"]["type"] = "File"
    beside["data"]["nodes"].append(extra)
    [message] = errors(beside)
    assert "File-1 (File" in message and "this flow has another input (ChatInput-b6UCc)" in message


def test_a_prompt_variable_used_twice_is_one_input() -> None:
    data = load("basic-prompting")
    prompt = node_of(data, "Prompt")["data"]["node"]["template"]
    prompt["template"]["value"] = "Say {word}, then {word} again."
    prompt["word"] = {"value": "", "type": "str"}
    chat = node_of(data, "ChatInput")
    edge = copy.deepcopy(data["data"]["edges"][0])
    edge.update({"source": chat["id"], "target": node_of(data, "Prompt")["id"], "id": "e-word"})
    edge["data"]["targetHandle"] = {**edge["data"]["targetHandle"], "fieldName": "word"}
    edge["data"]["sourceHandle"] = {**edge["data"]["sourceHandle"], "name": "message"}
    data["data"]["edges"].append(edge)
    conversion = convert(data, name="twice")
    assert conversion.document is not None, conversion.problems
    keyed = [e for e in conversion.document["edges"] if e.get("key") == "word"]
    assert len(keyed) == 1
