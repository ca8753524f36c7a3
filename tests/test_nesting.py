"""nesting.py: how deeply a JSON document nests, walked only when its brackets could nest past the bound."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gitops_flow.nesting import MAX_DEPTH, deeper_than, too_deep


def lists(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "depth"),
    [
        ("x", 0),
        ([], 1),
        ({"a": 1}, 1),
        ({"a": [1, {"b": []}]}, 4),
        ([[], [[[]]], []], 4),
        (lists(64), 64),
        ({"input": lists(63)}, 64),
    ],
)
def test_depth_counts_objects_and_arrays(value: Any, depth: int) -> None:
    assert not deeper_than(value, depth)
    assert deeper_than(value, depth - 1) is (depth > 0)


def test_the_bound_is_checked_on_the_document() -> None:
    fits, past = {"input": lists(MAX_DEPTH - 1)}, {"input": lists(MAX_DEPTH)}
    assert not too_deep(orjson.dumps(fits), fits)
    assert too_deep(orjson.dumps(past), past)


def test_a_wide_document_with_many_brackets_is_not_too_deep() -> None:
    wide = {"inputs": [{"question": "[{"} for _ in range(10_000)]}  # brackets in strings count only for the shortcut
    assert not too_deep(orjson.dumps(wide), wide)


def test_a_deep_walk_does_not_recurse() -> None:
    assert deeper_than(lists(100_000), 64)
