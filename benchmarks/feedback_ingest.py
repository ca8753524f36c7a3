"""Feedback ingest: how many `POST /flows/<name>/feedback` one worker of `gitops-flow serve` takes per second, and the
server CPU each costs, with SQLite state and with Redis state (and memory state, for comparison).

For each state store a real server (`python -m gitops_flow serve --workers 1`, log level warning, no access log)
follows one local bare repository whose commit holds ``flows/echo.json`` (tests/served.py's ``echo_flow``). The
benchmark first answers ``--runs`` runs of ``--users`` users through the flow's batch endpoint (one request per user,
``X-Flow-User: u<n>``), waits for the answered-runs ledger to reach the store, then wrk (one thread, HTTP/1.1
keep-alive, 32 connections) POSTs LangServe's feedback body ``{"run_id": ..., "key": "liked", "score": 0 or 1}``
naming those runs in turn, the users taking turns (each user's feedback stays under the per-user rate, 5 a second;
each replaces the user's earlier score, as a user clicking again does), for ``--seconds`` after a warm-up.
Every answer must be 202 (a 429 of the per-user rate or a 404 fails the run). The server is pinned to CPU 0 and wrk
to CPU 1 where the machine has two. Each figure is the median of the rounds; the issue's target is 2,000 per second
per worker.

    python benchmarks/feedback_ingest.py                 # 3 rounds of 2 s warm-up + 8 s per store
    python benchmarks/feedback_ingest.py --quick         # 1 round, 1,000 runs, 0.5 s + 2 s: a smoke run
    python benchmarks/feedback_ingest.py --json benchmarks/results/feedback_ingest.json

Redis is REDIS_URL (default redis://127.0.0.1:6379/0), under a prefix of the run's own, deleted at the end.
wrk is Debian's package ``wrk``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis
from _machine import describe, machine, medians, save
from _serving import PYTHON, Remote, clean_env, cpus, echo_flow, free_port, have_wrk, http, rss_kib, run_wrk, wait_for

BATCH = 100  # inputs of one batch request (the server's default max_batch_inputs)
TARGET = 2000.0  # feedback per second per worker (issue 24)


def feedback_lua(run_ids: list[str]) -> str:
    """A wrk ``request`` function that names each run in turn (a liked or not score each)."""
    table = ",".join(f'"{run}"' for run in run_ids)
    return (
        f"local runs = {{{table}}}\n"
        "local turn = 0\n"
        "request = function()\n"
        "  turn = turn + 1\n"
        "  local run = runs[(turn % #runs) + 1]\n"
        '  local body = \'{"run_id": "\' .. run .. \'", "key": "liked", "score": \' .. (turn % 2) .. \'}\'\n'
        '  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)\n'
        "end\n"
    )


class Serve:
    """One `gitops-flow serve --workers 1` process with the state store ``state``."""

    def __init__(self, label: str, repo: str, root: Path, state: str, cpu: int | None) -> None:
        self.label = label
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        command = [PYTHON, "-m", "gitops_flow", "serve", "--repo", repo, "--port", str(self.port), "--workers", "1"]
        command += ["--data-dir", str(root / f"data-{label}"), "--state", state, "--poll-interval", "3600"]
        command += ["--log-level", "warning", "--no-access-log"]
        if cpu is not None:
            command = ["taskset", "-c", str(cpu), *command]
        self.log = open(root / f"serve-{label}.log", "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(command, env=clean_env(), stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self.base + "/readyz", process=self.process)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def answer_runs(server: Serve, runs: int, users: int) -> list[str]:
    """Answer ``runs`` runs through the batch endpoint, ``runs / users`` a request, one user each; their run ids in
    the order the users take turns (one run of each user, then the next of each), so the feedback of one user comes
    ``users`` requests apart, under the per-user rate (5 a second)."""
    per_user = max(1, min(BATCH, -(-runs // users)))
    body = json.dumps({"inputs": [{"question": "hi"}] * per_user}).encode()

    def answer(user: int) -> list[str]:
        status, _, answer = http("POST", server.base + "/flows/echo/batch", body, {"X-Flow-User": f"u{user}"})
        if status != 200:
            raise SystemExit(f"{server.label}: the batch answered {status}: {answer[:300]!r}")
        ids: list[str] = json.loads(answer)["metadata"]["run_ids"]
        return ids

    with ThreadPoolExecutor(8) as pool:
        by_user = list(pool.map(answer, range(-(-runs // per_user))))
    run_ids = [ids[turn] for turn in range(per_user) for ids in by_user if turn < len(ids)]
    last = run_ids[-1]
    deadline = time.monotonic() + 10  # the ledger writes its batch within 0.2 s
    probe = json.dumps({"run_id": last, "key": "warm", "score": 1}).encode()
    while time.monotonic() < deadline:
        status, _, _ = http("POST", server.base + "/flows/echo/feedback", probe)
        if status == 202:
            return run_ids[:runs]
        time.sleep(0.1)
    raise SystemExit(f"{server.label}: the last run answered does not take feedback")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 round, 1,000 runs, 0.5 s warm-up + 2 s per store")
    parser.add_argument("--rounds", type=int, help="rounds (default 3; quick 1); each figure is their median")
    parser.add_argument("--runs", type=int, help="runs answered first (default 20,000; quick 1,000)")
    parser.add_argument("--users", type=int, default=2000, help="users the runs belong to (default 2,000)")
    parser.add_argument("--seconds", type=float, help="measured seconds per cell (default 8; quick 2)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds before each cell (default 2; quick 0.5)")
    parser.add_argument("--states", default="sqlite,redis,memory", help="state stores, comma-separated")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    if not have_wrk():
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 1
    rounds = args.rounds or (1 if args.quick else 3)
    runs = args.runs or (1000 if args.quick else 20_000)
    seconds = args.seconds or (2.0 if args.quick else 8.0)
    warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 2.0)
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"gf-bench:{random.getrandbits(48):012x}:"
    states = [name.strip() for name in args.states.split(",") if name.strip()]
    if "redis" in states:
        try:
            redis.Redis.from_url(redis_url, socket_connect_timeout=2).ping()
        except redis.RedisError as exc:
            print(f"no Redis at {redis_url}: {exc}", file=sys.stderr)
            return 1
    two = len(cpus()) >= 2
    server_cpu, wrk_cpu = (cpus()[0], cpus()[1]) if two else (None, None)
    info = machine()
    print(f"machine: {describe(info)}")
    print(
        f"{runs:,} runs of {args.users:,} users; wrk, 32 connections; {rounds} round(s) of {warmup:g} + {seconds:g} s"
    )
    figures: dict[str, list[dict[str, Any]]] = {}
    memory: dict[str, int] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="feedback-ingest-") as tmp:
            root = Path(tmp)
            remote = Remote.create(root)
            remote.commit({"flows/echo.json": echo_flow(answer="hi")}, "the echo flow")
            remote.push()
            for name in states:
                state = {"sqlite": f"sqlite:///{root / 'state.db'}", "memory": "memory://"}.get(
                    name, f"{redis_url}?prefix={prefix}"
                )
                server = Serve(name, remote.url, root, state, server_cpu)
                try:
                    run_ids = answer_runs(server, runs, args.users)
                    lua = feedback_lua(run_ids)
                    url = server.base + "/flows/echo/feedback"
                    for index in range(rounds):
                        if warmup > 0:
                            run_wrk(url, 32, warmup, wrk_cpu, lua=lua)
                        cpu = server.cpu_seconds()
                        result = run_wrk(url, 32, seconds, wrk_cpu, lua=lua)
                        result["cpu_us"] = (server.cpu_seconds() - cpu) / max(1, result["requests"]) * 1e6
                        if result["errors"]:
                            raise SystemExit(f"{name}: {result['errors']} feedback requests were not 202")
                        figures.setdefault(name, []).append(result)
                        print(
                            f"round {index + 1} {name:<7} {result['rps']:>8,.0f} feedback/s "
                            f"p50 {result['p50_ms']:6.2f} ms p99 {result['p99_ms']:6.2f} ms, "
                            f"server CPU {result['cpu_us']:5.0f} µs per feedback",
                            flush=True,
                        )
                    memory[name] = rss_kib(server.process.pid)
                finally:
                    server.stop()
    finally:
        if "redis" in states:
            client = redis.Redis.from_url(redis_url)
            keys = list(client.scan_iter(match=prefix + "*", count=1000))
            if keys:
                client.unlink(*keys)
    summary = {name: medians(runs_, ("rps", "p50_ms", "p99_ms", "cpu_us")) for name, runs_ in figures.items()}
    print()
    print(f"medians of {rounds} round(s), one worker, 32 connections; target {TARGET:,.0f} feedback/s per worker")
    print()
    print("| state | feedback/s | (min - max) | p50 | p99 | server CPU per feedback | per CPU-second | RSS |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, row in summary.items():
        print(
            f"| {name} | {row['rps']:,.0f} | {row['rps_min']:,.0f} - {row['rps_max']:,.0f} | {row['p50_ms']:.2f} | "
            f"{row['p99_ms']:.2f} | {row['cpu_us']:,.0f} µs | {1e6 / max(row['cpu_us'], 1e-9):,.0f} | "
            f"{memory.get(name, 0) / 1024:.0f} MiB |"
        )
    save(
        args.json,
        "feedback_ingest",
        {"machine": info, "runs": runs, "users": args.users, "rounds": rounds, "seconds": seconds, "summary": summary},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
