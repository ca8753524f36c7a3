"""Cold start of `gitops-flow serve` on a repository of 1,000 flows and 10,000 commits: process start to /readyz 200.

Builds the repository with ``git fast-import`` (as tests/test_source.py's scale test does) into a bare repository:
the first commit adds N (default 1,000) valid flow documents (prompt -> FakeChatModel -> parser, each its own name
and answer); each of the next C - 1 (default 9,999) commits changes the answer of one flow, in turn, so the history
holds C commits and N + C - 1 distinct flow blobs. Then it times whole ``gitops-flow serve --repo BARE --data-dir
DIR --port PORT`` processes (the console script next to this interpreter; GITOPS_FLOW_* variables unset) from just
before ``subprocess.Popen`` until

- ``GET /healthz`` first answers 200: interpreter start, imports, opening the state store (the HTTP server is up;
  the reconciler has just started to fetch in the background);
- ``GET /readyz`` first answers 200: the clone (or fetch) is done and the head commit's N flows are validated and
  built and published.

Each endpoint is polled every 10 ms. Two kinds of start, each ``--repeat`` times (default 3), medians reported:

- **fresh**: an empty data folder, so the server clones the repository first;
- **restart**: the data folder of a previous start (clone and SQLite state present), so the fetch has nothing to
  bring and the difference to a fresh start is the clone.

For reference it also times, with the git command line, what the server's clone does (``git init --bare`` and a
``git fetch`` of every branch and tag into it), and, in its own process, ``validate_bytes`` and ``build_flow`` of the
head's documents, which the reconciler runs for every file.

    python benchmarks/cold_start.py                     # 1,000 flows, 10,000 commits, 3 starts of each kind
    python benchmarks/cold_start.py --quick             # 100 flows, 1,000 commits, 1 start of each kind
    python benchmarks/cold_start.py --json benchmarks/results/cold_start.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import describe, machine, median, save
from _serving import clean_env, echo_flow, free_port, git, http

EPOCH = 1_700_000_000


def fast_import(bare: Path, *, flows: int, commits: int) -> tuple[float, dict[str, str]]:
    """Write the history into ``bare`` with git fast-import; returns the seconds it took and the head's files."""
    chunks: list[str] = []
    head: dict[str, str] = {}
    for n in range(commits):
        message = f"commit {n}"
        chunks.append(f"commit refs/heads/main\ncommitter A <a@example.com> {EPOCH + n} +0000\n")
        chunks.append(f"data {len(message)}\n{message}\n")
        if n == 0:
            changed = {f"flows/f{f:04}.json": echo_flow(f"f{f:04}", answer=f"answer of f{f:04}") for f in range(flows)}
        else:
            f = n % flows
            changed = {f"flows/f{f:04}.json": echo_flow(f"f{f:04}", answer=f"answer {n} of f{f:04}")}
        head.update(changed)
        for path, content in changed.items():
            data = content.encode()
            chunks.append(f"M 100644 inline {path}\ndata {len(data)}\n{content}\n")
    started = time.perf_counter()
    git("fast-import", "--quiet", cwd=bare, input="".join(chunks))
    return time.perf_counter() - started, head


def in_process(head: dict[str, str]) -> dict[str, float]:
    """Seconds to validate (schema, graph, dry-build) and to build the head's flows in this process, as the
    reconciler does for each file, without Git, the state store or HTTP."""
    from gitops_flow.components.registry import ComponentRegistry
    from gitops_flow.runtime.compiler import build_flow
    from gitops_flow.runtime.conversations import Conversations
    from gitops_flow.stores.memory import MemoryStore
    from gitops_flow.validation.documents import validate_bytes

    registry = ComponentRegistry.builtin()
    raw = {path: text.encode() for path, text in head.items()}
    started = time.perf_counter()
    reports = [validate_bytes(data, registry, file=path, stem=Path(path).stem) for path, data in raw.items()]
    validated = time.perf_counter()
    store = MemoryStore()
    for report in reports:
        assert report.ok and report.spec is not None, report.problems
        build_flow(report.spec, registry, secrets={}, history=Conversations(store))
    return {"validate_s": validated - started, "build_s": time.perf_counter() - validated}


def gitops_flow_command() -> list[str]:
    script = Path(sys.executable).with_name("gitops-flow")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gitops_flow"]


def start_once(bare: Path, data_dir: Path, log: Path, timeout: float, expected: int) -> dict[str, float]:
    """Seconds from Popen to /healthz 200 and to /readyz 200 of one `gitops-flow serve` process."""
    port = free_port()
    command = [*gitops_flow_command(), "serve", "--repo", str(bare), "--data-dir", str(data_dir), "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with open(log, "ab") as out:
        started = time.monotonic()
        process = subprocess.Popen(command, env=clean_env(), stdout=out, stderr=subprocess.STDOUT)
        try:
            times: dict[str, float] = {}
            deadline = started + timeout
            for path in ("/healthz", "/readyz"):
                while True:
                    if process.poll() is not None:
                        raise SystemExit(f"gitops-flow serve exited with {process.returncode}; see {log}")
                    if time.monotonic() > deadline:
                        raise SystemExit(f"{path} did not answer 200 within {timeout} s; see {log}")
                    status, _, body = http("GET", base + path, timeout=5)
                    if status == 200:
                        times[path] = time.monotonic() - started
                        break
                    time.sleep(0.01)
            # /readyz answered from one worker process, and /flows may be answered by another that has not listed
            # the head's flows yet (seen under load): counted once an answer lists them all, or as the last one did
            while True:
                status, _, body = http("GET", base + "/flows")
                times["flows"] = len(json.loads(body)["flows"]) if status == 200 else -1
                if times["flows"] == expected or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return times


def git_clone_seconds(bare: Path, into: Path) -> float:
    """What GitSource does on first use, with the git command line: init a bare clone and fetch every ref into it."""
    started = time.perf_counter()
    git("init", "--bare", "--quiet", str(into), cwd=into.parent)
    git(
        "fetch",
        "--prune",
        "--no-write-fetch-head",
        str(bare),
        "+refs/heads/*:refs/heads/*",
        "+refs/tags/*:refs/tags/*",
        cwd=into,
    )
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100 flows, 1,000 commits, 1 start of each kind")
    parser.add_argument("--flows", type=int, help="flows at the head (default 1000; quick 100)")
    parser.add_argument("--commits", type=int, help="commits in the history (default 10000; quick 1000)")
    parser.add_argument("--repeat", type=int, help="starts of each kind (default 3; quick 1)")
    parser.add_argument("--timeout", type=float, default=240.0, help="give up on one start after this (240 s)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    flows = args.flows or (100 if args.quick else 1000)
    commits = args.commits or (1000 if args.quick else 10_000)
    repeat = args.repeat or (1 if args.quick else 3)
    if commits < 1 or flows < 1:
        parser.error("need at least one flow and one commit")

    info = machine()
    print(f"machine: {describe(info)}")
    runs: dict[str, list[dict[str, float]]] = {"fresh": [], "restart": []}
    with tempfile.TemporaryDirectory(prefix="cold-start-") as tmp:
        root = Path(tmp)
        bare = root / "origin.git"
        git("init", "--bare", "--quiet", str(bare), cwd=root)
        import_seconds, head = fast_import(bare, flows=flows, commits=commits)
        git("gc", "--quiet", cwd=bare)  # one pack, as a hosted repository would serve it
        pack_kib = sum(p.stat().st_size for p in (bare / "objects" / "pack").glob("*.pack")) // 1024
        print(
            f"repository: {flows:,} flows at the head, {commits:,} commits, pack {pack_kib:,} KiB "
            f"(fast-import {import_seconds:.1f} s)"
        )
        clones = []
        for index in range(repeat):
            clones.append(git_clone_seconds(bare, root / f"git-clone-{index}"))
            shutil.rmtree(root / f"git-clone-{index}")
        print(f"git init --bare + fetch of every ref, git CLI alone: median {median(clones):.2f} s")

        parts = in_process(head)
        print(
            f"in this process: validate_bytes of the head's {flows:,} flows {parts['validate_s']:.2f} s "
            f"(includes a dry-build), build_flow of them {parts['build_s']:.2f} s"
        )

        log = root / "serve.log"
        for index in range(repeat):
            data_dir = root / f"data-{index}"
            fresh = start_once(bare, data_dir, log, args.timeout, flows)
            runs["fresh"].append(fresh)
            restart = start_once(bare, data_dir, log, args.timeout, flows)
            runs["restart"].append(restart)
            for kind, run in (("fresh", fresh), ("restart", restart)):
                if run["flows"] != flows:
                    raise SystemExit(f"{kind} start serves {run['flows']} flows, not {flows}; see {log}")
                print(f"start {index + 1} {kind:<8} /healthz {run['/healthz']:6.2f} s  /readyz {run['/readyz']:6.2f} s")
            shutil.rmtree(data_dir)

    summary = {
        kind: {
            "healthz_s": median([r["/healthz"] for r in kind_runs]),
            "readyz_s": median([r["/readyz"] for r in kind_runs]),
            "readyz_min_s": min(r["/readyz"] for r in kind_runs),
            "readyz_max_s": max(r["/readyz"] for r in kind_runs),
            "fetch_and_build_s": median([r["/readyz"] - r["/healthz"] for r in kind_runs]),
        }
        for kind, kind_runs in runs.items()
    }
    clone_estimate = summary["fresh"]["readyz_s"] - summary["restart"]["readyz_s"]
    print()
    print(f"medians of {repeat} start(s) of each kind; {flows:,} flows, {commits:,} commits")
    print()
    print("| start | to /healthz 200 | to /readyz 200 | (min - max) | /readyz - /healthz |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for kind, row in summary.items():
        label = "fresh (empty data folder: clone)" if kind == "fresh" else "restart (clone present: fetch)"
        print(
            f"| {label} | {row['healthz_s']:.2f} s | **{row['readyz_s']:.2f} s** | "
            f"{row['readyz_min_s']:.2f} - {row['readyz_max_s']:.2f} s | {row['fetch_and_build_s']:.2f} s |"
        )
    print()
    print("| derived | seconds |")
    print("| --- | ---: |")
    print(f"| start-up to /healthz (interpreter, imports, state store) | {summary['fresh']['healthz_s']:.2f} |")
    print(f"| clone, as fresh - restart (to /readyz) | {clone_estimate:.2f} |")
    print(f"| clone with the git command line alone (init --bare + fetch) | {median(clones):.2f} |")
    print(
        f"| fetch (nothing new) + build of {flows:,} flows, restart /readyz - /healthz | "
        f"{summary['restart']['fetch_and_build_s']:.2f} |"
    )
    print(
        f"| of which, measured in-process: validate_bytes of the {flows:,} flows (schema, graph, dry-build) | "
        f"{parts['validate_s']:.2f} |"
    )
    print(f"| of which, measured in-process: build_flow of the {flows:,} flows | {parts['build_s']:.2f} |")

    result = {
        "machine": info,
        "flows": flows,
        "commits": commits,
        "pack_kib": pack_kib,
        "git_clone_s": clones,
        "runs": runs,
        "summary": summary,
        "clone_estimate_s": clone_estimate,
        "in_process": parts,
    }
    save(args.json, "cold_start", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
