"""The flow page's charts (console/charts.py): one line per version and ref, a gap where a minute had no p99, the
busiest MAX_SERIES only, and every text escaped (a ref name is the repository's, not the server's)."""

from __future__ import annotations

from gitops_flow.console.charts import MAX_SERIES, draw
from gitops_flow.console.traffic import Point


def _points(requests: list[int]) -> list[Point]:
    return [Point(n, r, r // 4, 12.0 * r if r else None) for n, r in enumerate(requests)]


def test_nothing_served_draws_nothing() -> None:
    assert draw({}).charts == ()


def test_a_minute_without_requests_breaks_the_p99_line_but_not_the_counts() -> None:
    drawn = draw({("a" * 40, "main"): _points([3, 4, 0, 5, 6])})
    requests, errors, p99 = (c.svg for c in drawn.charts)
    assert requests.count("<polyline") == 1 and p99.count("<polyline") == 2
    assert [c.title for c in drawn.charts] == ["requests a minute", "errors a minute", "p99, ms"]
    assert [(entry.sha, entry.ref) for entry in drawn.legend] == [("a" * 12, "main")]


def test_the_busiest_series_are_drawn_and_every_text_is_escaped() -> None:
    series = {(f"{n:040x}", f"r<{n}>"): _points([n + 1] * 3) for n in range(MAX_SERIES + 3)}
    drawn = draw(series)
    assert len(drawn.legend) == MAX_SERIES
    assert {entry.ref for entry in drawn.legend} == {f"r<{n}>" for n in range(3, MAX_SERIES + 3)}
    assert all("<script" not in c.svg and "r<" not in c.svg for c in drawn.charts)
