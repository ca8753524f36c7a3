"""What observability and guardrails cost per request, side by side in one run: tracing off and on, a limit check on
each state backend, and a cached answer against a run.

1. tracing: three servers (create_app) in this process: one without tracing, one exporting every span over
   OTLP/HTTP to a receiver on loopback (the batch processor's thread sends them), and one whose sampler keeps no
   trace (``OTEL_TRACES_SAMPLER=always_off``: what a request left out by a ratio sampler costs), each answering
   ``POST /flows/echo/invoke`` (prompt -> fake model -> parser) through httpx's ASGI transport; requests alternate
   between them call by call. Reports µs per request, median and p99, and the spans the receiver decoded.
2. limits: the gate's admission of one request and its release at the end (what the server does per request of a
   limited flow), on the memory, SQLite and Redis counters, interleaved call by call: a rate alone
   (``requests_per_second``), runs at once alone (``concurrent``: hold, then let go), and a flow with a rate, runs
   at once, a token budget and a per-user rate together. Limits high enough never to refuse.
3. the cache: two servers (SQLite state: the cache in memory; Redis state: the cache in Redis), each serving one flow
   twice, once with ``cache:`` in the routing file and once without; per server, a request that runs the uncached
   flow, a miss of the cached one (a new input: it runs and its answer is kept) and a hit (an input asked before).

    python benchmarks/observe.py                          # 3000 timed requests or checks per variant
    python benchmarks/observe.py --quick                  # 300
    python benchmarks/observe.py --json benchmarks/results/observe.json

Redis is REDIS_URL (default redis://127.0.0.1:6379/0); keys go under a prefix of the run's own, deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import redis
import uvloop
from _machine import describe, machine, save, stats, time_acalls
from _serving import Remote, echo_flow

from gitops_flow.app import create_app
from gitops_flow.config import Settings
from gitops_flow.flow.routing import FlowLimits
from gitops_flow.guardrails.counters import Counters
from gitops_flow.guardrails.gate import Gate
from gitops_flow.guardrails.memory import MemoryCounters
from gitops_flow.guardrails.redis import RedisGuardrails
from gitops_flow.guardrails.sqlite import SqliteCounters
from gitops_flow.observability.telemetry.context import RequestContext
from gitops_flow.observability.telemetry.tracing import Tracing

Q = {"question": "hi"}
LIMITS = {
    "rate": FlowLimits(requests_per_second=1_000_000),
    "concurrent": FlowLimits(concurrent=100_000),
    "rate+runs+budget+user": FlowLimits.model_validate(
        {
            "requests_per_second": 1_000_000,
            "concurrent": 100_000,
            "tokens": {"budget": 10**12, "window": "1h"},
            "per_user": {"requests_per_second": 1_000_000},
        }
    ),
}


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and a client that calls it in this process (no sockets)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            for _ in range(200):
                if (await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError("the server did not become ready")
            yield client


def settings(repo: Remote, folder: Path, name: str, **values: Any) -> Settings:
    return Settings(repo_url=repo.url, data_dir=folder / name, poll_interval=3600.0, load_entry_points=False, **values)


def invoke(client: httpx.AsyncClient, flow: str, value: Any) -> Callable[[], Awaitable[object]]:
    async def call() -> object:
        response = await client.post(f"/flows/{flow}/invoke", json={"input": value})
        if response.status_code != 200:
            raise RuntimeError(f"{flow}: {response.status_code} {response.text}")
        return response

    return call


async def tracing_cost(folder: Path, iterations: int, warmup: int) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from tests.receiver import receiver

    (folder / "tracing").mkdir()
    repo = Remote.create(folder / "tracing")
    repo.commit({"flows/echo.json": echo_flow()}, "echo")
    repo.push()
    with receiver(answer=b"", content_type="application/x-protobuf") as collector:
        otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url}
        off = create_app(settings(repo, folder, "off"))
        on = create_app(settings(repo, folder, "on"), tracing=Tracing.from_environ(otlp))
        dropped = Tracing.from_environ({**otlp, "OTEL_TRACES_SAMPLER": "always_off"})
        out = create_app(settings(repo, folder, "sampled-out"), tracing=dropped)
        async with serving(off) as plain, serving(on) as traced, serving(out) as sampled_out:
            first, samples = await time_acalls(
                {
                    "tracing off": invoke(plain, "echo", Q),
                    "tracing on, sampled out": invoke(sampled_out, "echo", Q),
                    "tracing on (OTLP)": invoke(traced, "echo", Q),
                },
                iterations,
                warmup,
            )
        # the lifespan's end sent what was still buffered
        spans = 0
        for request in collector.requests:
            message = ExportTraceServiceRequest()
            message.ParseFromString(request.body)
            spans += sum(len(s.spans) for r in message.resource_spans for s in r.scope_spans)
    return {
        "variants": {label: stats(values) for label, values in samples.items()},
        "spans_exported": spans,
        "requests_traced": iterations + warmup + 1,
    }


async def limit_cost(folder: Path, redis_url: str, prefix: str, iterations: int, warmup: int) -> dict[str, Any]:
    backends: dict[str, Counters] = {
        "memory": MemoryCounters(),
        "sqlite": SqliteCounters(folder / "state-limits.db"),
        "redis": RedisGuardrails(f"{redis_url}?prefix={prefix}").counters,
    }
    for counters in backends.values():
        await counters.open()
    results: dict[str, Any] = {}
    try:
        for name, limits in LIMITS.items():
            calls = {}
            for label, counters in backends.items():
                gate = Gate(counters)

                async def admit_and_settle(gate: Gate = gate, limits: FlowLimits = limits) -> object:
                    context = RequestContext("POST", "/flows/echo/invoke")
                    await gate.admit(context, "echo", limits, "main", "alice")
                    if context.meter is not None:  # a run of 10 tokens, settled by the finalizer below
                        context.meter.run_started()
                        context.meter.run_ended(10, True)
                    for finish in context.finalizers:
                        await finish(context)
                    return None

                calls[label] = admit_and_settle
            _, samples = await time_acalls(calls, iterations, warmup)
            results[name] = {label: stats(values) for label, values in samples.items()}
    finally:
        for counters in backends.values():
            await counters.close()
    return results


async def cache_cost(folder: Path, redis_url: str, prefix: str, iterations: int, warmup: int) -> dict[str, Any]:
    (folder / "cache").mkdir()
    repo = Remote.create(folder / "cache")
    routing = "cache:\n  cached: {ttl: 1h}\n"
    repo.commit(
        {"flows/cached.json": echo_flow("cached"), "flows/plain.json": echo_flow("plain"), "gitops-flow.yaml": routing},
        "two flows, one cached",
    )
    repo.push()
    apps = {
        "memory cache (SQLite state)": create_app(settings(repo, folder, "sqlite")),
        "Redis cache (Redis state)": create_app(settings(repo, folder, "redis", state=f"{redis_url}?prefix={prefix}")),
    }
    results: dict[str, Any] = {}
    for label, app in apps.items():
        async with serving(app) as client:
            fresh = iter(range(10**9))  # each miss asks what was never asked

            async def miss(client: httpx.AsyncClient = client, counter: Any = fresh) -> object:
                return await invoke(client, "cached", {"question": f"new question {next(counter)}"})()

            await invoke(client, "cached", Q)()  # the answer every hit finds
            _, samples = await time_acalls(
                {
                    "run (not cached)": invoke(client, "plain", Q),
                    "miss (run + keep)": miss,
                    "hit": invoke(client, "cached", Q),
                },
                iterations,
                warmup,
            )
        results[label] = {variant: stats(values) for variant, values in samples.items()}
    return results


def _delete(redis_url: str, prefix: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.unlink(*keys)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=3000, help="timed calls per variant (default: 3000)")
    parser.add_argument("--warmup", type=int, default=300, help="untimed calls first (default: 300)")
    parser.add_argument("--quick", action="store_true", help="300 timed calls after 30 warm-up ones")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    if args.quick:
        args.iterations, args.warmup = 300, 30
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        with redis.Redis.from_url(redis_url, socket_connect_timeout=2) as client:
            version = client.info("server").get("redis_version")
    except redis.RedisError as exc:
        print(f"observe: no Redis at {redis_url}: {exc}", file=sys.stderr)
        return 1
    info = machine()
    info["redis_server"] = {"version": version, "url": redis_url}
    print(f"machine: {describe(info)}")
    print(f"Redis {version} at {redis_url}; {args.iterations} timed calls per variant after {args.warmup}, interleaved")
    prefix = f"gf-bench:{uuid4().hex}:"
    try:
        with tempfile.TemporaryDirectory(prefix="gf-observe-") as name:
            folder = Path(name)
            tracing = uvloop.run(tracing_cost(folder, args.iterations, args.warmup))
            limits = uvloop.run(limit_cost(folder, redis_url, prefix, args.iterations, args.warmup))
            cache = uvloop.run(cache_cost(folder, redis_url, prefix + "app:", args.iterations, args.warmup))
    finally:
        _delete(redis_url, prefix)

    print("\n1. tracing, µs per request (in process, httpx's ASGI transport)")
    _table(tracing["variants"])
    print(f"   spans exported: {tracing['spans_exported']} for {tracing['requests_traced']} traced requests")
    print("\n2. a limit check: admission and release of one request, µs")
    for name, row in limits.items():
        print(f"   {name}")
        _table(row, indent="     ")
    print("\n3. the cache, µs per request")
    for name, row in cache.items():
        print(f"   {name}")
        _table(row, indent="     ")
    save(
        args.json,
        "observe",
        {
            "machine": info,
            "iterations": args.iterations,
            "warmup": args.warmup,
            "tracing": tracing,
            "limits": limits,
            "cache": cache,
        },
    )
    return 0


def _table(row: dict[str, dict[str, float]], indent: str = "   ") -> None:
    for label, result in row.items():
        print(f"{indent}{label:<28} median {result['median_us']:>9.1f}   p99 {result['p99_us']:>9.1f}")


if __name__ == "__main__":
    raise SystemExit(main())
