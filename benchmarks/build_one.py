"""In-process cost of compiling one flow document into a LangChain runnable, against building it by hand.

Times ``build_flow(spec, registry, dry_run=False, fakes=...)`` for the example flows in flows/ (model nodes
replaced by fake models, so no provider package or secret is needed), after a warm-up, with
time.perf_counter_ns around each call; reports median and p99 per build. For comparison it times, in the same
run and interleaved call by call, the same chains written by hand in LangChain
(ChatPromptTemplate | GenericFakeChatModel | StrOutputParser), and the ``ainvoke`` of the built support-bot flow
next to the hand-built chain's.

    python benchmarks/build_one.py
    python benchmarks/build_one.py --iterations 5000 --json benchmarks/results/build_one.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import time
from collections.abc import Callable, Mapping
from functools import partial
from itertools import cycle
from pathlib import Path
from typing import Any, cast

from _machine import describe, machine, save, stats, time_acalls
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableParallel

from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.flow.document import FlowSpec
from gitops_flow.runtime.compiler import build_flow
from gitops_flow.runtime.conversations import MemoryHistoryStore

FLOWS = ("support-bot", "triage", "assistant")
DEFAULT_FLOWS_DIR = Path(__file__).resolve().parent.parent / "flows"


def time_calls(calls: Mapping[str, Callable[[], object]], iterations: int, warmup: int) -> dict[str, list[float]]:
    """Microseconds of each of ``iterations`` calls of every function, after ``warmup`` untimed rounds.

    The functions are interleaved call by call, in an order reversed every round, so that drift of the machine
    and the cost of going first or second fall on all of them alike.
    """
    order = list(calls)
    for _ in range(warmup):
        for label in order:
            calls[label]()
    gc.collect()
    samples: dict[str, list[float]] = {label: [] for label in order}
    for index in range(iterations):
        for label in order if index % 2 == 0 else reversed(order):
            started = time.perf_counter_ns()
            calls[label]()
            samples[label].append((time.perf_counter_ns() - started) / 1000)
    return samples


def fakes_for(spec: FlowSpec, registry: ComponentRegistry) -> dict[str, list[str]]:
    """Fake answers for every model node: those of the flow's first test, else a fixed text."""
    given = spec.tests[0].fakes if spec.tests else {}
    models = [n.id for n in spec.nodes if registry.get(n.component).kind == "model"]
    return {node: list(given.get(node, [f"answer of {node}"])) for node in models}


def _messages(spec: FlowSpec, node: str) -> list[tuple[str, str]]:
    params = next(n.params for n in spec.nodes if n.id == node)
    return [(str(role), str(text)) for role, text in cast(list[list[str]], params["messages"])]


def _chain(spec: FlowSpec, prompt: str, responses: list[str]) -> Runnable[Any, Any]:
    """What a LangChain user writes by hand for prompt -> model -> parser."""
    return (
        ChatPromptTemplate.from_messages(_messages(spec, prompt))
        | GenericFakeChatModel(messages=cycle(responses))
        | StrOutputParser()
    )


def hand_built(name: str, spec: FlowSpec, fakes: dict[str, list[str]]) -> Callable[[], Runnable[Any, Any]] | None:
    """A function building ``name`` by hand in plain LangChain, or None when there is no like-for-like equivalent."""
    if name == "support-bot":
        return lambda: _chain(spec, "prompt", fakes["llm"])
    if name == "triage":
        return lambda: (
            RunnableParallel(
                category=_chain(spec, "classify", fakes["classifier"]),
                draft=_chain(spec, "draft-prompt", fakes["drafter"]),
            )
            | _chain(spec, "reply-prompt", fakes["writer"])
        )
    return None  # assistant: RunnableWithMessageHistory keeps history differently, so it would not compare


def _build(
    spec: FlowSpec, registry: ComponentRegistry, fakes: dict[str, list[str]], history: MemoryHistoryStore
) -> Runnable[Any, Any]:
    return build_flow(spec, registry, dry_run=False, fakes=fakes, history=history).runnable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=2000, help="timed builds per flow (default: 2000)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed builds first (default: 200)")
    parser.add_argument(
        "--invoke-iterations", type=int, default=500, help="timed ainvoke calls per runnable (default: 500)"
    )
    parser.add_argument("--flows-dir", type=Path, default=DEFAULT_FLOWS_DIR, help="where the example flows are")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    if args.iterations < 100 or args.invoke_iterations < 100 or args.warmup < 1:
        parser.error("need --iterations >= 100 and --invoke-iterations >= 100 (for a p99) and --warmup >= 1")

    # no tracing callbacks (nor network) whatever the environment says; read by LangChain at the first run
    for variable in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING"):
        os.environ[variable] = "false"
    info = machine()
    print(f"machine: {describe(info)}")
    print(
        f"{args.iterations} timed builds per row after {args.warmup} warm-up builds, built flow and hand-built chain "
        "interleaved; gc enabled; times in µs"
    )
    registry = ComponentRegistry.builtin()  # one registry for the process, as the server keeps it
    history = MemoryHistoryStore()  # the assistant keeps chat history; building never touches the store
    rows: list[dict[str, Any]] = []
    built: dict[str, Runnable[Any, Any]] = {}
    hand: dict[str, Runnable[Any, Any]] = {}
    for name in FLOWS:
        raw = (args.flows_dir / f"{name}.json").read_bytes()
        spec = FlowSpec.model_validate_json(raw)
        fakes = fakes_for(spec, registry)
        build = partial(_build, spec, registry, fakes, history)

        row: dict[str, Any] = {"flow": name, "nodes": len(spec.nodes), "edges": len(spec.edges)}
        parse = {"parse": partial(FlowSpec.model_validate_json, raw)}
        row["parse"] = stats(time_calls(parse, args.iterations, args.warmup)["parse"])
        by_hand = hand_built(name, spec, fakes)
        contenders: dict[str, Callable[[], object]] = {"build_flow": build}
        if by_hand is not None:
            contenders["hand_built"] = by_hand
        row |= {
            label: stats(samples) for label, samples in time_calls(contenders, args.iterations, args.warmup).items()
        }
        built[name] = build()
        if by_hand is not None:
            row["ratio_median"] = row["build_flow"]["median_us"] / row["hand_built"]["median_us"]
            hand[name] = by_hand()
            question = {"question": "I was charged twice this month."}
            ours, theirs = built[name].invoke(question), hand[name].invoke(question)
            if ours != theirs:
                raise SystemExit(f"{name}: the built flow answered {ours!r}, the hand-built chain {theirs!r}")
        rows.append(row)

    print()
    print(
        f"{'flow':<12} {'nodes':>5} {'parse med':>10} {'build med':>10} {'build p99':>10} "
        f"{'by hand med':>12} {'by hand p99':>12} {'ratio (med)':>12}"
    )
    for row in rows:
        hand_row = row.get("hand_built")
        hand_cols = (
            f"{hand_row['median_us']:>12.1f} {hand_row['p99_us']:>12.1f}" if hand_row else f"{'-':>12} {'-':>12}"
        )
        ratio = f"{row['ratio_median']:>11.2f}x" if hand_row else f"{'-':>12}"
        print(
            f"{row['flow']:<12} {row['nodes']:>5} {row['parse']['median_us']:>10.1f} "
            f"{row['build_flow']['median_us']:>10.1f} {row['build_flow']['p99_us']:>10.1f} {hand_cols} {ratio}"
        )

    question = {"question": "How do I get a refund?"}
    invokes: dict[str, dict[str, Any]] = {}

    async def measure() -> None:
        runnables = {"support-bot via build_flow": built["support-bot"], "support-bot by hand": hand["support-bot"]}
        calls = {label: partial(runnable.ainvoke, question) for label, runnable in runnables.items()}
        first, samples = await time_acalls(calls, args.invoke_iterations, args.warmup)
        invokes.update({label: {"first_us": first[label], **stats(samples[label])} for label in calls})

    asyncio.run(measure())
    print()
    print(
        f"ainvoke, {args.invoke_iterations} timed calls after the first and {args.warmup} warm-up calls, "
        "interleaved, in one event loop:"
    )
    print(f"{'runnable':<28} {'first':>10} {'median':>10} {'p99':>10}")
    for label, result in invokes.items():
        print(f"{label:<28} {result['first_us']:>10.1f} {result['median_us']:>10.1f} {result['p99_us']:>10.1f}")
    invoke_ratio = invokes["support-bot via build_flow"]["median_us"] / invokes["support-bot by hand"]["median_us"]
    print(f"ratio of medians (built / by hand): {invoke_ratio:.2f}x")

    result = {
        "machine": info,
        "iterations": args.iterations,
        "warmup": args.warmup,
        "builds": rows,
        "ainvoke": invokes,
        "ainvoke_ratio_median": invoke_ratio,
    }
    save(args.json, "build_one", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
