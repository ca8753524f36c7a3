"""Operator components for the secret tests (a components file names them): careless ones that quote their key.

They are the kind of client code an operator may install: the server must keep what they say out of its answers,
its history, its state and its logs.
"""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import Runnable, RunnableLambda


def leaky(*, api_key: str) -> Runnable[Any, Any]:
    """Fails every call with a message quoting its key, as careless client libraries do."""

    def run(value: Any) -> Any:
        raise RuntimeError(f"the upstream refused key {api_key}")

    return RunnableLambda(run)


def fragile(*, api_key: str) -> Runnable[Any, Any]:
    """Refuses to be built, quoting its key: the server's build problem must not."""
    raise ValueError(f"key {api_key} is not valid here")


def counting(
    *, responses: list[str], input_tokens: int = 7, output_tokens: int = 3, latency: float = 0.0
) -> Runnable[Any, Any]:
    """A fake chat model whose answers report their token usage, as a provider's do (for token budgets)."""
    from itertools import cycle

    from langchain_core.messages import AIMessage

    from gitops_flow.fakemodel import FakeChatModel

    usage = {"input_tokens": input_tokens, "output_tokens": output_tokens, "total_tokens": input_tokens + output_tokens}
    answers = [AIMessage(content=text, usage_metadata=usage) for text in responses]  # type: ignore[arg-type]
    return FakeChatModel(messages=cycle(answers), latency=latency)
