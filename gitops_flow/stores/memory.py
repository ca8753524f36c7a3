"""MemoryStore: the state kept in this process's dicts, for tests, `gitops-flow test` and single-shot runs."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from itertools import islice
from typing import Any

import orjson

from gitops_flow.stores.base import (
    DEFAULT_QUOTA,
    MAX_EVENTS,
    SWEEP_CONVERSATIONS,
    ConversationQuota,
    Record,
    ScoreBounds,
    Turn,
    drain,
    turn_bytes,
)
from gitops_flow.stores.events import DeployEvent

_PURGE_EVERY = 1_000  # pin writes between sweeps of expired pins


class MemoryStore:
    """A StateStore in plain dicts; gone when the process ends.

    Safe for one event loop: no method awaits inside, so each one (``claim_pin`` included) runs as one atomic step.
    Records are kept as JSON, so what comes back is a copy that equals what SQLite or Redis would give back.
    """

    def __init__(self, clock: Callable[[], float] = time.time, *, max_events: int = MAX_EVENTS) -> None:
        self._clock = clock
        self._pins: dict[str, tuple[str, float]] = {}  # key -> (sha, expires)
        self._pin_writes = 0
        # session -> (turns, expires, bytes), least recently written first: the sweep and the quota look at the front
        self._turns: OrderedDict[str, tuple[deque[Turn], float, int]] = OrderedDict()
        self._turn_bytes = 0  # of every conversation kept
        self._versions: dict[str, bytes] = {}  # a dict keeps first-insertion order when a value is replaced
        self._events: deque[tuple[int, bytes]] = deque(maxlen=max_events)
        self._event_seq = 0
        self._once: set[str] = set()
        self._deliveries: dict[str, float] = {}  # delivery id -> expires
        self._samples: dict[tuple[str, int], tuple[dict[str, int], float]] = {}  # (key, slot) -> (counts, expires)
        self._aborts: dict[str, bytes] = {}
        self._listeners: set[asyncio.Queue[str | None]] = set()
        self._leases: dict[str, tuple[str, float]] = {}
        self._runs: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # run id -> (record, expires), oldest first
        # flow -> slot -> (key, record, expires), oldest write first; and flow -> key -> its live scores
        self._scores: dict[str, OrderedDict[str, tuple[str, bytes, float]]] = {}
        self._score_keys: dict[str, dict[str, int]] = {}

    def __repr__(self) -> str:
        return f"MemoryStore(pins={len(self._pins)}, sessions={len(self._turns)}, versions={len(self._versions)})"

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        for queue in self._listeners:
            queue.put_nowait(None)
        self._listeners.clear()

    async def ping(self) -> None:
        pass

    async def claim_pin(self, key: str, sha: str, ttl: float) -> str:
        now = self._clock()
        pin = self._pins.get(key)
        if pin is not None and pin[1] > now:
            sha = pin[0]
        self._write_pin(key, sha, now + ttl)
        return sha

    async def set_pin(self, key: str, sha: str, ttl: float) -> None:
        self._write_pin(key, sha, self._clock() + ttl)

    async def drop_pin(self, key: str) -> None:
        self._pins.pop(key, None)

    async def pinned_versions(self) -> set[str]:
        self._purge_pins()
        return {sha for sha, _ in self._pins.values()}

    async def load_turns(self, session_id: str, limit: int) -> list[Turn]:
        kept = self._turns.get(session_id)
        if limit < 1 or kept is None or kept[1] <= self._clock():
            return []
        return list(kept[0])[-limit:]

    async def append_turns(
        self, session_id: str, turns: Sequence[Turn], *, ttl: float, keep: int, quota: ConversationQuota = DEFAULT_QUOTA
    ) -> None:
        assert keep >= 1, "a conversation keeps at least its last turn"
        if not turns:
            return
        now = self._clock()
        for _ in range(SWEEP_CONVERSATIONS):
            oldest = next(iter(self._turns.items()), None)
            if oldest is None or oldest[1][1] > now:
                break
            self._drop_conversation(oldest[0])
        kept, expires, size = self._turns.pop(session_id, (deque(), now, 0))
        self._turn_bytes -= size
        if expires <= now:
            kept, size = deque(), 0  # an expired conversation starts anew
        for role, text in turns:
            kept.append((role, text))
            size += turn_bytes((role, text))
        while len(kept) > keep:
            size -= turn_bytes(kept.popleft())
        self._turn_bytes += size
        self._turns[session_id] = (kept, now + ttl, size)
        # the front was written least recently: idle longest (every write moves its conversation to the end)
        while len(self._turns) > quota.max_sessions or self._turn_bytes > quota.max_bytes:
            oldest_session = next(iter(self._turns))
            if oldest_session == session_id:
                break
            self._drop_conversation(oldest_session)

    async def put_version(self, sha: str, record: Record) -> None:
        self._versions[sha] = _packed(record)

    async def versions(self) -> list[Record]:
        return [orjson.loads(record) for record in self._versions.values()]

    async def add_event(self, event: DeployEvent, *, once: str | None = None) -> bool:
        if once is not None:
            if once in self._once:
                return False
            self._once.add(once)
        self._event_seq += 1
        self._events.append((self._event_seq, _packed(event)))
        return True

    async def events(self, limit: int, *, before: int | None = None) -> list[tuple[int, DeployEvent]]:
        newest_first = reversed(self._events)
        if before is not None:
            newest_first = (item for item in newest_first if item[0] < before)
        return [(seq, orjson.loads(event)) for seq, event in islice(newest_first, max(limit, 0))]

    async def claim_delivery(self, delivery_id: str, ttl: float) -> bool:
        now = self._clock()
        if self._deliveries.get(delivery_id, now) > now:
            return False
        self._deliveries[delivery_id] = now + ttl
        if len(self._deliveries) % _PURGE_EVERY == 0:
            self._deliveries = {d: expires for d, expires in self._deliveries.items() if expires > now}
        return True

    async def add_samples(self, slot: int, counts: Mapping[str, Mapping[str, int]], ttl: float) -> None:
        now = self._clock()
        for key, fields in counts.items():
            kept, _ = self._samples.get((key, slot), ({}, 0.0))
            for field, count in fields.items():
                kept[field] = kept.get(field, 0) + count
            self._samples[(key, slot)] = (kept, now + ttl)
        self._samples = {k: v for k, v in self._samples.items() if v[1] > now}

    async def sum_samples(self, key: str, since: int) -> dict[str, int]:
        total: dict[str, int] = {}
        for (name, slot), (counts, _) in self._samples.items():
            if name == key and slot >= since:
                for field, count in counts.items():
                    total[field] = total.get(field, 0) + count
        return total

    async def abort(self, key: str, record: Record) -> bool:
        if key in self._aborts:
            return False
        self._aborts[key] = _packed(record)
        return True

    async def aborts(self) -> dict[str, Record]:
        return {key: orjson.loads(record) for key, record in self._aborts.items()}

    async def drop_abort(self, key: str) -> None:
        self._aborts.pop(key, None)

    async def publish(self, message: str) -> None:
        for queue in self._listeners:
            queue.put_nowait(message)

    def listen(self) -> AsyncIterator[str]:
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._listeners.add(queue)
        return drain(queue, self._listeners)

    async def lease(self, name: str, holder: str, ttl: float) -> bool:
        now = self._clock()
        current = self._leases.get(name)
        if current is not None and current[0] != holder and current[1] > now:
            return False
        self._leases[name] = (holder, now + ttl)
        return True

    async def release(self, name: str, holder: str) -> None:
        if self._leases.get(name, ("", 0.0))[0] == holder:
            del self._leases[name]

    async def remember_runs(self, runs: Sequence[tuple[str, Record]], *, ttl: float, max_runs: int) -> None:
        now = self._clock()
        for run_id, record in runs:
            self._runs.pop(run_id, None)
            self._runs[run_id] = (_packed(record), now + ttl)
        # one ttl for every run: the front expires first
        while self._runs and (len(self._runs) > max_runs or next(iter(self._runs.values()))[1] <= now):
            self._runs.popitem(last=False)

    async def answered(self, run_id: str) -> Record | None:
        kept = self._runs.get(run_id)
        if kept is None or kept[1] <= self._clock():
            return None
        record: Record = orjson.loads(kept[0])
        return record

    async def answered_many(self, run_ids: Sequence[str]) -> dict[str, Record]:
        found = {run_id: await self.answered(run_id) for run_id in run_ids}
        return {run_id: record for run_id, record in found.items() if record is not None}

    async def add_scores(self, flow: str, scores: Sequence[tuple[str, str, Record]], bounds: ScoreBounds) -> list[bool]:
        return [await self.add_score(flow, key, slot, record, bounds) for key, slot, record in scores]

    async def add_score(self, flow: str, key: str, slot: str, record: Record, bounds: ScoreBounds) -> bool:
        now = self._clock()
        scores = self._scores.setdefault(flow, OrderedDict())
        keys = self._score_keys.setdefault(flow, {})
        while scores and next(iter(scores.values()))[2] <= now:
            self._drop_score(flow, next(iter(scores)))
        if key not in keys and len(keys) >= bounds.max_keys:
            return False
        if slot in scores:
            self._drop_score(flow, slot)
        scores[slot] = (key, _packed(record), now + bounds.ttl)
        keys[key] = keys.get(key, 0) + 1
        while len(scores) > bounds.max_scores:
            self._drop_score(flow, next(iter(scores)))
        return True

    async def scores(self, flow: str) -> list[Record]:
        now = self._clock()
        return [orjson.loads(data) for _, data, expires in self._scores.get(flow, {}).values() if expires > now]

    def _drop_score(self, flow: str, slot: str) -> None:
        key, _, _ = self._scores[flow].pop(slot)
        keys = self._score_keys[flow]
        keys[key] -= 1
        if keys[key] <= 0:
            del keys[key]

    def _drop_conversation(self, session_id: str) -> None:
        _, _, size = self._turns.pop(session_id)
        self._turn_bytes -= size

    def _write_pin(self, key: str, sha: str, expires: float) -> None:
        self._pins[key] = (sha, expires)
        self._pin_writes += 1
        if self._pin_writes % _PURGE_EVERY == 0:
            self._purge_pins()

    def _purge_pins(self) -> None:
        now = self._clock()
        for key in [key for key, (_, expires) in self._pins.items() if expires <= now]:
            del self._pins[key]


def _packed(value: Any) -> bytes:
    """``value`` as JSON bytes of their own size, to keep: orjson's answer holds the 4 KiB buffer it was written in
    (ten times a run's record), and a store that keeps a million of them holds 4 GiB."""
    return bytes(memoryview(orjson.dumps(value)))
