"""The response cache: a flow's answers kept per version and input, for the flows whose owners opt in (``cache:`` in
the routing file).

An answer is keyed by everything that can change it: the flow's name, the Git blob of its file (so a new version of
the flow never answers from an old one's entries, and a revert finds its old entries again), and a hash of the
normalized request (Asked): the input, the request's tweaks, the client's whole config as it reaches the run
(``configurable``, ``tags``, ``metadata``, ``run_name``) and, for a flow that keeps a conversation, the session and
the turns the run would read. The routing keys (``user_id``, ``flow_version``; ``session_id`` unless the flow keeps
a conversation) only choose the version, whose blob is in the key, and are left out, so the cache serves more than
one caller, unless the flow has an operator's component, which may read them: then they are in the key too. Only
successful runs are kept, under the version that answered (a canary's primary, when the primary answered). A flow
whose models sample (a model or agent node without ``temperature: 0``, tweaks applied) or that keeps a conversation is
never cached unless its rule ``allow``s it: the same question would otherwise get one sampled answer forever, or a
conversation would lose its turns.
"""

from __future__ import annotations

import hashlib
import inspect
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from gitops_flow.components.builtins import BUILTIN_COMPONENTS
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.exceptions import BuildError
from gitops_flow.flow.document import FlowSpec
from gitops_flow.flow.routing import CacheRule
from gitops_flow.runtime.conversations import Turn

ROUTING_KEYS = frozenset({"session_id", "user_id", "flow_version"})  # choose the version; its blob is in the key
MAX_JUDGED = 10_000  # flow files (with their rule and tweaks) judged since start: bounded anyway


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
class Asked:
    """What a request gives the run, all of which may change its answer: the input, the client's config as the run
    gets it (``configurable``, ``tags``, ``metadata``, ``run_name``), the request's tweaks and, for a flow that keeps
    a conversation, the turns its run reads (None: not read, and then the flow's answers are not cached)."""

    value: Any
    config: Mapping[str, Any] = field(default_factory=dict)
    tweaks: Mapping[str, Any] = field(default_factory=dict)
    history: Sequence[Turn] | None = None

    @property
    def session(self) -> str | None:
        configurable = self.config.get("configurable")
        session = configurable.get("session_id") if isinstance(configurable, Mapping) else None
        return session if isinstance(session, str) and session else None


@dataclass(frozen=True, slots=True)
class Judged:
    """What the cache concluded of a flow file under a rule: why its answers are not cached (None: they are), whether
    it keeps a conversation, and whether an operator's component may read the routing keys from the config."""

    why_not: str | None
    conversation: bool
    reads_routing: bool


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
        self._judged: dict[tuple[str, str, bytes], Judged] = {}

    def lookup(self, rule: CacheRule | None, spec: FlowSpec, content: str | None, asked: Asked) -> Lookup | None:
        """The cache entry of ``asked`` of ``spec`` (the flow that runs, its tweaks applied; its file's blob is
        ``content``); None when its answers are not cached: no rule, a rule it does not satisfy, an unknown blob, a
        conversation whose turns were not read, or a config that is not plain JSON."""
        if rule is None or content is None:
            return None
        judged = self.judge(rule, spec, content, asked.tweaks)
        if judged.why_not is not None or (judged.conversation and (asked.history is None or asked.session is None)):
            return None
        config = dict(asked.config)
        configurable = config.get("configurable")
        if isinstance(configurable, Mapping) and not judged.reads_routing:
            read = {"session_id"} if judged.conversation else set()
            config["configurable"] = {k: v for k, v in configurable.items() if k not in ROUTING_KEYS - read}
        history = [list(turn) for turn in asked.history] if judged.conversation and asked.history is not None else None
        material = {"input": asked.value, "tweaks": asked.tweaks, "config": config, "history": history}
        try:
            normal = orjson.dumps(material, option=orjson.OPT_SORT_KEYS)
        except (TypeError, orjson.JSONEncodeError):
            return None  # nothing a JSON body holds, but configurable values may come from elsewhere
        digest = hashlib.sha256(normal).hexdigest()
        return Lookup(f"{spec.name}:{content}:{self.namespace}:{digest}", rule.ttl)

    def why_not(
        self, rule: CacheRule, spec: FlowSpec, content: str, tweaks: Mapping[str, Any] | None = None
    ) -> str | None:
        """Why a flow's answers are not cached despite its rule (its models sample, it keeps a conversation), or
        None."""
        return self.judge(rule, spec, content, tweaks or {}).why_not

    def judge(self, rule: CacheRule, spec: FlowSpec, content: str, tweaks: Mapping[str, Any]) -> Judged:
        """What the cache makes of the flow file ``content`` under ``rule`` with ``tweaks`` applied (``spec``);
        judged once per file, rule and tweaks."""
        applied = orjson.dumps(tweaks, option=orjson.OPT_SORT_KEYS) if tweaks else b""  # JSON: a request's body
        key = (content, ",".join(sorted(rule.allow)), hashlib.sha256(applied).digest() if applied else b"")
        judged = self._judged.get(key)
        if judged is None:
            if len(self._judged) > MAX_JUDGED:
                self._judged.clear()
            judged = self._judged[key] = self._judge(rule, spec)
        return judged

    def _judge(self, rule: CacheRule, spec: FlowSpec) -> Judged:
        why_not: str | None = None
        conversation = reads_routing = False
        for node in spec.nodes:
            kind = self.registry.kind_of(node.component)
            if kind == "memory":
                conversation = True
                if "history" not in rule.allow and why_not is None:
                    why_not = f"node {node.id!r} keeps a conversation (allow: [history] caches it anyway)"
            if kind in ("model", "agent") and "temperature" not in rule.allow and self._samples(node.component, node):
                why_not = (
                    why_not
                    or f"node {node.id!r} samples: its temperature is not 0 (allow: [temperature] caches it anyway)"
                )
            reads_routing = reads_routing or not self._builtin(node.component)
        return Judged(why_not, conversation, reads_routing)

    def _builtin(self, name: str) -> bool:
        """A built-in component reads no routing key from the config (ChatHistory reads the session, which a
        conversation's key holds); an operator's may read any."""
        try:
            return self.registry.get(name) in BUILTIN_COMPONENTS
        except BuildError:
            return False

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
