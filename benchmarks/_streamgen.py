"""A closed-loop load generator of server-sent event streams, run as its own process: ``--clients`` concurrent clients,
each POSTing ``--body`` to ``--url`` over a new connection (``Connection: close``) and reading the stream to its end,
then the next, for ``--seconds`` after ``--warmup``.

Plain asyncio streams on uvloop (no HTTP library: at 1,000 streams of 20 events a second, an HTTP client's own work
per event would be the bottleneck on one core): it counts ``event: data`` frames as they arrive (the tokens), the
time from sending a request to its first data frame (time to first token) and the streams that end, each counted when
it happens within the window; the clients start spread over the warm-up, so their streams do not go in waves. With
``--pid``
it reads the server's CPU time (utime + stime, /proc/<pid>/stat) at the start and end of the counted window, and its
VmRSS half-way through it, while every client has a stream open. Writes its figures as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MARK = b"event: data"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15 of the whole line)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[max(1, min(len(ordered), math.ceil(fraction * len(ordered)))) - 1]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    body = args.body.encode()
    request = (
        f"POST {url.path}{'?' + url.query if url.query else ''} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    started = time.monotonic()
    counting_from = started + args.warmup
    deadline = counting_from + args.seconds
    tokens = 0
    ttft: list[float] = []
    streams_done = 0
    per_stream: list[int] = []
    failed = 0
    errors: dict[str, int] = {}
    marks: dict[str, float] = {}
    stop = asyncio.Event()

    async def client(index: int) -> None:
        nonlocal tokens, streams_done, failed
        await asyncio.sleep(args.warmup * index / args.clients)  # starts spread over the warm-up: no lockstep waves
        while not stop.is_set():
            sent = time.monotonic()
            first: float | None = None
            count = 0
            try:
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
                tail = b""
                while True:
                    data = await reader.read(65536)
                    if not data:
                        break
                    chunk = tail + data
                    found = chunk.count(MARK)
                    if found:
                        now = time.monotonic()
                        if first is None:
                            first = now
                        count += found
                        if counting_from <= now <= deadline:
                            tokens += found
                    tail = chunk[-(len(MARK) - 1) :]
                writer.close()
            except Exception as exc:  # noqa: BLE001 - every failure is counted by its kind
                if counting_from <= sent <= deadline:
                    failed += 1
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                await asyncio.sleep(0.05)
                continue
            if first is not None and counting_from <= first <= deadline:
                ttft.append(first - sent)
            if counting_from <= time.monotonic() <= deadline:
                streams_done += 1
                per_stream.append(count)

    async def watch() -> None:
        await asyncio.sleep(max(0.0, counting_from - time.monotonic()))
        if args.pid:
            marks["cpu_start"] = cpu_seconds(args.pid)
        marks["start"] = time.monotonic()
        await asyncio.sleep(args.seconds / 2)
        if args.pid:
            marks["rss_mid_kib"] = rss_kib(args.pid)
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        if args.pid:
            marks["cpu_end"] = cpu_seconds(args.pid)
        marks["end"] = time.monotonic()
        stop.set()

    tasks = [asyncio.ensure_future(client(i)) for i in range(args.clients)]
    await watch()
    await asyncio.sleep(0.2)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    seconds = marks["end"] - marks["start"]
    ordered = sorted(ttft)
    cpu = marks.get("cpu_end", 0.0) - marks.get("cpu_start", 0.0)
    return {
        "clients": args.clients,
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "streams": streams_done,
        "streams_per_s": streams_done / seconds,
        "tokens_per_stream": (sum(per_stream) / len(per_stream)) if per_stream else float("nan"),
        "ttft_p50_ms": percentile(ordered, 0.5) * 1000,
        "ttft_p99_ms": percentile(ordered, 0.99) * 1000,
        "failed": failed,
        "errors": errors,
        "server_cpu_s": cpu,
        "cpu_us_per_token": cpu / tokens * 1e6 if tokens else float("nan"),
        "rss_mid_kib": marks.get("rss_mid_kib", 0),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", default='{"input": {"question": "hi"}}')
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--pid", type=int)
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
