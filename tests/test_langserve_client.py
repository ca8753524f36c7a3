"""LangServe's own client tests (``tests/unit_tests/test_server_client.py`` in langchain-ai/langserve), ported to flows
served by a real `gitops-flow serve`: every assertion about the wire, against gitops-flow instead of LangServe.

LangServe's tests serve Python runnables (``add_one``, ``prompt | model | parser``); here the same shapes are flow
documents: a passthrough, a prompt -> fake model -> parser chain, a chat prompt with a history placeholder, a
conversation (ChatHistory) and a flow that fails while running. Where gitops-flow says more than LangServe (the
version in the metadata event, an error's message), docs/server.md lists the difference.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import langserve.client
import pytest
import yaml
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables.history import RunnableWithMessageHistory
from langchain_core.tracers import RunLog, RunLogPatch
from langserve import RemoteRunnable
from langserve.lzstring import LZString

from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.flow.document import FlowSpec
from gitops_flow.runtime.compiler import build_flow
from tests.gitrepo import Remote
from tests.process import ServeProcess, serve_process
from tests.served import wait_until
from tests.test_per_flow import CANARY, canary_users

ANSWER = "Hello World!"


def _linear(name: str, *nodes: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    listed = [{"id": i, "component": c, "params": p} for i, c, p in nodes]
    edges = [{"source": a["id"], "target": b["id"]} for a, b in zip(listed, listed[1:], strict=False)]
    return {"version": 1, "name": name, "nodes": listed, "edges": edges}


FLOWS: dict[str, dict[str, Any]] = {
    # LangServe's add_one_or_passthrough: what comes in goes out, LangChain objects included
    "passthrough": _linear("passthrough", ("entry", "Passthrough", {})),
    # LangServe's prompt | GenericFakeChatModel | StrOutputParser
    "chain": _linear(
        "chain",
        ("prompt", "ChatPromptTemplate", {"messages": [["system", "You are a cat."], ["human", "{question}"]]}),
        ("model", "FakeChatModel", {"responses": [ANSWER]}),
        ("parser", "StrOutputParser", {}),
    ),
    # LangServe's prompt with a history placeholder | model, wrapped by the client in RunnableWithMessageHistory
    "history": _linear(
        "history",
        (
            "prompt",
            "ChatPromptTemplate",
            {
                "messages": [
                    ["system", "You're good at {ability}"],
                    ["placeholder", "{history}"],
                    ["human", "{question}"],
                ]
            },
        ),
        ("model", "FakeChatModel", {"responses": [ANSWER]}),
    ),
    # a conversation kept by the server: it needs a session, which a /c/ route's config can carry
    "chat": _linear(
        "chat",
        ("memory", "ChatHistory", {}),
        ("prompt", "ChatPromptTemplate", {"messages": [["placeholder", "{history}"], ["human", "{question}"]]}),
        ("model", "FakeChatModel", {"responses": ["noted"]}),
        ("parser", "StrOutputParser", {}),
    ),
    # fails while running: it reads a key its input does not have
    "fails": _linear("fails", ("entry", "Passthrough", {}), ("read", "Pick", {"key": "missing"})),
}
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("langserve")
    remote = Remote.create(tmp)
    remote.commit({f"flows/{name}.json": json.dumps(doc) for name, doc in FLOWS.items()})
    remote.push()
    with serve_process(remote, tmp) as process:
        yield process


@pytest.fixture
def client(server: ServeProcess) -> httpx.Client:
    return server.client


def runnable(server: ServeProcess, flow: str) -> RemoteRunnable:
    """A RemoteRunnable whose clients the test closes itself (tests/test_api.py's remote_call says why)."""
    with mock.patch.object(langserve.client, "_close_clients", lambda *_: None):
        return RemoteRunnable(f"{server.url}/flows/{flow}/")


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def _closing(remote: RemoteRunnable, work: Any) -> Any:
    try:
        return await work
    finally:
        await remote.async_client.aclose()
        remote.sync_client.close()


def decode_eventstream(text: str) -> list[dict[str, Any]]:
    """LangServe's test decoder: ``event:`` and ``data:`` lines in pairs, then ``end``."""
    lines = [line for line in text.split("\r\n") if line.strip()]
    events: list[dict[str, Any]] = []
    for info, data in zip(lines[::2], lines[1::2], strict=False):
        events.append({"type": info[len("event: ") :].strip(), "data": json.loads(data[len("data: ") :])})
    if "end" in lines[-1]:
        events.append({"type": "end"})
    return events


def local_events(flow: str, value: Any, version: str) -> list[dict[str, Any]]:
    """What LangChain's own astream_events yields for the flow built here, for comparison with what is served."""
    built = build_flow(FlowSpec.model_validate(FLOWS[flow]), ComponentRegistry.builtin())

    async def collect() -> list[dict[str, Any]]:
        return [e async for e in built.runnable.astream_events(value, {"run_name": flow}, version=version)]

    with mock.patch("warnings.warn"):  # v1 is deprecated in langchain-core; the server says nothing of it either
        return asyncio.run(collect())


def comparable(events: list[dict[str, Any]]) -> list[tuple[str, str, list[str], Any]]:
    """Events without what differs between runs (ids, metadata), their data as JSON text."""

    def plain(value: Any) -> Any:
        dumped = json.loads(json.dumps(value, default=lambda v: v.model_dump()))
        return _without_ids(dumped)

    return [(e["event"], e["name"], e["tags"], plain(e["data"])) for e in events]


def _without_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_ids(v) for k, v in value.items() if k not in ("id", "run_id")}
    if isinstance(value, list):
        return [_without_ids(v) for v in value]
    return value


# -- test_server_async: the endpoints over plain HTTP -------------------------------------------------------------


def test_server_async(client: httpx.Client) -> None:
    response = client.post("/flows/passthrough/invoke", json={"input": 1})
    assert response.json()["output"] == 1

    response = client.post("/flows/passthrough/batch", json={"inputs": [1, 2]})
    assert response.json()["output"] == [1, 2]

    response = client.post("/flows/passthrough/stream", json={"input": 1})
    events = decode_eventstream(response.text)
    assert [e["type"] for e in events] == ["metadata", "data", "end"]
    assert uuid.UUID(events[0]["data"]["run_id"])
    # gitops-flow's metadata also names the version that served (docs/server.md)
    assert events[0]["data"]["flow_version"] == response.headers["x-flow-version"]
    assert events[1]["data"] == 1

    response = client.post("/flows/passthrough/stream_log", json={"input": 1})
    assert response.text.startswith("event: data\r\n")


@pytest.mark.parametrize("endpoint", ["invoke", "batch", "stream", "stream_log", "stream_events"])
def test_bad_json_is_422(client: httpx.Client, endpoint: str) -> None:
    response = client.post(f"/flows/passthrough/{endpoint}", content=b"bad json []", headers=JSON)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid-json"
    # a body without "input" (or "inputs")
    assert client.post(f"/flows/passthrough/{endpoint}", json={}).status_code == 422


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("invoke", {"input": 4, "config": {"tags": [[]]}}),
        ("batch", {"inputs": [1, 2], "config": {"tags": [[]]}}),
        ("batch", {"inputs": [1, 2], "config": [{"tags": ["a"]}, {"tags": ["b"]}, {"tags": ["c"]}]}),
        ("stream_log", {"input": 1, "include_names": [[]]}),
        ("stream_events", {"input": 1, "include_names": [[]]}),
        ("stream_events", {"input": 1, "version": "v9"}),
    ],
    ids=["tags-of-lists", "batch-tags-of-lists", "three-configs-two-inputs", "log-names", "events-names", "version"],
)
def test_bad_requests_are_422(client: httpx.Client, endpoint: str, body: dict[str, Any]) -> None:
    assert client.post(f"/flows/passthrough/{endpoint}", json=body).status_code == 422


# -- test_server_astream_events: stream_events over plain HTTP ------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_server_stream_events(client: httpx.Client, version: str) -> None:
    body = {"input": {"question": "hello"}, **({"version": version} if version == "v1" else {})}
    response = client.post("/flows/chain/stream_events", json=body)
    assert response.status_code == 200
    events = decode_eventstream(response.text)
    assert events[-1] == {"type": "end"}
    data = [e["data"] for e in events[:-1]]
    assert {e["type"] for e in events[:-1]} == {"data"}
    for event in data:
        assert uuid.UUID(event["run_id"])
        assert not any(key.startswith("__") for key in event["metadata"])
        assert event["metadata"]["flow_version"] == response.headers["x-flow-version"]  # ours: the version
    assert comparable(data) == comparable(local_events("chain", {"question": "hello"}, version))
    assert data[0]["event"] == "on_chain_start" and data[0]["name"] == "chain"
    assert data[-1]["event"] == "on_chain_end" and data[-1]["data"]["output"] == ANSWER
    if version == "v2":
        assert data[0]["parent_ids"] == []


# -- test_server_bound_async: a config in the path -----------------------------------------------------------------


def test_config_hash_routes(client: httpx.Client) -> None:
    config_hash = LZString.compressToEncodedURIComponent(json.dumps({"tags": ["test"]}))
    response = client.post(
        f"/flows/chain/c/{config_hash}/stream_events",
        json={"input": {"question": "hi"}, "config": {"tags": ["another-one"]}},
    )
    assert response.status_code == 200
    root = decode_eventstream(response.text)[0]["data"]
    assert sorted(root["tags"]) == ["another-one", "test"]

    # a conversation needs a session: on a /c/ route the body's config names it, as on any other
    hashed = {"configurable": {"lang": "en"}}
    session = {"configurable": {"session_id": "mine"}}
    assert client.post("/flows/chat/invoke", json={"input": {"question": "hi"}}).status_code == 422
    for endpoint, body in [
        ("invoke", {"input": {"question": "hi"}, "config": session}),
        ("batch", {"inputs": [{"question": "hi"}], "config": session}),
        ("stream", {"input": {"question": "hi"}, "config": session}),
    ]:
        response = client.post(f"/flows/chat/c/{lz(hashed)}/{endpoint}", json=body)
        assert response.status_code == 200, response.text
        assert "noted" in response.text

    response = client.post("/flows/chain/c/not-a-hash!/invoke", json={"input": {"question": "hi"}})
    assert (response.status_code, response.json()["error"]["code"]) == (400, "bad-config-hash")


@pytest.mark.parametrize("key", ["session_id", "user_id", "flow_version"])
@pytest.mark.parametrize("endpoint", ["invoke", "batch", "stream", "stream_log", "stream_events"])
def test_a_config_hash_never_chooses_the_conversation_user_or_version(
    client: httpx.Client, endpoint: str, key: str
) -> None:
    """A /c/ link is made by whoever shares it and followed by someone else (the playground sends no session of its
    own): a routing key in it would put the follower in the sharer's conversation, or on a version of their choice."""
    link = f"/flows/chat/c/{lz({'configurable': {key: 'attacker'}, 'tags': ['shared']})}/{endpoint}"
    body = {"inputs": [{"question": "hi"}]} if endpoint == "batch" else {"input": {"question": "hi"}}

    response = client.post(link, json=body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "routing-key-in-config-hash" and f"configurable.{key}" in error["message"]


def lz(config: dict[str, Any]) -> str:
    return str(LZString.compressToEncodedURIComponent(json.dumps(config)))


# -- RemoteRunnable: invoke, batch, stream (sync and async) ----------------------------------------------------------


def test_invoke_and_batch(server: ServeProcess) -> None:
    remote = runnable(server, "passthrough")
    try:
        assert remote.invoke(1) == 1
        assert remote.invoke(HumanMessage(content="hello")) == HumanMessage(content="hello")
        assert remote.invoke(1, config={"tags": ["test"]}) == 1
        assert remote.batch([]) == []
        assert remote.batch([1, 2, 3]) == [1, 2, 3]
        assert remote.batch([HumanMessage(content="hello")]) == [HumanMessage(content="hello")]
    finally:
        remote.sync_client.close()


def test_ainvoke_abatch_astream(server: ServeProcess) -> None:
    remote = runnable(server, "passthrough")

    async def calls() -> None:
        assert await remote.ainvoke(1) == 1
        assert await remote.ainvoke(HumanMessage(content="hello")) == HumanMessage(content="hello")
        assert await remote.abatch([]) == []
        assert await remote.abatch([1, 2, 3]) == [1, 2, 3]
        assert [c async for c in remote.astream(1)] == [1]
        data = HumanMessage(content="hello")
        assert [c async for c in remote.astream(data)] == [data]
        # composed with local steps, with configs (one or one per input)
        composed = remote | (lambda x: x + 1 if isinstance(x, int) else x)
        assert await composed.ainvoke(1, config={"tags": ["test"]}) == 2
        assert await composed.abatch([1, 2], config=[{"tags": ["test"]}, {"tags": ["test2"]}]) == [2, 3]
        with pytest.raises(ValueError):
            await composed.abatch([1, 2], config=[{"tags": ["test"]}])

    run(_closing(remote, calls()))


def test_input_that_fails_the_schema_is_422(server: ServeProcess) -> None:
    remote = runnable(server, "chain")

    async def calls() -> None:
        with pytest.raises(httpx.HTTPStatusError) as caught:
            async for _ in remote.astream("foo"):
                pass
        assert caught.value.response.status_code == 422
        with pytest.raises(httpx.HTTPStatusError) as caught:
            async for _ in remote.astream_log("foo"):
                pass
        assert caught.value.response.status_code == 422
        with pytest.raises(httpx.HTTPStatusError) as caught:
            async for _ in remote.astream_events("foo"):
                pass
        assert caught.value.response.status_code == 422
        with pytest.raises(httpx.HTTPError):
            await remote.ainvoke("hello")
        with pytest.raises(httpx.HTTPError):
            await remote.abatch(["hello"])

    run(_closing(remote, calls()))


def test_a_failing_flow_ends_each_stream_with_a_500(server: ServeProcess) -> None:
    remote = runnable(server, "fails")

    async def calls() -> None:
        with pytest.raises(httpx.HTTPStatusError) as caught:
            await remote.ainvoke({"question": "x"})
        assert caught.value.response.status_code == 500
        for stream in (remote.astream, remote.astream_log, remote.astream_events):
            with pytest.raises(httpx.HTTPStatusError) as caught:
                async for _ in stream({"question": "x"}):
                    pass
            assert caught.value.response.status_code == 500

    run(_closing(remote, calls()))


# -- astream_log -----------------------------------------------------------------------------------------------------


def _run_log(patches: list[RunLogPatch]) -> RunLog:
    log = RunLog(state=None)  # type: ignore[arg-type]
    for patch in patches:
        log = log + patch
    return log


def test_astream_log(server: ServeProcess) -> None:
    remote = runnable(server, "chain")

    async def calls() -> list[RunLogPatch]:
        return [p async for p in remote.astream_log({"question": "hi"}, diff=True)]

    patches = run(_closing(remote, calls()))
    assert all(isinstance(p, RunLogPatch) for p in patches)
    first = patches[0].ops[0]
    assert first == {
        "op": "replace",
        "path": "",
        "value": {
            "final_output": None,
            "id": first["value"]["id"],
            "logs": {},
            "streamed_output": [],
            "type": "chain",
            "name": "chain",
        },
    }
    state = _run_log(patches).state
    assert state["final_output"] == ANSWER
    assert "".join(state["streamed_output"]) == ANSWER
    assert set(state["logs"]) == {"prompt", "model", "parser"}  # each node's run, by its id

    # the filters reach LangChain: only the model's run is logged
    remote = runnable(server, "chain")

    async def filtered() -> list[RunLogPatch]:
        return [p async for p in remote.astream_log({"question": "hi"}, include_names=["model"])]

    assert set(_run_log(run(_closing(remote, filtered()))).state["logs"]) == {"model"}


# -- astream_events --------------------------------------------------------------------------------------------------


def test_astream_events(server: ServeProcess) -> None:
    remote = runnable(server, "chain")

    async def calls() -> list[dict[str, Any]]:
        return [e async for e in remote.astream_events({"question": "hello"})]

    events = run(_closing(remote, calls()))
    for event in events:
        assert "run_id" in event
        assert not any(key.startswith("__") for key in event["metadata"])
    assert comparable(events) == comparable(local_events("chain", {"question": "hello"}, "v2"))
    streamed = [e["data"]["chunk"] for e in events if e["event"] == "on_chat_model_stream"]
    assert all(isinstance(chunk, BaseMessage) for chunk in streamed)  # LangChain objects come back as objects
    assert "".join(chunk.content for chunk in streamed) == ANSWER


# -- RunnableWithMessageHistory around a RemoteRunnable --------------------------------------------------------------


class _History(BaseChatMessageHistory):
    def __init__(self) -> None:
        self.messages: list[BaseMessage] = []

    def add_messages(self, messages: Any) -> None:
        self.messages.extend(messages)

    def clear(self) -> None:
        self.messages = []


@pytest.mark.filterwarnings("ignore:RunnableWithMessageHistory is deprecated")
def test_remote_runnable_with_message_history(server: ServeProcess) -> None:
    remote = runnable(server, "history")
    store: dict[str, _History] = {}

    def history(session_id: str) -> _History:
        return store.setdefault(session_id, _History())

    chained = RunnableWithMessageHistory(remote, history, input_messages_key="question", history_messages_key="history")

    async def calls() -> Any:
        config = {"configurable": {"session_id": "1"}}
        return await chained.ainvoke({"question": "hi", "ability": "math"}, config)  # type: ignore[arg-type]

    result = run(_closing(remote, calls()))
    assert isinstance(result, AIMessage) and result.content == ANSWER
    assert [type(m) for m in store["1"].messages] == [HumanMessage, AIMessage]
    assert store["1"].messages[1].content == ANSWER


# -- run ids, batch metadata, every endpoint there -------------------------------------------------------------------


def test_run_ids_and_batch_responses(client: httpx.Client) -> None:
    body = client.post("/flows/passthrough/invoke", json={"input": 1}).json()
    assert uuid.UUID(body["metadata"]["run_id"])
    body = client.post("/flows/passthrough/batch", json={"inputs": [1, 2]}).json()
    run_ids = body["metadata"]["run_ids"]
    assert len(run_ids) == 2 and all(uuid.UUID(r) for r in run_ids)
    responses = body["metadata"]["responses"]
    assert [r["run_id"] for r in responses] == run_ids
    assert [r["feedback_tokens"] for r in responses] == [[], []]


ENDPOINTS = [
    ("POST", "invoke", {"input": 1}),
    ("POST", "batch", {"inputs": [1, 2]}),
    ("POST", "stream", {"input": 1}),
    ("POST", "stream_log", {"input": 1}),
    ("POST", "stream_events", {"input": 1}),
    ("GET", "input_schema", None),
    ("GET", "output_schema", None),
    ("GET", "config_schema", None),
    ("GET", "playground/index.html", None),
]


@pytest.mark.parametrize("prefix", ["", "c/1234/", "c/N4XyA/"], ids=["plain", "bad-hash", "empty-config-hash"])
@pytest.mark.parametrize(("method", "endpoint", "body"), ENDPOINTS, ids=[e[1] for e in ENDPOINTS])
def test_every_endpoint_is_there(client: httpx.Client, prefix: str, method: str, endpoint: str, body: Any) -> None:
    response = client.request(method, f"/flows/passthrough/{prefix}{endpoint}", json=body)
    assert response.status_code not in (404, 405), response.text


# -- streams that are many -------------------------------------------------------------------------------------------


def test_concurrent_streams_each_get_their_own_events(server: ServeProcess) -> None:
    remote = runnable(server, "chain")

    async def one(question: str) -> list[str]:
        return [e["event"] async for e in remote.astream_events({"question": question})]

    async def calls() -> list[list[str]]:
        return list(await asyncio.gather(*(one(str(n)) for n in range(5))))

    runs = run(_closing(remote, calls()))
    assert all(names == runs[0] for names in runs)
    assert runs[0][0] == "on_chain_start" and runs[0][-1] == "on_chain_end"


# -- stream_log and stream_events are runs like any other: the canary's primary fallback, the guard, the metrics ------


def test_a_canary_that_fails_before_its_first_output_is_answered_by_its_primary_and_aborted(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    stable = remote.commit({"flows/chain.json": json.dumps(FLOWS["chain"]), "gitops-flow.yaml": yaml.safe_dump(CANARY)})
    remote.push()
    remote.tag("stable", stable)
    remote.push_tags()
    broken = {**FLOWS["fails"], "name": "chain"}  # the canary reads a key no input has
    canary = remote.commit({"flows/chain.json": json.dumps(broken)}, "a broken canary")
    remote.push()
    with serve_process(remote, tmp_path, env={"GITOPS_FLOW_ANALYSIS_INTERVAL": "0.1"}) as server:
        for n, user in enumerate(canary_users("chain", 8)):
            endpoint = ("stream_log", "stream_events")[n % 2]
            response = server.client.post(
                f"/flows/chain/{endpoint}", json={"input": {"question": "hi"}}, headers={"X-Flow-User": user}
            )
            assert response.headers["x-flow-version"] == stable
            events = decode_eventstream(response.text)
            assert events[-1] == {"type": "end"} and "error" not in {e["type"] for e in events}
        wait_until(lambda: len(history(server, "aborted")) == 1, what="the canary's abort")
        [aborted] = history(server, "aborted")
        assert (aborted["flow"], aborted["sha"]) == ("chain", canary)
        metrics = server.client.get("/metrics").text
        assert (
            f'gitops_flow_requests_total{{flow="chain",outcome="ok",ref="stable",version="{stable[:12]}"}} 8.0'
            in metrics
        )
        assert f'flow="chain",outcome="error",ref="main",version="{canary[:12]}"' in metrics


def history(server: ServeProcess, kind: str) -> list[dict[str, Any]]:
    return [e for e in server.client.get("/history").json()["events"] if e["event"] == kind]
