"""LangFlow exports committed under flows/ are served like native flows, and LangFlow's run API answers for them
(and for native flows): POST /api/v1/run/{flow}, over a real Git remote."""

from __future__ import annotations

import asyncio
import builtins
import json
from pathlib import Path
from typing import Any

import pytest

from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.flow.document import FlowSpec
from gitops_flow.runtime.compiler import build_flow
from gitops_flow.server.edge import RequestError
from gitops_flow.server.langflow_api import flow_input
from tests.gitrepo import Remote
from tests.helpers import chain
from tests.served import ADMIN, echo_flow, served
from tests.test_langflow import DATA, booby_trapped

BASIC = (DATA / "basic-prompting.json").read_text()
MEMORY = (DATA / "v1.0-memory-chatbot.json").read_text()
FAKE = "This is a fake answer from {node}."
BASIC_ANSWER = FAKE.format(node="LanguageModelComponent-FLeYF")
MEMORY_ANSWER = FAKE.format(node="OpenAIModel-63o3Q")


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    remote = Remote.create(tmp_path)
    remote.commit(
        {
            "flows/basic-prompting.json": BASIC,
            "flows/memory-chatbot.json": MEMORY,
            "flows/echo.json": echo_flow(answer="native answer"),
        },
        "LangFlow exports next to a native flow",
    )
    remote.push()
    return remote


@pytest.fixture
def native(tmp_path: Path) -> Remote:
    """A repository of one native flow answering from its own FakeChatModel (served without --fake-models)."""
    remote = Remote.create(tmp_path)
    remote.commit({"flows/echo.json": echo_flow(answer="native answer")}, "a native flow")
    remote.push()
    return remote


def run(harness: Any, flow: str, body: Any, **kwargs: Any) -> Any:
    return harness.client.post(f"/api/v1/run/{flow}", json=body, **kwargs)


def events(text: str) -> list[dict[str, Any]]:
    return [json.loads(part) for part in text.split("\n\n") if part.strip()]


def test_a_committed_export_is_served_in_langflows_response_shape(remote: Remote, tmp_path: Path) -> None:
    with served(remote, tmp_path, fake_models=True) as harness:
        response = run(harness, "basic-prompting", {"input_value": "hi", "session_id": "chat-1"})

    assert response.status_code == 200, response.text
    assert response.headers["x-flow-version"] == remote.sha()
    body = response.json()
    assert body["session_id"] == "chat-1"
    [run_output] = body["outputs"]
    assert run_output["inputs"] == {"input_value": "hi"}
    [component] = run_output["outputs"]
    assert component["component_id"] == "ChatOutput-yK0AU"
    assert component["component_display_name"] == "Chat Output"
    message = component["results"]["message"]
    assert (message["text"], message["sender"], message["sender_name"]) == (BASIC_ANSWER, "Machine", "AI")
    assert message["session_id"] == "chat-1"
    assert component["outputs"]["message"] == {"message": BASIC_ANSWER, "type": "text"}
    assert component["messages"][0]["message"] == BASIC_ANSWER
    assert body["metadata"]["flow_version"] == remote.sha()


def test_the_export_is_also_served_langserve_style(remote: Remote, tmp_path: Path) -> None:
    with served(remote, tmp_path, fake_models=True) as harness:
        response = harness.invoke("basic-prompting", "hi")

    assert response.status_code == 200, response.text
    assert response.json()["output"] == BASIC_ANSWER


def test_a_native_flow_takes_input_value_as_its_single_variable(native: Remote, tmp_path: Path) -> None:
    with served(native, tmp_path) as harness:
        response = run(harness, "echo", {"input_value": "what?"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["outputs"][0]["outputs"][0]["results"]["message"]["text"] == "native answer"
    assert body["session_id"]  # a new conversation when the client names none


def test_stream_sends_langflows_events(remote: Remote, tmp_path: Path) -> None:
    with served(remote, tmp_path, fake_models=True) as harness:
        response = run(harness, "basic-prompting", {"input_value": "hi", "session_id": "s"}, params={"stream": "true"})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-flow-version"] == remote.sha()
    found = events(response.text)
    kinds = [e["event"] for e in found]
    assert kinds[:2] == ["add_message", "add_message"] and kinds[-1] == "end"
    assert found[0]["data"]["sender"] == "User" and found[0]["data"]["text"] == "hi"
    tokens = [e["data"]["chunk"] for e in found if e["event"] == "token"]
    assert len(tokens) > 1 and "".join(tokens) == BASIC_ANSWER
    assert {e["data"]["id"] for e in found if e["event"] == "token"} == {found[1]["data"]["id"]}
    result = found[-1]["data"]["result"]
    assert result["session_id"] == "s"
    assert result["outputs"][0]["outputs"][0]["results"]["message"]["text"] == BASIC_ANSWER


def test_a_session_keeps_its_history_and_its_version(remote: Remote, tmp_path: Path) -> None:
    with served(remote, tmp_path, fake_models=True) as harness:
        first = run(harness, "memory-chatbot", {"input_value": "I am Ada", "session_id": "ada"})
        old = remote.sha()
        remote.commit({"flows/memory-chatbot.json": MEMORY.replace("helpful assistant", "kind assistant")})
        remote.push()
        assert harness.reconcile()["changed"]
        second = run(harness, "memory-chatbot", {"input_value": "who am I?", "session_id": "ada"})
        other = run(harness, "memory-chatbot", {"input_value": "hello", "session_id": "bob"})
        turns = harness.client.portal.call(harness.deps.store.load_turns, "ada", 10)

    assert first.status_code == second.status_code == 200, second.text
    assert first.headers["x-flow-version"] == second.headers["x-flow-version"] == old
    assert other.headers["x-flow-version"] == remote.sha() != old
    assert second.json()["outputs"][0]["outputs"][0]["results"]["message"]["text"] == MEMORY_ANSWER
    assert [tuple(t) for t in turns] == [
        ("human", "I am Ada"),
        ("ai", MEMORY_ANSWER),
        ("human", "who am I?"),
        ("ai", MEMORY_ANSWER),
    ]


def test_a_conversational_export_without_a_session_gets_a_fresh_one(remote: Remote, tmp_path: Path) -> None:
    with served(remote, tmp_path, fake_models=True) as harness:
        one = run(harness, "memory-chatbot", {"input_value": "hi"}).json()
        two = run(harness, "memory-chatbot", {"input_value": "hi"}).json()

    assert one["session_id"] and two["session_id"] and one["session_id"] != two["session_id"]


def test_the_version_header_pins_the_run(native: Remote, tmp_path: Path) -> None:
    old = native.sha()
    with served(native, tmp_path, pins="history") as harness:
        native.commit({"flows/echo.json": echo_flow(answer="new answer")})
        native.push()
        harness.reconcile()
        pinned = run(harness, "echo", {"input_value": "x"}, headers={"X-Flow-Version": old[:10]})
        head = run(harness, "echo", {"input_value": "x"})

    assert pinned.headers["x-flow-version"] == old
    assert pinned.json()["outputs"][0]["outputs"][0]["results"]["message"]["text"] == "native answer"
    assert head.json()["outputs"][0]["outputs"][0]["results"]["message"]["text"] == "new answer"


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"input_value": "x", "input_type": "image"}, 422, "bad-input-type"),
        ({"input_value": "x", "output_type": "html"}, 422, "bad-output-type"),
        ({"input_value": 42}, 422, "bad-body"),
        ({"input_value": "x", "tweaks": {"Prompt-t2oaK": {"template": "hack"}}}, 422, "tweaks-unsupported"),
        ({"input_value": "x", "output_component": "ChatOutput-other"}, 422, "unknown-output-component"),
        (["not", "an", "object"], 422, "bad-body"),
    ],
    ids=["input-type", "output-type", "input-value", "tweaks", "output-component", "not-an-object"],
)
def test_bad_requests(remote: Remote, tmp_path: Path, body: Any, status: int, code: str) -> None:
    with served(remote, tmp_path, fake_models=True) as harness:
        response = run(harness, "basic-prompting", body)

    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert "Traceback" not in response.text


def test_empty_tweaks_are_accepted(remote: Remote, tmp_path: Path) -> None:
    with served(remote, tmp_path, fake_models=True) as harness:
        response = run(harness, "basic-prompting", {"input_value": "x", "tweaks": {}})

    assert response.status_code == 200, response.text


def test_unknown_flow_invalid_json_and_too_large(remote: Remote, tmp_path: Path) -> None:
    with served(remote, tmp_path, fake_models=True, max_body_bytes=256) as harness:
        unknown = run(harness, "nope", {"input_value": "x"})
        json_type = {"content-type": "application/json"}
        broken = harness.client.post("/api/v1/run/echo", content=b"{not json", headers=json_type)
        not_json = harness.client.post(
            "/api/v1/run/echo", content=b'{"input_value": "x"}', headers={"content-type": "x"}
        )
        large = run(harness, "echo", {"input_value": "x" * 1000})
        stream_flag = run(harness, "echo", {"input_value": "x"}, params={"stream": "maybe"})

    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "unknown-flow")
    assert (broken.status_code, broken.json()["error"]["code"]) == (422, "invalid-json")
    assert (not_json.status_code, not_json.json()["error"]["code"]) == (415, "unsupported-media-type")
    assert (large.status_code, large.json()["error"]["code"]) == (413, "body-too-large")
    assert (stream_flag.status_code, stream_flag.json()["error"]["code"]) == (422, "bad-stream")


def test_an_export_with_unsupported_nodes_is_recorded_failed_pointing_into_it(remote: Remote, tmp_path: Path) -> None:
    remote.commit({"flows/memory-base.json": (DATA / "memory-chatbot.json").read_text()}, "an agent with a memory base")
    remote.push()
    with served(remote, tmp_path, fake_models=True, wait=False) as harness:
        harness.reconcile()
        versions = harness.client.get("/versions").json()["versions"]
        response = run(harness, "memory-base", {"input_value": "x"})

    newest = versions[0]
    assert newest["status"] == "ready" and list(newest["failed"]) == ["memory-base"]
    found = newest["failed"]["memory-base"]
    problems = {(p["file"], p["code"], p["path"]) for p in found if p["severity"] == "error"}
    assert problems == {("flows/memory-base.json", "langflow-unsupported", "$.data.nodes[4]")}
    assert all(p["line"] for p in found)
    assert response.status_code == 503  # it never built: nothing can serve it (nothing-servable, retry later)


def test_stored_code_is_never_executed_when_served(remote: Remote, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    remote.commit({"flows/trapped.json": json.dumps(booby_trapped(marker), indent=2)})
    remote.push()
    with served(remote, tmp_path, fake_models=True) as harness:
        assert harness.client.post("/admin/reconcile", headers=ADMIN).status_code == 200
        response = run(harness, "trapped", {"input_value": "hi"})
        streamed = run(harness, "trapped", {"input_value": "hi"}, params={"stream": "true"})

    assert response.status_code == streamed.status_code == 200, response.text
    assert not marker.exists()
    assert not hasattr(builtins, "GITOPS_FLOW_LANGFLOW_CODE_RAN")


def _built(doc: dict[str, Any]) -> Any:
    return build_flow(FlowSpec.model_validate(doc), ComponentRegistry.builtin(), dry_run=True)


def test_input_value_fills_the_entrys_single_variable_or_is_refused() -> None:
    one = _built(chain(("p", "PromptTemplate", {"template": "Q: {question}"})))
    none = _built(chain(("p", "PromptTemplate", {"template": "Say hi"})))
    chat = _built(chain(("m", "ChatHistory", {"input_key": "text"}), ("p", "Text", {"key": "text"})))
    text = _built(chain(("i", "Passthrough", {})))
    two = _built(chain(("p", "PromptTemplate", {"template": "{a} and {b}"})))
    both = _built(
        {
            "version": 1,
            "name": "both",
            "nodes": [
                {"id": "in", "component": "Passthrough"},
                {"id": "a", "component": "PromptTemplate", "params": {"template": "A: {text}"}},
                {"id": "b", "component": "PromptTemplate", "params": {"template": "B: {input_value}"}},
                {"id": "out", "component": "Text", "params": {"template": "{a} / {b}"}},
            ],
            "edges": [
                {"source": "in", "target": "a"},
                {"source": "in", "target": "b"},
                {"source": "a", "target": "out", "key": "a"},
                {"source": "b", "target": "out", "key": "b"},
            ],
        }
    )

    assert flow_input(one, "hi") == {"question": "hi"}
    assert flow_input(none, "hi") == {}
    assert flow_input(chat, "hi") == {"text": "hi"}
    assert flow_input(text, "hi") == "hi"
    assert flow_input(both, "hi") == "hi"  # each reader takes one variable: each gets the text
    assert asyncio.run(both.runnable.ainvoke("hi")) == "A: hi / B: hi"
    with pytest.raises(RequestError) as refused:
        flow_input(two, "hi")
    assert (refused.value.status, refused.value.code) == (422, "several-inputs")
