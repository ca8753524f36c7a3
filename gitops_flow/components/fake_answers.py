"""What a fake model answers for each model node of a flow (``serve --fake-models``, ``gitops-flow demo``): what the
flow's first test that fakes it says, else a line saying it is a fake, shaped for the node that reads it (a JSON
parser gets a JSON object, with the fields the text templates after the parser name, so a flow that parses its
model's answer runs under fakes too, and shows each field)."""

from __future__ import annotations

import json
import re

from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.flow.document import FlowSpec

FAKE_ANSWER = "This is a fake answer from {node}."
FAKE_FIELD = "fake {field} from {node}"
JSON_READERS = frozenset({"JsonOutputParser"})
_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")  # a field of a Text template (textify.render)
_OWN_FIELDS = frozenset({"text", "sender", "sender_name"})  # what Text fills itself, whatever the object holds


def fake_answers(spec: FlowSpec, registry: ComponentRegistry) -> dict[str, list[str]]:
    """Node id -> the answers its fake gives, for every node that would call a real model."""
    real = [node.id for node in spec.nodes if registry.calls_a_model(node.component)]
    fakes: dict[str, list[str]] = {}
    for case in spec.tests:
        for node_id, answers in case.fakes.items():
            if node_id in real:
                fakes.setdefault(node_id, list(answers))
    for node_id in real:
        fakes.setdefault(node_id, [_answer(spec, node_id)])
    return fakes


def _answer(spec: FlowSpec, node_id: str) -> str:
    line = FAKE_ANSWER.format(node=node_id)
    components = {node.id: node for node in spec.nodes}
    parsers = [e.target for e in spec.edges if e.source == node_id and components[e.target].component in JSON_READERS]
    if not parsers:
        return line
    named: list[str] = []
    for edge in spec.edges:
        reader = components[edge.target]
        template = reader.params.get("template")
        whole = "key" not in reader.params  # a Text that reads one key of the object finds its fields under it
        if edge.source in parsers and reader.component == "Text" and whole and isinstance(template, str):
            named += [name for name in _FIELD.findall(template) if name not in _OWN_FIELDS]
    fields = {name: FAKE_FIELD.format(field=name, node=node_id) for name in dict.fromkeys(named)}
    return json.dumps(fields or {"answer": line})
