"""The deploy history as the server writes it: each fact once, however many replicas see it, scrubbed of secrets."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from gitops_flow.delivery.versions import Version
from gitops_flow.stores.base import Record, StateStore


class DeployLog:
    """Writes deploy events (deployed, failed, aborted, ...) to the store's history, named by their commit, with what
    ``versions`` knows of it (author, message, changed flows); ``on_event`` hears each event this replica added."""

    def __init__(
        self,
        store: StateStore,
        versions: Callable[[], Mapping[str, Version]],
        *,
        clock: Callable[[], float] = time.time,
        scrub: Callable[[Record], Record] = lambda event: event,
        on_event: Callable[[Record], None] = lambda event: None,
    ) -> None:
        self.store = store
        self.versions = versions
        self.clock = clock
        self.scrub = scrub  # takes the secret values the server knows out of each event before it is stored
        self.on_event = on_event

    async def record(self, kind: str, sha: str, trigger: str, *, once: str | None = None, **extra: Any) -> None:
        """Add an event to the shared history, once per fact (``once`` defaults to the kind and commit)."""
        version = self.versions().get(sha)
        event = {
            "time": self.clock(),
            "event": kind,
            "sha": sha,
            "trigger": trigger,
            "author": version.author if version else None,
            "message": version.summary if version else None,
            "changed": list(version.changed) if version else [],
            **extra,
        }
        event = self.scrub(event)
        if await self.store.add_event(event, once=once or f"{kind}:{sha}"):
            self.on_event(event)
