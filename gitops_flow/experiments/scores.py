"""Feedback scores on runs, in LangServe's feedback shape (``{"run_id", "key", "score", "value", "comment"}``):
checked, tied to the run this server answered (its flow, version, ref and user) and kept in the state store.

A score is kept per slot: the feedback key, the arm (version and ref) and who gave it (the run's user, or the run
itself when it had none). A later score of the same slot replaces the earlier one, so a user counts once per arm and
key however often they click (docs/experiments.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import re
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from gitops_flow.exceptions import BadFeedback, FeedbackRefused, Limited, StoreError, UnknownRun
from gitops_flow.experiments.ledger import RunLedger, session_key
from gitops_flow.guardrails.counters import Counters, Window
from gitops_flow.observability.telemetry.context import hashed
from gitops_flow.stores.base import FeedbackStore, Record, ScoreBounds

log = logging.getLogger("gitops_flow.server")

KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
MAX_COMMENT = 4000  # characters
MAX_SCORE = 1e9  # a score's magnitude at most
MAX_QUEUED = 10_000  # scores of flows' outputs waiting for a batch; past it they are dropped (a store that is away)
FIELDS = frozenset({"run_id", "session_id", "key", "score", "value", "comment", "feedback_id", "source_info"})
MAX_SESSION = 256  # characters of a session id


@dataclass(frozen=True, slots=True)
class FeedbackBody:
    """One checked feedback body."""

    run_id: str  # empty when the feedback names a session instead
    key: str
    score: float
    value: Any = None
    comment: str | None = None
    session: str | None = None  # the session id's hash: feedback on the session's last run of the flow


def parse(body: dict[str, Any]) -> FeedbackBody:
    """A feedback body as LangServe's client sends it; raises BadFeedback naming the first field that is wrong."""
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise BadFeedback("bad-feedback", f"the feedback has unknown fields: {', '.join(unknown)}")
    run_id, session = body.get("run_id"), body.get("session_id")
    if run_id is None and session is not None:
        if not isinstance(session, str) or not 0 < len(session) <= MAX_SESSION:
            raise BadFeedback("bad-session-id", f"session_id is the session's id, 1 to {MAX_SESSION} characters")
        run: str | None = ""
    else:
        session = None
        try:
            run = str(uuid.UUID(run_id)) if isinstance(run_id, str) else None
        except ValueError:
            run = None
    if run is None:
        raise BadFeedback(
            "bad-run-id", "run_id is the run id an answer gave (metadata.run_id), a UUID; or name a session_id"
        )
    key = body.get("key")
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise BadFeedback(
            "bad-key", "key is 1 to 64 letters, digits or _ . : - (starting with a letter or digit), like 'liked'"
        )
    score = body.get("score")
    if isinstance(score, bool):
        number = 1.0 if score else 0.0
    elif isinstance(score, int | float) and math.isfinite(score) and abs(score) <= MAX_SCORE:
        number = float(score)
    else:
        raise BadFeedback("bad-score", f"score is a number (at most {MAX_SCORE:g} either way) or true/false")
    comment = body.get("comment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT):
        raise BadFeedback("bad-comment", f"comment is text of at most {MAX_COMMENT:,} characters")
    return FeedbackBody(run, key, number, body.get("value"), comment, hashed(session) if session else None)


def slot(key: str, run_id: str, run: Record) -> str:
    """Where a score is kept: one per key, arm and user (or run, without a user)."""
    who = f"user:{run['user']}" if run.get("user") else f"run:{run_id}"
    return f"{key}|{run['version']}|{run.get('ref') or ''}|{who}"


@dataclass(slots=True)
class _Waiting:
    """One score waiting for its batch: the feedback, where it came from, and the answer its request waits for."""

    feedback: FeedbackBody
    flow: str | None
    user: str | None
    done: asyncio.Future[Record] | None  # None: nobody waits (a flow's own output score)
    run: Record | None = None  # known already for an output score; else looked up in the ledger
    rated: bool = True  # counted against the user's feedback rate


class Scores:
    """Takes feedback: looks its run up in the ledger, applies the bounds, keeps the score in the store.

    Feedback is taken in batches, as a database commits a group: a request puts its score in the queue and waits;
    one task takes everything queued, then looks every run up in one read, counts every rate in one trip and keeps
    every score in one write per flow, and answers each request. Scores that come while a batch is written make the
    next one. So a batch is one write whatever its size, and ingest grows with load instead of paying three trips to
    the store per score; a request still gets its 202 only once its score is kept (or its 404, 422 or 429)."""

    def __init__(
        self,
        ledger: RunLedger,
        store: FeedbackStore,
        bounds: ScoreBounds,
        *,
        counters: Counters | None = None,
        rate: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.bounds = bounds
        self.counters = counters  # where each user's feedback rate is counted (shared like the flows' limits)
        self.window = Window.per_second(rate)
        self.clock = clock
        self._queue: list[_Waiting] = []
        self._tasks: set[asyncio.Task[None]] = set()  # the batch being taken, and runs waiting for another worker's
        self._draining = False
        self._dropped = 0
        self.generations: dict[str, int] = {}  # per flow: how many batches kept scores of it (the reports' cache)

    async def take(self, feedback: FeedbackBody, *, flow: str | None, user: str | None) -> Record:
        """Keep ``feedback`` and return the record kept. ``flow``: the flow the path named (None for ``/feedback``);
        ``user`` the hash of the user the request names, if any, which must be the run's. The rate is counted per
        user of the flow, or per run for a run without a user (its one score per key is replaced, so its feedback
        takes no more room however often it comes). Raises UnknownRun, Limited, FeedbackRefused, StoreError."""
        done: asyncio.Future[Record] = asyncio.get_running_loop().create_future()
        self._enqueue(_Waiting(feedback, flow, user, done))
        return await done

    def note(self, run_id: str, run: Record, key: str, score: float) -> None:
        """Keep a score the flow produced itself for ``run_id`` (its ``run`` record as the ledger notes it), in the
        next batch, without waiting: not counted against a user's rate. Past MAX_QUEUED scores waiting (a store
        that is away), it is dropped and counted in a warning."""
        if len(self._queue) >= MAX_QUEUED:
            self._dropped += 1
            return
        self._enqueue(_Waiting(FeedbackBody(run_id, key, score), str(run["flow"]), None, None, run, rated=False))

    async def close(self) -> None:
        """Wait for the batches under way (the scores queued are written before the server stops)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _enqueue(self, waiting: _Waiting) -> None:
        self._queue.append(waiting)
        if not self._draining:
            self._draining = True
            self._spawn(self._drain())

    def _spawn(self, step: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(step)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                await self._guarded(batch, retry=True)
        finally:
            self._draining = False
            if self._dropped:
                log.warning("%d scores of flows' outputs were not kept: the state store is behind", self._dropped)
                self._dropped = 0

    async def _take(self, batch: list[_Waiting], *, retry: bool) -> None:
        """Take one batch; a run not found yet (another worker's batch of answered runs may not be written) is
        looked for again after one interval of the ledger, in a batch of its own, so it holds up no other."""
        try:
            wanted = [_wanted(w) for w in batch if w.run is None]
            runs = await self.ledger.find_many(list(dict.fromkeys(wanted))) if wanted else {}
        except StoreError as exc:
            _fail(batch, exc)
            return
        later: list[_Waiting] = []
        found: list[_Waiting] = []
        for waiting in batch:
            if waiting.run is None:
                waiting.run = runs.get(_wanted(waiting))
                if waiting.run is not None and waiting.feedback.session is not None:  # the session's last run
                    run_id = str(waiting.run.pop("run_id", ""))
                    waiting.feedback = dataclasses.replace(waiting.feedback, run_id=run_id)
            if waiting.run is None and retry:
                later.append(waiting)
            elif waiting.run is None or not _belongs(waiting):
                _fail([waiting], _unknown(waiting.feedback.run_id or "of that session"))
            else:
                found.append(waiting)
        if later:
            self._spawn(self._again(later))
        try:
            found = await self._rated(found)
            await self._keep(found)
        except StoreError as exc:
            _fail(found, exc)

    async def _again(self, batch: list[_Waiting]) -> None:
        await asyncio.sleep(self.ledger.interval)
        await self._guarded(batch, retry=False)

    async def _guarded(self, batch: list[_Waiting], *, retry: bool) -> None:
        """``_take``, and whatever it did not expect answers every request of the batch still waiting (a 500)."""
        try:
            await self._take(batch, retry=retry)
        except Exception as exc:  # a bug must not leave requests waiting forever
            log.exception("a batch of feedback failed")
            _fail(batch, exc)

    async def _rated(self, batch: list[_Waiting]) -> list[_Waiting]:
        """The scores within their user's rate; the others are answered 429."""
        rated = [w for w in batch if w.rated]
        if self.counters is None or not rated:
            return batch
        keys = []
        for waiting in rated:
            run = waiting.run
            assert run is not None
            who = f"user:{run['user']}" if run.get("user") else f"run:{waiting.feedback.run_id}"
            keys.append(self.window.key(f"feedback:{run['flow']}:{who}"))
        waits = await self.counters.hit_many(keys, self.window)
        refused = {id(w): wait for w, wait in zip(rated, waits, strict=True) if wait is not None}
        for waiting in rated:
            wait = refused.get(id(waiting))
            if wait is not None:
                name = waiting.run["flow"] if waiting.run else ""
                _fail(
                    [waiting],
                    Limited(
                        f"too much feedback from one user of flow {name!r}; try again in {wait:.1f} s",
                        code="rate-limited",
                        retry_after=wait,
                    ),
                )
        return [w for w in batch if id(w) not in refused]

    async def _keep(self, batch: list[_Waiting]) -> None:
        """One write per flow of the batch; each request answered with its record, or FeedbackRefused."""
        by_flow: dict[str, list[tuple[_Waiting, Record]]] = {}
        now = self.clock()
        for waiting in batch:
            run, feedback = waiting.run, waiting.feedback
            assert run is not None
            record: Record = {
                "id": str(uuid.uuid4()),
                "run_id": feedback.run_id,
                "key": feedback.key,
                "score": feedback.score,
                "value": feedback.value,
                "comment": feedback.comment,
                "flow": str(run["flow"]),
                "version": run["version"],
                "ref": run.get("ref"),
                "user": run.get("user"),
                "counted": run.get("counted", True),
                "created_at": now,
            }
            if not waiting.rated:
                record["source"] = "output"
            by_flow.setdefault(record["flow"], []).append((waiting, record))
        for name, entries in by_flow.items():
            kept = await self.store.add_scores(
                name,
                [(r["key"], slot(r["key"], r["run_id"], w.run or {}), r) for w, r in entries],
                self.bounds,
            )
            if any(kept):
                self.generations[name] = self.generations.get(name, 0) + 1
            for (waiting, record), ok in zip(entries, kept, strict=True):
                if ok:
                    _answer(waiting, record)
                else:
                    _fail(
                        [waiting],
                        FeedbackRefused(
                            f"flow {name!r} already has {self.bounds.max_keys} feedback keys; "
                            f"{record['key']!r} would be one more"
                        ),
                    )


def _wanted(waiting: _Waiting) -> str:
    """What the ledger is asked for: the run, or the session's last run of the flow the path names."""
    feedback = waiting.feedback
    if feedback.session is not None:
        return session_key(waiting.flow or "", feedback.session)
    return feedback.run_id


def _belongs(waiting: _Waiting) -> bool:
    """The run is of the flow the path named, and of the user the request named (when it names one)."""
    run = waiting.run
    assert run is not None
    if waiting.flow is not None and run.get("flow") != waiting.flow:
        return False
    return waiting.user is None or run.get("user") in (None, waiting.user)


def _unknown(run_id: str) -> UnknownRun:
    return UnknownRun(f"no run {run_id} was answered by this server within the feedback window")


def _answer(waiting: _Waiting, record: Record) -> None:
    if waiting.done is not None and not waiting.done.done():
        waiting.done.set_result(record)


def _fail(batch: list[_Waiting], exc: Exception) -> None:
    for waiting in batch:
        if waiting.done is not None and not waiting.done.done():
            waiting.done.set_exception(exc)
        elif waiting.done is None:
            log.warning("a score of flow %r's output was not kept: %s", waiting.flow, exc)
