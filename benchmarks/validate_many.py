"""Cold-process cost of `gitops-flow validate` on many flow files.

Writes N distinct valid flow documents into a temporary folder (chains prompt -> model -> parser, and fan-out /
fan-in flows shaped like flows/triage.json), then times whole `gitops-flow validate DIR --format json` processes,
interpreter start included, as CI runs them. The same is timed on an empty folder (interpreter and import cost
only) and on a folder of one flow, so the marginal cost of a file can be told apart from the start-up cost.

    python benchmarks/validate_many.py                  # 1000 flows, 3 timed runs each
    python benchmarks/validate_many.py -n 200 --repeat 5 --json benchmarks/results/validate_many.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _machine import describe, machine, median, save

TARGET_FILES = 1000
TARGET_SECONDS = 10.0
TIMEOUT_SECONDS = 120  # one validate process; the whole benchmark stays within a few minutes

MODELS = ("openai:gpt-4o-mini", "openai:gpt-4.1-mini", "openai:gpt-4.1-nano", "openai:gpt-4o")
ROLES = (
    "a support agent",
    "a billing specialist",
    "a release-notes writer",
    "a translator into plain English",
    "a meeting summariser",
    "a code reviewer",
    "an onboarding guide",
    "a travel assistant",
    "a recipe adviser",
    "a legal-text simplifier",
)
RULES = (
    "Answer in two sentences at most.",
    "Use bullet points.",
    "Be polite and precise.",
    "Never invent facts; say when you do not know.",
    "Answer in the language of the question.",
    "Quote the relevant part of the input.",
)
VARIABLES = ("question", "text", "request", "message")
BRANCHES = ("category", "sentiment", "urgency", "draft", "language")


def _env_key() -> dict[str, str]:
    return {"$env": "OPENAI_API_KEY"}


def _model_params(rng: random.Random) -> dict[str, Any]:
    params: dict[str, Any] = {"model": rng.choice(MODELS), "temperature": rng.choice((0, 0.2, 0.5, 0.7))}
    if rng.random() < 0.4:
        params["max_tokens"] = rng.choice((128, 256, 512, 1024))
    if rng.random() < 0.2:
        params["timeout"] = 30
        params["max_retries"] = 2
    params["api_key"] = _env_key()
    return params


def _system(rng: random.Random, index: int, extra: str = "") -> str:
    rules = " ".join(rng.sample(RULES, rng.randint(1, 3)))
    return f"You are {rng.choice(ROLES)} for team {index}. {rules}{extra}"


def chain_flow(name: str, index: int, rng: random.Random) -> dict[str, Any]:
    """prompt -> model -> parser, sometimes behind a Passthrough entry, with a text or chat prompt, str or JSON out."""
    var = rng.choice(VARIABLES)
    json_out = rng.random() < 0.2
    nodes: list[dict[str, Any]] = []
    if rng.random() < 0.25:
        nodes.append({"id": "request", "component": "Passthrough"})
    if rng.random() < 0.2:
        template = f"{_system(rng, index)}\n\nInput: {{{var}}}\nAnswer:"
        nodes.append({"id": "prompt", "component": "PromptTemplate", "params": {"template": template}})
    else:
        extra = ' Reply with a JSON object {{"answer": ...}}.' if json_out else ""
        messages = [["system", _system(rng, index, extra)], ["human", f"{{{var}}}"]]
        nodes.append({"id": "prompt", "component": "ChatPromptTemplate", "params": {"messages": messages}})
    nodes.append({"id": "llm", "component": "ChatModel", "params": _model_params(rng)})
    nodes.append({"id": "answer", "component": "JsonOutputParser" if json_out else "StrOutputParser"})
    edges = [{"source": a["id"], "target": b["id"]} for a, b in zip(nodes, nodes[1:], strict=False)]
    reply = json.dumps({"answer": f"ok {index}"}) if json_out else f"Answer number {index}."
    expect: dict[str, Any] = {"equals": {"answer": f"ok {index}"}} if json_out else {"contains": str(index)}
    tests = [{"name": "answers", "input": {var: f"question {index}"}, "fakes": {"llm": [reply]}, "expect": expect}]
    return {
        "version": 1,
        "name": name,
        "description": f"Generated chain flow {index} for the validation benchmark.",
        "nodes": nodes,
        "edges": edges,
        "tests": tests,
    }


def fan_in_flow(name: str, index: int, rng: random.Random) -> dict[str, Any]:
    """Like flows/triage.json: a Passthrough entry fans out to 2-3 prompt -> model -> parser branches whose
    outputs meet, keyed, in a final prompt -> model -> parser."""
    branches = rng.sample(BRANCHES, rng.randint(2, 3))
    nodes: list[dict[str, Any]] = [{"id": "question", "component": "Passthrough"}]
    edges: list[dict[str, Any]] = []
    fakes: dict[str, list[str]] = {}
    for branch in branches:
        messages = [["system", _system(rng, index, f" Give the {branch} of the question.")], ["human", "{question}"]]
        nodes += [
            {"id": f"{branch}-prompt", "component": "ChatPromptTemplate", "params": {"messages": messages}},
            {"id": f"{branch}-model", "component": "ChatModel", "params": _model_params(rng)},
            {"id": branch, "component": "StrOutputParser"},
        ]
        edges += [
            {"source": "question", "target": f"{branch}-prompt"},
            {"source": f"{branch}-prompt", "target": f"{branch}-model"},
            {"source": f"{branch}-model", "target": branch},
            {"source": branch, "target": "reply-prompt", "key": branch},
        ]
        fakes[f"{branch}-model"] = [f"{branch} {index}"]
    summary = ", ".join(f"{b}: {{{b}}}" for b in branches)
    nodes += [
        {
            "id": "reply-prompt",
            "component": "ChatPromptTemplate",
            "params": {"messages": [["system", f"Write the reply for case {index}."], ["human", summary]]},
        },
        {"id": "writer", "component": "ChatModel", "params": _model_params(rng)},
        {"id": "reply", "component": "StrOutputParser"},
    ]
    edges += [{"source": "reply-prompt", "target": "writer"}, {"source": "writer", "target": "reply"}]
    fakes["writer"] = [f"[{index}] done"]
    tests = [
        {
            "name": "replies",
            "input": {"question": f"case {index}"},
            "fakes": fakes,
            "expect": {"matches": rf"^\[{index}\] "},
        }
    ]
    return {
        "version": 1,
        "name": name,
        "description": f"Generated fan-in flow {index} with branches {', '.join(branches)}.",
        "nodes": nodes,
        "edges": edges,
        "tests": tests,
    }


def write_flows(folder: Path, count: int, fan_in_share: float, seed: int) -> dict[str, int]:
    """Write ``count`` distinct flow files into ``folder``; returns how many of each shape."""
    rng = random.Random(seed)
    shapes = {"chain": 0, "fan-in": 0}
    digests: set[str] = set()
    for index in range(count):
        shape = "fan-in" if rng.random() < fan_in_share else "chain"
        name = f"{shape}-{index:05d}"
        doc = (fan_in_flow if shape == "fan-in" else chain_flow)(name, index, rng)
        text = json.dumps(doc, indent=2) + "\n"
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest in digests:
            raise AssertionError(f"generated a duplicate flow at {index}")
        digests.add(digest)
        (folder / f"{name}.json").write_text(text, encoding="utf-8")
        shapes[shape] += 1
    return shapes


@dataclass
class Scenario:
    label: str
    files: int
    folder: Path
    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    warmup_wall_s: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "files": self.files,
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "warmup_wall_s": self.warmup_wall_s,
            "min_s": min(self.wall_s),
            "median_s": median(self.wall_s),
            "max_s": max(self.wall_s),
        }


def command() -> list[str]:
    """The console script installed next to this interpreter (what CI runs), else ``python -m gitops_flow``.

    Never a ``gitops-flow`` found on PATH: that may belong to another environment than the one benchmarked.
    """
    script = Path(sys.executable).with_name("gitops-flow")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "gitops_flow"]


def run_once(cmd: list[str], scenario: Scenario, env: dict[str, str]) -> tuple[float, float]:
    """One cold `validate` process: wall seconds and CPU seconds (user + system) of the child."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter_ns()
    done = subprocess.run(
        [*cmd, "validate", str(scenario.folder), "--format", "json"],
        capture_output=True,
        env=env,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )
    wall = (time.perf_counter_ns() - started) / 1e9
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(
            f"validate exited {done.returncode} on {scenario.label}:\n{done.stderr.decode()[-2000:]}"
            f"\n{done.stdout.decode()[-2000:]}"
        )
    report = json.loads(done.stdout)
    if report["files"] != scenario.files or report["errors"] != 0:
        raise SystemExit(
            f"{scenario.label}: expected {scenario.files} valid files, got {report['files']} files "
            f"and {report['errors']} errors"
        )
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("-n", "--flows", type=int, default=TARGET_FILES, help="number of flow files (default: 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per scenario (default: 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first, per scenario (default: 1)")
    parser.add_argument("--fan-in-share", type=float, default=0.25, help="share of fan-in flows (default: 0.25)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the flow generator (default: 1)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="write the flows to DIR (kept) instead of a temp dir")
    args = parser.parse_args(argv)
    if args.flows < 2 or args.repeat < 1 or args.warmup < 0 or not 0 <= args.fan_in_share <= 1:
        parser.error("need --flows >= 2, --repeat >= 1, --warmup >= 0 and 0 <= --fan-in-share <= 1")

    info = machine()
    cmd = command()
    # validation reads no secret; drop settings that would change what is measured (an operator components file)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITOPS_FLOW_")}
    with tempfile.TemporaryDirectory(prefix="gitops-flow-bench-") as tmp:
        root = Path(tmp)
        many = args.keep or root / "many"
        many.mkdir(parents=True, exist_ok=True)
        if any(many.glob("*.json")):
            parser.error(f"{many} already holds .json files")
        started = time.perf_counter()
        shapes = write_flows(many, args.flows, args.fan_in_share, args.seed)
        generated_s = time.perf_counter() - started
        (root / "empty").mkdir()
        (root / "one").mkdir()
        first = min(many.glob("*.json"))
        shutil.copy(first, root / "one" / first.name)
        scenarios = [
            Scenario("start-up only (empty folder)", 0, root / "empty"),
            Scenario("one flow", 1, root / "one"),
            Scenario(f"{args.flows} flows", args.flows, many),
        ]
        print(f"machine: {describe(info)}")
        print(f"command: {' '.join(cmd)} validate DIR --format json")
        mix = f"{shapes['chain']} chains, {shapes['fan-in']} fan-in"
        print(f"generated {args.flows} flows ({mix}) in {generated_s:.2f} s")
        for scenario in scenarios:
            for _ in range(args.warmup):
                scenario.warmup_wall_s.append(run_once(cmd, scenario, env)[0])
            for _ in range(args.repeat):
                wall, cpu = run_once(cmd, scenario, env)
                scenario.wall_s.append(wall)
                scenario.cpu_s.append(cpu)
        peak_rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    empty, one, full = scenarios
    marginal_ms = (median(full.wall_s) - median(one.wall_s)) / (full.files - 1) * 1000
    amortised_ms = median(full.wall_s) / full.files * 1000
    print()
    print(f"{'scenario':<30} {'files':>6} {'runs':>5} {'min s':>8} {'median s':>9} {'max s':>8} {'cpu s (med)':>12}")
    for s in scenarios:
        print(
            f"{s.label:<30} {s.files:>6} {len(s.wall_s):>5} {min(s.wall_s):>8.3f} {median(s.wall_s):>9.3f} "
            f"{max(s.wall_s):>8.3f} {median(s.cpu_s):>12.3f}"
        )
    print()
    print(f"per file, marginal  (median {full.files} flows - median one flow) / {full.files - 1}: {marginal_ms:.2f} ms")
    print(f"per file, amortised (median {full.files} flows / {full.files}, start-up included): {amortised_ms:.2f} ms")
    print(f"peak RSS of a validate process: {peak_rss_mib:.0f} MiB")
    if full.files == TARGET_FILES:
        verdict = "met" if median(full.wall_s) < TARGET_SECONDS else "MISSED"
        print(
            f"target: {TARGET_FILES} flows under {TARGET_SECONDS:.0f} s cold: {verdict} "
            f"(median {median(full.wall_s):.2f} s, worst {max(full.wall_s):.2f} s)"
        )
    else:
        print(f"target ({TARGET_FILES} flows under {TARGET_SECONDS:.0f} s) not checked: ran {full.files} flows")

    result = {
        "command": [*cmd, "validate", "DIR", "--format", "json"],
        "machine": info,
        "flows": args.flows,
        "shapes": shapes,
        "seed": args.seed,
        "scenarios": [s.as_dict() for s in scenarios],
        "per_file_marginal_ms": marginal_ms,
        "per_file_amortised_ms": amortised_ms,
        "peak_rss_mib": peak_rss_mib,
        "target": {"files": TARGET_FILES, "seconds": TARGET_SECONDS},
    }
    save(args.json, "validate_many", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
