"""Large generated flows, for the tests of the cost bounds and for benchmarks/validate_large.py.

Every generator is deterministic and takes the node count ``n``; the shapes are the ones whose cost once grew faster
than their size: LangFlow exports with a cycle (and without one), and native chains, fan-out/fan-in graphs, cycles,
documents full of dangling edges and documents where every node has a problem.
"""

from __future__ import annotations

import json
from typing import Any, Literal

# -- LangFlow exports ---------------------------------------------------------------------------------------------


def _field(value: Any, **extra: Any) -> dict[str, Any]:
    return {"value": value, **extra}


def _lf_node(node_id: str, kind: str, template: dict[str, Any], name: str = "") -> dict[str, Any]:
    # the stored code is never read; it is here because every real export has it
    template = {"code": _field(f"class {kind}(Component): ..."), **template}
    return {"id": node_id, "data": {"type": kind, "node": {"display_name": name or kind, "template": template}}}


def _lf_edge(source: str, output: str, target: str, field: str) -> dict[str, Any]:
    return {
        "source": source,
        "target": target,
        "data": {"sourceHandle": {"name": output}, "targetHandle": {"fieldName": field}},
    }


def _model(node_id: str, index: int) -> dict[str, Any]:
    return _lf_node(
        node_id,
        "OpenAIModel",
        {
            "input_value": _field(""),
            "system_message": _field(f"Step {index}: improve the text."),
            "model_name": _field("gpt-4.1-mini"),
            "api_key": _field("OPENAI_API_KEY", load_from_db=True),
            "temperature": _field(0.1),
        },
        name=f"Model {index}",
    )


Cycle = Literal["whole", "head", "tail"] | None


def langflow_chain(n: int, *, cycle: Cycle = "whole", name: str = "Generated chain") -> dict[str, Any]:
    """An export of ``n`` nodes: Chat Input -> ``n - 2`` OpenAI models, each feeding the next -> Chat Output.

    ``cycle`` adds one wire into a model's system message that closes a cycle: from the last model to the first
    (``whole``: every model is on it), from the second to the first (``head``: a long chain leads out of it), or from
    the last to the third from last (``tail``: a long chain leads into it). ``cycle_ids`` names the nodes on it.
    """
    if n < 3:
        raise ValueError("a chain export has at least 3 nodes")
    models = [f"OpenAIModel-{i:05d}" for i in range(n - 2)]
    nodes = [_lf_node("ChatInput-00000", "ChatInput", {"input_value": _field("hello")}, name="Chat Input")]
    nodes += [_model(node_id, i) for i, node_id in enumerate(models)]
    nodes.append(_lf_node("ChatOutput-00000", "ChatOutput", {"input_value": _field("")}, name="Chat Output"))
    edges = [_lf_edge("ChatInput-00000", "message", models[0], "input_value")]
    edges += [_lf_edge(a, "text_output", b, "input_value") for a, b in zip(models, models[1:], strict=False)]
    edges.append(_lf_edge(models[-1], "text_output", "ChatOutput-00000", "input_value"))
    if cycle is not None:
        first, last = _cycle_ends(cycle, len(models))
        edges.append(_lf_edge(models[last], "text_output", models[first], "system_message"))
    return {"name": name, "description": f"{n} nodes", "data": {"nodes": nodes, "edges": edges}}


def cycle_ids(n: int, cycle: Cycle = "whole") -> list[str]:
    """The ids of the nodes on the cycle of ``langflow_chain(n, cycle=cycle)``, in file order."""
    if cycle is None:
        return []
    first, last = _cycle_ends(cycle, n - 2)
    return [f"OpenAIModel-{i:05d}" for i in range(first, last + 1)]


def _cycle_ends(cycle: str, models: int) -> tuple[int, int]:
    """(first, last) model index on the cycle: the wire closing it goes from the last to the first."""
    return {"whole": (0, models - 1), "head": (0, 1), "tail": (max(0, models - 3), models - 1)}[cycle]


# -- native flow documents ----------------------------------------------------------------------------------------


def _doc(name: str, nodes: list[dict[str, Any]], edges: list[dict[str, Any]]) -> dict[str, Any]:
    return {"version": 1, "name": name, "nodes": nodes, "edges": edges}


def native_chain(n: int, *, cycle: bool = False, name: str = "chain") -> dict[str, Any]:
    """A prompt, then ``n - 1`` nodes in a row (models and parsers taking turns); with ``cycle`` the last feeds the
    second, so every node but the first is on one cycle."""
    nodes: list[dict[str, Any]] = [{"id": "n0", "component": "PromptTemplate", "params": {"template": "{question}"}}]
    for i in range(1, n):
        if i % 2:
            nodes.append({"id": f"n{i}", "component": "FakeChatModel", "params": {"responses": ["a"]}})
        else:
            nodes.append({"id": f"n{i}", "component": "StrOutputParser"})
    edges = [{"source": a["id"], "target": b["id"]} for a, b in zip(nodes, nodes[1:], strict=False)]
    if cycle:
        edges.append({"source": nodes[-1]["id"], "target": nodes[1]["id"]})
    return _doc(name, nodes, edges)


def native_fan(n: int, *, name: str = "fan") -> dict[str, Any]:
    """An entry fanning out to ``n - 2`` prompts, all read, keyed, by one final prompt (wide fan-out and fan-in)."""
    width = n - 2
    nodes: list[dict[str, Any]] = [{"id": "entry", "component": "Passthrough"}]
    nodes += [{"id": f"b{i}", "component": "PromptTemplate", "params": {"template": "{q}"}} for i in range(width)]
    summary = " ".join(f"{{k{i}}}" for i in range(width))
    nodes.append({"id": "join", "component": "PromptTemplate", "params": {"template": summary}})
    edges = [{"source": "entry", "target": f"b{i}"} for i in range(width)]
    edges += [{"source": f"b{i}", "target": "join", "key": f"k{i}"} for i in range(width)]
    return _doc(name, nodes, edges)


def native_dangling(n: int, *, name: str = "dangling") -> dict[str, Any]:
    """A chain of ``n`` nodes plus ``n`` edges whose ends are not nodes."""
    doc = native_chain(n, name=name)
    doc["edges"] += [{"source": f"ghost{i}", "target": f"n{i}"} for i in range(n)]
    return doc


def native_problems(n: int, *, name: str = "problems") -> dict[str, Any]:
    """A chain of ``n`` nodes where every node names a component that is not registered."""
    doc = native_chain(n, name=name)
    for node in doc["nodes"]:
        node["component"] = "NoSuchComponent"
        node.pop("params", None)
    return doc


def text(doc: dict[str, Any]) -> bytes:
    """A document as the bytes of a file: one node or edge per line, so problems have lines to point at."""
    if "data" in doc:
        head = {k: v for k, v in doc.items() if k != "data"}
        parts, where = doc["data"], '"data": '
    else:
        head = {k: v for k, v in doc.items() if k not in ("nodes", "edges")}
        parts, where = doc, ""
    lists = ",\n".join(
        f'"{key}": [\n' + ",\n".join(json.dumps(item) for item in parts[key]) + "\n]" for key in ("nodes", "edges")
    )
    body = json.dumps(head)[1:-1]
    return f"{{{body},\n{where}{{\n{lists}\n}}}}\n".encode() if where else f"{{{body},\n{lists}\n}}\n".encode()
