"""Per-operation cost of the three state stores side by side: memory, a SQLite file and Redis on loopback.

Times, in one event loop, what the server does per request with its state store: claim a session's pin, one
conversation turn (load_turns then append_turns), one canary sample (add_samples then sum_samples) and recording a
deploy event (add_event). Every call is timed with time.perf_counter_ns, the backends interleaved call by call in
an order reversed every round, so that drift of the machine falls on all of them alike. Reports µs per operation,
median and p99, the ratio of each median to the memory store's, and for Redis the µs per operation that the server
itself spent running commands (from INFO commandstats: the rest is the client, the event loop and loopback). A
ping of each store is timed too, as the floor: one round trip to the backend and back, with no work in it.

    python benchmarks/store_ops.py                       # 5000 timed operations per backend and operation
    python benchmarks/store_ops.py --quick               # 500, for a quick look
    python benchmarks/store_ops.py --loop asyncio        # on asyncio's own event loop instead of uvloop
    python benchmarks/store_ops.py --runs 5 --json benchmarks/results/store_ops.json

Redis is REDIS_URL (default redis://127.0.0.1:6379/0); the keys are written under a prefix of the run's own and
deleted at the end. Without a reachable Redis the script says so and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar
from uuid import uuid4

import redis
import uvloop
from _machine import describe, machine, save, stats

from gitops_flow.exceptions import StoreError
from gitops_flow.runtime.conversations import TurnLimits
from gitops_flow.stores import MemoryStore, SqliteStore, StateStore
from gitops_flow.stores.redis import RedisStore

SESSIONS = 1_000  # session pins cycled through: most claims find a live pin, as returning users do
CONVERSATIONS = 200  # sessions whose conversations grow by one turn per operation
HISTORY = 20  # turns a chat flow loads per request
SESSION_TTL = 1_800.0
SAMPLE_TTL = 600.0
SAMPLES_PER_SLOT = 100  # operations per time slot, so sums cover several slots
WINDOW_SLOTS = 6  # slots a sum covers (a 60 s window of 10 s slots)

T = TypeVar("T")
TOP_LEVEL_COMMANDS = ("ping", "evalsha", "eval", "lrange", "multi", "exec")  # what the timed operations send

Operation = Callable[[StateStore, int], Awaitable[object]]

LIMITS = TurnLimits()  # the server's defaults


async def claim_pin(store: StateStore, n: int) -> object:
    return await store.claim_pin(f"support-bot:session-{n % SESSIONS}", "a" * 40, SESSION_TTL)


async def conversation_turn(store: StateStore, n: int) -> object:
    session = f"session-{n % CONVERSATIONS}"
    await store.load_turns(session, HISTORY)
    turns = [("human", f"question {n}: how do I get a refund?"), ("ai", f"answer {n}")]
    await store.append_turns(session, turns, ttl=LIMITS.ttl, keep=LIMITS.max_turns)
    return None


async def canary_sample(store: StateStore, n: int) -> object:
    slot = n // SAMPLES_PER_SLOT
    key = "support-bot:main:" + "b" * 40
    await store.add_samples(slot, {key: {"requests": 1, "errors": int(n % 50 == 0), "le_500ms": 1}}, SAMPLE_TTL)
    return await store.sum_samples(key, since=slot - WINDOW_SLOTS + 1)


async def add_event(store: StateStore, n: int) -> object:
    event = {"kind": "deployed", "sha": f"{n:040x}", "time": 1_790_000_000.0 + n, "trigger": "poll", "flows": ["a"]}
    return await store.add_event(event)


async def ping(store: StateStore, n: int) -> object:
    return await store.ping()


OPERATIONS: dict[str, Operation] = {
    "ping (the floor)": ping,
    "claim_pin": claim_pin,
    "load_turns+append_turns": conversation_turn,
    "add_samples+sum_samples": canary_sample,
    "add_event": add_event,
}


async def time_operation(
    operation: Operation, stores: dict[str, StateStore], iterations: int, start: int
) -> dict[str, list[float]]:
    """Microseconds of each of ``iterations`` calls per store, interleaved; ``start`` numbers the first call."""
    order = list(stores)
    gc.collect()
    samples: dict[str, list[float]] = {label: [] for label in order}
    for index in range(iterations):
        n = start + index
        for label in order if index % 2 == 0 else reversed(order):
            started = time.perf_counter_ns()
            await operation(stores[label], n)
            samples[label].append((time.perf_counter_ns() - started) / 1000)
    return samples


async def warm_up(operation: Operation, stores: dict[str, StateStore], rounds: int) -> None:
    for n in range(rounds):
        for store in stores.values():
            await operation(store, n)


async def measure(redis_url: str, folder: Path, iterations: int, warmup: int) -> dict[str, dict[str, Any]]:
    # a first untimed pass over every operation, so that the first one timed does not pay for the process warming up
    await _run_all(redis_url, folder / "warm-up", warmup, 0)
    return await _run_all(redis_url, folder, iterations, warmup)


async def _run_all(redis_url: str, folder: Path, iterations: int, warmup: int) -> dict[str, dict[str, Any]]:
    folder.mkdir(exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    for name, operation in OPERATIONS.items():
        # fresh stores per operation, so one operation's data does not weigh on the next
        prefix = f"gf-bench:{uuid4().hex}:"
        stores: dict[str, StateStore] = {
            "memory": MemoryStore(),
            "sqlite": SqliteStore(folder / f"{name}.db"),
            "redis": RedisStore(redis_url, prefix=prefix),
        }
        for store in stores.values():
            await store.open()
        try:
            await warm_up(operation, stores, warmup)
            before = _server_usec(redis_url)
            samples = await time_operation(operation, stores, iterations, warmup)
            server_us = (_server_usec(redis_url) - before) / iterations
        finally:
            for store in stores.values():
                await store.close()
            _delete(redis_url, prefix)
        row = {label: stats(values) for label, values in samples.items()}
        for label in stores:
            row[label]["ratio_to_memory"] = row[label]["median_us"] / row["memory"]["median_us"]
        row["redis"]["server_us"] = server_us
        results[name] = row
    return results


def summary(runs: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The median run's figures, chosen by the Redis ping floor (so every row comes from one run and its ratios hold
    together), each cell with the sorted medians of every run beside it."""
    ranked = sorted(runs, key=lambda r: float(r["ping (the floor)"]["redis"]["median_us"]))
    chosen = ranked[(len(ranked) - 1) // 2]
    return {
        name: {
            label: {
                **result,
                "run_medians_us": sorted(float(r[name][label]["median_us"]) for r in runs),
            }
            for label, result in row.items()
        }
        for name, row in chosen.items()
    }


def _delete(redis_url: str, prefix: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.unlink(*keys)


def _server_usec(redis_url: str) -> int:
    """Microseconds Redis has spent running the commands the timed operations send, since it started (INFO
    commandstats, every client's). Only those: the commands a script or a MULTI runs inside it are counted twice
    there, once on their own and once in the EVALSHA or EXEC."""
    with redis.Redis.from_url(redis_url) as client:
        stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{command}", {}).get("usec", 0)) for command in TOP_LEVEL_COMMANDS)


def _redis_server(redis_url: str) -> dict[str, Any]:
    with redis.Redis.from_url(redis_url, socket_connect_timeout=2) as client:
        info = client.info("server")
    return {"version": info.get("redis_version"), "url": redis_url}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=5000, help="timed operations per store (default: 5000)")
    parser.add_argument("--warmup", type=int, default=500, help="untimed operations first (default: 500)")
    parser.add_argument("--quick", action="store_true", help="500 timed operations after 50 warm-up ones")
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop: uvloop (default; what `gitops-flow serve` runs on, through uvicorn) or asyncio's own",
    )
    parser.add_argument(
        "--runs", type=int, default=1, help="whole measurements in a row; the table shows the median run (default: 1)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    run: Callable[[Coroutine[Any, Any, T]], T] = uvloop.run if args.loop == "uvloop" else asyncio.run
    if args.quick:
        args.iterations, args.warmup = 500, 50
    if args.iterations < 100 or args.warmup < 1 or args.runs < 1:
        parser.error("need --iterations >= 100 (for a p99), --warmup >= 1 and --runs >= 1")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        server = _redis_server(redis_url)
    except redis.RedisError as exc:
        print(f"store_ops: no Redis at {redis_url}: {exc}", file=sys.stderr)
        return 1

    info = machine()
    info["packages"]["redis"] = _version("redis")
    info["sqlite"] = sqlite3.sqlite_version
    info["redis_server"] = server
    print(f"machine: {describe(info)}")
    print(f"SQLite {info['sqlite']}; Redis server {server['version']} at {redis_url} (loopback)")
    print(
        f"{args.iterations} timed operations per store after {args.warmup} warm-up ones, stores interleaved; "
        f"{args.loop} event loop; gc enabled; times in µs"
    )
    runs: list[dict[str, dict[str, Any]]] = []
    try:
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="gf-store-ops-") as folder:
                runs.append(run(measure(redis_url, Path(folder), args.iterations, args.warmup)))
    except StoreError as exc:
        print(f"store_ops: {exc}", file=sys.stderr)
        return 1
    results = summary(runs)

    print()
    spread = f"{'medians of ' + str(args.runs) + ' runs':>22}" if args.runs > 1 else ""
    print(f"{'operation':<24} {'store':<7} {'median':>9} {'p99':>9} {'ratio (median)':>15} {'in Redis':>9} {spread}")
    for name, row in results.items():
        for label, result in row.items():
            inside = f"{result['server_us']:>9.1f}" if "server_us" in result else f"{'':>9}"
            low, high = result["run_medians_us"][0], result["run_medians_us"][-1]
            spread = f"{low:>10.1f} – {high:>9.1f}" if args.runs > 1 else ""
            print(
                f"{name:<24} {label:<7} {result['median_us']:>9.1f} {result['p99_us']:>9.1f} "
                f"{result['ratio_to_memory']:>14.1f}x {inside} {spread}"
            )
    print("in Redis: µs per operation that Redis spent running its commands (INFO commandstats, every client's)")
    if args.runs > 1:
        print(f"the figures are the median run's (by Redis ping); medians of {args.runs} runs: lowest – highest")

    result = {
        "machine": info,
        "iterations": args.iterations,
        "warmup": args.warmup,
        "loop": args.loop,
        "operations": results,
        "runs": runs,
    }
    save(args.json, "store_ops", result)
    return 0


def _version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    raise SystemExit(main())
