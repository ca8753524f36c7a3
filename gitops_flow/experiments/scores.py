"""Feedback scores on runs, in LangServe's feedback shape (``{"run_id", "key", "score", "value", "comment"}``):
checked, tied to the run this server answered (its flow, version, ref and user) and kept in the state store.

A score is kept per slot: the feedback key, the arm (version and ref) and who gave it (the run's user, or the run
itself when it had none). A later score of the same slot replaces the earlier one, so a user counts once per arm and
key however often they click (docs/experiments.md).
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gitops_flow.exceptions import BadFeedback, FeedbackRefused, Limited, UnknownRun
from gitops_flow.experiments.ledger import RunLedger
from gitops_flow.guardrails.counters import Counters, Window
from gitops_flow.stores.base import FeedbackStore, Record, ScoreBounds

KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
MAX_COMMENT = 4000  # characters
MAX_SCORE = 1e9  # a score's magnitude at most
FIELDS = frozenset({"run_id", "key", "score", "value", "comment", "feedback_id", "source_info"})


@dataclass(frozen=True, slots=True)
class FeedbackBody:
    """One checked feedback body."""

    run_id: str
    key: str
    score: float
    value: Any = None
    comment: str | None = None


def parse(body: dict[str, Any]) -> FeedbackBody:
    """A feedback body as LangServe's client sends it; raises BadFeedback naming the first field that is wrong."""
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise BadFeedback("bad-feedback", f"the feedback has unknown fields: {', '.join(unknown)}")
    run_id = body.get("run_id")
    try:
        run = str(uuid.UUID(run_id)) if isinstance(run_id, str) else None
    except ValueError:
        run = None
    if run is None:
        raise BadFeedback("bad-run-id", "run_id is the run id an answer gave (metadata.run_id), a UUID")
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
    return FeedbackBody(run, key, number, body.get("value"), comment)


def slot(key: str, run_id: str, run: Record) -> str:
    """Where a score is kept: one per key, arm and user (or run, without a user)."""
    who = f"user:{run['user']}" if run.get("user") else f"run:{run_id}"
    return f"{key}|{run['version']}|{run.get('ref') or ''}|{who}"


class Scores:
    """Takes feedback: looks its run up in the ledger, applies the bounds, keeps the score in the store."""

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

    async def take(self, feedback: FeedbackBody, *, flow: str | None, user: str | None) -> Record:
        """Keep ``feedback`` and return the record kept. ``flow``: the flow the path named (None for ``/feedback``);
        ``user`` the hash of the user the request names, if any, which must be the run's. The rate is counted per
        user of the flow, or per run for a run without a user (its one score per key is replaced, so its feedback
        takes no more room however often it comes). Raises UnknownRun, Limited, FeedbackRefused,
        StoreError."""
        run = await self.ledger.find(feedback.run_id)
        if run is None or (flow is not None and run.get("flow") != flow):
            raise UnknownRun(f"no run {feedback.run_id} was answered by this server within the feedback window")
        if user is not None and run.get("user") not in (None, user):
            raise UnknownRun(f"no run {feedback.run_id} was answered by this server within the feedback window")
        name = str(run["flow"])
        if self.counters is not None:
            who = f"user:{run['user']}" if run.get("user") else f"run:{feedback.run_id}"
            wait = await self.counters.hit(self.window.key(f"feedback:{name}:{who}"), self.window)
            if wait is not None:
                raise Limited(
                    f"too much feedback from one user of flow {name!r}; try again in {wait:.1f} s",
                    code="rate-limited",
                    retry_after=wait,
                )
        record: Record = {
            "id": str(uuid.uuid4()),
            "run_id": feedback.run_id,
            "key": feedback.key,
            "score": feedback.score,
            "value": feedback.value,
            "comment": feedback.comment,
            "flow": name,
            "version": run["version"],
            "ref": run.get("ref"),
            "user": run.get("user"),
            "counted": run.get("counted", True),
            "created_at": self.clock(),
        }
        if not await self.store.add_score(
            name, feedback.key, slot(feedback.key, feedback.run_id, run), record, self.bounds
        ):
            raise FeedbackRefused(
                f"flow {name!r} already has {self.bounds.max_keys} feedback keys; {feedback.key!r} would be one more"
            )
        return record
