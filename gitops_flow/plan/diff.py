"""What changed between two versions of a flow document or of the routing file, item by item: nodes, params,
edges, tests, the secrets a flow reads; routes, refs, weights, the canary guard's thresholds, stickiness and session
lifetime, limits and token budgets, the response cache, yanked commits, each value with its unit."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from gitops_flow.flow.document import FlowSpec
from gitops_flow.flow.routing import RouteTarget, RoutingConfig, SegmentMatch, Shadow
from gitops_flow.security.references import env_name, env_refs, masked

Kind = Literal["added", "removed", "changed"]
_VALUE_CHARS = 60


@dataclass(frozen=True, slots=True)
class Change:
    """One item that differs: what it is (``node llm``, ``param llm.temperature``), and how (``0 → 0.7``)."""

    kind: Kind
    what: str
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "what": self.what, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class FlowDiff:
    """A flow's changes by part; empty parts mean nothing changed there."""

    nodes: tuple[Change, ...] = ()
    params: tuple[Change, ...] = ()
    edges: tuple[Change, ...] = ()
    tests: tuple[Change, ...] = ()
    other: tuple[Change, ...] = ()  # description, entry and exit nodes

    def __bool__(self) -> bool:
        return any((self.nodes, self.params, self.edges, self.tests, self.other))

    def counts(self) -> str:
        """``2 nodes, 1 param, 1 test``: how much changed, for a table cell."""
        parts = [
            (len(self.nodes), "node"),
            (len(self.params), "param"),
            (len(self.edges), "edge"),
            (len(self.tests), "test"),
            (len(self.other), "setting"),
        ]
        return ", ".join(f"{n} {noun}{'s' if n != 1 else ''}" for n, noun in parts if n) or "no change to the graph"

    def as_dict(self) -> dict[str, list[dict[str, str]]]:
        return {
            part: [c.as_dict() for c in getattr(self, part)] for part in ("nodes", "params", "edges", "tests", "other")
        }


def flow_diff(old: FlowSpec, new: FlowSpec) -> FlowDiff:
    """The changes from ``old`` to ``new`` (the same flow at the base and now)."""
    old_nodes = {n.id: n for n in old.nodes}
    new_nodes = {n.id: n for n in new.nodes}
    nodes: list[Change] = []
    params: list[Change] = []
    for node_id in _ordered(old_nodes, new_nodes):
        before, after = old_nodes.get(node_id), new_nodes.get(node_id)
        if before is None and after is not None:
            nodes.append(Change("added", f"node {node_id}", after.component))
        elif after is None and before is not None:
            nodes.append(Change("removed", f"node {node_id}", before.component))
        elif before is not None and after is not None:
            if before.component != after.component:
                nodes.append(Change("changed", f"node {node_id}", f"{before.component} → {after.component}"))
            # masked with their keys, so a literal key in a pull request never reaches the plan's comment
            params += _mapping_changes(f"param {node_id}.", masked(before.params), masked(after.params))
    edge_sets: tuple[tuple[Kind, set[tuple[str, str, str | None]]], ...] = (
        ("removed", _edges(old) - _edges(new)),
        ("added", _edges(new) - _edges(old)),
    )
    edges = [
        Change(kind, f"edge {_edge(edge)}")
        for kind, edge_set in edge_sets
        for edge in sorted(edge_set, key=lambda e: (e[0], e[1], e[2] or ""))
    ]
    old_tests = {t.name: t for t in old.tests}
    new_tests = {t.name: t for t in new.tests}
    tests: list[Change] = []
    for name in _ordered(old_tests, new_tests):
        before_test, after_test = old_tests.get(name), new_tests.get(name)
        if before_test is None:
            tests.append(Change("added", f"test {name!r}"))
        elif after_test is None:
            tests.append(Change("removed", f"test {name!r}"))
        elif before_test != after_test:
            tests.append(Change("changed", f"test {name!r}"))
    other = [
        Change("changed", key, f"{_show(getattr(old, key))} → {_show(getattr(new, key))}")
        for key in ("description", "input", "output")
        if getattr(old, key) != getattr(new, key)
    ]
    return FlowDiff(tuple(nodes), tuple(params), tuple(edges), tuple(tests), tuple(other))


def secrets(spec: FlowSpec) -> list[str]:
    """The environment variables a flow reads (its ``$env`` references), sorted."""
    names = {env_name(ref) for node in spec.nodes for _, ref in env_refs(node.params)}
    return sorted(name for name in names if name)


def routing_diff(old: RoutingConfig | None, new: RoutingConfig | None) -> list[Change]:
    """What a routing change does: routes and their refs and weights, stickiness, the canary guard, yanked
    commits. A missing file is the default: the branch head serves everything."""
    before, after = old or RoutingConfig(), new or RoutingConfig()
    found: list[Change] = []
    for route in _ordered(before.routes, after.routes):
        old_targets = {t.ref: t.weight for t in before.routes.get(route, []) if t.match is None}
        new_targets = {t.ref: t.weight for t in after.routes.get(route, []) if t.match is None}
        found += _segment_changes(route, before.routes.get(route, []), after.routes.get(route, []))
        found += _shadow_changes(route, before.routes.get(route, []), after.routes.get(route, []))
        found += _step_changes(route, before.routes.get(route, []), after.routes.get(route, []))
        if route not in before.routes:
            found.append(Change("added", f"route {route}", _targets(new_targets)))
        elif route not in after.routes:
            found.append(Change("removed", f"route {route}", _targets(old_targets)))
        else:
            for ref in _ordered(old_targets, new_targets):
                if ref not in old_targets:
                    found.append(Change("added", f"route {route}: ref {ref}", f"weight {new_targets[ref]:g}"))
                elif ref not in new_targets:
                    found.append(Change("removed", f"route {route}: ref {ref}", f"weight {old_targets[ref]:g}"))
                elif old_targets[ref] != new_targets[ref]:
                    found.append(
                        Change(
                            "changed", f"route {route}: weight of {ref}", f"{old_targets[ref]:g} → {new_targets[ref]:g}"
                        )
                    )
            if list(old_targets) != list(new_targets) and set(old_targets) == set(new_targets):
                found.append(
                    Change("changed", f"route {route}: order", f"{_targets(old_targets)} → {_targets(new_targets)}")
                )
    old_analysis = _units(before.analysis.model_dump()) if before.analysis else None
    new_analysis = _units(after.analysis.model_dump()) if after.analysis else None
    if old_analysis is None and new_analysis is not None:
        found.append(Change("added", "analysis", "the canary guard is on: " + _fields(new_analysis)))
    elif new_analysis is None and old_analysis is not None:
        found.append(Change("removed", "analysis", "the canary guard is off"))
    elif old_analysis is not None and new_analysis is not None:
        found += _unit_changes("analysis ", old_analysis, new_analysis)
    found += _unit_changes(
        "",
        _units({k: getattr(before, k) for k in ("sticky", "session_ttl", "flows_dir")}),
        _units({k: getattr(after, k) for k in ("sticky", "session_ttl", "flows_dir")}),
    )
    # limits and token budgets (a flow's, its users', each ref's) and the response cache, setting by setting
    for part in ("limits", "cache"):
        old_part = {name: rule.model_dump(exclude_none=True) for name, rule in getattr(before, part).items()}
        new_part = {name: rule.model_dump(exclude_none=True) for name, rule in getattr(after, part).items()}
        for name in _ordered(old_part, new_part):
            if name not in old_part:
                found.append(Change("added", f"{part} {name}", _fields(_units(_flat(new_part[name]))) or "(none)"))
            elif name not in new_part:
                found.append(Change("removed", f"{part} {name}", _fields(_units(_flat(old_part[name]))) or "(none)"))
            else:
                found += _unit_changes(f"{part} {name}: ", _units(_flat(old_part[name])), _units(_flat(new_part[name])))
    found += [Change("added", "yanked", sha) for sha in after.yanked if sha not in before.yanked]
    found += [Change("removed", "yanked", sha) for sha in before.yanked if sha not in after.yanked]
    return found


def _keyed_changes(before: Mapping[Any, str], after: Mapping[Any, str], what: Callable[[Any], str]) -> list[Change]:
    """Entries added, removed or shown otherwise between two mappings of shown entries, each named by ``what``."""
    found = []
    for key in dict.fromkeys([*before, *after]):
        if key not in before:
            found.append(Change("added", what(key), after[key]))
        elif key not in after:
            found.append(Change("removed", what(key), before[key]))
        elif before[key] != after[key]:
            found.append(Change("changed", what(key), f"{before[key]} → {after[key]}"))
    return found


def _segment_changes(route: str, old: Sequence[RouteTarget], new: Sequence[RouteTarget]) -> list[Change]:
    """Segments added, removed or matching other requests: ``route support-bot: segment vip``, ``X-Flow-Segment in
    [vip]``. A route whose segments are unchanged shows none (``plan`` shows every segment of a new route)."""
    before = {(t.ref, t.match.header): _segment(t.match) for t in old if t.match is not None}
    after = {(t.ref, t.match.header): _segment(t.match) for t in new if t.match is not None}
    return _keyed_changes(before, after, lambda key: f"route {route}: segment {key[0]}")


def _shadow_changes(route: str, old: Sequence[RouteTarget], new: Sequence[RouteTarget]) -> list[Change]:
    """Shadows added, removed or changed: ``route support-bot: stable shadowed by candidate``, ``10% scored by
    exact, at most 5 runs/s``."""
    before = {(t.ref, s.ref): _shadow(s) for t in old for s in t.shadow}
    after = {(t.ref, s.ref): _shadow(s) for t in new for s in t.shadow}
    return _keyed_changes(before, after, lambda key: f"route {route}: {key[0]} shadowed by {key[1]}")


def _shadow(shadow: Shadow) -> str:
    budget = shadow.budget
    tokens = f", {budget.tokens:,} tokens per {budget.window:g} s" if budget.tokens is not None else ""
    return f"{shadow.share:g}% scored by {shadow.scorer}, at most {budget.requests_per_second:g} runs/s{tokens}"


def _step_changes(route: str, old: Sequence[RouteTarget], new: Sequence[RouteTarget]) -> list[Change]:
    """Progressive canaries added, removed or stepping otherwise: ``route support-bot: steps of canary``,
    ``10 → 50 → 100 %, each step held at least 300 s while the analysis holds``."""
    before = {t.ref: rollout_text(t) for t in old if t.steps is not None}
    after = {t.ref: rollout_text(t) for t in new if t.steps is not None}
    return _keyed_changes(before, after, lambda ref: f"route {route}: steps of {ref}")


def rollout_text(target: RouteTarget) -> str:
    """A progressive canary's steps for people: ``10 → 50 → 100 %, each step held at least 300 s while the analysis
    holds`` (the analysis window when the entry gives no interval)."""
    shares = " → ".join(f"{share:g}" for share in target.steps or ())
    held = f"{target.interval:g} s" if target.interval is not None else "the analysis window"
    return f"{shares} %, each step held at least {held} while the analysis holds"


def _segment(match: SegmentMatch) -> str:
    shown = ", ".join(match.values[:10]) + (f", … ({len(match.values)} values)" if len(match.values) > 10 else "")
    header = {"x-flow-segment": "X-Flow-Segment", "x-flow-user": "X-Flow-User"}[match.header]
    return f"{header} in [{shown}]"


_UNITS = {  # the unit each setting of the routing file is read in, for the plan to say
    "window": "s",
    "session_ttl": "s",
    "ttl": "s",
    "max_p99_ms": "ms",
    "requests_per_second": "requests/s",
    "concurrent": "runs at once",
    "budget": "tokens",
    "min_requests": "requests",
    "max_failures": "failures",
}


def _units(values: Mapping[str, Any]) -> dict[str, str]:
    """Each value as the plan shows it, with its unit: ``window`` 60.0 -> ``60 s``, ``max_error_rate`` 0.05 ->
    ``5 %``, ``tokens.budget`` 1000 -> ``1,000 tokens``."""
    shown = {}
    for key, value in values.items():
        last = key.rpartition(".")[2]
        if last == "max_error_rate" and isinstance(value, int | float):
            shown[key] = f"{100 * value:g} %"
        elif last in _UNITS and isinstance(value, int | float) and not isinstance(value, bool):
            shown[key] = f"{value:,g} {_UNITS[last]}"
        else:
            shown[key] = _show(value)
    return shown


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as dotted keys (``tokens.budget``), lists kept whole."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _unit_changes(prefix: str, old: Mapping[str, str], new: Mapping[str, str]) -> list[Change]:
    """Changes between two mappings of values already shown with their units."""
    found = []
    for key in _ordered(old, new):
        if key not in old:
            found.append(Change("added", f"{prefix}{key}", new[key]))
        elif key not in new:
            found.append(Change("removed", f"{prefix}{key}", old[key]))
        elif old[key] != new[key]:
            found.append(Change("changed", f"{prefix}{key}", f"{old[key]} → {new[key]}"))
    return found


def _mapping_changes(prefix: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    found = []
    for key in _ordered(old, new):
        if key not in old:
            found.append(Change("added", f"{prefix}{key}", _show(new[key])))
        elif key not in new:
            found.append(Change("removed", f"{prefix}{key}", _show(old[key])))
        elif old[key] != new[key]:
            found.append(Change("changed", f"{prefix}{key}", _compare(old[key], new[key])))
    return found


def _compare(old: Any, new: Any) -> str:
    """``old → new``; for long values, the part of each that differs, with a little context and where it starts
    (cutting both to their first characters would show the same text twice)."""
    first, second = _json(old), _json(new)
    if max(len(first), len(second)) <= _VALUE_CHARS or env_name(old) is not None or env_name(new) is not None:
        return f"{_show(old)} → {_show(new)}"
    start = 0
    while start < min(len(first), len(second)) and first[start] == second[start]:
        start += 1
    end = 0
    while end < min(len(first), len(second)) - start and first[-1 - end] == second[-1 - end]:
        end += 1
    where = f" (from character {start + 1}; {len(first)} → {len(second)} characters)"
    return f"{_excerpt(first, start, len(first) - end)} → {_excerpt(second, start, len(second) - end)}{where}"


_CONTEXT = 12  # characters shown before and after the part of a long value that differs


def _excerpt(text: str, start: int, stop: int) -> str:
    """``text[start:stop]`` (the differing part) with _CONTEXT characters around it, at most _VALUE_CHARS long."""
    low, high = max(0, start - _CONTEXT), min(len(text), stop + _CONTEXT)
    piece = text[low:high]
    if len(piece) > _VALUE_CHARS:
        piece, high = piece[: _VALUE_CHARS - 1] + "…", low + _VALUE_CHARS - 1
    return ("…" if low > 0 else "") + piece + ("…" if high < len(text) and not piece.endswith("…") else "")


def _show(value: Any) -> str:
    """A value as it reads in a plan: a secret reference by its variable, long text cut."""
    name = env_name(value)
    if name is not None:
        return f"$env:{name}"
    text = _json(value)
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 1] + "…"


def _json(value: Any) -> str:
    return orjson.dumps(value).decode() if not isinstance(value, str) else repr(value)


def _ordered(first: Iterable[str], second: Iterable[str]) -> list[str]:
    """Keys of both, in the order they appear (the old order, then what is new)."""
    return list(dict.fromkeys([*first, *second]))


def _edges(spec: FlowSpec) -> set[tuple[str, str, str | None]]:
    return {(e.source, e.target, e.key) for e in spec.edges}


def _edge(edge: tuple[str, str, str | None]) -> str:
    return f"{edge[0]} → {edge[1]}" + (f" ({edge[2]})" if edge[2] else "")


def _targets(targets: Mapping[str, float]) -> str:
    return ", ".join(f"{ref} {weight:g}" for ref, weight in targets.items())


def _fields(values: Mapping[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in values.items())
