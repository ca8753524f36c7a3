"""A drawing of a flow's graph as SVG, made on the server: nodes in layers from the entry on the left to the exit on
the right, edges as curves with their keys, so the page needs no script and no library to show it.

The layout is the classic layered one (Sugiyama's, in its simplest form): cycles are broken by turning back edges
around, each node sits in the layer of its longest path from a source, and a few sweeps order each layer by the mean
position of its neighbours to cut crossings. A flow that failed validation is drawn too: dangling edges and cycles
are what an operator wants to see, so they are noted and drawn in red rather than refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html import escape

from gitops_flow.console.display import shown
from gitops_flow.flow.document import FlowSpec, NodeSpec
from gitops_flow.flow.parts import CONTROLS, roots

MAX_NODES = 150  # a larger graph is not drawn (its nodes are listed instead): a drawing that size is not read
NODE_HEIGHT = 46
GAP_X = 56
GAP_Y = 18
MARGIN = 12
CHAR_WIDTH = 7.4  # of the 12px monospace-ish labels, for box widths
MIN_WIDTH, MAX_WIDTH = 96.0, 250.0
MAX_LABEL = 30  # characters of a node's id or component shown in its box
SWEEPS = 4


@dataclass(frozen=True, slots=True)
class Box:
    """A node where it is drawn."""

    id: str
    component: str
    kind: str
    x: float
    y: float
    width: float
    entry: bool
    exit: bool


@dataclass(frozen=True, slots=True)
class Drawing:
    """The SVG of a flow's graph (None when it has too many nodes to draw) and what is odd about the graph."""

    svg: str | None
    width: float
    height: float
    boxes: tuple[Box, ...] = ()
    notes: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class _Edge:
    source: str
    target: str
    key: str | None
    back: bool  # part of a cycle, drawn against the flow


def draw(
    spec: FlowSpec,
    kind_of: Callable[[str], str | None] = lambda component: None,
    *,
    scrub: Callable[[object], object] = lambda value: value,
    prefix: str = "g",
) -> Drawing:
    """Lay out and draw ``spec``. ``kind_of`` names a component's kind (model, prompt, parser, ...) for its colour;
    ``scrub`` takes known secret values out of the params shown in each node's tooltip; ``prefix`` keeps the ids in
    the SVG unique when a page holds several drawings."""
    ids = list(dict.fromkeys(node.id for node in spec.nodes))
    nodes = {node.id: node for node in reversed(spec.nodes)}  # the first of duplicate ids wins, as in validation
    notes: list[str] = []
    if len(ids) < len(spec.nodes):
        notes.append("some node ids are used twice; the first of each is drawn")
    if len(ids) > MAX_NODES:
        notes.append(f"{len(ids)} nodes are too many to draw (at most {MAX_NODES}); they are listed below")
        return Drawing(None, 0, 0, (), tuple(notes))
    edges: list[tuple[str, str, str | None]] = []
    for edge in spec.edges:
        missing = [end for end in (edge.source, edge.target) if end not in nodes]
        if missing:
            notes.append(f"edge {edge.source} -> {edge.target}: {', '.join(missing)} is not a node")
        elif edge.source == edge.target:
            notes.append(f"edge {edge.source} -> {edge.target} feeds a node into itself")
        elif (edge.source, edge.target, edge.key) not in edges:
            edges.append((edge.source, edge.target, edge.key))
    plain = len(edges)  # the edges after these are a control node's to its parts
    inside = _in_parts(spec, nodes, edges)
    laid = _break_cycles(ids, edges)
    if any(e.back for e in laid):
        notes.append("the graph has a cycle; the edges that close it are drawn dashed")
    layers = _layers(ids, laid)
    order = _order(ids, laid, layers)
    entries = {spec.input} if spec.input else {n for n in ids if not any(e.target == n for e in laid)}
    feeding = {source for source, _, _ in edges[:plain]}
    exits = {spec.output} if spec.output else {n for n in ids if n not in feeding} - inside
    boxes = _place(order, nodes, kind_of, entries, exits)
    return _svg(boxes, laid, nodes, scrub, prefix, tuple(notes))


def _in_parts(spec: FlowSpec, nodes: dict[str, NodeSpec], edges: list[tuple[str, str, str | None]]) -> set[str]:
    """The nodes of control nodes' parts (flow/parts.py); adds to ``edges`` one from each control node to each part
    it runs, keyed by the branch's name (``default``, ``body``), so a part is drawn after the node that runs it."""
    starts: list[str] = []
    for node_id, node in nodes.items():
        if node.component not in CONTROLS:
            continue
        for where, root in roots(node.component, node.params):
            if isinstance(root, str) and root in nodes and root != node_id:
                starts.append(root)
                label = where[-1] if where[0] == "branches" else where[0]
                if (node_id, root, label) not in edges:
                    edges.append((node_id, root, label))
    following: dict[str, list[str]] = {}
    for edge in spec.edges:
        following.setdefault(edge.source, []).append(edge.target)
    inside = set(starts)
    stack = list(starts)
    while stack:
        for target in following.get(stack.pop(), ()):
            if target not in inside:
                inside.add(target)
                stack.append(target)
    return inside


def _break_cycles(ids: list[str], edges: list[tuple[str, str, str | None]]) -> list[_Edge]:
    """Mark the edges a depth-first search finds going back to a node on its path (they close a cycle)."""
    outgoing: dict[str, list[tuple[str, str, str | None]]] = {n: [] for n in ids}
    for edge in edges:
        outgoing[edge[0]].append(edge)
    state: dict[str, int] = {}  # 1: on the path, 2: done
    back: set[tuple[str, str, str | None]] = set()
    for root in ids:
        if root in state:
            continue
        stack: list[tuple[str, Iterator[tuple[str, str, str | None]]]] = [(root, iter(outgoing[root]))]
        state[root] = 1
        while stack:
            node, rest = stack[-1]
            step = next(rest, None)
            if step is None:
                state[node] = 2
                stack.pop()
                continue
            target = step[1]
            if state.get(target) == 1:
                back.add(step)
            elif target not in state:
                state[target] = 1
                stack.append((target, iter(outgoing[target])))
    return [_Edge(s, t, k, (s, t, k) in back) for s, t, k in edges]


def _layers(ids: list[str], edges: list[_Edge]) -> dict[str, int]:
    """Each node's layer: the length of its longest path from a node without inputs (back edges reversed)."""
    forward = [(e.target, e.source) if e.back else (e.source, e.target) for e in edges]
    indegree = dict.fromkeys(ids, 0)
    for _, target in forward:
        indegree[target] += 1
    layer = dict.fromkeys(ids, 0)
    ready = [n for n in ids if indegree[n] == 0]
    while ready:
        node = ready.pop(0)
        for source, target in forward:
            if source == node:
                layer[target] = max(layer[target], layer[node] + 1)
                indegree[target] -= 1
                if indegree[target] == 0:
                    ready.append(target)
    return layer


def _order(ids: list[str], edges: list[_Edge], layer: dict[str, int]) -> list[list[str]]:
    """Nodes by layer, each layer ordered to cut crossings (barycentre sweeps, down then up)."""
    count = max(layer.values(), default=-1) + 1
    layers: list[list[str]] = [[n for n in ids if layer[n] == index] for index in range(count)]
    neighbours_before: dict[str, list[str]] = {n: [] for n in ids}
    neighbours_after: dict[str, list[str]] = {n: [] for n in ids}
    for edge in edges:
        first, second = sorted((edge.source, edge.target), key=lambda n: layer[n])
        neighbours_before[second].append(first)
        neighbours_after[first].append(second)
    for sweep in range(SWEEPS):
        down = sweep % 2 == 0
        indices = range(1, count) if down else range(count - 2, -1, -1)
        for index in indices:
            fixed = layers[index - 1] if down else layers[index + 1]
            where = {n: i for i, n in enumerate(fixed)}
            near = neighbours_before if down else neighbours_after
            current = {n: i for i, n in enumerate(layers[index])}
            layers[index] = sorted(layers[index], key=lambda n: (_centre(n, where, near, current), current[n]))
    return layers


def _centre(node: str, where: dict[str, int], near: dict[str, list[str]], current: dict[str, int]) -> float:
    """The mean position of a node's neighbours in the fixed layer (its own position when it has none there)."""
    placed = [where[m] for m in near[node] if m in where]
    return sum(placed) / len(placed) if placed else float(current[node])


def _label(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"


def _place(
    layers: list[list[str]],
    nodes: dict[str, NodeSpec],
    kind_of: Callable[[str], str | None],
    entries: set[str],
    exits: set[str],
) -> list[Box]:
    widths = [
        max(
            (
                min(MAX_WIDTH, max(MIN_WIDTH, CHAR_WIDTH * max(len(_label(n)), len(_label(nodes[n].component))) + 24))
                for n in layer
            ),
            default=MIN_WIDTH,
        )
        for layer in layers
    ]
    tallest = max((len(layer) for layer in layers), default=0)
    height = tallest * (NODE_HEIGHT + GAP_Y) - GAP_Y
    boxes = []
    x = float(MARGIN)
    for layer, width in zip(layers, widths, strict=True):
        used = len(layer) * (NODE_HEIGHT + GAP_Y) - GAP_Y
        y = MARGIN + (height - used) / 2
        for node in layer:
            component = nodes[node].component
            boxes.append(
                Box(node, component, kind_of(component) or "other", x, y, width, node in entries, node in exits)
            )
            y += NODE_HEIGHT + GAP_Y
        x += width + GAP_X
    return boxes


def _svg(
    boxes: list[Box],
    edges: list[_Edge],
    nodes: dict[str, NodeSpec],
    scrub: Callable[[object], object],
    prefix: str,
    notes: tuple[str, ...],
) -> Drawing:
    at = {box.id: box for box in boxes}
    width = max((b.x + b.width for b in boxes), default=0) + MARGIN
    height = max((b.y + NODE_HEIGHT for b in boxes), default=0) + MARGIN
    arrow = f"{prefix}-arrow"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="flow-graph" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="{width:.0f}" height="{height:.0f}" role="img" aria-label="the flow\'s graph">',
        f'<defs><marker id="{arrow}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" class="arrow"/></marker></defs>',
    ]
    for edge in edges:
        source, target = at[edge.source], at[edge.target]
        x1, y1 = source.x + source.width, source.y + NODE_HEIGHT / 2
        x2, y2 = target.x, target.y + NODE_HEIGHT / 2
        bend = max(abs(x2 - x1) / 2, 30.0)
        path = f"M {x1:.1f} {y1:.1f} C {x1 + bend:.1f} {y1:.1f}, {x2 - bend:.1f} {y2:.1f}, {x2:.1f} {y2:.1f}"
        kind = "edge back" if edge.back else "edge"
        label = f"{edge.source} → {edge.target}" + (f" as {edge.key}" if edge.key else "")
        parts.append(
            f'<g class="{kind}" data-edge="{escape(edge.source)}->{escape(edge.target)}">'
            f"<title>{escape(label)}</title>"
            f'<path d="{path}" marker-end="url(#{arrow})"/>'
        )
        if edge.key:
            parts.append(
                f'<text class="edge-key" x="{(x1 + x2) / 2:.1f}" y="{(y1 + y2) / 2 - 5:.1f}" text-anchor="middle">'
                f"{escape(_label(edge.key))}</text>"
            )
        parts.append("</g>")
    for box in boxes:
        classes = " ".join(
            ["node", f"kind-{escape(box.kind)}", *(["entry"] if box.entry else []), *(["exit"] if box.exit else [])]
        )
        params = nodes[box.id].params
        tip = f"{box.id}: {box.component}" + (f"\n{shown(params, scrub, 600)}" if params else "")
        parts.append(
            f'<g class="{classes}" data-node="{escape(box.id)}"><title>{escape(tip)}</title>'
            f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.width:.1f}" height="{NODE_HEIGHT}" rx="6"/>'
            f'<text class="node-id" x="{box.x + 10:.1f}" y="{box.y + 19:.1f}">{escape(_label(box.id))}</text>'
            f'<text class="node-component" x="{box.x + 10:.1f}" y="{box.y + 36:.1f}">'
            f"{escape(_label(box.component))}</text></g>"
        )
    parts.append("</svg>")
    return Drawing("".join(parts), width, height, tuple(boxes), notes)
