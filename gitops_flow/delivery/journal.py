"""The deploy history as the server writes it: each fact once, however many replicas see it, scrubbed of secrets."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import cast

from gitops_flow.delivery.versions import Version
from gitops_flow.stores.base import EventStore, Record
from gitops_flow.stores.events import DeployEvent, Facts, Stamp


class DeployLog:
    """Writes deploy events (stores/events.py: deployed, failed, aborted, ...) to the store's history, named by their
    commit, with what ``versions`` knows of it (author, message, changed flows); ``on_event`` hears each event this
    replica added."""

    def __init__(
        self,
        store: EventStore,
        versions: Callable[[], Mapping[str, Version]],
        *,
        clock: Callable[[], float] = time.time,
        scrub: Callable[[Record], Record] = lambda event: event,
        on_event: Callable[[DeployEvent], None] = lambda event: None,
    ) -> None:
        self.store = store
        self.versions = versions
        self.clock = clock
        self.scrub = scrub  # takes the secret values the server knows out of each event before it is stored
        self.on_event = on_event

    async def record(
        self, sha: str, trigger: str, facts: Facts, *, once: str | None = None, at: float | None = None
    ) -> None:
        """Add an event to the shared history, once per fact (``once`` defaults to the kind and commit): ``facts``
        stamped with the time (``at``, else now), ``sha``, ``trigger`` and what the server knows of the commit."""
        version = self.versions().get(sha)
        stamp = Stamp(
            time=self.clock() if at is None else at,
            sha=sha,
            trigger=trigger,
            author=version.author if version else None,
            message=version.summary if version else None,
            changed=list(version.changed) if version else [],
        )
        # a Stamp and one kind's facts make that kind's event (events.py), which mypy cannot follow through a union
        event = cast(DeployEvent, self.scrub({**stamp, **facts}))  # scrubbing changes only string values
        if await self.store.add_event(event, once=once or f"{facts['event']}:{sha}"):
            self.on_event(event)
