"""Which executor runs a flow's request: its lean program (runtime/lean/), or its LangChain runnable when the run
needs what only LangChain's callbacks give.

LangChain's path runs when the operator says so (``GITOPS_FLOW_RUNTIME=langchain``), when LangSmith traces runs
(its tracer is a LangChain callback), when the request is traced with OpenTelemetry (node spans come from
LangChain's callbacks), and for ``stream_log``/``stream_events`` (langserve_api.py calls the runnable itself: they
are LangChain's callbacks, streamed). Everything else runs lean; a token budget or token metrics still hear every
model call's usage, from the lean program's observer (telemetry.runs.current_observer).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import Any, Protocol

from gitops_flow.config import Runtime
from gitops_flow.observability.telemetry.context import current
from gitops_flow.observability.telemetry.nodes import NodeObserver, result_usage
from gitops_flow.observability.telemetry.runs import Telemetry, current_observer
from gitops_flow.runtime.compiler import BuiltFlow
from gitops_flow.runtime.lean.forms import Observer


class Runner(Protocol):
    """What runs one request: LangChain's runnable, or the lean program with the run's observer bound."""

    def ainvoke(self, input: Any, config: Any = None) -> Awaitable[Any]: ...

    def astream(self, input: Any, config: Any = None) -> AsyncIterator[Any]: ...

    def abatch(self, inputs: list[Any], config: Any = None) -> Awaitable[list[Any]]: ...


class Executor:
    """Chooses the runner of each run (see the module's docstring); ``telemetry`` says whether a request is
    traced."""

    def __init__(self, runtime: Runtime = "lean", *, langsmith: bool = False, telemetry: Telemetry | None = None):
        self.runtime = runtime
        self.langsmith = langsmith
        self.telemetry = telemetry or Telemetry()

    def __repr__(self) -> str:
        return f"Executor(runtime={self.runtime!r}, langsmith={self.langsmith})"

    def lean(self) -> bool:
        """Whether a run that starts now may run lean (called inside the run's telemetry, where its observer is)."""
        if self.runtime == "langchain" or self.langsmith:
            return False
        context = current()
        return context is None or not self.telemetry.traced(context)

    def runner(self, built: BuiltFlow) -> Runner:
        if built.lean is None or not self.lean():
            return built.runnable
        observer = current_observer()
        return _Lean(built.lean, _Reporting(observer) if observer is not None else None)


class _Lean:
    """The lean program, called with the run's observer."""

    __slots__ = ("flow", "observer")

    def __init__(self, flow: Any, observer: Observer | None) -> None:
        self.flow = flow
        self.observer = observer

    def ainvoke(self, input: Any, config: Any = None) -> Awaitable[Any]:
        return self.flow.ainvoke(input, config, observer=self.observer)  # type: ignore[no-any-return]

    def astream(self, input: Any, config: Any = None) -> AsyncIterator[Any]:
        return self.flow.astream(input, config, observer=self.observer)  # type: ignore[no-any-return]

    def abatch(self, inputs: list[Any], config: Any = None) -> Awaitable[list[Any]]:
        return self.flow.abatch(inputs, config, observer=self.observer)  # type: ignore[no-any-return]


class _Reporting:
    """Telemetry's node observer as the lean program's: a model's result becomes its usage, read as LangChain's
    callback bridge reads it (telemetry.nodes.result_usage), so budgets count the same tokens on both paths."""

    __slots__ = ("observer",)

    def __init__(self, observer: NodeObserver) -> None:
        self.observer = observer

    def node_started(self, node: str) -> object:
        return self.observer.node_started(node)

    def node_finished(self, token: object) -> None:
        self.observer.node_finished(token)

    def node_failed(self, token: object, error: BaseException) -> None:
        self.observer.node_failed(token, error)

    def model_result(self, token: object, result: Any, model: str | None) -> None:
        self.observer.model_used(token, result_usage(result), model)


def run_lean(built: BuiltFlow, lean: bool) -> Runner:
    """``built``'s lean program (``lean``) or its runnable, with no observer: for callers outside a request
    (`gitops-flow test`, the differential tests)."""
    if lean and built.lean is not None:
        return _Lean(built.lean, None)
    return built.runnable
