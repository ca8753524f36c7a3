"""Helpers of the serving benchmarks: local Git remotes, uvicorn server processes, load generators, RSS."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _machine import REPO

BENCHMARKS = Path(__file__).resolve().parent
PYTHON = sys.executable
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # tests/ (the real-git helpers) is not an installed package

from tests.gitrepo import Remote, git  # noqa: E402
from tests.served import echo_flow  # noqa: E402

__all__ = ["Remote", "echo_flow", "git"]

INVOKE_BODY = b'{"input": {"question": "hi"}}'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def rss_kib(pid: int) -> int:
    """VmRSS of a process, in KiB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 10):
    """(status, headers, body bytes) of one request; status 0 when the server cannot be reached."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, {}, b""


def wait_for(url: str, timeout: float = 60.0, process: subprocess.Popen[bytes] | None = None) -> float:
    """Poll ``url`` every 10 ms until it answers 200; returns the time.monotonic() of that answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before {url} answered 200")
        status, _, _ = http("GET", url, timeout=2)
        if status == 200:
            return time.monotonic()
        time.sleep(0.01)
    raise RuntimeError(f"{url} did not answer 200 within {timeout} s")


@dataclass
class Server:
    """One uvicorn process serving a factory of benchmarks/_apps.py on loopback."""

    label: str
    factory: str
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "/healthz"
    cpu: int | None = None
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log_dir: Path) -> Server:
        self.port = free_port()
        command = [
            PYTHON,
            "-m",
            "uvicorn",
            "--factory",
            "--app-dir",
            str(BENCHMARKS),
            f"_apps:{self.factory}",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        if self.cpu is not None:
            command = ["taskset", "-c", str(self.cpu), *command]  # every thread of the server on that CPU
        env = {**clean_env(), **self.env}
        log = open(log_dir / f"{self.label.replace(' ', '_').replace('/', '_')}.log", "wb")
        self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        wait_for(self.base + self.ready_path, process=self.process)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def rss_kib(self) -> int:
        assert self.process is not None
        return rss_kib(self.process.pid)


def clean_env() -> dict[str, str]:
    """The environment of a server: no tracing (nor network) whatever the caller's says, no admin token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITOPS_FLOW_", "BENCH_"))}
    for variable in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING"):
        env[variable] = "false"
    return env


# -- load generators --------------------------------------------------------------------------------------------------

_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[%s]]
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"connect\\": %%d, \\"read\\": %%d, \\"write\\": %%d, "
    .. "\\"status\\": %%d, \\"timeout\\": %%d, \\"p50_us\\": %%d, \\"p99_us\\": %%d, \\"mean_us\\": %%f, "
    .. "\\"max_us\\": %%d}\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
"""


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str, connections: int, seconds: float, cpu: int | None, body: bytes = INVOKE_BODY, lua: str = ""
) -> dict[str, Any]:
    """One wrk run (one thread, ``connections`` keep-alive HTTP/1.1 connections): requests/s, p50, p99, errors.
    ``lua`` is added to the script (a ``request`` function, to vary each request)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_SCRIPT % body.decode() + lua)
    try:
        command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", script.name, url]
        if cpu is not None:
            command = ["taskset", "-c", str(cpu), *command]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
    finally:
        os.unlink(script.name)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line.removeprefix("WRKJSON "))
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
    return {
        "tool": "wrk",
        "requests": raw["requests"],
        "seconds": raw["duration_us"] / 1e6,
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "mean_ms": raw["mean_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "errors": errors,
        "non_2xx": raw["status"],
    }


def loadgen_command(urls: list[str], connections: int, seconds: float, out: Path, **options: Any) -> list[str]:
    """The command line of benchmarks/_loadgen.py (httpx.AsyncClient, HTTP/1.1 keep-alive)."""
    command = [PYTHON, str(BENCHMARKS / "_loadgen.py"), "--connections", str(connections)]
    command += ["--seconds", str(seconds), "--out", str(out)]
    for url in urls:
        command += ["--url", url]
    for name, value in options.items():
        if value is True:
            command.append("--" + name.replace("_", "-"))
        elif value not in (None, False):
            command += ["--" + name.replace("_", "-"), str(value)]
    return command


def run_loadgen(url: str, connections: int, seconds: float, cpu: int | None) -> dict[str, Any]:
    """One run of the httpx load generator in its own process (when wrk is not installed)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "load.json"
        command = loadgen_command([url], connections, seconds, out)
        if cpu is not None:
            command = ["taskset", "-c", str(cpu), *command]
        subprocess.run(command, check=True, env=clean_env())
        raw = json.loads(out.read_text())
    return {
        "tool": "httpx",
        "requests": raw["ok"] + raw["failed"],
        "seconds": raw["seconds"],
        "rps": (raw["ok"] + raw["failed"]) / raw["seconds"],
        "p50_ms": raw["p50_ms"],
        "p99_ms": raw["p99_ms"],
        "mean_ms": raw["mean_ms"],
        "max_ms": raw["max_ms"],
        "errors": raw["failed"],
        "non_2xx": sum(n for s, n in raw["statuses"].items() if not s.startswith("2")),
    }


def load(url: str, connections: int, seconds: float, cpu: int | None, tool: str) -> dict[str, Any]:
    return run_wrk(url, connections, seconds, cpu) if tool == "wrk" else run_loadgen(url, connections, seconds, cpu)
