"""The gate: a request's limits (the routing file's ``limits:``) checked before its flow runs, held while it runs,
and let go as its answer ends.

Checked in this order, so a refusal costs the least it can: the token budgets (a reservation), then the runs at once
(held until the request ends, or ``lease_ttl`` for a process that died), then the request rates (a request refused
by a rate or a run at once holds nothing: its reservations are given back). Each level of a flow's limits counts
under its own key, shared through the counters:

    the flow          rate:<flow>   runs:<flow>   tokens:<flow>
    one user of it    rate:<flow>~<hash of the user>   runs:<flow>~<hash>
    one ref of it     rate:<flow>@<ref>   runs:<flow>@<ref>   tokens:<flow>@<ref>

A token budget admits a request while its window's spent tokens are under the budget, and then at once reserves the
request's estimate (guardrails.estimate) in the same atomic step of the counters, so requests admitted together
see each other's reservations: together they pass the budget by less than one reservation. As the request ends
(before its answer's last bytes go out), the reservation is settled: the difference to what its runs' models
reported (telemetry.nodes) is given back or charged. A run cut short (its client went away mid-stream: a provider
bills the prompt and what it generated until then, and reports it only with the last chunk) is charged at least the
whole reservation. Runs at once are let go at the same moment (telemetry.middleware), so a client's next request
finds the place free.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gitops_flow.exceptions import Limited, StoreError
from gitops_flow.flow.document import FlowSpec
from gitops_flow.flow.routing import FlowLimits, Rate, TokenBudget
from gitops_flow.guardrails.counters import Counters, Reserved, Window
from gitops_flow.guardrails.estimate import TokenEstimate
from gitops_flow.observability.telemetry.context import RequestContext, hashed

log = logging.getLogger("gitops_flow.server")

Scope = Literal["flow", "user", "ref"]
OnRefused = Callable[[str, str, Scope], None]  # (flow, limit, scope): for the metrics
FailurePolicy = Literal["open", "closed"]


@dataclass(frozen=True, slots=True)
class Reservation:
    """Tokens reserved on one budget, in window ``slot`` of its counter ``key``."""

    scope: Scope
    key: str
    budget: TokenBudget
    slot: int


@dataclass(slots=True)
class Held:
    """What the limits hold for one request: its runs at once (released when it ends) and its token reservations
    (settled when it ends). It is the request's meter (telemetry.context.Meter): its runs tell it their tokens."""

    leases: list[tuple[Scope, str, str]] = field(default_factory=list)  # (scope, key, lease)
    reservations: list[Reservation] = field(default_factory=list)
    amount: int = 0  # the tokens each reservation holds: the request's estimate
    tokens: int = 0  # what its runs reported
    running: int = 0  # its runs started and not ended (a stream its client left may never end)
    cut: bool = False  # one of its runs was cut short

    def run_started(self) -> None:
        self.running += 1

    def run_ended(self, tokens: int, complete: bool) -> None:
        self.running -= 1
        self.tokens += tokens
        self.cut = self.cut or not complete

    def charged(self) -> int:
        """What the request is charged: what its runs reported; at least its whole reservation when a run was cut
        short or never ended, whose models billed what nobody reported (their usage comes with the last chunk)."""
        if self.cut or self.running > 0:
            return max(self.tokens, self.amount)
        return self.tokens


class Gate:
    """Admits requests under their flow's limits; ``fail`` says what a request meets while the counters cannot be
    reached: ``open`` (the default) lets it through, logged, ``closed`` refuses it (503 store-unavailable)."""

    def __init__(
        self,
        counters: Counters,
        *,
        lease_ttl: float = 600.0,
        fail: FailurePolicy = "open",
        on_refused: OnRefused = lambda flow, limit, scope: None,
        estimate: TokenEstimate | None = None,
    ) -> None:
        self.counters = counters
        self.estimate = estimate  # None: a request reserves nothing (its tokens are counted as it ends)
        self.lease_ttl = lease_ttl
        self.fail = fail
        self.on_refused = on_refused

    async def admit(
        self,
        context: RequestContext,
        flow: str,
        limits: FlowLimits,
        ref: str | None,
        user: str | None,
        *,
        spec: FlowSpec | None = None,
        inputs: Sequence[Any] = (),
        tweaks: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """Check and hold every level of ``limits`` that applies to a request of ``flow`` served by ``ref`` for
        ``user``, reserving the estimate of its tokens (``spec``, with LangFlow's ``tweaks``, run on ``inputs``) on
        each budget; raises Limited (holding nothing more) when one refuses it."""
        levels: list[tuple[Scope, str, Rate, TokenBudget | None]] = [("flow", flow, limits, limits.tokens)]
        if user is not None and limits.per_user is not None:
            levels.append(("user", f"{flow}~{hashed(user)}", limits.per_user, None))
        own = limits.for_ref(flow, ref)
        if own is not None:
            levels.append(("ref", f"{flow}@{ref}", own, own.tokens))
        held = context.guard if isinstance(context.guard, Held) else None
        if held is None:
            held = Held()
            context.guard = held
            context.finalizers.append(self.settle)
            budgeted = any(budget is not None for *_, budget in levels)
            if budgeted and spec is not None and self.estimate is not None:
                held.amount = self.estimate.of(spec, inputs, tweaks)
        await self._admit(context, held, flow, levels)

    async def move(self, context: RequestContext, flow: str, limits: FlowLimits, ref: str | None) -> None:
        """A request admitted for one ref that another ref serves (its session was pinned there): the first ref's
        runs and reservations are let go and the second's checked and held."""
        held = context.guard
        if not isinstance(held, Held):
            return
        await self._release(held, "ref")
        own = limits.for_ref(flow, ref)
        if own is not None:
            await self._admit(context, held, flow, [("ref", f"{flow}@{ref}", own, own.tokens)])

    async def _admit(
        self, context: RequestContext, held: Held, flow: str, levels: list[tuple[Scope, str, Rate, TokenBudget | None]]
    ) -> None:
        leases, reservations = len(held.leases), len(held.reservations)
        try:
            for scope, key, _, budget in levels:
                if budget is not None:
                    made = await self.counters.reserve(f"tokens:{key}", budget.budget, budget.window, held.amount)
                    if not isinstance(made, Reserved):
                        self._refuse(flow, "tokens", scope)
                        raise Limited(
                            f"flow {flow!r} spent its token budget ({budget.budget:,} per {_span(budget.window)})",
                            code="token-budget-exhausted",
                            retry_after=made,
                        )
                    held.reservations.append(Reservation(scope, f"tokens:{key}", budget, made.slot))
            for scope, key, rate, _ in levels:
                if rate.concurrent is not None:
                    lease = uuid.uuid4().hex
                    if not await self.counters.acquire(f"runs:{key}", rate.concurrent, lease, self.lease_ttl):
                        self._refuse(flow, "concurrent", scope)
                        raise Limited(
                            f"flow {flow!r} runs {rate.concurrent} requests{_whose(scope)} at once; try again soon",
                            code="too-many-runs",
                            retry_after=1.0,
                        )
                    held.leases.append((scope, f"runs:{key}", lease))
            for scope, key, rate, _ in levels:
                if rate.requests_per_second is not None:
                    window = Window.per_second(rate.requests_per_second)
                    wait = await self.counters.hit(f"rate:{key}", window)
                    if wait is not None:
                        self._refuse(flow, "requests", scope)
                        raise Limited(
                            f"flow {flow!r} takes {_rate(window)}{_whose(scope)}; try again in {math.ceil(wait)} s",
                            code="rate-limited",
                            retry_after=wait,
                        )
        except Limited:
            await self._release(held, None, start=(leases, reservations))
            raise
        except StoreError as exc:
            await self._release(held, None, start=(leases, reservations))
            if self.fail == "closed":
                raise
            log.warning("limits of flow %s not checked, the request goes through: %s", flow, exc)
            return
        if held.reservations:
            context.meter = held

    async def settle(self, context: RequestContext) -> None:
        """As a request's answer ends: let its runs go, and settle its reservations with what it is charged."""
        held = context.guard
        if not isinstance(held, Held):
            return
        context.guard = None
        context.meter = None
        charged = held.charged()
        for reservation in held.reservations:
            await self._adjust(reservation, charged - held.amount)
        held.reservations = []
        await self._release(held, None)

    async def _release(self, held: Held, scope: Scope | None, *, start: tuple[int, int] = (0, 0)) -> None:
        """Let go of the runs ``held`` holds and give back its reservations whole (of ``scope``, or all; from
        ``start``: the runs and reservations taken until then are kept)."""
        kept = held.leases[: start[0]]
        for entry in held.leases[start[0] :]:
            if scope is not None and entry[0] != scope:
                kept.append(entry)
                continue
            try:
                await self.counters.release(entry[1], entry[2])
            except StoreError as exc:  # the lease expires on its own
                log.warning("a run of %s was not released (it expires by itself): %s", entry[1], exc)
        held.leases = kept
        reserved = held.reservations[: start[1]]
        for reservation in held.reservations[start[1] :]:
            if scope is not None and reservation.scope != scope:
                reserved.append(reservation)
            else:
                await self._adjust(reservation, -held.amount)
        held.reservations = reserved

    async def _adjust(self, reservation: Reservation, amount: int) -> None:
        budget = reservation.budget
        try:
            await self.counters.adjust(reservation.key, budget.window, reservation.slot, amount)
        except StoreError as exc:  # the reservation stays counted, whole
            log.warning("the tokens reserved on %s were not settled: %s", reservation.key, exc)

    def _refuse(self, flow: str, limit: str, scope: Scope) -> None:
        self.on_refused(flow, limit, scope)


def _whose(scope: Scope) -> str:
    return {"flow": "", "user": " per user", "ref": " on this ref"}[scope]


def _rate(window: Window) -> str:
    requests = "1 request" if window.amount == 1 else f"{window.amount} requests"
    return f"{requests} a second" if window.seconds == 1 else f"{requests} per {window.seconds} s"


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
