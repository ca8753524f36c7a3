"""The token estimate: what a request reserves against its flow's token budgets before the flow runs (the gate
settles it with what the models report once the request ends).

It bounds what the request's model calls may cost, from what is known before they are made:

    prompt     ceil(characters / 4) + 16 per model call, the characters being the input's text (a string as it is,
               anything else as JSON) and the flow's own text (its prompt nodes' and agents' string params); the 16
               are what a chat API adds around messages (roles, separators)
    answer     the node's ``max_tokens``, or ``default_max_tokens`` (GITOPS_FLOW_BUDGET_MAX_TOKENS) for a node
               without one
    per node   a model node: prompt + answer; an agent: (prompt + answer) per iteration, ``max_iterations`` of
               them; a fake model (FakeChatModel): nothing, it calls no provider

A batch reserves the sum of its inputs', and LangFlow's tweaks count as the node's params. Four characters a token
is English prose's average: text of other scripts, and a conversation's history (which the flow reads while it
runs), are counted only when the run reports them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson

from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.flow.document import FlowSpec

CHARS_PER_TOKEN = 4
CALL_OVERHEAD = 16  # tokens a chat API adds to a call's messages (roles, separators, the answer's priming)
DEFAULT_ITERATIONS = 15  # the Agent's default max_iterations (builtins.tool_agent)


class TokenEstimate:
    """Estimates requests' tokens for the components of ``registry``; see the module's docstring."""

    def __init__(self, registry: ComponentRegistry, *, default_max_tokens: int = 4096) -> None:
        self.registry = registry
        self.default_max_tokens = default_max_tokens

    def __repr__(self) -> str:
        return f"TokenEstimate(default_max_tokens={self.default_max_tokens})"

    def of(self, spec: FlowSpec, inputs: Sequence[Any], tweaks: Mapping[str, Mapping[str, Any]] | None = None) -> int:
        """The tokens a request of ``spec`` with ``inputs`` (one, or a batch's) may spend at most, by estimate;
        ``tweaks`` (LangFlow's, ``{node id: {param: value}}``) set params of its nodes for this request."""
        calls: list[tuple[int, int]] = []  # (calls, answer tokens) per node that calls a provider
        own = 0  # characters of the flow's own text
        for node in spec.nodes:
            kind = self.registry.kind_of(node.component)
            params = {**node.params, **(tweaks or {}).get(node.id, {})}
            if kind in ("prompt", "agent"):
                own += sum(map(len, _strings(params)))
            if kind in ("model", "agent") and self.registry.calls_a_model(node.component):
                answer = _positive(params.get("max_tokens")) or self.default_max_tokens
                times = (_positive(params.get("max_iterations")) or DEFAULT_ITERATIONS) if kind == "agent" else 1
                calls.append((times, answer))
        if not calls:
            return 0
        total = 0
        for value in inputs or [None]:
            prompt = math.ceil((_size(value) + own) / CHARS_PER_TOKEN) + CALL_OVERHEAD
            total += sum(times * (prompt + answer) for times, answer in calls)
        return total


def _size(value: Any) -> int:
    """The characters of an input's text: a string's own, anything else's as JSON."""
    if value is None:
        return 0
    if isinstance(value, str):
        return len(value)
    try:
        return len(orjson.dumps(value, default=str).decode())
    except (TypeError, orjson.JSONEncodeError):
        return len(str(value))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
