"""A request's attempt on the version chosen for it, and the canary guard's count of it: the one place where a
canary's outcome is judged, for every path (invoke, batch, the streams, LangFlow's run API, a refused input).

A canary answers for what it does worse than its primary (the route's first ref) on the same input, never for what
every version does with that input (an input a content filter cuts off mid-stream, a question that is slow
everywhere): otherwise a client who picks user ids that land on the canary could abort a healthy one. So:

- a canary that fails before its answer has begun (an invoke, a stream's first chunk) is retried on its primary,
  whose answer is the response; the failure counts only when the primary succeeded (``attempt``);
- a canary that refuses an input its primary accepts is answered by the primary, and counted (``refused``);
- a canary that fails after its answer has begun (a stream cut off), or answers more slowly than the analysis
  budget (``max_p99_ms``), is judged by running the same input on its primary in the background, off the request,
  with nobody to answer and no conversation turn saved (``ended``): the failure counts only when the primary
  succeeded; the latency counts only when the canary took more than a quarter longer than the primary (a margin
  above the noise of two runs of one input, so that inputs slow on every version, or near the budget on every
  version, count nothing), and otherwise the request counts without its latency.

These runs on the primary are bounded (``verifications`` at once per process, each ending after four times the
canary's time, at least 30 s, as a failure of the primary); one that finds no room is not made,
and the canary's outcome is then not counted (a failure) or counted without its latency (a slow answer), so a
flood can neither abort a healthy canary nor cost more than the bound. With ``compare`` off (Settings.
canary_fallback: a flow whose runs must not be repeated) nothing runs twice, and the canary answers for every
outcome as it is.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from gitops_flow.components.provider_errors import cause_of
from gitops_flow.delivery.guard import Guard
from gitops_flow.delivery.routing_table import Choice
from gitops_flow.exceptions import GitOpsFlowError
from gitops_flow.flow.routing import Analysis
from gitops_flow.observability.metrics import Metrics
from gitops_flow.runtime.compiler import BuiltFlow
from gitops_flow.runtime.conversations import MissingSession

log = logging.getLogger("gitops_flow.server")

SLOWER = 1.25  # a canary is slower than its primary on an input when it takes more than this many times as long
# a run on the primary that judges a canary ends after this many times the canary's time (at least MIN_DEADLINE
# seconds): a primary that hangs holds no room for ever, and counts as having failed
DEADLINE_FACTOR = 4.0
MIN_DEADLINE = 30.0
T = TypeVar("T")
Run = Callable[[Choice, BuiltFlow], Awaitable[Any]]  # runs the request's input to its end on a version's build
Start = Callable[[Choice, BuiltFlow], AsyncIterator[Any]]  # starts the request's stream on a version's build


class Failed(Exception):
    """A request's run failed on ``choice`` (a canary's primary, when the canary was retried there) after
    ``seconds``; ``cause`` is what the flow raised."""

    def __init__(self, choice: Choice, cause: BaseException, seconds: float) -> None:
        super().__init__(type(cause).__name__)
        self.choice = choice
        self.cause = cause
        self.seconds = seconds


def drained(start: Start) -> Run:
    """A run of a stream to its end (its chunks dropped): how a stream's input is run again on the primary."""

    async def run(choice: Choice, built: BuiltFlow) -> None:
        chunks = start(choice, built)
        try:
            async for _ in chunks:
                pass
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()

    return run


class Attempts:
    """Runs a request's attempts and counts them: Prometheus for every run, the canary guard for a canary's (see the
    module's docstring). ``analysis`` gives the routing file's thresholds now (None: no canary is guarded)."""

    def __init__(
        self,
        guard: Guard,
        metrics: Metrics,
        analysis: Callable[[], Analysis | None],
        *,
        compare: bool = True,
        verifications: int = 8,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.guard = guard
        self.metrics = metrics
        self.analysis = analysis
        self.compare = compare
        self.verifications = verifications
        self.clock = clock
        self._running: set[asyncio.Task[None]] = set()

    def primary(self, choice: Choice, flow: str) -> tuple[Choice, BuiltFlow] | None:
        """The primary a canary's request is retried or judged on, with its build of ``flow``; None for a request
        that is not a canary's, a primary without the flow, or when nothing may run twice (``compare`` off)."""
        fallback = choice.fallback() if self.compare and choice.guard is not None else None
        built = fallback.version.flows.get(flow) if fallback is not None else None
        return (fallback, built) if fallback is not None and built is not None else None

    def refused(self, choice: Choice) -> None:
        """A canary refused an input its primary accepts (its input contract broke): counted against it."""
        assert choice.guard is not None, "only a canary is refused in favour of its primary"
        self.guard.record(choice.guard, False, 0.0)

    async def attempt(
        self, flow: str, choice: Choice, built: BuiltFlow, first: Callable[[Choice, BuiltFlow], Awaitable[T]]
    ) -> tuple[Choice, T]:
        """``first`` on ``choice`` (a whole run, or a stream up to its first chunk); a canary whose ``first`` fails
        is retried on its primary, and its failure counted when the primary succeeds. Returns the choice that
        answered and what ``first`` gave. Raises Failed (the caller reports it, then calls ``ended``);
        MissingSession and the server's own refusals (GitOpsFlowError) pass through, counted against nobody."""
        started = self.clock()
        try:
            return choice, await first(choice, built)
        except (MissingSession, GitOpsFlowError):
            raise
        except Exception as exc:
            failure, seconds = exc, self.clock() - started
        primary = self.primary(choice, flow)
        if primary is None:
            raise Failed(choice, failure, seconds) from None
        assert choice.guard is not None, "only a canary has a primary"
        self.metrics.observe(flow, choice.version.sha, choice.ref, False, seconds)  # the canary's attempt ends here
        self.metrics.failed(flow, choice.version.sha, choice.ref, cause_of(failure))
        log.warning(
            "flow %s canary %s failed (%s); its primary answers", flow, choice.version.sha[:12], cause_of(failure)
        )
        if log.isEnabledFor(logging.DEBUG):
            log.debug("flow %s canary %s failed: the traceback", flow, choice.version.sha[:12], exc_info=failure)
        again = self.clock()
        try:
            value = await first(*primary)
        except (MissingSession, GitOpsFlowError):
            raise
        except Exception as exc:  # every version fails on it: the caller's input, counted against nobody
            raise Failed(primary[0], exc, self.clock() - again) from None
        self.guard.record(choice.guard, False, seconds, cause=cause_of(failure))  # the primary did what it could not
        return primary[0], value

    def ended(
        self, flow: str, choice: Choice, ok: bool, seconds: float, again: Run | None, *, cause: str | None = None
    ) -> None:
        """A request's run on ``choice`` is over (``ok`` or not, after ``seconds``): counted, and for a canary that
        failed or was slower than the budget, judged against its primary by ``again`` (the same input run on the
        primary in the background; None: it cannot be run again, and the outcome counts as it is). ``cause`` names
        why a run failed (provider_errors.cause_of): a canary aborted for its failures says the commonest."""
        self.metrics.observe(flow, choice.version.sha, choice.ref, ok, seconds)
        if not ok and cause is not None:
            self.metrics.failed(flow, choice.version.sha, choice.ref, cause)
        key = choice.guard
        if key is None:
            return
        analysis = self.analysis()
        slow = analysis is not None and seconds * 1000.0 > analysis.max_p99_ms
        primary = self.primary(choice, flow) if again is not None and (slow or not ok) else None
        if primary is None or again is None:
            self.guard.record(key, ok, seconds, cause=cause)
            return
        if len(self._running) >= self.verifications:
            log.warning("flow %s canary %s: no room to judge a run against its primary; not counted", flow, key)
            if ok:
                self.guard.record(key, True, None)
            return
        judged = self._judge(flow, key, ok, seconds, primary, again, cause)
        task = asyncio.get_running_loop().create_task(judged, context=contextvars.Context())  # not the request's
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _judge(
        self,
        flow: str,
        key: str,
        ok: bool,
        seconds: float,
        primary: tuple[Choice, BuiltFlow],
        again: Run,
        cause: str | None,
    ) -> None:
        chosen, built = primary
        started = self.clock()
        try:
            async with asyncio.timeout(max(DEADLINE_FACTOR * seconds, MIN_DEADLINE)):
                await again(dataclasses.replace(chosen, verifying=True), built)
            primary_ok = True
        except Exception as exc:
            log.info("flow %s: the primary failed too on a canary's input (%s)", flow, type(exc).__name__)
            primary_ok = False
        took = self.clock() - started
        if not ok:
            if primary_ok:
                self.guard.record(key, False, seconds, cause=cause)  # the canary failed where the primary did not
            return
        slower = primary_ok and seconds > took * SLOWER
        self.guard.record(key, True, seconds if slower else None)

    async def close(self) -> None:
        """Stop the runs on primaries still going (the server stops); their canaries' outcomes are not counted."""
        running = list(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
