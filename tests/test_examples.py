"""Every example flow is served by the real `gitops-flow serve` (with --fake-models, as the demo serves them) and
called over HTTP as its tests and the docs call it: LangServe's invoke and stream, and LangFlow's run API.

What a flow's tests feed it must be what the server takes: the triage example passed its tests while its served
input schema refused every real request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from gitops_flow.cli.demo import FLOW as DEMO_FLOW
from gitops_flow.cli.demo import QUESTION as DEMO_QUESTION
from gitops_flow.flow.document import Expectation, FlowSpec
from gitops_flow.runtime.flow_tests import check_expectation
from tests.gitrepo import Remote
from tests.process import ServeProcess, serve_process
from tests.served import ROOT, example_files
from tests.test_api import events_of

EXAMPLES = {
    name.removeprefix("flows/").removesuffix(".json"): text
    for name, text in example_files().items()
    if name.endswith(".json")
}
SPECS = {name: FlowSpec.model_validate_json(text) for name, text in EXAMPLES.items()}
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_CURL = re.compile(r"curl -s localhost:8000(/\S+) .*?-d '(\{.*?\})'", re.DOTALL)


def documented_calls() -> list[tuple[str, str, Any]]:
    """(document, path, body) of every curl with a JSON body that README.md and docs/*.md show."""
    found = []
    for doc in DOCS:
        for path, body in _CURL.findall(doc.read_text()):
            found.append((doc.name, path, json.loads(body)))
    return found


def test_the_docs_show_calls_of_both_apis() -> None:
    paths = [path for _, path, _ in documented_calls()]
    assert "/flows/support-bot/invoke" in paths
    assert any(path.startswith("/api/v1/run/") for path in paths)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("examples")
    remote = Remote.create(tmp)
    remote.commit(example_files(), "the example flows")
    remote.push()
    with serve_process(remote, tmp, args=["--fake-models"]) as harness:
        yield harness


def _config(session: str | None) -> dict[str, Any]:
    return {"config": {"configurable": {"session_id": session}}} if session else {}


def _stream(server: ServeProcess, flow: str, value: Any, session: str | None) -> list[tuple[str, Any]]:
    response = server.client.post(f"/flows/{flow}/stream", json={"input": value, **_config(session)})
    assert response.status_code == 200, response.text
    return events_of(response.text)


CASES = [
    pytest.param(name, index, id=f"{name}::{case.name}")
    for name, spec in SPECS.items()
    for index, case in enumerate(spec.tests)
]


@pytest.mark.parametrize(("flow", "index"), CASES)
def test_each_test_input_is_taken_by_the_served_flow_invoked_and_streamed(
    server: ServeProcess, flow: str, index: int
) -> None:
    case = SPECS[flow].tests[index]
    session = case.session or f"example-{flow}-{index}"
    schema = server.client.get(f"/flows/{flow}/input_schema").json()
    jsonschema.validate(case.input, schema)  # what clients read of the contract agrees with the tests

    invoked = server.invoke(flow, case.input, **_config(session))
    assert invoked.status_code == 200, invoked.text
    output = invoked.json()["output"]
    events = _stream(server, flow, case.input, session)
    assert [kind for kind, _ in events][0] == "metadata" and events[-1] == ("end", None)
    assert "".join(data for kind, data in events if kind == "data") == output
    if index == 0:  # --fake-models answers every model node with what the flow's first test fakes
        assert check_expectation(case.expect, output) is None


@pytest.mark.parametrize(("doc", "path", "body"), [c for c in documented_calls() if c[1].startswith("/flows/")])
def test_each_documented_invoke_of_an_example_is_answered(
    server: ServeProcess, doc: str, path: str, body: dict[str, Any]
) -> None:
    flow = path.split("/")[2]
    if flow not in SPECS:
        pytest.fail(f"{doc} shows a call of {flow!r}, which is not an example flow")
    response = server.client.post(path, json=body)
    assert response.status_code == 200, f"{doc}: {response.text}"
    assert check_expectation(SPECS[flow].tests[0].expect, response.json()["output"]) is None


def test_the_demos_question_is_answered(server: ServeProcess) -> None:
    response = server.invoke(DEMO_FLOW, DEMO_QUESTION)
    assert response.status_code == 200, response.text
    assert check_expectation(SPECS[DEMO_FLOW].tests[0].expect, response.json()["output"]) is None


LANGFLOW_BODIES = [body for _, path, body in documented_calls() if path.startswith("/api/v1/run/")]


@pytest.mark.parametrize("flow", sorted(SPECS))
@pytest.mark.parametrize("body", LANGFLOW_BODIES)
def test_each_example_answers_langflows_run_api_as_documented(
    server: ServeProcess, flow: str, body: dict[str, Any]
) -> None:
    first: Expectation = SPECS[flow].tests[0].expect
    response = server.client.post(f"/api/v1/run/{flow}", json=body)
    assert response.status_code == 200, response.text
    text = response.json()["outputs"][0]["outputs"][0]["results"]["message"]["text"]
    assert check_expectation(first, text) is None

    streamed = server.client.post(f"/api/v1/run/{flow}?stream=true", json=body)
    assert streamed.status_code == 200, streamed.text
    events = [json.loads(part) for part in streamed.text.split("\n\n") if part.strip()]
    assert events[-1]["event"] == "end", events[-1]
    tokens = "".join(e["data"]["chunk"] for e in events if e["event"] == "token")
    assert tokens == text


def test_every_example_is_served(server: ServeProcess) -> None:
    served = {flow["name"] for flow in server.client.get("/flows").json()["flows"]}
    assert served == set(SPECS) == {p.stem for p in (ROOT / "gitops_flow" / "examples").glob("*.json")}
    assert Path(ROOT / "flows").resolve() == (ROOT / "gitops_flow" / "examples").resolve()
