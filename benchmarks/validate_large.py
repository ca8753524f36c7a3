"""Cost of validating and dry-building one large flow: LangFlow exports with a cycle, and native documents.

For each shape of tests/bigflows.py and each size (800, 1,600, 3,200 and 10,000 nodes), times
``validate_bytes(file bytes, registry)`` (parse, size limits, schema, graph, params, the LangFlow conversion and the
dry-build: what `gitops-flow validate` does per file, and what the server does before its build), in a worker process
of its own after a small warm-up validation. With ``--base REV`` the same cases run, in the same run and case by case,
on the code of ``REV`` too (a detached `git worktree` of it, imported from its own path), so the figures before and
after a change come from one machine in one state; the base's problems are compared with the current code's.

A base case is stopped after ``--base-timeout`` seconds (the code before the cost bounds was cubic on exports with a
cycle), and larger sizes of a shape that was stopped are not tried.

    python benchmarks/validate_large.py --base 3ade5c0 --json benchmarks/results/validate_large.json
    python benchmarks/validate_large.py --quick        # sizes 100 and 200, no base: a smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _machine import REPO, describe, machine, median, save

SIZES = (800, 1_600, 3_200, 10_000)
TARGETS = {3_200: 2.0, 10_000: 5.0}  # issue 11: seconds for an export with a cycle, on this machine
# shape -> (file stem, what it is)
SHAPES: dict[str, tuple[str, str]] = {
    "export-cycle": (
        "generated-chain",
        "LangFlow export: input -> models in a row -> output, the last model feeding "
        "the first (every model on the cycle)",
    ),
    "export-cycle-head": ("generated-chain", "LangFlow export: the same chain, a cycle of its first two models"),
    "export-cycle-tail": ("generated-chain", "LangFlow export: the same chain, a cycle of its last three models"),
    "export-acyclic": ("generated-chain", "LangFlow export: the same chain, no cycle (converted, checked, dry-built)"),
    "native-chain": ("chain", "flow document: prompt -> fake model -> parser -> fake model -> ... (valid, dry-built)"),
    "native-cycle": ("chain", "flow document: the same chain, the last node feeding the second"),
    "native-fan": ("fan", "flow document: one entry fanning out to n - 2 prompts, all read by one keyed prompt"),
    "native-dangling": ("dangling", "flow document: the chain plus n edges from nodes that do not exist"),
    "native-problems": ("problems", "flow document: the chain, every node naming an unregistered component"),
}


def generators() -> Any:
    """tests/bigflows.py of this checkout, loaded by its path: putting the checkout on sys.path would make a worker
    import this checkout's gitops_flow instead of the base's."""
    spec = importlib.util.spec_from_file_location("bigflows", REPO / "tests" / "bigflows.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def document(shape: str, size: int) -> dict[str, Any]:
    bigflows = generators()
    if shape.startswith("export-"):
        cycle = {"export-cycle": "whole", "export-cycle-head": "head", "export-cycle-tail": "tail"}.get(shape)
        return bigflows.langflow_chain(size, cycle=cycle)  # type: ignore[arg-type]
    made: dict[str, Any] = {
        "native-chain": lambda: bigflows.native_chain(size),
        "native-cycle": lambda: bigflows.native_chain(size, cycle=True),
        "native-fan": lambda: bigflows.native_fan(size),
        "native-dangling": lambda: bigflows.native_dangling(size),
        "native-problems": lambda: bigflows.native_problems(size),
    }
    doc: dict[str, Any] = made[shape]()
    return doc


# -- the worker: one case, on the code its PYTHONPATH names ------------------------------------------------------------


def worker(shape: str, size: int, repeat: int) -> None:
    from gitops_flow.components.registry import ComponentRegistry
    from gitops_flow.validation.documents import validate_bytes

    bigflows = generators()
    registry = ComponentRegistry.builtin()
    stem = SHAPES[shape][0]
    warm = bigflows.text(bigflows.native_chain(5))
    validate_bytes(warm, registry, file="chain.json", stem="chain")  # imports and first-use caches, not timed
    raw = bigflows.text(document(shape, size))
    seconds: list[float] = []
    report = None
    for _ in range(repeat):
        started = time.perf_counter()
        report = validate_bytes(raw, registry, file=f"{stem}.json", stem=stem)
        seconds.append(time.perf_counter() - started)
    assert report is not None
    problems = [(p.code, p.path, p.line, p.message) for p in report.problems]
    codes: dict[str, int] = {}
    for code, *_ in problems:
        codes[code] = codes.get(code, 0) + 1
    result = {
        "code": str(Path(sys.modules["gitops_flow"].__file__ or "").parent),
        "bytes": len(raw),
        "seconds": seconds,
        "codes": codes,
        "problems_sha256": hashlib.sha256(json.dumps(problems).encode()).hexdigest(),
        "built": report.built is not None,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(result))


# -- the driver --------------------------------------------------------------------------------------------------------


@dataclass
class Case:
    shape: str
    size: int
    current: dict[str, Any] = field(default_factory=dict)
    base: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"shape": self.shape, "size": self.size, "current": self.current, "base": self.base}


def run_worker(code: Path, shape: str, size: int, repeat: int, timeout: float | None) -> dict[str, Any]:
    """One worker process importing gitops_flow from ``code``; {"timeout": seconds} when it was stopped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITOPS_FLOW_")}
    env["PYTHONPATH"] = str(code)
    argv = [sys.executable, __file__, "--worker", shape, str(size), "--repeat", str(repeat)]
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"timeout": timeout}
    if done.returncode != 0:
        raise SystemExit(f"worker {shape} {size} on {code} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(result["code"]).resolve() != (code / "gitops_flow").resolve():
        raise SystemExit(f"worker imported {result['code']}, not {code}")
    return result


def base_tree(rev: str, into: Path) -> Path:
    """A detached worktree of ``rev`` (removed by the caller)."""
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(into), rev], check=True, capture_output=True
    )
    return into


def shown(result: dict[str, Any] | None) -> str:
    if result is None:
        return "–"
    if "timeout" in result:
        return f"> {result['timeout']:.0f} s (stopped)"
    if "skipped" in result:
        return "not run"
    return f"{median(result['seconds']):.3f} s"


def outcome(result: dict[str, Any]) -> str:
    codes = ", ".join(f"{code} ×{count}" if count > 1 else code for code, count in sorted(result["codes"].items()))
    return (codes or "no problems") + (", built" if result["built"] else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--worker", nargs=2, metavar=("SHAPE", "SIZE"), help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="node counts (default: 800,1600,3200,10000)")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="shapes to run (default: all)")
    parser.add_argument("--repeat", type=int, default=3, help="timed validations per case, current code (default: 3)")
    parser.add_argument("--base", metavar="REV", help="also run the code of this commit, case by case")
    parser.add_argument("--base-repeat", type=int, default=1, help="timed validations per case, base (default: 1)")
    parser.add_argument("--base-timeout", type=float, default=60.0, help="stop a base case after (default: 60 s)")
    parser.add_argument("--quick", action="store_true", help="sizes 100 and 200, one run each, no base")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.repeat)
        return 0
    sizes = [100, 200] if args.quick else [int(s) for s in args.sizes.split(",")]
    shapes = args.shapes.split(",")
    if unknown := set(shapes) - set(SHAPES):
        parser.error(f"unknown shapes {sorted(unknown)}; known: {', '.join(SHAPES)}")
    repeat = 1 if args.quick else args.repeat
    base_rev = None if args.quick else args.base

    info = machine()
    print(f"machine: {describe(info)}")
    cases = [Case(shape, size) for shape in shapes for size in sizes]
    with tempfile.TemporaryDirectory(prefix="gitops-flow-base-") as tmp:
        base = base_tree(base_rev, Path(tmp) / "base") if base_rev else None
        try:
            if base is not None:
                sha = subprocess.run(
                    ["git", "-C", str(base), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
                ).stdout.strip()
                print(f"base: {base_rev} ({sha}) from {base}")
            stopped: set[str] = set()
            for case in cases:
                case.current = run_worker(REPO, case.shape, case.size, repeat, None)
                if base is not None:
                    if case.shape in stopped:
                        case.base = {"skipped": "a smaller size was stopped"}
                    else:
                        case.base = run_worker(base, case.shape, case.size, args.base_repeat, args.base_timeout)
                        if "timeout" in case.base:
                            stopped.add(case.shape)
                same = ""
                if case.base is not None and "seconds" in case.base:
                    same = "same" if case.base["problems_sha256"] == case.current["problems_sha256"] else "DIFFERENT"
                print(
                    f"{case.shape:<18} {case.size:>6}  now {shown(case.current):>10}  base {shown(case.base):>20}"
                    f"  {same:<9} {outcome(case.current)}",
                    flush=True,
                )
        finally:
            if base is not None:
                subprocess.run(
                    ["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)],
                    check=False,
                    capture_output=True,
                )

    print()
    for size, limit in TARGETS.items():
        found = [c for c in cases if c.shape == "export-cycle" and c.size == size]
        if found:
            took = median(found[0].current["seconds"])
            verdict = "met" if took < limit else "MISSED"
            print(f"target: a {size:,}-node export with a cycle under {limit:.0f} s: {verdict} ({took:.3f} s)")
    result = {
        "machine": info,
        "base": base_rev,
        "repeat": repeat,
        "base_repeat": args.base_repeat,
        "base_timeout_s": args.base_timeout,
        "shapes": {s: SHAPES[s][1] for s in shapes},
        "cases": [c.as_dict() for c in cases],
        "targets_s": {str(k): v for k, v in TARGETS.items()},
    }
    save(args.json, "validate_large", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
