"""`gitops-flow status`: the console's overview as text for a terminal, from the server's /ui/overview.json."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gitops_flow.console.display import coverage_text

_COLUMNS = ("FLOW / REF", "COMMIT", "WEIGHT", "SHARE", "REQ/S", "ERRORS", "P50", "P99", "STATE")
_WIDTHS = (22, 12, 6, 7, 8, 7, 8, 8, 0)
_RIGHT = {2, 3, 4, 5, 6, 7}


def render(body: Mapping[str, Any], *, now: float, server: str) -> str:
    """The overview ``body`` as lines of text; ``now`` is when "fetched 12 s ago" is counted from."""
    source = body["source"]
    head = source.get("head")
    lines = [
        f"{source['url']} ({source['branch']}): head "
        + (f"{head[:12]} {source.get('head_summary') or ''}".rstrip() if head else "none")
        + f", fetched {_ago(source.get('last_fetch'), now)}"
    ]
    if source.get("building"):
        lines.append(f"  building {source['building'][:12]}")
    for alert in body.get("alerts", []):
        if alert["level"] != "info":
            lines.append(f"{'!' if alert['level'] == 'error' else '~'} {alert['text']}")
    traffic = body.get("traffic") or {}
    window = float(traffic.get("window_seconds", body.get("window_seconds", 300)))
    lines += [
        "",
        f"traffic: {coverage_text(window, int(traffic.get('processes', 1)), int(traffic.get('replicas', 1)))}",
    ]
    lines += [_row(_COLUMNS)]
    for flow in body.get("flows", []):
        lines.append(f"{flow['name']:<22} {flow['state']}: {flow['summary']}")
        for problem in flow.get("problems", []):
            place = f"{problem.get('file') or '<flow>'}:{problem.get('line') or ''}".rstrip(":")
            lines.append(f"    {place} {problem.get('code')} {problem.get('message')}")
        for ref in flow.get("refs", []):
            figures = ref.get("figures") or {}
            state = ref["state"] + (f": {ref['reason']}" if ref.get("reason") else "")
            lines.append(
                _row(
                    (
                        "  " + ref["ref"] + (" (canary)" if ref.get("canary") else ""),
                        (ref.get("serving") or "-")[:12],
                        f"{ref['weight']:g} %",
                        _pct(ref.get("share")),
                        _rate(figures.get("rate")) if figures else "-",
                        _pct(100 * figures["error_rate"]) if figures else "-",
                        _ms(figures.get("p50_ms")),
                        _ms(figures.get("p99_ms")),
                        state,
                    )
                )
            )
            lines += progress_lines(ref.get("progress"), now)
        for other in flow.get("others", []):
            figures = other.get("figures") or {}
            lines.append(
                _row(
                    (
                        "  " + (other.get("ref") or "(pinned)"),
                        other["sha"][:12],
                        "",
                        "",
                        _rate(figures.get("rate")),
                        _pct(100 * figures.get("error_rate", 0.0)),
                        _ms(figures.get("p50_ms")),
                        _ms(figures.get("p99_ms")),
                        "an earlier build",
                    )
                )
            )
    if not body.get("flows"):
        lines.append("(no flow is served yet)")
    lines.append("")
    lines.append("requests, errors, p50 and p99: every worker's and replica's, as above; weight: the routing file's")
    pending = int(body.get("pending") or 0)
    if pending:
        lines.append(f"{pending} thing{'s' if pending != 1 else ''} not live yet: {server.rstrip('/')}/ui/pending")
    return "\n".join(line.rstrip() for line in lines)


def _row(cells: tuple[str, ...]) -> str:
    parts = []
    for index, (cell, width) in enumerate(zip(cells, _WIDTHS, strict=True)):
        parts.append(cell.rjust(width) if index in _RIGHT else cell.ljust(width))
    return " ".join(parts)


def _ago(then: float | None, now: float) -> str:
    if then is None:
        return "never"
    seconds = max(0, int(now - then))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} %"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}/s"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def progress_lines(progress: Mapping[str, Any] | None, now: float) -> list[str]:
    """A progressive canary's step, and at its last step of 100 % the git command that makes it durable."""
    if not progress:
        return []
    shares = ", ".join(f"{share:g}" for share in progress.get("steps", []))
    line = f"    step {progress['step']} of {progress['of']} ({progress['share']:g} %; steps {shares})"
    if progress.get("next_at") is not None:
        wait = max(0.0, float(progress["next_at"]) - now)
        line += f", next step in {wait:.0f} s at the earliest, while the analysis holds"
    lines = [line]
    if progress.get("command"):
        lines.append(f"    make it durable: {progress['command']}")
    return lines
