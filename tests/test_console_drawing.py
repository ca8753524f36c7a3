"""console/drawing.py: a flow's graph laid out in layers and drawn as SVG, odd graphs included."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from gitops_flow.console.drawing import MAX_NODES, draw
from gitops_flow.flow.document import FlowSpec

SVG = "{http://www.w3.org/2000/svg}"


def spec(nodes: list[str], edges: list[tuple[str, str] | tuple[str, str, str]], **extra: Any) -> FlowSpec:
    return FlowSpec.model_validate(
        {
            "version": 1,
            "name": "drawn",
            "nodes": [{"id": n, "component": "Passthrough"} for n in nodes],
            "edges": [{"source": e[0], "target": e[1], **({"key": e[2]} if len(e) > 2 else {})} for e in edges],
            **extra,
        }
    )


def boxes(flow: FlowSpec) -> dict[str, tuple[float, float]]:
    return {b.id: (b.x, b.y) for b in draw(flow).boxes}


def test_a_fan_out_is_laid_out_left_to_right_and_every_node_and_edge_drawn_once() -> None:
    flow = spec(
        ["entry", "left", "right", "join"],
        [("entry", "left"), ("entry", "right"), ("left", "join", "a"), ("right", "join", "b")],
    )
    at = boxes(flow)
    assert at["entry"][0] < at["left"][0] == at["right"][0] < at["join"][0]
    assert at["left"][1] != at["right"][1]
    drawing = draw(flow, lambda component: "input")
    assert drawing.svg is not None and drawing.notes == ()
    root = ET.fromstring(drawing.svg)  # well-formed XML
    nodes = root.findall(f"{SVG}g[@class]")
    assert sorted(n.get("data-node") for n in nodes if "node" in (n.get("class") or "").split()) == sorted(at)
    assert len([n for n in nodes if n.get("data-edge")]) == 4
    keys = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "edge-key"]
    assert sorted(keys) == ["a", "b"]
    entry = next(n for n in nodes if n.get("data-node") == "entry")
    assert entry.get("class") == "node kind-input entry"


def test_a_layer_is_ordered_to_avoid_crossings() -> None:
    # b's child is drawn first in the file, but it belongs under b: the sweep puts the layers in the same order
    flow = spec(["a", "b", "child_of_b", "child_of_a"], [("a", "child_of_a"), ("b", "child_of_b")])
    at = boxes(flow)
    assert (at["a"][1] < at["b"][1]) == (at["child_of_a"][1] < at["child_of_b"][1])


def test_a_broken_graph_is_drawn_with_what_is_wrong_noted() -> None:
    flow = spec(["a", "b", "c"], [("a", "b"), ("b", "c"), ("c", "a"), ("a", "ghost"), ("b", "b")])
    drawing = draw(flow)
    assert drawing.svg is not None
    assert any("ghost is not a node" in n for n in drawing.notes)
    assert any("feeds a node into itself" in n for n in drawing.notes)
    assert any("cycle" in n for n in drawing.notes)
    root = ET.fromstring(drawing.svg)
    back = [g for g in root.iter(f"{SVG}g") if g.get("class") == "edge back"]
    assert len(back) == 1


def test_text_is_escaped_and_credentials_are_not_shown() -> None:
    flow = FlowSpec.model_validate(
        {
            "version": 1,
            "name": "drawn",
            "nodes": [
                {"id": "n", "component": "<script>alert(1)</script>", "params": {"api_key": "sk-" + "x" * 30}},
            ],
        }
    )
    svg = draw(flow).svg
    assert svg is not None
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert "xxxxxxxxxx" not in svg and "(hidden: looks like a credential)" in svg
    ET.fromstring(svg)


def test_a_graph_too_large_to_read_is_not_drawn() -> None:
    names = [f"n{i}" for i in range(MAX_NODES + 1)]
    flow = spec(names, [(a, b) for a, b in zip(names, names[1:], strict=False)])
    drawing = draw(flow)
    assert drawing.svg is None and re.search(r"\d+ nodes are too many to draw", drawing.notes[0])


def test_a_routers_branches_are_drawn_after_it_with_their_names_and_only_the_main_exit_is_an_exit() -> None:
    flow = FlowSpec.model_validate(
        {
            "version": 1,
            "name": "drawn",
            "nodes": [
                {"id": "question", "component": "Passthrough"},
                {"id": "route", "component": "Router", "params": {"branches": {"fr": "french"}, "default": "english"}},
                {"id": "french", "component": "PromptTemplate", "params": {"template": "{question}"}},
                {"id": "english", "component": "PromptTemplate", "params": {"template": "{question}"}},
                {"id": "llm", "component": "FakeChatModel", "params": {"responses": ["ok"]}},
            ],
            "edges": [{"source": "question", "target": "route"}, {"source": "english", "target": "llm"}],
        }
    )
    drawing = draw(flow)
    at = {b.id: b for b in drawing.boxes}
    assert at["route"].x < at["french"].x == at["english"].x < at["llm"].x
    assert [b.id for b in drawing.boxes if b.exit] == ["route"] and [b.id for b in drawing.boxes if b.entry] == [
        "question"
    ]
    assert drawing.svg is not None
    root = ET.fromstring(drawing.svg)
    keys = sorted(t.text or "" for t in root.iter(f"{SVG}text") if t.get("class") == "edge-key")
    assert keys == ["default", "fr"]
