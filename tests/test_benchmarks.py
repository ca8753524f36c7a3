"""Every benchmark runs: each script in benchmarks/ is run as a developer runs it, in its quick mode with tiny counts,
and must exit 0, so none can rot unnoticed (delivery.py once indexed an empty list after the canary's failures moved to
the primary; serve_profile.py patched a function that had moved).

What each needs is there in CI: Redis (the machine's, at 127.0.0.1:6379), LangServe (the dev extra) and wrk (.ci/run
installs it, as it installs Chromium). A benchmark that needs wrk fails here without it; it is not skipped.
``lfx serve`` is the one server left out (``--no-lfx``): it needs a virtualenv of its own with lfx 1.13 and its
dependencies, made by the benchmark itself; the test checks that the benchmark says so."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "benchmarks"
NEEDS_WRK = {"feedback_ingest.py", "replicas.py", "serve_langflow.py"}
WRITES = {"serve_profile.py": "--profile-out"}  # where a script writes what it found; the others take --json

# script -> its arguments for a smoke run: quick mode, and counts as small as the script accepts
CASES: dict[str, list[str]] = {
    "blast_radius.py": ["--quick"],
    "build_one.py": ["--iterations", "100", "--invoke-iterations", "100", "--warmup", "1"],
    "cold_start.py": ["--quick", "--flows", "5", "--commits", "10", "--repeat", "1"],
    "delivery.py": ["--quick"],
    "feedback_ingest.py": ["--quick", "--seconds", "1", "--warmup", "0"],
    "deploy_under_load.py": ["--quick", "--commits", "2"],
    "lean_path.py": ["--calls", "20", "--streams", "20", "--rounds", "1"],
    "observe.py": ["--iterations", "20", "--warmup", "2"],
    "replicas.py": ["--quick"],
    "retrieval.py": ["--quick"],
    "serve_compare.py": ["--quick", "--seconds", "1", "--warmup", "0.5", "--connections", "1", "--no-pin"],
    "serve_langflow.py": ["--quick", "--seconds", "1", "--warmup", "0.5", "--connections", "2", "--no-lfx"],
    "serve_profile.py": [
        *("--iterations", "20", "--warmup", "2", "--profile-iterations", "20"),
        *("--burst", "20", "--rounds", "1", "--concurrency", "4", "--top", "3"),
    ],
    "serve_stream.py": ["--quick", "--seconds", "1", "--warmup", "1", "--clients", "5", "--no-pin"],
    "serve_workers.py": ["--quick", "--seconds", "1", "--warmup", "0.5"],
    "store_ops.py": ["--iterations", "100", "--warmup", "1", "--runs", "1"],
    "validate_large.py": ["--quick", "--sizes", "20", "--repeat", "1"],
    "validate_many.py": ["-n", "10", "--repeat", "1", "--warmup", "0"],
}


def test_every_benchmark_has_a_smoke_run() -> None:
    scripts = {p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(CASES)


@pytest.mark.parametrize("script", sorted(CASES))
def test_the_benchmark_runs(script: str, tmp_path: Path) -> None:
    if script in NEEDS_WRK:
        assert shutil.which("wrk"), f"{script} needs wrk: apt-get install wrk (.ci/run installs it)"
    out = tmp_path / "figures.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "GITOPS_FLOW_"))}
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *CASES[script], WRITES.get(script, "--json"), str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert out.exists() and out.stat().st_size > 0, f"{script} wrote nothing"
    if script == "serve_langflow.py":
        assert "lfx serve is left out: --no-lfx" in done.stdout
