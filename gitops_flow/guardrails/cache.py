"""The response cache: a flow's answers kept per version and input, for the flows whose owners opt in (``cache:`` in
the routing file).

An answer is keyed by the flow's name, the Git blob of its file (so a new version of the flow never answers from an
old one's entries, and a revert finds its old entries again) and a hash of the normalized request: the input and the
client's ``configurable`` (less the routing keys), as JSON with sorted keys. Only successful runs are kept, under the
version that answered (a canary's primary, when the primary answered). A flow whose models sample (a model or agent
node without ``temperature: 0``) or that keeps a conversation is never cached unless its rule ``allow``s it: the
same question would otherwise get one sampled answer forever, or a conversation would lose its turns.
"""

from __future__ import annotations

import hashlib
import inspect
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from gitops_flow.components import ComponentRegistry
from gitops_flow.routing import CacheRule
from gitops_flow.spec import FlowSpec

ROUTING_KEYS = frozenset({"session_id", "user_id", "flow_version"})  # choose the version; its blob is in the key


class CacheStore(Protocol):
    """Where cached answers live: this process's memory, or the state's Redis (shared by replicas)."""

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl: float, max_entries: int) -> None: ...


class MemoryCache:
    """Answers in this process, least recently used first out past ``max_bytes`` or ``max_entries``; an entry is
    dropped when read after its TTL."""

    def __init__(self, max_bytes: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self.bytes = 0

    def __repr__(self) -> str:
        return f"MemoryCache(entries={len(self._entries)}, bytes={self.bytes})"

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry[0]

    async def put(self, key: str, value: bytes, ttl: float, max_entries: int) -> None:
        if len(value) > self.max_bytes:
            return
        self._drop(key)
        self._entries[key] = (value, self._clock() + ttl)
        self.bytes += len(value)
        while self.bytes > self.max_bytes or len(self._entries) > max_entries:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= len(entry[0])


@dataclass(frozen=True, slots=True)
class Lookup:
    """A request the cache may answer: where its answer is kept, and for how long."""

    key: str
    ttl: float


@dataclass(frozen=True, slots=True)
class Cached:
    """An answer found in the cache (its output as JSON gives it back, ``null`` included)."""

    output: Any


class ResponseCache:
    """Decides which requests are cached and keeps their answers in ``store``."""

    def __init__(
        self,
        store: CacheStore,
        registry: ComponentRegistry,
        *,
        max_entry_bytes: int,
        max_entries: int,
        namespace: str = "",
    ) -> None:
        self.store = store
        self.registry = registry
        self.max_entry_bytes = max_entry_bytes
        self.max_entries = max_entries
        self.namespace = namespace  # what else changes answers of one blob (fake models), so it never mixes them
        self._why_not: dict[tuple[str, str], str | None] = {}

    def lookup(
        self, rule: CacheRule | None, spec: FlowSpec, content: str | None, value: Any, configurable: Mapping[str, Any]
    ) -> Lookup | None:
        """The cache entry of a request of ``spec`` (at the file blob ``content``) with input ``value``; None when
        its flow is not cached (no rule, or a rule it does not satisfy) or the version's blob is unknown."""
        if rule is None or content is None or self.why_not(rule, spec, content) is not None:
            return None
        extra = {k: v for k, v in configurable.items() if k not in ROUTING_KEYS}
        try:
            normal = orjson.dumps([value, extra], option=orjson.OPT_SORT_KEYS)
        except (TypeError, orjson.JSONEncodeError):
            return None  # nothing a JSON body holds, but configurable values may come from elsewhere
        digest = hashlib.sha256(normal).hexdigest()
        return Lookup(f"{spec.name}:{content}:{self.namespace}:{digest}", rule.ttl)

    def why_not(self, rule: CacheRule, spec: FlowSpec, content: str) -> str | None:
        """Why a flow's answers are not cached despite its rule (its models sample, it keeps a conversation), or
        None; judged once per flow file and rule."""
        key = (content, ",".join(sorted(rule.allow)))
        if key not in self._why_not:
            if len(self._why_not) > 10_000:  # the contents of every version served since start: bounded anyway
                self._why_not.clear()
            self._why_not[key] = self._judge(rule, spec)
        return self._why_not[key]

    def _judge(self, rule: CacheRule, spec: FlowSpec) -> str | None:
        for node in spec.nodes:
            kind = self.registry.kind_of(node.component)
            if kind == "memory" and "history" not in rule.allow:
                return f"node {node.id!r} keeps a conversation (allow: [history] caches it anyway)"
            if kind in ("model", "agent") and "temperature" not in rule.allow and self._samples(node.component, node):
                return f"node {node.id!r} samples: its temperature is not 0 (allow: [temperature] caches it anyway)"
        return None

    def _samples(self, component: str, node: Any) -> bool:
        """A model samples unless it is told ``temperature: 0``, or takes no temperature at all (a fake)."""
        if node.params.get("temperature") == 0:
            return False
        try:
            factory = self.registry.factory(self.registry.get(component))
            parameters = inspect.signature(factory).parameters
        except Exception:  # an operator's factory that cannot be looked at: assume it samples
            return True
        return "temperature" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())

    async def get(self, lookup: Lookup) -> Cached | None:
        """The cached answer, or None."""
        raw = await self.store.get(lookup.key)
        return Cached(orjson.loads(raw)) if raw is not None else None

    async def put(self, lookup: Lookup, output: bytes) -> None:
        """Keep an answer (its JSON) unless it is larger than an entry may be."""
        if len(output) <= self.max_entry_bytes:
            await self.store.put(lookup.key, output, lookup.ttl, self.max_entries)
