"""The audit trail as the console shows it: the store's deploy events (what `/history` gives), filtered by flow, ref
and kind, each told as who did what, to which commit, on which trigger."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gitops_flow.stores.events import KINDS as EVENT_KINDS
from gitops_flow.stores.events import DeployEvent, step_text

KINDS = EVENT_KINDS  # the order the kind filter lists them in
MAX_SHOWN = 200  # events on one page
_ACTIONS = ("aborted", "resumed", "stepped", "fetch")


@dataclass(frozen=True, slots=True)
class Filter:
    """What the history page shows: events of one flow, ref and kind (None: any)."""

    flow: str | None = None
    ref: str | None = None
    kind: str | None = None

    def matches(self, event: DeployEvent) -> bool:
        if self.kind is not None and event.get("event") != self.kind:
            return False
        if self.ref is not None and event.get("ref") != self.ref:
            return False
        return self.flow is None or self.flow in flows_of(event)


@dataclass(frozen=True, slots=True)
class Entry:
    """One event, for a person: when, what kind, the flows and ref it is about, the commit, who and what."""

    time: float
    kind: str
    flows: tuple[str, ...]
    ref: str | None
    sha: str | None
    who: str
    what: str
    trigger: str
    problems: tuple[Mapping[str, Any], ...]


def flows_of(event: DeployEvent) -> tuple[str, ...]:
    """The flows an event is about: its ``flow``, or the flows its commit changed (and those that failed there)."""
    flow = event.get("flow")
    if isinstance(flow, str):
        return (flow,)
    names = [*_names(event.get("changed")), *_names(event.get("failed_flows"))]
    return tuple(dict.fromkeys(names))


def _names(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def entries(events: Sequence[DeployEvent], chosen: Filter, limit: int = MAX_SHOWN) -> list[Entry]:
    """The events ``chosen`` keeps, newest first (as given), at most ``limit``."""
    return [entry(e) for e in events if chosen.matches(e)][:limit]


def entry(event: DeployEvent) -> Entry:
    kind = str(event.get("event", "?"))
    trigger = str(event.get("trigger") or "")
    if kind in _ACTIONS:  # an operator's doing (or the guard's): who is whoever did it, not the commit's author
        who = trigger if trigger.startswith(("operator", "console")) else "the canary guard"
    else:
        who = str(event.get("author") or "")
    return Entry(
        time=float(event.get("time") or 0.0),
        kind=kind,
        flows=flows_of(event),
        ref=ref if isinstance(ref := event.get("ref"), str) else None,
        sha=sha if isinstance(sha := event.get("sha"), str) and sha else None,
        who=who,
        what=what(event),
        trigger=trigger,
        problems=tuple(p for p in event["problems"] if isinstance(p, Mapping)) if event["event"] == "failed" else (),
    )


def what(event: DeployEvent) -> str:
    """One line on what an event was about (the same words as `gitops-flow history`)."""
    kind = event.get("event")
    if kind == "tag-moved":
        before, after = event.get("before"), event.get("after")
        return f"tag {event.get('ref')}: {_short(before) or '(new)'} → {_short(after) or '(deleted)'}"
    if event["event"] == "aborted" or event["event"] == "resumed":
        requests, reason = event.get("requests"), event.get("reason")
        figures = f" ({requests} requests, {event.get('errors', 0)} failed)" if requests is not None else ""
        why = f": {reason}" if reason else ""
        return f"{event.get('flow', '?')} on {event.get('ref')}{why}{figures}"
    if event["event"] == "stepped":
        return f"{event['flow']} on {event['ref']}: {step_text(event)}"
    if kind == "fetch":
        return str(event.get("detail") or "")
    if event["event"] == "failed" and (flow := event.get("flow")):
        serving = event.get("serving")
        return f"{flow} failed, " + (f"serving {_short(serving)}" if serving else "not served")
    text = str(event.get("message") or event.get("detail") or "")
    if restores := event.get("restores"):
        text += f" (serves {_short(restores)} again)"
    if failed := event.get("failed_flows"):
        text += f" (failed: {', '.join(_names(failed))})"
    return text


def _short(sha: Any) -> str:
    return sha[:12] if isinstance(sha, str) else ""
