"""Token budgets hold under concurrency and cancellation (issue 21, finding 5), against a real `gitops-flow serve`
whose flows' ChatModel (langchain-openai) calls an OpenAI-compatible stand-in on loopback (tests/openaiapi.py): what
counts is what the stand-in billed.

The attacks: 40 requests at once against a budget of 1,000 were all admitted (120,520 tokens spent), with one worker
or two; 15 streams their clients left after the first chunk counted nothing (the usage comes with the last chunk).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gitops_flow.config import Settings
from gitops_flow.exceptions import ConfigError
from gitops_flow.guardrails.sqlite import SqliteCounters, counters_path
from tests.gitrepo import Remote
from tests.openaiapi import OpenAIStandIn, openai_standin
from tests.openaiapi import model_flow as openai_flow
from tests.process import ServeProcess, serve_process
from tests.redisenv import RedisSpace
from tests.test_workers import workers as serving

Q = {"question": "hi"}
MAX_TOKENS = 50
# what one request reserves (guardrails.estimate): ceil((len('{"question":"hi"}') + len("Q: {question}")) / 4) + the
# 16 of a call, and the model's max_tokens
RESERVATION = 8 + 16 + MAX_TOKENS


def model_flow(name: str, base_url: str, max_tokens: int | None = MAX_TOKENS, **document: Any) -> str:
    """prompt -> ChatModel (OpenAI's, at the stand-in; streams report their usage) -> parser."""
    stream_usage = {"stream_options": {"include_usage": True}}
    return openai_flow(
        name, base_url, temperature=0, model_kwargs=stream_usage, max_tokens=max_tokens, document=document
    )


@pytest.fixture(scope="module")
def standin() -> Iterator[OpenAIStandIn]:
    """Each answer takes a second (50 tokens, 20 ms apart): requests sent together overlap."""
    with openai_standin(token_delay=0.02) as running:
        yield running


def budgeted(tmp_path: Path, standin: OpenAIStandIn, limits: dict[str, Any], capless: tuple[str, ...] = ()) -> Remote:
    """A remote whose flows (one per entry of ``limits``) call the stand-in; those named in ``capless`` give their
    model no max_tokens."""
    remote = Remote.create(tmp_path)
    files = {
        f"flows/{name}.json": model_flow(name, standin.base_url, None if name in capless else MAX_TOKENS)
        for name in limits
    }
    remote.commit({**files, "gitops-flow.yaml": yaml.safe_dump({"limits": limits})}, "flows under token budgets")
    remote.push()
    return remote


def environment(standin: OpenAIStandIn) -> dict[str, str]:
    return {"OPENAI_API_KEY": "sk-test-standin", "GITOPS_FLOW_ALLOWED_BASE_URLS": f"openai={standin.base_url}"}


@contextmanager
def server_of(remote: Remote, tmp_path: Path, count: int, **options: Any) -> Iterator[ServeProcess]:
    """`gitops-flow serve --workers count`, once every worker is ready."""
    if count == 1:
        with serve_process(remote, tmp_path, **options) as server:
            yield server
    else:
        with serving(remote, tmp_path, count, **options) as ready:
            yield ready.server


def at_once(server: ServeProcess, flow: str, count: int) -> list[httpx.Response]:
    """``count`` invokes sent together, each on its own connection."""
    answers: list[httpx.Response] = []
    ready = threading.Barrier(count)

    def call() -> None:
        ready.wait(timeout=30)
        answers.append(httpx.post(f"{server.url}/flows/{flow}/invoke", json={"input": Q}, timeout=60))

    callers = [threading.Thread(target=call) for _ in range(count)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(timeout=90)
    return answers


@pytest.mark.parametrize(
    ("workers", "state"), [(1, "sqlite"), (2, "sqlite"), (2, "redis")], ids=["one-worker", "two-workers", "redis"]
)
def test_requests_at_once_spend_at_most_the_budget_and_one_reservation(
    standin: OpenAIStandIn, tmp_path: Path, request: pytest.FixtureRequest, workers: int, state: str
) -> None:
    remote = budgeted(tmp_path, standin, {"burst": {"tokens": {"budget": 1000, "window": "1h"}}})
    args: list[str] = []
    if state == "redis":
        space: RedisSpace = request.getfixturevalue("redis_space")
        args = ["--state", f"{space.url}?prefix={space.prefix}"]
    with server_of(remote, tmp_path, workers, env=environment(standin), args=args) as server:
        before = len(standin.calls())

        answers = at_once(server, "burst", 40)

        assert len(answers) == 40
        served = [a for a in answers if a.status_code == 200]
        refused = [a for a in answers if a.status_code != 200]
        assert served and refused, [a.status_code for a in answers]
        assert all(a.json()["output"] == " tok" * MAX_TOKENS for a in served)
        assert {(a.status_code, a.json()["error"]["code"]) for a in refused} == {(429, "token-budget-exhausted")}
        billed = standin.calls()[before:]
        assert len(billed) == len(served)  # a refused request calls no provider
        spent = sum(call.total for call in billed)
        assert spent <= 1000 + RESERVATION, f"{len(served)} requests spent {spent} tokens of a budget of 1,000"


@pytest.mark.parametrize("runtime", ["lean", "langchain"])
def test_streams_their_clients_leave_are_charged_at_least_what_the_provider_billed(
    standin: OpenAIStandIn, tmp_path: Path, runtime: str
) -> None:
    """On either executor (the lean program, or LangChain's runnables and callbacks)."""
    budget = {"tokens": {"budget": 100_000, "window": "1h"}}
    remote = budgeted(tmp_path, standin, {"left": budget, "capless": budget, "whole": budget}, capless=("capless",))
    env = {**environment(standin), "GITOPS_FLOW_BUDGET_MAX_TOKENS": "300", "GITOPS_FLOW_RUNTIME": runtime}
    with serve_process(remote, tmp_path, env=env) as server:
        before = len(standin.calls())

        for _ in range(15):
            leave_after_the_first_chunk(server, "left")

        standin.wait_for(lambda calls: len(calls) >= before + 15, what="the 15 streams")
        billed = standin.calls()[before:]
        assert len(billed) == 15
        prompts = sum(call.prompt_tokens for call in billed)
        assert prompts > 0
        counted = wait_counted(server, "tokens:left", prompts)
        assert counted >= prompts
        assert counted >= sum(call.total for call in billed)  # what was streamed (or made) after the prompt too

        # answers read to their end are charged what was billed, no more: the reservation's rest is given back
        before = len(standin.calls())
        assert server.invoke("whole", Q).status_code == 200
        streamed = server.client.post("/flows/whole/stream", json={"input": Q})
        assert streamed.status_code == 200 and "event: end" in streamed.text
        whole = sum(call.total for call in standin.calls()[before:])
        assert len(standin.calls()) == before + 2
        assert wait_counted(server, "tokens:whole", whole) == whole

        # a model without max_tokens reserves the operator's default cap; a stream left is charged all of it
        leave_after_the_first_chunk(server, "capless")
        assert wait_counted(server, "tokens:capless", RESERVATION - MAX_TOKENS + 300) == RESERVATION - MAX_TOKENS + 300


def leave_after_the_first_chunk(server: ServeProcess, flow: str) -> None:
    """A client that reads the first chunk of a flow's stream, then goes away (its connection closed)."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        with client.stream("POST", f"/flows/{flow}/stream", json={"input": Q}) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            while next(lines) != "event: data":
                pass


@pytest.mark.parametrize("value", ["0", "-5", "10000001", "many"])
def test_the_default_cap_a_budget_reserves_has_bounds(value: str) -> None:
    with pytest.raises(ConfigError, match="budget_max_tokens"):
        Settings.from_env({"GITOPS_FLOW_BUDGET_MAX_TOKENS": value})
    assert Settings.from_env({"GITOPS_FLOW_BUDGET_MAX_TOKENS": "512"}).budget_max_tokens == 512


def wait_counted(server: ServeProcess, key: str, at_least: int, timeout: float = 30.0) -> int:
    """What the server's limits file counts under ``key`` this hour, once it reaches ``at_least`` (the server
    settles a request as it notices its client left), or at the deadline."""
    counters = SqliteCounters(counters_path(server.data_dir / "state.db"))

    async def read() -> int:
        await counters.open()
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                used, _ = await counters.spent(key, 3600)
                if used >= at_least or loop.time() > deadline:
                    return used
                await asyncio.sleep(0.1)
        finally:
            await counters.close()

    return asyncio.run(read())


def test_a_tweak_of_max_tokens_reserves_what_it_lets_the_model_spend(tmp_path: Path) -> None:
    """LangFlow's run API: a flow whose max_tokens callers may tweak reserves the tweaked cap. Two requests at once,
    each letting the model answer 2,000 tokens against a budget of 1,000: the first reserves past the budget, the
    second is refused (reserving the flow's own 50, both ran: 4,000 tokens)."""
    with openai_standin(token_delay=0.001) as quick:
        flow = model_flow("tweaked", quick.base_url, tweakable={"llm": ["max_tokens"]})
        remote = Remote.create(tmp_path)
        limits = {"limits": {"tweaked": {"tokens": {"budget": 1000, "window": "1h"}}}}
        remote.commit({"flows/tweaked.json": flow, "gitops-flow.yaml": yaml.safe_dump(limits)}, "a tweakable flow")
        remote.push()
        with serve_process(remote, tmp_path, env=environment(quick)) as server:
            body = {"input_value": "hi", "tweaks": {"llm": {"max_tokens": 2000}}}
            answers: list[httpx.Response] = []
            ready = threading.Barrier(2)

            def call() -> None:
                ready.wait(timeout=30)
                answers.append(httpx.post(f"{server.url}/api/v1/run/tweaked", json=body, timeout=60))

            callers = [threading.Thread(target=call) for _ in range(2)]
            for caller in callers:
                caller.start()
            for caller in callers:
                caller.join(timeout=90)

            assert sorted(a.status_code for a in answers) == [200, 429], [a.text[:200] for a in answers]
            assert [call.completion_tokens for call in quick.calls()] == [2000]
