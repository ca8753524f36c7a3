"""Small time-series charts of a flow's last hour, as SVG made on the server: requests, errors and p99 per minute,
one line per version and ref (traffic.py's history, every worker's and replica's), so the page needs no script, no
library and no CDN to show them.

Each chart is a fixed-size SVG with its own scale (0 to the hour's maximum), an axis label at the top and the hour's
ends at the bottom; a line per series in one of a few colours (presentation attributes, which a strict
Content-Security-Policy allows), and a legend naming each series' short sha and ref. At most MAX_SERIES series are
drawn (those with the most requests); a minute without requests is a gap in the p99 line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape

from gitops_flow.console.traffic import Point

MAX_SERIES = 8
WIDTH, HEIGHT = 320.0, 96.0
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 34.0, 6.0, 14.0, 14.0
COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777")

Series = Mapping[tuple[str, str | None], Sequence[Point]]


@dataclass(frozen=True, slots=True)
class Legend:
    """One series as the legend names it: its colour, short sha and ref."""

    colour: str
    sha: str
    ref: str


@dataclass(frozen=True, slots=True)
class Chart:
    """One drawn chart: its title (with its unit) and its SVG."""

    title: str
    svg: str


@dataclass(frozen=True, slots=True)
class Charts:
    """The flow page's three charts and their shared legend; empty when nothing served in the hour."""

    charts: tuple[Chart, ...]
    legend: tuple[Legend, ...]


def draw(series: Series) -> Charts:
    """Requests, errors (per minute) and p99 (ms) of each series, the busiest MAX_SERIES of them."""
    busiest = sorted(series.items(), key=lambda item: (-sum(p.requests for p in item[1]), item[0][0], item[0][1] or ""))
    chosen = [(COLOURS[n % len(COLOURS)], key, points) for n, (key, points) in enumerate(busiest[:MAX_SERIES])]
    if not chosen:
        return Charts((), ())
    measures: tuple[tuple[str, Callable[[Point], float | None]], ...] = (
        ("requests a minute", lambda p: float(p.requests)),
        ("errors a minute", lambda p: float(p.errors)),
        ("p99, ms", lambda p: p.p99_ms),
    )
    charts = tuple(
        Chart(title, _svg(title, [(c, [value(p) for p in pts]) for c, _, pts in chosen])) for title, value in measures
    )
    legend = tuple(Legend(colour, sha[:12], ref or "(pinned)") for colour, (sha, ref), _ in chosen)
    return Charts(charts, legend)


def _svg(title: str, lines: list[tuple[str, list[float | None]]]) -> str:
    top = max((v for _, values in lines for v in values if v is not None), default=0.0)
    scale = top if top > 0 else 1.0
    count = max(len(values) for _, values in lines)
    inner_w, inner_h = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM
    step = inner_w / max(count - 1, 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH:.0f} {HEIGHT:.0f}" '
        f'width="{WIDTH:.0f}" height="{HEIGHT:.0f}" role="img" aria-label="{escape(title)}, the last hour">',
        f'<text x="{PAD_LEFT:.0f}" y="10" font-size="10" fill="currentColor">{escape(title)}</text>',
        f'<text x="{PAD_LEFT - 4:.0f}" y="{PAD_TOP + 4:.0f}" font-size="9" text-anchor="end" '
        f'fill="currentColor">{escape(_number(top))}</text>',
        f'<text x="{PAD_LEFT - 4:.0f}" y="{PAD_TOP + inner_h:.0f}" font-size="9" text-anchor="end" '
        'fill="currentColor">0</text>',
        f'<line x1="{PAD_LEFT:.0f}" y1="{PAD_TOP + inner_h:.1f}" x2="{WIDTH - PAD_RIGHT:.0f}" '
        f'y2="{PAD_TOP + inner_h:.1f}" stroke="#9ca3af" stroke-width="1"/>',
        f'<text x="{PAD_LEFT:.0f}" y="{HEIGHT - 2:.0f}" font-size="9" fill="currentColor">-60 min</text>',
        f'<text x="{WIDTH - PAD_RIGHT:.0f}" y="{HEIGHT - 2:.0f}" font-size="9" text-anchor="end" '
        'fill="currentColor">now</text>',
    ]
    for colour, values in lines:
        for run in _runs(values):
            points = " ".join(
                f"{PAD_LEFT + i * step:.1f},{PAD_TOP + inner_h - inner_h * v / scale:.1f}" for i, v in run
            )
            if len(run) == 1:
                i, v = run[0]
                parts.append(
                    f'<circle cx="{PAD_LEFT + i * step:.1f}" cy="{PAD_TOP + inner_h - inner_h * v / scale:.1f}" '
                    f'r="1.5" fill="{colour}"/>'
                )
            else:
                parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
    parts.append("</svg>")
    return "".join(parts)


def _runs(values: list[float | None]) -> list[list[tuple[int, float]]]:
    """The stretches of consecutive known values (a None breaks the line)."""
    runs: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = []
    for index, value in enumerate(values):
        if value is None:
            if current:
                runs.append(current)
            current = []
        else:
            current.append((index, value))
    if current:
        runs.append(current)
    return runs


def _number(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"
