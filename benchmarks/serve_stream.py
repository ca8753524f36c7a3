"""Streaming at 1,000 concurrent clients: tokens/s per core, time to first token, CPU per token and memory per stream,
of one chain served by gitops-flow, by LangServe and by a bare Starlette endpoint.

The chain is PromptTemplate("Q: {question}") -> a fake chat model streaming 20 tokens 50 ms apart (1 s per answer;
gitops-flow's FakeChatModel with ``token_latency``, the same class in all three) -> StrOutputParser; served three
ways, each by its own uvicorn process (uvloop, httptools, no access log, log level warning) pinned to one CPU:

- gitops-flow: ``create_app`` following a local bare repository holding ``flows/echo.json`` (``token_latency_ms``
  50), state ``memory://``; ``POST /flows/echo/stream``;
- LangServe: ``add_routes(FastAPI(), chain, path="/echo")``; ``POST /echo/stream``;
- bare: one Starlette route streaming ``chain.astream(input)`` as LangServe frames it; ``POST /echo/stream``.

The load generator (benchmarks/_streamgen.py: plain asyncio streams on uvloop, on another CPU) keeps ``--clients``
streams open, each client opening the next as soon as its stream ends, for a warm-up and then the measured seconds.
Per server: data events received per second (the tokens: every server sends the same chunks, checked), streams
ended per second, time to first token p50 and p99 (request sent -> first data event), the server's CPU time per token
(utime + stime of /proc/<pid>/stat over the measured window, divided by the tokens), and its RSS with every client's
stream open minus its RSS idle, per 1,000 streams in flight. Servers are measured one after another, in rotated
order each round; figures are medians of the rounds.

    python benchmarks/serve_stream.py                 # 1 round, 8 s warm-up + 5 s per server
    python benchmarks/serve_stream.py --quick         # 1 round, 3 s + 3 s, 300 clients
    python benchmarks/serve_stream.py --json benchmarks/results/serve_stream.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _machine import describe, machine, median, save
from _serving import BENCHMARKS, PYTHON, Remote, Server, clean_env, cpus, http

TOKENS = 20
TOKEN_LATENCY_MS = 50
ANSWER = "".join(f"w{i} " for i in range(TOKENS // 2))  # words and the spaces between: 20 tokens
TARGET_TOKENS_VS_LANGSERVE = 5.0
TARGET_TTFT_P99_MS = 200.0


def stream_flow() -> str:
    return json.dumps(
        {
            "version": 1,
            "name": "echo",
            "nodes": [
                {"id": "prompt", "component": "PromptTemplate", "params": {"template": "Q: {question}"}},
                {
                    "id": "llm",
                    "component": "FakeChatModel",
                    "params": {"responses": [ANSWER], "token_latency_ms": TOKEN_LATENCY_MS},
                },
                {"id": "answer", "component": "StrOutputParser"},
            ],
            "edges": [{"source": "prompt", "target": "llm"}, {"source": "llm", "target": "answer"}],
        }
    )


def make_servers(repo: str, data: Path, cpu: int | None) -> dict[str, tuple[Server, str]]:
    model = {"BENCH_ANSWER": ANSWER, "BENCH_TOKEN_LATENCY": str(TOKEN_LATENCY_MS / 1000)}
    gitops = {"BENCH_REPO": repo, "BENCH_DATA_DIR": str(data / "gitops"), "BENCH_STATE": "memory://"}
    return {
        "gitops-flow": (Server("gitops-flow", "gitops_flow_app", gitops, "/readyz", cpu), "/flows/echo/stream"),
        "LangServe": (Server("LangServe", "langserve_app", model, "/healthz", cpu), "/echo/stream"),
        "bare Starlette": (Server("bare Starlette", "bare_app", dict(model), "/healthz", cpu), "/echo/stream"),
    }


def chunks_of(base: str, path: str) -> list[Any]:
    status, _, body = http("POST", base + path, b'{"input": {"question": "hi"}}', timeout=30)
    if status != 200:
        raise SystemExit(f"{base}{path} answered {status}: {body[:300]!r}")
    frames = body.split(b"\r\n\r\n")
    return [json.loads(f.split(b"\r\ndata: ", 1)[1]) for f in frames if f.startswith(b"event: data\r\ndata: ")]


def run_load(url: str, pid: int, clients: int, seconds: float, warmup: float, cpu: int | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "stream.json"
        command = [PYTHON, str(BENCHMARKS / "_streamgen.py"), "--url", url, "--clients", str(clients)]
        command += ["--seconds", str(seconds), "--warmup", str(warmup), "--pid", str(pid), "--out", str(out)]
        if cpu is not None:
            command = ["taskset", "-c", str(cpu), *command]
        subprocess.run(command, check=True, env=clean_env())
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 round, 3 s warm-up + 3 s, 300 clients")
    parser.add_argument("--rounds", type=int, help="rounds (default 1)")
    parser.add_argument("--seconds", type=float, help="measured seconds per server (default 5; quick 3)")
    parser.add_argument(
        "--warmup", type=float, help="warm-up seconds, over which the clients start (default 8; quick 3)"
    )
    parser.add_argument("--clients", type=int, help="concurrent streams (default 1000; quick 300)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers and load generator to CPUs")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    rounds = args.rounds or 1
    seconds = args.seconds or (3.0 if args.quick else 5.0)
    warmup = args.warmup if args.warmup is not None else (3.0 if args.quick else 8.0)
    clients = args.clients or (300 if args.quick else 1000)
    available = cpus()
    pin = not args.no_pin and len(available) >= 2
    server_cpu, load_cpu = (available[-1], available[0]) if pin else (None, None)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < clients + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, clients * 2 + 100), hard))  # the load generator's

    info = machine()
    print(f"machine: {describe(info)}")
    print(
        f"{clients} concurrent streams of {TOKENS} tokens {TOKEN_LATENCY_MS} ms apart; {rounds} round(s) of "
        f"{warmup:g} s warm-up + {seconds:g} s per server; "
        + (f"servers on CPU {server_cpu}, load generator on CPU {load_cpu}" if pin else "no CPU pinning")
    )
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="serve-stream-") as tmp:
        root = Path(tmp)
        remote = Remote.create(root)
        remote.commit({"flows/echo.json": stream_flow()}, "the streaming echo flow")
        remote.push()
        (root / "logs").mkdir()
        servers = make_servers(remote.url, root, server_cpu)
        idle_rss: dict[str, int] = {}
        try:
            for server, _ in servers.values():
                server.start(root / "logs")
            streamed = {label: chunks_of(server.base, path) for label, (server, path) in servers.items()}
            if len({json.dumps(c) for c in streamed.values()}) != 1:
                raise SystemExit(f"the servers do not stream alike: {streamed}")
            print(f"all stream the same {len(next(iter(streamed.values())))} data events")
            for label, (server, _) in servers.items():
                idle_rss[label] = server.rss_kib()
            labels = list(servers)
            for index in range(rounds):
                for label in labels[index % len(labels) :] + labels[: index % len(labels)]:
                    server, path = servers[label]
                    assert server.process is not None
                    result = run_load(server.base + path, server.process.pid, clients, seconds, warmup, load_cpu)
                    result["rss_per_1000_mib"] = (result["rss_mid_kib"] - idle_rss[label]) / 1024 * 1000 / clients
                    results.setdefault(label, []).append(result)
                    print(
                        f"round {index + 1} {label:<15} {result['tokens_per_s']:>8,.0f} tokens/s "
                        f"{result['streams_per_s']:>6,.0f} streams/s TTFT p50 {result['ttft_p50_ms']:6.1f} ms "
                        f"p99 {result['ttft_p99_ms']:6.1f} ms {result['cpu_us_per_token']:6.1f} us CPU/token "
                        f"{result['failed']} failed"
                    )
                    time.sleep(1.0)  # the last round's connections close
        finally:
            for server, _ in servers.values():
                server.stop()

    keys = ("tokens_per_s", "streams_per_s", "ttft_p50_ms", "ttft_p99_ms", "cpu_us_per_token", "rss_per_1000_mib")
    summary = {label: {k: median([r[k] for r in runs]) for k in keys} for label, runs in results.items()}
    for label, runs in results.items():
        summary[label]["failed"] = sum(r["failed"] for r in runs)
    print()
    print(f"medians of {rounds} round(s), {clients} concurrent streams, server pinned to one core")
    print()
    print("| server | tokens/s | streams/s | TTFT p50 | TTFT p99 | CPU per token | RSS per 1,000 streams | failed |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, row in summary.items():
        print(
            f"| {label} | {row['tokens_per_s']:,.0f} | {row['streams_per_s']:,.0f} | {row['ttft_p50_ms']:.0f} ms | "
            f"{row['ttft_p99_ms']:.0f} ms | {row['cpu_us_per_token']:.0f} µs | {row['rss_per_1000_mib']:.1f} MiB | "
            f"{row['failed']} |"
        )
    ours = summary["gitops-flow"]
    ratios = {
        "tokens_vs_langserve": ours["tokens_per_s"] / summary["LangServe"]["tokens_per_s"],
        "tokens_vs_bare": ours["tokens_per_s"] / summary["bare Starlette"]["tokens_per_s"],
        "cpu_per_token_vs_langserve": ours["cpu_us_per_token"] / summary["LangServe"]["cpu_us_per_token"],
        "cpu_per_token_vs_bare": ours["cpu_us_per_token"] / summary["bare Starlette"]["cpu_us_per_token"],
    }
    print()
    print(
        f"gitops-flow tokens/s: {ratios['tokens_vs_langserve']:.2f}x LangServe "
        f"(goal {TARGET_TOKENS_VS_LANGSERVE:g}x: {'met' if ratios['tokens_vs_langserve'] >= 5 else 'MISSED'}), "
        f"{ratios['tokens_vs_bare']:.2f}x bare; CPU per token {ratios['cpu_per_token_vs_langserve']:.2f}x "
        f"LangServe's, {ratios['cpu_per_token_vs_bare']:.2f}x bare's; TTFT p99 {ours['ttft_p99_ms']:.0f} ms "
        f"(goal < {TARGET_TTFT_P99_MS:g} ms: {'met' if ours['ttft_p99_ms'] < TARGET_TTFT_P99_MS else 'MISSED'})"
    )
    save(
        args.json,
        "serve_stream",
        {
            "machine": info,
            "clients": clients,
            "rounds": rounds,
            "seconds": seconds,
            "warmup": warmup,
            "pinned": {"server_cpu": server_cpu, "load_cpu": load_cpu},
            "runs": results,
            "summary": summary,
            "ratios": ratios,
            "idle_rss_kib": idle_rss,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
