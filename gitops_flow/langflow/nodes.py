"""What each supported LangFlow component becomes: one handler per ``data.type``, writing native nodes and edges.

Handlers run in dependency order, so the ports of a node's inputs (builder.py) are known when it is
converted; each handler sets the ports of its own outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from string import Formatter
from typing import Any

from gitops_flow import templates
from gitops_flow.langflow.builder import (
    DEFAULT_WINDOW,
    HISTORY_KEY,
    INPUT_KEY,
    Builder,
    Constant,
    ModelPort,
    NodePort,
    Port,
    ToolPort,
    agent_memory,
    escape,
)
from gitops_flow.langflow.export import LfNode, Wire
from gitops_flow.langflow.models import TYPE_PROVIDERS, ModelChoice, model_choice
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
    storage; the server reads no files, so the content comes with the request (a warning says so)."""
    others = [n for n in b.export.nodes if n.type in ("ChatInput", "TextInput") or (n.type == "File" and n is not node)]
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


# -- models and agents -------------------------------------------------------------------------------------------


def model(b: Builder, node: LfNode) -> None:
    choice = model_choice(node)
    b.problems += choice.problems
    b.ports[(node.id, "model_output")] = ModelPort(choice, node)
    if not b.used_outputs(node) - {"model_output"}:
        return  # lent to other nodes as a model only: it runs as part of them
    _chat(b, node, choice, "ChatModel", dict(choice.params), "system_message", history=False)


def agent(b: Builder, node: LfNode) -> None:
    lent = [port for _, port in b.inputs(node, "model") + b.inputs(node, "llm") if isinstance(port, ModelPort)]
    choice = lent[0].choice if lent else model_choice(node)
    if not lent:
        b.problems += choice.problems
    tools: list[str] = []
    if node.flag("add_calculator_tool"):
        tools.append("calculator")
    if node.flag("add_current_date_tool"):
        tools.append("current_date")
    for wire, port in b.inputs(node, "tools"):
        if isinstance(port, ToolPort):
            tools.append(port.tool)
        else:
            b.fail(wire.path, "only built-in tools (Calculator, Current Date) can be an agent's tools", node=node)
    if b.wired(node) & {"memory"}:
        b.fail(node.field_path("memory"), "an external chat memory is not supported", node=node)
    params = {**choice.params, "tools": list(dict.fromkeys(tools))}
    iterations = node.number("max_iterations")
    if iterations is not None and iterations >= 1:
        params["max_iterations"] = min(100, int(iterations))
    if "structured_response" in b.used_outputs(node):
        b.fail(node.path, "the agent's structured response is not supported; use its response", node=node)
    _chat(b, node, choice, "Agent", params, "system_prompt", history=b.conversational and agent_memory(node) > 0)


def _chat(
    b: Builder, node: LfNode, choice: ModelChoice, component: str, params: dict[str, Any], system: str, history: bool
) -> None:
    """A model's or agent's messages (system, history, human) -> the model -> its text."""
    pending: list[tuple[Port, str, Wire]] = []
    system_text, system_origin = b.slot_from(node, system, system, pending)
    human_text, human_origin = b.slot_from(node, "input_value", "input_value", pending)
    messages: list[list[str]] = [["system", system_text]] if system_text else []
    origins = [system_origin] if system_text else []
    if history:
        messages.append(["placeholder", "{" + HISTORY_KEY + "}"])
        origins.append(node.path)
    messages.append(["human", human_text])
    origins.append(human_origin)
    prompt_id = b.add(node, f"{node.id}.messages", "ChatPromptTemplate", {"messages": messages})
    b.origin_of_items(prompt_id, "messages", origins)
    for port, variable, wire in pending:
        b.connect(port, prompt_id, variable, wire)
    if history:
        b.connect(b.history(), prompt_id, HISTORY_KEY, None)
    b.add(node, node.id, component, params, fields=choice.fields)
    b.connect(NodePort(prompt_id), node.id, None, None)
    text = b.add(node, f"{node.id}.text", "StrOutputParser", description=f"{node.display_name or node.id}: text")
    b.connect(NodePort(node.id), text, None, None)
    for output in b.used_outputs(node) - {"model_output"}:
        b.ports[(node.id, output)] = NodePort(text)
    if "structured_response" in b.used_outputs(node):
        del b.ports[(node.id, "structured_response")]


def structured_output(b: Builder, node: LfNode) -> None:
    lent = [port for _, port in b.inputs(node, "llm") + b.inputs(node, "model") if isinstance(port, ModelPort)]
    choice = lent[0].choice if lent else model_choice(node)
    if not lent:
        b.problems += choice.problems
    rows = node.value("output_schema", [])
    names = (
        [r for r in rows if isinstance(r, dict) and isinstance(r.get("name"), str)] if isinstance(rows, list) else []
    )
    if not names:
        b.fail(node.field_path("output_schema"), "the output schema names no fields", node=node)
        return
    listed = "\n".join(f"- {r['name']} ({r.get('type') or 'str'}): {r.get('description') or ''}" for r in names)
    instructions = f"Answer with one JSON object and nothing else, with these keys:\n{listed}"
    pending: list[tuple[Port, str, Wire]] = []
    system_text = b.slot(node, "system_prompt", "system_prompt", pending)
    human_text = b.slot(node, "input_value", "input_value", pending)
    system_text = f"{system_text}\n\n{escape(instructions)}" if system_text else escape(instructions)
    messages = [["system", system_text], ["human", human_text]]
    prompt_id = b.add(node, f"{node.id}.messages", "ChatPromptTemplate", {"messages": messages})
    for port, variable, wire in pending:
        b.connect(port, prompt_id, variable, wire)
    b.add(node, node.id, "ChatModel", dict(choice.params), fields=choice.fields)
    b.connect(NodePort(prompt_id), node.id, None, None)
    parsed = b.add(node, f"{node.id}.json", "JsonOutputParser", description=f"{node.display_name or node.id}: JSON")
    b.connect(NodePort(node.id), parsed, None, None)
    b.ports[(node.id, "*")] = NodePort(parsed)


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
        b.fail(node.path, "chat memory needs a Chat Input, whose session it reads", node=node)
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


HANDLERS: dict[str, Callable[[Builder, LfNode], None]] = {
    "ChatInput": chat_input,
    "TextInput": chat_input,
    "File": file_input,
    "ChatOutput": chat_output,
    "TextOutput": chat_output,
    "Prompt": prompt,
    "PromptTemplate": prompt,
    "Prompt Template": prompt,  # LangFlow 1.12 on names the prompt component by its display name
    **{kind: model for kind in TYPE_PROVIDERS},  # a provider's own model node: ChatModel when init_chat_model knows it
    "LanguageModelComponent": model,
    "Agent": agent,
    "StructuredOutput": structured_output,
    "StructuredOutputComponent": structured_output,
    "Memory": memory,
    "MessageHistory": memory,
    "MemoryComponent": memory,  # LangFlow 0.x's name for Chat Memory
    "parser": parser,
    "ParserComponent": parser,
    "ParseData": parser,
    "CalculatorComponent": tool("calculator"),
    "CalculatorTool": tool("calculator"),
    "CurrentDate": tool("current_date"),
}

_WEB = "it reaches the network at run time (fetching pages, searching the web); converted flows only call their model"
_STORE = "it is a vector store or knowledge base; gitops-flow has no retrieval components"
UNSUPPORTED_HINTS: dict[str, str] = {
    "URLComponent": _WEB,
    "URL": _WEB,
    "UnifiedWebSearch": _WEB,
    "WebSearchComponent": _WEB,
    "APIRequest": _WEB,
    "Knowledge": _STORE,
    "KnowledgeRetrieval": _STORE,
    "KnowledgeIngestion": _STORE,
    "MemoryBase": (
        "Memory Base is long-term memory searched across sessions (a vector store); gitops-flow keeps each "
        "session's chat history only: remove the node, and the agent still sees the conversation so far"
    ),
    "Directory": "it reads files, which flows never do",
    "LoopComponent": "flows are acyclic graphs; loops have no equivalent",
    "CustomComponent": "it runs custom Python code, which gitops-flow never does",
    "PythonREPLComponent": "it runs Python code, which gitops-flow never does",
    "PythonCodeStructuredTool": "it runs Python code, which gitops-flow never does",
    "(no type)": "the node has no component type but is wired to others",
    "note": "a note cannot be wired to other nodes",
}
