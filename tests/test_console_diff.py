"""console/diff.py: what differs between two versions of a flow document, with credentials masked."""

from __future__ import annotations

import json

from gitops_flow.console.diff import compare
from gitops_flow.flow.document import FlowSpec
from tests.served import echo_flow


def flow(**changes: object) -> FlowSpec:
    return FlowSpec.model_validate({**json.loads(echo_flow(answer="one")), **changes})


def test_nodes_params_edges_tests_and_fields_that_changed() -> None:
    before = flow(tests=[{"name": "says one", "input": {"question": "q"}, "expect": {"equals": "one"}}])
    doc = json.loads(echo_flow(answer="two"))
    doc["nodes"].append({"id": "extra", "component": "Text"})
    doc["edges"] = [{"source": "prompt", "target": "llm"}, {"source": "llm", "target": "extra"}]
    doc["nodes"][0]["params"]["template"] = "Question: {question}"
    doc["description"] = "now described"
    doc["tests"] = [
        {"name": "says one", "input": {"question": "q"}, "expect": {"equals": "two"}},
        {"name": "new", "input": {"question": "q"}, "expect": {"contains": "t"}},
    ]
    after = FlowSpec.model_validate(doc)
    diff = compare(before, after)
    assert [(c.path, c.status, c.after) for c in diff.fields] == [("description", "added", "now described")]
    nodes = {n.id: n for n in diff.nodes}
    assert set(nodes) == {"prompt", "llm", "extra"}
    assert [(c.path, c.before, c.after) for c in nodes["llm"].params] == [("params.responses", '["one"]', '["two"]')]
    assert nodes["prompt"].params[0].after == "Question: {question}"
    assert (nodes["extra"].status, nodes["extra"].component_after) == ("added", "Text")
    assert diff.edges_added == ("llm → extra",) and diff.edges_removed == ("llm → answer",)
    tests = {t.name: t for t in diff.tests}
    assert tests["new"].status == "added"
    assert [(c.path, c.before, c.after) for c in tests["says one"].changes] == [
        ("expect", '{"equals":"one"}', '{"equals":"two"}')
    ]
    assert not diff.empty and compare(before, before).empty


def test_a_new_or_deleted_flow_is_all_added_or_all_removed() -> None:
    diff = compare(None, flow())
    assert {n.status for n in diff.nodes} == {"added"} and len(diff.edges_added) == 2
    assert {n.status for n in compare(flow(), None).nodes} == {"removed"}


def test_a_literal_credential_is_masked_on_both_sides() -> None:
    key = "sk-proj-" + "k" * 30
    before = flow()
    doc = json.loads(echo_flow(answer="one"))
    doc["nodes"][1]["params"]["api_key"] = key
    doc["nodes"][1]["params"]["note"] = f"the key is {key}"
    diff = compare(before, FlowSpec.model_validate(doc), scrub=lambda value: value)
    shown = json.dumps([[c.before, c.after] for n in diff.nodes for c in n.params])
    assert key not in shown and "(hidden: looks like a credential)" in shown


def test_known_secret_values_are_scrubbed() -> None:
    doc = json.loads(echo_flow(answer="the value s3cr3t-value-here"))
    diff = compare(
        flow(),
        FlowSpec.model_validate(doc),
        scrub=lambda v: json.loads(json.dumps(v).replace("s3cr3t-value-here", "<$env:X>")),
    )
    assert "s3cr3t" not in json.dumps([c.after for n in diff.nodes for c in n.params])
