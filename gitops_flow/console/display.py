"""Values as the console shows them: literal credentials masked, known secret values scrubbed, long text cut.

A flow that failed validation may hold a literal API key (``literal-secret``): Git has it, but the console must not
carry it to everyone who can read the page. Every param the console shows goes through ``shown``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from gitops_flow.security.references import HIDDEN, masked

__all__ = ["HIDDEN", "masked", "problem_line", "shown", "text"]

MAX_TEXT = 400  # characters of one value shown; the rest is cut


def text(value: Any, limit: int = MAX_TEXT) -> str:
    """Compact JSON of ``value`` (a plain string as itself), cut at ``limit`` characters."""
    shown = value if isinstance(value, str) else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def shown(value: Any, scrub: Callable[[Any], Any] = lambda v: v, limit: int = MAX_TEXT) -> str:
    """What the console prints for a param value: masked, scrubbed of known secrets, cut."""
    return text(scrub(masked(value)), limit)


def problem_line(problem: Mapping[str, Any]) -> str:
    """``flows/triage.json:7 missing-secret message``: a problem (as a store or a view holds it) as CI prints it."""
    place = f"{problem.get('file') or '<flow>'}:{problem.get('line') or ''}".rstrip(":")
    return f"{place} {problem.get('code')} {problem.get('message')}"


def coverage_text(window: float, processes: int, replicas: int) -> str:
    """Over what the traffic figures were added up: ``the last 5 min, from 4 workers on 2 replicas``."""
    minutes, seconds = divmod(int(window), 60)
    span = (
        f"{minutes} min" + (f" {seconds} s" if seconds and minutes < WHOLE_MINUTES else "")
        if minutes
        else f"{seconds} s"
    )
    workers = f"{processes} worker{'s' if processes != 1 else ''}"
    return f"the last {span}, from {workers} on {replicas} replica{'s' if replicas != 1 else ''}"


WHOLE_MINUTES = 2  # from this many minutes of window on, seconds are not shown
