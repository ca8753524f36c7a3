"""FlowGraph: the shape of a flow's nodes and edges: entry, exit, order, fan-in keys; and what is wrong with it."""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from gitops_flow.flow.document import EdgeSpec, FlowSpec
from gitops_flow.flow.parts import Parts
from gitops_flow.problems import Problem, json_path, listing


@dataclass(frozen=True, slots=True)
class FlowGraph:
    """A flow's graph, checked: ``order`` is topological, ``entry`` gets the request, ``exit`` makes the response."""

    entry: str
    exit: str
    order: tuple[str, ...]
    incoming: dict[str, tuple[EdgeSpec, ...]]
    outgoing: dict[str, tuple[EdgeSpec, ...]]
    # the parts of the control nodes (flow/parts.py): the node starting each -> its own graph, over its own nodes
    parts: Mapping[str, FlowGraph] = field(default_factory=dict)
    controls: tuple[str, ...] = ()  # the control nodes, each after every control node inside its parts

    @property
    def is_chain(self) -> bool:
        return all(len(self.incoming[n]) <= 1 and len(self.outgoing[n]) <= 1 for n in self.order)


def analyse(spec: FlowSpec) -> tuple[FlowGraph | None, list[Problem]]:
    """The graph of ``spec`` and every problem with it; the graph is None when a problem makes it unusable.

    The parts of control nodes (a Router's branches, a Map's body: flow/parts.py) are sub-graphs of their own,
    each checked as a flow is (one entry, the node named; one exit; no cycle; every node on the way), and kept out
    of the main graph."""
    problems: list[Problem] = []
    ids: list[str] = []  # in document order; ``known`` is the same as a set, so each look-up costs O(1)
    known: set[str] = set()
    for index, node in enumerate(spec.nodes):
        if node.id in known:
            problems.append(_problem("duplicate-id", f"node id {node.id!r} is used more than once", "nodes", index))
        else:
            ids.append(node.id)
            known.add(node.id)
    incoming: dict[str, list[EdgeSpec]] = defaultdict(list)
    outgoing: dict[str, list[EdgeSpec]] = defaultdict(list)
    positions: dict[int, int] = {}  # id(edge) -> its index in spec.edges, for problems about fan-in edges
    seen_edges: set[tuple[str, str]] = set()
    for index, edge in enumerate(spec.edges):
        bad = False
        for end in ("source", "target"):
            if getattr(edge, end) not in known:
                problems.append(
                    _problem("dangling-edge", f"edge {end} {getattr(edge, end)!r} is not a node", "edges", index, end)
                )
                bad = True
        if edge.source == edge.target:
            problems.append(_problem("cycle", f"node {edge.source!r} feeds itself", "edges", index))
            bad = True
        if (edge.source, edge.target) in seen_edges:
            problems.append(
                _problem("duplicate-edge", f"edge {edge.source} -> {edge.target} is repeated", "edges", index)
            )
            bad = True
        seen_edges.add((edge.source, edge.target))
        if not bad:
            incoming[edge.target].append(edge)
            outgoing[edge.source].append(edge)
            positions[id(edge)] = index
    problems += _fan_in_problems(incoming, positions)
    found = Parts.of(spec, known, outgoing, problems)
    if found.part_of:  # an edge between a part and the rest is refused above; the checks below go without it
        incoming = defaultdict(list, {n: [e for e in es if found.same(e)] for n, es in incoming.items()})
        outgoing = defaultdict(list, {n: [e for e in es if found.same(e)] for n, es in outgoing.items()})
        problems += found.crossings(spec, positions)
    main = [n for n in ids if n not in found.part_of]
    entry = _endpoint(spec, main, known, incoming, "input", problems)
    exit_ = _endpoint(spec, main, known, outgoing, "output", problems)
    order = _topological(main, incoming, outgoing)
    if order is None:
        looped = _on_cycles(main, incoming, outgoing)
        problems.append(_problem("cycle", f"the graph has a cycle through {listing(looped)}", "edges"))
    if entry and exit_ and order is not None:
        problems += _reachability(spec, set(main), entry, exit_, incoming, outgoing)
    parts: dict[str, FlowGraph] = {}
    for root, members in found.members.items():
        part = _part(spec, root, members, found.names[root], incoming, outgoing, problems)
        if part is not None:
            parts[root] = part
    if problems or entry is None or exit_ is None or order is None:
        return None, problems
    graph = FlowGraph(
        entry=entry,
        exit=exit_,
        order=tuple(order),
        incoming={n: tuple(incoming[n]) for n in ids},
        outgoing={n: tuple(outgoing[n]) for n in ids},
        parts=parts,
        controls=found.controls,
    )
    return graph, []


def _part(
    spec: FlowSpec,
    root: str,
    members: list[str],
    name: str,
    incoming: dict[str, list[EdgeSpec]],
    outgoing: dict[str, list[EdgeSpec]],
    problems: list[Problem],
) -> FlowGraph | None:
    """The graph of the part ``root`` starts: its exit is its only node without outgoing edges."""
    index = {node.id: i for i, node in enumerate(spec.nodes)}
    exits = [n for n in members if not outgoing[n]]
    order = _topological(members, incoming, outgoing)
    if order is None:
        looped = _on_cycles(members, incoming, outgoing)
        problems.append(_problem("cycle", f"{name} has a cycle through {listing(looped)}", "nodes", index[root]))
        return None
    if len(exits) != 1:
        message = f"{name} ends in {len(exits)} nodes ({', '.join(exits)}); a part gives one value: join them"
        problems.append(_problem("several-exits", message, "nodes", index[exits[-1]]))
        return None
    return FlowGraph(
        entry=root,
        exit=exits[0],
        order=tuple(order),
        incoming={n: tuple(incoming[n]) for n in members},
        outgoing={n: tuple(outgoing[n]) for n in members},
    )


def _problem(code: str, message: str, *path: str | int) -> Problem:
    return Problem(code=code, message=message, path=json_path(list(path)))


def _fan_in_problems(incoming: dict[str, list[EdgeSpec]], positions: dict[int, int]) -> list[Problem]:
    problems = []
    for target, edges in incoming.items():
        if len(edges) < 2:
            continue
        keys: set[str] = set()
        for edge in edges:
            index = positions[id(edge)]
            if edge.key is None:
                problems.append(
                    _problem(
                        "missing-edge-key",
                        f"node {target!r} has {len(edges)} inputs, so each edge into it needs a 'key'",
                        "edges",
                        index,
                    )
                )
            elif edge.key in keys:
                problems.append(
                    _problem("duplicate-edge-key", f"two edges into {target!r} use key {edge.key!r}", "edges", index)
                )
            else:
                keys.add(edge.key)
    return problems


def _endpoint(
    spec: FlowSpec,
    ids: list[str],
    known: set[str],
    edges: dict[str, list[EdgeSpec]],
    which: str,
    problems: list[Problem],
) -> str | None:
    """The entry (``which="input"``: no incoming edges) or exit (``"output"``: no outgoing edges) node."""
    named: str | None = getattr(spec, which)
    role = "entry" if which == "input" else "exit"
    free = [n for n in ids if not edges[n]]
    if named is not None:
        if named not in known:
            problems.append(_problem(f"unknown-{which}", f"{which} names {named!r}, which is not a node", which))
            return None
        if edges[named]:
            side = "incoming" if which == "input" else "outgoing"
            problems.append(_problem(f"bad-{which}", f"the {role} node {named!r} must have no {side} edges", which))
            return None
        return named
    if len(free) == 1:
        return free[0]
    if not free:
        problems.append(
            _problem(f"no-{role}", f"no node can be the {role}: every node has edges on that side", "edges")
        )
    else:
        problems.append(
            _problem(
                f"several-{role}s",
                f"{len(free)} nodes could be the {role} ({', '.join(free)}); connect them or name one as '{which}'",
                "nodes",
            )
        )
    return None


def _topological(
    ids: list[str], incoming: dict[str, list[EdgeSpec]], outgoing: dict[str, list[EdgeSpec]]
) -> list[str] | None:
    """Kahn's algorithm, stable in document order; None when there is a cycle."""
    pending = {n: len(incoming[n]) for n in ids}
    ready = deque(n for n in ids if pending[n] == 0)
    order: list[str] = []
    while ready:
        node = ready.popleft()
        order.append(node)
        for edge in outgoing[node]:
            pending[edge.target] -= 1
            if pending[edge.target] == 0:
                ready.append(edge.target)
    return order if len(order) == len(ids) else None


def _on_cycles(ids: list[str], incoming: dict[str, list[EdgeSpec]], outgoing: dict[str, list[EdgeSpec]]) -> list[str]:
    """The nodes on a cycle: what is left once every node without inputs, or without outputs, among the nodes left
    is taken away, again and again (Kahn's algorithm from both ends at once, so each edge is looked at twice)."""
    inputs = {n: len(incoming[n]) for n in ids}
    outputs = {n: len(outgoing[n]) for n in ids}
    gone = [n for n in ids if not inputs[n] or not outputs[n]]
    left = set(ids).difference(gone)
    while gone:
        node = gone.pop()
        for edge in outgoing[node]:
            inputs[edge.target] -= 1
            if not inputs[edge.target] and edge.target in left:
                left.discard(edge.target)
                gone.append(edge.target)
        for edge in incoming[node]:
            outputs[edge.source] -= 1
            if not outputs[edge.source] and edge.source in left:
                left.discard(edge.source)
                gone.append(edge.source)
    return [n for n in ids if n in left]


def _reachability(
    spec: FlowSpec,
    ids: set[str],
    entry: str,
    exit_: str,
    incoming: dict[str, list[EdgeSpec]],
    outgoing: dict[str, list[EdgeSpec]],
) -> list[Problem]:
    from_entry = _walk(entry, outgoing, "target")
    to_exit = _walk(exit_, incoming, "source")
    problems = []
    for index, node in enumerate(spec.nodes):
        if node.id not in ids:
            continue
        if node.id not in from_entry:
            problems.append(
                _problem("unreachable", f"node {node.id!r} cannot be reached from {entry!r}", "nodes", index)
            )
        elif node.id not in to_exit:
            problems.append(
                _problem("dead-end", f"node {node.id!r} does not lead to the exit {exit_!r}", "nodes", index)
            )
    return problems


def _walk(start: str, edges: dict[str, list[EdgeSpec]], end: str) -> set[str]:
    seen = {start}
    stack = [start]
    while stack:
        for edge in edges[stack.pop()]:
            nxt = getattr(edge, end)
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen
