"""Commit-to-serving time, failed requests and memory of a gitops-flow server while commits land under load.

One gitops-flow server (a uvicorn process: uvloop, httptools, one worker, default SQLite state, default
keep_versions=10) follows a local bare repository made with the git command line. A load generator in its own
process (benchmarks/_loadgen.py: httpx.AsyncClient, 16 keep-alive HTTP/1.1 connections, closed loop) POSTs
``{"input": {"question": "hi"}}`` to the flows' ``/invoke`` without pause. Meanwhile the script commits and pushes
50 commits one after another with the real git command line, each changing the answer of the fake model of every
flow ("v1", "v2", ...). After each push it waits until ``/readyz`` names the new commit, then 0.3 s, then makes the
next one.

- commit-to-serving = time.monotonic() of the first response of the load generator that carries the new sha in
  ``X-Flow-Version``, minus time.monotonic() when ``git push`` returned (one machine, one clock);
- failed requests = responses other than 200 plus connection errors, over the whole run; and every response's
  output is checked against the answer of the version its ``X-Flow-Version`` names (a mix would show here);
- latency: the load generator's p50, p99 and max over the whole run, next to those of the same load for 5 s with no
  deploy, measured just before (after 1 s of warm-up);
- memory = VmRSS of the server process (/proc/<pid>/status) before the first push (after 2 s under load), after
  10 deploys and after all 50; with the number of ready versions (GET /versions) at the same moments.

Scenarios: ``1 flow, poll 0.2 s`` (the server polls Git every 0.2 s; its ±10 % jitter included);
``1 flow, webhook-like`` (poll interval 3600 s; the script POSTs /admin/reconcile right after the push, as a webhook
delivery would wake the server); ``50 flows, poll 0.2 s`` (a repository of 50 such flows, every commit changing all of
them, so that each version holds 50 fresh builds and memory per version is large enough to measure; the load
generator goes round the 50 flows).

    python benchmarks/deploy_under_load.py                 # 50 commits per scenario, about 2 minutes
    python benchmarks/deploy_under_load.py --quick         # 5 commits per scenario
    python benchmarks/deploy_under_load.py --json benchmarks/results/deploy_under_load.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from _machine import describe, machine, median, percentile, save
from _serving import _WRK_SCRIPT, INVOKE_BODY, Remote, Server, clean_env, cpus, echo_flow, have_wrk, loadgen_command

ADMIN_TOKEN = "bench-admin-token"
BASELINE_SECONDS = 5.0
SCENARIOS = {  # name -> (label, flows, poll interval, POST /admin/reconcile after each push)
    "poll": ("1 flow, poll 0.2 s", 1, 0.2, False),
    "webhook": ("1 flow, webhook-like", 1, 3600.0, True),
    "poll-50": ("50 flows, poll 0.2 s", 50, 0.2, False),
}


def flow_name(index: int, flows: int) -> str:
    return "echo" if flows == 1 else f"f{index:02}"


def answer(version: int, index: int, flows: int) -> str:
    return f"v{version}" if flows == 1 else f"v{version} {flow_name(index, flows)}"


def files(version: int, flows: int) -> dict[str, str]:
    return {
        f"flows/{flow_name(i, flows)}.json": echo_flow(flow_name(i, flows), answer=answer(version, i, flows))
        for i in range(flows)
    }


def ready_versions(client: httpx.Client) -> int:
    return sum(1 for v in client.get("/versions").json()["versions"] if v["status"] == "ready")


def wait_head(client: httpx.Client, sha: str, timeout: float = 30.0) -> float:
    """Poll /readyz every 5 ms until it names ``sha``; returns the time.monotonic() of that answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/readyz").json().get("version") == sha:
            return time.monotonic()
        time.sleep(0.005)
    raise SystemExit(f"the server did not serve {sha[:12]} within {timeout} s")


def run_scenario(label: str, flows: int, poll: float, trigger: bool, commits: int, root: Path) -> dict[str, Any]:
    root.mkdir()
    remote = Remote.create(root)
    remote.commit(files(0, flows), "version 0")
    remote.push()
    env = {
        "BENCH_REPO": remote.url,
        "BENCH_DATA_DIR": str(root / "server"),
        "BENCH_POLL": str(poll),
        "BENCH_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    server = Server(label, "gitops_flow_app", env, "/readyz").start(root)
    assert server.process is not None
    stop_file = root / "stop"
    load_out = root / "load.json"
    urls = [f"{server.base}/flows/{flow_name(i, flows)}/invoke" for i in range(flows)]
    # the same load for BASELINE_SECONDS with no deploy, after 1 s of warm-up: what the latency is anyway
    baseline_out = root / "baseline.json"
    subprocess.run(loadgen_command(urls, 16, BASELINE_SECONDS, baseline_out, warmup=1.0), env=clean_env(), check=True)
    baseline = json.loads(baseline_out.read_text())
    loadgen = subprocess.Popen(
        loadgen_command(urls, 16, 0, load_out, stop_file=stop_file, track_versions=True), env=clean_env()
    )
    expected: dict[str, str] = {}  # sha -> answer prefix of that version
    pushed: dict[str, float] = {}
    push_seconds: list[float] = []
    readyz_seconds: list[float] = []
    memory: dict[str, dict[str, int]] = {}
    try:
        client = httpx.Client(base_url=server.base, timeout=30.0)
        expected[client.get("/readyz").json()["version"]] = answer(0, 0, flows).split(" ")[0]
        time.sleep(2.0)  # under load, before any deploy
        memory["before"] = {"rss_kib": server.rss_kib(), "ready_versions": ready_versions(client)}
        for version in range(1, commits + 1):
            sha = remote.commit(files(version, flows), f"version {version}")
            started = time.monotonic()
            remote.push()
            pushed[sha] = done = time.monotonic()
            push_seconds.append(done - started)
            expected[sha] = answer(version, 0, flows).split(" ")[0]
            if trigger:
                response = client.post("/admin/reconcile", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
                if response.status_code != 200 or sha not in response.json()["new"]:
                    raise SystemExit(f"/admin/reconcile answered {response.status_code}: {response.text[:300]}")
            readyz_seconds.append(wait_head(client, sha) - done)
            if version == min(10, commits):
                time.sleep(0.3)
                memory["after_10"] = {"rss_kib": server.rss_kib(), "ready_versions": ready_versions(client)}
            time.sleep(0.3)
        time.sleep(1.0)
        memory["after_all"] = {"rss_kib": server.rss_kib(), "ready_versions": ready_versions(client)}
        listed = client.get("/versions").json()["versions"]
        client.close()
    finally:
        stop_file.touch()
        try:
            loadgen.wait(timeout=60)
        finally:
            server.stop()
    load = json.loads(load_out.read_text())

    serving: list[float] = []
    missing: list[str] = []
    for sha, at in pushed.items():
        seen = load["first_seen"].get(sha)
        if seen is None:
            missing.append(sha)
        else:
            serving.append(seen - at)
    mixed = {
        sha: outputs
        for sha, outputs in load["outputs"].items()
        if any(output.split(" ")[0] != expected.get(sha) for output in outputs)
    }
    served = sum(sum(outputs.values()) for outputs in load["outputs"].values())
    statuses = {s: n for s, n in load["statuses"].items()}
    return {
        "scenario": label,
        "flows": flows,
        "poll_interval": poll,
        "webhook_like": trigger,
        "commits": commits,
        "commit_to_serving_s": serving,
        "p50_s": median(serving) if serving else float("nan"),
        "p99_s": percentile(serving, 0.99) if serving else float("nan"),
        "max_s": max(serving) if serving else float("nan"),
        "readyz_p50_s": median(readyz_seconds),
        "push_p50_s": median(push_seconds),
        "never_seen": missing,
        "requests_ok": load["ok"],
        "requests_served_200": served,
        "failed": load["failed"],
        "statuses": statuses,
        "errors": load["errors"],
        "mixed_outputs": mixed,
        "load_seconds": load["seconds"],
        "latency_p50_ms": load["p50_ms"],
        "latency_p99_ms": load["p99_ms"],
        "latency_max_ms": load["max_ms"],
        "memory": memory,
        "baseline": {k: baseline[k] for k in ("ok", "failed", "seconds", "p50_ms", "p99_ms", "max_ms")},
        "versions_listed": {s: sum(1 for v in listed if v["status"] == s) for s in ("ready", "retired", "failed")},
    }


def run_saturated(commits: int, root: Path, connections: int, idle: bool) -> dict[str, Any]:
    """Push-to-first-answer of a new version while wrk keeps the server's core busy (``idle``: no load at all).

    The server (one flow, poll interval 3600 s) is pinned to one CPU, wrk (one thread, ``connections`` keep-alive
    connections POSTing /flows/echo/invoke without pause) to another, as is this script, which pushes a commit,
    POSTs /admin/reconcile from a thread (as a webhook delivery would wake the server) and meanwhile asks
    /flows/echo/invoke one request after another (its requests queue with wrk's) until one answers with the new
    sha in X-Flow-Version: push-to-first-answer is then minus when `git push` returned."""
    root.mkdir()
    available = cpus()
    server_cpu, load_cpu = (available[-1], available[0]) if len(available) >= 2 else (None, None)
    if load_cpu is not None:
        os.sched_setaffinity(0, {load_cpu})
    remote = Remote.create(root)
    remote.commit(files(0, 1), "version 0")
    remote.push()
    env = {"BENCH_REPO": remote.url, "BENCH_DATA_DIR": str(root / "server"), "BENCH_ADMIN_TOKEN": ADMIN_TOKEN}
    label = "idle" if idle else f"saturated ({connections} connections)"
    server = Server(label, "gitops_flow_app", env, "/readyz", server_cpu).start(root)
    url = f"{server.base}/flows/echo/invoke"
    wrk: subprocess.Popen[str] | None = None
    script = root / "load.lua"
    script.write_text(_WRK_SCRIPT % INVOKE_BODY.decode())
    serving: list[float] = []
    readyz: list[float] = []
    try:
        if not idle:
            seconds = 10 + commits * 3
            command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url]
            if load_cpu is not None:
                command = ["taskset", "-c", str(load_cpu), *command]
            wrk = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(2.0)  # the core is saturated before the first push
        client = httpx.Client(base_url=server.base, timeout=60.0)
        latencies = []
        for _ in range(20):  # what one request of the probe takes under this load: the floor of what follows
            sent = time.monotonic()
            client.post(url, content=INVOKE_BODY, headers={"content-type": "application/json"})
            latencies.append(time.monotonic() - sent)
        for version in range(1, commits + 1):
            sha = remote.commit(files(version, 1), f"version {version}")
            remote.push()
            pushed = time.monotonic()

            def trigger() -> None:
                client.post("/admin/reconcile", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})

            thread = threading.Thread(target=trigger)
            thread.start()
            while True:
                response = client.post(url, content=INVOKE_BODY, headers={"content-type": "application/json"})
                if response.headers.get("x-flow-version") == sha:
                    serving.append(time.monotonic() - pushed)
                    break
                if time.monotonic() - pushed > 60:
                    raise SystemExit(f"{label}: {sha[:12]} not served within 60 s")
            thread.join()
            readyz.append(wait_head(client, sha) - pushed)
            time.sleep(0.5)
        client.close()
    finally:
        if wrk is not None:
            wrk.terminate()
            wrk.wait()
        server.stop()
    return {
        "scenario": label,
        "connections": 0 if idle else connections,
        "pinned": {"server_cpu": server_cpu, "load_cpu": load_cpu},
        "commits": commits,
        "push_to_first_answer_s": serving,
        "p50_s": median(serving),
        "max_s": max(serving),
        "readyz_p50_s": median(readyz),
        "request_p50_s": median(latencies),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="5 commits per scenario")
    parser.add_argument("--commits", type=int, help="commits per scenario (default 50; quick 5)")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of {', '.join(SCENARIOS)} (default: all)"
    )
    parser.add_argument(
        "--saturated",
        action="store_true",
        help="instead: push-to-first-answer with the server's core saturated by wrk, next to an idle server",
    )
    parser.add_argument("--connections", type=int, default=32, help="wrk's connections with --saturated (32)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    commits = args.commits or (5 if args.quick else 50)
    info = machine()
    if args.saturated:
        return saturated(args, commits, info)
    print(f"machine: {describe(info)}")
    print(f"{commits} commits per scenario, 16 connections of load, no CPU pinning")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="deploy-under-load-") as tmp:
        for index, name in enumerate(args.scenarios.split(",")):
            label, flows, poll, trigger = SCENARIOS[name]
            row = run_scenario(label, flows, poll, trigger, commits, Path(tmp) / f"s{index}")
            rows.append(row)
            print(
                f"{label:<22} commit-to-serving p50 {row['p50_s'] * 1000:7.1f} ms  p99 {row['p99_s'] * 1000:7.1f} ms  "
                f"max {row['max_s'] * 1000:7.1f} ms; {row['requests_ok']:,} requests OK, {row['failed']} failed, "
                f"{len(row['mixed_outputs'])} versions with a wrong answer, {len(row['never_seen'])} never seen"
            )

    print()
    print("| scenario | commits | commit-to-serving p50 | p99 | max | (/readyz p50) | `git push` p50 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['scenario']} | {row['commits']} | {row['p50_s'] * 1000:.0f} ms | {row['p99_s'] * 1000:.0f} ms | "
            f"{row['max_s'] * 1000:.0f} ms | {row['readyz_p50_s'] * 1000:.0f} ms | {row['push_p50_s'] * 1000:.0f} ms |"
        )
    print()
    print(
        "| scenario | requests served (200) | failed | wrong answer for its version | req/s | latency p50 | p99 | max |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['scenario']} | {row['requests_ok']:,} | {row['failed']} | {len(row['mixed_outputs'])} | "
            f"{row['requests_ok'] / row['load_seconds']:,.0f} | {row['latency_p50_ms']:.1f} ms | "
            f"{row['latency_p99_ms']:.1f} ms | {row['latency_max_ms']:.1f} ms |"
        )
        base = row["baseline"]
        print(
            f"| (same load, {BASELINE_SECONDS:g} s, no deploy) | {base['ok']:,} | {base['failed']} | - | "
            f"{base['ok'] / base['seconds']:,.0f} | {base['p50_ms']:.1f} ms | {base['p99_ms']:.1f} ms | "
            f"{base['max_ms']:.1f} ms |"
        )
    print()
    print(
        "| scenario | RSS before | after 10 deploys | after all | ready versions (before / 10 / all) | "
        "MiB per added version (first 10) | per flow build | growth, deploys 11-all |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        mem = row["memory"]
        before, after_10, after_all = mem["before"], mem.get("after_10", mem["after_all"]), mem["after_all"]
        added = after_10["ready_versions"] - before["ready_versions"]
        per_version = (after_10["rss_kib"] - before["rss_kib"]) / 1024 / added if added else float("nan")
        row["mib_per_added_version"] = per_version
        row["kib_per_flow_build"] = per_version * 1024 / row["flows"]
        row["mib_growth_after_10"] = (after_all["rss_kib"] - after_10["rss_kib"]) / 1024
        print(
            f"| {row['scenario']} | {before['rss_kib'] / 1024:.1f} MiB | {after_10['rss_kib'] / 1024:.1f} MiB | "
            f"{after_all['rss_kib'] / 1024:.1f} MiB | {before['ready_versions']} / {after_10['ready_versions']} / "
            f"{after_all['ready_versions']} | {per_version:.2f} | {row['kib_per_flow_build']:.0f} KiB | "
            f"{row['mib_growth_after_10']:+.1f} MiB |"
        )
    failures = sum(row["failed"] for row in rows) + sum(len(row["mixed_outputs"]) for row in rows)
    print()
    print(f"failed requests in all: {sum(row['failed'] for row in rows)} (target 0)")

    result = {"machine": info, "scenarios": rows}
    save(args.json, "deploy_under_load", result)
    return 1 if failures else 0


def saturated(args: argparse.Namespace, commits: int, info: dict[str, Any]) -> int:
    if not have_wrk():
        raise SystemExit("--saturated needs wrk (apt-get install wrk)")
    commits = args.commits or (5 if args.quick else 20)
    print(f"machine: {describe(info)}")
    print(f"{commits} commits per scenario; server pinned to one CPU, wrk and this script to another")
    rows = []
    with tempfile.TemporaryDirectory(prefix="deploy-saturated-") as tmp:
        for index, idle in enumerate((True, False)):
            row = run_saturated(commits, Path(tmp) / f"s{index}", args.connections, idle)
            rows.append(row)
            print(
                f"{row['scenario']:<28} push-to-first-answer p50 {row['p50_s'] * 1000:7.1f} ms  "
                f"max {row['max_s'] * 1000:7.1f} ms  (/readyz p50 {row['readyz_p50_s'] * 1000:.1f} ms; one request "
                f"{row['request_p50_s'] * 1000:.1f} ms)"
            )
    print()
    print("| server | commits | push-to-first-answer p50 | max | /readyz names it, p50 | one request, p50 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['scenario']} | {row['commits']} | {row['p50_s'] * 1000:.0f} ms | {row['max_s'] * 1000:.0f} ms | "
            f"{row['readyz_p50_s'] * 1000:.0f} ms | {row['request_p50_s'] * 1000:.0f} ms |"
        )
    save(args.json, "deploy_under_load_saturated", {"machine": info, "scenarios": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
