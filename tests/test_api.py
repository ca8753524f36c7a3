"""The HTTP API contract (SPEC 4, 5 and 7): LangServe-compatible flow endpoints, the choice of a version, errors,
secrets, chat history, the server's views, readiness and the operator endpoint; all over a real Git remote.

Deploys, reverts, force-pushes and restarts are tests/test_deploy.py's business; here a second commit appears only
where the contract of a request needs two versions to tell them apart.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import jsonschema
import langserve.client
import pytest
from langserve import RemoteRunnable
from starlette.testclient import TestClient

from gitops_flow.app import create_app
from gitops_flow.delivery.source import GitSource
from tests.gitrepo import EPOCH, Remote
from tests.served import ADMIN, Served, echo_flow, example_files, on_loopback, served, settings, wait_until

QUESTION = {"question": "hi"}
LIMIT = 512  # max_body_bytes of the servers that test body limits


# -- flows ----------------------------------------------------------------------------------------------------------


def linear(name: str, *nodes: tuple[str, str, dict[str, Any]], **extra: Any) -> str:
    """A chain of (id, component, params) nodes as a flow document."""
    listed = [{"id": i, "component": c, "params": p} for i, c, p in nodes]
    edges = [{"source": a["id"], "target": b["id"]} for a, b in zip(listed, listed[1:], strict=False)]
    return json.dumps({"version": 1, "name": name, "nodes": listed, "edges": edges, **extra}, indent=2)


def prompt_flow(name: str = "prompt") -> str:
    """A prompt and nothing else: its output depends on its input, so the order of a batch shows."""
    return linear(name, ("prompt", "PromptTemplate", {"template": "Q: {question}"}))


def json_flow(name: str, answer: Any) -> str:
    """A fake model whose answer goes through a JSON parser: a non-JSON answer fails at run time, not at build."""
    return linear(
        name,
        ("prompt", "PromptTemplate", {"template": "Q: {question}"}),
        ("llm", "FakeChatModel", {"responses": [answer]}),
        ("answer", "JsonOutputParser", {}),
    )


def chat_flow(name: str = "chat", answers: tuple[str, ...] = ("first answer", "second answer")) -> str:
    """A conversational flow: ChatHistory entry, a prompt with the history, a fake model answering in turn."""
    return linear(
        name,
        ("memory", "ChatHistory", {}),
        ("prompt", "ChatPromptTemplate", {"messages": [["placeholder", "{history}"], ["human", "{question}"]]}),
        ("llm", "FakeChatModel", {"responses": list(answers)}),
        ("answer", "StrOutputParser", {}),
    )


def broken_flow(name: str = "echo") -> str:
    """A flow that fails validation: a commit carrying it is recorded as failed and never served."""
    return linear(name, ("llm", "NoSuchComponent", {}))


# -- helpers --------------------------------------------------------------------------------------------------------


def call(harness: Served, fn: Callable[..., Any], *args: Any) -> Any:
    """Run one of the app's coroutines (the state store's) on the app's own event loop."""
    return harness.client.portal.call(fn, *args)


@contextmanager
def served_once(remote: Remote, tmp_path: Path, url: str | None = None) -> Iterator[Served]:
    """Like ``served(wait=False)``, with a source that tries each fetch once: a failing fetch fails at once."""
    config = settings(remote, tmp_path, repo_url=url or remote.url)
    source = GitSource(str(config.repo_url), config.data_dir / "repo", attempts=1, backoff=0.0)
    app = create_app(config, source=source)
    with TestClient(app) as client:
        yield Served(client, remote, app)


def pin_of(harness: Served, flow: str, session: str) -> str | None:
    """The version a session is pinned to for ``flow``, read through the store's claim (None: no pin; left so)."""
    key = f"{flow}:{session}"
    sha: str = call(harness, harness.deps.store.claim_pin, key, "", 60.0)
    if sha == "":
        call(harness, harness.deps.store.drop_pin, key)
        return None
    return sha


def error_of(response: Any) -> dict[str, str]:
    """The ``{"error": {"code", "message"}}`` body, checked for its shape."""
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    error: dict[str, str] = body["error"]
    return error


def events_of(text: str) -> list[tuple[str, Any]]:
    """Server-sent events as sse_starlette (so LangServe) frames them: CRLF lines, a blank line after each event."""
    assert text.endswith("\r\n\r\n"), text
    events = []
    for block in text.split("\r\n\r\n")[:-1]:
        fields = dict(line.split(": ", 1) for line in block.split("\r\n"))
        assert set(fields) <= {"event", "data"}, block
        events.append((fields["event"], json.loads(fields["data"]) if "data" in fields else None))
    return events


def is_run_id(text: str) -> bool:
    """A canonical UUID in version 7's layout: time-ordered, so the server notes runs cheaply (ledger.py)."""
    return uuid.UUID(text).version == 7 and str(uuid.UUID(text)) == text


# -- 1. invoke, batch, stream ---------------------------------------------------------------------------------------


def test_invoke_answers_with_the_version_that_served_it(remote: Remote, tmp_path: Path) -> None:
    sha = remote.publish({"flows/echo.json": echo_flow(answer="hello world")})
    with served(remote, tmp_path) as harness:
        first = harness.invoke("echo", QUESTION)
        second = harness.invoke("echo", QUESTION)
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/json"
    body = first.json()
    assert body["output"] == "hello world"
    assert body["metadata"]["flow_version"] == sha == first.headers["x-flow-version"]
    assert body["metadata"]["ref"] == "main"
    assert is_run_id(body["metadata"]["run_id"])
    assert second.json()["metadata"]["run_id"] != body["metadata"]["run_id"]


@pytest.mark.parametrize(
    "config",
    [None, {"tags": ["one-for-all"]}, [{"tags": ["a"]}, {"metadata": {"k": "v"}}, None]],
    ids=["no-config", "one-config", "config-per-input"],
)
def test_batch_answers_every_input_in_order(remote: Remote, tmp_path: Path, config: Any) -> None:
    sha = remote.publish({"flows/prompt.json": prompt_flow()})
    with served(remote, tmp_path) as harness:
        response = harness.client.post(
            "/flows/prompt/batch", json={"inputs": [{"question": q} for q in "abc"], "config": config}
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-flow-version"] == sha
    body = response.json()
    assert body["output"] == [{"text": f"Q: {q}", "type": "StringPromptValue"} for q in "abc"]
    assert body["metadata"]["flow_version"] == sha
    assert body["metadata"]["ref"] == "main"
    run_ids = body["metadata"]["run_ids"]
    assert len(run_ids) == 3 == len(set(run_ids))
    assert all(is_run_id(r) for r in run_ids)


def test_batch_of_nothing_answers_nothing(remote: Remote, tmp_path: Path) -> None:
    remote.publish({"flows/echo.json": echo_flow()})
    with served(remote, tmp_path) as harness:
        response = harness.client.post("/flows/echo/batch", json={"inputs": []})
    assert response.status_code == 200
    assert response.json()["output"] == []
    assert response.json()["metadata"]["run_ids"] == []


def test_stream_sends_the_events_langserve_sends(remote: Remote, tmp_path: Path) -> None:
    answer = "hello big wide world"
    sha = remote.publish({"flows/echo.json": echo_flow(answer=answer)})
    with served(remote, tmp_path) as harness:
        invoked = harness.invoke("echo", QUESTION).json()["output"]
        response = harness.client.post("/flows/echo/stream", json={"input": QUESTION})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-flow-version"] == sha
    events = events_of(response.text)
    kind, metadata = events[0]
    assert kind == "metadata"
    assert set(metadata) == {"run_id", "flow_version", "ref"}
    assert is_run_id(metadata["run_id"])
    assert metadata["flow_version"] == sha
    assert metadata["ref"] == "main"
    assert events[-1] == ("end", None)
    chunks = events[1:-1]
    assert {kind for kind, _ in chunks} == {"data"}
    assert len(chunks) > 1  # token by token, not one block
    assert "".join(data for _, data in chunks) == invoked == answer


# -- 2. schemas -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flow", ["echo", "chat"], ids=["prompt-entry", "chat-history-entry"])
def test_input_schema_requires_the_prompt_variable(remote: Remote, tmp_path: Path, flow: str) -> None:
    sha = remote.publish({"flows/echo.json": echo_flow(), "flows/chat.json": chat_flow()})
    with served(remote, tmp_path) as harness:
        response = harness.client.get(f"/flows/{flow}/input_schema")
    assert response.status_code == 200
    assert response.headers["x-flow-version"] == sha
    schema = response.json()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["type"] == "object"
    assert schema["properties"]["question"]["type"] == "string"
    assert "question" in schema["required"]
    jsonschema.validate({"question": "hi"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"other": "hi"}, schema)


def test_output_and_config_schemas(remote: Remote, tmp_path: Path) -> None:
    sha = remote.publish({"flows/echo.json": echo_flow()})
    with served(remote, tmp_path) as harness:
        output = harness.client.get("/flows/echo/output_schema")
        config = harness.client.get("/flows/echo/config_schema")
    assert output.status_code == 200
    assert output.headers["x-flow-version"] == sha
    jsonschema.Draft202012Validator.check_schema(output.json())
    assert output.json()["type"] == "string"
    assert config.status_code == 200
    schema = config.json()
    jsonschema.Draft202012Validator.check_schema(schema)
    configurable = schema["properties"]["configurable"]
    assert configurable["type"] == "object"
    assert {k: v["type"] for k, v in configurable["properties"].items()} == {
        "session_id": "string",
        "user_id": "string",
        "flow_version": "string",
    }


# -- 3. LangServe's RemoteRunnable against a real loopback server ---------------------------------------------------

ANSWER = "the remote answer"


@pytest.fixture(scope="module")
def loopback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    """One uvicorn server for the module: echo, a chat flow (always answering "noted, thanks") and a failing flow.
    Yields its base URL and its app."""
    tmp = tmp_path_factory.mktemp("loopback")
    remote = Remote.create(tmp)
    files = {
        "flows/echo.json": echo_flow(answer=ANSWER),
        "flows/chat.json": chat_flow(answers=("noted, thanks",)),
        "flows/fails.json": json_flow("fails", ""),
    }
    remote.publish(files)
    with on_loopback(remote, tmp) as (url, app):
        wait_until(lambda: httpx.get(url + "/readyz", timeout=5).status_code == 200, what="readiness")
        yield url, app


def _invoke(runnable: RemoteRunnable, value: Any, config: Any) -> Any:
    return runnable.invoke(value, config)


def _batch(runnable: RemoteRunnable, value: Any, config: Any) -> Any:
    first, second = runnable.batch([value, value], config)
    assert first == second
    return first


def _stream(runnable: RemoteRunnable, value: Any, config: Any) -> Any:
    chunks = list(runnable.stream(value, config))
    assert len(chunks) > 1
    return "".join(chunks)


async def _ainvoke(runnable: RemoteRunnable, value: Any, config: Any) -> Any:
    return await runnable.ainvoke(value, config)


async def _abatch(runnable: RemoteRunnable, value: Any, config: Any) -> Any:
    first, second = await runnable.abatch([value, value], config)
    assert first == second
    return first


async def _astream(runnable: RemoteRunnable, value: Any, config: Any) -> Any:
    chunks = [chunk async for chunk in runnable.astream(value, config)]
    assert len(chunks) > 1
    return "".join(chunks)


CALLS = [
    pytest.param(_invoke, id="invoke"),
    pytest.param(_batch, id="batch"),
    pytest.param(_stream, id="stream"),
    pytest.param(_ainvoke, id="ainvoke"),
    pytest.param(_abatch, id="abatch"),
    pytest.param(_astream, id="astream"),
]


def remote_call(url: str, fn: Callable[..., Any], value: Any, config: Any = None) -> Any:
    """``fn(RemoteRunnable(url), value, config)``, closing the runnable's clients on the loop that used them.

    RemoteRunnable also registers a ``weakref.finalize`` that closes its clients through a thread pool whenever the
    garbage collector gets to it. Run by a collection inside another thread's ``ThreadPoolExecutor.submit`` (the
    model's worker thread, say), that finalizer deadlocks on the executor's lock and hangs the suite. The clients are
    closed here instead, so the runnable is made with a finalizer that has nothing left to do.
    """
    with mock.patch.object(langserve.client, "_close_clients", _nothing_to_close):
        runnable = RemoteRunnable(url)
    try:
        return _call(runnable, fn, value, config)
    finally:
        runnable.sync_client.close()


def _nothing_to_close(sync_client: httpx.Client, async_client: httpx.AsyncClient) -> None:
    """RemoteRunnable's finalizer in these tests: remote_call has closed both clients already."""


def _call(runnable: RemoteRunnable, fn: Callable[..., Any], value: Any, config: Any) -> Any:
    if not inspect.iscoroutinefunction(fn):
        try:
            return fn(runnable, value, config)
        finally:
            asyncio.run(runnable.async_client.aclose())

    async def main() -> Any:
        try:
            return await fn(runnable, value, config)
        finally:
            await runnable.async_client.aclose()

    return asyncio.run(main())


@pytest.mark.parametrize("fn", CALLS)
def test_remote_runnable_gets_the_flows_answer(loopback: tuple[str, Any], fn: Callable[..., Any]) -> None:
    url, _ = loopback
    assert remote_call(url + "/flows/echo/", fn, QUESTION) == ANSWER


@pytest.mark.parametrize("fn", CALLS)
def test_remote_runnable_with_a_session_keeps_a_conversation(loopback: tuple[str, Any], fn: Callable[..., Any]) -> None:
    url, app = loopback
    session = f"remote-{fn.__name__}"
    config = {"configurable": {"session_id": session}}
    assert remote_call(url + "/flows/chat/", fn, {"question": "remember this"}, config) == "noted, thanks"
    turns = asyncio.run(app.state.deps.store.load_turns(session, 10))  # the SQLite store serves any thread
    runs = 2 if "batch" in fn.__name__ else 1
    assert turns == [("human", "remember this"), ("ai", "noted, thanks")] * runs


@pytest.mark.parametrize("fn", CALLS)
@pytest.mark.parametrize(
    "flow, status",
    [("nope", 404), ("chat", 422), ("fails", 500)],
    ids=["unknown-flow", "chat-without-session", "flow-fails"],
)
def test_remote_runnable_raises_our_status(
    loopback: tuple[str, Any], fn: Callable[..., Any], flow: str, status: int
) -> None:
    url, _ = loopback
    with pytest.raises(httpx.HTTPStatusError) as raised:
        remote_call(f"{url}/flows/{flow}/", fn, QUESTION)
    assert raised.value.response.status_code == status


# -- 4. choosing the version ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, dict[str, str]]]:
    """A server that has built v1 (answers "one"; tags ``stable`` and annotated ``release``), then v2 (answers
    "two", the live head) and v3 (fails validation); ``side-tag`` names a commit off the branch, never built."""
    tmp = tmp_path_factory.mktemp("versions")
    remote = Remote.create(tmp)
    v1 = remote.commit({"flows/echo.json": echo_flow(answer="one")}, "one")
    remote.tag("stable", v1)
    remote.tag("release", v1, annotated=True)
    remote.push()
    remote.push_tags()
    with served(remote, tmp, pins="history") as harness:
        v2 = remote.publish({"flows/echo.json": echo_flow(answer="two")}, "two")
        assert harness.reconcile()["head"] == v2
        v3 = remote.commit({"flows/echo.json": broken_flow()}, "break echo")
        remote.git("checkout", "--quiet", "-b", "side")
        remote.commit({"flows/echo.json": echo_flow(answer="side")}, "never on main")
        remote.tag("side-tag")
        remote.git("checkout", "--quiet", "main")
        remote.push()
        remote.push_tags()
        assert harness.reconcile()["head"] == v3
        yield harness, {"v1": v1, "v2": v2, "v3": v3}


def pin_request(how: str, pin: str, **configurable: Any) -> dict[str, Any]:
    """Keyword arguments of an invoke pinned by the X-Flow-Version header or by config.configurable.flow_version."""
    if how == "header":
        return {
            "headers": {"X-Flow-Version": pin},
            "json": {"input": QUESTION, "config": {"configurable": configurable}},
        }
    return {"json": {"input": QUESTION, "config": {"configurable": {"flow_version": pin, **configurable}}}}


PIN_BY = pytest.mark.parametrize("how", ["header", "config"])
ANSWERS = {"v1": "one", "v2": "two"}


@PIN_BY
@pytest.mark.parametrize(
    "pin, version, ref",
    [
        (lambda v: v["v1"], "v1", None),
        (lambda v: v["v1"][:7], "v1", None),
        (lambda v: v["v2"].upper(), "v2", None),
        (lambda v: "main", "v2", "main"),
        (lambda v: "stable", "v1", "stable"),
        (lambda v: "release", "v1", "release"),
    ],
    ids=["full-sha", "short-sha", "upper-case-sha", "branch", "tag", "annotated-tag"],
)
def test_explicit_pin_chooses_the_version(
    versions: tuple[Served, dict[str, str]],
    how: str,
    pin: Callable[[dict[str, str]], str],
    version: str,
    ref: str | None,
) -> None:
    harness, shas = versions
    response = harness.client.post("/flows/echo/invoke", **pin_request(how, pin(shas)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["output"] == ANSWERS[version]
    assert body["metadata"]["flow_version"] == shas[version] == response.headers["x-flow-version"]
    assert body["metadata"]["ref"] == ref


def test_without_a_pin_the_last_good_head_serves(versions: tuple[Served, dict[str, str]]) -> None:
    harness, shas = versions
    response = harness.invoke("echo", QUESTION)
    assert response.json()["output"] == "two"
    assert response.headers["x-flow-version"] == shas["v2"]


@pytest.mark.parametrize(
    "method, path, kwargs",
    [
        ("POST", "/flows/echo/batch", {"json": {"inputs": [QUESTION]}}),
        ("POST", "/flows/echo/stream", {"json": {"input": QUESTION}}),
        ("GET", "/flows/echo/input_schema", {}),
        ("GET", "/flows/echo/output_schema", {}),
    ],
    ids=["batch", "stream", "input-schema", "output-schema"],
)
def test_header_pin_applies_to_every_flow_endpoint(
    versions: tuple[Served, dict[str, str]], method: str, path: str, kwargs: dict[str, Any]
) -> None:
    harness, shas = versions
    response = harness.client.request(method, path, headers={"X-Flow-Version": "stable"}, **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["x-flow-version"] == shas["v1"]
    if path.endswith("/batch"):
        assert response.json()["output"] == ["one"]
        assert response.json()["metadata"]["ref"] == "stable"
    if path.endswith("/stream"):
        events = events_of(response.text)
        assert events[0][1]["ref"] == "stable"
        assert "".join(data for kind, data in events if kind == "data") == "one"


@PIN_BY
@pytest.mark.parametrize(
    "pin, message",
    [
        ("deadbeef", "'deadbeef' names no version of flow 'echo'"),
        ("0" * 40, "'0000000000000000000000000000000000000000' names no version of flow 'echo'"),
        ("no-such-ref", "'no-such-ref' names no version of flow 'echo'"),
        ("side-tag", "'side-tag' names no version of flow 'echo'"),  # not "not built": nothing about unmerged commits
        ("side", "'side' names no version of flow 'echo'"),
        ("main~1", "'main~1' names no version of flow 'echo'"),
    ],
    ids=[
        "unknown-short-sha",
        "unknown-full-sha",
        "unknown-ref",
        "tag-off-the-branch",
        "branch-not-merged",
        "revision-expression",
    ],
)
def test_pin_to_an_unknown_version_is_404(
    versions: tuple[Served, dict[str, str]], how: str, pin: str, message: str
) -> None:
    harness, _ = versions
    response = harness.client.post("/flows/echo/invoke", **pin_request(how, pin))
    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == "unknown-version"
    assert message in error["message"]


@PIN_BY
@pytest.mark.parametrize("length", [40, 7], ids=["full-sha", "short-sha"])
def test_pin_to_a_failed_commit_is_not_servable(versions: tuple[Served, dict[str, str]], how: str, length: int) -> None:
    harness, shas = versions
    response = harness.client.post("/flows/echo/invoke", **pin_request(how, shas["v3"][:length]))
    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == "version-not-servable"
    assert shas["v3"][:12] in error["message"]


@PIN_BY
def test_explicit_pin_wins_over_the_sessions_pin_and_does_not_move_it(
    versions: tuple[Served, dict[str, str]], how: str
) -> None:
    harness, shas = versions
    session = f"wins-{how}"
    first = harness.invoke("echo", QUESTION, headers={"X-Flow-Session": session})
    assert first.json()["output"] == "two"  # the session is pinned to v2, the head
    assert pin_of(harness, "echo", session) == shas["v2"]
    pinned = harness.client.post("/flows/echo/invoke", **pin_request(how, shas["v1"], session_id=session))
    again = harness.invoke("echo", QUESTION, config={"configurable": {"session_id": session}})
    assert pinned.json()["output"] == "one"
    assert pinned.headers["x-flow-version"] == shas["v1"]
    assert again.json()["output"] == "two"
    assert pin_of(harness, "echo", session) == shas["v2"]


@pytest.mark.parametrize("policy", ["current", "history"])
@pytest.mark.parametrize("pin", [lambda v1: "stable", lambda v1: v1], ids=["tag", "full-sha"])
def test_a_pin_never_reaches_a_commit_that_never_went_live(
    remote: Remote, tmp_path: Path, pin: Callable[[str], str], policy: str
) -> None:
    """Issue 11: pins reach live versions only. A server that starts after ``stable`` was tagged has only served the
    head: ``stable`` (not in any route) and the older sha never went live here, so neither is reachable."""
    v1 = remote.commit({"flows/echo.json": echo_flow(answer="one")}, "one")
    remote.tag("stable", v1)
    remote.publish({"flows/echo.json": echo_flow(answer="two")}, "two")
    remote.push_tags()
    with served(remote, tmp_path, pins=policy) as harness:
        response = harness.invoke("echo", QUESTION, headers={"X-Flow-Version": pin(v1)})
    assert response.status_code == 404, response.text
    assert error_of(response)["code"] == "unknown-version"
    assert v1 not in response.text or pin(v1) == v1


@pytest.mark.parametrize("how", ["header", "config"])
def test_session_stays_on_the_version_it_started_on(remote: Remote, tmp_path: Path, how: str) -> None:
    def ask(harness: Served, session: str | None) -> dict[str, Any]:
        if session is None:
            response = harness.invoke("echo", QUESTION)
        elif how == "header":
            response = harness.invoke("echo", QUESTION, headers={"X-Flow-Session": session})
        else:
            response = harness.invoke("echo", QUESTION, config={"configurable": {"session_id": session}})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert body["metadata"]["flow_version"] == response.headers["x-flow-version"]
        return body

    v1 = remote.publish({"flows/echo.json": echo_flow(answer="one")})
    with served(remote, tmp_path) as harness:
        assert ask(harness, "old")["output"] == "one"
        v2 = remote.publish({"flows/echo.json": echo_flow(answer="two")})
        assert harness.reconcile()["head"] == v2
        old = ask(harness, "old")
        assert (old["output"], old["metadata"]["flow_version"]) == ("one", v1)
        new = ask(harness, "new")
        assert (new["output"], new["metadata"]["flow_version"], new["metadata"]["ref"]) == ("two", v2, "main")
        assert ask(harness, None)["output"] == "two"
        assert (pin_of(harness, "echo", "old"), pin_of(harness, "echo", "new")) == (v1, v2)


# -- 5. errors ------------------------------------------------------------------------------------------------------


def _chunked() -> Iterator[bytes]:
    yield b'{"input": {"question": "'
    for _ in range(LIMIT // 64 + 1):
        yield b"x" * 64
    yield b'"}}'


JSON = {"content-type": "application/json"}
TEXT = {"content-type": "text/plain"}


def nested(depth: int) -> Any:
    """A value nesting lists ``depth`` levels deep."""
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


def bad(case: str, status: int, code: str, path: str, method: str = "POST", **request: Any) -> Any:
    """One row of the bad-request table; a callable value in ``request`` is called per use (a generator body)."""
    return pytest.param(method, path, request, status, code, id=case)


def prepared(request: dict[str, Any]) -> dict[str, Any]:
    return {key: value() if callable(value) else value for key, value in request.items()}


ASK = {"input": QUESTION}
PIN_NOPE = {"X-Flow-Version": "nope"}
BAD_REQUESTS = [
    bad("unknown-flow", 404, "unknown-flow", "/flows/nope/invoke", json=ASK),
    bad("unknown-flow-batch", 404, "unknown-flow", "/flows/nope/batch", json={"inputs": [QUESTION]}),
    bad("unknown-flow-stream", 404, "unknown-flow", "/flows/nope/stream", json=ASK),
    bad("unknown-flow-schema", 404, "unknown-flow", "/flows/nope/input_schema", "GET"),
    bad("unknown-route", 404, "not-found", "/no/such/route", "GET"),
    bad("wrong-method", 405, "method-not-allowed", "/flows/echo/invoke", "GET"),
    bad("wrong-method-view", 405, "method-not-allowed", "/versions", "DELETE"),
    bad("malformed-json", 422, "invalid-json", "/flows/echo/invoke", content=b'{"input": ', headers=JSON),
    bad("empty-body", 422, "invalid-json", "/flows/echo/invoke", content=b"", headers=JSON),
    bad("malformed-json-stream", 422, "invalid-json", "/flows/echo/stream", content=b"nope", headers=JSON),
    bad("text-plain", 415, "unsupported-media-type", "/flows/echo/invoke", content=b'{"input": {}}', headers=TEXT),
    bad("no-content-type", 415, "unsupported-media-type", "/flows/echo/batch", content=b'{"inputs": []}'),
    bad("form-stream", 415, "unsupported-media-type", "/flows/echo/stream", data={"input": "hi"}),
    bad("too-deep", 422, "too-deep", "/flows/echo/invoke", json={"input": {"question": nested(70)}}),
    bad("body-not-an-object", 422, "bad-body", "/flows/echo/invoke", json=[QUESTION]),
    bad("batch-body-not-an-object", 422, "bad-body", "/flows/echo/batch", json="inputs"),
    bad("missing-input", 422, "bad-body", "/flows/echo/invoke", json={"inputs": QUESTION}),
    bad("missing-input-stream", 422, "bad-body", "/flows/echo/stream", json={}),
    bad("batch-inputs-not-a-list", 422, "bad-body", "/flows/echo/batch", json={"inputs": QUESTION}),
    bad("input-wrong-type", 422, "bad-input", "/flows/echo/invoke", json={"input": {"question": 7}}),
    bad("input-missing-field", 422, "bad-input", "/flows/echo/invoke", json={"input": {}}),
    bad("input-not-an-object-stream", 422, "bad-input", "/flows/echo/stream", json={"input": "hi"}),
    bad("batch-one-bad-input", 422, "bad-input", "/flows/echo/batch", json={"inputs": [QUESTION, {}]}),
    bad("bad-config", 422, "bad-config", "/flows/echo/invoke", json={**ASK, "config": {"configurable": "x"}}),
    bad("batch-config-count", 422, "bad-config", "/flows/echo/batch", json={"inputs": [QUESTION] * 2, "config": [{}]}),
    bad("too-large-declared", 413, "body-too-large", "/flows/echo/invoke", json={"input": {"question": "x" * LIMIT}}),
    bad("too-large-chunked", 413, "body-too-large", "/flows/echo/invoke", content=_chunked, headers=JSON),
    bad("too-large-chunked-stream", 413, "body-too-large", "/flows/echo/stream", content=_chunked, headers=JSON),
    bad("unknown-version", 404, "unknown-version", "/flows/echo/invoke", json=ASK, headers=PIN_NOPE),
    bad("unknown-version-stream", 404, "unknown-version", "/flows/echo/stream", json=ASK, headers=PIN_NOPE),
]


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """echo at one commit, behind a server with a small body limit; shared by the tests that change nothing."""
    tmp = tmp_path_factory.mktemp("echo")
    remote = Remote.create(tmp)
    remote.publish({"flows/echo.json": echo_flow()})
    with served(remote, tmp, max_body_bytes=LIMIT) as harness:
        yield harness


@pytest.mark.parametrize("method, path, sent, status, code", BAD_REQUESTS)
def test_bad_request_gets_its_status_and_error_code(
    echo_server: Served, method: str, path: str, sent: dict[str, Any], status: int, code: str
) -> None:
    response = echo_server.client.request(method, path, **prepared(sent))
    assert response.status_code == status, response.text
    assert error_of(response)["code"] == code


@pytest.mark.parametrize("method, path, sent, status, code", BAD_REQUESTS)
def test_bad_request_changes_nothing(
    echo_server: Served, method: str, path: str, sent: dict[str, Any], status: int, code: str
) -> None:
    def views() -> tuple[Any, ...]:
        return echo_server.client.get("/versions").json(), echo_server.client.get("/history").json()

    before = views()
    request = prepared(sent)
    session = f"visitor-{uuid.uuid4()}"
    headers = {"X-Flow-Session": session, **request.pop("headers", {})}
    assert echo_server.client.request(method, path, headers=headers, **request).status_code == status
    assert views() == before
    assert pin_of(echo_server, "nope" if "/nope/" in path else "echo", session) is None


def test_wrong_method_says_which_methods_are_allowed(echo_server: Served) -> None:
    response = echo_server.client.get("/flows/echo/invoke")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize(
    "value, expected",
    [
        ({"question": 918273645}, "question: Input should be a valid string"),
        ({"other": "s3nt1nel-value"}, "question: Field required"),
    ],
    ids=["wrong-type", "missing-field"],
)
def test_bad_input_names_the_field_but_not_the_value(echo_server: Served, value: Any, expected: str) -> None:
    response = echo_server.invoke("echo", value)
    assert response.status_code == 422
    message = error_of(response)["message"]
    assert expected in message
    assert "918273645" not in message and "s3nt1nel" not in message


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"json": {"input": {"question": "x" * LIMIT}}}, f"; the limit is {LIMIT}"),
        ({"content": _chunked, "headers": JSON}, f"larger than the limit of {LIMIT} bytes"),
    ],
    ids=["content-length", "chunked"],
)
def test_too_large_body_is_refused_before_it_runs(echo_server: Served, kwargs: dict[str, Any], message: str) -> None:
    request = echo_server.client.build_request("POST", "/flows/echo/invoke", **prepared(kwargs))
    assert ("content-length" in request.headers) is ("json" in kwargs)  # the chunked body declares no length
    response = echo_server.client.send(request)
    assert response.status_code == 413
    assert message in error_of(response)["message"]


@pytest.mark.parametrize(
    "config, names",
    [
        ("not-an-object", "config"),
        ({"configurable": ["a"]}, "config.configurable must be an object"),
        ({"tags": "a"}, "config.tags must be a list"),
        ({"metadata": ["a"]}, "config.metadata must be an object"),
        ({"run_name": 5}, "config.run_name must be a string"),
        ({"configurable": {"session_id": {"id": 1}}}, "session_id"),
        ({"configurable": {"user_id": ["ada"]}}, "user_id"),
        ({"configurable": {"flow_version": 12345}}, "flow_version"),
    ],
    ids=["config", "configurable", "tags", "metadata", "run-name", "session-id", "user-id", "flow-version"],
)
def test_bad_config_types_are_422(echo_server: Served, config: Any, names: str) -> None:
    response = echo_server.invoke("echo", QUESTION, config=config)
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["code"] == "bad-config"
    assert names in error["message"]


def test_config_keys_a_client_may_not_set_are_dropped(echo_server: Served) -> None:
    config = {"callbacks": "x", "recursion_limit": "x", "max_concurrency": {}, "run_id": "not-a-uuid", "tags": ["t"]}
    response = echo_server.invoke("echo", QUESTION, config=config)
    assert response.status_code == 200, response.text
    assert response.json()["output"] == "one"
    assert response.json()["metadata"]["run_id"] != "not-a-uuid"


def test_before_the_first_version_flow_requests_are_503(remote: Remote, tmp_path: Path) -> None:
    with served(remote, tmp_path, wait=False) as harness:
        wait_until(lambda: harness.deps.reconciler.status.last_error is not None, what="first fetch")
        response = harness.invoke("echo", QUESTION)
        listed = harness.client.get("/flows")
    assert response.status_code == 503
    assert error_of(response)["code"] == "not-ready"
    assert listed.json() == {"flows": [], "head": None}


# -- 6. flows that fail at run time, and secrets --------------------------------------------------------------------

FAILED_RUN = "the flow failed while running (run "


def test_flow_failing_at_run_time_is_500_without_details(remote: Remote, tmp_path: Path) -> None:
    remote.publish({"flows/fails.json": json_flow("fails", "")})
    with served(remote, tmp_path) as harness:
        invoked = harness.invoke("fails", QUESTION)
        batched = harness.client.post("/flows/fails/batch", json={"inputs": [QUESTION]})
        streamed = harness.client.post("/flows/fails/stream", json={"input": QUESTION})
    for response in (invoked, batched):
        assert response.status_code == 500
        error = error_of(response)
        assert error["code"] == "flow-failed"
        assert error["message"].startswith(FAILED_RUN) and error["message"].endswith(")")
        assert is_run_id(error["message"].removeprefix(FAILED_RUN)[:-1])
        for detail in ("Traceback", "OutputParserException", "ValueError", "Invalid json", 'File "'):
            assert detail not in response.text
    assert streamed.status_code == 200
    events = events_of(streamed.text)
    assert [kind for kind, _ in events] == ["metadata", "error"]  # no "end" after an error, as in LangServe
    run_id = events[0][1]["run_id"]
    assert events[1][1] == {"status_code": 500, "message": f"{FAILED_RUN}{run_id})"}


def test_secrets_never_leak(remote: Remote, tmp_path: Path) -> None:
    """A flow that would answer a secret (its model's responses are `$env` references) is refused, not served; the
    secret appears in no answer (tests/test_server_secrets.py does the same against a real `gitops-flow serve`)."""
    token = "tok-7f3a9c-do-not-show"
    reveal = linear(
        "reveal",
        ("prompt", "PromptTemplate", {"template": "Q: {question}"}),
        ("llm", "FakeChatModel", {"responses": [{"$env": "MY_TOKEN"}]}),
        ("answer", "StrOutputParser", {}),
    )
    remote.publish({"flows/echo.json": echo_flow()})
    config = settings(remote, tmp_path, allowed_secrets=("MY_TOKEN",))
    app = create_app(config, secrets={"MY_TOKEN": token})
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, what="readiness")
        bad = remote.publish({"flows/reveal.json": reveal})
        client.post("/admin/reconcile", headers=ADMIN)
        seen = [
            client.post("/flows/reveal/invoke", json={"input": QUESTION}),
            client.post("/flows/reveal/batch", json={"inputs": [QUESTION]}),
            client.post("/flows/reveal/stream", json={"input": QUESTION}),
            client.get("/flows/reveal/input_schema"),
            client.post("/flows/echo/invoke", json={"input": QUESTION}),
            client.get("/flows"),
            client.get("/versions"),
            client.get("/history"),
            client.get("/readyz"),
        ]
    assert seen[0].status_code == 404 and error_of(seen[0])["code"] in ("unknown-flow", "version-not-servable")
    assert seen[4].status_code == 200
    [version] = [v for v in seen[6].json()["versions"] if v["sha"] == bad]
    recorded = [*version["problems"], *(p for found in version.get("failed", {}).values() for p in found)]
    problems = [(p["code"], p["path"]) for p in recorded if p["file"] == "flows/reveal.json"]
    assert problems == [("env-not-secret", "$.nodes[1].params.responses[0]")]
    for response in seen:
        assert token not in response.text, response.request.url


# -- 7. chat history ------------------------------------------------------------------------------------------------

CHATS = [
    pytest.param("chat", {"flows/chat.json": chat_flow()}, False, ("first answer", "second answer"), id="own-flow"),
    pytest.param(
        "assistant", example_files(), True, ("Nice to meet you, Ada!", "Nice to meet you, Ada!"), id="assistant-example"
    ),
]


@pytest.mark.parametrize("flow, files, fake_models, answers", CHATS)
def test_chat_flow_keeps_each_sessions_turns(
    remote: Remote, tmp_path: Path, flow: str, files: dict[str, str], fake_models: bool, answers: tuple[str, str]
) -> None:
    remote.publish(files)
    with served(remote, tmp_path, fake_models=fake_models) as harness:
        refused = [
            harness.client.post(f"/flows/{flow}/invoke", json={"input": QUESTION}),
            harness.client.post(f"/flows/{flow}/batch", json={"inputs": [QUESTION]}),
        ]
        for response in refused:
            assert response.status_code == 422
            assert error_of(response)["code"] == "missing-session"
        missing = error_of(refused[0])["message"]
        stream = harness.client.post(f"/flows/{flow}/stream", json={"input": QUESTION})
        assert events_of(stream.text)[1:] == [("error", {"status_code": 422, "message": missing})]

        ada = {"X-Flow-Session": "ada"}
        first = harness.invoke(flow, {"question": "My name is Ada."}, headers=ada)
        bob = harness.invoke(flow, {"question": "I am Bob."}, config={"configurable": {"session_id": "bob"}})
        second = harness.client.post(f"/flows/{flow}/stream", json={"input": {"question": "Who am I?"}}, headers=ada)
        assert first.json()["output"] == answers[0]
        assert bob.json()["output"] == answers[1]
        assert "".join(data for kind, data in events_of(second.text) if kind == "data") == answers[0]

        store = harness.deps.store
        assert call(harness, store.load_turns, "ada", 10) == [
            ("human", "My name is Ada."),
            ("ai", answers[0]),
            ("human", "Who am I?"),
            ("ai", answers[0]),
        ]
        assert call(harness, store.load_turns, "bob", 10) == [("human", "I am Bob."), ("ai", answers[1])]
        assert call(harness, store.load_turns, "nobody", 10) == []


def test_chat_flow_refuses_input_without_its_text_as_bad_input(remote: Remote, tmp_path: Path) -> None:
    remote.publish({"flows/chat.json": chat_flow()})
    with served(remote, tmp_path) as harness:
        response = harness.invoke("chat", {"text": "hi"}, headers={"X-Flow-Session": "ada"})
        assert call(harness, harness.deps.store.load_turns, "ada", 10) == []
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["code"] == "bad-input"
    assert "question" in error["message"]


@pytest.mark.parametrize("session_by", ["header", "config"])
def test_pinned_chat_request_keeps_its_session(remote: Remote, tmp_path: Path, session_by: str) -> None:
    sha = remote.publish({"flows/chat.json": chat_flow()})
    headers = {"X-Flow-Version": sha}
    body: dict[str, Any] = {"input": QUESTION}
    if session_by == "header":
        headers["X-Flow-Session"] = "ada"
    else:
        body["config"] = {"configurable": {"session_id": "ada"}}
    with served(remote, tmp_path) as harness:
        response = harness.client.post("/flows/chat/invoke", json=body, headers=headers)
        turns = call(harness, harness.deps.store.load_turns, "ada", 10)
    assert response.status_code == 200, response.text
    assert response.json()["output"] == "first answer"
    assert turns == [("human", "hi"), ("ai", "first answer")]


# -- 8. views -------------------------------------------------------------------------------------------------------


def test_flows_lists_names_with_the_live_version(remote: Remote, tmp_path: Path) -> None:
    sha = remote.publish({"flows/echo.json": echo_flow(description="Says one."), "flows/chat.json": chat_flow()})
    with served(remote, tmp_path) as harness:
        response = harness.client.get("/flows")
        bad = remote.publish({"flows/echo.json": broken_flow()}, "break echo")
        harness.reconcile()
        after = harness.client.get("/flows").json()
    assert response.status_code == 200
    live = [{"sha": sha, "serving": sha, "ref": "main", "weight": 100.0, "state": "live"}]

    def listed(name: str, description: str) -> dict[str, Any]:
        state = {"state": "live", "serving": sha, "summary": f"{name} live at {sha[:12]}"}
        return {"name": name, "description": description, "route": "default", **state, "versions": live}

    assert response.json() == {"flows": [listed("chat", ""), listed("echo", "Says one.")], "head": sha}
    chat, echo = after["flows"]
    assert chat["summary"] == f"chat live at {bad[:12]}" and chat["versions"][0]["serving"] == bad
    assert echo["summary"] == f"echo failed at {bad[:12]}, serving {sha[:12]}"
    assert (echo["state"], echo["serving"], echo["failed_at"]) == ("failed", sha, bad)
    assert [p["code"] for p in echo["problems"]] == ["unknown-component"]
    assert echo["versions"] == [{"sha": bad, "serving": sha, "ref": "main", "weight": 100.0, "state": "live"}]


def test_versions_and_history_show_every_commit(remote: Remote, tmp_path: Path) -> None:
    good = remote.publish({"flows/echo.json": echo_flow(), "flows/chat.json": chat_flow()}, "add echo and chat")
    with served(remote, tmp_path) as harness:
        bad = remote.publish({"flows/echo.json": broken_flow()}, "break echo\n\nOn purpose.")
        assert harness.reconcile() == {"changed": True, "head": bad, "new": [bad], "error": None}
        versions = harness.client.get("/versions", headers=ADMIN).json()
        anonymous = harness.client.get("/versions").json()
        history = harness.client.get("/history").json()["events"]
        latest = harness.client.get("/history", params={"limit": "1"}).json()["events"]
    assert [v["email"] for v in anonymous["versions"]] == [None, None]  # authors' emails are for token holders
    assert [{**v, "email": None} for v in versions["versions"]] == anonymous["versions"]
    assert versions["source"]["url"] == remote.url
    assert versions["source"]["branch"] == "main"
    assert versions["source"]["fetches"] == 2
    assert versions["source"]["last_error"] is None
    failed, ready = versions["versions"]
    assert {k: failed[k] for k in ("sha", "author", "email", "time", "message", "status", "changed", "live")} == {
        "sha": bad,
        "author": "Ada Lovelace",
        "email": "ada@example.com",
        "time": EPOCH + 120,
        "message": "break echo\n\nOn purpose.",
        "status": "ready",  # the commit: its other flow, chat, goes live
        "changed": ["echo"],
        "live": True,
    }
    assert failed["problems"] == []  # nothing concerns the whole commit
    assert [(p["file"], p["code"]) for p in failed["failed"]["echo"]] == [("flows/echo.json", "unknown-component")]
    assert failed["carried"] == {"echo": good}  # echo keeps serving its last good build
    assert failed["flows"] == ["chat"]
    assert {k: ready[k] for k in ("sha", "time", "message", "status", "changed", "problems", "failed", "live")} == {
        "sha": good,
        "time": EPOCH + 60,
        "message": "add echo and chat",
        "status": "ready",
        "changed": ["chat", "echo"],
        "problems": [],
        "failed": {},
        "live": False,
    }
    # the commit changed only echo, which failed: nothing new went live, so there is no "deployed" for it
    assert [(e["event"], e["sha"], e.get("flow")) for e in history] == [
        ("failed", bad, "echo"),
        ("deployed", good, None),
    ]
    assert history[0]["problems"] == failed["failed"]["echo"]
    assert history[0]["serving"] == good
    assert latest == history[:1]


@pytest.mark.parametrize(
    "limit",
    ["0", "-1", "abc", "", "1.5", "1001", "²"],
    ids=["zero", "negative", "word", "empty", "decimal", "too-many", "superscript"],
)
def test_history_refuses_a_bad_limit(echo_server: Served, limit: str) -> None:
    response = echo_server.client.get("/history", params={"limit": limit})
    assert response.status_code == 400
    assert error_of(response)["code"] == "bad-limit"


@pytest.mark.parametrize(
    "repo, reason",
    [(None, "branch 'main' does not exist in {url}"), ("missing.git", "fetch of {url} failed")],
    ids=["branch-without-commits", "no-repository"],
)
def test_readyz_is_503_until_a_good_version_is_loaded(
    remote: Remote, tmp_path: Path, repo: str | None, reason: str
) -> None:
    url = remote.url if repo is None else str(tmp_path / repo)
    with served_once(remote, tmp_path, url) as harness:
        wait_until(lambda: harness.client.get("/readyz").json()["source"]["last_error"] is not None, what="a fetch")
        health = harness.client.get("/healthz")
        ready = harness.client.get("/readyz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    assert ready.status_code == 503
    body = ready.json()
    assert body["ready"] is False
    assert body["version"] is None
    assert body["source"]["url"] == url
    assert reason.format(url=url) in body["source"]["last_error"]


def test_readyz_turns_200_once_the_branch_is_loaded_and_lists_the_flows_that_failed(
    remote: Remote, tmp_path: Path
) -> None:
    with served(remote, tmp_path, wait=False) as harness:
        wait_until(lambda: harness.client.get("/readyz").json()["source"]["last_error"] is not None, what="a fetch")
        assert harness.client.get("/readyz").status_code == 503
        bad = remote.publish({"flows/echo.json": broken_flow(), "flows/chat.json": chat_flow()})
        assert harness.reconcile()["head"] == bad
        ready = harness.client.get("/readyz")  # a failed flow holds back neither the server nor the other flows
        assert (ready.status_code, ready.json()["failed_flows"]) == (200, ["echo"])
        chat = harness.invoke("chat", {"question": "hi"}, headers={"X-Flow-Session": "s1"})
        assert (chat.status_code, chat.headers["x-flow-version"]) == (200, bad)
        refused = harness.invoke("echo", QUESTION)
        assert refused.status_code == 404 and error_of(refused)["code"] == "version-not-servable"
        assert f"flow 'echo' failed at {bad[:12]} (flows/echo.json:" in error_of(refused)["message"]
        good = remote.publish({"flows/echo.json": echo_flow()})
        assert harness.reconcile()["head"] == good
        ready = harness.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    assert ready.json()["version"] == good
    assert ready.json()["failed_flows"] == []
    assert ready.json()["source"]["last_error"] is None


# -- 9. the operator endpoint ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token, headers, status, code",
    [
        (None, ADMIN, 403, "admin-disabled"),
        ("test-admin-token", {}, 401, "unauthorized"),
        ("test-admin-token", {"Authorization": "Bearer wrong-token"}, 401, "unauthorized"),
        ("test-admin-token", {"Authorization": "test-admin-token"}, 401, "unauthorized"),
        ("test-admin-token", {"Authorization": "Basic test-admin-token"}, 401, "unauthorized"),
    ],
    ids=["no-token-configured", "no-header", "wrong-token", "no-scheme", "wrong-scheme"],
)
def test_admin_reconcile_refused(
    remote: Remote, tmp_path: Path, token: str | None, headers: dict[str, str], status: int, code: str
) -> None:
    first = remote.publish({"flows/echo.json": echo_flow(answer="one")})
    with served(remote, tmp_path, admin_token=token) as harness:
        remote.publish({"flows/echo.json": echo_flow(answer="two")})
        response = harness.client.post("/admin/reconcile", headers=headers)
        assert harness.client.get("/readyz").json()["version"] == first  # nothing was fetched
        assert harness.deps.reconciler.status.fetches == 1
    assert response.status_code == status
    error = error_of(response)
    assert error["code"] == code
    assert "test-admin-token" not in error["message"]


def test_admin_reconcile_answers_with_the_outcome(remote: Remote, tmp_path: Path) -> None:
    first = remote.publish({"flows/echo.json": echo_flow(answer="one")})
    with served(remote, tmp_path) as harness:
        unchanged = harness.client.post("/admin/reconcile", headers=ADMIN)
        second = remote.publish({"flows/echo.json": echo_flow(answer="two")})
        changed = harness.client.post("/admin/reconcile", headers=ADMIN)
        answer = harness.invoke("echo", QUESTION).json()["output"]
    assert unchanged.status_code == 200
    assert unchanged.json() == {"changed": False, "head": first, "new": [], "error": None}
    assert changed.status_code == 200
    assert changed.json() == {"changed": True, "head": second, "new": [second], "error": None}
    assert answer == "two"


def test_admin_reconcile_reports_a_failing_source_as_502(remote: Remote, tmp_path: Path) -> None:
    sha = remote.publish({"flows/echo.json": echo_flow()})
    with served_once(remote, tmp_path) as harness:
        harness.wait_ready()
        remote.bare.rename(tmp_path / "gone.git")
        response = harness.client.post("/admin/reconcile", headers=ADMIN)
        still = harness.invoke("echo", QUESTION)
    assert response.status_code == 502
    body = response.json()
    assert (body["changed"], body["head"], body["new"]) == (False, sha, [])
    assert remote.url in body["error"]
    assert still.status_code == 200  # the last good version keeps serving
