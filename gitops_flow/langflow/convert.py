"""LangFlow export -> flow document: maps each node's ``data.type`` to registered components; never runs node code.

The conversion is pure data: the export is read as JSON, every node is looked up by its component type in one
explicit table (``HANDLERS``), and each handler writes the native nodes and edges that do what the LangFlow
component does. The Python source LangFlow keeps in every node (``template.code.value``) is never read, let alone
run, and nothing branches on it. A node whose type is not in the table, or whose code was edited in LangFlow, is
unsupported (refusals.py says why): the conversion then fails, and nothing half-converted comes out. The other nodes
are still converted, as if the refused ones were there, so one pass reports every problem of the export.

Every native node, param and edge remembers where in the export it came from (``Conversion.origin``), so a
problem found in the converted document points into the original file.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gitops_flow.flow.document import ALIAS_PATTERN, NAME_PATTERN
from gitops_flow.langflow import chat, control, knowledge, nodes, outbound
from gitops_flow.langflow.export import Export, LfNode, Wire, is_export, read_export
from gitops_flow.langflow.models import TYPE_PROVIDERS
from gitops_flow.langflow.refusals import refusal
from gitops_flow.langflow.workbench import Builder, conversational
from gitops_flow.problems import Problem, json_path, listing

__all__ = ["Conversion", "convert", "is_export", "slug"]

_SLUG = re.compile(r"[^a-z0-9]+")

HANDLERS: dict[str, Callable[[Builder, LfNode], None]] = {
    "ChatInput": nodes.chat_input,
    "TextInput": nodes.chat_input,
    "File": nodes.file_input,
    "ChatOutput": nodes.chat_output,
    "TextOutput": nodes.chat_output,
    "Prompt": nodes.prompt,
    "PromptTemplate": nodes.prompt,
    "Prompt Template": nodes.prompt,  # LangFlow 1.12 on names the prompt component by its display name
    **{kind: chat.model for kind in TYPE_PROVIDERS},  # a provider's model node: ChatModel when init_chat_model knows it
    "LanguageModelComponent": chat.model,
    "Agent": chat.agent,
    "StructuredOutput": chat.structured_output,
    "StructuredOutputComponent": chat.structured_output,
    "Memory": nodes.memory,
    "MessageHistory": nodes.memory,
    "MemoryComponent": nodes.memory,  # LangFlow 0.x's name for Chat Memory
    "parser": nodes.parser,
    "ParserComponent": nodes.parser,
    "ParseData": nodes.parser,
    "CalculatorComponent": nodes.tool("calculator"),
    "CalculatorTool": nodes.tool("calculator"),
    "CurrentDate": nodes.tool("current_date"),
    **{kind: knowledge.vector_store for kind in knowledge.VECTOR_STORES},
    **{kind: knowledge.knowledge_base for kind in knowledge.KNOWLEDGE_BASES},
    **{kind: knowledge.ingest for kind in knowledge.INGESTS},
    **{kind: knowledge.splitter for kind in knowledge.SPLITTERS},
    **{kind: knowledge.embeddings for kind in knowledge.EMBEDDINGS},
    **{kind: outbound.pages for kind in outbound.PAGES},
    **{kind: outbound.requests for kind in outbound.REQUESTS},
    **{kind: outbound.search for kind in outbound.SEARCHES},
    **{kind: control.router for kind in control.ROUTERS},
}


@dataclass(slots=True)
class Conversion:
    """The result of converting one export: the flow document (None when it failed) and every problem found,
    with paths into the export; ``origins`` maps paths of the document to paths of the export."""

    document: dict[str, Any] | None
    problems: list[Problem] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.document is not None and not any(p.severity == "error" for p in self.problems)

    def origin(self, path: str) -> str:
        """The export path a document path came from: that of its nearest ancestor that has one."""
        while path:
            if path in self.origins:
                return self.origins[path]
            cut = max(path.rfind("."), path.rfind("["))
            if cut <= 0:
                break
            path = path[:cut]
        return "$"


def slug(text: str) -> str:
    """A flow name made from a file stem or a LangFlow name: ``Basic Prompting (1)`` -> ``basic-prompting-1``."""
    return _SLUG.sub("-", text.lower()).strip("-")[:64].strip("-") or "flow"


def convert(data: dict[str, Any], *, name: str) -> Conversion:
    """Convert an export (``is_export(data)`` holds) into a flow document named ``name``."""
    export = read_export(data)
    problems = list(export.problems)
    export, unused = _without_unused(export)
    problems += unused
    if not re.match(NAME_PATTERN, name) or len(name) > 64:
        problems.append(
            Problem(
                code="bad-name",
                message=f"the file name {name!r} is the flow's name, and names match {NAME_PATTERN}",
                path="$",
            )
        )
    unsupported = _unsupported(export)
    problems += unsupported.values()
    if any(p.code == "langflow-malformed" for p in problems):
        return Conversion(None, problems)  # the export's shape is broken: what follows would be noise
    order = _order(export)
    if order is None:
        return Conversion(None, [*problems, _cycle(export)])
    refused = frozenset(unsupported)
    builder = Builder(
        export,
        conversational=conversational(export, refused),
        files_expected=_files_expected(data),
        refused=refused,
        name=name,
    )
    for node in order:
        handler = nodes.refused if node.id in unsupported else HANDLERS[node.type]
        handler(builder, node)
    knowledge.connect_queries(builder)
    control.close_branches(builder)
    nodes.gather_outputs(builder)
    problems += builder.problems
    if any(p.severity == "error" for p in problems):
        return Conversion(None, problems)
    description = data.get("description")
    aliases = _aliases(data, name)
    tweakable = data.get("tweakable")
    document: dict[str, Any] = {
        "version": 1,
        "name": name,
        "description": description if isinstance(description, str) else "",
        **({"input": builder.entry} if builder.entry else {}),
        **({"output": builder.exits[0]} if len(builder.exits) == 1 else {}),
        "nodes": builder.nodes,
        "edges": builder.edges,
        **({"aliases": aliases} if aliases else {}),
        **({"tweakable": tweakable} if tweakable is not None else {}),
    }
    origins = {"$": "$", "$.name": "$", "$.description": "$.description", **builder.origins}
    origins.update({"$.aliases": "$.id", "$.tweakable": "$.tweakable"})
    if builder.entry:
        origins["$.input"] = origins.get(builder.node_path(builder.entry), "$")
    if len(builder.exits) == 1:
        origins["$.output"] = origins.get(builder.node_path(builder.exits[0]), "$")
    return Conversion(document, problems, origins)


# words saying the input carries files; an "image prompt", an "image agent" or "image generation" is text the flow
# writes (or a part of it), not a file it is given
_FILES = re.compile(
    r"\b(image|images|photo|photos|picture|pictures|upload an? \w+|audio|video)\b"
    r"(?!\s+(?:prompts?|agents?|generat\w*)\b)",
    re.IGNORECASE,
)


def _files_expected(data: dict[str, Any]) -> str:
    """The words of the export's description that say its input carries files ("Upload an image; ..."), if any."""
    description = data.get("description")
    found = _FILES.search(description) if isinstance(description, str) else None
    return f"its description says {found.group(0)!r}" if found else ""


def _aliases(data: dict[str, Any], name: str) -> list[str]:
    """The names LangFlow's clients call the flow by besides ours: the export's ``id`` and ``endpoint_name``."""
    found = [data.get(key) for key in ("id", "endpoint_name")]
    return [
        a
        for a in dict.fromkeys(found)
        if isinstance(a, str) and a != name and len(a) <= 200 and re.match(ALIAS_PATTERN, a)
    ]


def _unsupported(export: Export) -> dict[str, Problem]:
    """Node id -> its ``langflow-unsupported`` problem, for each node that cannot be converted, naming its id, type
    and name, and why (refusals.py)."""
    return {
        node.id: Problem(
            code="langflow-unsupported",
            message=f"{node.label()} cannot be converted: {refusal(node, export)}",
            path=node.path,
        )
        for node in export.nodes
        if node.type not in HANDLERS or node.edited
    }


OUTPUTS = frozenset({"ChatOutput", "TextOutput"})
INPUTS = frozenset({"ChatInput", "TextInput", "File"})


def _without_unused(export: Export) -> tuple[Export, list[Problem]]:
    """The export without the nodes no output reads, directly or through others (a branch LangFlow ships unwired,
    an ingest that loaded a store), and a warning naming them; the export as it is when it has no output, or when
    one of those nodes could not be converted (its refusal says why: it may act, as a file written does)."""
    outputs = [n.id for n in export.nodes if n.type in OUTPUTS]
    read: set[str] = set()
    pending = list(outputs)
    while pending:
        current = pending.pop()
        if current not in read:
            read.add(current)
            pending += [w.source for w in export.wires_into(current)]
            pending += [w.source for w in export.loops if w.target == current]  # a loop's body, read by the loop
    unused = [n for n in export.nodes if n.id not in read and n.type not in INPUTS]  # an input is judged as one
    stranded = any(  # the request's input, wired, with nothing it feeds shown
        n.type in ("ChatInput", "TextInput") and n.id not in read and export.wires_from(n.id) for n in export.nodes
    )
    if not outputs or not unused or stranded or any(n.type not in HANDLERS or n.edited for n in unused):
        return export, []  # (an input whose readers no output reads: the flow is judged whole, as LangFlow made it)
    gone = {n.id for n in unused}
    kept = Export(
        nodes=[n for n in export.nodes if n.id not in gone],
        skipped=export.skipped,
        problems=export.problems,
        loops=[w for w in export.loops if w.source not in gone and w.target not in gone],
    )
    for wire in export.wires:
        if wire.source not in gone and wire.target not in gone:
            kept.add_wire(wire)
    listed = ", ".join(n.label() for n in unused[:5]) + (f" and {len(unused) - 5} more" if len(unused) > 5 else "")
    warning = Problem(
        code="langflow-unused",
        message=f"no output reads {listed}: left out of the converted flow (LangFlow ran them, and showed nothing "
        "of what they made)",
        path=unused[0].path,
        severity="warning",
    )
    return kept, [warning]


def _order(export: Export) -> list[LfNode] | None:
    """The nodes in dependency order (Kahn, stable in file order); None when the wires make a cycle."""
    pending = {n.id: len(export.wires_into(n.id)) for n in export.nodes}
    by_id = {n.id: n for n in export.nodes}
    # inputs first: a conversational flow's entry must exist before the memory nodes that read it
    first = sorted(export.nodes, key=lambda n: n.type not in ("ChatInput", "TextInput", "File"))
    ready = deque(n.id for n in first if pending[n.id] == 0)
    order: list[LfNode] = []
    while ready:
        current = ready.popleft()
        order.append(by_id[current])
        for wire in export.wires_from(current):
            pending[wire.target] -= 1
            if pending[wire.target] == 0:
                ready.append(wire.target)
    return order if len(order) == len(export.nodes) else None


def _cycle(export: Export) -> Problem:
    looped = _on_cycles(export)
    first: Wire | None = next((w for w in export.wires if w.target in looped and w.source in looped), None)
    return Problem(
        code="cycle",
        message=f"the flow has a cycle through {listing([n.id for n in export.nodes if n.id in looped])}; "
        "flows are acyclic graphs",
        path=first.path if first else json_path(["data", "edges"]),
    )


def _on_cycles(export: Export) -> set[str]:
    """The nodes on a cycle: what is left once every node without inputs, or without outputs, among the nodes left
    is taken away, again and again (Kahn's algorithm from both ends at once, so each wire is looked at twice)."""
    inputs = {n.id: len(export.wires_into(n.id)) for n in export.nodes}
    outputs = {n.id: len(export.wires_from(n.id)) for n in export.nodes}
    gone = [n for n in inputs if not inputs[n] or not outputs[n]]
    left = set(inputs).difference(gone)
    while gone:
        node = gone.pop()
        for wire in export.wires_from(node):
            inputs[wire.target] -= 1
            if not inputs[wire.target] and wire.target in left:
                left.discard(wire.target)
                gone.append(wire.target)
        for wire in export.wires_into(node):
            outputs[wire.source] -= 1
            if not outputs[wire.source] and wire.source in left:
                left.discard(wire.source)
                gone.append(wire.source)
    return left
