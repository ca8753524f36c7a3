"""LangFlow's own SDK (``langflow-sdk``), unchanged, against a real `gitops-flow serve`: run and stream, sync and async;
message outputs answer their text; an empty body takes LangFlow's defaults; a flow is called by its export's id as
well as by its name; an export keeps LangFlow's own file name; tweaks the flow allows, and no others."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langflow_sdk import AsyncClient, Client
from langflow_sdk.exceptions import LangflowValidationError

from tests.gitrepo import Remote
from tests.process import ServeProcess, serve_process

DATA = Path(__file__).resolve().parent / "data" / "langflow"
EXPORT = json.loads((DATA / "basic-prompting.json").read_text())
FAKE = "This is a fake answer from {node}."


def _linear(name: str, *nodes: tuple[str, str, dict[str, Any]], **extra: Any) -> str:
    listed = [{"id": i, "component": c, "params": p} for i, c, p in nodes]
    edges = [{"source": a["id"], "target": b["id"]} for a, b in zip(listed, listed[1:], strict=False)]
    return json.dumps({"version": 1, "name": name, "nodes": listed, "edges": edges, **extra})


FILES = {
    # an export as LangFlow saves it: its own name, spaces and capitals
    "flows/Basic Prompting.json": json.dumps(EXPORT),
    # a flow whose output is the model's message itself (no parser): LangFlow answers its text
    "flows/message.json": _linear(
        "message",
        ("prompt", "PromptTemplate", {"template": "Q: {question}"}),
        ("llm", "FakeChatModel", {"responses": ["the message's text"]}),
    ),
    # a flow that lets callers tweak its model's answers and its prompt, and nothing else
    "flows/tweaked.json": _linear(
        "tweaked",
        ("prompt", "PromptTemplate", {"template": "Q: {question}"}),
        ("llm", "FakeChatModel", {"responses": ["as committed"]}),
        ("answer", "StrOutputParser", {}),
        tweakable={"llm": ["responses"], "prompt": ["template"]},
    ),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("sdk")
    remote = Remote.create(tmp)
    remote.commit(FILES)
    remote.push()
    with serve_process(remote, tmp, args=["--fake-models"]) as process:
        yield process


def model_node() -> str:
    return next(
        n["id"] for n in EXPORT["data"]["nodes"] if n["data"].get("type") in ("LanguageModelComponent", "OpenAIModel")
    )


@pytest.mark.parametrize("flow", ["basic-prompting", EXPORT["id"]], ids=["by-name", "by-export-id"])
def test_client_run_and_stream(server: ServeProcess, flow: str) -> None:
    answer = FAKE.format(node=model_node())
    with Client(server.url) as client:
        response = client.run(flow, input_value="Hello")
        assert response.first_text_output() == answer
        assert response.is_completed()
        chunks = list(client.stream(flow, input_value="Hello"))
    events = [c.event for c in chunks]
    assert events[:2] == ["add_message", "add_message"] and events[-1] == "end"
    assert "".join(c.text or "" for c in chunks if c.is_token) == answer
    final = chunks[-1].final_response()
    assert final is not None and final.first_text_output() == answer


def test_async_client_run_and_stream(server: ServeProcess) -> None:
    async def calls() -> tuple[Any, list[Any]]:
        async with AsyncClient(server.url) as client:
            response = await client.run("message", input_value="hi")
            chunks = [c async for c in client.stream("message", input_value="hi")]
            return response, chunks

    response, chunks = asyncio.run(calls())
    assert response.first_text_output() == "the message's text"  # the message's content, not its JSON
    assert "".join(c.text or "" for c in chunks if c.is_token) == "the message's text"
    assert chunks[-1].final_response().first_text_output() == "the message's text"


def test_an_empty_body_takes_langflows_defaults(server: ServeProcess) -> None:
    response = httpx.post(f"{server.url}/api/v1/run/message", headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["outputs"][0]["inputs"] == {"input_value": None}
    assert body["outputs"][0]["outputs"][0]["results"]["message"]["text"] == "the message's text"
    # without saying it is JSON, it stays refused (no browser form can run a flow)
    assert httpx.post(f"{server.url}/api/v1/run/message").status_code == 415


def test_tweaks_the_flow_allows(server: ServeProcess) -> None:
    with Client(server.url) as client:
        tweaked = client.run("tweaked", input_value="hi", tweaks={"llm": {"responses": ["tweaked answer"]}})
        assert tweaked.first_text_output() == "tweaked answer"
        assert client.run("tweaked", input_value="hi").first_text_output() == "as committed"  # one request only
        streamed = list(client.stream("tweaked", input_value="hi", tweaks={"llm": {"responses": ["streamed"]}}))
        assert "".join(c.text or "" for c in streamed if c.is_token) == "streamed"
        refused = [
            {"llm": {"latency_ms": 5}},  # a param the flow does not list
            {"answer": {}},  # a node that takes no tweaks
            {"llm": {"responses": {"$env": "OPENAI_API_KEY"}}},  # never the server's environment
            {"llm": {"responses": []}},  # the component's own check
            {"prompt": {"template": "{question.__class__}"}},  # the prompt rules every template follows
        ]
        for tweaks in refused:
            with pytest.raises(LangflowValidationError):
                client.run("tweaked", input_value="hi", tweaks=tweaks)
        with pytest.raises(LangflowValidationError):  # a flow that declares none takes none
            client.run("message", input_value="hi", tweaks={"llm": {"responses": ["x"]}})


def test_two_files_of_one_flow_name_are_both_refused(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    other = json.loads(FILES["flows/message.json"])
    remote.commit(
        {
            "flows/Basic Prompting.json": json.dumps(EXPORT),
            "flows/basic-prompting.json": json.dumps({**other, "name": "basic-prompting"}),
            "flows/message.json": FILES["flows/message.json"],
        }
    )
    remote.push()
    with serve_process(remote, tmp_path, args=["--fake-models"]) as server:
        view = {f["name"]: f for f in server.client.get("/flows").json()["flows"]}
        assert view["message"]["state"] == "live"
        assert view["basic-prompting"]["state"] == "failed"
        codes = {
            (p["code"], p["file"]) for p in view["basic-prompting"]["problems"] if p["code"] != "langflow-default-model"
        }
        assert codes == {
            ("duplicate-name", "flows/Basic Prompting.json"),
            ("duplicate-name", "flows/basic-prompting.json"),
        }
        refused = server.client.post("/api/v1/run/basic-prompting", json={})  # no ref can serve it
        assert refused.status_code == 503 and refused.headers["retry-after"]


def test_an_alias_of_one_flow_calls_it_and_one_of_two_is_a_conflict(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    one = json.loads(FILES["flows/message.json"])
    two = {**one, "name": "second", "nodes": copy.deepcopy(one["nodes"])}
    two["nodes"][1]["params"] = {"responses": ["the second flow"]}
    remote.commit(
        {
            "flows/message.json": json.dumps({**one, "aliases": ["solo", "shared"]}),
            "flows/second.json": json.dumps({**two, "aliases": ["shared"]}),
        }
    )
    remote.push()
    with serve_process(remote, tmp_path) as server, Client(server.url) as client:
        assert client.run("solo", input_value="hi").first_text_output() == "the message's text"
        assert client.run("second", input_value="hi").first_text_output() == "the second flow"
        response = server.client.post("/api/v1/run/shared", json={"input_value": "hi"})
        assert response.status_code == 409 and response.json()["error"]["code"] == "ambiguous-flow"
        assert "message, second" in response.json()["error"]["message"]
        assert server.client.post("/api/v1/run/nobody", json={}).status_code == 404
