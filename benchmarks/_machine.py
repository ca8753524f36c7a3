"""What the benchmarks ran on: printed with every run and stored in the --json output."""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("gitops-flow", "langchain-core", "langchain", "pydantic", "langchain-openai")


def machine() -> dict[str, Any]:
    """CPU count, CPU model, Python and the versions of the packages the figures depend on."""
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "packages": {name: _version(name) for name in PACKAGES},
        "commit": _commit(),
    }


def describe(info: dict[str, Any]) -> str:
    packages = ", ".join(f"{name} {version}" for name, version in info["packages"].items())
    return (
        f"{info['nproc']} CPU(s) ({info['cpu']}), Python {info['python']} on {info['platform']}; {packages}; "
        f"commit {info['commit']}"
    )


def save(path: Path | None, benchmark: str, results: dict[str, Any]) -> None:
    """Write a run's figures as JSON (with the benchmark's name and command line) when ``--json PATH`` was given."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": benchmark, "argv": sys.argv, **results}, indent=2) + "\n")
    print(f"wrote {path}")


async def time_acalls(
    calls: Mapping[str, Callable[[], Awaitable[object]]], iterations: int, warmup: int
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Microseconds per call of each coroutine function, interleaved, the order reversed every round, after
    ``warmup`` untimed rounds; also the microseconds of each one's first call."""
    order = list(calls)
    first: dict[str, float] = {}
    for label in order:
        started = time.perf_counter_ns()
        await calls[label]()
        first[label] = (time.perf_counter_ns() - started) / 1000
    for _ in range(warmup):
        for label in order:
            await calls[label]()
    gc.collect()
    samples: dict[str, list[float]] = {label: [] for label in order}
    for index in range(iterations):
        for label in order if index % 2 == 0 else reversed(order):
            started = time.perf_counter_ns()
            await calls[label]()
            samples[label].append((time.perf_counter_ns() - started) / 1000)
    return first, samples


def stats(samples: list[float]) -> dict[str, float]:
    """Count, min, median, mean, p99 and max of microsecond samples."""
    return {
        "n": len(samples),
        "min_us": min(samples),
        "median_us": median(samples),
        "mean_us": sum(samples) / len(samples),
        "p99_us": percentile(samples, 0.99),
        "max_us": max(samples),
    }


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)


def medians(runs: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    """The rounds of one cell as one row: the median of each of ``keys``, and the slowest and fastest requests/s."""
    row: dict[str, Any] = {key: median([r[key] for r in runs]) for key in keys}
    row["rps_min"], row["rps_max"] = min(r["rps"] for r in runs), max(r["rps"] for r in runs)
    return row


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _commit() -> str:
    """The checked-out commit of this repository, marked "+changes" when package files differ from it."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "gitops_flow", "pyproject.toml"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+changes" if changed else head
