"""State stores, chosen by URL: memory://, sqlite:///PATH (the default), redis:// or rediss:// (several replicas)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from gitops_flow.exceptions import ConfigError
from gitops_flow.security.redaction import redact
from gitops_flow.stores.base import StateStore
from gitops_flow.stores.memory import MemoryStore
from gitops_flow.stores.sqlite import SqliteStore

__all__ = ["DEFAULT_STATE", "MemoryStore", "SqliteStore", "StateStore", "open_store"]

DEFAULT_STATE = "sqlite://"  # the file state.db in the data folder

Clock = Callable[[], float]


def open_store(url: str, *, data_dir: Path, clock: Clock = time.time) -> StateStore:
    """The store a URL names, not yet opened (the caller awaits ``open()``); raises ConfigError for a bad URL.

    ``sqlite:///state.db`` is relative to the working folder and ``sqlite:////var/lib/x/state.db`` absolute, as
    SQLAlchemy writes them; ``sqlite://`` alone is ``data_dir / "state.db"``.
    """
    scheme, sep, rest = url.partition("://")
    backend = _BACKENDS.get(scheme.lower()) if sep else None
    if backend is None:
        accepted = ", ".join(f"{name}://" for name in _BACKENDS)
        # a mistyped scheme must not print the password after it
        raise ConfigError(f"state URL {redact(url)!r} has an unknown scheme; use one of {accepted}")
    return backend(url, rest, data_dir, clock)


def _memory(url: str, rest: str, data_dir: Path, clock: Clock) -> StateStore:
    return MemoryStore(clock)


def _sqlite(url: str, rest: str, data_dir: Path, clock: Clock) -> StateStore:
    if rest and not rest.startswith("/"):
        raise ConfigError(
            f"state URL {redact(url)!r} names a host; a SQLite file is sqlite:///PATH (relative) or sqlite:////PATH"
        )
    if "?" in rest:
        raise ConfigError(f"state URL {redact(url)!r} has options; SQLite takes none, give only sqlite:///PATH")
    path = rest[1:]
    return SqliteStore(Path(path) if path else data_dir / "state.db", clock=clock)


def _redis(url: str, rest: str, data_dir: Path, clock: Clock) -> StateStore:
    try:
        from gitops_flow.stores.redis import RedisStore  # an optional extra: imported only when asked for
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.partition(".")[0] != "redis":
            raise
        raise ConfigError("the Redis state store needs the redis package: pip install 'gitops-flow[redis]'") from None
    return RedisStore.from_url(url, clock=clock)


# scheme -> factory; an explicit map, never an import string
_BACKENDS: dict[str, Callable[[str, str, Path, Clock], StateStore]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "redis": _redis,
    "rediss": _redis,
}
