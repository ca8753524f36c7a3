"""In-process CPU cost of running a built flow on the lean executor against its LangChain runnable, side by side.

Builds flows with build_flow (fake models, no latency) and runs each workload on both paths in alternating rounds,
measuring process CPU time (time.process_time) per round:

- invoke: sequential ``ainvoke`` of prompt -> FakeChatModel -> StrOutputParser (the support-bot shape);
- fan-out: sequential ``ainvoke`` of the triage example (a Passthrough entry, a classifier branch, a keyed fan-in);
- stream: concurrent ``astream`` of the same chain with a 20-token fake that yields to the event loop before each
  token (``asyncio.sleep(0)``, as a model waiting on its socket does), all streams at once; and, as the floor, the
  fake's own ``_astream`` alone on the same prompt (what any executor pays for this model).

Reports CPU µs per call, per stream and per token, and the ratio LangChain / lean.

    python benchmarks/lean_path.py
    python benchmarks/lean_path.py --calls 1000 --streams 1000 --rounds 6 --json benchmarks/results/lean_path.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from itertools import cycle
from pathlib import Path
from typing import Any

from _machine import describe, machine, save
from langchain_core.outputs import ChatGenerationChunk

from gitops_flow.components.base import BuildContext, Component
from gitops_flow.components.fake_model import FakeChatModel
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.flow.document import FlowSpec
from gitops_flow.runtime.compiler import BuiltFlow, build_flow
from gitops_flow.runtime.conversations import WithHistory
from gitops_flow.runtime.executor import run_lean

FLOWS = Path(__file__).resolve().parent.parent / "flows"
TOKENS = 20


class YieldingFake(FakeChatModel):
    """The built-in fake, yielding to the event loop before each streamed token."""

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:  # type: ignore[override]
        async for chunk in super()._astream(*args, **kwargs):
            await asyncio.sleep(0)
            yield chunk


def yielding(ctx: BuildContext, *, responses: list[str]) -> Any:
    return YieldingFake(messages=cycle(responses))


REGISTRY = ComponentRegistry.builtin().extended([Component("YieldingFake", yielding, "model", takes_context=True)])


def chain(model: str, answer: str) -> FlowSpec:
    return FlowSpec.model_validate(
        {
            "version": 1,
            "name": "chain",
            "nodes": [
                {"id": "prompt", "component": "PromptTemplate", "params": {"template": "Answer briefly: {question}"}},
                {"id": "llm", "component": model, "params": {"responses": [answer]}},
                {"id": "answer", "component": "StrOutputParser"},
            ],
            "edges": [{"source": "prompt", "target": "llm"}, {"source": "llm", "target": "answer"}],
        }
    )


def triage() -> tuple[FlowSpec, dict[str, list[str]], Any]:
    doc = json.loads((FLOWS / "triage.json").read_text())
    case = doc["tests"][0]
    return FlowSpec.model_validate(doc), case["fakes"], case["input"]


async def cpu_rounds(workloads: dict[str, Callable[[], Awaitable[None]]], rounds: int) -> dict[str, list[float]]:
    """CPU seconds of each workload per round, the workloads alternating (order reversed every round)."""
    order = list(workloads)
    for label in order:  # warm-up: imports, first calls, caches
        await workloads[label]()
    found: dict[str, list[float]] = {label: [] for label in order}
    for index in range(rounds):
        for label in order if index % 2 == 0 else reversed(order):
            gc.collect()
            started = time.process_time()
            await workloads[label]()
            found[label].append(time.process_time() - started)
    return found


def sequential(built: BuiltFlow, lean: bool, value: Any, calls: int) -> Callable[[], Awaitable[None]]:
    runner = run_lean(built, lean)

    async def run() -> None:
        for _ in range(calls):
            await runner.ainvoke(value, {})

    return run


def concurrent_streams(built: BuiltFlow, lean: bool, value: Any, streams: int) -> Callable[[], Awaitable[None]]:
    runner = run_lean(built, lean)

    async def one() -> int:
        return sum([1 async for _ in runner.astream(value, {})])

    async def run() -> None:
        counts = await asyncio.gather(*(one() for _ in range(streams)))
        assert all(c == TOKENS for c in counts), counts[:3]

    return run


def model_alone(built: BuiltFlow, value: Any, streams: int) -> Callable[[], Awaitable[None]]:
    """The floor: the flow's fake model's own ``_astream`` on the formatted prompt, no executor around it."""
    prompt, model = (built.spec.nodes[0].id, built.spec.nodes[1].id)
    lean = built.lean
    assert lean is not None and not isinstance(lean, WithHistory)
    messages = lean.forms[prompt].runnable.invoke(value).to_messages()
    fake = lean.forms[model].runnable

    async def one() -> int:
        return sum([1 async for _ in fake._astream(messages)])  # type: ignore[attr-defined]

    async def run() -> None:
        await asyncio.gather(*(one() for _ in range(streams)))

    return run


async def measure(calls: int, streams: int, rounds: int) -> dict[str, Any]:
    question = {"question": "where is my order?"}
    answer = "".join(f"w{i} " for i in range(TOKENS // 2))  # a word and a space each: TOKENS tokens
    plain = build_flow(chain("FakeChatModel", answer), REGISTRY)
    streaming = build_flow(chain("YieldingFake", answer), REGISTRY)
    spec, fakes, triage_input = triage()
    fanned = build_flow(spec, REGISTRY, fakes=fakes)
    workloads = {
        ("invoke", "lean"): sequential(plain, True, question, calls),
        ("invoke", "langchain"): sequential(plain, False, question, calls),
        ("fan-out", "lean"): sequential(fanned, True, triage_input, calls),
        ("fan-out", "langchain"): sequential(fanned, False, triage_input, calls),
        ("stream", "lean"): concurrent_streams(streaming, True, question, streams),
        ("stream", "langchain"): concurrent_streams(streaming, False, question, streams),
        ("floor", "model"): model_alone(streaming, question, streams),
    }
    seconds = await cpu_rounds({f"{w}/{p}": f for (w, p), f in workloads.items()}, rounds)
    results: dict[str, Any] = {}
    for work, per in (("invoke", calls), ("fan-out", calls), ("stream", streams)):
        row: dict[str, Any] = {}
        for path in ("lean", "langchain"):
            samples = sorted(seconds[f"{work}/{path}"])
            median = samples[len(samples) // 2]
            row[path] = {"cpu_us_per_call": median / per * 1e6, "rounds_s": samples}
            if work == "stream":
                row[path]["cpu_us_per_token"] = median / (per * TOKENS) * 1e6
        row["ratio"] = row["langchain"]["cpu_us_per_call"] / row["lean"]["cpu_us_per_call"]
        results[work] = row
    floor = sorted(seconds["floor/model"])[len(seconds["floor/model"]) // 2]
    results["floor"] = {
        "cpu_us_per_stream": floor / streams * 1e6,
        "cpu_us_per_token": floor / (streams * TOKENS) * 1e6,
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="sequential ainvoke calls per round (default 1000)")
    parser.add_argument("--streams", type=int, default=1000, help="concurrent streams per round (default 1000)")
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds per workload and path (default 6)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures as JSON to this path")
    args = parser.parse_args()
    info = machine()
    print(describe(info))
    results = asyncio.run(measure(args.calls, args.streams, args.rounds))
    print(f"\nCPU per call, median of {args.rounds} rounds (lean executor against the flow's LangChain runnable)")
    print(f"{'workload':<44} {'lean':>12} {'langchain':>12} {'ratio':>7}")
    labels = {
        "invoke": f"invoke, prompt -> model -> parser ({args.calls:,} calls)",
        "fan-out": f"invoke, triage fan-out/fan-in ({args.calls:,} calls)",
        "stream": f"stream, {TOKENS} tokens, {args.streams:,} at once",
    }
    for work in labels:
        row = results[work]
        lean, langchain = row["lean"]["cpu_us_per_call"], row["langchain"]["cpu_us_per_call"]
        print(f"{labels[work]:<44} {lean:>10,.0f}µs {langchain:>10,.0f}µs {row['ratio']:>6.1f}×")
    stream = results["stream"]
    print(
        f"{'  per token':<44} {stream['lean']['cpu_us_per_token']:>10,.1f}µs "
        f"{stream['langchain']['cpu_us_per_token']:>10,.1f}µs"
    )
    floor = results["floor"]
    print(
        f"{'  the fake model alone (its _astream), per token':<44} {floor['cpu_us_per_token']:>10,.1f}µs"
        "  (what any executor pays for this fake)"
    )
    save(args.json, "lean_path", {"machine": info, "results": results, "tokens": TOKENS})


if __name__ == "__main__":
    main()
