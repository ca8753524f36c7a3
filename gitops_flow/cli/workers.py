"""`gitops-flow serve` as processes: one server (``server``), or N workers sharing one port (``Supervisor``).

The supervisor binds the listening socket once and hands it to each worker it spawns (as uvicorn's own multiprocess
supervisor does), rather than each worker binding the port with SO_REUSEPORT: a port that is taken fails once, in
the supervisor, with one clear message before any worker starts; no stranger process can bind the same port and
take a share of the connections (SO_REUSEPORT admits any process of the same user); and a worker that restarts
never leaves a moment with the port unbound. The kernel gives each connection to one of the workers waiting in
accept() on the shared socket.

The supervisor:
- starts N workers (``spawn``: each a fresh interpreter, none inherits the supervisor's threads or locks), each
  dying with it (PR_SET_PDEATHSIG) and in its own process group, so a Ctrl-C in a terminal reaches the supervisor
  only and the workers drain once, on its word;
- restarts a worker that dies; a worker that could not start (exit status 3: its lifespan failed) stops the whole
  server, with status 1 and the reason its log gave, as does a slot that dies more than RESTARTS_PER_MINUTE times in
  a minute;
- on SIGTERM or SIGINT sends SIGTERM to every worker, which stops accepting and finishes the requests it has
  (uvicorn's graceful shutdown), then SIGKILLs each worker's process group (a worker past its grace, and whatever
  a worker started: its test sandbox's processes), then exits 0; a supervisor killed outright takes its workers
  with it (PR_SET_PDEATHSIG with SIGKILL, which a worker busy in C code cannot ignore);
- points prometheus_client's multiprocess mode at a folder of its own (PROMETHEUS_MULTIPROC_DIR), so /metrics of
  any worker counts every worker's requests (metrics.py); the folder is removed at exit.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import TYPE_CHECKING

from gitops_flow.config import Settings
from gitops_flow.delivery.leader import Worker
from gitops_flow.exceptions import ConfigError
from gitops_flow.observability.metrics import worker_gone
from gitops_flow.observability.telemetry import logs

if TYPE_CHECKING:
    import uvicorn

STARTUP_FAILURE = 3  # uvicorn's own status for a server that could not start
RESTARTS_PER_MINUTE = 5  # a slot that dies more often than this stops the server: it would only die again
BACKLOG = 2048  # uvicorn's default
_PR_SET_PDEATHSIG = 1

log = logging.getLogger("gitops_flow.server")


def server(settings: Settings, worker: Worker | None = None) -> uvicorn.Server:
    """One server process: the app (flows read only the variables the operator allows, never the whole
    environment), logging as configured, and uvicorn with the bounds of listener.py."""
    import uvicorn

    from gitops_flow.app import server_app
    from gitops_flow.assembly import Server
    from gitops_flow.cli import process
    from gitops_flow.observability.telemetry.tracing import Tracing, telemetry_secrets
    from gitops_flow.server.listener import ServerConfig

    tracing = Tracing.from_environ(os.environ)  # OpenTelemetry's own variables (OTEL_*): off unless an endpoint
    parts = Server(
        settings,
        secrets=settings.secret_policy().select(os.environ),
        tracing=tracing,
        private=telemetry_secrets(os.environ),
        worker=worker,
        settle_heap=process.settle_heap if settings.freeze_heap else None,
    )
    logs.configure(settings.log_format, settings.log_level)
    process.set_up(settings, parts.scrubber)  # once logging is configured: its handlers get the filters
    app = server_app(parts)
    # uvicorn's loggers write through the same handler (no log config of its own), so its lines are JSON too
    return uvicorn.Server(ServerConfig(app, settings, log_level=settings.log_level, log_config=None))


def check(settings: Settings) -> None:
    """Make the app as a worker will, and drop it: a wrong setting (a credential, a components file) raises here,
    once, before any worker starts."""
    from gitops_flow.assembly import Server
    from gitops_flow.observability.telemetry.tracing import telemetry_secrets

    Server(settings, secrets=settings.secret_policy().select(os.environ), private=telemetry_secrets(os.environ))


def bind(settings: Settings) -> socket.socket:
    """The listening socket every worker accepts on; ConfigError naming the address when it cannot be had."""
    host = settings.host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # rebind at once after a restart (TIME_WAIT)
        sock.bind((host, settings.port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


@dataclass
class _Slot:
    """One worker's place: its process now and when it died lately."""

    number: int
    process: BaseProcess | None = None
    deaths: deque[float] = field(default_factory=deque)


class Supervisor:
    """Starts ``count`` workers on one socket and keeps them running until told to stop (the module's docstring)."""

    def __init__(self, settings: Settings, count: int, *, grace: float = 30.0) -> None:
        self.settings = settings
        self.count = count
        self.grace = grace  # seconds a stopping worker has to finish its requests before it is killed
        self.group = uuid.uuid4().hex[:12]
        self.slots = [_Slot(n) for n in range(count)]
        self.failure: str | None = None
        self._stop = threading.Event()
        self._context = multiprocessing.get_context("spawn")

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; 0 after a graceful stop, 1 when workers could not start or kept dying."""
        logs.configure(self.settings.log_format, self.settings.log_level)
        sock = bind(self.settings)
        metrics_dir = tempfile.mkdtemp(prefix="gitops-flow-metrics-")
        previous = {sig: signal.signal(sig, self._signalled) for sig in (signal.SIGTERM, signal.SIGINT)}
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # read by prometheus_client as a worker imports it
        try:
            host = f"[{self.settings.host}]" if ":" in self.settings.host else self.settings.host
            log.info("serving on http://%s:%d with %d workers", host, self.settings.port, self.count)
            for slot in self.slots:
                self._start(slot, sock, metrics_dir)
            while not self._stop.wait(0.2):
                for slot in self.slots:
                    if slot.process is not None and not slot.process.is_alive():
                        self._died(slot, sock, metrics_dir)
                if self.failure is not None:
                    break
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
            sock.close()
            shutil.rmtree(metrics_dir, ignore_errors=True)
        if self.failure is not None:
            print(f"gitops-flow: {self.failure}", file=sys.stderr)
            return 1
        return 0

    def _signalled(self, signum: int, frame: FrameType | None) -> None:
        log.info("%s: stopping %d workers gracefully", signal.Signals(signum).name, self.count)
        self._stop.set()

    def _start(self, slot: _Slot, sock: socket.socket, metrics_dir: str) -> None:
        worker = Worker(self.group, slot.number, metrics_dir)
        process = self._context.Process(
            target=_work, args=(self.settings, sock, worker), name=f"gitops-flow worker {slot.number}"
        )
        process.start()
        slot.process = process

    def _died(self, slot: _Slot, sock: socket.socket, metrics_dir: str) -> None:
        process = slot.process
        assert process is not None and process.pid is not None
        code = process.exitcode
        _kill_group(process)  # a worker that died leaves none of its children (its tests' processes) behind
        worker_gone(metrics_dir, process.pid)
        slot.process = None
        if code == STARTUP_FAILURE:
            self.failure = f"worker {slot.number} could not start (its log above says why); stopping the server"
            return
        now = time.monotonic()
        slot.deaths.append(now)
        while slot.deaths and slot.deaths[0] < now - 60:
            slot.deaths.popleft()
        if len(slot.deaths) > RESTARTS_PER_MINUTE:
            self.failure = f"worker {slot.number} died {len(slot.deaths)} times in a minute; stopping the server"
            return
        how = f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exited with {code}"
        log.warning("worker %d (pid %d) %s; starting it again", slot.number, process.pid, how)
        self._start(slot, sock, metrics_dir)

    def _stop_all(self) -> None:
        """SIGTERM to every worker (each drains its requests), then wait; SIGKILL for one that outlives the grace."""
        running = [s.process for s in self.slots if s.process is not None and s.process.is_alive()]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        deadline = time.monotonic() + self.grace
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("worker pid %s did not stop within %ss; killing it", process.pid, self.grace)
            _kill_group(process)  # the worker, and what it started (its tests' children), gone with it
            process.join()


def _work(settings: Settings, sock: socket.socket, worker: Worker) -> None:
    """A worker process: dies with the supervisor, serves on the shared socket until SIGTERM."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)  # a terminal's Ctrl-C goes to the supervisor, which stops the workers once
    _die_with_parent()
    one = server(settings, worker)
    one.run(sockets=[sock])
    sys.exit(0 if one.started else STARTUP_FAILURE)


def _die_with_parent() -> None:
    """SIGKILL this process when the supervisor dies, even by SIGKILL (Linux's PR_SET_PDEATHSIG). Not SIGTERM: a
    process busy in C code holding the interpreter's lock never runs a Python signal handler, and a worker must
    never outlive its supervisor; a supervisor that stops in order drains its workers with SIGTERM itself."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the supervisor died before the line above ran
        os.kill(os.getpid(), signal.SIGKILL)


def _kill_group(process: BaseProcess) -> None:
    """SIGKILL a worker's process group (its own, set at its start): the worker if it still runs, and every
    process it started (the test sandbox's forkserver and children)."""
    if process.pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
