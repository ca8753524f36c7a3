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
