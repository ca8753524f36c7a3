"""langflow*.py: LangFlow exports converted to flow documents, run end to end with fakes, or refused node by node."""

from __future__ import annotations

import asyncio
import builtins
import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import RunnableLambda

from gitops_flow.components.base import FAKEABLE, Component
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.flow.document import FlowSpec
from gitops_flow.langflow.convert import convert, is_export, slug
from gitops_flow.runtime.compiler import build_flow
from gitops_flow.runtime.conversations import MemoryHistoryStore
from gitops_flow.security.policy import SecretPolicy
from gitops_flow.validation.documents import FileReport, validate_bytes

DATA = Path(__file__).resolve().parent / "data" / "langflow"
CALCULATE = json.dumps({"tool_calls": [{"name": "calculator", "args": {"expression": "2+3*4"}}]})


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return data


def validated(name: str, data: dict[str, Any] | None = None, registry: ComponentRegistry | None = None) -> FileReport:
    raw = json.dumps(data, indent=2).encode() if data is not None else (DATA / f"{name}.json").read_bytes()
    return validate_bytes(raw, registry or ComponentRegistry.builtin(), file=f"{name}.json", stem=slug(name))


def echo_model(**_: Any) -> Any:
    """A test model answering with every message it was given, one per line: shows what a model node receives."""
    return RunnableLambda(lambda prompt: AIMessage("\n".join(f"{m.type}: {m.text}" for m in prompt.to_messages())))


ECHO = ComponentRegistry.builtin().extended([Component("EchoModel", echo_model, "model")])


def echoing(spec: FlowSpec) -> FlowSpec:
    """The flow with every ChatModel node answered by EchoModel."""
    doc = spec.model_dump(exclude_none=True)
    for node in doc["nodes"]:
        if node["component"] == "ChatModel":
            node["component"], node["params"] = "EchoModel", {}
    return FlowSpec.model_validate(doc)


class Recorder(BaseCallbackHandler):
    """What the models were sent and what the tools answered."""

    def __init__(self) -> None:
        self.prompts: list[list[BaseMessage]] = []
        self.tool_outputs: list[str] = []

    def on_chat_model_start(self, serialized: Any, messages: list[list[BaseMessage]], **kwargs: Any) -> None:
        self.prompts += messages

    def on_tool_end(self, output: Any, **kwargs: Any) -> None:
        self.tool_outputs.append(str(getattr(output, "content", output)))


def run(spec: FlowSpec, value: Any, *, registry: ComponentRegistry | None = None, **kwargs: Any) -> Any:
    """Build ``spec`` with ``kwargs`` (fakes, history) and invoke it once in session s1."""
    callbacks = kwargs.pop("callbacks", [])
    built = build_flow(spec, registry or ComponentRegistry.builtin(), **kwargs)
    config = {"configurable": {"session_id": "s1"}, "callbacks": callbacks}
    return asyncio.run(built.runnable.ainvoke(value, config))


# -- every fixture: converted and run, or refused naming exactly its unsupported nodes ------------------------------

UNSUPPORTED = {
    "memory-chatbot": {("MemoryBase-xePih", "MemoryBase", "Memory Base", "$.data.nodes[4]")},
    "v1.2-price-deal-finder": {("AgentQL-6fb13", "AgentQL", "AgentQL Query Data", "$.data.nodes[3]")},
    "research-translation-loop": {
        ("ArXivComponent-zGqWh", "ArXivComponent", "arXiv", "$.data.nodes[0]"),
        ("LoopComponent-E7Ur0", "LoopComponent", "Loop", "$.data.nodes[5]"),
    },
    "content-aggregator": {
        ("BatchRun-ca", "BatchRunComponent", "Batch Run", "$.data.nodes[2]"),
        ("SaveToFile-VVVVb", "SaveToFile", "Write File", "$.data.nodes[6]"),
    },
}
# converted and checked in test_langflow_knowledge.py (some validate only where the operator allows their requests)
ELSEWHERE = {
    "if-else-prompting",  # test_langflow_control.py
    "simple-agent",
    "v1.0-blog-writer",
    "v1.0-document-qa",
    "v1.3-custom-component-maker",
    "v1.5-hybrid-search-rag",
    "v1.5-vector-store-rag",
}
CONVERTED = (
    "basic-prompting",
    "twitter-thread-generator",
    "v1.0-basic-prompt-chaining",
    "v1.0-memory-chatbot",
    "financial-report-parser",
    "text-sentiment-analysis",
    "v1.3-text-sentiment-analysis",
    "document-qa",
)


def test_the_fixtures_are_all_covered() -> None:
    names = {p.stem for p in DATA.glob("*.json")}
    assert names == set(UNSUPPORTED) | set(CONVERTED) | {"v1.1-saas-pricing"} | ELSEWHERE


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_exports_with_unsupported_nodes_fail_naming_each(name: str) -> None:
    report = validated(name)

    assert not report.ok and report.spec is None and report.conversion is None
    found = {(p.message.split(" ")[0], p.path) for p in report.problems if p.code == "langflow-unsupported"}
    assert found == {(node_id, path) for node_id, _, _, path in UNSUPPORTED[name]}
    assert [p.code for p in report.problems if p.severity == "error"] == ["langflow-unsupported"] * len(found)
    for node_id, kind, display, _ in UNSUPPORTED[name]:
        problem = next(p for p in report.problems if p.message.startswith(node_id))
        assert f"({kind}, {display!r}) cannot be converted: " in problem.message
        assert problem.line is not None and problem.file == f"{name}.json"


@pytest.mark.parametrize("name", CONVERTED + ("v1.1-saas-pricing",))
def test_supported_exports_convert_to_flows_that_validate(name: str) -> None:
    report = validated(name)

    assert report.ok, [p.describe() for p in report.problems]
    assert report.spec is not None and report.spec.name == slug(name)
    assert report.conversion is not None and report.conversion.document is not None
    FlowSpec.model_validate(report.conversion.document)  # the document itself is a valid flow document
    assert "code" not in json.dumps(report.conversion.document["nodes"]).lower().replace("codes", "")


def test_basic_prompting_sends_the_prompt_as_system_message_and_the_input_as_the_question() -> None:
    spec = validated("basic-prompting").spec
    assert spec is not None

    answer = run(spec, "hello", fakes={"LanguageModelComponent-FLeYF": ["Hi from the fake"]})
    echoed = run(echoing(spec), "hello", registry=ECHO)

    assert answer == "Hi from the fake"
    assert echoed.startswith("system: Answer the user as if you were a GenAI expert, enthusiastic")
    assert echoed.endswith("\nhuman: hello")


def test_no_model_selected_is_a_warning_and_openai_is_assumed() -> None:
    report = validated("basic-prompting")

    warning = next(p for p in report.problems if p.code == "langflow-default-model")
    assert warning.severity == "warning" and warning.path == "$.data.nodes[5]"
    model = next(n for n in report.spec.nodes if n.component == "ChatModel")  # type: ignore[union-attr]
    assert model.params["model"] == "openai:gpt-4o-mini"
    assert model.params["api_key"] == {"$env": "OPENAI_API_KEY"}
    assert model.params["temperature"] == 0.1


def test_prompt_chaining_feeds_each_model_the_previous_answer() -> None:
    spec = validated("v1.0-basic-prompt-chaining").spec
    assert spec is not None
    models = [n for n in spec.nodes if n.component == "ChatModel"]

    echoed = run(echoing(spec), "an AI tutor", registry=ECHO)

    assert [m.params["model"] for m in models] == ["openai:gpt-4.1-mini"] * 3
    assert all(m.params["api_key"] == {"$env": "OPENAI_API_KEY"} for m in models)  # load_from_db names it
    # the last model's input holds the second's answer, which holds the first's: all three system prompts show
    assert echoed.index("accomplished product manager") < echoed.index("seasoned business analyst")
    assert echoed.index("seasoned business analyst") < echoed.index("visionary product innovator")
    assert echoed.count("human: an AI tutor") == 1


def test_memory_chatbot_keeps_the_conversation_per_session() -> None:
    spec = validated("v1.0-memory-chatbot").spec
    assert spec is not None
    history = MemoryHistoryStore()
    echo = echoing(spec)

    first = run(echo, {"input_value": "my name is Ada"}, registry=ECHO, history=history)
    second = run(echo, {"input_value": "what is my name?"}, registry=ECHO, history=history)

    assert spec.nodes[0].component == "ChatHistory" and spec.input == spec.nodes[0].id
    assert "User: my name is Ada" not in first
    assert "User: my name is Ada\nAI: system: " in second  # the Memory node's template, in the system prompt
    assert second.endswith("human: what is my name?")


def test_twitter_agent_gets_the_prompt_as_system_prompt_and_the_session_history() -> None:
    spec = validated("twitter-thread-generator").spec
    assert spec is not None
    recorder, history = Recorder(), MemoryHistoryStore()
    fakes = {"Agent-wh9WY": ["1/ Langflow is open source"]}

    first = run(spec, {"input_value": "write a thread"}, fakes=fakes, history=history)
    run(spec, {"input_value": "shorter"}, fakes=fakes, history=history, callbacks=[recorder])

    assert first == "1/ Langflow is open source"
    sent = recorder.prompts[-1]
    assert sent[0].type == "system" and "<Instructions Structure>" in sent[0].text
    assert "Tech Company / AI Developer Platform" in sent[0].text  # a prompt variable's value, folded in
    assert [(m.type, m.text) for m in sent[1:]] == [
        ("human", "write a thread"),
        ("ai", "1/ Langflow is open source"),
        ("human", "shorter"),
    ]
    agent = next(n for n in spec.nodes if n.component == "Agent")
    assert agent.params["tools"] == []  # both built-in tool switches are off in this export


def test_saas_pricing_agent_computes_with_the_calculator_through_a_tool_call() -> None:
    spec = validated("v1.1-saas-pricing").spec
    assert spec is not None
    recorder = Recorder()

    answer = run(spec, {}, fakes={"Agent-GgGua": [CALCULATE, "It is 14 a month."]}, callbacks=[recorder])

    assert answer == "It is 14 a month."
    assert recorder.tool_outputs == ["14"]
    second_turn = recorder.prompts[1]
    assert [m.type for m in second_turn] == ["system", "human", "ai", "tool"]
    assert second_turn[-1].text == "14"
    assert "monthly_infrastructure_costs" not in second_turn[1].text  # the prompt's variables were filled in
    assert "2000" in second_turn[1].text
    agent = next(n for n in spec.nodes if n.component == "Agent")
    assert agent.params["tools"] == ["current_date", "calculator"]


def test_agent_streams_its_final_answer_token_by_token() -> None:
    spec = validated("v1.1-saas-pricing").spec
    assert spec is not None
    built = build_flow(spec, ComponentRegistry.builtin(), fakes={"Agent-GgGua": [CALCULATE, "It is 14 a month."]})

    async def chunks() -> list[Any]:
        return [c async for c in built.runnable.astream({}, {"configurable": {"session_id": "s"}})]

    streamed = asyncio.run(chunks())
    assert "".join(streamed) == "It is 14 a month."
    assert len([c for c in streamed if c]) == 5


# -- the stored code is never run ---------------------------------------------------------------------------------


def booby_trapped(marker: Path) -> dict[str, Any]:
    """basic-prompting with every node's code replaced by code that leaves a trace when run or imported."""
    data = load("basic-prompting")
    code = (
        "import builtins, pathlib\n"
        "builtins.GITOPS_FLOW_LANGFLOW_CODE_RAN = True\n"
        f"pathlib.Path({str(marker)!r}).write_text('the stored code ran')\n"
    )
    for node in data["data"]["nodes"]:
        template = node.get("data", {}).get("node", {}).get("template")
        if isinstance(template, dict) and "code" in template:
            template["code"]["value"] = code
    return data


class Untouchable(dict[str, Any]):
    """A field that fails the test the moment anything reads it."""

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the converter read a node's code field")

    __getitem__ = get = keys = values = items = __iter__ = __contains__ = __len__ = _fail  # type: ignore[assignment]


def test_the_converter_never_reads_the_code_field() -> None:
    data = load("basic-prompting")
    for node in data["data"]["nodes"]:
        template = node.get("data", {}).get("node", {}).get("template")
        if isinstance(template, dict) and "code" in template:
            template["code"] = Untouchable()

    assert convert(data, name="basic-prompting").ok


def test_stored_code_is_never_executed_by_validate_build_or_run(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    report = validated("basic-prompting", booby_trapped(marker))
    assert report.ok and report.spec is not None

    output = run(report.spec, "hello", fakes={"LanguageModelComponent-FLeYF": ["fine"]})

    assert output == "fine"
    assert not marker.exists()
    assert not hasattr(builtins, "GITOPS_FLOW_LANGFLOW_CODE_RAN")


# -- problems point into the original file ------------------------------------------------------------------------


def test_a_problem_in_a_converted_param_points_at_the_export_field_and_line() -> None:
    data = load("basic-prompting")
    prompt = data["data"]["nodes"][1]["data"]["node"]["template"]["template"]
    prompt["value"] += " Use the key sk-proj-abcdefghijklmnopqrstuvwx1234 if asked."

    report = validated("basic-prompting", data)

    problem = next(p for p in report.problems if p.code == "literal-secret")
    assert problem.path == "$.data.nodes[1].data.node.template.template.value"
    text = json.dumps(data, indent=2)
    value_line = text[: text.index("Use the key sk-proj")].count("\n") + 1
    assert problem.line == value_line


def test_a_literal_api_key_is_an_error_and_never_copied() -> None:
    data = load("v1.0-basic-prompt-chaining")
    key = data["data"]["nodes"][7]["data"]["node"]["template"]["api_key"]
    key.update(value="sk-live-0123456789abcdefghijklmnop", load_from_db=False)

    conversion = convert(data, name="chain")
    report = validated("v1.0-basic-prompt-chaining", data)

    assert conversion.document is None
    problem = next(p for p in conversion.problems if p.code == "literal-secret")
    assert problem.path == "$.data.nodes[7].data.node.template.api_key.value"
    assert "sk-live" not in problem.message
    assert not report.ok and report.spec is None


def test_a_stored_variable_name_becomes_an_env_reference() -> None:
    data = load("v1.0-memory-chatbot")
    data["data"]["nodes"][6]["data"]["node"]["template"]["api_key"]["value"] = "Team OpenAI key"

    conversion = convert(data, name="chat")

    assert conversion.document is not None
    model = next(n for n in conversion.document["nodes"] if n["component"] == "ChatModel")
    assert model["params"]["api_key"] == {"$env": "TEAM_OPENAI_KEY"}


def test_a_variable_name_where_the_key_goes_is_a_reference_not_a_literal_secret() -> None:
    data = load("v1.2-price-deal-finder")  # LangFlow 1.2 ships OPENAI_API_KEY there, without load_from_db
    agent = next(n for n in data["data"]["nodes"] if n["id"] == "Agent-7MSQT")
    key = agent["data"]["node"]["template"]["api_key"]
    assert (key["value"], key["load_from_db"]) == ("OPENAI_API_KEY", False)
    kept = convert(copy.deepcopy(data), name="deals")
    for literal in ("sk-proj-AbC123", "OPENAI_api_key", "AKIAIOSFODNN7EXAMPLE"):  # keys, or not a variable's name
        key["value"] = literal
        assert "literal-secret" in {p.code for p in convert(data, name="deals").problems}, literal

    assert "literal-secret" not in {p.code for p in kept.problems}
    with_tools_removed = copy.deepcopy(load("v1.2-price-deal-finder"))
    graph = with_tools_removed["data"]
    graph["nodes"] = [n for n in graph["nodes"] if n["data"].get("type") not in ("TavilySearchComponent", "AgentQL")]
    graph["edges"] = [e for e in graph["edges"] if e["target"] != "Agent-7MSQT" or "tools" not in json.dumps(e)]
    converted = convert(with_tools_removed, name="deals")
    assert converted.document is not None, [p.message for p in converted.problems]
    agent_node = next(n for n in converted.document["nodes"] if n["component"] == "Agent")
    assert agent_node["params"]["api_key"] == {"$env": "OPENAI_API_KEY"}


@pytest.mark.parametrize(
    ("variable", "allowed", "code"),
    [
        ("Team OpenAI key", None, "env-not-allowed"),  # TEAM_OPENAI_KEY: not a provider's key name
        ("AWS Secret Access Key", None, "env-not-allowed"),
        ("GITOPS_FLOW_ADMIN_TOKEN", ["G_*"], "env-not-allowed"),  # the server's own: never, whatever is allowed
        ("Anthropic API Key", None, "env-wrong-provider"),  # a provider's key, on a model of another provider
        ("Team OpenAI key", ["TEAM_OPENAI_KEY"], "env-wrong-provider"),  # allowed, but bound to no provider
        ("Team OpenAI key", ["TEAM_OPENAI_KEY=openai"], None),
        ("OPENAI_API_KEY", None, None),
    ],
    ids=["unknown", "machine-secret", "server-secret", "other-provider", "unbound", "bound", "provider-key"],
)
def test_a_stored_variable_follows_the_servers_secret_rules(
    variable: str, allowed: list[str] | None, code: str
) -> None:
    data = load("v1.0-memory-chatbot")
    data["data"]["nodes"][6]["data"]["node"]["template"]["api_key"]["value"] = variable
    raw = json.dumps(data, indent=2).encode()
    policy = SecretPolicy(allowed) if allowed is not None else None
    report = validate_bytes(raw, ComponentRegistry.builtin(), file="chat.json", stem="chat", policy=policy)

    found = [(p.code, p.path) for p in report.problems if p.severity == "error"]
    assert found == ([(code, "$.data.nodes[6].data.node.template.api_key.value")] if code else [])
    if code:
        [problem] = [p for p in report.problems if p.severity == "error"]
        assert variable in raw.decode().splitlines()[problem.line - 1]  # the line of the variable's name


# -- malformed exports --------------------------------------------------------------------------------------------


def _codes(report: FileReport) -> list[tuple[str, str]]:
    return [(p.code, p.path) for p in report.problems if p.severity == "error"]


def test_an_edge_to_a_missing_node() -> None:
    data = load("basic-prompting")
    data["data"]["edges"][0]["target"] = "Nowhere-123"

    assert _codes(validated("basic-prompting", data)) == [("langflow-bad-edge", "$.data.edges[0]")]


def test_a_handle_naming_a_field_the_node_does_not_have() -> None:
    data = load("basic-prompting")
    data["data"]["edges"][1]["data"]["targetHandle"]["fieldName"] = "system_mesage"

    report = validated("basic-prompting", data)

    assert _codes(report) == [("langflow-bad-edge", "$.data.edges[1].data.targetHandle")]
    assert "'system_mesage'" in report.problems[0].message


def test_a_cycle() -> None:
    data = load("v1.0-basic-prompt-chaining")
    back = copy.deepcopy(data["data"]["edges"][2])  # OpenAIModel-lL9HA -> OpenAIModel-JieGw, reversed
    back["source"], back["target"] = back["target"], back["source"]
    data["data"]["edges"].append(back)

    report = validated("v1.0-basic-prompt-chaining", data)

    assert [c for c, _ in _codes(report)] == ["cycle"]
    assert "OpenAIModel-lL9HA" in report.problems[0].message and "OpenAIModel-JieGw" in report.problems[0].message


def test_a_node_without_a_template() -> None:
    data = load("basic-prompting")
    del data["data"]["nodes"][1]["data"]["node"]["template"]

    assert ("langflow-malformed", "$.data.nodes[1].data.node") in _codes(validated("basic-prompting", data))


def test_a_wired_node_of_an_unknown_type_is_unsupported_but_a_lone_note_is_skipped() -> None:
    data = load("basic-prompting")
    data["data"]["nodes"][1]["data"]["type"] = "MyCustomPrompt"

    report = validated("basic-prompting", data)

    assert _codes(report) == [("langflow-unsupported", "$.data.nodes[1]")]
    assert "Prompt-t2oaK (MyCustomPrompt, 'Prompt Template')" in report.problems[0].message


def test_a_node_whose_code_was_edited_is_unsupported() -> None:
    data = load("basic-prompting")
    data["data"]["nodes"][1]["data"]["node"]["edited"] = True

    report = validated("basic-prompting", data)

    assert _codes(report) == [("langflow-unsupported", "$.data.nodes[1]")]
    assert "edited" in report.problems[0].message


def test_an_older_export_with_string_handles_converts() -> None:
    data = load("basic-prompting")
    for edge in data["data"]["edges"]:
        handles = edge.pop("data")
        for key in ("sourceHandle", "targetHandle"):
            edge[key] = json.dumps(handles[key], separators=(",", ":")).replace('"', "œ")

    assert convert(data, name="old").ok


def test_is_export() -> None:
    assert is_export(load("basic-prompting"))
    assert not is_export({"version": 1, "name": "x", "nodes": []})
    assert not is_export({"data": {"nodes": []}})


def test_fakeable_kinds_are_model_agent_and_tool() -> None:
    assert FAKEABLE == ("model", "agent", "tool")  # a tool: a node that sends requests out (HttpRequest, WebSearch)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Any:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            if key != "code":
                yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:4]):
            yield from _paths(item, (*path, index))


@pytest.mark.parametrize("seed", range(8))
def test_damaged_exports_are_problems_never_crashes(seed: int) -> None:
    """Values of the wrong type anywhere in an export: validation reports problems (or copes), it never raises."""
    rnd = random.Random(seed)
    names = sorted(p.stem for p in DATA.glob("*.json"))
    for _ in range(25):
        data = load(rnd.choice(names))
        where = [p for p in _paths(data) if len(p) > 1]
        for _ in range(rnd.randint(1, 3)):
            *parents, last = rnd.choice(where)
            parent: Any = data
            try:  # an earlier damage may have removed the way there
                for key in parents:
                    parent = parent[key]
                parent[last] = rnd.choice([None, 1, "x", [], {}, True, "{", "{a}", [1, "b"], {"value": 3}])
            except (KeyError, IndexError, TypeError):
                continue
        report = validated("damaged", data)
        assert report.ok or report.problems


@pytest.mark.parametrize(
    "selected, model, key",
    [
        (
            [{"name": "claude-3-5-haiku-latest", "provider": "Anthropic"}],
            "anthropic:claude-3-5-haiku-latest",
            "ANTHROPIC",
        ),
        ({"name": "gpt-4o", "provider": "OpenAI"}, "openai:gpt-4o", "OPENAI"),
    ],
    ids=["1.7-list", "dict"],
)
def test_a_selected_model_of_langflow_1_7_on(selected: Any, model: str, key: str) -> None:
    data = load("basic-prompting")
    data["data"]["nodes"][5]["data"]["node"]["template"]["model"]["value"] = selected

    conversion = convert(data, name="basic-prompting")

    assert conversion.document is not None and not conversion.problems
    node = next(n for n in conversion.document["nodes"] if n["component"] == "ChatModel")
    assert node["params"]["model"] == model
    assert node["params"]["api_key"] == {"$env": f"{key}_API_KEY"}


def test_a_provider_gitops_flow_does_not_know_is_unsupported() -> None:
    data = load("basic-prompting")
    data["data"]["nodes"][5]["data"]["node"]["template"]["model"]["value"] = [{"name": "m", "provider": "Acme AI"}]

    conversion = convert(data, name="basic-prompting")

    assert conversion.document is None
    [problem] = [p for p in conversion.problems if p.severity == "error"]
    assert problem.code == "langflow-unsupported"
    assert problem.path == "$.data.nodes[5].data.node.template.model.value"
    assert "'Acme AI'" in problem.message


def _edge(source: str, output: str, target: str, field: str) -> dict[str, Any]:
    return {
        "source": source,
        "target": target,
        "data": {"sourceHandle": {"name": output}, "targetHandle": {"fieldName": field}},
    }


def test_structured_output_uses_the_model_wired_into_it_and_answers_json() -> None:
    data = load("basic-prompting")
    template = {
        "input_value": {"value": ""},
        "system_prompt": {"value": "Extract the place."},
        "output_schema": {"value": [{"name": "city", "type": "str", "description": "where it happens"}]},
        "llm": {"value": ""},
        "code": {"value": "raise SystemExit('never run')"},
    }
    data["data"]["nodes"].append(
        {"id": "StructuredOutput-x1", "data": {"type": "StructuredOutput", "node": {"template": template}}}
    )
    data["data"]["edges"] = [
        _edge("ChatInput-b6UCc", "message", "StructuredOutput-x1", "input_value"),
        _edge("LanguageModelComponent-FLeYF", "model_output", "StructuredOutput-x1", "llm"),
        _edge("StructuredOutput-x1", "structured_output", "ChatOutput-yK0AU", "input_value"),
    ]
    report = validated("structured", data)
    assert report.ok, [p.describe() for p in report.problems]
    assert report.spec is not None
    recorder = Recorder()

    output = run(
        report.spec, "I live in Paris", fakes={"StructuredOutput-x1": ['{"city": "Paris"}']}, callbacks=[recorder]
    )

    assert output == {"city": "Paris"}
    system, human = recorder.prompts[0]
    assert system.text.startswith("Extract the place.\n\nAnswer with one JSON object")
    assert "- city (str): where it happens" in system.text and human.text == "I live in Paris"
    model = next(n for n in report.spec.nodes if n.id == "StructuredOutput-x1")
    assert model.component == "ChatModel" and model.params["model"] == "openai:gpt-4o-mini"
    assert not any(n.id == "LanguageModelComponent-FLeYF.text" for n in report.spec.nodes)  # lent, not run


def test_a_memory_setting_that_cannot_be_honoured_is_unsupported() -> None:
    data = load("v1.0-memory-chatbot")
    data["data"]["nodes"][4]["data"]["node"]["template"]["order"]["value"] = "Descending"

    conversion = convert(data, name="chat")

    assert conversion.document is None
    [problem] = [p for p in conversion.problems if p.severity == "error"]
    assert problem.path == "$.data.nodes[4].data.node.template.order.value"
    assert "Memory-gWJrq (Memory, 'Chat Memory'): order = 'Descending' is not supported" in problem.message
