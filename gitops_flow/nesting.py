"""How deeply a JSON document nests: a bound on what the server takes, so that it can always answer.

A value is serialised back by orjson, which stops at 255 levels, and walked by pydantic and LangChain, which
recurse; a body nested beyond ``MAX_DEPTH`` is refused before any of that runs (422 ``too-deep``).
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 64  # levels of objects and arrays in a request's body, the body itself being the first


def too_deep(raw: bytes | bytearray, value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value``, parsed from ``raw``, nests objects and arrays more than ``limit`` levels deep.

    A document with no more brackets than ``limit`` cannot nest deeper, which two C-speed counts tell; only a
    document with more is walked, one step per object or array, never per byte."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    return deeper_than(value, limit)


def deeper_than(value: Any, limit: int) -> bool:
    """Whether objects and arrays nest more than ``limit`` levels in ``value`` (iteratively: no recursion)."""
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False
