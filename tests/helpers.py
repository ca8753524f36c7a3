"""Factories shared by the tests: flow documents as dicts, registries with test components."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.runnables import Runnable, RunnableLambda

from gitops_flow.components.base import Component
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.flow.document import FlowSpec


def node(node_id: str, component: str, **params: Any) -> dict[str, Any]:
    return {"id": node_id, "component": component, "params": params}


def edge(source: str, target: str, key: str | None = None) -> dict[str, Any]:
    return {"source": source, "target": target, **({"key": key} if key else {})}


def flow(
    name: str = "demo", *, nodes: list[dict[str, Any]], edges: list[dict[str, Any]] = (), **extra: Any
) -> dict[str, Any]:  # type: ignore[assignment]
    return {"version": 1, "name": name, "nodes": nodes, "edges": list(edges), **extra}


def spec(**kwargs: Any) -> FlowSpec:
    return FlowSpec.model_validate(flow(**kwargs))


def chain(*components: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    """A linear flow from (id, component, params) triples."""
    nodes = [node(i, c, **p) for i, c, p in components]
    edges = [edge(a["id"], b["id"]) for a, b in zip(nodes, nodes[1:], strict=False)]
    return flow(nodes=nodes, edges=edges)


class Calls:
    """A test component whose runs are counted and whose output is computed by ``fn``."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def component(self, name: str, fn: Callable[[Any], Any]) -> Component:
        def factory(*, label: str = name) -> Runnable[Any, Any]:
            def run(value: Any) -> Any:
                self.seen.append((label, value))
                return fn(value)

            return RunnableLambda(run)

        return Component(name, factory, "transform", "test component")


def registry_with(*components: Component) -> ComponentRegistry:
    return ComponentRegistry.builtin().extended(components)
