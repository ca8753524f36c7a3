"""Scale-out measured over HTTP: the state stores per request, two replicas against one, and a webhook's commit on
the replica that did not receive it.

Every server is a uvicorn process of benchmarks/_apps.py's gitops-flow factory (uvloop, httptools, one worker)
following one local bare repository whose commit holds ``flows/echo.json`` (prompt -> fake model -> parser). The load
generator is wrk (one thread, HTTP/1.1 keep-alive), whose Lua script gives each request the header
``X-Flow-Session: s<n>`` with n drawn from 1..1,000 (returning users: nearly every request finds its session's pin
and renews it: one atomic claim in the store), or no session header (nothing touches the store).

1. store cost: one server per state store (``memory://``, the default SQLite file, Redis on loopback), each loaded
   for 8 s at 1 and at 32 connections with sessions, and once at 32 without; requests/s, p50, p99, and each store's
   requests/s as a ratio of memory's. The servers run one after another, three rounds in a rotated order, pinned to
   CPU 1 with wrk on CPU 0; medians of the rounds.
2. two replicas against one: both on Redis. One replica takes wrk at 32 connections; then two replicas each take a
   wrk at 16 connections at the same time (a load balancer's even split), and their requests/s add up. Nothing is
   pinned: on this 2-CPU machine the two replicas and the two wrk processes share both CPUs.
3. webhook to serving on the other replica: replicas A and B on Redis, both polling every 30 minutes; each round
   commits a change, pushes, POSTs GitHub's push delivery to A and polls B (and A) until it serves the new commit.

    python benchmarks/replicas.py                        # about 4 minutes
    python benchmarks/replicas.py --quick
    python benchmarks/replicas.py --json benchmarks/results/replicas.json

Redis is REDIS_URL (default redis://127.0.0.1:6379/0); the servers write under a prefix of the run's own, deleted at
the end. wrk is Debian's package ``wrk``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import redis
from _machine import REPO, describe, machine, median, percentile, save
from _serving import INVOKE_BODY, Remote, Server, echo_flow, have_wrk, run_wrk

from gitops_flow.githost import github_webhook as webhook

SECRET = "bench-webhook-secret"
SESSIONS = 1_000
PUSH = json.loads((REPO / "tests" / "data" / "github-webhooks" / "push.json").read_text())


def sessions_lua(sessions: int) -> str:
    """A wrk ``request`` function giving each request a session among ``sessions`` (none: no header)."""
    if not sessions:
        return ""
    body = INVOKE_BODY.decode()
    return (
        "request = function()\n"
        '  local headers = {["Content-Type"] = "application/json", '
        f'["X-Flow-Session"] = "s" .. math.random(1, {sessions})}}\n'
        f'  return wrk.format("POST", nil, headers, [[{body}]])\n'
        "end\n"
    )


def wrk(url: str, connections: int, seconds: float, sessions: int, cpu: int | None, out: dict[str, Any]) -> None:
    """One wrk run into ``out`` (so it can run in a thread); any failed request stops the benchmark."""
    out.update(run_wrk(url, connections, seconds, cpu, lua=sessions_lua(sessions)))
    if out["errors"]:
        raise RuntimeError(f"wrk saw {out['errors']} failed requests at {url}")


def start(label: str, remote: Remote, tmp: Path, state: str | None, cpu: int | None = None) -> Server:
    env = {"BENCH_REPO": remote.url, "BENCH_DATA_DIR": str(tmp / f"data-{label}"), "BENCH_WEBHOOK_SECRET": SECRET}
    if state:
        env["BENCH_STATE"] = state
    return Server(label, "gitops_flow_app", env, ready_path="/readyz", cpu=cpu).start(tmp)


def invoke_url(server: Server) -> str:
    return server.base + "/flows/echo/invoke"


def warm(server: Server, seconds: float, sessions: int) -> None:
    wrk(invoke_url(server), 8, seconds, sessions, None, {})


# -- 1. store cost ------------------------------------------------------------------------------------------------


def store_cost(remote: Remote, tmp: Path, redis_state: str, rounds: int, seconds: float) -> dict[str, Any]:
    states = {"memory": "memory://", "sqlite": None, "redis": redis_state}
    servers = {name: start(f"store-{name}", remote, tmp, state, cpu=1) for name, state in states.items()}
    cells = [(1, SESSIONS), (32, SESSIONS), (32, 0)]
    figures: dict[str, dict[str, list[dict[str, Any]]]] = {n: {f"c{c}-s{s}": [] for c, s in cells} for n in states}
    try:
        for server in servers.values():
            warm(server, 2, SESSIONS)
        names = list(states)
        for turn in range(rounds):
            order = names[turn % len(names) :] + names[: turn % len(names)]
            for name in order:
                for connections, sessions in cells:
                    cell: dict[str, Any] = {}
                    wrk(invoke_url(servers[name]), connections, seconds, sessions, 0, cell)
                    figures[name][f"c{connections}-s{sessions}"].append(cell)
                    print(
                        f"  round {turn + 1} {name:<6} c={connections:<2} sessions={'yes' if sessions else 'no ':<3}"
                        f" {cell['rps']:7.0f} req/s  p50 {cell['p50_ms']:6.2f} ms  p99 {cell['p99_ms']:6.2f} ms",
                        flush=True,
                    )
    finally:
        for server in servers.values():
            server.stop()
    result: dict[str, Any] = {}
    for name, by_cell in figures.items():
        result[name] = {
            cell: {key: median([r[key] for r in runs]) for key in ("rps", "p50_ms", "p99_ms")}
            for cell, runs in by_cell.items()
        }
    for name in states:
        for cell in result[name]:
            result[name][cell]["vs_memory"] = result[name][cell]["rps"] / result["memory"][cell]["rps"]
    return result


# -- 2. two replicas against one ----------------------------------------------------------------------------------


def two_against_one(remote: Remote, tmp: Path, redis_state: str, seconds: float) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for sessions in (0, SESSIONS):
        a = start("replica-a", remote, tmp, redis_state)
        b = start("replica-b", remote, tmp, redis_state)
        try:
            warm(a, 2, sessions)
            warm(b, 2, sessions)
            one: dict[str, Any] = {}
            wrk(invoke_url(a), 32, seconds, sessions, None, one)
            halves: list[dict[str, Any]] = [{}, {}]
            threads = [
                threading.Thread(target=wrk, args=(invoke_url(server), 16, seconds, sessions, None, half))
                for server, half in zip((a, b), halves, strict=True)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            a.stop()
            b.stop()
        both = sum(h["rps"] for h in halves)
        label = "with sessions" if sessions else "without sessions"
        result[label] = {
            "one_replica_rps": one["rps"],
            "two_replicas_rps": both,
            "ratio": both / one["rps"],
            "one_replica_p99_ms": one["p99_ms"],
            "two_replicas_p99_ms": max(h["p99_ms"] for h in halves),
        }
        print(f"  {label}: one replica {one['rps']:.0f} req/s, two {both:.0f} req/s ({both / one['rps']:.2f}x)")
    return result


# -- 3. webhook to serving on the other replica -------------------------------------------------------------------


def webhook_other_replica(remote: Remote, tmp: Path, redis_state: str, rounds: int) -> dict[str, Any]:
    a = start("wake-a", remote, tmp, redis_state)
    b = start("wake-b", remote, tmp, redis_state)
    on_a: list[float] = []
    on_b: list[float] = []
    try:
        with httpx.Client(timeout=10) as client:
            for turn in range(rounds):
                before = remote.sha()
                after = remote.commit({"flows/echo.json": echo_flow(answer=f"v{turn + 1}")}, f"v{turn + 1}")
                remote.push()
                body = json.dumps({**PUSH, "ref": "refs/heads/main", "before": before, "after": after}).encode()
                headers = {
                    "content-type": "application/json",
                    "x-github-event": "push",
                    "x-github-delivery": uuid4().hex,
                    "x-hub-signature-256": webhook.sign(SECRET.encode(), body),
                }
                sent = time.monotonic()
                assert client.post(a.base + "/webhooks/github", content=body, headers=headers).status_code == 202
                pending = {"a": a, "b": b}
                while pending:
                    for name, server in list(pending.items()):
                        response = client.post(
                            invoke_url(server), content=INVOKE_BODY, headers={"content-type": "application/json"}
                        )
                        if response.headers.get("x-flow-version") == after:
                            (on_a if name == "a" else on_b).append(time.monotonic() - sent)
                            del pending[name]
                print(f"  round {turn + 1:2}: A {1000 * on_a[-1]:6.1f} ms, B {1000 * on_b[-1]:6.1f} ms", flush=True)
    finally:
        a.stop()
        b.stop()

    def summary(times: list[float]) -> dict[str, float]:
        return {"p50_ms": 1000 * median(times), "p99_ms": 1000 * percentile(times, 0.99), "max_ms": 1000 * max(times)}

    return {"rounds": rounds, "replica_that_got_the_webhook": summary(on_a), "the_other_replica": summary(on_b)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s cells, 5 webhook rounds")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args()
    if not have_wrk():
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 1
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"gf-bench:{random.getrandbits(48):012x}:"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        print(f"no Redis at {url}: {exc}", file=sys.stderr)
        return 1
    info = machine()
    print("machine:", describe(info), flush=True)
    rounds, seconds, hooks = (1, 2.0, 5) if args.quick else (3, 8.0, 30)
    results: dict[str, Any] = {"machine": info}
    try:
        with tempfile.TemporaryDirectory(prefix="gitops-flow-replicas-") as name:
            tmp = Path(name)
            (tmp / "repo").mkdir()
            remote = Remote.create(tmp / "repo")
            remote.commit({"flows/echo.json": echo_flow(answer="v0")}, "v0")
            remote.push()
            state = f"{url}?prefix={prefix}"
            print("1. the state stores per request", flush=True)
            results["store_cost"] = store_cost(remote, tmp, state, rounds, seconds)
            print("2. two replicas against one", flush=True)
            results["two_against_one"] = two_against_one(remote, tmp, state, seconds)
            print("3. webhook to serving on the other replica", flush=True)
            results["webhook_other_replica"] = webhook_other_replica(remote, tmp, state, hooks)
    finally:
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.unlink(*keys)
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=2))
    save(args.json, "replicas", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
