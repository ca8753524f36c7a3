"""The gate: a request's limits (the routing file's ``limits:``) checked before its flow runs, held while it runs,
and let go as its answer ends.

Checked in this order, so a refusal costs the least it can: the token budgets (a read), then the runs at once (held
until the request ends, or ``lease_ttl`` for a process that died), then the request rates (a request refused by a
rate holds nothing). Each level of a flow's limits counts under its own key, shared through the counters:

    the flow          rate:<flow>   runs:<flow>   tokens:<flow>
    one user of it    rate:<flow>~<hash of the user>   runs:<flow>~<hash>
    one ref of it     rate:<flow>@<ref>   runs:<flow>@<ref>   tokens:<flow>@<ref>

Tokens are counted as each run ends (a stream: with its last chunk), from what its models reported
(telemetry.nodes), before the answer is sent; so a request that starts under its budget runs to its end, and the
next one is refused once the window's tokens are spent. Runs at once are let go before the answer's last bytes go out
(telemetry.middleware), so a client's next request finds the place free.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from gitops_flow.exceptions import Limited, StoreError
from gitops_flow.guardrails.counters import Counters, Window
from gitops_flow.routing import FlowLimits, Rate, TokenBudget
from gitops_flow.telemetry.context import RequestContext, hashed

log = logging.getLogger("gitops_flow.server")

Scope = Literal["flow", "user", "ref"]
OnRefused = Callable[[str, str, Scope], None]  # (flow, limit, scope): for the metrics
FailurePolicy = Literal["open", "closed"]


@dataclass(slots=True)
class Held:
    """What the limits hold for one request: its runs at once (released when it ends) and the budgets its tokens
    are counted against."""

    leases: list[tuple[Scope, str, str]] = field(default_factory=list)  # (scope, key, lease)
    budgets: list[tuple[Scope, str, TokenBudget]] = field(default_factory=list)


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
    ) -> None:
        self.counters = counters
        self.lease_ttl = lease_ttl
        self.fail = fail
        self.on_refused = on_refused

    async def admit(
        self, context: RequestContext, flow: str, limits: FlowLimits, ref: str | None, user: str | None
    ) -> None:
        """Check and hold every level of ``limits`` that applies to a request of ``flow`` served by ``ref`` for
        ``user``; raises Limited (holding nothing more) when one refuses it."""
        levels: list[tuple[Scope, str, Rate, TokenBudget | None]] = [("flow", flow, limits, limits.tokens)]
        if user is not None and limits.per_user is not None:
            levels.append(("user", f"{flow}~{hashed(user)}", limits.per_user, None))
        own = limits.for_ref(flow, ref)
        if own is not None:
            levels.append(("ref", f"{flow}@{ref}", own, own.tokens))
        await self._admit(context, flow, levels)

    async def move(self, context: RequestContext, flow: str, limits: FlowLimits, ref: str | None) -> None:
        """A request admitted for one ref that another ref serves (its session was pinned there): the first ref's
        runs and budgets are let go and the second's checked and held."""
        held = context.guard
        if isinstance(held, Held):
            await self._release(held, "ref")
            held.budgets = [b for b in held.budgets if b[0] != "ref"]
        own = limits.for_ref(flow, ref)
        if own is not None:
            await self._admit(context, flow, [("ref", f"{flow}@{ref}", own, own.tokens)])

    async def _admit(
        self, context: RequestContext, flow: str, levels: list[tuple[Scope, str, Rate, TokenBudget | None]]
    ) -> None:
        held = context.guard if isinstance(context.guard, Held) else None
        if held is None:
            held = Held()
            context.guard = held
            context.finalizers.append(self.settle)
        taken = len(held.leases)
        try:
            for scope, key, _, budget in levels:
                if budget is not None:
                    used, reset = await self.counters.spent(f"tokens:{key}", budget.budget, budget.window)
                    if used >= budget.budget:
                        self._refuse(flow, "tokens", scope)
                        raise Limited(
                            f"flow {flow!r} spent its token budget ({budget.budget:,} per {_span(budget.window)})",
                            code="token-budget-exhausted",
                            retry_after=reset,
                        )
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
            await self._release(held, None, start=taken)
            raise
        except StoreError as exc:
            await self._release(held, None, start=taken)
            if self.fail == "closed":
                raise
            log.warning("limits of flow %s not checked, the request goes through: %s", flow, exc)
            return
        held.budgets += [(scope, f"tokens:{key}", budget) for scope, key, _, budget in levels if budget is not None]
        if held.budgets:
            context.charge = self.charge

    async def charge(self, context: RequestContext, tokens: int) -> None:
        """A run of the request is over: its ``tokens`` count against the request's budgets."""
        held = context.guard
        if not isinstance(held, Held) or tokens <= 0:
            return
        try:
            for _, key, budget in held.budgets:
                await self.counters.spend(key, budget.budget, budget.window, tokens)
        except StoreError as exc:
            log.warning("the tokens of run %s were not counted: %s", context.run_id, exc)

    async def settle(self, context: RequestContext) -> None:
        """As a request's answer ends: let its runs go."""
        held = context.guard
        if not isinstance(held, Held):
            return
        context.guard = None
        context.charge = None
        await self._release(held, None)

    async def _release(self, held: Held, scope: Scope | None, *, start: int = 0) -> None:
        kept = held.leases[:start]
        for entry in held.leases[start:]:
            if scope is not None and entry[0] != scope:
                kept.append(entry)
                continue
            try:
                await self.counters.release(entry[1], entry[2])
            except StoreError as exc:  # the lease expires on its own
                log.warning("a run of %s was not released (it expires by itself): %s", entry[1], exc)
        held.leases = kept

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
