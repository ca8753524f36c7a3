"""Issue 15's coverage of LangFlow's starter projects: an agent's structured response and flows with several outputs
convert and are served (through a real `gitops-flow serve --fake-models`); a refused export names every problem in
one pass, each with its true reason; the coverage tool ranks what blocks the others."""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from gitops_flow.components.fake_answers import fake_answers
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.flow.document import FlowSpec
from gitops_flow.langflow.convert import convert
from gitops_flow.runtime.compiler import build_flow
from gitops_flow.validation.documents import validate_bytes
from tests.gitrepo import Remote
from tests.process import ServeProcess, serve_process

DATA = Path(__file__).resolve().parent / "data" / "langflow"
TOOL = Path(__file__).resolve().parent.parent / "tools" / "langflow_coverage.py"
REGISTRY = ComponentRegistry.builtin()
FINANCIAL = (DATA / "financial-report-parser.json").read_text()
SENTIMENT = (DATA / "text-sentiment-analysis.json").read_text()
SENTIMENT_13 = (DATA / "v1.3-text-sentiment-analysis.json").read_text()  # a File read by two nodes
FIELDS = ("EBITDA", "NET_INCOME", "GROSS_PROFIT", "REVENUE", "EBIT", "NET_MARGIN", "COMPANY")
OUTPUTS = ("ChatOutput-DVXkn", "ChatOutput-h5fAd")  # Text Sentiment Analysis: the direct and the summarised analysis


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return data


def errors(data: dict[str, Any]) -> list[str]:
    return [p.message for p in convert(data, name="flow").problems if p.severity == "error"]


def spec_of(data: dict[str, Any], name: str) -> FlowSpec:
    report = validate_bytes(json.dumps(data).encode(), REGISTRY, file=f"{name}.json", stem=name)
    assert report.ok and report.spec is not None, [p.describe() for p in report.problems]
    return report.spec


def run(spec: FlowSpec, value: Any, fakes: dict[str, list[str]]) -> Any:
    built = build_flow(spec, REGISTRY, fakes=fakes)
    return asyncio.run(built.runnable.ainvoke(value))


# -- refusals: every problem in one pass, each with its true reason ------------------------------------------------


def test_a_refused_export_names_every_problem_in_one_pass() -> None:
    data = load("memory-chatbot")
    data["description"] = "Upload an image and the agent remembers things about it."

    found = errors(data)

    # the memory base is refused, and the input that carries an image is named as well, not after it is removed
    assert [m.split(" ")[0] for m in found] == ["MemoryBase-xePih", "ChatInput-oQkLS"]
    assert "'Upload an image'" in found[1]


def _edited_cases() -> list[tuple[str, str]]:
    cases = []
    for path in sorted(DATA.glob("*.json")):
        kinds = {n["data"].get("type") for n in json.loads(path.read_text())["data"]["nodes"] if "node" in n["data"]}
        cases += [(path.stem, kind) for kind in sorted(kinds - {"note", None})]
    return cases


@pytest.mark.parametrize(("name", "kind"), _edited_cases())
def test_a_refused_node_adds_its_own_problem_and_no_other(name: str, kind: str) -> None:
    data = load(name)
    before = set(errors(data))
    edited = [n for n in data["data"]["nodes"] if n["data"].get("type") == kind]
    for node in edited:
        node["data"]["node"]["edited"] = True  # its code was changed in LangFlow: it cannot be converted

    after = set(errors(data))  # whatever reads it (a chat input a conversation starts from, a model) goes on

    added = {m.split(" ")[0] for m in after - before}
    assert added == {n["id"] for n in edited}
    assert all("its code was edited in LangFlow" in m for m in after - before)


def test_an_agents_tool_has_no_stand_in() -> None:
    [memory] = errors(load("memory-chatbot"))

    assert "as an agent's tool it has no stand-in" in memory
    assert "searched by embeddings" in memory and "memory tool would go unanswered" in memory


@pytest.mark.parametrize(
    ("description", "refused"),
    [
        ("Write a caption, then an image prompt to go with it.", False),
        ("A caption agent, then an Image Agent that appends a picture prompt.", False),
        ("Upload an image; the model describes it.", True),
        ("Describe the photo you send.", True),
    ],
    ids=["image-prompt", "image-agent", "upload", "photo"],
)
def test_an_image_the_flow_writes_about_is_not_a_file_it_is_given(description: str, refused: bool) -> None:
    data = load("basic-prompting")
    data["description"] = description

    found = errors(data)

    assert bool(found) is refused
    assert all("the flow expects files with its input" in m for m in found)


# -- an agent's structured response ---------------------------------------------------------------------------------


def test_an_agents_structured_response_asks_for_its_schema_and_the_parser_reads_the_fields() -> None:
    spec = spec_of(load("financial-report-parser"), "financial-report-parser")
    nodes = {n.id: n for n in spec.nodes}
    [system, human] = nodes["Agent-6rJWA.structured.messages"].params["messages"]
    answer = {field: f"{field.lower()} value" for field in FIELDS} | {"COMPANY": "ACME", "REVENUE": "12 M EUR"}

    output = run(spec, "ACME's annual report ...", {"Agent-6rJWA.structured": [json.dumps(answer)]})

    assert system[1].startswith("You are a financial report parser.")
    assert "\n\nFormat instructions: Extract the fields defined in the schema" in system[1]
    for field in FIELDS:
        assert f"\n- {field} (str): " in system[1]
    assert human == ["human", "{input_value}"]
    assert nodes["Agent-6rJWA.structured"].component == "Agent"
    assert nodes["Agent-6rJWA.structured.json"].component == "JsonOutputParser"
    assert spec.output == "ChatOutput-3jUr2"
    assert output.startswith("## 📊 ACME\n") and "| Revenue | 12 M EUR |" in output
    assert "| EBITDA | ebitda value |" in output


def test_an_agents_response_and_structured_response_are_two_runs_and_two_outputs() -> None:
    data = load("financial-report-parser")
    shown = copy.deepcopy(next(n for n in data["data"]["nodes"] if n["id"] == "ChatOutput-3jUr2"))
    shown["id"] = shown["data"]["id"] = "ChatOutput-text"
    data["data"]["nodes"].append(shown)
    edge = copy.deepcopy(next(e for e in data["data"]["edges"] if e["target"] == "ChatOutput-3jUr2"))
    edge.update({"id": "e-text", "source": "Agent-6rJWA", "target": "ChatOutput-text"})
    edge["data"]["sourceHandle"] = {**edge["data"]["sourceHandle"], "name": "response", "id": "Agent-6rJWA"}
    data["data"]["edges"].append(edge)
    spec = spec_of(data, "both")
    fakes = {"Agent-6rJWA": ["In short: ACME earned 12 M."], "Agent-6rJWA.structured": ['{"COMPANY": "ACME"}']}

    output = run(spec, "ACME's annual report ...", fakes)

    assert set(output) == {"ChatOutput-3jUr2", "ChatOutput-text"}
    assert output["ChatOutput-text"] == "In short: ACME earned 12 M."
    assert output["ChatOutput-3jUr2"].startswith("## 📊 ACME\n")
    [system, _] = next(n for n in spec.nodes if n.id == "Agent-6rJWA.messages").params["messages"]
    assert "Answer with one JSON object" not in system[1]  # the response is the agent's own, not the schema's


def test_a_structured_response_without_a_schema_is_refused_saying_so() -> None:
    data = load("financial-report-parser")
    agent = next(n for n in data["data"]["nodes"] if n["id"] == "Agent-6rJWA")
    agent["data"]["node"]["template"]["output_schema"]["value"] = []

    [message] = errors(data)

    assert message.startswith("Agent-6rJWA (Agent, 'Agent'): the structured response's output schema names no fields")


def test_fakes_answer_the_fields_the_template_after_the_json_parser_names() -> None:
    spec = spec_of(load("financial-report-parser"), "financial-report-parser")

    [answer] = fake_answers(spec, REGISTRY)["Agent-6rJWA.structured"]

    assert json.loads(answer) == {field: f"fake {field} from Agent-6rJWA.structured" for field in FIELDS}


# -- several outputs ---------------------------------------------------------------------------------------------


def test_several_chat_outputs_are_one_object_with_each_under_its_node() -> None:
    spec = spec_of(load("text-sentiment-analysis"), "text-sentiment-analysis")
    fakes = {"Agent-tsa-a": ["a summary"], "Agent-tsa-b": ["summarised: neutral"], "Agent-tsa-c": ["direct: positive"]}

    output = run(spec, "The release went well.", fakes)

    assert spec.output == "outputs"
    assert output == {"ChatOutput-DVXkn": "direct: positive", "ChatOutput-h5fAd": "summarised: neutral"}


# -- served: a real `gitops-flow serve --fake-models` ---------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("coverage")
    remote = Remote.create(tmp)
    remote.commit(
        {
            "flows/Financial Report Parser.json": FINANCIAL,
            "flows/Text Sentiment Analysis.json": SENTIMENT,
            "flows/Text Sentiment Analysis 1.3.json": SENTIMENT_13,
        },
        "three starter projects as LangFlow exports them",
    )
    remote.push()
    with serve_process(remote, tmp, args=["--fake-models"]) as harness:
        yield harness


def lf_run(server: ServeProcess, flow: str, body: dict[str, Any], **kwargs: Any) -> Any:
    return server.client.post(f"/api/v1/run/{flow}", json=body, **kwargs)


def test_the_structured_response_is_served_through_its_parser(server: ServeProcess) -> None:
    response = lf_run(server, "financial-report-parser", {"input_value": "ACME's annual report ..."})

    assert response.status_code == 200, response.text
    [result] = response.json()["outputs"][0]["outputs"]
    assert result["component_id"] == "ChatOutput-3jUr2"
    text = result["results"]["message"]["text"]
    assert text.startswith("## 📊 fake COMPANY from Agent-6rJWA.structured\n")
    assert "| Revenue | fake REVENUE from Agent-6rJWA.structured |" in text


def test_several_outputs_are_served_as_langflow_lists_them(server: ServeProcess) -> None:
    body = {"input_value": "The release went well.", "session_id": "s-1"}
    response = lf_run(server, "text-sentiment-analysis", body)
    one = lf_run(server, "text-sentiment-analysis", {**body, "output_component": "ChatOutput-h5fAd"})
    unknown = lf_run(server, "text-sentiment-analysis", {**body, "output_component": "ChatOutput-nope"})
    streamed = lf_run(server, "text-sentiment-analysis", {**body, "stream": True})
    invoked = server.invoke("text-sentiment-analysis", "The release went well.")

    assert response.status_code == one.status_code == streamed.status_code == invoked.status_code == 200
    results = response.json()["outputs"][0]["outputs"]
    assert [r["component_id"] for r in results] == list(OUTPUTS)
    texts = [r["results"]["message"]["text"] for r in results]
    assert texts == ["This is a fake answer from Agent-tsa-c.", "This is a fake answer from Agent-tsa-b."]
    assert [r["results"]["message"]["component_id"] for r in results] == list(OUTPUTS)
    assert len({r["results"]["message"]["id"] for r in results}) == 2
    assert [r["component_id"] for r in one.json()["outputs"][0]["outputs"]] == ["ChatOutput-h5fAd"]
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (422, "unknown-output-component")
    assert "'ChatOutput-DVXkn', 'ChatOutput-h5fAd'" in unknown.json()["error"]["message"]
    end = [json.loads(e) for e in streamed.text.split("\n\n") if e.strip()][-1]
    assert end["event"] == "end"
    assert [r["results"]["message"]["text"] for r in end["data"]["result"]["outputs"][0]["outputs"]] == texts
    assert invoked.json()["output"] == dict(zip(OUTPUTS, texts, strict=True))


# -- the coverage tool -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("langflow_coverage", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_coverage_tool_serves_what_converts_and_ranks_what_blocks_the_rest(
    tool: ModuleType, tmp_path: Path
) -> None:
    names = ("memory-chatbot", "document-qa", "financial-report-parser", "text-sentiment-analysis")
    rows = [tool.judge("1.13.0", f"{n}.json", (DATA / f"{n}.json").read_bytes(), REGISTRY) for n in names]
    pictured = copy.deepcopy(load("basic-prompting")) | {"description": "Upload an image; the model describes it."}
    rows.append(tool.judge("1.13.0", "pictured.json", json.dumps(pictured).encode(), REGISTRY))
    rows.append(
        tool.judge("1.3.4", "sentiment.json", (DATA / "v1.3-text-sentiment-analysis.json").read_bytes(), REGISTRY)
    )

    tool.serve_and_run(rows, tmp_path)  # a real `gitops-flow serve --fake-models`, each flow run by the run API

    assert [(r.project, r.converted, r.ran) for r in rows] == [
        ("memory-chatbot", False, None),
        ("document-qa", True, True),  # its Knowledge reads the sample document the tool commits in knowledge/
        ("financial-report-parser", True, True),
        ("text-sentiment-analysis", True, True),
        ("pictured", False, None),
        ("sentiment", True, True),
    ]
    assert rows[1].knowledge and not rows[2].knowledge
    lines = tool.blockers(rows).splitlines()[2:]
    assert lines[0].startswith("| `ChatInput: the flow expects files with its input` | 1 | 1 (pictured) |")
    assert "| `MemoryBase` | 1 | 1 (memory-chatbot) |" in lines
    assert tool.summary(rows) == (
        "4 of 6 starter projects convert (4 answer 200 on the run API under fakes); 2 are refused."
    )
    assert "| 1.13.0 | 5 | 3 | 3 | 2 | yes |" in tool.releases(rows)
    assert tool.short_releases(rows) == []
    rows[2].ran = False  # one fewer running: 2 of 5 is under half
    assert tool.short_releases(rows) == ["1.13.0"]
    assert "| 1.13.0 | 5 | 3 | 2 | 2 | **no** |" in tool.releases(rows)


def test_a_converted_project_the_server_cannot_run_is_reported_with_the_run_apis_answer(
    tool: ModuleType, tmp_path: Path
) -> None:
    row = tool.judge("1.13.0", "document-qa.json", (DATA / "document-qa.json").read_bytes(), REGISTRY)
    row.knowledge = False  # the tool commits no document: the Retriever finds none and the flow is not served

    tool.serve_and_run([row], tmp_path)

    assert row.converted and row.ran is False
    assert row.why[0].startswith("run API: 503 nothing-servable: flow '1-13-0-document-qa' failed")
    assert "no-documents" in row.why[0]


def test_a_file_read_by_two_nodes_takes_the_run_apis_input_value_in_both(server: ServeProcess) -> None:
    # LangFlow 1.3's Text Sentiment Analysis: its File feeds a prompt's {text} and a model's input_value; the
    # run API's one input_value is the file's text, handed to both (it answered 422 several-inputs before)
    body = {"input_value": "user: the new release is great\nuser: the docs are thin", "session_id": "s-13"}

    response = lf_run(server, "text-sentiment-analysis-1-3", body)
    invoked = server.invoke("text-sentiment-analysis-1-3", body["input_value"])
    schema = server.client.get("/flows/text-sentiment-analysis-1-3/input_schema")

    assert response.status_code == invoked.status_code == 200, response.text
    results = response.json()["outputs"][0]["outputs"]
    assert [r["component_id"] for r in results] == ["ChatOutput-NS8z5", "ChatOutput-GzAXT"]
    texts = [r["results"]["message"]["text"] for r in results]
    assert texts == ["This is a fake answer from OpenAIModel-Hl8vG.", "This is a fake answer from OpenAIModel-Izkdb."]
    assert schema.status_code == 200 and {"type": "string"} in schema.json()["anyOf"]


# -- every release from LangFlow 1.0: its starter projects, from its wheel ----------------------------------------

WHEELS = Path(tempfile.gettempdir()) / "gitops-flow-langflow-wheels"  # pinned versions: what pip fetches is fixed


def test_at_least_half_the_starter_projects_of_every_release_from_1_0_run(tool: ModuleType) -> None:
    # each LangFlow minor release from 1.0, its last patch, as langflow-base: the wheels are fetched once with
    # `pip download --no-deps` (14 pinned versions) and kept; every converted project is served by a real
    # `gitops-flow serve --fake-models` and run through the run API
    rows = tool.coverage(list(tool.RELEASES), WHEELS)

    assert {r.release for r in rows} == set(tool.RELEASES)
    assert tool.short_releases(rows) == [], tool.releases(rows)
    # under --fake-models the tool nodes are faked as the models are: every converted project answers 200
    assert all(r.ran for r in rows if r.converted), [(r.release, r.project, r.why) for r in rows if r.converted]
    blog = next(r for r in rows if r.release == "0.0.99" and r.project == "Blog Writer")  # its URL: two HttpRequests
    assert blog.converted and blog.ran
