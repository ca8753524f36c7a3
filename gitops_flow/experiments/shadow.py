"""Shadows: a candidate ref run on a share of the requests another ref answers, off the response path, its answer
never sent but scored against the one that was (runtime/scorers.py, or a judge: runtime/judge.py), the score kept
in the state store beside the users' feedback (docs/experiments.md, "Shadow and judge").

All a request pays is a draw and, for a drawn run, a put on a bounded queue (``offer``): it never waits for a
candidate. A few workers per process (``concurrency``) take the queue's runs; each is first held to its shadow's
budget (runs per second, shared by every replica through the limits' counters, and tokens per window: the
candidate's and its judge's), then runs the candidate and scores it, within ``timeout``. A run drawn when the queue
is full, or past the budget, is dropped and counted, never waited for. A candidate's run is not the user's: it
saves no conversation turn (it reads the session's, as its primary did), it is not cached, not in the ledger (no
feedback names it), not counted as the ref's traffic, and the canary guard never hears of it.

The counts (drawn, run, failed, dropped by reason, running) are this process's, as the traffic figures are; the
scores are the store's, shared by every worker and replica.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gitops_flow.delivery.routing_table import Route, Shadowed
from gitops_flow.exceptions import StoreError
from gitops_flow.experiments.ledger import new_run_id
from gitops_flow.guardrails.counters import Counters, Reserved, Window
from gitops_flow.observability.metrics import Metrics
from gitops_flow.observability.telemetry.context import CURRENT, RequestContext
from gitops_flow.observability.telemetry.nodes import RunObserver
from gitops_flow.observability.telemetry.runs import run_extras
from gitops_flow.runtime.compiler import BuiltFlow, runnable_config
from gitops_flow.runtime.conversations import UNSAVED, UNSAVED_KEY
from gitops_flow.runtime.executor import Executor
from gitops_flow.runtime.judge import Judge, JudgeUnavailable, asked, reading
from gitops_flow.runtime.scorers import compare
from gitops_flow.stores.base import FeedbackStore, ScoreBounds

log = logging.getLogger("gitops_flow.server")

KEY_PREFIX = "shadow:"  # a shadow's scores are kept under the feedback key shadow:<scorer>
DROPPED = ("queue", "rate", "tokens", "judge")
MAX_FIGURES = 1000  # shadows (flow, ref, candidate and its build) whose counts a process keeps


def score_key(scorer: str) -> str:
    return f"{KEY_PREFIX}{scorer}"


@dataclass(slots=True)
class ShadowFigures:
    """This process's counts of one shadow (a candidate's build beside one ref's): runs drawn, finished (scored or
    not), failed, running now, and dropped by reason (queue full, past the rate or the tokens, no judge)."""

    drawn: int = 0
    runs: int = 0
    scored: int = 0
    failed: int = 0
    running: int = 0
    tokens: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROPPED, 0))
    unscored: str | None = None  # why the last runs could not be scored (no judge model, a judge's reply)

    def shown(self) -> dict[str, Any]:
        return {
            "drawn": self.drawn,
            "runs": self.runs,
            "scored": self.scored,
            "failed": self.failed,
            "running": self.running,
            "tokens": self.tokens,
            "dropped": dict(self.dropped),
            "unscored": self.unscored,
        }


# (flow, the shadowed ref and the commit serving it, the candidate's ref and the commit serving it)
FiguresKey = tuple[str, str | None, str | None, str | None, str | None]


def figures_key(flow: str, shadowed: Shadowed) -> FiguresKey:
    source, candidate = shadowed.source, shadowed.candidate
    return flow, source.ref, source.serving, candidate.ref, candidate.serving


@dataclass(frozen=True, slots=True)
class _Job:
    """A drawn shadow run: the request's input and config, the answer that was sent, the candidate to run."""

    flow: str
    shadowed: Shadowed
    value: Any
    config: Mapping[str, Any]
    answer: Any
    rubric: str | None


class _Tally:
    """Counts a shadow run's tokens (the candidate's runs and the judge's) as a request's meter would."""

    def __init__(self) -> None:
        self.tokens = 0

    def run_started(self) -> None:
        pass

    def run_ended(self, tokens: int, complete: bool) -> None:
        self.tokens += tokens


class Shadows:
    """Draws, queues, runs and scores shadow runs (the module's docstring). ``judge`` makes the operator's judge
    (runtime/judge.Judge.configured) the first time a judge scorer needs it; it raises JudgeUnavailable when there
    is none, and that reason is shown on every shadow that needs one."""

    def __init__(
        self,
        executor: Executor,
        store: FeedbackStore,
        counters: Counters,
        metrics: Metrics,
        bounds: ScoreBounds,
        *,
        judge: Callable[[], Judge] | None = None,
        queue: int = 100,
        concurrency: int = 2,
        timeout: float = 60.0,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.executor = executor
        self.store = store
        self.counters = counters
        self.metrics = metrics
        self.bounds = bounds
        self.concurrency = concurrency
        self.timeout = timeout
        self.rand = rand
        self.clock = clock
        self._make_judge = judge
        self._judge: Judge | None = None
        self._no_judge: str | None = None if judge is not None else "no judge is configured"
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(queue)
        self._judging = asyncio.Lock()
        self._figures: dict[FiguresKey, ShadowFigures] = {}

    def figures(self, flow: str, shadowed: Shadowed) -> ShadowFigures:
        """This process's counts of a shadow (zero when it never ran here)."""
        return self._figures.get(figures_key(flow, shadowed)) or ShadowFigures()

    def offer(
        self,
        flow: str,
        route: Route | None,
        ref: str | None,
        serving: str,
        value: Any,
        config: Mapping[str, Any],
        answer: Any,
        rubrics: Mapping[str, str],
    ) -> None:
        """On the request path, once ``ref`` (serving commit ``serving``'s build) has answered ``value`` with
        ``answer``: each of the ref's shadows draws whether it runs too, and a drawn run is queued, or dropped and
        counted when the queue is full or its judge cannot be had. Never waits, never raises."""
        if route is None or not route.shadows:
            return
        for shadowed in route.shadows_of(ref, serving):
            if self.rand() * 100.0 >= shadowed.rule.share:
                continue
            figures = self._counts(flow, shadowed)
            figures.drawn += 1
            rubric = shadowed.rule.rubric
            if rubric is not None and self._no_judge is not None:  # known to have none: nothing to queue
                figures.unscored = self._no_judge
                self._drop(flow, shadowed, figures, "judge")
                continue
            job = _Job(flow, shadowed, value, config, answer, rubrics.get(rubric) if rubric is not None else None)
            try:
                self._queue.put_nowait(job)
            except asyncio.QueueFull:
                self._drop(flow, shadowed, figures, "queue")

    def judge(self) -> Judge | None:
        """The operator's judge, made once; None when there is none (``_no_judge`` says why)."""
        if self._judge is None and self._no_judge is None and self._make_judge is not None:
            try:
                self._judge = self._make_judge()
            except JudgeUnavailable as exc:
                self._no_judge = str(exc)
                log.warning("shadow judges cannot score: %s", exc)
        return self._judge

    async def run(self) -> None:
        """Take the queue's runs with ``concurrency`` workers until cancelled."""
        workers = [asyncio.create_task(self._work(), name=f"shadow {n}") for n in range(self.concurrency)]
        try:
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            # each run in a context of its own: not a request's (its meter, its log fields) but the shadow's
            try:
                await asyncio.create_task(self._one(job), context=contextvars.Context())
            except Exception:  # a bug in one run must not stop the worker
                log.exception("a shadow run of flow %s broke", job.flow)

    async def _one(self, job: _Job) -> None:
        flow, shadowed = job.flow, job.shadowed
        figures = self._counts(flow, shadowed)
        if shadowed.rule.rubric is not None and self._judge is None:
            # the judge is made once, by the first run that needs it, off the event loop (it imports its provider)
            async with self._judging:  # one run makes it; the others wait for it
                made: Judge | None = await asyncio.to_thread(self.judge)
            if made is None:
                figures.unscored = self._no_judge
                self._drop(flow, shadowed, figures, "judge")
                return
        budget = shadowed.rule.budget
        name = f"shadow:{flow}:{shadowed.source.ref}>{shadowed.candidate.ref}"
        tokens_key = f"{name}:tokens"
        reserved: Reserved | None = None
        try:
            rate = Window.per_second(budget.requests_per_second)
            if await self.counters.hit(rate.key(f"{name}:rate"), rate) is not None:
                self._drop(flow, shadowed, figures, "rate")
                return
            if budget.tokens is not None:
                found = await self.counters.reserve(tokens_key, budget.tokens, budget.window, 0)
                if not isinstance(found, Reserved):
                    self._drop(flow, shadowed, figures, "tokens")
                    return
                reserved = found
        except StoreError as exc:  # the budget cannot be read: a shadow is not worth running blind
            log.warning("shadow %s dropped: its budget cannot be read (%s)", name, exc)
            self._drop(flow, shadowed, figures, "rate")
            return
        tally = _Tally()
        context = RequestContext("SHADOW", f"/flows/{flow}", flow=flow, meter=tally)
        CURRENT.set(context)
        figures.running += 1
        try:
            async with asyncio.timeout(self.timeout):
                score = await self._run(job, context)
        except Exception as exc:  # noqa: BLE001 - a candidate's failure is counted, and answers nobody
            figures.failed += 1
            self.metrics.shadow_runs.labels(flow, shadowed.candidate.ref, "failed").inc()
            log.info("shadow %s failed: %s", name, type(exc).__name__)
            return
        finally:
            figures.running -= 1
            figures.tokens += tally.tokens
            if reserved is not None and budget.tokens is not None and tally.tokens:
                try:
                    await self.counters.adjust(tokens_key, budget.window, reserved.slot, tally.tokens)
                except StoreError as exc:
                    log.warning("shadow %s: its tokens were not counted (%s)", name, exc)
        figures.runs += 1
        if score is None:
            self.metrics.shadow_runs.labels(flow, shadowed.candidate.ref, "unscored").inc()
            return
        await self._keep(job, score, figures)

    async def _run(self, job: _Job, context: RequestContext) -> float | None:
        """The candidate's answer to the job's input, scored; None when the judge gave no score."""
        shadowed = job.shadowed
        candidate = shadowed.candidate
        assert candidate.version is not None and candidate.serving is not None, "live targets have a version"
        built = candidate.version.flows[job.flow]
        built.check_input(job.value)
        configurable = {**job.config.get("configurable", {}), UNSAVED_KEY: UNSAVED}  # reads the session, saves nothing
        answer = await self._metered(
            context,
            built,
            lambda run_id: self.executor.runner(built).ainvoke(
                job.value,
                runnable_config(
                    {**job.config, "configurable": configurable, **run_extras(run_id)},
                    job.flow,
                    run_id,
                    {"flow_version": candidate.serving, "ref": candidate.ref, "shadow": True},
                ),
            ),
        )
        rule = shadowed.rule
        if rule.rubric is None:
            return compare(rule.scorer, answer, job.answer, rule.answer_schema)
        judge = self.judge()
        assert judge is not None, "a judged run runs only with a judge (_one)"
        value = asked(job.rubric or "", job.value, answer, reference=job.answer)
        reply = await self._metered(
            context,
            judge.built,
            lambda run_id: self.executor.runner(judge.built).ainvoke(
                value, runnable_config(run_extras(run_id), "shadow-judge", run_id, {})
            ),
        )
        found = reading(reply)
        if found is None:
            said = f"the judge's reply has no score: {str(reply)[:80]!r}"
            self._counts(job.flow, shadowed).unscored = said
        return found

    async def _metered(self, context: RequestContext, built: BuiltFlow, start: Callable[[uuid.UUID], Any]) -> Any:
        """One run under ``context``, its models' tokens told to the context's meter."""
        observer = RunObserver(context, {node.id: node.component for node in built.spec.nodes})
        context.observer = observer
        try:
            return await start(uuid.uuid4())
        finally:
            context.observer = None
            if context.meter is not None:
                context.meter.run_ended(observer.usage.input_tokens + observer.usage.output_tokens, True)

    async def _keep(self, job: _Job, score: float, figures: ShadowFigures) -> None:
        shadowed = job.shadowed
        candidate, source = shadowed.candidate, shadowed.source
        key = score_key(shadowed.rule.scorer)
        run_id = str(new_run_id())
        record = {
            "id": str(uuid.uuid4()),
            "run_id": run_id,
            "key": key,
            "score": score,
            "value": None,
            "comment": None,
            "flow": job.flow,
            "version": candidate.serving,
            "ref": candidate.ref,
            "user": None,
            "counted": False,  # never an arm's feedback: the report reads it as its shadow's
            "shadow": True,
            "source": source.ref,
            "source_version": source.serving,
            "created_at": self.clock(),
        }
        slot = f"{key}|{candidate.serving}|{candidate.ref or ''}|{source.serving}|run:{run_id}"
        try:
            kept = await self.store.add_score(job.flow, key, slot, record, self.bounds)
        except StoreError as exc:
            log.warning("a shadow score of flow %s was not kept: %s", job.flow, exc)
            figures.unscored = "the score was not kept: the state store is unreachable"
            self.metrics.shadow_runs.labels(job.flow, candidate.ref, "unscored").inc()
            return
        if not kept:
            figures.unscored = f"the score was not kept: flow {job.flow!r} has {self.bounds.max_keys} feedback keys"
            self.metrics.shadow_runs.labels(job.flow, candidate.ref, "unscored").inc()
            return
        figures.scored += 1
        self.metrics.shadow_runs.labels(job.flow, candidate.ref, "scored").inc()
        self.metrics.shadow_scores.labels(job.flow, candidate.ref, shadowed.rule.scorer).observe(score)

    def _counts(self, flow: str, shadowed: Shadowed) -> ShadowFigures:
        """The counts of a shadow, made on its first run; the oldest go past MAX_FIGURES (each new build of a
        candidate or of the ref it shadows has counts of its own)."""
        key = figures_key(flow, shadowed)
        figures = self._figures.get(key)
        if figures is None:
            if len(self._figures) >= MAX_FIGURES:
                del self._figures[next(iter(self._figures))]
            figures = self._figures[key] = ShadowFigures()
        return figures

    def _drop(self, flow: str, shadowed: Shadowed, figures: ShadowFigures, reason: str) -> None:
        figures.dropped[reason] += 1
        self.metrics.shadow_dropped.labels(flow, shadowed.candidate.ref, reason).inc()
