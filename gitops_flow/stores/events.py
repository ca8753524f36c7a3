"""The deploy history's events: one TypedDict per kind, so that mypy checks every field a writer sets or a reader takes.

They are TypedDicts, not dataclasses, because an event is stored as the JSON object it is (SQLite, Redis) and read back
as such: the shape on disk and on the wire (`/history`, notifications) is unchanged, and history written before these
types existed reads as it did. A reader still guards what it takes with ``.get`` where an older server may not have
written a field; ``event["event"] == "..."`` narrows the union to one kind.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypeAlias, TypedDict, get_args


class Stamp(TypedDict):
    """What every event carries, filled in by the journal: when, which commit, what set it off, and what the server
    knows of that commit (its author, the first line of its message and the flows it changed; none for an unknown
    commit)."""

    time: float
    sha: str | None  # None only as a view shows it to a caller without a token: a commit off the branch, hidden
    trigger: str
    author: str | None
    message: str | None
    changed: list[str]


class DeployedFacts(TypedDict):
    """The branch head went live; ``failed_flows`` kept their last good build, ``detail`` says why an older commit
    went live instead (the head failed as a whole at start). With ``flow``: that one flow of the commit went live
    later, when its tests' verdict arrived (delivery/builds.py: a flow still being tested waits, the rest do not)."""

    event: Literal["deployed"]
    failed_flows: NotRequired[list[str]]
    detail: NotRequired[str]
    flow: NotRequired[str]


class Deployed(Stamp, DeployedFacts):
    """A ``DeployedFacts`` as stored: stamped."""


class RolledBackFacts(TypedDict):
    """The branch head went live and serves what an earlier commit, ``restores``, served."""

    event: Literal["rolled-back"]
    restores: str | None  # None: hidden, as ``sha``
    failed_flows: NotRequired[list[str]]


class RolledBack(Stamp, RolledBackFacts):
    """A ``RolledBackFacts`` as stored: stamped."""


class FailedFacts(TypedDict):
    """A commit failed as a whole (no ``flow``), or one ``flow`` of it failed and ``serving`` is what that flow
    keeps serving (None: nothing)."""

    event: Literal["failed"]
    problems: list[dict[str, Any]]
    flow: NotRequired[str]
    serving: NotRequired[str | None]


class Failed(Stamp, FailedFacts):
    """A ``FailedFacts`` as stored: stamped."""


class BuiltFacts(TypedDict):
    """An older commit of one fetch was built; a newer one followed it, so it did not go live."""

    event: Literal["built"]


class Built(Stamp, BuiltFacts):
    """A ``BuiltFacts`` as stored: stamped."""


class RetiredFacts(TypedDict):
    """A version was let go from memory (its record stays)."""

    event: Literal["retired"]


class Retired(Stamp, RetiredFacts):
    """A ``RetiredFacts`` as stored: stamped."""


class TagMovedFacts(TypedDict):
    """Tag ``ref`` was created (no ``before``), moved, or deleted (no ``after``)."""

    event: Literal["tag-moved"]
    ref: str
    before: str | None
    after: str | None


class TagMoved(Stamp, TagMovedFacts):
    """A ``TagMovedFacts`` as stored: stamped."""


class RefRefusedFacts(TypedDict):
    """Tag ``ref``, which the routing file names, points off the tracked branch: it is not served."""

    event: Literal["ref-refused"]
    ref: str
    detail: str


class RefRefused(Stamp, RefRefusedFacts):
    """A ``RefRefusedFacts`` as stored: stamped."""


class RewrittenFacts(TypedDict):
    """The tracked branch was force-pushed."""

    event: Literal["rewritten"]
    detail: str


class Rewritten(Stamp, RewrittenFacts):
    """A ``RewrittenFacts`` as stored: stamped."""


class YankedFacts(TypedDict):
    """The routing file yanked a commit (and its builds of ``flows``): it is never served again."""

    event: Literal["yanked"]
    detail: str
    flows: list[str]


class Yanked(Stamp, YankedFacts):
    """A ``YankedFacts`` as stored: stamped."""


class AbortedFacts(TypedDict):
    """``flow``'s canary on ``ref`` was aborted: by the guard (with the window's figures) or by an operator."""

    event: Literal["aborted"]
    flow: str
    ref: str
    reason: NotRequired[str]
    requests: NotRequired[int]
    errors: NotRequired[int]
    error_rate: NotRequired[float]
    p99_ms: NotRequired[float | None]
    window_s: NotRequired[float]
    causes: NotRequired[dict[str, int]]  # why the window's failed requests failed, commonest first
    error_class: NotRequired[str | None]  # the error class of the commonest cause


class Aborted(Stamp, AbortedFacts):
    """A ``AbortedFacts`` as stored: stamped."""


class ResumedFacts(TypedDict):
    """An operator resumed ``flow``'s canary on ``ref``."""

    event: Literal["resumed"]
    flow: str
    ref: str


class Resumed(Stamp, ResumedFacts):
    """A ``ResumedFacts`` as stored: stamped."""


class SteppedFacts(TypedDict):
    """``flow``'s progressive canary on ``ref`` took step ``step`` (1 for the first) of ``steps``: it serves
    ``share`` percent of the route's traffic. At its last step of 100 %, ``command`` is the one git command that makes
    it durable (moves the primary's tag to the canary's commit); the server writes nothing to Git, a person runs it."""

    event: Literal["stepped"]
    flow: str
    ref: str
    step: int
    steps: int
    share: float
    command: NotRequired[str]


class Stepped(Stamp, SteppedFacts):
    """A ``SteppedFacts`` as stored: stamped."""


class FetchedFacts(TypedDict):
    """An operator asked for a fetch; ``detail`` says what it found."""

    event: Literal["fetch"]
    detail: str


class Fetched(Stamp, FetchedFacts):
    """A ``FetchedFacts`` as stored: stamped."""


Facts: TypeAlias = (
    DeployedFacts
    | RolledBackFacts
    | FailedFacts
    | BuiltFacts
    | RetiredFacts
    | TagMovedFacts
    | RefRefusedFacts
    | RewrittenFacts
    | YankedFacts
    | AbortedFacts
    | ResumedFacts
    | SteppedFacts
    | FetchedFacts
)  # what a writer says; the journal stamps it
DeployEvent: TypeAlias = (
    Deployed
    | RolledBack
    | Failed
    | Built
    | Retired
    | TagMoved
    | RefRefused
    | Rewritten
    | Yanked
    | Aborted
    | Resumed
    | Stepped
    | Fetched
)
Kind: TypeAlias = Literal[
    "deployed",
    "rolled-back",
    "failed",
    "built",
    "tag-moved",
    "aborted",
    "resumed",
    "stepped",
    "fetch",
    "yanked",
    "ref-refused",
    "rewritten",
    "retired",
]
KINDS: tuple[Kind, ...] = get_args(Kind)  # the order the console lists them in


def step_text(event: Stepped | SteppedFacts) -> str:
    """``step 2 of 3: 50 % of the traffic``, and at the last step of 100 % the command that makes it durable: the
    words of the history, the notifications and the commit status."""
    text = f"step {event['step']} of {event['steps']}: {event['share']:g} % of the traffic"
    if event.get("command"):
        text += f"; make it durable: {event.get('command')}"
    return text
