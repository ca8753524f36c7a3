"""What a flow's answer gives as output scores (experiments/outputs.py), and the report cache's bound on making
reports (experiments/report_cache.py): focused cases beside tests/test_experiment_sources.py's real server."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from gitops_flow.experiments.outputs import output_scores
from gitops_flow.experiments.report_cache import ReportCache
from gitops_flow.flow.routing import ExperimentRules

RULES = ExperimentRules.model_validate({"scores": [{"key": "k", "from": "out.v"}, {"key": "early", "from": "x.v"}]})


@pytest.mark.parametrize(
    ("output", "scores"),
    [
        ({"v": True}, [("k", 1.0)]),
        ({"v": False}, [("k", 0.0)]),
        ({"v": 3}, [("k", 3.0)]),
        ({"v": -0.25}, [("k", -0.25)]),
        ({"v": "yes"}, []),
        ({"v": None}, []),
        ({"v": math.nan}, []),
        ({"v": math.inf}, []),
        ({"v": 1e12}, []),
        ({"other": 1}, []),
        ("text", []),
        ([{"v": 1}], []),
    ],
    ids=["true", "false", "int", "float", "text", "null", "nan", "inf", "too-big", "missing", "not-object", "list"],
)
def test_a_field_of_the_answer_is_a_score_only_when_it_is_a_number_or_true_false(
    output: Any, scores: list[tuple[str, float]]
) -> None:
    assert list(output_scores(RULES, "out", output)) == scores  # "x" is not the output node: never read


@pytest.mark.anyio
async def test_reads_at_once_make_one_report_and_a_new_stamp_makes_another() -> None:
    now = [0.0]
    cache = ReportCache(5.0, clock=lambda: now[0])
    made = 0

    async def make() -> dict[str, Any]:
        nonlocal made
        made += 1
        await asyncio.sleep(0.01)
        return {"n": made}

    first = await asyncio.gather(*(cache.get("bot", ("a", 0), make) for _ in range(10)))
    assert made == 1 and all(r == {"n": 1} for r in first)
    assert await cache.get("bot", ("a", 1), make) == {"n": 2}  # new feedback: a new report
    now[0] = 5.0
    assert await cache.get("bot", ("a", 1), make) == {"n": 3}  # past its seconds
    assert await ReportCache(0.0).get("bot", ("a", 1), make) == {"n": 4}  # 0: never kept
