"""Reading a LangFlow export as data: its nodes, their fields' values, and the wires between them; no code is read.

A LangFlow export is ``{"data": {"nodes": [...], "edges": [...]}, ...}``. Each node's ``data.type`` names its
component and ``data.node.template`` holds its fields, each a dict with a ``value``. Each edge carries
``data.sourceHandle`` (``name``: the output it reads) and ``data.targetHandle`` (``fieldName``: the field it feeds).
Every node also stores its Python source in ``template.code.value``; this module never reads that field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from gitops_flow.problems import Problem, json_path

CODE_FIELD = "code"  # the field holding the node's Python source: skipped everywhere, never read
NOTE_TYPES = frozenset({"note", "noteNode"})


def is_export(data: Any) -> bool:
    """True for a LangFlow export: a top-level ``data`` object with ``nodes`` and ``edges``."""
    return isinstance(data, dict) and isinstance(data.get("data"), dict) and {"nodes", "edges"} <= set(data["data"])


@dataclass(frozen=True, slots=True)
class LfNode:
    """One component of the export: its id, ``data.type``, display name, fields, and where it sits in the file."""

    index: int
    id: str
    type: str
    display_name: str
    template: dict[str, Any]
    edited: bool = False

    @property
    def path(self) -> str:
        return json_path(["data", "nodes", self.index])

    def field_path(self, name: str) -> str:
        return json_path(["data", "nodes", self.index, "data", "node", "template", name, "value"])

    def has(self, name: str) -> bool:
        return name != CODE_FIELD and isinstance(self.template.get(name), dict)

    def spec(self, name: str) -> dict[str, Any]:
        """The field's own description (``value``, ``load_from_db``, ``password``, ...), empty when absent."""
        if name == CODE_FIELD:
            raise KeyError("the code field is never read")
        found = self.template.get(name)
        return found if isinstance(found, dict) else {}

    def value(self, name: str, default: Any = None) -> Any:
        value = self.spec(name).get("value", default)
        return default if value is None else value

    def text(self, name: str) -> str:
        value = self.value(name, "")
        return value if isinstance(value, str) else json.dumps(value) if value not in ("", None) else ""

    def number(self, name: str) -> float | None:
        value = self.value(name)
        if isinstance(value, bool) or not isinstance(value, int | float | str) or value == "":
            return None
        try:
            return float(value)
        except ValueError:
            return None

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.value(name, default)
        return value if isinstance(value, bool) else default

    def label(self) -> str:
        return f"{self.id} ({self.type}, {self.display_name!r})" if self.display_name else f"{self.id} ({self.type})"


@dataclass(frozen=True, slots=True)
class Wire:
    """An edge: ``source``'s output ``output`` feeds ``target``'s field ``field``."""

    index: int
    source: str
    output: str
    target: str
    field: str

    @property
    def path(self) -> str:
        return json_path(["data", "edges", self.index])


@dataclass(slots=True)
class Export:
    """The export read as data, with what was wrong with its shape.

    Wires are indexed by the node they leave and the node they enter, so the converter finds a node's wires in time
    proportional to their number, never by reading every wire of the export again.
    """

    nodes: list[LfNode] = field(default_factory=list)
    wires: list[Wire] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # note nodes (and untyped nodes without edges)
    loops: list[Wire] = field(default_factory=list)  # wires back into a Loop's item output (its body's end)
    problems: list[Problem] = field(default_factory=list)
    _into: dict[str, list[Wire]] = field(default_factory=dict)
    _into_field: dict[tuple[str, str], list[Wire]] = field(default_factory=dict)
    _out_of: dict[str, list[Wire]] = field(default_factory=dict)

    def add_wire(self, wire: Wire) -> None:
        self.wires.append(wire)
        self._into.setdefault(wire.target, []).append(wire)
        self._into_field.setdefault((wire.target, wire.field), []).append(wire)
        self._out_of.setdefault(wire.source, []).append(wire)

    def wires_into(self, node_id: str, field_name: str | None = None) -> list[Wire]:
        """The wires whose target is ``node_id`` (into its field ``field_name``, when given), in file order."""
        if field_name is not None:
            return self._into_field.get((node_id, field_name), [])
        return self._into.get(node_id, [])

    def wires_from(self, node_id: str) -> list[Wire]:
        """The wires whose source is ``node_id``, in file order."""
        return self._out_of.get(node_id, [])


def read_export(data: dict[str, Any]) -> Export:
    """The nodes and wires of an export; shape problems (``langflow-malformed``, ``langflow-bad-edge``) collected."""
    found = Export()
    raw_nodes, raw_edges = data["data"]["nodes"], data["data"]["edges"]
    if not isinstance(raw_nodes, list) or not isinstance(raw_edges, list):
        found.problems.append(_malformed("data.nodes and data.edges are lists", ["data"]))
        return found
    wired = _wired_ids(raw_edges)
    ids: set[str] = set()
    for index, raw in enumerate(raw_nodes):
        node = _read_node(index, raw, wired, found)
        if node is None:
            continue
        if node.id in ids:
            found.problems.append(_malformed(f"node id {node.id!r} is used twice", ["data", "nodes", index, "id"]))
            continue
        ids.add(node.id)
        found.nodes.append(node)
    by_id = {n.id: n for n in found.nodes}
    for index, raw in enumerate(raw_edges):
        wire = _read_edge(index, raw, by_id, found)
        if wire is not None:
            found.add_wire(wire)
    return found


def _malformed(message: str, where: list[str | int]) -> Problem:
    return Problem(code="langflow-malformed", message=message, path=json_path(where))


def _wired_ids(raw_edges: list[Any]) -> set[str]:
    ids: set[str] = set()
    for raw in raw_edges:
        if isinstance(raw, dict):
            ids.update(str(raw[end]) for end in ("source", "target") if isinstance(raw.get(end), str))
    return ids


def _read_node(index: int, raw: Any, wired: set[str], found: Export) -> LfNode | None:
    where: list[str | int] = ["data", "nodes", index]
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not raw["id"]:
        found.problems.append(_malformed("a node is an object with a string id", where))
        return None
    data: dict[str, Any] = raw["data"] if isinstance(raw.get("data"), dict) else {}
    kind = data.get("type") if isinstance(data.get("type"), str) else None
    is_note = raw.get("type") in NOTE_TYPES if isinstance(raw.get("type"), str) else False
    is_note = is_note or kind in NOTE_TYPES
    if (is_note or not kind) and raw["id"] not in wired:
        found.skipped.append(index)  # notes and group/note artifacts carry no behaviour
        return None
    node: dict[str, Any] = data["node"] if isinstance(data.get("node"), dict) else {}
    if not isinstance(kind, str) or not kind:
        kind = "note" if is_note else "(no type)"
    template = node.get("template")
    if not isinstance(template, dict):
        if kind not in NOTE_TYPES and kind != "(no type)":
            found.problems.append(_malformed(f"node {raw['id']!r} has no template", [*where, "data", "node"]))
            return None
        template = {}
    display = node.get("display_name")
    return LfNode(
        index=index,
        id=raw["id"],
        type=kind,
        display_name=display if isinstance(display, str) else "",
        template=template,
        edited=node.get("edited") is True,
    )


def _handle(raw: dict[str, Any], key: str) -> dict[str, Any] | None:
    """An edge's handle: ``data.<key>`` (LangFlow 1.0 on); else the top-level string LangFlow encodes with ``œ``
    for quotes (older exports), read as JSON."""
    data = raw.get("data")
    handle = data.get(key) if isinstance(data, dict) else None
    if isinstance(handle, dict):
        return handle
    text = raw.get(key)
    if isinstance(text, str) and text.startswith("{"):
        try:
            decoded = json.loads(text.replace("œ", '"'))
        except ValueError:
            return None
        return decoded if isinstance(decoded, dict) else None
    return None


def _read_edge(index: int, raw: Any, by_id: dict[str, LfNode], found: Export) -> Wire | None:
    where: list[str | int] = ["data", "edges", index]
    if not isinstance(raw, dict):
        found.problems.append(_malformed("an edge is an object", where))
        return None
    ends = {end: raw.get(end) for end in ("source", "target")}
    target_id = str(ends["target"])
    for end, node_id in ends.items():
        if not isinstance(node_id, str) or node_id not in by_id:
            found.problems.append(
                Problem(
                    code="langflow-bad-edge", message=f"edge {end} {node_id!r} is not a node", path=json_path(where)
                )
            )
            return None
    source_handle, target_handle = _handle(raw, "sourceHandle"), _handle(raw, "targetHandle")
    output = source_handle.get("name") if source_handle else None
    field_name = target_handle.get("fieldName") if target_handle else None
    looped = target_handle.get("name") if target_handle and not field_name else None
    if isinstance(looped, str) and looped:  # LangFlow wires a loop's body back into the loop's output
        found.loops.append(
            Wire(index, str(ends["source"]), output if isinstance(output, str) else "", target_id, looped)
        )
        return None
    if not isinstance(field_name, str) or not field_name:
        message = "the edge has no data.targetHandle.fieldName naming the field it feeds"
        found.problems.append(Problem(code="langflow-bad-edge", message=message, path=json_path(where)))
        return None
    target = by_id[str(ends["target"])]
    if not target.has(field_name):
        message = f"the edge feeds field {field_name!r}, which node {target.id!r} does not have"
        found.problems.append(
            Problem(code="langflow-bad-edge", message=message, path=json_path([*where, "data", "targetHandle"]))
        )
        return None
    return Wire(index, str(ends["source"]), output if isinstance(output, str) else "", target.id, field_name)
