"""The converter's workbench: ports (what a LangFlow output becomes) and the Builder that collects native nodes.

Every LangFlow wire carries a Message (text). Each converted node therefore gives, for each of its outputs, a
*port*: the native node whose output is that text, a constant (a prompt whose variables all have values is folded
into the templates it feeds), a model (a model node's ``model_output`` lends its ChatModel params to the node it
feeds), a tool (a component wired into an agent's ``tools``), or the output of a node that cannot be converted. The
Builder remembers, for every native node, param and edge, where in the export it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gitops_flow.langflow.export import Export, LfNode, Wire
from gitops_flow.langflow.models import ModelChoice
from gitops_flow.problems import Problem, json_path

INPUT_KEY, HISTORY_KEY = "input_value", "history"  # a conversational flow's input object and its history
DEFAULT_WINDOW = 100  # LangFlow's default number of chat history messages


@dataclass(frozen=True, slots=True)
class NodePort:
    """Text produced by a native node."""

    id: str


@dataclass(frozen=True, slots=True)
class Constant:
    """Text known at conversion time (a prompt whose variables all have values); ``origin`` is its field."""

    text: str
    origin: str = "$"


@dataclass(frozen=True, slots=True)
class ModelPort:
    """A model lent by a model node's ``model_output``."""

    choice: ModelChoice
    node: LfNode


@dataclass(frozen=True, slots=True)
class ToolPort:
    """A built-in tool, for an agent's ``tools``: its name, or an object with its ``name`` and options; ``key`` the
    secret reference a tool that needs one takes (web_search's, the agent's ``search_api_key``)."""

    tool: str | dict[str, Any]
    key: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """The output of a node that cannot be converted, whose problem is reported once: the nodes reading it go on as if
    it were there, so one pass reports every problem of an export and never a cascade of the same one."""

    node: LfNode


@dataclass(frozen=True, slots=True)
class EmbeddingsPort:
    """An embedding model, lent to the vector store it is wired into: ``spec`` as ``init_embeddings`` takes it,
    ``api_key`` its secret reference (None: the provider needs none), ``fields`` what came from which field."""

    spec: str
    api_key: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Corpus:
    """Documents LangFlow loads into a store (a File, split, ingested): in a converted flow they are the files
    committed under the flow's knowledge folder, which its Retrievers read; nothing runs for them."""


@dataclass(frozen=True, slots=True)
class Branching:
    """A converted If-Else (control.py): its node, and the parts its ``true_result`` and ``false_result`` start."""

    node: LfNode
    starts: tuple[str, str]


Port = NodePort | Constant | ModelPort | ToolPort | Refused | EmbeddingsPort | Corpus


def escape(text: str) -> str:
    """Literal text inside an f-string template."""
    return text.replace("{", "{{").replace("}", "}}")


@dataclass(slots=True)
class Builder:
    """Collects the native document while the handlers run; every part remembers its origin in the export."""

    export: Export
    conversational: bool = False
    nodes: list[dict[str, Any]] = field(default_factory=list)
    edges: list[dict[str, Any]] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    ports: dict[tuple[str, str], Port] = field(default_factory=dict)  # (LangFlow id, output name) -> port
    entry: str | None = None
    exits: list[str] = field(default_factory=list)
    window: int = DEFAULT_WINDOW
    types: frozenset[str] = frozenset()  # the component types the export uses
    files_expected: str = ""  # what in the export says its input carries files (an image), quoted
    refused: frozenset[str] = frozenset()  # the ids of the nodes that cannot be converted
    name: str = "flow"  # the converted flow's name: its documents are committed under knowledge/<name>/
    queries: list[str] = field(default_factory=list)  # Retrievers the flow's input queries (wired at the end)
    branchings: list[Branching] = field(default_factory=list)  # routers whose branches are closed at the end
    _index: dict[str, int] = field(default_factory=dict)
    _history: str | None = None

    def __post_init__(self) -> None:
        self.types = frozenset(n.type for n in self.export.nodes)

    def node_path(self, node_id: str) -> str:
        return json_path(["nodes", self._index[node_id]])

    def add(
        self,
        origin: LfNode,
        node_id: str,
        component: str,
        params: dict[str, Any] | None = None,
        *,
        fields: dict[str, str] | None = None,
        description: str = "",
    ) -> str:
        index = len(self.nodes)
        self._index[node_id] = index
        self.nodes.append(
            {
                "id": node_id,
                "component": component,
                **({"params": params} if params else {}),
                "description": description or origin.display_name or origin.type,
            }
        )
        self.origins[json_path(["nodes", index])] = origin.path
        self.origins[json_path(["nodes", index, "component"])] = json_path(["data", "nodes", origin.index, "data"])
        for param, source in (fields or {}).items():
            self.origins[json_path(["nodes", index, "params", param])] = origin.field_path(source)
        return node_id

    def origin_of_items(self, node_id: str, param: str, origins: list[str]) -> None:
        """Where each item of a list param came from (a chat prompt's messages: each from its own field)."""
        for index, origin in enumerate(origins):
            self.origins[json_path(["nodes", self._index[node_id], "params", param, index])] = origin

    def connect(self, port: Port, target: str, key: str | None, wire: Wire | None) -> None:
        if not isinstance(port, NodePort):
            raise AssertionError(f"connect() takes node ports; {port!r} is handled by the caller")
        origin = wire.path if wire else self.origins.get(self.node_path(target), "$")
        self.origins[json_path(["edges", len(self.edges)])] = origin
        self.edges.append({"source": port.id, "target": target, **({"key": key} if key else {})})

    def inputs(self, node: LfNode, field_name: str) -> list[tuple[Wire, Port]]:
        """The wires into ``node.field_name`` with the ports they read; a wire from an output the source does not
        offer is a problem on that wire."""
        found = []
        for wire in self.export.wires_into(node.id, field_name):
            port = self.ports.get((wire.source, wire.output)) or self.ports.get((wire.source, "*"))
            if port is None:
                self.fail(wire.path, f"output {wire.output!r} of {wire.source!r} is not supported here", wire=True)
                continue
            found.append((wire, port))
        return found

    def wired(self, node: LfNode) -> set[str]:
        return {w.field for w in self.export.wires_into(node.id)}

    def used_outputs(self, node: LfNode) -> set[str]:
        return {w.output for w in self.export.wires_from(node.id)}

    def fail(
        self, path: str, message: str, *, node: LfNode | None = None, wire: bool = False, code: str | None = None
    ) -> None:
        code = code or ("langflow-bad-edge" if wire else "langflow-unsupported")
        text = f"{node.label()}: {message}" if node else message
        self.problems.append(Problem(code=code, message=text, path=path))

    def warn(self, path: str, message: str, *, code: str) -> None:
        self.problems.append(Problem(code=code, message=message, path=path, severity="warning"))

    def slot(self, node: LfNode, field_name: str, variable: str, pending: list[tuple[Port, str, Wire]]) -> str:
        """A template fragment for a text field: ``{variable}`` when a node feeds it (the edge is queued in
        ``pending``), the text itself when a constant or the field's own value does."""
        return self.slot_from(node, field_name, variable, pending)[0]

    def slot_from(
        self, node: LfNode, field_name: str, variable: str, pending: list[tuple[Port, str, Wire]]
    ) -> tuple[str, str]:
        """``slot`` and where its text came from in the export (for problems found in it later)."""
        wires = self.inputs(node, field_name)
        if len(wires) > 1:
            self.fail(wires[1][0].path, f"field {field_name!r} takes one input, not {len(wires)}", node=node)
            return "", node.path
        if not wires:
            return escape(node.text(field_name)), node.field_path(field_name)
        wire, port = wires[0]
        if isinstance(port, Constant):
            return escape(port.text), port.origin
        if isinstance(port, NodePort):
            pending.append((port, variable, wire))
            return "{" + variable + "}", wire.path
        if isinstance(port, Refused):
            return "", wire.path
        self.fail(wire.path, f"field {field_name!r} takes text, not a {type(port).__name__}", node=node)
        return "", wire.path

    def history(self) -> NodePort:
        """The session's past messages (a conversational flow's entry, read once)."""
        assert self.entry is not None, "history() is used in conversational flows only, which have an entry"
        if self._history is None:
            origin = next(n for n in self.export.nodes if self.entry == n.id)
            self._history = self.add(
                origin, f"{self.entry}.history", "Pick", {"key": HISTORY_KEY}, description="chat history"
            )
            self.connect(NodePort(self.entry), self._history, None, None)
        return NodePort(self._history)

    def sole_input(self, node: LfNode, wires: list[tuple[Wire, Port]], what: str) -> tuple[NodePort, Wire] | None:
        """The one node feeding ``node`` (and its wire); a problem, and None, when ``wires`` is not exactly one."""
        if len(wires) != 1:
            self.fail(node.path, f"{what} one input; {len(wires)} are wired", node=node)
            return None
        wire, port = wires[0]
        if isinstance(port, Refused):
            self.ports[(node.id, "*")] = port  # what reads this node goes on as if it were there
            return None
        source = self.as_node(port, node, wire)
        return (source, wire) if source is not None else None

    def as_node(self, port: Port, origin: LfNode, wire: Wire) -> NodePort | None:
        """A port as a node's output: constants become a prompt (and its text)."""
        if isinstance(port, NodePort):
            return port
        if isinstance(port, Constant):
            prompt = self.add(origin, f"{origin.id}.constant", "PromptTemplate", {"template": escape(port.text)})
            text = self.add(origin, f"{origin.id}.constant.text", "Text")
            self.connect(NodePort(prompt), text, None, wire)
            return NodePort(text)
        self.fail(wire.path, f"a {type(port).__name__} cannot feed this field", node=origin)
        return None


def conversational(export: Export, refused: frozenset[str] = frozenset()) -> bool:
    """A flow keeps chat history when it has a chat input and a node that reads the session's messages (neither of
    them among the ``refused`` nodes, which are not converted)."""
    kept = [n for n in export.nodes if n.id not in refused]
    has_input = any(n.type == "ChatInput" for n in kept)
    readers = [n for n in kept if n.type in ("Memory", "MessageHistory", "MemoryComponent") or agent_memory(n) > 0]
    return has_input and bool(readers)


def agent_memory(node: LfNode) -> int:
    if node.type != "Agent":
        return 0
    number = node.number("n_messages")
    return int(number) if number is not None else DEFAULT_WINDOW
