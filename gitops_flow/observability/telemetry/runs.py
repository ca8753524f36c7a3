"""Telemetry of flow runs: what the request path calls around each run (a span per attempt, with its version and
ref, node spans under it) and what it puts in a run's config (LangChain callbacks, only while someone listens).

Someone listens when the request is traced (tracing is on and the sampler kept it), when a token budget counts the
request's tokens, or when the operator asked for token metrics of every run; otherwise a run is observed by nothing
and costs nothing more.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from gitops_flow.flow.document import FlowSpec
from gitops_flow.observability.telemetry.context import RequestContext, current, hashed
from gitops_flow.observability.telemetry.nodes import CallbackBridge, NodeObserver, RunObserver, Usage
from gitops_flow.observability.telemetry.tracing import (
    FLOW,
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    REF,
    ROUTE,
    RUN_ID,
    SESSION,
    USER,
    VERSION,
    Tracing,
    failed,
)

OnUsage = Callable[[str, str, str | None, Usage, str | None], None]  # (flow, sha, ref, usage, model): token metrics


class Telemetry:
    """The request path's telemetry: ``tracing`` None when traces are off."""

    def __init__(
        self,
        tracing: Tracing | None = None,
        *,
        on_usage: OnUsage = lambda flow, sha, ref, usage, model: None,
        token_metrics: bool = False,
    ) -> None:
        self.tracing = tracing
        self.on_usage = on_usage
        self.token_metrics = token_metrics

    def chosen(
        self, flow: str, sha: str, ref: str | None, route: str | None, session: str | None, user: str | None
    ) -> None:
        """The request's version is chosen: its log lines and span say which from now on."""
        context = current()
        if context is None:
            return
        context.flow, context.version, context.ref, context.route = flow, sha, ref, route
        context.session = hashed(session) if session else None
        context.user = hashed(user) if user else None
        if context.span is not None:
            context.span.set_attributes(_attributes(context))

    def traced(self, context: RequestContext) -> bool:
        """Whether the request's spans are recorded (a request the sampler left out is not)."""
        return self.tracing is not None and context.span is not None and context.span.is_recording()

    def listening(self, context: RequestContext) -> bool:
        return self.traced(context) or context.meter is not None or self.token_metrics

    @asynccontextmanager
    async def run(self, flow: str, sha: str, ref: str | None, spec: FlowSpec) -> AsyncIterator[None]:
        """One attempt to run ``flow`` on a version (a failed canary's retry on its primary is another); the
        request's budgets (its meter) hear that it started, and at its end, its tokens and whether it ran to its end."""
        context = current()
        if context is not None:
            context.version, context.ref = sha, ref  # the primary answers a canary's retry
        if context is None or not self.listening(context):
            yield
            return
        span = None
        tracing = self.tracing if self.traced(context) else None
        if tracing is not None:
            attributes = {**_attributes(context), FLOW: flow, VERSION: sha, REF: ref or ""}
            span = tracing.start_child(f"run {flow}", context.span, attributes)
        observer = RunObserver(
            context,
            {node.id: node.component for node in spec.nodes},
            tracing=tracing,
            run_span=span,
            on_usage=lambda usage, model: self.on_usage(flow, sha, ref, usage, model),
        )
        context.observer = observer
        meter = context.meter
        if meter is not None:
            meter.run_started()
        complete = True
        try:
            yield
        except BaseException as exc:
            # a run that failed ended (what its models reported is what they billed); one cut short did not (it was
            # cancelled, or its stream was closed as its client went away)
            complete = isinstance(exc, Exception)
            if span is not None:
                failed(span, exc)
            raise
        finally:
            context.observer = None
            if meter is not None:
                meter.run_ended(observer.usage.input_tokens + observer.usage.output_tokens, complete)
            if span is not None:
                if observer.usage:
                    usage = observer.usage
                    span.set_attributes({INPUT_TOKENS: usage.input_tokens, OUTPUT_TOKENS: usage.output_tokens})
                if context.run_id is not None:
                    span.set_attribute(RUN_ID, context.run_id)
                span.end()

    def stream(
        self, flow: str, sha: str, ref: str | None, spec: FlowSpec, start: Callable[[], AsyncIterator[Any]]
    ) -> AsyncIterator[Any]:
        """A run that streams: ``start()`` opens it, and its span ends with its last chunk (or its error)."""
        context = current()
        if context is None or not self.listening(context):
            return start()
        return self._observed(flow, sha, ref, spec, start)

    async def _observed(
        self, flow: str, sha: str, ref: str | None, spec: FlowSpec, start: Callable[[], AsyncIterator[Any]]
    ) -> AsyncIterator[Any]:
        async with self.run(flow, sha, ref, spec):
            async for chunk in start():
                yield chunk


def current_observer() -> NodeObserver | None:
    """The node observer of the run going on in this request, for an executor that runs nodes itself (without
    LangChain's callbacks): it calls ``node_started``/``node_finished``/``node_failed`` per node and ``model_used``
    with ``usage_of(message)`` per model call. None while no one listens."""
    context = current()
    observer = context.observer if context is not None else None
    return observer if isinstance(observer, RunObserver) else None


def run_extras(run_id: uuid.UUID) -> dict[str, Any]:
    """What the config of run ``run_id`` gets from telemetry: the callbacks of the run's observer, when one listens.
    Names the run in the request's context (its log lines carry the run id from here on)."""
    context = current()
    if context is None:
        return {}
    context.run_id = str(run_id)
    observer = context.observer
    if not isinstance(observer, RunObserver):
        return {}
    return {"callbacks": [CallbackBridge(observer, observer.components)]}


def _attributes(context: RequestContext) -> Mapping[str, Any]:
    found = {
        FLOW: context.flow,
        VERSION: context.version,
        REF: context.ref,
        ROUTE: context.route,
        SESSION: context.session,
        USER: context.user,
    }
    return {k: v for k, v in found.items() if v is not None}
