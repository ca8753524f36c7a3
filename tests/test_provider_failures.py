"""Providers fail well (issue 23, point 6), against a real `gitops-flow serve` over real git pushes, whose flows'
ChatModel (langchain-openai, through the openai SDK) calls OpenAI stand-ins on loopback (tests/openaiapi.py).

The findings: a stopped provider gave clients `500 flow-failed` with no Retry-After and the log a ~90-line traceback
per request; a canary aborted for a wrong model name said only its error rate; streams through a custom base_url
counted no tokens. Each provider failure now answers what it is (502/503/504/429 with Retry-After, 500 naming a
request the provider refused), one log line a failed request; an endpoint that keeps failing is refused at once by
its circuit breaker, shared by the workers, until a probe finds it back; a model's fallbacks answer for it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.gitrepo import Remote
from tests.openaiapi import Failing, OpenAIStandIn, openai_standin
from tests.openaiapi import model_flow as openai_flow
from tests.process import ServeProcess, serve_process
from tests.served import wait_until
from tests.test_per_flow import canary_users, events
from tests.test_workers import workers as serving

Q = {"question": "hi"}
COOLDOWN = 2  # GITOPS_FLOW_PROVIDER_BREAKER_COOLDOWN of the shared server
FAILURES = 3  # GITOPS_FLOW_PROVIDER_BREAKER_FAILURES of the shared server


def model_flow(name: str, base_url: str | None, model: str = "openai:gpt-4o-mini", **params: Any) -> str:
    """prompt -> ChatModel (at ``base_url`` with OpenAI's key, or at its provider's own endpoint with the key it
    reads itself; no retries of its client's own) -> parser."""
    return openai_flow(name, base_url, model, **{"max_tokens": 3, "max_retries": 0, **params})


def sections_flow() -> str:
    """A RAG prompt: a mustache section over a list of documents, beside the question; its text is the answer."""
    template = "{{#docs}}- {{page_content}} ({{source}})\n{{/docs}}Q: {{question}}"
    doc = {
        "version": 1,
        "name": "sections",
        "nodes": [
            {
                "id": "prompt",
                "component": "PromptTemplate",
                "params": {"template": template, "template_format": "mustache"},
            },
            {"id": "text", "component": "Text"},
        ],
        "edges": [{"source": "prompt", "target": "text"}],
    }
    return json.dumps(doc)


def chat_sections_flow() -> str:
    """A chat prompt whose system message lists the documents (a section over plain strings)."""
    messages = [["system", "Answer from:\n{{#docs}}- {{.}}\n{{/docs}}"], ["human", "{{question}}"]]
    doc = {
        "version": 1,
        "name": "chat-sections",
        "nodes": [
            {
                "id": "prompt",
                "component": "ChatPromptTemplate",
                "params": {"messages": messages, "template_format": "mustache"},
            },
            {"id": "text", "component": "Text"},
        ],
        "edges": [{"source": "prompt", "target": "text"}],
    }
    return json.dumps(doc)


@dataclass
class Providers:
    """The stand-ins of the shared server: ``good`` answers (and 404s unknown models, or 429s when told), ``down``
    listens no more, ``flaky`` fails with 5xx when told, ``slow`` answers after the models' timeout."""

    good: OpenAIStandIn
    down: OpenAIStandIn
    flaky: OpenAIStandIn
    slow: OpenAIStandIn


@dataclass
class Served:
    server: ServeProcess
    providers: Providers


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp_path = tmp_path_factory.mktemp("providers")
    with (
        openai_standin(answer_tokens=3) as good,
        openai_standin() as down,
        openai_standin(answer_tokens=3) as flaky,
        openai_standin(answer_tokens=3) as slow,
    ):
        good.models = frozenset({"gpt-4o-mini"})
        down.stop()
        slow.delay = 3.0
        providers = Providers(good, down, flaky, slow)
        remote = Remote.create(tmp_path)
        remote.commit(
            {
                "flows/ok.json": model_flow("ok", good.base_url),
                "flows/wrong.json": model_flow("wrong", good.base_url, "openai:gpt-nope"),
                "flows/backup.json": model_flow(
                    "backup",
                    down.base_url,
                    fallbacks=[
                        {"model": "openai:gpt-nope", "base_url": good.base_url},
                        {"model": "openai:gpt-4o-mini", "base_url": good.base_url},
                    ],
                ),
                "flows/down.json": model_flow("down", down.base_url),
                "flows/flaky.json": model_flow("flaky", flaky.base_url),
                "flows/slow.json": model_flow("slow", slow.base_url, timeout=0.5),
                "flows/streamed.json": model_flow("streamed", good.base_url),
                "flows/sections.json": sections_flow(),
                "flows/chat-sections.json": chat_sections_flow(),
            },
            "flows calling providers",
        )
        remote.push()
        urls = ",".join(f"openai={s.base_url}" for s in (good, down, flaky, slow))
        env = {
            "OPENAI_API_KEY": "sk-test-standin",
            "GITOPS_FLOW_ALLOWED_BASE_URLS": urls,
            "GITOPS_FLOW_PROVIDER_BREAKER_FAILURES": str(FAILURES),
            "GITOPS_FLOW_PROVIDER_BREAKER_COOLDOWN": str(COOLDOWN),
        }
        with serve_process(remote, tmp_path, env=env) as server:
            yield Served(server, providers)


def error_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def test_a_stopped_provider_is_502_with_retry_after_and_one_log_line_without_a_traceback(served: Served) -> None:
    server = served.server

    response = server.invoke("down", Q)

    assert error_of(response) == (502, "provider-unavailable"), response.text
    assert int(response.headers["retry-after"]) >= 1
    message = response.json()["error"]["message"]
    assert "APIConnectionError" in message and "run " in message
    run_id = message.rsplit("run ", 1)[1].rstrip(")")
    wait_until(lambda: run_id in server.log_text(), what="the failure's log line")
    lines = [line for line in server.log_text().splitlines() if run_id in line and "HTTP/1.1" not in line]
    assert len(lines) == 1, lines  # and the access log's line
    assert "ProviderUnavailable APIConnectionError" in lines[0]
    assert "Traceback" not in server.log_text()
    metrics = server.client.get("/metrics").text
    assert 'gitops_flow_failed_runs_total{cause="ProviderUnavailable",flow="down"' in metrics


def test_a_model_the_provider_does_not_know_is_500_naming_the_error(served: Served) -> None:
    response = served.server.invoke("wrong", Q)

    assert error_of(response) == (500, "provider-rejected"), response.text
    assert "NotFoundError" in response.json()["error"]["message"]
    assert "model_not_found" in response.json()["error"]["message"]
    assert "retry-after" not in response.headers


def test_a_rate_limited_provider_is_429_with_the_providers_retry_after(served: Served) -> None:
    good = served.providers.good
    good.failing = Failing(429, "rate_limit_exceeded", (("retry-after", "17"),))
    try:
        response = served.server.invoke("ok", Q)
    finally:
        good.failing = None

    assert error_of(response) == (429, "provider-rate-limited"), response.text
    assert response.headers["retry-after"] == "17"
    assert served.server.invoke("ok", Q).status_code == 200  # a rate limit opens no circuit


def test_a_provider_that_does_not_answer_in_the_models_timeout_is_504(served: Served) -> None:
    started = time.monotonic()
    response = served.server.invoke("slow", Q)

    assert error_of(response) == (504, "provider-timeout"), response.text
    assert time.monotonic() - started < 2.5  # the model's 0.5 s timeout, not the stand-in's 3 s
    assert "APITimeoutError" in response.json()["error"]["message"]


def test_an_outage_opens_the_circuit_then_a_probe_closes_it(served: Served) -> None:
    flaky, server = served.providers.flaky, served.server
    assert server.invoke("flaky", Q).status_code == 200
    flaky.failing = Failing(503)
    try:
        for _ in range(FAILURES):
            response = server.invoke("flaky", Q)
            assert error_of(response) == (502, "provider-unavailable"), response.text
        received = flaky.received

        refused = [server.invoke("flaky", Q) for _ in range(5)]

        assert {error_of(r) for r in refused} == {(503, "provider-circuit-open")}
        assert all(1 <= int(r.headers["retry-after"]) <= COOLDOWN for r in refused)
        assert flaky.received == received  # refused at once: the provider was not called
    finally:
        flaky.failing = None
    time.sleep(COOLDOWN + 0.2)
    assert server.invoke("flaky", Q).status_code == 200  # the probe
    assert flaky.received == received + 1
    assert [server.invoke("flaky", Q).status_code for _ in range(3)] == [200] * 3
    assert flaky.received == received + 4


def test_fallbacks_answer_when_the_model_fails(served: Served) -> None:
    response = served.server.invoke("backup", Q)

    assert response.status_code == 200, response.text
    assert response.json()["output"] == " tok" * 3
    asked = [r["model"] for r in served.providers.good.requests[-2:]]
    assert asked == ["gpt-nope", "gpt-4o-mini"]  # in order; the first fallback's provider refused it


def test_a_stream_through_a_custom_base_url_asks_for_its_usage(served: Served) -> None:
    good = served.providers.good
    response = served.server.client.post("/flows/streamed/stream", json={"input": Q})

    assert response.status_code == 200 and "event: end" in response.text, response.text
    assert good.requests[-1]["stream"] is True
    assert good.requests[-1]["stream_options"] == {"include_usage": True}


def test_a_stream_whose_provider_is_down_is_answered_with_its_status(served: Served) -> None:
    response = served.server.client.post("/flows/down/stream", json={"input": Q})

    assert response.status_code in (502, 503), response.text
    assert response.json()["error"]["code"] in ("provider-unavailable", "provider-circuit-open")
    assert int(response.headers["retry-after"]) >= 1


def test_a_mustache_section_repeats_over_a_list(served: Served) -> None:
    docs = [{"page_content": "Refunds take 5 days.", "source": "faq.md:3"}, {"page_content": "No", "source": "b.md:1"}]

    response = served.server.invoke("sections", {"docs": docs, "question": "refunds?"})

    assert response.status_code == 200, response.text
    assert response.json()["output"] == "- Refunds take 5 days. (faq.md:3)\n- No (b.md:1)\nQ: refunds?"


def test_a_chat_prompts_mustache_section_repeats_over_a_list(served: Served) -> None:
    response = served.server.invoke(
        "chat-sections", {"docs": ["Refunds take 5 days.", "Shipping is free."], "question": "q"}
    )

    assert response.status_code == 200, response.text
    assert "Answer from:\n- Refunds take 5 days.\n- Shipping is free.\n" in response.json()["output"]


def test_a_canary_aborted_for_a_wrong_model_says_why(tmp_path: Path) -> None:
    with openai_standin(answer_tokens=3) as good:
        good.models = frozenset({"gpt-4o-mini"})
        routing = {
            "routes": {"default": [{"ref": "stable", "weight": 50}, {"ref": "main", "weight": 50}]},
            "analysis": {"window": "60s", "min_requests": 50, "max_error_rate": 0.5, "max_failures": 3},
        }
        remote = Remote.create(tmp_path)
        stable = remote.publish(
            {"flows/bot.json": model_flow("bot", good.base_url), "gitops-flow.yaml": yaml.safe_dump(routing)}
        )
        remote.tag("stable", stable)
        remote.push_tags()
        remote.publish({"flows/bot.json": model_flow("bot", good.base_url, "openai:gpt-4o-typo")}, "a new model")
        env = {
            "OPENAI_API_KEY": "sk-test-standin",
            "GITOPS_FLOW_ALLOWED_BASE_URLS": f"openai={good.base_url}",
            "GITOPS_FLOW_ANALYSIS_INTERVAL": "0.1",
        }
        with serve_process(remote, tmp_path, env=env, args=["--log-level", "debug"]) as server:
            for user in canary_users("bot", 5):
                assert server.invoke("bot", Q, headers={"X-Flow-User": user}).status_code == 200  # the primary's
            assert "Traceback" in server.log_text()  # at debug, a failure's traceback is logged (its messages withheld)

            wait_until(lambda: len(events(server, "aborted")) == 1, what="the canary's abort")
            [aborted] = events(server, "aborted")
            assert "ProviderRejected NotFoundError 404 model_not_found" in aborted["reason"], aborted
            assert aborted["causes"] == {"ProviderRejected NotFoundError 404 model_not_found": aborted["errors"]}


def test_serve_refuses_to_start_while_a_flow_needs_a_provider_package_that_is_missing(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    remote.commit(
        {
            "flows/ok.json": model_flow("ok", None),
            "flows/mistral.json": model_flow("mistral", None, "mistralai:mistral-small-latest"),
        },
        "a flow on Mistral (whose package is not installed here)",
    )
    remote.push()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITOPS_FLOW_")}
    command = [sys.executable, "-m", "gitops_flow", "serve", "--repo", remote.url, "--port", "0"]
    command += ["--data-dir", str(tmp_path / "data")]

    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)

    assert done.returncode == 1, done.stderr
    assert "langchain-mistralai" in done.stderr and "gitops-flow[mistralai]" in done.stderr
    assert "needed by mistral" in done.stderr and "langchain-openai" not in done.stderr
    assert "Traceback" not in done.stderr

    with serve_process(remote, tmp_path, args=["--fake-models"]) as server:  # faked models need no package
        assert server.invoke("mistral", Q).status_code == 200


def test_validate_and_plan_say_which_provider_packages_a_flow_needs(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    remote.publish({"flows/ok.json": model_flow("ok", None)})
    flows = remote.work / "flows"
    (flows / "mistral.json").write_text(
        model_flow("mistral", None, "mistralai:mistral-small-latest", fallbacks=["openai:gpt-4o-mini"])
    )
    base = [sys.executable, "-m", "gitops_flow"]

    validated = subprocess.run([*base, "validate", str(flows)], capture_output=True, text=True, cwd=remote.work)
    planned = subprocess.run([*base, "plan", "--base", "HEAD"], capture_output=True, text=True, cwd=remote.work)

    assert (
        "needs langchain-mistralai (model provider 'mistralai'; mistral): pip install 'gitops-flow[mistralai]' where "
        "it is served (not installed here)" in validated.stdout
    ), validated.stdout + validated.stderr
    assert "needs langchain-openai (model provider 'openai'; mistral, ok)" in validated.stdout
    assert "mistral (added)" in planned.stdout, planned.stdout + planned.stderr
    assert "provider packages: langchain-mistralai (pip install 'gitops-flow[mistralai]')" in planned.stdout
    assert "langchain-openai (pip install 'gitops-flow[openai]')" in planned.stdout


def test_an_outage_one_worker_saw_is_refused_at_once_by_the_others(tmp_path: Path) -> None:
    with openai_standin(answer_tokens=3) as flaky:
        remote = Remote.create(tmp_path)
        remote.publish({"flows/flaky.json": model_flow("flaky", flaky.base_url)})
        env = {
            "OPENAI_API_KEY": "sk-test-standin",
            "GITOPS_FLOW_ALLOWED_BASE_URLS": f"openai={flaky.base_url}",
            "GITOPS_FLOW_PROVIDER_BREAKER_FAILURES": str(FAILURES),
            "GITOPS_FLOW_PROVIDER_BREAKER_COOLDOWN": "60",
        }
        with serving(remote, tmp_path, 2, env=env) as w:
            first, second = sorted(w.pids)
            flaky.failing = Failing(500)
            for _ in range(FAILURES):
                assert error_of(w.answer(first, "flaky")) == (502, "provider-unavailable")
            received = flaky.received

            refused = w.answer(second, "flaky")

            assert error_of(refused) == (503, "provider-circuit-open"), refused.text
            assert flaky.received == received  # the second worker never called the provider
            flaky.failing = None
            assert error_of(w.answer(first, "flaky")) == (503, "provider-circuit-open")  # until the cooldown ends


def test_timeout_retries_and_fallbacks_are_checked_with_clear_problems(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    bounds = model_flow("bounds", None, timeout=0, max_retries=50)
    (flows / "bounds.json").write_text(bounds)
    unknown = model_flow("unknown", None, fallbacks=["nosuch:model-x", "https://elsewhere.example/v1"])
    (flows / "unknown.json").write_text(unknown)
    elsewhere = model_flow(
        "elsewhere", None, fallbacks=[{"model": "openai:gpt-4o", "base_url": "https://evil.example/v1"}]
    )
    (flows / "elsewhere.json").write_text(elsewhere)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITOPS_FLOW_")}

    done = subprocess.run(
        [sys.executable, "-m", "gitops_flow", "validate", "--format", "json", str(flows)],
        capture_output=True,
        text=True,
        env=env,
    )

    found = {(p["file"].rsplit("/", 1)[-1], p["code"], p["path"]) for p in json.loads(done.stdout)["problems"]}
    assert done.returncode == 1
    assert ("bounds.json", "bad-param", "$.nodes[1].params.timeout") in found, found
    assert ("unknown.json", "bad-param", "$.nodes[1].params.fallbacks[0]") in found, found
    assert ("elsewhere.json", "base-url-not-allowed", "$.nodes[1].params.fallbacks[0].base_url") in found, found
    messages = " ".join(p["message"] for p in json.loads(done.stdout)["problems"])
    assert "unknown model provider 'nosuch'" in messages


@pytest.mark.parametrize("stream", [False, True], ids=["run", "run-streamed"])
def test_langflows_run_api_answers_a_providers_failure_with_its_status(served: Served, stream: bool) -> None:
    response = served.server.client.post("/api/v1/run/wrong", json={"input_value": "hi", "stream": stream})

    assert error_of(response) == (500, "provider-rejected"), response.text
    assert "NotFoundError" in response.json()["error"]["message"]
