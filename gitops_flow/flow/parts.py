"""The parts of a flow that control nodes run: a Router's branches and a Map's body, each a sub-graph of the same
document that starts at the node the control node's params name and is detached from the flow's main graph; which
nodes each part holds, how deep control nodes nest, and what is wrong with how they name their parts (Parts.of).
graph.py checks each part as a flow of its own."""

from __future__ import annotations

import difflib
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gitops_flow.problems import Problem, json_path, listing

if TYPE_CHECKING:  # the document's JSON Schema reads this module's PARAMS_SCHEMA
    from gitops_flow.flow.document import EdgeSpec, FlowSpec

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


@dataclass(slots=True)
class Parts:
    """The parts a document's control nodes name: each root's members (the nodes its edges lead to), which part
    each node is in, what each part is called in a problem, and the control nodes, innermost first."""

    members: dict[str, list[str]]
    part_of: dict[str, str]
    names: dict[str, str]
    controls: tuple[str, ...]
    shared: frozenset[str] = frozenset()  # nodes in two parts: said once, as shared-part

    @classmethod
    def of(cls, spec: FlowSpec, known: set[str], outgoing: dict[str, list[EdgeSpec]], problems: list[Problem]) -> Parts:
        owners: dict[str, str] = {}  # root -> the control node whose part it starts
        names: dict[str, str] = {}
        controls: list[str] = []
        for index, node in enumerate(spec.nodes):
            if node.component not in CONTROLS:
                continue
            controls.append(node.id)
            what = "router" if node.component == ROUTER else "map"
            for where, root in roots(node.component, node.params):
                path: tuple[str | int, ...] = ("nodes", index, "params", *where)
                name = (
                    f"branch {where[-1]!r} of router {node.id!r}"
                    if where[0] == "branches"
                    else f"the {where[0]} of {what} {node.id!r}"
                )
                if not isinstance(root, str):
                    continue  # the component's signature says so
                if root not in known:
                    hint = difflib.get_close_matches(root, known, n=1)
                    message = f"{name} names {root!r}, which is not a node" + (
                        f"; did you mean {hint[0]!r}?" if hint else ""
                    )
                    problems.append(_problem("unknown-node", message, *path))
                elif root == node.id:
                    problems.append(_problem("cycle", f"{name} names {what} {node.id!r} itself", *path))
                elif owners.setdefault(root, node.id) != node.id:
                    message = f"{name} names {root!r}, which already starts a part of {owners[root]!r}"
                    problems.append(_problem("shared-part", message + "; a part belongs to one control node", *path))
                else:
                    names.setdefault(root, name)
        members: dict[str, list[str]] = {}
        part_of: dict[str, str] = {}
        order = {node.id: index for index, node in reversed(list(enumerate(spec.nodes)))}
        shared: set[str] = set()
        for root in names:
            reached = sorted(_reached(root, outgoing), key=order.__getitem__)
            for taken in (n for n in reached if n in part_of):
                message = f"node {taken!r} is in {names[root]} and in {names[part_of[taken]]}; parts do not share nodes"
                problems.append(_problem("shared-part", message, "nodes", order[taken]))
                shared.add(taken)
            members[root] = [n for n in reached if n not in part_of]
            part_of.update((n, root) for n in members[root])
        nesting = cls._nesting(owners, part_of, order, problems)
        ordered = tuple(sorted(controls, key=lambda c: -nesting.get(c, 0)))
        return cls(members, part_of, {r: names[r] for r in members}, ordered, frozenset(shared))

    @staticmethod
    def _nesting(
        owners: dict[str, str], part_of: dict[str, str], order: dict[str, int], problems: list[Problem]
    ) -> dict[str, int]:
        """How deep each control node sits in others' parts; a control node inside its own part is a cycle."""
        depth: dict[str, int] = {}
        looped: set[str] = set()
        too_deep = False
        for control in dict.fromkeys(owners.values()):
            chain = [control]
            while chain[-1] in part_of and len(chain) <= MAX_NESTING:
                outer = owners[part_of[chain[-1]]]
                if outer in chain:
                    cycle = chain[chain.index(outer) :]
                    if not looped & set(cycle):  # each cycle once, from whichever of its nodes comes first
                        message = f"control nodes run each other: {listing(cycle)}"
                        problems.append(_problem("cycle", message, "nodes", order[control]))
                    looped.update(cycle)
                    break
                chain.append(outer)
            else:
                if len(chain) <= MAX_NESTING:
                    depth[control] = len(chain) - 1
                elif not too_deep:
                    message = f"control nodes nest more than {MAX_NESTING} deep inside each other's parts"
                    problems.append(_problem("too-deep", message, "nodes", order[control]))
                    too_deep = True
        return depth

    def same(self, edge: EdgeSpec) -> bool:
        """Whether ``edge`` stays in one part (or in the main graph), and does not enter a part's first node."""
        inside = self.part_of.get(edge.target)
        return self.part_of.get(edge.source) == inside and edge.target not in self.members

    def crossings(self, spec: FlowSpec, positions: dict[int, int]) -> list[Problem]:
        problems = []
        for index, edge in enumerate(spec.edges):
            if id(edge) not in positions or self.same(edge) or {edge.source, edge.target} & self.shared:
                continue
            root = self.part_of.get(edge.target)
            if edge.target in self.members and self.part_of.get(edge.source) == edge.target:
                message = (
                    f"{self.names[edge.target]} has a cycle: {edge.source} -> {edge.target} leads back to its start"
                )
                problems.append(_problem("cycle", message, "edges", index))
                continue
            if edge.target in self.members:
                message = f"node {edge.target!r} starts {self.names[edge.target]}, so it takes that input only"
            elif root is not None:
                message = f"edge {edge.source} -> {edge.target} enters {self.names[root]} from outside it"
            else:
                message = f"edge {edge.source} -> {edge.target} leaves {self.names[self.part_of[edge.source]]}"
            problems.append(
                _problem("crosses-part", message + "; a part reads only what its control node gives it", "edges", index)
            )
        return problems


def _problem(code: str, message: str, *path: str | int) -> Problem:
    return Problem(code=code, message=message, path=json_path(list(path)))


def _reached(start: str, outgoing: defaultdict[str, list[EdgeSpec]] | dict[str, list[EdgeSpec]]) -> set[str]:
    """``start`` and every node its edges lead to."""
    seen = {start}
    stack = [start]
    while stack:
        for edge in outgoing.get(stack.pop(), ()):
            if edge.target not in seen:
                seen.add(edge.target)
                stack.append(edge.target)
    return seen
