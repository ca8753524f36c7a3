"""Nodes of a run, as telemetry sees them: a span per node (with its component), and the tokens its models report.

``NodeObserver`` is what an executor tells about each node it runs; ``RunObserver`` implements it for one run of
one flow. On LangChain's path, ``CallbackBridge`` (a LangChain callback handler, added to a run's config only when
someone listens) turns LangChain's events into these calls: a run whose name is a node id, and that is not inside
another node, is a node (compiler.py names each node's runnable by its id); the tokens of every model call are given to
the node it runs in. An executor that runs nodes itself calls the observer directly, without callbacks.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from gitops_flow.observability.telemetry.context import RequestContext
from gitops_flow.observability.telemetry.tracing import (
    COMPONENT,
    INPUT_TOKENS,
    MODEL,
    NODE,
    OUTPUT_TOKENS,
    Tracing,
    failed,
)


class NodeObserver(Protocol):
    """What an executor reports of the nodes of one run."""

    def node_started(self, node: str) -> object:
        """A node begins; the token returned names it in the calls below."""
        ...

    def node_finished(self, token: object) -> None: ...

    def node_failed(self, token: object, error: BaseException) -> None: ...

    def model_used(self, token: object | None, usage: Usage, model: str | None = None) -> None:
        """A model call inside the node ``token`` (None: outside any node) reported ``usage``."""
        ...


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one model call reported."""

    input_tokens: int = 0
    output_tokens: int = 0

    def __bool__(self) -> bool:
        return bool(self.input_tokens or self.output_tokens)


def usage_of(message: Any) -> Usage:
    """The usage a chat model's message carries (``usage_metadata``), or none."""
    metadata = getattr(message, "usage_metadata", None) if isinstance(message, BaseMessage) else None
    if not metadata:
        return Usage()
    return Usage(int(metadata.get("input_tokens") or 0), int(metadata.get("output_tokens") or 0))


def result_usage(result: LLMResult) -> Usage:
    """The usage of a model call's result: its messages' ``usage_metadata``, else the provider's ``token_usage``."""
    found = Usage()
    for generations in result.generations:
        for generation in generations:
            if isinstance(generation, ChatGeneration):
                found = _add(found, usage_of(generation.message))
    if found:
        return found
    reported = (result.llm_output or {}).get("token_usage") or (result.llm_output or {}).get("usage") or {}
    if isinstance(reported, Mapping):
        return Usage(
            int(reported.get("prompt_tokens") or reported.get("input_tokens") or 0),
            int(reported.get("completion_tokens") or reported.get("output_tokens") or 0),
        )
    return Usage()


def _add(a: Usage, b: Usage) -> Usage:
    return Usage(a.input_tokens + b.input_tokens, a.output_tokens + b.output_tokens)


@dataclass(slots=True, eq=False)
class _Node:
    node: str
    span: Any
    input_tokens: int = 0
    output_tokens: int = 0


class RunObserver:
    """The observer of one run: node spans under ``run_span`` (when traced), tokens added to the node's span, the run
    span and the request's context; ``on_usage`` hears each call's usage (the metrics)."""

    def __init__(
        self,
        context: RequestContext,
        components: Mapping[str, str],
        *,
        tracing: Tracing | None = None,
        run_span: Any = None,
        on_usage: Callable[[Usage, str | None], None] = lambda usage, model: None,
    ) -> None:
        self.context = context
        self.components = components
        self.tracing = tracing
        self.run_span = run_span
        self.on_usage = on_usage
        self.usage = Usage()

    def node_started(self, node: str) -> object:
        span = None
        if self.tracing is not None:
            attributes = {NODE: node, COMPONENT: self.components.get(node, "")}
            span = self.tracing.start_child(node, self.run_span, attributes)
        return _Node(node, span)

    def node_finished(self, token: object) -> None:
        assert isinstance(token, _Node)
        if token.span is not None:
            if token.input_tokens or token.output_tokens:
                token.span.set_attributes({INPUT_TOKENS: token.input_tokens, OUTPUT_TOKENS: token.output_tokens})
            token.span.end()

    def node_failed(self, token: object, error: BaseException) -> None:
        assert isinstance(token, _Node)
        if token.span is not None:
            failed(token.span, error)
        self.node_finished(token)

    def model_used(self, token: object | None, usage: Usage, model: str | None = None) -> None:
        if not usage:
            return
        if isinstance(token, _Node):
            token.input_tokens += usage.input_tokens
            token.output_tokens += usage.output_tokens
            if model and token.span is not None:
                token.span.set_attribute(MODEL, model)
        self.usage = _add(self.usage, usage)
        self.context.spend(usage.input_tokens, usage.output_tokens)
        self.on_usage(usage, model)


class CallbackBridge(BaseCallbackHandler):
    """LangChain's callbacks of one run, as NodeObserver calls. Called inline (no thread hop) and never raising
    into the run: telemetry must not fail a flow."""

    run_inline = True
    raise_error = False

    def __init__(self, observer: NodeObserver, nodes: Mapping[str, str]) -> None:
        self.observer = observer
        self.nodes = nodes
        self._parents: dict[uuid.UUID, uuid.UUID | None] = {}
        self._nodes: dict[uuid.UUID, object] = {}
        self._metadata: dict[uuid.UUID, Mapping[str, Any]] = {}  # a model call's, until it ends

    # starts: every run's parent is kept, so a model call finds the node it runs in

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self._start(run_id, serialized, kwargs)

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self._start(run_id, serialized, kwargs)

    def on_llm_start(self, serialized: Any, prompts: Any, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self._start(run_id, serialized, kwargs)

    def on_tool_start(self, serialized: Any, input_str: str, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self._start(run_id, serialized, kwargs)

    def on_retriever_start(self, serialized: Any, query: str, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self._start(run_id, serialized, kwargs)

    # ends

    def on_llm_end(self, response: LLMResult, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        metadata = self._metadata.pop(run_id, {})
        model = metadata.get("ls_model_name")
        self.observer.model_used(self._within(run_id), result_usage(response), str(model) if model else None)
        self._end(run_id, None)

    def on_chain_end(self, outputs: Any, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self._end(run_id, None)

    def on_tool_end(self, output: Any, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self._end(run_id, None)

    def on_retriever_end(self, documents: Any, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self._end(run_id, None)

    def on_chain_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self._end(run_id, error)

    def on_llm_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self._metadata.pop(run_id, None)
        self._end(run_id, error)

    def on_tool_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self._end(run_id, error)

    def on_retriever_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self._end(run_id, error)

    def _start(self, run_id: uuid.UUID, serialized: Any, kwargs: Mapping[str, Any]) -> None:
        parent = kwargs.get("parent_run_id")
        self._parents[run_id] = parent
        metadata = kwargs.get("metadata")
        if metadata and "ls_model_name" in metadata:
            self._metadata[run_id] = metadata
        # a chain's name comes as ``name``; a model's only in its serialized form (LangChain passes run_name there)
        name = kwargs.get("name") or (serialized.get("name") if isinstance(serialized, Mapping) else None)
        if parent is not None and name in self.nodes and self._within(parent) is None:
            self._nodes[run_id] = self.observer.node_started(str(name))

    def _within(self, run_id: uuid.UUID | None) -> object | None:
        """The node that ``run_id`` is, or runs in."""
        seen = 0
        while run_id is not None and seen < 10_000:
            node = self._nodes.get(run_id)
            if node is not None:
                return node
            run_id = self._parents.get(run_id)
            seen += 1
        return None

    def _end(self, run_id: uuid.UUID, error: BaseException | None) -> None:
        node = self._nodes.pop(run_id, None)
        if node is not None:
            if error is None:
                self.observer.node_finished(node)
            else:
                self.observer.node_failed(node, error)
