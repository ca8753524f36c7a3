"""The parts of a flow that control nodes run: a Router's branches and a Map's body, each a sub-graph of the same
document that starts at the node the control node's params name and is detached from the flow's main graph."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ROUTER = "Router"
MAP = "Map"
CONTROLS = frozenset({ROUTER, MAP})
MAX_NESTING = 16  # control nodes inside each other's parts
MATCHES = (
    "equals",
    "contains",
    "starts_with",
    "ends_with",
    "regex",
)  # how a Router compares its input with branch names

_NODE_ID = {"type": "string", "minLength": 1, "maxLength": 100}
_KEY = {"type": "string", "minLength": 1}
# what the published JSON Schema says of a control node's params (editors check them as validation does)
PARAMS_SCHEMA: dict[str, dict[str, Any]] = {
    ROUTER: {
        "type": "object",
        "required": ["branches", "default"],
        "additionalProperties": False,
        "properties": {
            "branches": {
                "type": "object",
                "minProperties": 1,
                "maxProperties": 100,
                "additionalProperties": _NODE_ID,
                "description": "Branch name -> the node that starts the branch (a part of this flow).",
            },
            "default": {**_NODE_ID, "description": "The node that starts the branch run when no name matches."},
            "key": {**_KEY, "description": "Match this key of an object input; without it, the input itself."},
            "match": {"enum": list(MATCHES)},
            "case_sensitive": {"type": "boolean"},
        },
    },
    MAP: {
        "type": "object",
        "required": ["body"],
        "additionalProperties": False,
        "properties": {
            "body": {**_NODE_ID, "description": "The node that starts the part run once per item."},
            "key": {**_KEY, "description": "The list is this key of an object input; without it, the input."},
            "item_key": {**_KEY, "description": "Each item goes to the body as the input with the item here."},
            "max_items": {"type": "integer", "minimum": 1, "description": "More items are refused (or truncated)."},
            "concurrency": {"type": "integer", "minimum": 1},
            "truncate": {"type": "boolean", "description": "Run the first max_items items of a longer list."},
        },
    },
}


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
