"""What a fake model answers for each model node of a flow (``serve --fake-models``, ``gitops-flow demo``): what the
flow's first test that fakes it says, else a line saying it is a fake, shaped for the node that reads it (a JSON
parser gets a JSON object, so a flow that parses its model's answer runs under fakes too)."""

from __future__ import annotations

import json

from gitops_flow.components import ComponentRegistry
from gitops_flow.spec import FlowSpec

FAKE_ANSWER = "This is a fake answer from {node}."
JSON_READERS = frozenset({"JsonOutputParser"})


def fake_answers(spec: FlowSpec, registry: ComponentRegistry) -> dict[str, list[str]]:
    """Node id -> the answers its fake gives, for every node that would call a real model."""
    real = [node.id for node in spec.nodes if registry.calls_a_model(node.component)]
    components = {node.id: node.component for node in spec.nodes}
    fakes: dict[str, list[str]] = {}
    for case in spec.tests:
        for node_id, answers in case.fakes.items():
            if node_id in real:
                fakes.setdefault(node_id, list(answers))
    for node_id in real:
        line = FAKE_ANSWER.format(node=node_id)
        parsed = any(components.get(e.target) in JSON_READERS for e in spec.edges if e.source == node_id)
        fakes.setdefault(node_id, [json.dumps({"answer": line}) if parsed else line])
    return fakes
