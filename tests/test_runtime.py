"""executor.py: which executor runs a request. The lean program by default; LangChain's runnables when the operator
says so, when LangSmith or OpenTelemetry traces the run, and for stream_log/stream_events. Token budgets and token
metrics count the same tokens on both paths; over HTTP, a real server answers the same on both."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from starlette.testclient import TestClient

from gitops_flow.app import create_app
from gitops_flow.components.base import Component
from gitops_flow.config import Settings, langsmith_tracing
from gitops_flow.exceptions import ConfigError
from gitops_flow.observability.telemetry.tracing import Tracing
from gitops_flow.runtime.lean.forms import Fallback, form_of
from tests.gitrepo import Remote
from tests.helpers import registry_with
from tests.metricsread import sample
from tests.process import serve_process
from tests.served import example_files, settings, wait_until

WITNESS = Component("Witness", "tests.operator_components:witness", "model", "says which path called it")
# as a transform, `serve --fake-models` leaves it be (it fakes models); the lean executor knows a model by its type
COMPONENTS = "components:\n  Witness:\n    target: tests.operator_components:witness\n    kind: transform\n"


def witness_flow(name: str = "which") -> str:
    return json.dumps(
        {
            "version": 1,
            "name": name,
            "nodes": [
                {"id": "prompt", "component": "PromptTemplate", "params": {"template": "Q: {question}"}},
                {"id": "llm", "component": "Witness", "params": {}},
                {"id": "answer", "component": "StrOutputParser"},
            ],
            "edges": [{"source": "prompt", "target": "llm"}, {"source": "llm", "target": "answer"}],
        }
    )


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    remote = Remote.create(tmp_path)
    remote.commit({"flows/which.json": witness_flow()}, "a flow that says which path ran it")
    remote.push()
    return remote


@contextmanager
def app(remote: Remote, tmp_path: Path, tracing: Tracing | None = None, **overrides: Any) -> Iterator[TestClient]:
    made = create_app(settings(remote, tmp_path, **overrides), registry=registry_with(WITNESS), tracing=tracing)
    with TestClient(made) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, what="readiness")
        yield client


def paths(client: TestClient) -> tuple[str, str]:
    """Which path answered an invoke and a stream of the witness flow."""
    invoked = client.post("/flows/which/invoke", json={"input": {"question": "q"}}).json()["output"]
    streamed = client.post("/flows/which/stream", json={"input": {"question": "q"}}).text
    found = re.findall(r"\b(lean|langchain)\b", streamed)
    return invoked.split()[-2], found[0] if found else streamed


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, ("lean", "lean")),
        ({"runtime": "langchain"}, ("langchain", "langchain")),
        ({"langsmith_tracing": True}, ("langchain", "langchain")),
        ({"token_metrics": True}, ("lean", "lean")),  # counting tokens does not need LangChain's callbacks
    ],
    ids=["default", "operator-says-langchain", "langsmith-traces", "token-metrics"],
)
def test_the_lean_path_runs_unless_something_needs_langchains(
    remote: Remote, tmp_path: Path, overrides: dict[str, Any], expected: tuple[str, str]
) -> None:
    with app(remote, tmp_path, **overrides) as client:
        assert paths(client) == expected


def test_a_traced_request_runs_on_langchains_path_and_an_unsampled_one_runs_lean(
    remote: Remote, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    with app(remote, tmp_path, tracing=Tracing.exporting(exporter)) as client:
        assert paths(client) == ("langchain", "langchain")
        nodes = {s.attributes.get("gitops_flow.node.id") for s in exporter.get_finished_spans()}
        assert {"prompt", "llm", "answer"} <= nodes  # its node spans come from LangChain's callbacks
    with app(remote, tmp_path / "off", tracing=Tracing.exporting(InMemorySpanExporter(), sampler=ALWAYS_OFF)) as client:
        assert paths(client) == ("lean", "lean")


def test_stream_events_and_stream_log_run_langchains_callbacks(remote: Remote, tmp_path: Path) -> None:
    with app(remote, tmp_path) as client:
        events = client.post("/flows/which/stream_events", json={"input": {"question": "q"}}).text
        log = client.post("/flows/which/stream_log", json={"input": {"question": "q"}}).text
    assert "langchain" in events and "on_chat_model_stream" in events and " lean" not in events
    assert "langchain" in log and " lean" not in log


@pytest.mark.parametrize("runtime", ["lean", "langchain"])
def test_token_metrics_count_the_same_tokens_on_both_paths(remote: Remote, tmp_path: Path, runtime: str) -> None:
    with app(remote, tmp_path, token_metrics=True, runtime=runtime) as client:
        assert paths(client) == (runtime, runtime)
        text = client.get("/metrics").text
    # one invoke and one stream, 5 input and 2 output tokens each (the witness's usage)
    assert sample(text, "gitops_flow_tokens_total", flow="which", direction="input") == 10
    assert sample(text, "gitops_flow_tokens_total", flow="which", direction="output") == 4


def test_the_runtime_and_langsmith_tracing_come_from_the_environment() -> None:
    assert Settings.from_env({}).runtime == "lean"
    assert Settings.from_env({"GITOPS_FLOW_RUNTIME": "langchain"}).runtime == "langchain"
    assert Settings.from_env({"LANGSMITH_TRACING": "true"}).langsmith_tracing
    with pytest.raises(ConfigError, match="runtime"):
        Settings.from_env({"GITOPS_FLOW_RUNTIME": "fast"})


@pytest.mark.parametrize(
    ("environ", "traced"),
    [
        ({}, False),
        ({"LANGSMITH_TRACING": "true"}, True),
        ({"LANGCHAIN_TRACING_V2": "true"}, True),
        ({"LANGCHAIN_TRACING": "true"}, True),
        ({"LANGSMITH_TRACING": "True"}, False),  # LangSmith compares with "true" exactly
        ({"LANGSMITH_TRACING_V2": "false", "LANGSMITH_TRACING": "true"}, False),  # the V2 name is read first
        ({"LANGSMITH_TRACING_V2": "  ", "LANGCHAIN_TRACING_V2": "true"}, True),  # a blank value is not set
    ],
)
def test_langsmith_tracing_is_read_as_langsmith_reads_it(environ: dict[str, str], traced: bool) -> None:
    assert langsmith_tracing(environ) is traced


# -- over HTTP, against real servers: the same answers and chunks on both paths -------------------------------------

_IDS = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _same(text: str) -> str:
    """An answer with its run's ids (new every run) and the time of a message left out."""
    return re.sub(r'"timestamp":"[^"]*"', "", _IDS.sub("<id>", text))


def test_a_served_flow_answers_the_same_on_both_paths(remote: Remote, tmp_path: Path) -> None:
    """Every example flow (its tests' inputs, models faked as `serve --fake-models` does), invoked, batched and
    streamed on a server running lean and one running LangChain's runnables: the same bodies, the same events."""
    remote.commit(example_files(), "the examples")
    remote.push()
    cases = []
    for path in sorted((Path(__file__).resolve().parent.parent / "flows").glob("*.json")):
        doc = json.loads(path.read_text())
        cases += [(doc["name"], case["input"], case.get("session")) for case in doc.get("tests", [])]
    assert len(cases) >= 5
    components = tmp_path / "components.yaml"
    components.write_text(COMPONENTS)
    answers: dict[str, list[list[str]]] = {}
    for runtime in ("lean", "langchain"):
        env = {"GITOPS_FLOW_RUNTIME": runtime, "GITOPS_FLOW_COMPONENTS": str(components)}
        with serve_process(remote, tmp_path / runtime, env=env, args=["--fake-models"]) as server:
            answers[runtime] = [_calls(server.client, *case) for case in cases]
            answers[runtime].append(_calls(server.client, "which", {"question": "q"}, None))
    assert answers["lean"][:-1] == answers["langchain"][:-1]
    assert all(answer.startswith("200 ") for calls in answers["lean"] for answer in calls)
    which = {runtime: re.findall(r"\b(lean|langchain)\b", " ".join(found[-1])) for runtime, found in answers.items()}
    assert set(which["lean"]) == {"lean"} and set(which["langchain"]) == {"langchain"}  # each server ran its path


def _calls(client: httpx.Client, flow: str, value: Any, session: str | None) -> list[str]:
    config = {"configurable": {"session_id": f"s-{session or flow}"}}
    found = []
    for endpoint, body in (
        ("invoke", {"input": value, "config": config}),
        ("stream", {"input": value, "config": config}),
        ("batch", {"inputs": [value, value], "config": config}),
    ):
        response = client.post(f"/flows/{flow}/{endpoint}", json=body)
        found.append(f"{response.status_code} {_same(response.text)}")
    return found


def _bound(*, responses: list[str]) -> Any:
    """The counting fake model behind a binding: not a plain model, so the lean executor runs its runnable."""
    from tests.operator_components import counting

    return counting(responses=responses).with_config(tags=["bound"])


@pytest.mark.parametrize("runtime", ["lean", "langchain"])
def test_tokens_of_a_node_run_through_its_own_runnable_are_counted_on_both_paths(tmp_path: Path, runtime: str) -> None:
    remote = Remote.create(tmp_path)
    doc = json.loads(witness_flow("bound"))
    doc["nodes"][1] = {"id": "llm", "component": "Bound", "params": {"responses": ["counted"]}}
    remote.commit({"flows/bound.json": json.dumps(doc)}, "a model behind a binding")
    remote.push()
    assert isinstance(form_of(_bound(responses=["x"])), Fallback)  # what this test is about
    bound = Component("Bound", _bound, "model", "a bound model")
    made = create_app(settings(remote, tmp_path, token_metrics=True, runtime=runtime), registry=registry_with(bound))
    with TestClient(made) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, what="readiness")
        assert client.post("/flows/bound/invoke", json={"input": {"question": "q"}}).json()["output"] == "counted"
        text = client.get("/metrics").text
    assert sample(text, "gitops_flow_tokens_total", flow="bound", direction="input") == 7
    assert sample(text, "gitops_flow_tokens_total", flow="bound", direction="output") == 3
