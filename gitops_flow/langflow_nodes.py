"""What each supported LangFlow component becomes: one handler per ``data.type``, writing native nodes and edges.

Every LangFlow wire carries a Message (text). Each handler therefore gives, for each of its outputs, a *port*: the
native node whose output is that text, a constant (a prompt whose variables all have values is folded into the
templates it feeds), a model (a model node's ``model_output`` lends its ChatModel params to the node it feeds) or a
tool (a component wired into an agent's ``tools``). Handlers run in dependency order, so a node's inputs are known
when it is converted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from string import Formatter
from typing import Any

from gitops_flow.langflow_export import Export, LfNode, Wire
from gitops_flow.langflow_models import ModelChoice, model_choice
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
    """A built-in tool, for an agent's ``tools``."""

    tool: str


Port = NodePort | Constant | ModelPort | ToolPort


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
    _index: dict[str, int] = field(default_factory=dict)
    _history: str | None = None

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
        for wire in self.export.wires:
            if wire.target != node.id or wire.field != field_name:
                continue
            port = self.ports.get((wire.source, wire.output)) or self.ports.get((wire.source, "*"))
            if port is None:
                self.fail(wire.path, f"output {wire.output!r} of {wire.source!r} is not supported here", wire=True)
                continue
            found.append((wire, port))
        return found

    def wired(self, node: LfNode) -> set[str]:
        return {w.field for w in self.export.wires if w.target == node.id}

    def used_outputs(self, node: LfNode) -> set[str]:
        return {w.output for w in self.export.wires if w.source == node.id}

    def fail(self, path: str, message: str, *, node: LfNode | None = None, wire: bool = False) -> None:
        code = "langflow-bad-edge" if wire else "langflow-unsupported"
        text = f"{node.label()}: {message}" if node else message
        self.problems.append(Problem(code=code, message=text, path=path))

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


def conversational(export: Export) -> bool:
    """A flow keeps chat history when it has a chat input and a node that reads the session's messages."""
    has_input = any(n.type == "ChatInput" for n in export.nodes)
    readers = [n for n in export.nodes if n.type in ("Memory", "MessageHistory") or _agent_memory(n) > 0]
    return has_input and bool(readers)


def _agent_memory(node: LfNode) -> int:
    if node.type != "Agent":
        return 0
    number = node.number("n_messages")
    return int(number) if number is not None else DEFAULT_WINDOW


# -- inputs and outputs ------------------------------------------------------------------------------------------


def chat_input(b: Builder, node: LfNode) -> None:
    inputs = [n for n in b.export.nodes if n.type == "ChatInput"]
    text_only = node.type == "TextInput"
    if text_only and inputs:  # with a chat input, a text input is a fixed value (LangFlow feeds it no input)
        b.ports[(node.id, "*")] = Constant(node.text("input_value"), node.field_path("input_value"))
        return
    if b.entry is not None:
        b.fail(node.path, "a flow takes one input; this is a second chat input", node=node)
        return
    if b.conversational:
        windows = [_agent_memory(n) for n in b.export.nodes] + [
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


def chat_output(b: Builder, node: LfNode) -> None:
    wires = b.inputs(node, "input_value")
    if len(wires) != 1:
        b.fail(node.path, f"an output shows one input; {len(wires)} are wired", node=node)
        return
    wire, port = wires[0]
    source = b.as_node(port, node, wire)
    if source is None:
        return
    b.exits.append(b.add(node, node.id, "Passthrough"))
    b.connect(source, node.id, None, wire)
    b.ports[(node.id, "*")] = NodePort(node.id)


# -- prompts -----------------------------------------------------------------------------------------------------


def prompt(b: Builder, node: LfNode) -> None:
    if node.flag("use_double_brackets"):
        b.fail(node.field_path("use_double_brackets"), "double-bracket ({{var}}) prompts are not supported", node=node)
        return
    source = node.text("template")
    try:
        parts = list(Formatter().parse(source))
    except ValueError as exc:
        b.fail(node.field_path("template"), f"the template does not parse: {exc}", node=node)
        return
    template, pending = "", []  # type: ignore[var-annotated]
    for literal, name, spec, conversion in parts:
        template += escape(literal)
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            b.fail(node.field_path("template"), f"{{{name}}} is not a plain template variable", node=node)
            return
        template += b.slot(node, name, name, pending)
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
    _chat(b, node, choice, "Agent", params, "system_prompt", history=b.conversational and _agent_memory(node) > 0)


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
    if len(wires) != 1:
        b.fail(node.path, f"a parser reads one input; {len(wires)} are wired", node=node)
        return
    wire, port = wires[0]
    source = b.as_node(port, node, wire)
    if source is None:
        return
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
        for wire in b.export.wires:
            if wire.source == node.id and wire.field != "tools":
                b.fail(wire.path, "a built-in tool can only feed an agent's tools", node=node)
        b.ports[(node.id, "*")] = ToolPort(name)

    return convert


HANDLERS: dict[str, Callable[[Builder, LfNode], None]] = {
    "ChatInput": chat_input,
    "TextInput": chat_input,
    "ChatOutput": chat_output,
    "TextOutput": chat_output,
    "Prompt": prompt,
    "PromptTemplate": prompt,
    "OpenAIModel": model,
    "AnthropicModel": model,
    "LanguageModelComponent": model,
    "Agent": agent,
    "StructuredOutput": structured_output,
    "StructuredOutputComponent": structured_output,
    "Memory": memory,
    "MessageHistory": memory,
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
    "File": "it reads files, which flows never do",
    "Directory": "it reads files, which flows never do",
    "LoopComponent": "flows are acyclic graphs; loops have no equivalent",
    "CustomComponent": "it runs custom Python code, which gitops-flow never does",
    "PythonREPLComponent": "it runs Python code, which gitops-flow never does",
    "PythonCodeStructuredTool": "it runs Python code, which gitops-flow never does",
    "(no type)": "the node has no component type but is wired to others",
    "note": "a note cannot be wired to other nodes",
}
