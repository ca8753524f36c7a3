"""HTTP throughput and latency of one chain served by gitops-flow, by LangServe and by a bare Starlette endpoint.

The chain is PromptTemplate("Q: {question}") -> fake chat model (GenericFakeChatModel answering a fixed short text)
-> StrOutputParser, served three ways, each by its own uvicorn process (uvloop, httptools, one worker, no access
log, log level warning) on 127.0.0.1, all started at once:

- gitops-flow: ``create_app(Settings(repo_url=<local bare repo>, ...))`` following a bare repository made with the
  git command line whose one commit holds ``flows/echo.json`` (tests/served.py's ``echo_flow``); twice, with the
  default SQLite state and with ``state="memory://"``; ``POST /flows/echo/invoke``;
- LangServe: ``add_routes(FastAPI(), chain, path="/echo")``; ``POST /echo/invoke``;
- bare: one Starlette route, orjson in, ``await chain.ainvoke(input)``, orjson out; ``POST /echo/invoke``.

The last two build the chain by hand in LangChain. Before measuring, the script checks that all answer the same
``output``. The load generator is wrk (one thread, HTTP/1.1 keep-alive) when it is installed, else
benchmarks/_loadgen.py (httpx.AsyncClient), in its own process, POSTing ``{"input": {"question": "hi"}}`` over 1 and
over 32 connections for a fixed time after a warm-up. On a machine of 2 or more CPUs every server is pinned to one
CPU and the load generator to another, so the server under test has a whole core. The servers are measured in
rounds, one after another and in a rotated order each round; each figure is the median of the rounds. The server's
CPU time (utime + stime from /proc/<pid>/stat, read before and after each measured cell, when nothing else reaches
it) divided by the requests of the cell is its CPU per request.

    python benchmarks/serve_compare.py                      # 3 rounds, 2 s warm-up + 8 s measured per cell
    python benchmarks/serve_compare.py --quick              # 1 round, 0.5 s + 2 s: a smoke run
    python benchmarks/serve_compare.py --json benchmarks/results/serve_compare.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from _apps import DEFAULT_ANSWER
from _machine import describe, machine, medians, save
from _serving import INVOKE_BODY, Remote, Server, cpus, echo_flow, have_wrk, http, load
from _streamgen import cpu_seconds

TARGET_VS_LANGSERVE = 3.0  # issue 17: gitops-flow requests/s at least 3x LangServe's
TARGET_VS_BARE = 1.5  # ... and at least 1.5x the bare LangChain endpoint's


def make_servers(
    repo: str, data: Path, cpu: int | None, variants: list[str], gc_freeze: bool
) -> dict[str, tuple[Server, str]]:
    """label -> (server, invoke path)."""
    servers: dict[str, tuple[Server, str]] = {}
    if "gitops-sqlite" in variants:
        env = {"BENCH_REPO": repo, "BENCH_DATA_DIR": str(data / "gitops-sqlite")}
        servers["gitops-flow (sqlite)"] = (
            Server("gitops-flow (sqlite)", "gitops_flow_app", env, "/readyz", cpu),
            "/flows/echo/invoke",
        )
    if "gitops-memory" in variants:
        env = {"BENCH_REPO": repo, "BENCH_DATA_DIR": str(data / "gitops-memory"), "BENCH_STATE": "memory://"}
        servers["gitops-flow (memory)"] = (
            Server("gitops-flow (memory)", "gitops_flow_app", env, "/readyz", cpu),
            "/flows/echo/invoke",
        )
    if "gitops-minimal-config" in variants:
        env = {
            "BENCH_REPO": repo,
            "BENCH_DATA_DIR": str(data / "gitops-minimal"),
            "BENCH_STATE": "memory://",
            "BENCH_MINIMAL_RUN_CONFIG": "1",
        }
        servers["gitops-flow (what-if: no run metadata)"] = (
            Server("gitops-flow (what-if: no run metadata)", "gitops_flow_app", env, "/readyz", cpu),
            "/flows/echo/invoke",
        )
    if "langserve" in variants:
        servers["LangServe"] = (Server("LangServe", "langserve_app", {}, "/healthz", cpu), "/echo/invoke")
    if "bare" in variants:
        servers["bare Starlette"] = (Server("bare Starlette", "bare_app", {}, "/healthz", cpu), "/echo/invoke")
    if gc_freeze:
        for server, _ in servers.values():
            server.env["BENCH_GC_FREEZE"] = "1"
    return servers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 round of 0.5 s warm-up + 2 s per cell")
    parser.add_argument("--rounds", type=int, help="rounds (default 3; quick 1); each figure is their median")
    parser.add_argument("--seconds", type=float, help="measured seconds per cell (default 8; quick 2)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds before each cell (default 2; quick 0.5)")
    parser.add_argument("--connections", default="1,32", help="comma-separated (default 1,32)")
    parser.add_argument(
        "--variants",
        default="gitops-sqlite,gitops-memory,langserve,bare",
        help="which servers (default: gitops-sqlite,gitops-memory,langserve,bare; what-if: gitops-minimal-config)",
    )
    parser.add_argument("--gc-freeze", action="store_true", help="what-if: every server calls gc.freeze() at start")
    parser.add_argument("--tool", choices=("wrk", "httpx"), help="load generator (default: wrk if installed)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers and load generator to CPUs")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    seconds = args.seconds or (2.0 if args.quick else 8.0)
    warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 2.0)
    connections = [int(c) for c in args.connections.split(",")]
    tool = args.tool or ("wrk" if have_wrk() else "httpx")
    available = cpus()
    pin = not args.no_pin and len(available) >= 2
    server_cpu, load_cpu = (available[-1], available[0]) if pin else (None, None)

    info = machine()
    print(f"machine: {describe(info)}")
    print(
        f"load generator: {tool}; {rounds} round(s) of {warmup:g} s warm-up + {seconds:g} s per cell; "
        f"connections {connections}; "
        + (f"servers on CPU {server_cpu}, load generator on CPU {load_cpu}" if pin else "no CPU pinning")
        + ("; what-if: gc.freeze() in every server" if args.gc_freeze else "")
    )

    results: dict[str, dict[int, list[dict[str, Any]]]] = {}
    memory: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="serve-compare-") as tmp:
        root = Path(tmp)
        remote = Remote.create(root)
        remote.commit({"flows/echo.json": echo_flow(answer=DEFAULT_ANSWER)}, "the echo flow")
        remote.push()
        (root / "logs").mkdir()
        servers = make_servers(remote.url, root, server_cpu, args.variants.split(","), args.gc_freeze)
        try:
            for server, _ in servers.values():
                started = time.monotonic()
                server.start(root / "logs")
                print(f"started {server.label} on port {server.port} in {time.monotonic() - started:.2f} s")
            outputs = {}
            for label, (server, path) in servers.items():
                status, headers, body = http("POST", server.base + path, INVOKE_BODY)
                if status != 200:
                    raise SystemExit(f"{label} answered {status}: {body[:300]!r}")
                outputs[label] = json.loads(body)["output"]
            if len(set(map(str, outputs.values()))) != 1:
                raise SystemExit(f"the servers do not answer alike: {outputs}")
            print(f"all answer output={next(iter(outputs.values()))!r}")

            labels = list(servers)
            for index in range(rounds):
                order = labels[index % len(labels) :] + labels[: index % len(labels)]
                for label in order:
                    server, path = servers[label]
                    for conns in connections:
                        if warmup > 0:
                            load(server.base + path, conns, warmup, load_cpu, tool)
                        assert server.process is not None
                        cpu_before = cpu_seconds(server.process.pid)
                        result = load(server.base + path, conns, seconds, load_cpu, tool)
                        cpu = cpu_seconds(server.process.pid) - cpu_before  # the server idles outside the load
                        result["cpu_us_per_request"] = cpu / result["requests"] * 1e6 if result["requests"] else 0.0
                        if result["errors"]:
                            raise SystemExit(f"{label}: {result['errors']} failed requests at {conns} connections")
                        results.setdefault(label, {}).setdefault(conns, []).append(result)
                        print(
                            f"round {index + 1} {label:<22} c={conns:<3} {result['rps']:>8.0f} req/s "
                            f"p50 {result['p50_ms']:6.2f} ms p99 {result['p99_ms']:6.2f} ms "
                            f"{result['cpu_us_per_request']:6.0f} us CPU/request"
                        )
            for label, (server, _) in servers.items():
                memory[label] = server.rss_kib()
        finally:
            for server, _ in servers.values():
                server.stop()

    summary: dict[str, dict[int, dict[str, float]]] = {
        label: {
            conns: {
                **medians(runs, ("rps", "p50_ms", "p99_ms", "cpu_us_per_request")),
                "requests": sum(r["requests"] for r in runs),
            }
            for conns, runs in by_conns.items()
        }
        for label, by_conns in results.items()
    }
    print()
    print(f"medians of {rounds} round(s); requests/s (min-max of the rounds), latency in ms")
    print()
    print("| server | connections | requests/s | (min - max) | p50 | p99 | CPU per request | RSS at end |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, by_conns in summary.items():
        for conns, row in by_conns.items():
            print(
                f"| {label} | {conns} | {row['rps']:,.0f} | {row['rps_min']:,.0f} - {row['rps_max']:,.0f} | "
                f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['cpu_us_per_request']:,.0f} µs | "
                f"{memory.get(label, 0) / 1024:.0f} MiB |"
            )
    ratios: list[dict[str, Any]] = []
    gitops = [label for label in summary if label.startswith("gitops-flow")]
    print()
    print("| gitops-flow variant | connections | / LangServe (req/s) | / bare (req/s) | p50 / bare | targets |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for label in gitops:
        for conns in connections:
            ours = summary[label][conns]
            row: dict[str, Any] = {"variant": label, "connections": conns}
            if "LangServe" in summary:
                row["vs_langserve"] = ours["rps"] / summary["LangServe"][conns]["rps"]
            if "bare Starlette" in summary:
                row["vs_bare"] = ours["rps"] / summary["bare Starlette"][conns]["rps"]
                row["p50_vs_bare"] = ours["p50_ms"] / summary["bare Starlette"][conns]["p50_ms"]
            met = []
            if "vs_langserve" in row:
                verdict = "met" if row["vs_langserve"] >= TARGET_VS_LANGSERVE else "MISSED"
                met.append(f">= {TARGET_VS_LANGSERVE}x LangServe: {verdict}")
            if "vs_bare" in row:
                met.append(f">= {TARGET_VS_BARE}x bare: {'met' if row['vs_bare'] >= TARGET_VS_BARE else 'MISSED'}")
            ratios.append(row)
            print(
                f"| {label} | {conns} | {row.get('vs_langserve', float('nan')):.3f}x | "
                f"{row.get('vs_bare', float('nan')):.3f}x | {row.get('p50_vs_bare', float('nan')):.2f}x | "
                f"{'; '.join(met)} |"
            )

    result = {
        "machine": info,
        "tool": tool,
        "rounds": rounds,
        "seconds": seconds,
        "warmup": warmup,
        "pinned": {"server_cpu": server_cpu, "load_cpu": load_cpu},
        "gc_freeze": args.gc_freeze,
        "runs": {label: {str(c): runs for c, runs in by.items()} for label, by in results.items()},
        "summary": {label: {str(c): row for c, row in by.items()} for label, by in summary.items()},
        "ratios": ratios,
        "rss_kib_at_end": memory,
    }
    save(args.json, "serve_compare", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
