"""The difference between two versions of a flow document: its fields, nodes (component and each param), edges and
tests, as a reviewer reads a pull request. Params are shown through display.py, so no credential is printed."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gitops_flow.console.display import masked, shown
from gitops_flow.flow.document import EdgeSpec, FlowSpec, FlowTest, NodeSpec

Status = Literal["added", "removed", "changed"]
_FIELDS = ("description", "input", "output")
_TEST_FIELDS = ("input", "fakes", "session", "expect")


@dataclass(frozen=True, slots=True)
class Change:
    """One value that differs: where, and what it was and is (None: absent on that side)."""

    path: str
    before: str | None
    after: str | None

    @property
    def status(self) -> Status:
        return "added" if self.before is None else "removed" if self.after is None else "changed"


@dataclass(frozen=True, slots=True)
class NodeDiff:
    """A node added, removed or changed, with its component on each side and each param that differs."""

    id: str
    status: Status
    component_before: str | None
    component_after: str | None
    params: tuple[Change, ...]


@dataclass(frozen=True, slots=True)
class TestDiff:
    """A test case added, removed or changed, by name, with the parts of it that differ."""

    name: str
    status: Status
    changes: tuple[Change, ...]


@dataclass(frozen=True, slots=True)
class FlowDiff:
    """Everything that differs between two versions of one flow (``before`` None: the flow is new, and so on)."""

    fields: tuple[Change, ...]
    nodes: tuple[NodeDiff, ...]
    edges_added: tuple[str, ...]
    edges_removed: tuple[str, ...]
    tests: tuple[TestDiff, ...]

    @property
    def empty(self) -> bool:
        return not (self.fields or self.nodes or self.edges_added or self.edges_removed or self.tests)


Scrub = Callable[[Any], Any]


def compare(before: FlowSpec | None, after: FlowSpec | None, scrub: Scrub = lambda value: value) -> FlowDiff:
    """What changed from ``before`` to ``after``; either may be None (a flow added or deleted)."""
    fields = tuple(
        change
        for name in _FIELDS
        if (change := _change(name, _field(before, name), _field(after, name), scrub)) is not None
    )
    old_nodes = _by_id(before.nodes if before else [])
    new_nodes = _by_id(after.nodes if after else [])
    nodes = []
    for node_id in [*old_nodes, *(n for n in new_nodes if n not in old_nodes)]:
        node = _node_diff(node_id, old_nodes.get(node_id), new_nodes.get(node_id), scrub)
        if node is not None:
            nodes.append(node)
    old_edges, new_edges = _edges(before), _edges(after)
    old_tests = {t.name: t for t in (before.tests if before else [])}
    new_tests = {t.name: t for t in (after.tests if after else [])}
    tests = []
    for name in [*old_tests, *(n for n in new_tests if n not in old_tests)]:
        test = _test_diff(name, old_tests.get(name), new_tests.get(name), scrub)
        if test is not None:
            tests.append(test)
    return FlowDiff(
        fields=fields,
        nodes=tuple(nodes),
        edges_added=tuple(e for e in new_edges if e not in old_edges),
        edges_removed=tuple(e for e in old_edges if e not in new_edges),
        tests=tuple(tests),
    )


def _field(spec: FlowSpec | None, name: str) -> Any:
    value = getattr(spec, name) if spec is not None else None
    return value if value not in ("", None) else None


def _change(path: str, old: Any, new: Any, scrub: Scrub) -> Change | None:
    if old == new:
        return None
    return Change(
        path,
        None if old is None else shown(old, scrub),
        None if new is None else shown(new, scrub),
    )


def _by_id(nodes: list[NodeSpec]) -> dict[str, NodeSpec]:
    found: dict[str, NodeSpec] = {}
    for node in nodes:
        found.setdefault(node.id, node)
    return found


def _node_diff(node_id: str, old: NodeSpec | None, new: NodeSpec | None, scrub: Scrub) -> NodeDiff | None:
    status: Status = "added" if old is None else "removed" if new is None else "changed"
    old_params: Mapping[str, Any] = old.params if old is not None else {}
    new_params: Mapping[str, Any] = new.params if new is not None else {}
    params = [
        change
        for key in [*old_params, *(k for k in new_params if k not in old_params)]
        if (change := _param(key, old_params, new_params, scrub)) is not None
    ]
    if old is not None and new is not None and old.description != new.description:
        params.append(Change("description", shown(old.description), shown(new.description)))
    if status == "changed" and not params and old is not None and new is not None and old.component == new.component:
        return None
    return NodeDiff(
        node_id,
        status,
        old.component if old is not None else None,
        new.component if new is not None else None,
        tuple(params),
    )


def _param(key: str, old: Mapping[str, Any], new: Mapping[str, Any], scrub: Scrub) -> Change | None:
    if key in old and key in new and old[key] == new[key]:
        return None
    before = param_text(key, old[key], scrub) if key in old else None
    after = param_text(key, new[key], scrub) if key in new else None
    return Change(f"params.{key}", before, after)


def param_text(key: str, value: Any, scrub: Scrub = lambda v: v) -> str:
    """A param's value as shown: masked with its key, so a literal under a key named like a credential is hidden."""
    return shown(masked({key: value})[key], scrub)


def _edges(spec: FlowSpec | None) -> list[str]:
    return list(dict.fromkeys(_edge(e) for e in (spec.edges if spec else [])))


def _edge(edge: EdgeSpec) -> str:
    return f"{edge.source} → {edge.target}" + (f" as {edge.key}" if edge.key else "")


def _test_diff(name: str, old: FlowTest | None, new: FlowTest | None, scrub: Scrub) -> TestDiff | None:
    if old is None or new is None:
        return TestDiff(name, "added" if old is None else "removed", ())
    changes = []
    for part in _TEST_FIELDS:
        before = _test_part(old, part)
        after = _test_part(new, part)
        change = _change(part, before, after, scrub)
        if change is not None:
            changes.append(change)
    return TestDiff(name, "changed", tuple(changes)) if changes else None


def _test_part(test: FlowTest, part: str) -> Any:
    if part == "expect":
        return test.expect.model_dump(exclude_unset=True)
    value = getattr(test, part)
    return value if value not in ({}, None) else None
