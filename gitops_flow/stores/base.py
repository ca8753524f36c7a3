"""The state store interface, async only: one Protocol per role (pins, conversations, versions, deploy events, webhook
deliveries, counters, canary aborts, messages, leases) and StateStore, all of them, which each backend implements;
and the one blocking role kept beside the state, EmbeddingStore (stores/embeddings.py).

Every method of every role may raise StoreError when the backend is unreachable; none raises anything else for I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gitops_flow.stores.events import DeployEvent

Turn = tuple[str, str]  # (role, text): "human" or "ai"; plain data so every backend keeps it as it is
Record = dict[str, Any]  # a JSON-able object: a version record (deploy events are typed: stores/events.py)

# key prefixes, one place for every backend (arq keeps its constants the same way)
PIN_PREFIX = "pin:"
TURNS_PREFIX = "turns:"
CONVERSATIONS_KEY = "conversations"  # when each conversation expires
CONVERSATION_BYTES_KEY = "conversations:bytes"  # the bytes each conversation's turns take
CONVERSATION_TOTAL_KEY = "conversations:total"  # the bytes all conversations' turns take
PROBE_PREFIX = "probe:"
VERSION_PREFIX = "version:"
EVENTS_KEY = "events"
DELIVERY_PREFIX = "delivery:"
SAMPLES_PREFIX = "samples:"
ABORT_PREFIX = "abort:"
ONCE_PREFIX = "once:"
WAKE_CHANNEL = "wake"
LEASE_PREFIX = "lease:"
RUNS_KEY = "runs"  # the runs the server answered, that feedback may name
SCORES_PREFIX = "scores:"  # a flow's feedback scores

MAX_EVENTS = 10_000  # every backend keeps only this many of the most recent deploy events
SWEEP_CONVERSATIONS = 16  # expired conversations each append_turns deletes: more than it can create, so few linger


@dataclass(frozen=True, slots=True)
class ConversationQuota:
    """What all conversations of a store take together: at most ``max_sessions`` conversations and ``max_bytes`` of
    turn text (UTF-8). Past either, the conversations idle longest are deleted first."""

    max_sessions: int = 100_000
    max_bytes: int = 256 * 1024 * 1024


DEFAULT_QUOTA = ConversationQuota()


def turn_bytes(turn: Turn) -> int:
    """What one turn counts against a ConversationQuota: its text's UTF-8 bytes."""
    return len(turn[1].encode())


@dataclass(frozen=True, slots=True)
class ScoreBounds:
    """What one flow's feedback may take: ``max_keys`` feedback keys and ``max_scores`` scores at once, each score
    kept ``ttl`` seconds after its last write (the oldest go first past ``max_scores``)."""

    ttl: float = 30 * 86400.0
    max_keys: int = 20
    max_scores: int = 100_000


class FeedbackStore(Protocol):
    """The role of a store in experiments (experiments/report.py): the runs the server answered, which feedback may
    name, and the feedback scores given on them, shared by every worker and replica on the backend."""

    async def remember_runs(self, runs: Sequence[tuple[str, Record]], *, ttl: float, max_runs: int) -> None:
        """Keep each (run id, record) for ``ttl`` seconds, in one write; past ``max_runs`` runs kept, the oldest are
        forgotten first. A run id given again is replaced."""
        ...

    async def answered(self, run_id: str) -> Record | None:
        """The record of a run remembered and not expired (a copy); None for any other id."""
        ...

    async def answered_many(self, run_ids: Sequence[str]) -> dict[str, Record]:
        """``answered`` for several runs in one read: run id -> record, for the ids remembered and not expired."""
        ...

    async def add_scores(self, flow: str, scores: Sequence[tuple[str, str, Record]], bounds: ScoreBounds) -> list[bool]:
        """``add_score`` for each (key, slot, record) of ``flow`` in turn, in one atomic write: what ``add_score``
        would answer for each."""
        ...

    async def add_score(self, flow: str, key: str, slot: str, record: Record, bounds: ScoreBounds) -> bool:
        """Keep ``record`` as the score of ``slot`` (who gave it and on which arm: a later score of the same slot
        replaces it) under the feedback key ``key`` of ``flow``, atomically. False, and nothing written, when
        ``key`` is new to the flow and the flow already has ``bounds.max_keys`` keys with live scores."""
        ...

    async def scores(self, flow: str) -> list[Record]:
        """Every live score of ``flow`` (copies), oldest write first (writes at one instant in any order)."""
        ...


class PinStore(Protocol):
    """Session pins: which version each session is pinned to (delivery/choice.py), and which versions pins keep."""

    async def claim_pin(self, key: str, sha: str, ttl: float) -> str:
        """The version a session is pinned to, pinning it to ``sha`` when it has no live pin, in one atomic step.

        A live pin is kept and its idle timer restarted (expires ``ttl`` seconds from now); concurrent claims of one
        key all return the same sha, also from several processes or replicas sharing the backend. A pin is live
        while the clock reads less than its expiry time.
        """
        ...

    async def set_pin(self, key: str, sha: str, ttl: float) -> None:
        """Pin ``key`` to ``sha`` whatever it was pinned to (a session whose version is gone moves on)."""
        ...

    async def drop_pin(self, key: str) -> None:
        """Forget a pin; nothing happens if there is none."""
        ...

    async def pinned_versions(self) -> set[str]:
        """Every sha that at least one live (unexpired) pin names."""
        ...


class ConversationStore(Protocol):
    """Conversations: each session's turns, bounded by a quota (runtime/conversations.py)."""

    async def load_turns(self, session_id: str, limit: int) -> list[Turn]:
        """The last ``limit`` turns of a live conversation, oldest first; [] for an unknown or expired session or a
        ``limit`` < 1."""
        ...

    async def append_turns(
        self, session_id: str, turns: Sequence[Turn], *, ttl: float, keep: int, quota: ConversationQuota = DEFAULT_QUOTA
    ) -> None:
        """Add turns at the end of a conversation, in order, atomically, and keep only its newest ``keep`` (>= 1).

        The conversation expires ``ttl`` seconds after this call (an expired one starts anew: its old turns are
        gone). Each call also deletes up to SWEEP_CONVERSATIONS other expired conversations, so the space they took
        is reused without a sweeper, and then, while the store holds more than ``quota`` allows, the other
        conversations idle longest (whose expiry comes first), so the total stays within the quota however many
        session ids clients make up (the conversation written is never deleted by its own write: a quota smaller
        than one conversation holds that one). A conversation is deleted once, so the deletions of all calls
        together are at most the conversations clients created.
        """
        ...


class VersionStore(Protocol):
    """Version records: what the server knows of each commit it built (delivery/reconciler.py)."""

    async def put_version(self, sha: str, record: Record) -> None:
        """Save (or replace) what the server knows of a commit; ``record`` must be JSON-able, reads return copies."""
        ...

    async def versions(self) -> list[Record]:
        """Every saved version record, in the order they were first saved."""
        ...


class EventStore(Protocol):
    """The deploy history (delivery/journal.py writes it, /history and the console read it)."""

    async def add_event(self, event: DeployEvent, *, once: str | None = None) -> bool:
        """Append a deploy event (deployed, failed, retired, ...) to the history; past MAX_EVENTS the oldest go.

        With ``once``, only the first call naming that key adds its event (atomically, also across processes), so
        replicas that each see one deploy record it once. Returns whether the event was added.
        """
        ...

    async def events(self, limit: int, *, before: int | None = None) -> list[tuple[int, DeployEvent]]:
        """The last ``limit`` events, newest first, each with its number (numbers grow in the order events are added,
        from 1); with ``before``, only events numbered below it (the next page). [] for a ``limit`` < 1."""
        ...


class DeliveryClaims(Protocol):
    """Webhook deliveries acted on once (server/webhooks.py)."""

    async def claim_delivery(self, delivery_id: str, ttl: float) -> bool:
        """True for the first claim of a webhook delivery id within ``ttl`` seconds, False for a replay; atomic
        across processes sharing the backend, so each delivery is acted on once."""
        ...


class SampleStore(Protocol):
    """Counters in time slots, summed over a window: the canary guard's windows (delivery/guard.py), the brake on
    guessed tokens (guardrails/brake.py) and the console's sign-outs (console/signouts.py)."""

    async def add_samples(self, slot: int, counts: Mapping[str, Mapping[str, int]], ttl: float) -> None:
        """Add ``counts[key][field]`` to the counters of each ``key`` in time slot ``slot`` (a whole number the caller
        derives from its clock); a slot may be forgotten ``ttl`` seconds after its last write. Atomic per call."""
        ...

    async def sum_samples(self, key: str, since: int) -> dict[str, int]:
        """Each field's total over the slots of ``key`` numbered ``since`` or later; {} when there are none."""
        ...


class AbortStore(Protocol):
    """Canary aborts (and resumes), shared by every replica (delivery/canaries.py, delivery/guard.py)."""

    async def abort(self, key: str, record: Record) -> bool:
        """Mark ``key`` aborted with ``record``; True if this call did it, False if it was already (the first
        record stays). Atomic across processes, so one abort is announced once."""
        ...

    async def aborts(self) -> dict[str, Record]:
        """Every key marked aborted, with its record."""
        ...

    async def drop_abort(self, key: str) -> None:
        """Forget an abort; nothing happens if there is none."""
        ...


class MessageBus(Protocol):
    """Messages to every process on the backend: wake-ups after a webhook, console sessions revoked."""

    async def publish(self, message: str) -> None:
        """Send ``message`` to every process listening on this backend, this one included (processes sharing a
        SQLite file hear it within a fraction of a second: they poll a table)."""
        ...

    def listen(self) -> AsyncIterator[str]:
        """The messages published on this backend from now on, in order, until the store closes."""
        ...


class LeaseStore(Protocol):
    """Leases: the workers' fetch leader (delivery/leader.py)."""

    async def lease(self, name: str, holder: str, ttl: float) -> bool:
        """Take or renew the lease ``name`` for ``holder`` for ``ttl`` seconds: True if ``holder`` holds it now,
        False while another holder's lease runs. Atomic across processes (the workers' fetch leader, leader.py)."""
        ...

    async def release(self, name: str, holder: str) -> None:
        """Give up the lease ``name`` if ``holder`` holds it, so another takes it at once."""
        ...


class EmbeddingStore(Protocol):
    """Embeddings: document chunks' vectors (float32 bytes) by (model, chunk hash), which Retrievers' builds share
    (stores/embeddings.py). Blocking, unlike every other role (its callers are builds, in worker threads), and kept
    beside the state rather than in StateStore. Every method may raise StoreError, and nothing else for
    I/O; ``get`` of keys never written gives {} for them."""

    def get(self, model: str, keys: Sequence[str]) -> dict[str, bytes]:
        """The vectors kept of ``keys``; a key not kept is absent."""
        ...

    def put(self, model: str, vectors: Mapping[str, bytes]) -> None:
        """Keep each vector unless its key is kept already (the first write stays)."""
        ...

    def claim(self, model: str, keys: Sequence[str], ttl: float) -> list[str]:
        """The keys this call claims for embedding: those no live claim of any process holds, now held for ``ttl``
        seconds (atomic across the processes sharing the backend)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class StateStore(
    FeedbackStore,
    PinStore,
    ConversationStore,
    VersionStore,
    EventStore,
    DeliveryClaims,
    SampleStore,
    AbortStore,
    MessageBus,
    LeaseStore,
    Protocol,
):
    """What the server keeps beyond its process: in memory (tests), a SQLite file (default) or Redis (replicas):
    every role above, which one backend class implements together (a consumer types its parameter by the role it
    uses), and the backend's own life: open, close, ping.

    Every method may raise StoreError when the backend is unreachable; none raises anything else for I/O.
    Times are seconds since the epoch from the store's clock, so tests can move time.
    """

    async def open(self) -> None:
        """Connect and create what is missing; raises StoreError with the reason when the backend is unusable."""
        ...

    async def close(self) -> None:
        """Release connections; the store may not be used afterwards."""
        ...

    async def ping(self) -> None:
        """Write a probe where session requests write, read it back and remove it (readiness checks); raise
        StoreError when the backend cannot be written or read, or gives back something else than was written."""
        ...


async def drain(queue: asyncio.Queue[str | None], listeners: set[asyncio.Queue[str | None]]) -> AsyncIterator[str]:
    """A listener's messages until the store closes (None); it stops listening when its consumer goes away."""
    try:
        while (message := await queue.get()) is not None:
            yield message
    finally:
        listeners.discard(queue)
