"""Where a gitops-flow ``/invoke`` spends its time, next to the bare Starlette endpoint, in one process.

No HTTP server and no TestClient: the script calls the ASGI applications directly (``await app(scope, receive,
send)``) in one uvloop event loop, one request after another, so that what is timed is the application's own
request path: routing, reading the body, choosing the version, checking the input, running the chain, writing the
answer. The same chain as benchmarks/serve_compare.py (PromptTemplate -> GenericFakeChatModel -> StrOutputParser),
served by gitops-flow (``create_app`` over a local bare repository, memory state) and by the bare endpoint of
benchmarks/_apps.py, interleaved call by call. Then it times the parts of gitops-flow's request path on their own
(the built flow's runnable against the hand-built chain, the input check, the response, ...); then CPU time per
request with 32 requests in flight at once (as at 32 connections), with the garbage collector's share, for gitops-flow,
for two what-if variants of its handler (patched in this process only) and for the bare endpoint, with the collector
as it is and after ``gc.freeze()``; last a cProfile of the gitops-flow calls (their own time, sorted), so that the
extra cost per request can be placed. The process is pinned to one CPU, as the servers of serve_compare.py are.

    python benchmarks/serve_profile.py
    python benchmarks/serve_profile.py --extra-flows 999      # the same with 1,000 flows loaded
    python benchmarks/serve_profile.py --iterations 5000 --profile-out benchmarks/results/serve_profile.pstats
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import os
import pstats
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from _apps import DEFAULT_ANSWER, bare_app, hand_chain, langserve_app
from _machine import describe, machine, median, percentile, time_acalls
from _serving import INVOKE_BODY, Remote, echo_flow
from starlette.requests import Request
from starlette.responses import Response

from gitops_flow.app import create_app
from gitops_flow.config import Settings
from gitops_flow.delivery import choice as choosing
from gitops_flow.server import edge as httpio
from gitops_flow.server import endpoints


def scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(INVOKE_BODY)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


def caller(app: Any, path: str) -> Callable[[], Awaitable[bytes]]:
    """A coroutine function making one request to ``app`` and returning the response body (checked 200)."""
    template = scope(path)

    async def call() -> bytes:
        sent = False
        body = bytearray()
        status = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": INVOKE_BODY, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))

        await app(dict(template), receive, send)
        if status != 200:
            raise SystemExit(f"{path} answered {status}: {bytes(body)[:300]!r}")
        return bytes(body)

    return call


async def timed(calls: dict[str, Callable[[], Awaitable[Any]]], iterations: int, warmup: int) -> dict[str, list[float]]:
    """Microseconds per call of each coroutine function, interleaved, order reversed every round."""
    _, samples = await time_acalls(calls, iterations, warmup)
    return samples


class GcClock:
    """Collections and microseconds spent in the garbage collector, per generation, from gc.callbacks."""

    def __init__(self) -> None:
        self.counts = [0, 0, 0]
        self.micros = [0.0, 0.0, 0.0]
        self._started = 0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter_ns()
        else:
            self.counts[info["generation"]] += 1
            self.micros[info["generation"]] += (time.perf_counter_ns() - self._started) / 1000

    def snapshot(self) -> tuple[list[int], list[float]]:
        return list(self.counts), list(self.micros)


async def burst(call: Callable[[], Awaitable[Any]], requests: int, concurrency: int, clock: GcClock) -> dict[str, Any]:
    """``requests`` calls made by ``concurrency`` tasks at once: CPU µs per request (the process's, the worker
    thread of the fake model included) and the garbage collector's share, per generation."""
    todo = iter(range(requests))

    async def worker() -> None:
        for _ in todo:
            await call()

    counts, micros = clock.snapshot()
    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu = (time.process_time() - started) / requests * 1e6
    after_counts, after_micros = clock.snapshot()
    return {
        "cpu_us": cpu,
        "gc_us": sum(after_micros) / requests - sum(micros) / requests,
        "gen2_per_1000": (after_counts[2] - counts[2]) * 1000 / requests,
        "gen2_ms_each": (after_micros[2] - micros[2]) / 1000 / max(1, after_counts[2] - counts[2]),
    }


async def concurrent(
    calls: dict[str, Callable[[], Awaitable[Any]]], rounds: int, requests: int, concurrency: int, clock: GcClock
) -> dict[str, dict[str, float]]:
    """Median over ``rounds`` interleaved rounds (order reversed every round) of each burst figure."""
    for call in calls.values():
        await burst(call, requests // 4, concurrency, clock)
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in calls}
    for index in range(rounds):
        for label in calls if index % 2 == 0 else reversed(calls):
            runs[label].append(await burst(calls[label], requests, concurrency, clock))
    return {label: {key: median([r[key] for r in rs]) for key in rs[0]} for label, rs in runs.items()}


async def lifespan_start(app: Any) -> tuple[asyncio.Queue[dict[str, Any]], asyncio.Task[Any]]:
    """Run an app's lifespan startup; returns what shuts it down."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    started = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()

    await queue.put({"type": "lifespan.startup"})
    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, queue.get, send))
    await started.wait()
    return queue, task


async def run(args: argparse.Namespace, repo: str, data: Path) -> dict[str, Any]:
    gitops = create_app(
        Settings(repo_url=repo, data_dir=data, load_entry_points=False, state="memory://", poll_interval=3600)
    )
    queue, life = await lifespan_start(gitops)
    deps = gitops.state.deps
    while deps.reconciler.table.head is None:
        await asyncio.sleep(0.01)
    apps = {"gitops-flow": caller(gitops, "/flows/echo/invoke"), "bare Starlette": caller(bare_app(), "/echo/invoke")}
    if args.langserve:
        apps["LangServe"] = caller(langserve_app(), "/echo/invoke")
    answers = {label: orjson.loads(await call())["output"] for label, call in apps.items()}
    assert len(set(answers.values())) == 1, answers

    whole = await timed(apps, args.iterations, args.warmup)

    # the parts of gitops-flow's path, on their own
    table = deps.reconciler.table
    flow = table.head.flows["echo"]
    chain = hand_chain(DEFAULT_ANSWER)
    value = {"question": "hi"}
    choice = table.default("echo")
    run_config = endpoints.run_config({"configurable": {}}, "echo", choice, uuid.uuid4())

    async def flow_plain() -> Any:
        return await flow.runnable.ainvoke(value)

    async def flow_configured() -> Any:
        return await flow.runnable.ainvoke(
            value, endpoints.run_config({"configurable": {}}, "echo", choice, uuid.uuid4())
        )

    async def hand() -> Any:
        return await chain.ainvoke(value)

    async def hand_configured() -> Any:
        return await chain.ainvoke(value, {**run_config, "run_id": uuid.uuid4()})

    async def check_input() -> None:
        choosing.check(flow, [value])

    async def uuid4() -> Any:
        return uuid.uuid4()

    async def response() -> Any:
        metadata = {"run_id": str(uuid.uuid4()), "feedback_tokens": [], **endpoints.version_metadata(choice)}
        return endpoints.json_response(
            {"output": DEFAULT_ANSWER, "metadata": metadata}, headers={endpoints.VERSION_HEADER: choice.version.sha}
        )

    async def bare_response() -> Any:
        return Response(orjson.dumps({"output": DEFAULT_ANSWER}), media_type="application/json")

    def request() -> Request:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": INVOKE_BODY, "more_body": False}

        return Request({**scope("/flows/echo/invoke"), "app": gitops, "path_params": {"flow": "echo"}}, receive)

    async def read_json() -> Any:
        return httpio.json_object(await httpio.read_json(request()), "the body")

    async def bare_read() -> Any:
        return orjson.loads(await request().body())

    async def choose() -> Any:
        return await endpoints.choose(request(), "echo", {})

    async def config() -> Any:
        req = request()
        return endpoints.run_config(httpio.request_config(req, None), "echo", choice, uuid.uuid4())

    parts = await timed(
        {
            "built flow .ainvoke(input)": flow_plain,
            "built flow .ainvoke(input, run config as /invoke passes it)": flow_configured,
            "hand-built chain .ainvoke(input)": hand,
            "hand-built chain .ainvoke(input, the same run config)": hand_configured,
            "choosing.check (pydantic input model)": check_input,
            "uuid.uuid4()": uuid4,
            "json_response(...) of the /invoke answer": response,
            "the bare endpoint's Response(orjson.dumps(...))": bare_response,
            "Request(...) + read_json + _object": read_json,
            "Request(...) + orjson.loads(await request.body()) (bare)": bare_read,
            "Request(...) + choose (no pin, no session)": choose,
            "Request(...) + request_config + run_config + uuid4": config,
        },
        args.iterations,
        args.warmup,
    )

    # many requests at once, as uvicorn runs them at 32 connections: CPU per request and the collector's share,
    # with what-if variants of the gitops-flow handler (patched in this process only, then restored)
    clock = GcClock()
    original_run_config, original_check = endpoints.run_config, choosing.check

    def without_run_metadata(config: dict[str, Any], flow: str, choice: Any, run_id: uuid.UUID) -> Any:
        return {"configurable": config.get("configurable", {})}

    def patched(run_config: Any, check: Any) -> Callable[[], Awaitable[bytes]]:
        async def call() -> bytes:
            endpoints.run_config, choosing.check = run_config, check
            try:
                return await apps["gitops-flow"]()
            finally:
                endpoints.run_config, choosing.check = original_run_config, original_check

        return call

    variants = {
        "gitops-flow": apps["gitops-flow"],
        "gitops-flow, what-if: no metadata/run_id/run_name in the run config": patched(
            without_run_metadata, original_check
        ),
        "gitops-flow, what-if: that and no input check": patched(without_run_metadata, lambda flow, value: None),
        "bare Starlette": apps["bare Starlette"],
    }
    gc.collect()
    tracked = len(gc.get_objects())
    loaded = await concurrent(variants, args.rounds, args.burst, args.concurrency, clock)
    gc.collect()
    gc.freeze()
    frozen = await concurrent(variants, args.rounds, args.burst, args.concurrency, clock)
    gc.unfreeze()

    profile = cProfile.Profile()
    call = apps["gitops-flow"]
    profile.enable()
    for _ in range(args.profile_iterations):
        await call()
    profile.disable()
    if args.profile_out:
        args.profile_out.parent.mkdir(parents=True, exist_ok=True)
        profile.dump_stats(str(args.profile_out))
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(args.top)
    cumulative = io.StringIO()
    pstats.Stats(profile, stream=cumulative).sort_stats("cumulative").print_stats(args.top)

    await queue.put({"type": "lifespan.shutdown"})
    await life
    return {
        "whole": whole,
        "parts": parts,
        "tracked": tracked,
        "concurrent": loaded,
        "concurrent_frozen": frozen,
        "profile_tottime": text.getvalue(),
        "profile_cum": cumulative.getvalue(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=3000, help="timed calls per row (default 3000)")
    parser.add_argument("--warmup", type=int, default=300, help="untimed calls first (default 300)")
    parser.add_argument("--profile-iterations", type=int, default=3000, help="requests under cProfile (3000)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests at once in the CPU section (32)")
    parser.add_argument("--burst", type=int, default=3000, help="requests per round in the CPU section (3000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds in the CPU section; medians (default 5)")
    parser.add_argument(
        "--extra-flows", type=int, default=0, help="more flows in the served commit, for a larger heap (default 0)"
    )
    parser.add_argument("--top", type=int, default=30, help="functions listed per profile (default 30)")
    parser.add_argument("--langserve", action="store_true", help="time LangServe's app in the same loop too")
    parser.add_argument("--profile-out", type=Path, metavar="PATH", help="write the cProfile stats to PATH")
    args = parser.parse_args(argv)
    for variable in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING"):
        os.environ[variable] = "false"
    info = describe(machine())
    available = sorted(os.sched_getaffinity(0))
    if len(available) >= 2:
        os.sched_setaffinity(0, {available[-1]})  # one CPU for the loop and the model's worker thread, as a server
    print(f"machine: {info}; this process pinned to CPU {sorted(os.sched_getaffinity(0))}")
    with tempfile.TemporaryDirectory(prefix="serve-profile-") as tmp:
        root = Path(tmp)
        remote = Remote.create(root)
        files = {"flows/echo.json": echo_flow(answer=DEFAULT_ANSWER)}
        files |= {f"flows/f{i:04}.json": echo_flow(f"f{i:04}", answer=f"answer {i}") for i in range(args.extra_flows)}
        remote.commit(files, "the echo flow and the others")
        remote.push()
        try:
            import uvloop
        except ImportError:
            result = asyncio.run(run(args, remote.url, root / "server"))
        else:
            result = uvloop.run(run(args, remote.url, root / "server"))

    def show(title: str, samples: dict[str, list[float]]) -> None:
        print()
        print(f"{title} ({args.iterations} calls each after {args.warmup} warm-up, interleaved; µs)")
        print(f"| {'what':<62} | {'median':>8} | {'p99':>8} |")
        print(f"| {'-' * 62} | {'-' * 8}: | {'-' * 8}: |")
        for label, values in samples.items():
            print(f"| {label:<62} | {median(values):>8.1f} | {percentile(values, 0.99):>8.1f} |")

    show("one request through the ASGI app, no server", result["whole"])
    show("parts of gitops-flow's request path", result["parts"])
    whole = {label: median(values) for label, values in result["whole"].items()}
    print()
    print(
        f"gitops-flow / bare, per request (medians): {whole['gitops-flow'] / whole['bare Starlette']:.3f}x, "
        f"+{whole['gitops-flow'] - whole['bare Starlette']:.1f} µs"
    )
    for title, key in (("garbage collector as is", "concurrent"), ("after gc.freeze()", "concurrent_frozen")):
        print()
        print(
            f"{args.concurrency} requests at once, {args.rounds} rounds of {args.burst}, medians; {title} "
            f"({result['tracked']:,} objects tracked before the freeze)"
        )
        print(f"| {'what':<70} | CPU µs/request | of which GC | gen2 per 1000 req | ms per gen2 |")
        print(f"| {'-' * 70} | ---: | ---: | ---: | ---: |")
        for label, row in result[key].items():
            print(
                f"| {label:<70} | {row['cpu_us']:.1f} | {row['gc_us']:.1f} | {row['gen2_per_1000']:.1f} | "
                f"{row['gen2_ms_each']:.1f} |"
            )
    print()
    print(f"cProfile of {args.profile_iterations} gitops-flow requests, by own time:")
    print(result["profile_tottime"])
    print("by cumulative time:")
    print(result["profile_cum"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
