"""Traces, logs and metrics (issue 16): OpenTelemetry spans of requests, runs and nodes (in memory, and over OTLP to
a receiver that decodes them with the official protobuf messages), JSON and text logs that carry each request's
run, flow, version and ref with no secret in them, LangSmith through LangChain's own settings, and the gauges of
the routes and canaries."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.testclient import TestClient

from gitops_flow.app import create_app
from gitops_flow.cli.process import log_filters
from gitops_flow.components.base import Component
from gitops_flow.config import Settings
from gitops_flow.observability.telemetry.context import hashed
from gitops_flow.observability.telemetry.logs import WithheldMessages
from gitops_flow.observability.telemetry.runs import current_observer
from gitops_flow.observability.telemetry.tracing import Tracing
from gitops_flow.security.references import Scrubber
from tests.gitrepo import Remote
from tests.helpers import registry_with
from tests.metricsread import sample
from tests.process import ADMIN, serve_process
from tests.receiver import Received, receiver
from tests.served import echo_flow, settings, wait_until

Q = {"question": "hi"}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
COUNTING = Component("Counting", "tests.operator_components:counting", "model", "reports its tokens")


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    return Remote.create(tmp_path)


def push(remote: Remote, files: dict[str, str | None], message: str = "change") -> str:
    sha = remote.commit(files, message)
    remote.push()
    return sha


def counting_flow(name: str = "echo") -> str:
    doc = json.loads(echo_flow(name))
    doc["nodes"][1] = {"id": "llm", "component": "Counting", "params": {"responses": ["counted"]}}
    return json.dumps(doc)


@contextmanager
def traced(remote: Remote, tmp_path: Path, **overrides: Any) -> Iterator[tuple[TestClient, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    app = create_app(
        settings(remote, tmp_path, **overrides), registry=registry_with(COUNTING), tracing=Tracing.exporting(exporter)
    )
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, what="readiness")
        yield client, exporter


def by_name(spans: tuple[ReadableSpan, ...] | list[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


def test_a_request_its_run_and_each_node_are_spans_with_the_callers_trace_as_parent(
    remote: Remote, tmp_path: Path
) -> None:
    sha = push(remote, {"flows/echo.json": counting_flow()})
    with traced(remote, tmp_path) as (client, exporter):
        exporter.clear()
        response = client.post(
            "/flows/echo/invoke",
            json={"input": Q},
            headers={"traceparent": PARENT, "X-Flow-Session": "conversation-1", "X-Flow-User": "alice"},
        )
        assert response.status_code == 200
        spans = by_name(exporter.get_finished_spans())

    request = spans["POST /flows/{flow}/invoke"]
    assert request.kind is SpanKind.SERVER
    assert f"{request.context.trace_id:032x}" == TRACE_ID and request.parent is not None
    assert request.parent.span_id == 0x00F067AA0BA902B7  # the caller's span
    attributes = dict(request.attributes or {})
    assert attributes["gitops_flow.flow"] == "echo" and attributes["gitops_flow.version"] == sha
    assert attributes["gitops_flow.ref"] == "main" and attributes["gitops_flow.route"] == "default"
    assert attributes["gitops_flow.session"] == hashed("conversation-1")  # a hash: no handle to the conversation
    assert attributes["gitops_flow.user"] == hashed("alice")
    assert attributes["http.response.status_code"] == 200 and attributes["http.route"] == "/flows/{flow}/invoke"
    assert attributes["gitops_flow.run_id"] == response.json()["metadata"]["run_id"]
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (7, 3)
    # the caller finds the trace of its call
    assert response.headers["traceresponse"] == f"00-{TRACE_ID}-{request.context.span_id:016x}-01"

    run = spans["run echo"]
    assert run.parent is not None and run.parent.span_id == request.context.span_id
    assert dict(run.attributes or {})["gen_ai.usage.input_tokens"] == 7
    for node, component in (("prompt", "PromptTemplate"), ("llm", "Counting"), ("answer", "StrOutputParser")):
        span = spans[node]
        assert span.parent is not None and span.parent.span_id == run.context.span_id
        assert dict(span.attributes or {})["gitops_flow.node.component"] == component
    llm = dict(spans["llm"].attributes or {})
    assert (llm["gen_ai.usage.input_tokens"], llm["gen_ai.usage.output_tokens"]) == (7, 3)
    assert "gen_ai.usage.input_tokens" not in dict(spans["prompt"].attributes or {})


def test_a_streamed_run_ends_with_its_last_chunk_and_a_failure_marks_its_spans(remote: Remote, tmp_path: Path) -> None:
    broken = json.loads(echo_flow("broken", answer="not json"))
    broken["nodes"][2]["component"] = "JsonOutputParser"  # fails at run time: its model answers no JSON
    push(remote, {"flows/echo.json": echo_flow(), "flows/broken.json": json.dumps(broken)})
    with traced(remote, tmp_path) as (client, exporter):
        exporter.clear()
        with client.stream("POST", "/flows/echo/stream", json={"input": Q}) as streamed:
            body = b"".join(streamed.iter_bytes())
        assert b"event: end" in body
        spans = by_name(exporter.get_finished_spans())
        assert {"POST /flows/{flow}/stream", "run echo", "prompt", "llm", "answer"} <= set(spans)
        assert spans["run echo"].end_time <= spans["POST /flows/{flow}/stream"].end_time

        exporter.clear()
        failed = client.post("/flows/broken/invoke", json={"input": Q})
        assert failed.status_code == 500
        spans = by_name(exporter.get_finished_spans())
    assert spans["answer"].status.status_code.name == "ERROR"
    assert dict(spans["answer"].attributes or {})["error.type"] == "OutputParserException"
    assert spans["llm"].status.status_code.name == "UNSET"
    assert spans["run broken"].status.status_code.name == "ERROR"
    assert spans["POST /flows/{flow}/invoke"].status.status_code.name == "ERROR"


HANDLERS: list[list[str]] = []  # the callback handlers each run of the Probe component was given
OBSERVERS: list[bool] = []  # whether an executor running the Probe node would find a node observer to call


def probe() -> Any:
    """A node that notes which callback handlers its run has, and hands its input's text on."""
    from langchain_core.runnables import RunnableLambda

    def run(value: Any, config: Any) -> str:
        manager = config.get("callbacks")
        HANDLERS.append([type(h).__name__ for h in getattr(manager, "handlers", None) or []])
        OBSERVERS.append(current_observer() is not None)
        return str(getattr(value, "content", value))

    return RunnableLambda(run)


PROBE = Component("Probe", probe, "transform", "notes its callbacks")


def test_health_checks_are_not_traced_and_tracing_off_adds_nothing_to_a_run(remote: Remote, tmp_path: Path) -> None:
    doc = json.loads(echo_flow())
    doc["nodes"][2] = {"id": "answer", "component": "Probe"}
    push(remote, {"flows/echo.json": json.dumps(doc)})
    exporter = InMemorySpanExporter()
    for tracing in (Tracing.exporting(exporter), None):
        app = create_app(
            settings(remote, tmp_path / str(bool(tracing))), registry=registry_with(PROBE), tracing=tracing
        )
        with TestClient(app) as client:
            wait_until(lambda c=client: c.get("/readyz").status_code == 200, what="readiness")
            exporter.clear()
            client.get("/healthz")
            client.get("/metrics")
            assert exporter.get_finished_spans() == ()  # probes and scrapes are not traced
            response = client.post("/flows/echo/invoke", json={"input": Q})
            assert response.status_code == 200
            assert ("traceresponse" in response.headers) == (tracing is not None)
    traced, untraced = HANDLERS[-2:]
    assert "CallbackBridge" in traced
    assert untraced == []  # off: the run's config carries no handler of ours (nor any other)
    assert OBSERVERS[-2:] == [True, False]  # the per-node interface, for an executor that runs nodes itself


def test_a_request_the_sampler_leaves_out_is_not_observed(remote: Remote, tmp_path: Path) -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    doc = json.loads(echo_flow())
    doc["nodes"][2] = {"id": "answer", "component": "Probe"}
    push(remote, {"flows/echo.json": json.dumps(doc)})
    exporter = InMemorySpanExporter()
    tracing = Tracing.exporting(exporter, sampler=ALWAYS_OFF)
    app = create_app(settings(remote, tmp_path), registry=registry_with(PROBE), tracing=tracing)
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, what="readiness")
        response = client.post("/flows/echo/invoke", json={"input": Q})

    assert response.status_code == 200
    flags = int(response.headers["traceresponse"].rsplit("-", 1)[1], 16)
    assert flags & 1 == 0  # a trace id the caller can log, without the sampled flag
    assert exporter.get_finished_spans() == ()
    assert HANDLERS[-1] == []  # no callbacks: a left-out request costs what an untraced one does


def test_token_metrics_of_every_run_when_the_operator_asks_for_them(remote: Remote, tmp_path: Path) -> None:
    push(remote, {"flows/echo.json": counting_flow()})
    for asked, expected in ((False, None), (True, 14)):
        app = create_app(settings(remote, tmp_path / str(asked), token_metrics=asked), registry=registry_with(COUNTING))
        with TestClient(app) as client:
            wait_until(lambda c=client: c.get("/readyz").status_code == 200, what="readiness")
            for _ in range(2):
                assert client.post("/flows/echo/invoke", json={"input": Q}).status_code == 200
            text = client.get("/metrics").text
        assert sample(text, "gitops_flow_tokens_total", flow="echo", direction="input") == expected


def otlp_spans(requests: list[Received]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(name, attributes, resource attributes) of every span the receiver got, decoded with the OTLP messages."""
    found = []
    for request in requests:
        if request.path != "/v1/traces":
            continue
        message = ExportTraceServiceRequest()
        message.ParseFromString(request.body)
        for resource_spans in message.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: a.value.string_value or a.value.int_value for a in span.attributes}
                    found.append((span.name, attributes, resource))
    return found


def test_traces_reach_an_otlp_endpoint_over_http(remote: Remote, tmp_path: Path) -> None:
    push(remote, {"flows/echo.json": echo_flow()})
    with receiver(answer=b"", content_type="application/x-protobuf") as collector:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20otel-token-7f3a9c2e",
            "OTEL_SERVICE_NAME": "flows-under-test",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        with serve_process(remote, tmp_path, env=env) as server:
            response = server.invoke("echo", Q, headers={"traceparent": PARENT})
            assert response.status_code == 200
            assert response.headers["traceresponse"].startswith(f"00-{TRACE_ID}-")
            collector.wait_for(
                lambda seen: {"run echo", "llm"} <= {name for name, _, _ in otlp_spans(seen)}, what="the run's spans"
            )
            log = server.log_text()
        spans = otlp_spans(collector.requests)
    request = next(attrs for name, attrs, _ in spans if name == "POST /flows/{flow}/invoke")
    assert request["gitops_flow.flow"] == "echo" and request["http.response.status_code"] == 200
    assert {resource["service.name"] for _, _, resource in spans} == {"flows-under-test"}
    sent = next(r for r in collector.requests if r.path == "/v1/traces")
    assert sent.headers["authorization"] == "Bearer otel-token-7f3a9c2e"
    assert sent.headers["content-type"] == "application/x-protobuf"
    assert "otel-token-7f3a9c2e" not in log


def test_langsmith_traces_through_langchains_own_settings_and_its_key_stays_out_of_the_log(
    remote: Remote, tmp_path: Path
) -> None:
    push(remote, {"flows/echo.json": echo_flow()})
    key = "lsv2-test-key-31c7a5e9b2"
    with receiver() as langsmith:
        env = {"LANGSMITH_TRACING": "true", "LANGSMITH_ENDPOINT": langsmith.url, "LANGSMITH_API_KEY": key}
        with serve_process(remote, tmp_path, env=env) as server:
            assert server.invoke("echo", Q).status_code == 200
            langsmith.wait_for(
                lambda seen: any(r.path.startswith("/runs") and b'"name":"echo"' in r.body for r in seen),
                what="the flow's run",
            )
            log = server.log_text()
    posted = next(r for r in langsmith.requests if r.path.startswith("/runs"))
    assert posted.headers["x-api-key"] == key
    assert key not in log


LEAKY = """\
components:
  Leaky:
    target: tests.operator_components:leaky
    secrets: {api_key: [OPENAI_API_KEY]}
"""
KEY = "sk-openai-Jx8Pq2Lm5Nz7Vb4Kc1Rt"


def leaky_flow() -> str:
    doc = json.loads(echo_flow("leak"))
    doc["nodes"][1] = {"id": "llm", "component": "Leaky", "params": {"api_key": {"$env": "OPENAI_API_KEY"}}}
    return json.dumps(doc)


@pytest.mark.parametrize("kind", ["json", "text"])
def test_log_lines_of_a_request_carry_its_run_flow_version_and_ref_and_no_secret(
    remote: Remote, tmp_path: Path, kind: str
) -> None:
    (tmp_path / "components.yaml").write_text(LEAKY)
    sha = push(remote, {"flows/leak.json": leaky_flow()})
    env = {"GITOPS_FLOW_COMPONENTS": str(tmp_path / "components.yaml"), "OPENAI_API_KEY": KEY}
    with serve_process(remote, tmp_path, env=env, args=["--log-format", kind, "--log-level", "info"]) as server:
        failed = server.invoke("leak", Q)
        assert failed.status_code == 500
        run_id = failed.json()["error"]["message"].split("run ")[1].rstrip(")")
        wait_until(lambda: "failed: RuntimeError" in server.log_text(), what="the failure in the log")
        text = server.log_text()
    assert KEY not in text
    lines = [line for line in text.splitlines() if line.strip()]
    if kind == "json":
        records = [json.loads(line) for line in lines]  # every line is one JSON object, uvicorn's too
        failure = next(r for r in records if "failed: RuntimeError" in r["message"])
        assert (failure["run_id"], failure["flow"], failure["version"], failure["ref"]) == (run_id, "leak", sha, "main")
        assert failure["level"] == "error" and "exception" not in failure  # one line: its traceback is at debug
        access = [r for r in records if r["logger"] == "uvicorn.access" and "/flows/leak/invoke" in r["message"]]
        assert access and access[0]["run_id"] == run_id  # the access line is about the request too
    else:
        failure = next(line for line in lines if "failed: RuntimeError" in line)
        assert failure.endswith(f"[run_id={run_id} flow=leak version={sha[:12]} ref=main]")


QUOTING = """\
components:
  Quoting:
    target: tests.operator_components:quoting
"""
PRIVATE = "my card is 4111-1111-1111-1111"


@pytest.mark.parametrize("shown", [False, True], ids=["default", "asked-for"])
def test_error_lines_name_the_exception_and_run_not_the_request_text(
    remote: Remote, tmp_path: Path, shown: bool
) -> None:
    """Issue 21: an ERROR line's traceback carried the exception's message, which quoted what the client sent."""
    (tmp_path / "components.yaml").write_text(QUOTING)
    doc = json.loads(echo_flow("quote"))
    doc["nodes"][1] = {"id": "llm", "component": "Quoting", "params": {}}
    push(remote, {"flows/quote.json": json.dumps(doc)})
    env = {"GITOPS_FLOW_COMPONENTS": str(tmp_path / "components.yaml")}
    if shown:
        env["GITOPS_FLOW_LOG_REQUEST_TEXT"] = "true"
    with serve_process(remote, tmp_path, env=env, args=["--log-format", "json", "--log-level", "debug"]) as server:
        failed = server.invoke("quote", {"question": PRIVATE})
        assert failed.status_code == 500
        run_id = failed.json()["error"]["message"].split("run ")[1].rstrip(")")
        wait_until(lambda: "failed: ValueError" in server.log_text(), what="the failure in the log")
        text = server.log_text()
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    failure = next(r for r in records if "failed: ValueError" in r["message"])
    assert failure["level"] == "error" and failure["run_id"] == run_id and "exception" not in failure
    trace = next(r for r in records if r["level"] == "debug" and "failed: the traceback" in r["message"])
    assert trace["run_id"] == run_id  # at debug, the traceback: its messages withheld unless asked for
    assert "Traceback" in trace["exception"] and "ValueError" in trace["exception"]
    assert ("ValueError: (message withheld" in trace["exception"]) is not shown
    assert (PRIVATE in text) is shown


def test_at_debug_the_provider_clients_records_are_withheld_but_the_servers_are_not() -> None:
    """Older openai and anthropic SDKs (within our floors) log each request's options at DEBUG, the user's messages
    among them: the server's filter drops those libraries' DEBUG records, unless the operator asks for request text
    (then ``log_filters`` leaves WithheldMessages out)."""
    withheld = WithheldMessages()

    def record(name: str, level: int) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, "Request options: %s", ({"messages": PRIVATE},), None)

    for client in ("openai._base_client", "anthropic._base_client", "httpx", "httpcore.http11"):
        assert not withheld.filter(record(client, logging.DEBUG)), client
        assert withheld.filter(record(client, logging.INFO)), client  # "HTTP Request: POST ... 200" stays
    assert withheld.filter(record("gitops_flow.server", logging.DEBUG))
    assert withheld.filter(record("openaiish", logging.DEBUG))  # a logger is matched by its package, not a prefix
    settings = Settings.from_env({"GITOPS_FLOW_LOG_REQUEST_TEXT": "true"})
    assert not any(isinstance(f, WithheldMessages) for f in log_filters(settings, Scrubber({})))


def test_routes_and_canaries_are_gauges(remote: Remote, tmp_path: Path) -> None:
    canary = {
        "routes": {"default": [{"ref": "stable", "weight": 90}, {"ref": "main", "weight": 10}]},
        "analysis": {"window": "60s", "min_requests": 100},
    }
    stable = push(remote, {"flows/echo.json": echo_flow(answer="stable"), "gitops-flow.yaml": yaml.safe_dump(canary)})
    remote.tag("stable", stable)
    remote.push_tags()
    push(remote, {"flows/echo.json": echo_flow(answer="canary")})
    with serve_process(remote, tmp_path) as server:
        text = server.client.get("/metrics").text
        assert sample(text, "gitops_flow_route_weight", flow="echo", ref="stable", state="live") == pytest.approx(0.9)
        assert sample(text, "gitops_flow_route_weight", flow="echo", ref="main", state="live") == pytest.approx(0.1)
        assert sample(text, "gitops_flow_canary_aborted", flow="echo", ref="main") == 0
        assert sample(text, "gitops_flow_canary_aborted", flow="echo", ref="stable") is None  # the primary is none

        assert server.client.post("/admin/abort", json={"flow": "echo"}, headers=ADMIN).status_code == 200

        text = server.client.get("/metrics").text
        assert sample(text, "gitops_flow_canary_aborted", flow="echo", ref="main") == 1
        assert sample(text, "gitops_flow_route_weight", flow="echo", ref="main", state="aborted") == 0
        assert sample(text, "gitops_flow_route_weight", flow="echo", ref="stable", state="live") == 1
