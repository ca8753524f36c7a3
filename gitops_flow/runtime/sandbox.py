"""The test sandbox: a flow's ``tests`` run in a child process with a time and a memory limit, killed past them.

A flow's tests run what its author wrote (templates, parsers, operator components, fakes), and code that holds the
interpreter's lock (a C extension, a backtracking regular expression) cannot be stopped by anything in the same
process: a thread cannot be interrupted, and ``asyncio.wait_for`` only cancels at an ``await``. So every flow's tests
run in a process of their own, forked from a server process (multiprocessing's forkserver: one clean, single-threaded
process that imported the test code once, so a child starts in milliseconds and never inherits the server's threads
or locks). The child limits its own address space (``RLIMIT_AS``) and CPU time (``RLIMIT_CPU``, a second bound the
kernel enforces), dies with its parent (PR_SET_PDEATHSIG), and sends its results back through a pipe (at most
MAX_ANSWER bytes); the caller waits ``budget`` seconds plus START_GRACE, then kills it. At most ``processes`` run at
once; the others wait their turn (that wait is not counted against their budget).

A flow whose Retrievers read the repository's documents is tested over them: the caller's ``Knowledge`` (a commit's
files on the server, the working tree in CI) is read in the parent, only the documents the flow's ``paths`` match
and within the corpus bounds (``Documents.of``), and the child gets those bytes and the bounds, never a handle on
the repository; it indexes them itself, as a dry-build does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import math
import multiprocessing
import os
import pickle
import resource
import signal
import threading
import time
from dataclasses import replace
from multiprocessing import forkserver
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from gitops_flow.components.knowledge import CorpusLimits, Documents, Knowledge, Library
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.flow.document import FlowSpec
from gitops_flow.runtime.flow_tests import BUDGET_S, TIMEOUT, CaseResult, run_flow_tests

START_GRACE = 2.0  # seconds a child may take, on top of its budget, to start and to send its answer
MAX_ANSWER = 8 * 1024 * 1024  # bytes of results a child may send back
# imported once by the forkserver, so that no child imports them again (each child is a fresh fork of it)
PRELOAD = (
    "gitops_flow.runtime.sandbox_host",  # first: the forkserver dies with the server (and every child with it)
    "gitops_flow.runtime.sandbox",
    "gitops_flow.components.builtins",
    "gitops_flow.components.retriever",  # numpy and the text splitters: a Retriever's tests index in the child
    "gitops_flow.components.fake_model",
    "langchain_core.language_models",
    "langchain_core.output_parsers",
    "langchain_core.prompts",
    "langchain_core.runnables",
)
CRASHED = "test-crashed"
RETRIEVER = "Retriever"  # the component whose ``paths`` name the documents a flow's tests read
_PR_SET_PDEATHSIG = 1  # the problem code of tests whose process died before it answered


class TestSandbox:
    """Runs each flow's tests in a child process of its own (the module's docstring). ``budget`` bounds the wall
    time of one flow's tests (Settings.test_budget), ``memory_mb`` the child's address space
    (Settings.test_memory_mb), ``processes`` the children running at once (Settings.test_processes)."""

    def __init__(
        self, registry: ComponentRegistry, *, budget: float = BUDGET_S, memory_mb: int = 2048, processes: int = 2
    ) -> None:
        self.registry = registry
        self.budget = budget
        self.memory_mb = memory_mb
        self.processes = processes
        self._slots = threading.BoundedSemaphore(processes)
        self._running: set[BaseProcess] = set()
        self._closed = False
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(list(PRELOAD))

    def warm(self) -> None:
        """Start the forkserver now (it imports the test code once, a second or two), so that the first flow's tests
        do not pay for it; blocking."""
        forkserver.ensure_running()

    def close(self) -> None:
        """Kill every running child (the server stops): their callers get ``test-crashed`` at once, and no test
        starts after this."""
        self._closed = True
        for child in list(self._running):
            with contextlib.suppress(ProcessLookupError, ValueError, AttributeError):
                child.kill()

    def run(self, spec: FlowSpec, knowledge: Knowledge | None = None) -> list[CaseResult]:
        """The results of ``spec``'s tests, as run_flow_tests gives them; blocking (call it from a worker thread).
        ``knowledge``: the repository's files its Retrievers read (the module's docstring; None: a Retriever does
        not build, as in run_flow_tests). Never raises for what the flow does: tests that ran past the time limit
        give one failed result with code ``test-timeout``, and a child that died (over its memory limit, say) one
        with code ``test-crashed``."""
        if not spec.tests:
            return []
        with self._slots:
            given = None
            if knowledge is not None:  # read in the slot: at most ``processes`` corpora are held at once
                limits = knowledge.library.limits
                given = (Documents.of(knowledge.files, _retriever_paths(spec), limits), limits)
            return self._run(spec, given)

    def _run(self, spec: FlowSpec, knowledge: tuple[Documents, CorpusLimits] | None) -> list[CaseResult]:
        receiver, sender = self._context.Pipe(duplex=False)
        child = self._context.Process(
            target=_child,
            args=(sender, spec, self.registry, self.budget, self.memory_mb, knowledge),
            name=f"gitops-flow tests of {spec.name}",
            daemon=True,
        )
        try:
            if self._closed:
                return [CaseResult(spec.name, "(all)", False, "not run: the server is stopping", code=CRASHED)]
            try:
                child.start()
            except (OSError, pickle.PicklingError) as exc:  # no process, or what it needs does not pickle
                message = f"the process for the flow's tests could not start: {type(exc).__name__}: {exc}"
                return [CaseResult(spec.name, "(all)", False, message, code=CRASHED)]
            self._running.add(child)
            sender.close()
            deadline = time.monotonic() + self.budget + START_GRACE
            answer: bytes | None = None
            if receiver.poll(max(deadline - time.monotonic(), 0)):
                with contextlib.suppress(EOFError, OSError):  # OSError: longer than MAX_ANSWER
                    answer = receiver.recv_bytes(MAX_ANSWER)
            if answer is not None:
                results: list[CaseResult] = pickle.loads(answer)
                return results
            child.join(max(min(deadline - time.monotonic(), 1.0), 0))  # a child that closed the pipe is dying
            if child.is_alive() or child.exitcode == -signal.SIGXCPU:
                message = f"the flow's tests ran past their time limit of {self.budget:g} s and were stopped"
                return [CaseResult(spec.name, "(all)", False, message, code=TIMEOUT)]
            message = (
                f"the process running the flow's tests died before it answered (exit {child.exitcode}); "
                f"its memory limit is {self.memory_mb} MB"
            )
            return [CaseResult(spec.name, "(all)", False, message, code=CRASHED)]
        finally:
            self._running.discard(child)
            receiver.close()
            sender.close()
            if child.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                child.join(5)
                child.close()


def _retriever_paths(spec: FlowSpec) -> list[str]:
    """The globs every Retriever node of ``spec`` reads."""
    found: list[str] = []
    for node in spec.nodes:
        paths = node.params.get("paths") if node.component == RETRIEVER else None
        found += [p for p in paths if isinstance(p, str)] if isinstance(paths, list) else []
    return list(dict.fromkeys(found))


def _child(
    sender: Connection,
    spec: FlowSpec,
    registry: ComponentRegistry,
    budget: float,
    memory_mb: int,
    given: tuple[Documents, CorpusLimits] | None = None,
) -> None:
    """The child: limits, the tests (over ``given`` documents, indexed here), the answer (outputs that do not pickle
    are sent as their repr)."""
    _die_with_parent()  # its parent is the forkserver, which dies with the server (sandbox_host.py)
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    seconds = math.ceil(budget + START_GRACE)
    resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))  # SIGXCPU, then SIGKILL
    knowledge = Library(limits=given[1]).at(given[0]) if given is not None else None
    results = asyncio.run(run_flow_tests(spec, registry, budget=budget, knowledge=knowledge))
    try:
        answer = pickle.dumps(results)
    except Exception:  # noqa: BLE001 - an output of a type that does not pickle: its repr is what a report shows
        answer = pickle.dumps([replace(r, output=_plain(r.output)) for r in results])
    sender.send_bytes(answer)
    sender.close()


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | type(None)) else repr(value)


def _die_with_parent() -> None:
    """SIGKILL this process (a child of the forkserver) when its parent dies (Linux's PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:
        os.kill(os.getpid(), signal.SIGKILL)
