"""Output scores: the numbers or true/false a flow's answer holds, named in the routing file
(``experiments: {flow: {scores: [{key, from: <node>.<field>}]}}``), kept as feedback on the run that gave them."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from gitops_flow.experiments.scores import MAX_SCORE
from gitops_flow.flow.routing import ExperimentRules


def output_scores(rules: ExperimentRules, exit_node: str, output: Any) -> Iterator[tuple[str, float]]:
    """(key, score) for each score of ``rules`` whose node is the flow's output node (``exit_node``, whose output
    is the answer) and whose field the answer holds as a number or true/false (kept as 1 and 0). A field missing,
    of another type, not finite or past MAX_SCORE gives no score for that run: the run is not scored, rather than
    scored wrong."""
    if not isinstance(output, Mapping):
        return
    for rule in rules.scores:
        if rule.node != exit_node:
            continue
        value = output.get(rule.field)
        if isinstance(value, bool):
            yield rule.key, 1.0 if value else 0.0
        elif isinstance(value, int | float) and math.isfinite(value) and abs(value) <= MAX_SCORE:
            yield rule.key, float(value)
