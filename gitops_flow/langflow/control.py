"""What LangFlow's If-Else (``ConditionalRouter``) becomes: a ``Router`` whose two branches are parts of the flow
(docs/components.md, "Router and Map").

The If-Else compares the text wired into ``input_text`` with its ``match_text`` by its ``operator`` and passes its
message on through ``true_result`` or ``false_result``; only the nodes after the chosen output run. The converted
Router reads the same text and hands it to the branch it chooses: each output starts a part (a Passthrough the
Router names), made of the converted nodes that output leads to, and the part's Chat Output becomes the Router's
output. ``not equals`` is ``equals`` with the branches swapped. LangFlow's ``regex`` matches at the start of the text
(Python's ``re.match``) and always minds case: the Router's pattern is anchored (``^(?:...)``) and case-sensitive.

What a Router cannot do is refused, saying which field: a number comparison (``less than`` ...), a ``match_text``
another node writes (a Router's branch names are fixed), a message to pass on other than the compared text, and
branches that meet again or read nodes outside them (a part is a sub-graph of its own).
"""

from __future__ import annotations

from gitops_flow.langflow.export import LfNode
from gitops_flow.langflow.workbench import Branching, Builder, NodePort, Refused

ROUTERS = frozenset({"ConditionalRouter"})
OUTPUTS = ("true_result", "false_result")
_MESSAGES = ("message", "true_case_message", "false_case_message")  # what LangFlow passes on (1.0-1.4; 1.5 on)
_OPERATORS = {
    "equals": "equals",
    "not equals": "equals",  # the branches swapped
    "contains": "contains",
    "starts with": "starts_with",
    "ends with": "ends_with",
    "regex": "regex",
}


def router(b: Builder, node: LfNode) -> None:
    """If-Else -> a Router choosing between the parts its True and False outputs lead to."""
    operator = node.text("operator").strip().lower() or "equals"
    match = _OPERATORS.get(operator)
    if match is None:
        return _refuse(
            b,
            node,
            node.field_path("operator"),
            f"operator {operator!r} compares numbers; a converted If-Else matches text (equals, not equals, "
            "contains, starts with, ends with, regex)",
        )
    if b.export.wires_into(node.id, "match_text"):
        return _refuse(
            b,
            node,
            node.field_path("match_text"),
            "match_text is wired from another node; a Router's branch names are fixed text, so type it in",
        )
    text = node.text("match_text")
    if not text:
        return _refuse(b, node, node.field_path("match_text"), "match_text is empty: there is nothing to compare with")
    found = b.sole_input(node, b.inputs(node, "input_text"), "an If-Else compares")
    if found is None:
        b.ports.setdefault((node.id, "*"), Refused(node))
        return None
    source, wire = found
    for name in _MESSAGES:
        for other in b.export.wires_into(node.id, name):
            if (other.source, other.output) != (wire.source, wire.output):
                return _refuse(
                    b,
                    node,
                    other.path,
                    f"{name} passes on {other.source}'s output, not the compared text; a converted If-Else passes "
                    "on the text it compares (wire input_text's source here too, or leave it unwired)",
                )
    starts = (f"{node.id}.true", f"{node.id}.false")
    for output, start in zip(OUTPUTS, starts, strict=True):
        b.add(node, start, "Passthrough", description=f"{node.label()}: {output}")
        b.ports[(node.id, output)] = NodePort(start)
        if output not in b.used_outputs(node):
            b.warn(
                node.path,
                f"{node.label()}: its {output} output is not wired; where LangFlow then shows nothing, the converted "
                "flow answers the compared text",
                code="langflow-unwired-branch",
            )
    chosen, fallback = starts if operator != "not equals" else starts[::-1]
    case_sensitive = True if match == "regex" else node.flag("case_sensitive")
    name = f"^(?:{text})" if match == "regex" else text
    params = {"branches": {name: chosen}, "default": fallback, "match": match, "case_sensitive": case_sensitive}
    fields = {"branches": "match_text", "match": "operator", "case_sensitive": "case_sensitive"}
    b.add(node, node.id, "Router", params, fields=fields)
    b.connect(source, node.id, None, wire)
    b.branchings.append(Branching(node, starts))
    return None


def close_branches(b: Builder) -> None:
    """Make each router's branches parts: each holds what its start leads to, reads nothing outside it, and ends in
    one node; a branch ending at a Chat Output makes the router's output the flow's (instead of that output's)."""
    targets: dict[str, list[str]] = {}
    for edge in b.edges:
        targets.setdefault(edge["source"], []).append(edge["target"])
    for branching in b.branchings:
        node = branching.node
        parts = [_reachable(start, targets) for start in branching.starts]
        met = parts[0] & parts[1]
        if met:
            b.fail(
                node.path,
                f"its branches meet again ({_origin(b, sorted(met)[0])} is after both outputs); each branch of a "
                "converted If-Else must end in its own Chat Output",
                node=node,
            )
            continue
        answered = False
        for output, part in zip(OUTPUTS, parts, strict=True):
            outside = sorted(
                {_origin(b, e["source"]) for e in b.edges if e["target"] in part and e["source"] not in part}
            )
            if outside:
                b.fail(
                    node.path,
                    f"its {output} branch reads a node outside it ({outside[0]}, which is not after that output); "
                    "a branch of a converted If-Else reads only what the If-Else passes on",
                    node=node,
                )
                continue
            ends = sorted(n for n in part if not any(t in part for t in targets.get(n, [])))
            if len(ends) != 1:
                b.fail(
                    node.path,
                    f"its {output} branch has {len(ends)} ends "
                    f"({', '.join(_origin(b, end) for end in ends)}); a branch ends in one output",
                    node=node,
                )
                continue
            if ends[0] in b.exits:
                b.exits.remove(ends[0])
                answered = True
        if answered:
            b.exits.append(node.id)


def _refuse(b: Builder, node: LfNode, path: str, message: str) -> None:
    b.fail(path, message, node=node)
    b.ports[(node.id, "*")] = Refused(node)


def _origin(b: Builder, native: str) -> str:
    """The LangFlow node a native node was made for (its id, or its id and a suffix: ``Prompt-x.text``)."""
    return next((n.id for n in b.export.nodes if native == n.id or native.startswith(n.id + ".")), native)


def _reachable(start: str, targets: dict[str, list[str]]) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for target in targets.get(todo.pop(), []):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen
