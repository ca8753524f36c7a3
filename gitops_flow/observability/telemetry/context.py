"""The context of one request: which run, flow, version and ref it is, what its models spent, and what is left to do
when its answer is sent. Every log line written while it is handled carries it.

It travels in a ContextVar, the one piece of ambient state in the server: a log record cannot be handed anything
else, and asyncio copies the context into the tasks a request starts (a fan-out's branches, a stream's sender).
Only the request middleware sets it; everything else reads it or fills in its fields.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

Finalizer = Callable[["RequestContext"], Awaitable[None]]


class Meter(Protocol):
    """What counts a request's tokens against its budgets (guardrails.gate), told as each of its runs starts and
    ends; settled once the request ends (a finalizer)."""

    def run_started(self) -> None: ...

    def run_ended(self, tokens: int, complete: bool) -> None:
        """A run ended having reported ``tokens``; ``complete`` False when it was cut short (its client went away,
        it was cancelled): its models may have billed more than they reported."""
        ...


@dataclass(slots=True, eq=False)
class RequestContext:
    """What is known of a request so far; filled in as it is chosen and run."""

    method: str
    path: str
    run_id: str | None = None
    flow: str | None = None
    version: str | None = None
    ref: str | None = None
    route: str | None = None
    session: str | None = None  # a hash of the session id: a handle to a conversation is not for logs and traces
    user: str | None = None  # a hash of the user id
    cache: str | None = None  # hit or miss, when the flow's answers are cached
    input_tokens: int = 0
    output_tokens: int = 0
    meter: Meter | None = field(default=None, repr=False)  # a token budget's, told each run's start and tokens
    trace_id: str | None = None  # hex, when the request is traced
    span_id: str | None = None
    span: Any = field(default=None, repr=False)  # the request's span (an OpenTelemetry Span), when traced
    observer: Any = field(default=None, repr=False)  # the node observer of the run going on (telemetry.nodes)
    guard: Any = field(default=None, repr=False)  # what the limits hold for this request (guardrails.gate)
    finalizers: list[Finalizer] = field(default_factory=list, repr=False)  # run once the answer is sent

    def fields(self) -> dict[str, str]:
        """The identifiers a log line carries (those known so far)."""
        found = {
            "run_id": self.run_id,
            "flow": self.flow,
            "version": self.version,
            "ref": self.ref,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
        }
        return {k: v for k, v in found.items() if v is not None}

    def spend(self, input_tokens: int, output_tokens: int) -> None:
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


CURRENT: ContextVar[RequestContext | None] = ContextVar("gitops_flow_request", default=None)


def current() -> RequestContext | None:
    """The context of the request being handled, None outside one (the reconciler, a test's direct call)."""
    return CURRENT.get()


def hashed(identifier: str) -> str:
    """A short, stable stand-in for a client's identifier (a session, a user): equal ids give equal hashes."""
    return hashlib.sha256(identifier.encode()).hexdigest()[:16]
