"""Throughput of `gitops-flow serve --workers 2` against `--workers 1`, side by side in one run.

Both servers are the real command line (`python -m gitops_flow serve`, log level warning so no access-log line is
written, the default SQLite state in a data folder of their own) following one local bare repository whose commit
holds ``flows/echo.json`` (prompt -> fake model -> parser, tests/served.py's ``echo_flow``). Both are started at once
and loaded one after another, in a rotated order each round; each figure is the median of the rounds. The load
generator is wrk (one thread, HTTP/1.1 keep-alive) POSTing ``{"input": {"question": "hi"}}`` over 32 connections,
without a session (nothing touches the store) and with ``X-Flow-Session: s<n>``, n drawn from 1..1,000 (one atomic
claim in the shared SQLite file per request, from both workers at once).

Nothing is pinned: with two workers the server uses both CPUs of a 2-CPU machine, which it shares with wrk, so the
ratio measures what a second worker buys on this machine, load generator included, not a core's worth each.

    python benchmarks/serve_workers.py                    # 3 rounds, 2 s warm-up + 8 s per cell, about 2 minutes
    python benchmarks/serve_workers.py --quick            # 1 round, 0.5 s + 2 s: a smoke run
    python benchmarks/serve_workers.py --json benchmarks/results/serve_workers.json

wrk is Debian's package ``wrk`` (the httpx load generator of benchmarks/_loadgen.py is used when it is missing).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _apps import DEFAULT_ANSWER
from _machine import describe, machine, medians, save
from _serving import (
    INVOKE_BODY,
    PYTHON,
    Remote,
    clean_env,
    echo_flow,
    free_port,
    have_wrk,
    http,
    load,
    rss_kib,
    run_wrk,
    wait_for,
)

SESSIONS = 1_000


def sessions_lua(sessions: int) -> str:
    """A wrk ``request`` function giving each request a session among ``sessions``."""
    body = INVOKE_BODY.decode()
    return (
        "request = function()\n"
        '  local headers = {["Content-Type"] = "application/json", '
        f'["X-Flow-Session"] = "s" .. math.random(1, {sessions})}}\n'
        f'  return wrk.format("POST", nil, headers, [[{body}]])\n'
        "end\n"
    )


class Serve:
    """One `gitops-flow serve --workers N` process tree."""

    def __init__(self, workers: int, repo: str, root: Path) -> None:
        self.workers = workers
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        command = [PYTHON, "-m", "gitops_flow", "serve", "--repo", repo, "--port", str(self.port)]
        command += ["--data-dir", str(root / f"data-{workers}"), "--workers", str(workers)]
        command += ["--poll-interval", "3600", "--log-level", "warning"]
        self.pids: set[int] = set()
        self.log = open(root / f"serve-{workers}.log", "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(command, env=clean_env(), stdout=self.log, stderr=subprocess.STDOUT)

    def ready(self) -> None:
        wait_for(self.base + "/readyz", process=self.process)
        deadline = time.monotonic() + 60
        while len(self.pids) < self.workers and time.monotonic() < deadline:  # every worker has loaded the flow
            status, _, body = http("GET", self.base + "/readyz", headers={"Connection": "close"})
            if status == 200:
                self.pids.add(int(json.loads(body).get("worker", {}).get("pid", self.process.pid)))
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """User and system CPU time of the supervisor and its workers so far."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in {self.process.pid, *self.pids}:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / ticks

    def rss_kib(self) -> int:
        """The resident memory of the supervisor and its workers."""
        return sum(rss_kib(pid) for pid in {self.process.pid, *self.pids})

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def measure(url: str, sessions: bool, seconds: float, tool: str) -> dict[str, Any]:
    if sessions and tool == "wrk":
        return run_wrk(url, 32, seconds, None, lua=sessions_lua(SESSIONS))
    return load(url, 32, seconds, None, tool)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 round of 0.5 s warm-up + 2 s per cell")
    parser.add_argument("--rounds", type=int, help="rounds (default 3; quick 1); each figure is their median")
    parser.add_argument("--seconds", type=float, help="measured seconds per cell (default 8; quick 2)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds before each cell (default 2; quick 0.5)")
    parser.add_argument("--tool", choices=("wrk", "httpx"), help="load generator (default: wrk if installed)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    seconds = args.seconds or (2.0 if args.quick else 8.0)
    warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 2.0)
    tool = args.tool or ("wrk" if have_wrk() else "httpx")
    if tool == "httpx":
        print("wrk is not installed: the sessions cell is measured without sessions (httpx load generator)")
    info = machine()
    print(f"machine: {describe(info)}")
    print(f"load generator: {tool}, 32 connections; {rounds} round(s) of {warmup:g} s warm-up + {seconds:g} s per cell")

    cells = [("no session", False), ("session", True)]
    results: dict[int, dict[str, list[dict[str, Any]]]] = {}
    memory: dict[int, int] = {}
    with tempfile.TemporaryDirectory(prefix="serve-workers-") as tmp:
        root = Path(tmp)
        remote = Remote.create(root)
        remote.commit({"flows/echo.json": echo_flow(answer=DEFAULT_ANSWER)}, "the echo flow")
        remote.push()
        servers = {n: Serve(n, remote.url, root) for n in (1, 2)}
        try:
            for server in servers.values():
                server.ready()
                status, _, body = http("POST", server.base + "/flows/echo/invoke", INVOKE_BODY)
                if status != 200:
                    raise SystemExit(f"--workers {server.workers} answered {status}: {body[:300]!r}")
            for index in range(rounds):
                order = [1, 2] if index % 2 == 0 else [2, 1]
                for n in order:
                    url = servers[n].base + "/flows/echo/invoke"
                    for label, sessions in cells:
                        if warmup > 0:
                            measure(url, sessions, warmup, tool)
                        cpu = servers[n].cpu_seconds()
                        result = measure(url, sessions, seconds, tool)
                        result["cpu_us"] = (servers[n].cpu_seconds() - cpu) / max(1, result["requests"]) * 1e6
                        if result["errors"]:
                            raise SystemExit(f"--workers {n}: {result['errors']} failed requests ({label})")
                        results.setdefault(n, {}).setdefault(label, []).append(result)
                        print(
                            f"round {index + 1} --workers {n} {label:<11} {result['rps']:>8.0f} req/s "
                            f"p50 {result['p50_ms']:6.2f} ms p99 {result['p99_ms']:6.2f} ms, "
                            f"server CPU {result['cpu_us']:5.0f} µs per request"
                        )
            for n, server in servers.items():
                memory[n] = server.rss_kib()
        finally:
            for server in servers.values():
                server.stop()

    summary = {
        n: {label: medians(runs, ("rps", "p50_ms", "p99_ms", "cpu_us")) for label, runs in by_label.items()}
        for n, by_label in results.items()
    }
    print()
    print(f"medians of {rounds} round(s), 32 connections; requests/s (min-max of the rounds), latency in ms")
    print()
    print("| server | requests | requests/s | (min - max) | p50 | p99 | server CPU per request | RSS (all processes) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, by_label in summary.items():
        for label, row in by_label.items():
            print(
                f"| --workers {n} | {label} | {row['rps']:,.0f} | {row['rps_min']:,.0f} - {row['rps_max']:,.0f} | "
                f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['cpu_us']:,.0f} µs | "
                f"{memory.get(n, 0) / 1024:.0f} MiB |"
            )
    ratios = {label: summary[2][label]["rps"] / summary[1][label]["rps"] for label, _ in cells}
    print()
    for label, ratio in ratios.items():
        print(f"--workers 2 / --workers 1, {label}: {ratio:.2f}x")
    save(
        args.json,
        "serve_workers",
        {"machine": info, "tool": tool, "rounds": rounds, "seconds": seconds, "summary": summary, "ratios": ratios},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
