"""What LangFlow's model, agent and structured-output nodes become: a chat prompt, the model (or agent), and what reads
its answer: its text, or the JSON object an output schema describes (a structured output, an agent's structured
response).
"""

from __future__ import annotations

from typing import Any

from gitops_flow.langflow.export import LfNode, Wire
from gitops_flow.langflow.models import ModelChoice, model_choice
from gitops_flow.langflow.workbench import (
    HISTORY_KEY,
    Builder,
    ModelPort,
    NodePort,
    Port,
    Refused,
    ToolPort,
    agent_memory,
    escape,
)

STRUCTURED = "structured_response"  # an agent's output holding its answer as the output schema's object
TEXT_OUTPUTS_NOT = frozenset({"model_output", STRUCTURED})  # an agent's or model's outputs that are not its text


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
    tools: list[str | dict[str, Any]] = []
    if node.flag("add_calculator_tool"):
        tools.append("calculator")
    if node.flag("add_current_date_tool"):
        tools.append("current_date")
    search_key: dict[str, str] | None = None
    for wire, port in b.inputs(node, "tools"):
        if isinstance(port, ToolPort):
            tools.append(port.tool)
            search_key = search_key or port.key
        elif not isinstance(port, Refused):  # a refused tool's own problem says why
            b.fail(
                wire.path,
                "only built-in tools (Calculator, Current Date, URL, web search) can be an agent's tools",
                node=node,
            )
    if b.wired(node) & {"memory"}:
        b.fail(node.field_path("memory"), "an external chat memory is not supported", node=node)
    params = {**choice.params, "tools": _distinct(tools), **({"search_api_key": search_key} if search_key else {})}
    iterations = node.number("max_iterations")
    if iterations is not None and iterations >= 1:
        params["max_iterations"] = min(100, int(iterations))
    used = b.used_outputs(node)
    history = b.conversational and agent_memory(node) > 0
    if STRUCTURED in used:
        _structured_response(b, node, choice, params, history=history and bool(params["tools"]))
    if used - TEXT_OUTPUTS_NOT or STRUCTURED not in used:
        _chat(b, node, choice, "Agent", params, "system_prompt", history=history)


def _distinct(tools: list[str | dict[str, Any]]) -> list[str | dict[str, Any]]:
    """Each tool once (by name: two web search nodes are one ``web_search``, the first's options kept)."""
    seen: dict[str, str | dict[str, Any]] = {}
    for tool in tools:
        seen.setdefault(str(tool["name"]) if isinstance(tool, dict) else tool, tool)
    return list(seen.values())


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
    for output in b.used_outputs(node) - TEXT_OUTPUTS_NOT:
        b.ports[(node.id, output)] = NodePort(text)


def _structured_response(
    b: Builder, node: LfNode, choice: ModelChoice, params: dict[str, Any], *, history: bool
) -> None:
    """An agent's ``structured_response``: the agent asked for one JSON object with the output schema's fields (its
    system prompt, then LangFlow's format instructions, then the fields), its answer parsed as JSON.

    LangFlow runs the agent again for this output, apart from its ``response``; with tools, the agent runs its tool
    loop under the augmented system prompt and sees the session's history; without tools, LangFlow asks the model
    for the schema directly, with the system prompt and the input alone (no history). Both are done the same here.
    """
    fields = schema_fields(node)
    if fields is None:
        b.fail(node.field_path("output_schema"), "the structured response's output schema names no fields", node=node)
        b.ports[(node.id, STRUCTURED)] = Refused(node)  # what reads it goes on as if it were there
        return
    instructions = node.text("format_instructions").strip()
    parts = [f"Format instructions: {instructions}"] if instructions else []
    parts.append(fields)
    _json_chain(
        b,
        node,
        f"{node.id}.structured",
        "Agent",
        params,
        choice,
        "\n\n".join(parts),
        history=history,
        port=(node.id, STRUCTURED),
    )


def structured_output(b: Builder, node: LfNode) -> None:
    lent = [port for _, port in b.inputs(node, "llm") + b.inputs(node, "model") if isinstance(port, ModelPort)]
    choice = lent[0].choice if lent else model_choice(node)
    if not lent:
        b.problems += choice.problems
    fields = schema_fields(node)
    if fields is None:
        b.fail(node.field_path("output_schema"), "the output schema names no fields", node=node)
        b.ports[(node.id, "*")] = Refused(node)
        return
    _json_chain(b, node, node.id, "ChatModel", dict(choice.params), choice, fields, history=False, port=(node.id, "*"))


def schema_fields(node: LfNode) -> str | None:
    """What the model is asked for, made from the node's output schema (a table of ``name``, ``type``,
    ``description`` and ``multiple``); None when the schema names no field."""
    rows = node.value("output_schema", [])
    named = (
        [r for r in rows if isinstance(r, dict) and isinstance(r.get("name"), str)] if isinstance(rows, list) else []
    )
    if not named:
        return None
    listed = "\n".join(f"- {r['name']} ({_kind(r)}): {r.get('description') or ''}" for r in named)
    return f"Answer with one JSON object and nothing else, with these keys:\n{listed}"


def _kind(row: dict[str, Any]) -> str:
    kind = str(row.get("type") or "str")
    return f"a list of {kind}" if str(row.get("multiple")).lower() == "true" else kind


def _json_chain(
    b: Builder,
    node: LfNode,
    base: str,
    component: str,
    params: dict[str, Any],
    choice: ModelChoice,
    instructions: str,
    *,
    history: bool,
    port: tuple[str, str],
) -> None:
    """Messages (the system prompt with ``instructions`` after it, the history, the input) -> the model -> its
    answer parsed as JSON; the parsed object is ``port``."""
    pending: list[tuple[Port, str, Wire]] = []
    system_text = b.slot(node, "system_prompt", "system_prompt", pending)
    human_text = b.slot(node, "input_value", "input_value", pending)
    system_text = f"{system_text}\n\n{escape(instructions)}" if system_text else escape(instructions)
    messages = [["system", system_text]]
    if history:
        messages.append(["placeholder", "{" + HISTORY_KEY + "}"])
    messages.append(["human", human_text])
    prompt_id = b.add(node, f"{base}.messages", "ChatPromptTemplate", {"messages": messages})
    for source, variable, wire in pending:
        b.connect(source, prompt_id, variable, wire)
    if history:
        b.connect(b.history(), prompt_id, HISTORY_KEY, None)
    b.add(node, base, component, params, fields=choice.fields)
    b.connect(NodePort(prompt_id), base, None, None)
    label = node.display_name or node.id
    parsed = b.add(node, f"{base}.json", "JsonOutputParser", description=f"{label}: JSON")
    b.connect(NodePort(base), parsed, None, None)
    b.ports[port] = NodePort(parsed)
