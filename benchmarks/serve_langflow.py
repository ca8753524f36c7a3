"""A LangFlow starter export served by gitops-flow's LangFlow run API, by `lfx serve` 1.13 and by a bare endpoint.

The export is LangFlow's "Basic Prompting" starter (tests/data/langflow/basic-prompting.json, from langflow-base
1.13) with its model taken out: ChatInput -> Prompt ("Q: {question}", the chat input as ``question``) -> ChatOutput,
so that what is measured is each server's own work, not a model's (``lfx serve`` would call OpenAI). The same file is

- committed to a local bare repository followed by gitops-flow (``create_app``, state ``memory://``), and asked
  ``POST /api/v1/run/prompt-only`` with ``{"input_value": "hi"}`` (LangFlow's run API);
- given to ``lfx serve`` 1.13 (LangFlow's own runtime for exported flows; it runs the Python code the export stores),
  asked ``POST /flows/<the export's id>/run`` with the same body and its API key;
- and done by hand by a bare Starlette endpoint (benchmarks/_apps.py ``bare_prompt_app``: the prompt, formatted).

`lfx` lives in its own virtual environment, ``benchmarks/.venv-lfx`` (git-ignored): created, with
``pip install 'lfx==1.13.*'``, when it is missing; when that fails (no network, say), lfx is skipped with the reason.
Each server is its own process pinned to one CPU, wrk (one thread, 32 connections) to another; every server is
checked to answer ``Q: hi`` first. Per server: requests/s, latency p50 and p99, and its CPU per request (utime +
stime of the process and its children, /proc, before and after the measured cell), in rotated order over the rounds;
figures are medians.

    python benchmarks/serve_langflow.py                 # 2 rounds, 2 s warm-up + 5 s per server
    python benchmarks/serve_langflow.py --quick         # 1 round, 1 s + 3 s
    python benchmarks/serve_langflow.py --json benchmarks/results/serve_langflow.json
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

from _machine import REPO, describe, machine, median, save
from _serving import BENCHMARKS, Remote, Server, clean_env, cpus, free_port, have_wrk, http, run_wrk, wait_for
from _streamgen import TICKS

LFX_VENV = BENCHMARKS / ".venv-lfx"
LFX_REQUIREMENT = "lfx==1.13.*"
API_KEY = "bench-lfx-key"
BODY = b'{"input_value": "hi"}'
EXPECTED = "Q: hi"
TARGET_VS_LFX = 100.0


def prompt_only(export: str) -> str:
    """Basic Prompting without its model: ChatInput -> Prompt("Q: {question}") -> ChatOutput, edges as LangFlow
    writes them (a handle's dict, and the same as text with ``œ`` for quotes)."""
    data = json.loads(export)
    nodes = {node["id"]: node for node in data["data"]["nodes"]}
    chat_in, prompt, chat_out = (next(i for i in nodes if i.startswith(p)) for p in ("ChatInput", "Prompt", "ChatOut"))
    out_types = next(e for e in data["data"]["edges"] if e["target"] == chat_out)["data"]["targetHandle"]["inputTypes"]
    data["data"]["nodes"] = [nodes[chat_in], nodes[prompt], nodes[chat_out]]
    node = nodes[prompt]["data"]["node"]
    node["template"]["template"]["value"] = "Q: {question}"
    node["template"]["question"] = {
        **{"advanced": False, "dynamic": False, "fileTypes": [], "file_path": "", "info": "", "list": False},
        **{"load_from_db": False, "multiline": True, "placeholder": "", "required": False, "show": True},
        **{"display_name": "question", "name": "question", "field_type": "str", "type": "str", "value": ""},
        **{"input_types": ["Message"], "title_case": False},
    }
    node["custom_fields"] = {"template": ["question"]}

    def handle(fields: dict[str, Any]) -> str:
        return "{" + ", ".join(f"œ{k}œ: " + json.dumps(v).replace('"', "œ") for k, v in fields.items()) + "}"

    def edge(source: str, output: str, kind: str, target: str, field: str, types: list[str]) -> dict[str, Any]:
        out = {"dataType": kind, "id": source, "name": output, "output_types": ["Message"]}
        into = {"fieldName": field, "id": target, "inputTypes": types, "type": "str"}
        return {
            "data": {"sourceHandle": out, "targetHandle": into},
            "id": f"reactflow__edge-{source}-{target}-{field}",
            "source": source,
            "sourceHandle": handle(out),
            "target": target,
            "targetHandle": handle(into),
        }

    data["data"]["edges"] = [
        edge(chat_in, "message", "ChatInput", prompt, "question", ["Message"]),
        edge(prompt, "prompt", "Prompt", chat_out, "input_value", out_types),
    ]
    data["name"] = "Prompt only"
    return json.dumps(data, indent=1)


def lfx_binary() -> tuple[Path | None, str]:
    """benchmarks/.venv-lfx/bin/lfx, made when missing; (None, why) when it cannot be."""
    binary = LFX_VENV / "bin" / "lfx"
    if binary.exists():
        return binary, ""
    try:
        subprocess.run(["python3", "-m", "venv", str(LFX_VENV)], check=True, capture_output=True)
        pip = [str(LFX_VENV / "bin" / "pip"), "install", "-q", LFX_REQUIREMENT]
        print(f"installing {LFX_REQUIREMENT} into {LFX_VENV} (once; a few minutes)")
        done = subprocess.run(pip, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        return None, f"could not make {LFX_VENV}: {exc}"
    if done.returncode != 0 or not binary.exists():
        return None, f"pip install {LFX_REQUIREMENT!r} failed: {done.stderr.strip().splitlines()[-1:]}"
    return binary, ""


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and of every process descending from it (a server's workers)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / TICKS
    family, grew = {pid}, True
    while grew:
        children = {p for p, parent in parents.items() if parent in family} - family
        grew = bool(children)
        family |= children
    return sum(times.get(p, 0.0) for p in family)


class LfxServer:
    """`lfx serve EXPORT` on a free port, pinned to ``cpu``, with an API key."""

    def __init__(self, binary: Path, export: Path, cpu: int | None) -> None:
        self.binary, self.export, self.cpu = binary, export, cpu
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log_dir: Path) -> LfxServer:
        self.port = free_port()
        command = [str(self.binary), "serve", str(self.export), "--port", str(self.port), "--log-level", "warning"]
        if self.cpu is not None:
            command = ["taskset", "-c", str(self.cpu), *command]
        env = {**clean_env(), "LANGFLOW_API_KEY": API_KEY, "DO_NOT_TRACK": "true"}
        log = open(log_dir / "lfx.log", "wb")
        self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=log_dir)
        wait_for(self.base + "/health", timeout=180, process=self.process)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def answer_of(label: str, body: bytes) -> str:
    data = json.loads(body)
    if label == "gitops-flow":
        return str(data["outputs"][0]["outputs"][0]["results"]["message"]["text"])
    return str(data["result"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s warm-up + 3 s per server")
    parser.add_argument("--rounds", type=int, help="rounds (default 2; quick 1)")
    parser.add_argument("--seconds", type=float, help="measured seconds per server (default 5; quick 3)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds (default 2; quick 1)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--no-lfx", action="store_true", help="leave lfx serve out")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    if not have_wrk():
        raise SystemExit("serve_langflow.py needs wrk (apt-get install wrk)")
    rounds = args.rounds or (1 if args.quick else 2)
    seconds = args.seconds or (3.0 if args.quick else 5.0)
    warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    available = cpus()
    server_cpu, load_cpu = (available[-1], available[0]) if len(available) >= 2 else (None, None)
    info = machine()
    print(f"machine: {describe(info)}")
    lfx, why = (None, "--no-lfx") if args.no_lfx else lfx_binary()
    if lfx is None:
        print(f"lfx serve is left out: {why}")
    else:
        version = subprocess.run([str(LFX_VENV / "bin" / "pip"), "show", "lfx"], capture_output=True, text=True)
        info["lfx"] = next((ln.split()[1] for ln in version.stdout.splitlines() if ln.startswith("Version:")), "?")
        print(f"lfx {info['lfx']} from {LFX_VENV}")

    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="serve-langflow-") as tmp:
        root = Path(tmp)
        export = prompt_only((REPO / "tests" / "data" / "langflow" / "basic-prompting.json").read_text())
        flow_id = json.loads(export)["id"]
        (root / "prompt-only.json").write_text(export)
        remote = Remote.create(root)
        remote.commit({"flows/prompt-only.json": export}, "LangFlow's Basic Prompting, without its model")
        remote.push()
        (root / "logs").mkdir()
        gitops = {"BENCH_REPO": remote.url, "BENCH_DATA_DIR": str(root / "gitops"), "BENCH_STATE": "memory://"}
        servers: dict[str, tuple[Any, str, str]] = {
            "gitops-flow": (
                Server("gitops-flow", "gitops_flow_app", gitops, "/readyz", server_cpu),
                "/api/v1/run/prompt-only",
                "",
            ),
            "bare Starlette (the prompt alone)": (
                Server("bare prompt", "bare_prompt_app", {}, "/healthz", server_cpu),
                "/run",
                "",
            ),
        }
        if lfx is not None:
            key = f'wrk.headers["x-api-key"] = "{API_KEY}"\n'
            servers["lfx serve"] = (LfxServer(lfx, root / "prompt-only.json", server_cpu), f"/flows/{flow_id}/run", key)
        try:
            for label, (server, path, _) in servers.items():
                started = time.monotonic()
                server.start(root / "logs")
                print(f"started {label} in {time.monotonic() - started:.1f} s")
                status, _, body = http("POST", server.base + path, BODY, {"x-api-key": API_KEY}, timeout=60)
                if status != 200 or answer_of(label, body) != EXPECTED:
                    raise SystemExit(f"{label} answered {status}: {body[:300]!r}")
            print(f"all answer {EXPECTED!r}")
            labels = list(servers)
            for index in range(rounds):
                for label in labels[index % len(labels) :] + labels[: index % len(labels)]:
                    server, path, lua = servers[label]
                    url = server.base + path
                    if warmup > 0:
                        run_wrk(url, args.connections, warmup, load_cpu, BODY, lua)
                    before = tree_cpu_seconds(server.process.pid)
                    result = run_wrk(url, args.connections, seconds, load_cpu, BODY, lua)
                    cpu = tree_cpu_seconds(server.process.pid) - before
                    result["cpu_us_per_request"] = cpu / result["requests"] * 1e6 if result["requests"] else 0.0
                    results.setdefault(label, []).append(result)
                    print(
                        f"round {index + 1} {label:<34} {result['rps']:>8,.0f} req/s p50 {result['p50_ms']:7.2f} ms "
                        f"p99 {result['p99_ms']:7.2f} ms {result['cpu_us_per_request']:8,.0f} us CPU/request "
                        f"{result['errors']} errors"
                    )
        finally:
            for server, _, _ in servers.values():
                server.stop()

    keys = ("rps", "p50_ms", "p99_ms", "cpu_us_per_request")
    summary = {label: {k: median([r[k] for r in runs]) for k in keys} for label, runs in results.items()}
    for label, runs in results.items():
        summary[label]["errors"] = sum(r["errors"] for r in runs)  # wrk's: timeouts (2 s), connection errors, non-2xx
    print()
    print(f"medians of {rounds} round(s), {args.connections} connections, each server pinned to one core")
    print()
    print("| server | requests/s | p50 | p99 | CPU per request | errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, row in summary.items():
        print(
            f"| {label} | {row['rps']:,.0f} | {row['p50_ms']:.2f} ms | {row['p99_ms']:.2f} ms | "
            f"{row['cpu_us_per_request']:,.0f} µs | {row['errors']:.0f} |"
        )
    ratios: dict[str, float] = {}
    ours = summary["gitops-flow"]
    if "lfx serve" in summary:
        ratios["vs_lfx"] = ours["rps"] / summary["lfx serve"]["rps"]
        ratios["cpu_vs_lfx"] = summary["lfx serve"]["cpu_us_per_request"] / ours["cpu_us_per_request"]
    ratios["vs_bare"] = ours["rps"] / summary["bare Starlette (the prompt alone)"]["rps"]
    print()
    if "vs_lfx" in ratios:
        verdict = "met" if ratios["vs_lfx"] >= TARGET_VS_LFX else "MISSED"
        print(
            f"gitops-flow: {ratios['vs_lfx']:.1f}x lfx serve's requests/s (goal {TARGET_VS_LFX:g}x: {verdict}), "
            f"{ratios['cpu_vs_lfx']:.1f}x less CPU per request; {ratios['vs_bare']:.2f}x the bare prompt's requests/s"
        )
    else:
        print(f"gitops-flow: {ratios['vs_bare']:.2f}x the bare prompt's requests/s (lfx left out)")
    save(
        args.json,
        "serve_langflow",
        {"machine": info, "rounds": rounds, "seconds": seconds, "runs": results, "summary": summary, "ratios": ratios},
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("DO_NOT_TRACK", "true")
    raise SystemExit(main())
