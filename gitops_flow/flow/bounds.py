"""Limits: how many nodes and edges a flow may have, checked before any work whose cost grows with them.

Every check of a flow is near-linear in its size; these limits bound that size, so that one commit cannot make CI,
or the server's reconciler (which builds under its lock), work for minutes. docs/problems.md says why the numbers
are what they are.
"""

from __future__ import annotations

from typing import Any

from gitops_flow.problems import Problem, json_path

MAX_NODES = 5_000  # LangFlow's largest starter projects have about 20 nodes, hand-built flows rarely 200
MAX_EDGES = 20_000  # four per node: fan-out and fan-in graphs have about two


def size_problems(nodes: Any, edges: Any, where: tuple[str, ...] = (), *, what: str = "a flow") -> list[Problem]:
    """``too-many-nodes`` and ``too-many-edges`` for the ``nodes`` and ``edges`` lists found at ``where``
    (``()`` for a flow document, ``("data",)`` for a LangFlow export); values that are not lists are left to the
    schema check. ``what`` names the document in the message."""
    found = []
    for items, name, limit in ((nodes, "nodes", MAX_NODES), (edges, "edges", MAX_EDGES)):
        if isinstance(items, list) and len(items) > limit:
            found.append(
                Problem(
                    code=f"too-many-{name}",
                    message=f"{what} has {len(items):,} {name}; a flow has at most {limit:,}",
                    path=json_path([*where, name]),
                )
            )
    return found
