"""Secrets never leave the server: a merged flow reads only the secrets it may, and no secret value appears in any
answer, history entry, state file or log line, even when a flow or a careless component quotes one.

The attacks of issue 11 run against a real `gitops-flow serve` (tests/process.py) whose environment holds known
secret values; each is its own regression test. One flow per commit, so the tests hold whether a failing flow fails
its whole commit or only itself.
"""

from __future__ import annotations

import http.server
import io
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from gitops_flow.app import create_app
from gitops_flow.cli import main as cli
from gitops_flow.cli import process
from gitops_flow.components.base import Component
from gitops_flow.githost.github_webhook import sign
from gitops_flow.stores.memory import MemoryStore
from tests.gitrepo import Remote
from tests.helpers import registry_with
from tests.operator_components import leaky
from tests.process import ADMIN, ADMIN_TOKEN, ServeProcess, serve_process
from tests.served import Served, echo_flow, settings

DATA = Path(__file__).resolve().parent / "data"
QUESTION = {"question": "hi"}
# what the server's environment holds: an allowed provider key, the server's own secrets, and secrets of the
# machine that no flow may read
OPENAI_KEY = "sk-openai-Tq7Lw2Zx9Rv4Nc8Hm3Jd"
ENVIRONMENT = {
    "OPENAI_API_KEY": OPENAI_KEY,
    "ANTHROPIC_API_KEY": "sk-ant-Pf4Kd8Ws1Yb6Xe3Gu9Qa",
    "GITOPS_FLOW_WEBHOOK_SECRET": "whsec-Mz5Rc2Vt8Ln1Bh7Kp4",
    "AWS_SECRET_ACCESS_KEY": "aws-Jx3Dq9Wm6Hs2Fv8Ty1Pe",
    "DATABASE_PASSWORD": "db-Gk7Nb4Lc1Zr5Xw9Ma2",
}
SECRET_VALUES = [*ENVIRONMENT.values(), ADMIN_TOKEN]


def flow(name: str, *nodes: tuple[str, str, dict[str, Any]]) -> str:
    """A chain of (id, component, params) nodes."""
    listed = [{"id": i, "component": c, "params": p} for i, c, p in nodes]
    edges = [{"source": a["id"], "target": b["id"]} for a, b in zip(listed, listed[1:], strict=False)]
    return json.dumps({"version": 1, "name": name, "nodes": listed, "edges": edges}, indent=2)


PROMPT = ("prompt", "PromptTemplate", {"template": "Q: {question}"})
PARSE = ("answer", "StrOutputParser", {})


def reveal_flow() -> str:
    """Issue 11: a fake model whose answers are the server's admin token and the machine's AWS key."""
    responses = [{"$env": "GITOPS_FLOW_ADMIN_TOKEN"}, {"$env": "AWS_SECRET_ACCESS_KEY"}]
    return flow("reveal", PROMPT, ("llm", "FakeChatModel", {"responses": responses}), PARSE)


def model_name_flow() -> str:
    """Issue 11: a model named by a secret, so that the build's "cannot tell the provider of model ..." quotes it."""
    params = {"model": {"$env": "OPENAI_API_KEY"}, "api_key": {"$env": "OPENAI_API_KEY"}}
    return flow("model-name", PROMPT, ("llm", "ChatModel", params), PARSE)


def base_url_flow(url: str) -> str:
    """Issue 11: a model pointed at the author's own endpoint, carrying the server's key in its Authorization."""
    params = {"model": "openai:gpt-4o-mini", "base_url": url, "api_key": {"$env": "OPENAI_API_KEY"}}
    return flow("base-url", PROMPT, ("llm", "ChatModel", params), PARSE)


def langflow_flow() -> str:
    """A LangFlow export whose model's key is a global variable named like the server's admin token."""
    data = json.loads((DATA / "langflow" / "basic-prompting.json").read_text())
    key = data["data"]["nodes"][5]["data"]["node"]["template"]["api_key"]
    key.update(value="GITOPS_FLOW_ADMIN_TOKEN", load_from_db=True)
    return json.dumps(data, indent=2)


def leaky_flow(name: str = "leaky", variable: str = "OPENAI_API_KEY") -> str:
    return flow(name, ("call", "Leaky", {"api_key": {"$env": variable}}))


COMPONENTS = """\
components:
  Leaky:
    target: tests.operator_components:leaky
    secrets: {api_key: [OPENAI_API_KEY]}
  Fragile:
    target: tests.operator_components:fragile
    secrets: {api_key: [OPENAI_API_KEY]}
  Search:
    target: tests.operator_components:leaky
    secrets: [api_key]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One real server for the attack tests, serving an ordinary flow; each test pushes its attack and removes it."""
    tmp_path = tmp_path_factory.mktemp("attacks")
    remote = Remote.create(tmp_path)
    remote.commit({"flows/echo.json": echo_flow()}, "an ordinary flow")
    remote.push()
    components = tmp_path / "components.yaml"
    components.write_text(COMPONENTS)
    with serve_process(remote, tmp_path, env=ENVIRONMENT, args=["--components", str(components)]) as process:
        yield process
        assert_no_secret(process.log_text(), "the server's log")


def line_of(document: str, needle: str) -> int:
    """The line of ``document`` where ``needle`` first appears: where a problem about it must point."""
    return document[: document.index(needle)].count("\n") + 1


def ref_line(document: str, name: str) -> int:
    """The line where the ``{"$env": name}`` object opens: where a problem about the reference must point."""
    opens = document.rindex("{", 0, document.index(f'"$env": "{name}"'))
    return document[:opens].count("\n") + 1


def assert_no_secret(text: str | bytes, where: str) -> None:
    for value in SECRET_VALUES:
        needle: str | bytes = value.encode() if isinstance(text, bytes) else value
        assert needle not in text, f"{where} holds a secret value"


def attack(server: ServeProcess, name: str, document: str) -> tuple[list[tuple[str, str, int | None]], list[str]]:
    """Push ``document`` as flows/<name>.json (its own commit), fetch, and take it out again. Returns the file's
    errors as the server recorded them, and the texts of every answer that could show it."""
    remote = server.remote
    file = f"flows/{name}.json"
    sha = remote.commit({file: document}, f"add {name}")
    remote.push()
    try:
        server.reconcile()
        versions = server.client.get("/versions")
        [version] = [v for v in versions.json()["versions"] if v["sha"] == sha]
        problems = [p for p in recorded(version) if p["file"] == file and p["severity"] == "error"]
        errors = [(p["code"], p["path"], p["line"]) for p in problems]
        invoked = server.invoke(name, QUESTION)
        pinned = server.invoke("echo", QUESTION, headers={"X-Flow-Version": sha})
        streamed = server.client.post(f"/flows/{name}/stream", json={"input": QUESTION})
        assert invoked.status_code == 404, f"{name} is served: {invoked.text}"
        texts = [versions.text, server.client.get("/history").text, invoked.text, pinned.text, streamed.text]
        return errors, texts
    finally:
        remote.commit({file: None}, f"remove {name}")
        remote.push()
        server.reconcile()


def recorded(version: dict[str, Any]) -> list[dict[str, Any]]:
    """Every problem a version record holds: the commit's own, and each failed flow's."""
    return [*version["problems"], *(p for found in version.get("failed", {}).values() for p in found)]


def validated(tmp_path: Path, name: str, document: str, command: str) -> list[tuple[str, str, int | None]]:
    """The errors `gitops-flow validate` or `test` reports for the same file, with the server's environment."""
    folder = tmp_path / command / "flows"
    folder.mkdir(parents=True)
    (folder / f"{name}.json").write_text(document)
    out = io.StringIO()
    assert cli.main([command, str(folder.parent), "--format", "json"], environ=ENVIRONMENT, out=out) == 1
    assert_no_secret(out.getvalue(), f"gitops-flow {command}")
    body = json.loads(out.getvalue())
    return [(p["code"], p["path"], p["line"]) for p in body["problems"] if p["severity"] == "error"]


def same_in_ci(tmp_path: Path, name: str, document: str, errors: list[tuple[str, str, int | None]]) -> None:
    assert validated(tmp_path, name, document, "validate") == errors
    assert validated(tmp_path, name, document, "test") == errors


# -- the attacks of issue 11 ----------------------------------------------------------------------------------------


def test_a_fake_model_cannot_answer_the_servers_secrets(server: ServeProcess, tmp_path: Path) -> None:
    document = reveal_flow()
    errors, texts = attack(server, "reveal", document)

    assert errors == [
        ("env-not-secret", "$.nodes[1].params.responses[0]", ref_line(document, "GITOPS_FLOW_ADMIN_TOKEN")),
        ("env-not-secret", "$.nodes[1].params.responses[1]", ref_line(document, "AWS_SECRET_ACCESS_KEY")),
    ]
    for text in texts:
        assert_no_secret(text, "an answer")
    same_in_ci(tmp_path, "reveal", reveal_flow(), errors)


def test_a_model_named_by_a_secret_never_puts_it_in_versions_or_history(server: ServeProcess, tmp_path: Path) -> None:
    document = model_name_flow()
    errors, texts = attack(server, "model-name", document)

    assert errors == [("env-not-secret", "$.nodes[1].params.model", line_of(document, '"model": {'))]
    for text in texts:
        assert_no_secret(text, "an answer")
        assert "cannot tell the provider" not in text  # the reference is never resolved, so never built
    same_in_ci(tmp_path, "model-name", model_name_flow(), errors)


@pytest.fixture
def collector() -> Iterator[tuple[str, list[str]]]:
    """An endpoint on loopback that records every request's Authorization header, as an attacker's would."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the standard library's name
            seen.append(self.headers.get("authorization", ""))
            self.send_response(500)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", seen
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_a_model_cannot_send_the_key_to_the_authors_endpoint(
    server: ServeProcess, tmp_path: Path, collector: tuple[str, list[str]]
) -> None:
    url, seen = collector
    document = base_url_flow(url)
    errors, texts = attack(server, "base-url", document)

    assert errors == [("base-url-not-allowed", "$.nodes[1].params.base_url", line_of(document, '"base_url"'))]
    assert seen == []
    for text in texts:
        assert_no_secret(text, "an answer")
    same_in_ci(tmp_path, "base-url", base_url_flow(url), errors)


def test_an_allowed_base_url_is_no_string_prefix_and_takes_only_its_providers_key(
    tmp_path: Path, collector: tuple[str, list[str]]
) -> None:
    """Issue 21: with ``openai=<gateway>/v1`` allowed, ``<gateway>/v1/gateway/../../internal-admin`` passed a string
    prefix check and got the key, and an Anthropic node could point its key at the OpenAI gateway."""
    url, seen = collector
    escaping = base_url_flow(url + "/gateway/../../internal-admin")
    anthropic = {
        "model": "anthropic:claude-3-5-haiku-latest",
        "base_url": url,
        "api_key": {"$env": "ANTHROPIC_API_KEY"},
    }
    other = flow("other-provider", PROMPT, ("llm", "ChatModel", anthropic), PARSE)
    remote = Remote.create(tmp_path)
    remote.commit({"flows/echo.json": echo_flow()}, "an ordinary flow")
    remote.push()
    env = {**ENVIRONMENT, "GITOPS_FLOW_ALLOWED_BASE_URLS": f"openai={url}"}
    with serve_process(remote, tmp_path, env=env) as server:
        for name, document in (("base-url", escaping), ("other-provider", other)):
            errors, texts = attack(server, name, document)
            assert ("base-url-not-allowed", "$.nodes[1].params.base_url", line_of(document, '"base_url"')) in errors
            for text in texts:
                assert_no_secret(text, "an answer")
        assert_no_secret(server.log_text(), "the server's log")
    assert seen == []


def test_a_langflow_export_cannot_name_the_servers_own_secret(server: ServeProcess, tmp_path: Path) -> None:
    document = langflow_flow()
    errors, texts = attack(server, "exported", document)

    [(code, path, line)] = errors
    assert (code, path) == ("env-not-allowed", "$.data.nodes[5].data.node.template.api_key.value")
    assert line == line_of(document, '"value": "GITOPS_FLOW_ADMIN_TOKEN"')  # the variable's name, in the export
    for text in texts:
        assert_no_secret(text, "an answer")
    same_in_ci(tmp_path, "exported", langflow_flow(), errors)


def test_an_operator_components_secret_param_reads_only_allowed_names(server: ServeProcess, tmp_path: Path) -> None:
    document = leaky_flow("leaky-db", "DATABASE_PASSWORD")
    errors, texts = attack(server, "leaky-db", document)

    assert errors == [("env-not-allowed", "$.nodes[0].params.api_key", ref_line(document, "DATABASE_PASSWORD"))]
    for text in texts:
        assert_no_secret(text, "an answer")


def test_an_operator_component_never_gets_a_providers_key_it_does_not_name(server: ServeProcess) -> None:
    """A search component declared with a secret param cannot be handed the server's OpenAI key by a flow."""
    document = flow("search", ("call", "Search", {"api_key": {"$env": "OPENAI_API_KEY"}}))
    errors, texts = attack(server, "search", document)

    assert errors == [("env-wrong-provider", "$.nodes[0].params.api_key", ref_line(document, "OPENAI_API_KEY"))]
    for text in texts:
        assert_no_secret(text, "an answer")


# -- every endpoint, the log and the state file ---------------------------------------------------------------------


def test_no_secret_value_appears_in_any_answer_the_log_or_the_state(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    chat = flow(
        "chat",
        ("memory", "ChatHistory", {}),
        ("prompt", "ChatPromptTemplate", {"messages": [["placeholder", "{history}"], ["human", "{question}"]]}),
        ("llm", "FakeChatModel", {"responses": ["noted"]}),
        PARSE,
    )
    good = remote.commit({"flows/echo.json": echo_flow(), "flows/chat.json": chat, "flows/leaky.json": leaky_flow()})
    remote.push()
    components = tmp_path / "components.yaml"
    components.write_text(COMPONENTS)
    webhook_secret = ENVIRONMENT["GITOPS_FLOW_WEBHOOK_SECRET"].encode()
    answers: list[httpx.Response] = []
    # exception messages logged as raised (by default they are withheld), and a failed run's traceback (logged at
    # debug): the scrubber alone keeps the key out
    env = {**ENVIRONMENT, "GITOPS_FLOW_LOG_REQUEST_TEXT": "true"}
    args = ["--components", str(components), "--log-level", "debug"]
    with serve_process(remote, tmp_path, env=env, args=args) as server:
        client = server.client
        attacks = {
            "reveal": reveal_flow(),
            "model-name": model_name_flow(),
            "base-url": base_url_flow("http://127.0.0.1:9/v1"),
            "exported": langflow_flow(),
            "leaky-db": leaky_flow("leaky-db", "DATABASE_PASSWORD"),
            "fragile": flow("fragile", ("call", "Fragile", {"api_key": {"$env": "OPENAI_API_KEY"}})),
        }
        shas = {}
        for name, document in attacks.items():
            shas[name] = remote.commit({f"flows/{name}.json": document}, f"add {name}")
            remote.push()
            answers.append(client.post("/admin/reconcile", headers=ADMIN))
            remote.commit({f"flows/{name}.json": None}, f"remove {name}")
        remote.push()
        answers.append(client.post("/admin/reconcile", headers=ADMIN))
        body = {"input": QUESTION}
        for path in ("echo", "chat", "leaky", "reveal"):
            answers += [
                client.post(f"/flows/{path}/invoke", json=body, headers={"X-Flow-Session": "s1"}),
                client.post(f"/flows/{path}/batch", json={"inputs": [QUESTION, QUESTION]}),
                client.post(f"/flows/{path}/stream", json=body),
                client.get(f"/flows/{path}/input_schema"),
                client.get(f"/flows/{path}/output_schema"),
                client.get(f"/flows/{path}/config_schema"),
                client.post(f"/api/v1/run/{path}", json={"input_value": "hi", "session_id": "s2"}),
                client.post(f"/api/v1/run/{path}?stream=true", json={"input_value": "hi"}),
            ]
        ping = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
        answers += [
            client.post("/flows/echo/invoke", json=body, headers={"X-Flow-Version": shas["fragile"]}),
            client.post("/flows/echo/invoke", json=body, headers={"X-Flow-Version": good}),
            client.post("/flows/echo/invoke", json={"input": {"question": 1}}),
            client.post("/flows/echo/invoke", content=b"{", headers={"content-type": "application/json"}),
            client.get("/flows/echo/invoke"),
            client.post("/flows/nope/invoke", json=body),
            client.post("/admin/reconcile", headers={"Authorization": "Bearer " + ENVIRONMENT["OPENAI_API_KEY"]}),
            client.post("/webhooks/github", content=ping, headers={"X-GitHub-Event": "ping"}),
            client.post(
                "/webhooks/github",
                content=ping,
                headers={
                    "X-GitHub-Event": "ping",
                    "X-GitHub-Delivery": "d-1",
                    "X-Hub-Signature-256": sign(webhook_secret, ping),
                },
            ),
            client.get("/flows"),
            client.get("/versions"),
            client.get("/history?limit=1000"),
            client.get("/readyz"),
            client.get("/healthz"),
            client.get("/metrics"),
        ]
        log = server.log_text()
        state = [(path, path.read_bytes()) for path in server.log.parent.rglob("*") if path.is_file()]

    statuses = {a.request.url.path: a.status_code for a in answers}
    assert statuses["/flows/leaky/invoke"] == 500 and statuses["/flows/reveal/invoke"] == 404
    assert statuses["/webhooks/github"] == 200 and statuses["/metrics"] == 200
    for answer in answers:
        assert_no_secret(answer.text, f"the answer to {answer.request.method} {answer.request.url}")
        assert_no_secret(str(answer.headers), f"the headers of {answer.request.url}")
    assert_no_secret(log, "the server's log")
    for path, content in state:
        assert_no_secret(content, str(path))
    # the scrubbing is what kept them out: the careless component's words are there, its key is not
    assert "the upstream refused key <$env:OPENAI_API_KEY>" in log
    versions = next(a for a in answers if a.request.url.path == "/versions").json()["versions"]
    [fragile] = [v for v in versions if v["sha"] == shas["fragile"]]
    messages = [p["message"] for p in recorded(fragile) if p["file"] == "flows/fragile.json"]
    assert messages == ["Fragile could not be built: key <$env:OPENAI_API_KEY> is not valid here"]
    assert any(b"<$env:OPENAI_API_KEY> is not valid here" in content for path, content in state if "state" in path.name)


# -- in process: the same promises, observed through logging ------------------------------------------------------


def test_a_failing_flow_that_quotes_its_secret_leaks_it_nowhere(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    remote = Remote.create(tmp_path)
    remote.commit({"flows/leaky.json": flow("leaky", ("call", "Leaky", {"api_key": {"$env": "UPSTREAM_KEY"}}))})
    remote.push()
    secret = "sk-live-0123456789abcdef"
    registry = registry_with(
        Component("Leaky", leaky, "transform", "fails quoting its key", secrets=frozenset({"api_key"}))
    )
    # exception messages logged as raised (by default they are withheld), and a failed run's traceback (logged at
    # debug): the scrubber alone keeps the key out
    config = settings(remote, tmp_path, allowed_secrets=("UPSTREAM_KEY",), log_request_text=True)
    app = create_app(config, store=MemoryStore(), registry=registry, secrets={"UPSTREAM_KEY": secret})
    filters = process.log_filters(config, app.state.server.scrubber)  # what `serve` puts on the process's logs
    with caplog.at_level(logging.DEBUG):
        process.add_log_filters(filters)  # caplog's handler is configured now: it gets them too
        try:
            with TestClient(app) as client:
                server = Served(client, remote, app)
                server.wait_ready()
                response = server.invoke("leaky", "hello")
                assert response.status_code == 500 and response.json()["error"]["code"] == "flow-failed"
                streamed = client.post("/flows/leaky/stream", json={"input": "hello"}).text
                assert "event: error" in streamed
                views = client.get("/versions").text + client.get("/history").text + client.get("/readyz").text
        finally:
            process.remove_log_filters(filters)
    logged = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    for text in (response.text, streamed, views, logged):
        assert secret not in text
    assert "the upstream refused key <$env:UPSTREAM_KEY>" in logged  # the log still says what happened


def test_flows_are_built_from_the_allowed_variables_only(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    remote.commit({"flows/echo.json": echo_flow()})
    remote.push()
    app = create_app(settings(remote, tmp_path), store=MemoryStore(), secrets=ENVIRONMENT)
    with TestClient(app) as client:
        Served(client, remote, app).wait_ready()
        builder = app.state.deps.reconciler.builder
        assert builder.secrets == {k: ENVIRONMENT[k] for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
