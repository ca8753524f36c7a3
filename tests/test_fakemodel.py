"""FakeChatModel: its latency is waited by invoke and stream, off the event loop's back, bounded; it is served as is
(--fake-models leaves it alone), so a slow fake breaks a canary's p99 budget on a real server.

No test asserts an upper bound on time: each checks that an answer took at least its latency, or the order in
which things happened.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from itertools import cycle
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops_flow.components import fake_model as fakemodel
from gitops_flow.components.builtins import MAX_LATENCY_MS, MAX_TOKEN_LATENCY_MS
from gitops_flow.components.fake_model import MAX_WAIT_S, FakeChatModel
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.flow.document import FlowSpec
from gitops_flow.runtime.compiler import build_flow
from gitops_flow.validation.documents import validate_bytes
from tests.gitrepo import Remote
from tests.helpers import chain
from tests.process import serve_process
from tests.served import echo_flow, wait_until
from tests.test_api import events_of

ANSWER = "one two three"  # five chunks: three words and the two spaces between them


def slow_flow(name: str = "slow", answer: str = ANSWER, **latency: int) -> str:
    doc = json.loads(echo_flow(name, answer=answer))
    doc["nodes"][1]["params"].update(latency)
    return json.dumps(doc)


def test_invoke_and_stream_each_take_at_least_the_latency_of_every_token() -> None:
    model = FakeChatModel(messages=cycle([ANSWER]), latency=0.05, token_latency=0.02)
    least = 0.05 + 5 * 0.02

    async def timed() -> tuple[float, float, list[float]]:
        started = time.perf_counter()
        assert (await model.ainvoke("q")).content == ANSWER
        invoked = time.perf_counter() - started
        started, arrivals = time.perf_counter(), []
        async for _ in model.astream("q"):
            arrivals.append(time.perf_counter() - started)
        return invoked, arrivals[-1], arrivals

    invoked, streamed, arrivals = asyncio.run(timed())
    assert invoked >= least and streamed >= least
    assert arrivals[0] >= 0.05 + 0.02  # the first chunk waits for the answer, then for itself
    assert [chunk.content for chunk in model.stream("q")] == ["one", " ", "two", " ", "three"]


def test_a_waiting_fake_leaves_the_event_loop_free() -> None:
    model = FakeChatModel(messages=cycle([ANSWER]), latency=0.3)

    async def race() -> bool:
        slow = asyncio.create_task(model.ainvoke("q"))
        await asyncio.sleep(0.01)  # this timer is due first: it fires while the fake waits, unless the wait blocks
        was_waiting = not slow.done()
        await slow
        return was_waiting

    assert asyncio.run(race())


def test_the_async_paths_never_block(monkeypatch: pytest.MonkeyPatch) -> None:
    waited: list[float] = []

    def blocking(seconds: float) -> None:
        raise AssertionError("time.sleep on the event loop")

    async def sleep(seconds: float) -> None:
        waited.append(seconds)

    monkeypatch.setattr(fakemodel.time, "sleep", blocking)
    monkeypatch.setattr(fakemodel.asyncio, "sleep", sleep)
    model = FakeChatModel(messages=cycle([ANSWER]), latency=0.5, token_latency=0.1)
    asyncio.run(model.ainvoke("q"))
    assert sum(waited) == pytest.approx(0.5 + 5 * 0.1)
    waited.clear()
    assert asyncio.run(_drain(model)) == ANSWER
    assert waited == pytest.approx([0.5, 0.1, 0.1, 0.1, 0.1, 0.1])


async def _drain(model: FakeChatModel) -> str:
    return "".join([str(chunk.content) async for chunk in model.astream("q")])


def test_an_answer_waits_at_most_max_wait_in_all(monkeypatch: pytest.MonkeyPatch) -> None:
    waited: list[float] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)

    monkeypatch.setattr(fakemodel.asyncio, "sleep", sleep)
    model = FakeChatModel(messages=cycle(["word " * 200]), latency=50.0, token_latency=1.0)
    assert asyncio.run(_drain(model)) == "word " * 200
    assert sum(waited) == MAX_WAIT_S
    waited.clear()
    asyncio.run(model.ainvoke("q"))
    assert waited == [MAX_WAIT_S]


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"latency_ms": MAX_LATENCY_MS + 1}, "$.nodes[1].params.latency_ms"),
        ({"token_latency_ms": MAX_TOKEN_LATENCY_MS + 1}, "$.nodes[1].params.token_latency_ms"),
        ({"latency_ms": -1}, "$.nodes[1].params.latency_ms"),
    ],
    ids=["latency-too-long", "token-latency-too-long", "negative"],
)
def test_latencies_are_bounded(params: dict[str, int], path: str) -> None:
    report = validate_bytes(slow_flow(**params).encode(), ComponentRegistry.builtin(), file="slow.json", stem="slow")
    assert [(p.code, p.path) for p in report.problems] == [("bad-param", path)]


def test_a_dry_build_never_waits() -> None:
    doc = chain(
        ("prompt", "PromptTemplate", {"template": "{question}"}),
        ("llm", "FakeChatModel", {"responses": ["ok"], "latency_ms": MAX_LATENCY_MS}),
    )
    built = build_flow(FlowSpec.model_validate(doc), ComponentRegistry.builtin(), dry_run=True)
    llm = built.runnable.steps[1]  # type: ignore[attr-defined]
    assert (llm.latency, llm.token_latency) == (0.0, 0.0)


# -- served ----------------------------------------------------------------------------------------------------------


def test_a_served_fake_takes_its_latency_over_http_and_fake_models_leaves_its_answers_alone(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    own = json.loads(slow_flow(latency_ms=300, token_latency_ms=20))
    fakes = {"llm": ["a test's fake"]}
    own["tests"] = [{"name": "faked", "input": {"question": "q"}, "fakes": fakes, "expect": {"contains": "fake"}}]
    remote.commit({"flows/slow.json": json.dumps(own)}, "a slow fake")
    remote.push()
    with serve_process(remote, tmp_path, args=["--fake-models"]) as server:
        started = time.perf_counter()
        invoked = server.invoke("slow", {"question": "q"})
        invoke_took = time.perf_counter() - started
        assert invoked.status_code == 200, invoked.text
        assert invoked.json()["output"] == ANSWER  # its own response, not the test's fake

        started, first, text = time.perf_counter(), None, ""
        with server.client.stream("POST", "/flows/slow/stream", json={"input": {"question": "q"}}) as streamed:
            for block in streamed.iter_text():
                text += block
                if first is None and "event: data" in text:
                    first = time.perf_counter() - started
        events = events_of(text)
    least = 0.3 + 5 * 0.02
    assert invoke_took >= least
    assert first is not None and first >= 0.3 + 0.02  # the first token comes after the answer's and its own latency
    assert "".join(data for kind, data in events if kind == "data") == ANSWER


def test_a_canary_with_a_slow_fake_breaks_the_p99_budget_and_is_aborted(tmp_path: Path) -> None:
    routing = {
        "routes": {"default": [{"ref": "stable", "weight": 50}, {"ref": "main", "weight": 50}]},
        "analysis": {"window": "60s", "min_requests": 5, "max_error_rate": 0.5, "max_p99_ms": 100},
    }
    remote = Remote.create(tmp_path)
    fast = remote.commit({"flows/slow.json": slow_flow(), "gitops-flow.yaml": yaml.safe_dump(routing)}, "fast")
    remote.tag("stable", fast)
    slow = remote.commit({"flows/slow.json": slow_flow(latency_ms=200)}, "slow")
    remote.push()
    remote.push_tags()
    env = {"GITOPS_FLOW_ANALYSIS_INTERVAL": "0.05"}
    with serve_process(remote, tmp_path, env=env) as server:
        refs: Counter[str] = Counter()
        for n in range(30):
            response = server.invoke("slow", {"question": "q"}, headers={"X-Flow-User": f"u{n}"})
            assert response.status_code == 200, response.text
            refs[response.json()["metadata"]["ref"]] += 1
        assert refs["main"] >= 5, refs  # enough of the canary's share to judge it

        def history() -> list[dict[str, Any]]:
            events: list[dict[str, Any]] = server.client.get("/history").json()["events"]
            return events

        wait_until(lambda: any(e["event"] == "aborted" for e in history()), what="the abort")
        aborted = next(e for e in history() if e["event"] == "aborted")
        assert (aborted["sha"], aborted["ref"]) == (slow, "main")
        assert "p99 latency" in aborted["reason"] and aborted["error_rate"] == 0
        wait_until(
            lambda: all(
                server.invoke("slow", {"question": "q"}, headers={"X-Flow-User": f"u{n}"}).json()["metadata"]["ref"]
                == "stable"
                for n in range(30)
            ),
            what="every user on stable",
        )
