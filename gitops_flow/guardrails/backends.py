"""Where the guardrails keep their state: beside the server's state, so what the state store shares, they share.

memory://          the counters and the cache in this process
sqlite:///PATH     the counters in PATH's sibling file ``<name>-limits.db`` (shared by the processes of the
                   machine), the cache in each process's memory
redis[s]://…       the counters and the cache in the same Redis, under the same prefix (shared by every replica)
"""

from __future__ import annotations

from gitops_flow.guardrails.cache import CacheStore, MemoryCache
from gitops_flow.guardrails.counters import Counters
from gitops_flow.guardrails.memory import MemoryCounters
from gitops_flow.guardrails.sqlite import SqliteCounters, counters_path
from gitops_flow.stores.base import StateStore
from gitops_flow.stores.sqlite import SqliteStore


def beside(store: StateStore, state_url: str, *, cache_max_bytes: int) -> tuple[Counters, CacheStore]:
    """The counters and the cache store for a server whose state is ``store`` (made from ``state_url``)."""
    if isinstance(store, SqliteStore):
        return SqliteCounters(counters_path(store.path)), MemoryCache(cache_max_bytes)
    url = state_url if state_url.lower().startswith(("redis://", "rediss://")) else _redis_url(store)
    if url is None:
        return MemoryCounters(), MemoryCache(cache_max_bytes)
    from gitops_flow.guardrails.redis import RedisGuardrails  # the redis extra, as the store itself needs it

    shared = RedisGuardrails(url, cache_max_bytes=cache_max_bytes)
    return shared.counters, shared.cache


def _redis_url(store: StateStore) -> str | None:
    """A Redis store handed in as an object (tests): its URL (without a password) and prefix; None for any other."""
    try:
        from gitops_flow.stores.redis import RedisStore
    except ModuleNotFoundError:  # without the redis extra, no store is a RedisStore
        return None
    return f"{store.url}?prefix={store.prefix}" if isinstance(store, RedisStore) else None
