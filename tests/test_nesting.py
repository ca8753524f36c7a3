"""nesting.py: how deeply a JSON document nests, measured only when its brackets could nest past the bound."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gitops_flow.server.nesting import MAX_DEPTH, ORJSON_DEPTH, too_deep


def lists(depth: int, leaf: Any = "x") -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def objects(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"k": value, "other": [1, "[{"]}
    return value


def deep(value: Any, limit: int) -> bool:
    return too_deep(orjson.dumps(value), value, limit)


@pytest.mark.parametrize(
    ("value", "depth"),
    [
        ({"a": 1}, 1),
        (["[{", "]}"], 1),
        ({"a": [1, {"b": []}]}, 4),
        ([[], [[[]]], []], 4),
        (lists(64), 64),
        (lists(63, leaf={}), 64),
        ({"input": lists(63)}, 64),
        (objects(40), 41),  # the innermost object's list is a level too
        (objects(70), 71),
    ],
)
def test_depth_counts_objects_and_arrays(value: Any, depth: int) -> None:
    assert not deep(value, depth)
    assert depth == 1 or deep(value, depth - 1)


def test_the_bound_is_checked_on_the_document() -> None:
    fits, past = {"input": lists(MAX_DEPTH - 1)}, {"input": lists(MAX_DEPTH)}
    assert not too_deep(orjson.dumps(fits), fits)
    assert too_deep(orjson.dumps(past), past)


def test_brackets_in_strings_are_not_levels() -> None:
    wide = {"inputs": [{"question": "[[[[{{{{"} for _ in range(10_000)]}
    assert not too_deep(orjson.dumps(wide), wide)
    text = {"input": "[" * 1000}
    assert not too_deep(orjson.dumps(text), text)


def test_orjson_serialises_exactly_orjson_depth_levels() -> None:
    """too_deep measures with orjson's own limit: a new orjson that moves it fails here, not silently."""
    orjson.dumps(lists(ORJSON_DEPTH))
    with pytest.raises(orjson.JSONEncodeError):
        orjson.dumps(lists(ORJSON_DEPTH + 1))
