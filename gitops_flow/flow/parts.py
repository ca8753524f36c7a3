"""The parts of a flow that control nodes run: a Router's branches and a Map's body, each a sub-graph of the same
document that starts at the node the control node's params name and is detached from the flow's main graph."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ROUTER = "Router"
MAP = "Map"
CONTROLS = frozenset({ROUTER, MAP})
MAX_NESTING = 16  # control nodes inside each other's parts


def roots(component: str, params: Mapping[str, Any]) -> list[tuple[tuple[str, ...], Any]]:
    """The nodes a control node's params name as the start of a part: (location in its params, the value) each, in
    the params' order; values that are not text are returned as they are, for the checks to refuse."""
    if component == ROUTER:
        found: list[tuple[tuple[str, ...], Any]] = []
        branches = params.get("branches")
        if isinstance(branches, Mapping):
            found += [(("branches", str(label)), target) for label, target in branches.items()]
        if params.get("default") is not None:
            found.append((("default",), params["default"]))
        return found
    if component == MAP and params.get("body") is not None:
        return [(("body",), params["body"])]
    return []
