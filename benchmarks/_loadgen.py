"""A closed-loop HTTP load generator for the serving benchmarks, run as its own process.

``--connections`` workers each POST ``--body`` over one HTTP/1.1 keep-alive connection (httpx.AsyncClient on
uvloop), one request after another, for ``--seconds`` (after ``--warmup`` seconds that are not counted), or until
the file ``--stop-file`` appears. ``--url`` may be repeated: each worker goes round the URLs in turn. Counts every
response that is not 200 and every connection error as failed. With ``--track-versions`` it also records, per
``X-Flow-Version`` served, the time.monotonic() of the first response that carried it (CLOCK_MONOTONIC: the same
clock in every process of the machine) and how often each output came with it. Writes its figures as JSON to
``--out``.

    python benchmarks/_loadgen.py --url http://127.0.0.1:8000/flows/echo/invoke --connections 16 --seconds 10 \\
        --out /tmp/load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import orjson


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[max(1, min(len(ordered), math.ceil(fraction * len(ordered)))) - 1]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    body = args.body.encode()
    headers = {"content-type": "application/json"}
    limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    first_seen: dict[str, float] = {}
    outputs: defaultdict[str, Counter[str]] = defaultdict(Counter)
    stop_file = Path(args.stop_file) if args.stop_file else None
    started = time.monotonic()
    counting_from = started + args.warmup
    deadline = counting_from + args.seconds if args.seconds > 0 else math.inf
    stopped = asyncio.Event()

    async def watch() -> None:
        while not stopped.is_set():
            if time.monotonic() >= deadline or (stop_file is not None and stop_file.exists()):
                stopped.set()
            await asyncio.sleep(0.05)

    async def worker(index: int, client: httpx.AsyncClient) -> None:
        urls = args.url[index % len(args.url) :] + args.url[: index % len(args.url)]
        turn = 0
        while not stopped.is_set():
            url = urls[turn % len(urls)]
            turn += 1
            sent = time.monotonic()
            try:
                response = await client.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] += 1
                if sent >= counting_from:
                    statuses["error"] += 1
                await asyncio.sleep(0.01)
                continue
            received = time.monotonic()
            if args.track_versions and response.status_code == 200:
                sha = response.headers.get("x-flow-version", "")
                first_seen.setdefault(sha, received)
                outputs[sha][str(orjson.loads(response.content).get("output"))] += 1
            if sent >= counting_from and received <= deadline:
                latencies.append(received - sent)
                statuses[str(response.status_code)] += 1
            elif response.status_code != 200:
                statuses[str(response.status_code)] += 1  # a failure counts whenever it happens

    async with httpx.AsyncClient(http1=True, http2=False, limits=limits, timeout=30.0) as client:
        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(worker(i, client) for i in range(args.connections)))
        await watcher
    ended = min(time.monotonic(), deadline)
    ordered = sorted(latencies)
    ok = statuses.get("200", 0)
    return {
        "connections": args.connections,
        "seconds": max(ended - counting_from, 1e-9),
        "ok": ok,
        "failed": sum(n for s, n in statuses.items() if s != "200"),
        "statuses": dict(statuses),
        "errors": dict(errors),
        "p50_ms": _percentile(ordered, 0.50) * 1000,
        "p99_ms": _percentile(ordered, 0.99) * 1000,
        "mean_ms": (sum(ordered) / len(ordered) * 1000) if ordered else float("nan"),
        "max_ms": (ordered[-1] * 1000) if ordered else float("nan"),
        "first_seen": first_seen,
        "outputs": {sha: dict(counts) for sha, counts in outputs.items()},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", action="append", required=True)
    parser.add_argument("--body", default='{"input": {"question": "hi"}}')
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0, help="0: until --stop-file appears")
    parser.add_argument("--warmup", type=float, default=0.0)
    parser.add_argument("--stop-file")
    parser.add_argument("--track-versions", action="store_true")
    parser.add_argument("--out", required=True)
    arguments = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(main(arguments))
    else:
        result = uvloop.run(main(arguments))
    Path(arguments.out).write_text(json.dumps(result) + "\n")
    os._exit(0)
