"""How deeply a JSON document nests: a bound on what the server takes, so that it can always answer.

A value is serialised back by orjson, which stops at ``ORJSON_DEPTH`` levels, and walked by pydantic and LangChain,
which recurse; a body nested beyond ``MAX_DEPTH`` is refused before any of that runs (422 ``too-deep``).
"""

from __future__ import annotations

from typing import Any

import orjson

MAX_DEPTH = 64  # levels of objects and arrays in a request's body, the body itself being the first
ORJSON_DEPTH = 254  # the most levels orjson serialises (tests/test_nesting.py holds it to that)


def too_deep(raw: bytes | bytearray, value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value``, parsed from ``raw``, nests objects and arrays more than ``limit`` levels deep.

    A document with no more brackets than ``limit`` cannot nest deeper, which two counts of its bytes tell. Any
    other is measured by orjson: inside ``ORJSON_DEPTH - limit`` more levels it serialises only a value of at most
    ``limit`` levels. That runs at C speed, below the cost of parsing; a walk in Python costs 30 times as much on a
    body of many small objects, which is what a client who wants to spend the server's time sends."""
    assert 0 < limit < ORJSON_DEPTH, "the limit leaves orjson room for the levels around it"
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    for _ in range(ORJSON_DEPTH - limit):
        value = [value]
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:  # nothing else fails in a value parsed from JSON
        return True
    return False
