"""What LangFlow's inputs, outputs, prompts, chat memory, parsers and built-in tools become: one handler each, writing
native nodes and edges (models and agents: chat.py).

Handlers run in dependency order, so the ports of a node's inputs (builder.py) are known when it is
converted; each handler sets the ports of its own outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from string import Formatter
from typing import Any

from gitops_flow.flow import prompts as templates
from gitops_flow.langflow import knowledge
from gitops_flow.langflow.export import LfNode
from gitops_flow.langflow.workbench import (
    DEFAULT_WINDOW,
    HISTORY_KEY,
    INPUT_KEY,
    Builder,
    Constant,
    NodePort,
    Refused,
    ToolPort,
    agent_memory,
    escape,
)
from gitops_flow.problems import Problem

# -- inputs and outputs ------------------------------------------------------------------------------------------


def chat_input(b: Builder, node: LfNode) -> None:
    text_only = node.type == "TextInput"
    # with a chat input, a text input is a fixed value (LangFlow feeds it no input)
    if text_only and "ChatInput" in b.types:
        b.ports[(node.id, "*")] = Constant(node.text("input_value"), node.field_path("input_value"))
        return
    if b.entry is not None:
        first = next(n for n in b.export.nodes if n.id == b.entry)
        b.fail(
            node.path,
            f"a flow takes one input, and {first.id} ({first.type}) is this flow's; this {node.type} would be a "
            "second (give it a fixed value in a Prompt instead, or remove it)",
            node=node,
        )
        b.ports[(node.id, "*")] = Constant(node.text("input_value"), node.field_path("input_value"))  # no cascade
        return
    attached = node.value("files")
    if attached not in (None, "", []):
        b.fail(
            node.field_path("files"),
            "files attached to the input (an image) cannot be passed on: a converted flow's input is text, and a "
            "file would be dropped silently; remove the file, or send the content as text",
            node=node,
        )
    elif node.type == "ChatInput" and b.files_expected:
        b.fail(
            node.field_path("files"),
            f"the flow expects files with its input ({b.files_expected}), which LangFlow hands a vision model; a "
            "converted flow's input is text, so the file would never reach the model: it is refused rather than "
            "dropped",
            node=node,
        )
    if b.conversational:
        windows = [agent_memory(n) for n in b.export.nodes] + [
            int(n.number("n_messages") or DEFAULT_WINDOW) for n in b.export.nodes if n.type == "Memory"
        ]
        b.window = max(1, min(10_000, max(windows)))
        params = {"input_key": INPUT_KEY, "history_key": HISTORY_KEY, "max_messages": b.window}
        b.entry = b.add(node, node.id, "ChatHistory", params)
        text = b.add(node, f"{node.id}.text", "Pick", {"key": INPUT_KEY}, description="the user's message")
        b.connect(NodePort(node.id), text, None, None)
        b.ports[(node.id, "*")] = NodePort(text)
    else:
        b.entry = b.add(node, node.id, "Passthrough")
        b.ports[(node.id, "*")] = NodePort(node.id)


def file_input(b: Builder, node: LfNode) -> None:
    """A File node as a flow's only input: the caller sends the file's text. LangFlow read the file from its own
    storage; the server reads no files, so the content comes with the request (a warning says so). Beside a chat
    input, or loading a store, its documents are committed in Git instead (knowledge.py)."""
    others = [n for n in b.export.nodes if n.type in ("ChatInput", "TextInput") or (n.type == "File" and n is not node)]
    if any(n.type == "ChatInput" for n in others) or knowledge.feeds_only_ingest(b, node):
        knowledge.file_documents(b, node)  # documents committed in Git, which the flow's input queries
        return
    if others or b.entry is not None:
        b.fail(
            node.path,
            "it reads a file from LangFlow's storage, which a flow never does; as a flow's only input it would be the "
            f"file's text, sent with each request, but this flow has another input ({_first_id(others, b.entry)})",
            node=node,
        )
        b.ports[(node.id, "*")] = Constant("", node.path)  # no cascade of problems downstream
        return
    b.entry = b.add(node, node.id, "Passthrough", description=f"{node.display_name or node.id}: the file's text")
    b.ports[(node.id, "*")] = NodePort(node.id)
    b.problems.append(
        Problem(
            code="langflow-file-input",
            message=f"{node.label()} becomes the flow's input: a caller sends the file's text with each request "
            "(LangFlow read a file from its own storage, which the server does not have)",
            path=node.path,
            severity="warning",
        )
    )


def _first_id(others: list[LfNode], entry: str | None) -> str:
    return others[0].id if others else str(entry)


def chat_output(b: Builder, node: LfNode) -> None:
    found = b.sole_input(node, b.inputs(node, "input_value"), "an output shows")
    if found is None:
        return
    source, wire = found
    b.exits.append(b.add(node, node.id, "Passthrough"))
    b.connect(source, node.id, None, wire)
    b.ports[(node.id, "*")] = NodePort(node.id)


def gather_outputs(b: Builder) -> None:
    """Several outputs (Chat Outputs) -> one exit: an object holding each output's value under its node's id, as
    LangFlow's run API lists one result per output (langflow_api.py lists them so again)."""
    if len(b.exits) < 2:
        return
    order = {n.id: n.index for n in b.export.nodes}
    outputs = sorted(b.exits, key=order.__getitem__)
    first = next(n for n in b.export.nodes if n.id == outputs[0])
    taken = {n.id for n in b.export.nodes}
    gather = next(
        name for name in ("outputs", *(f"outputs-{i}" for i in range(2, len(taken) + 3))) if name not in taken
    )
    b.add(first, gather, "Passthrough", description=f"the flow's {len(outputs)} outputs, each under its node's id")
    for output in outputs:
        b.connect(NodePort(output), gather, output, None)
    b.exits = [gather]


# -- prompts -----------------------------------------------------------------------------------------------------


def prompt(b: Builder, node: LfNode) -> None:
    if node.flag("use_double_brackets"):
        b.fail(node.field_path("use_double_brackets"), "double-bracket ({{var}}) prompts are not supported", node=node)
        return
    source = node.text("template")
    why = templates.problem(source)  # the rule native prompts follow: plain {name} fields only
    if why is not None:
        b.fail(node.field_path("template"), why, node=node, code="bad-template")
        return
    template, pending = "", []  # type: ignore[var-annotated]
    slots: dict[str, str] = {}  # a variable used twice is one input, filled once
    for literal, name, _, _ in Formatter().parse(source):
        template += escape(literal)
        if name is not None:
            if name not in slots:
                slots[name] = b.slot(node, name, name, pending)
            template += slots[name]
    if not pending:  # every variable has its value: the prompt is a constant, folded into what it feeds
        b.ports[(node.id, "*")] = Constant(_unescape(template), node.field_path("template"))
        return
    fields = {"template": "template"}
    b.add(node, node.id, "PromptTemplate", {"template": template}, fields=fields)
    text = b.add(node, f"{node.id}.text", "Text", description=f"{node.display_name or node.id}: text")
    b.connect(NodePort(node.id), text, None, None)
    for port, variable, wire in pending:
        b.connect(port, node.id, variable, wire)
    b.ports[(node.id, "*")] = NodePort(text)


def _unescape(template: str) -> str:
    return template.replace("{{", "{").replace("}}", "}")


# -- memory, parsers, tools --------------------------------------------------------------------------------------


def memory(b: Builder, node: LfNode) -> None:
    checks: list[tuple[str, Callable[[Any], bool], str]] = [
        ("mode", lambda v: v in ("", "Retrieve"), "only retrieving messages is supported (not storing them)"),
        ("order", lambda v: v in ("", "Ascending"), "messages come oldest first ('Ascending')"),
        ("sender", lambda v: v in ("", "Machine and User"), "messages of both sides are read"),
        ("sender_name", lambda v: v == "", "messages are not filtered by sender name"),
        ("session_id", lambda v: v == "", "the session is the request's, not a fixed one"),
    ]
    for name, allowed, why in checks:
        if not allowed(node.text(name)):
            b.fail(node.field_path(name), f"{name} = {node.text(name)!r} is not supported: {why}", node=node)
    if b.wired(node) & {"memory", "external_memory"}:
        b.fail(node.path, "an external chat memory is not supported", node=node)
    if not b.conversational or b.entry is None:
        inputs = [n for n in b.export.nodes if n.type == "ChatInput"]
        if not inputs or not all(n.id in b.refused for n in inputs):  # a refused Chat Input says why already
            b.fail(node.path, "chat memory needs a Chat Input, whose session it reads", node=node)
        b.ports[(node.id, "*")] = Refused(node)
        return
    template = node.text("template") or "{sender_name}: {text}"
    fields = {"template": "template"}
    b.add(node, node.id, "Text", {"key": HISTORY_KEY, "template": template}, fields=fields)
    b.connect(NodePort(b.entry), node.id, None, None)
    b.ports[(node.id, "*")] = NodePort(node.id)


def parser(b: Builder, node: LfNode) -> None:
    wires = b.inputs(node, "input_data") + b.inputs(node, "data") + b.inputs(node, "df")
    found = b.sole_input(node, wires, "a parser reads")
    if found is None:
        return
    source, wire = found
    stringify = node.text("mode") == "Stringify"
    template = "" if stringify else node.text("pattern") or node.text("template")
    params: dict[str, Any] = {"template": template} if template else {}
    fields = {"template": "pattern" if node.has("pattern") else "template"}
    separator = node.text("sep")
    if separator and separator != "\n":
        params["separator"] = separator
        fields["separator"] = "sep"
    b.add(node, node.id, "Text", params, fields=fields)
    b.connect(source, node.id, None, wire)
    b.ports[(node.id, "*")] = NodePort(node.id)


def tool(name: str) -> Callable[[Builder, LfNode], None]:
    def convert(b: Builder, node: LfNode) -> None:
        for wire in b.export.wires_from(node.id):
            if wire.field != "tools":
                b.fail(wire.path, "a built-in tool can only feed an agent's tools", node=node)
        b.ports[(node.id, "*")] = ToolPort(name)

    return convert


def refused(b: Builder, node: LfNode) -> None:
    """A node that cannot be converted (its problem is reported already): its outputs are refused too, so the nodes
    that read it are converted as if it were there and report only problems of their own."""
    b.ports[(node.id, "*")] = Refused(node)
