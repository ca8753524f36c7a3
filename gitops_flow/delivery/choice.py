"""Choosing the version of a request (SPEC 4), the same for every API (LangServe's, LangFlow's, the console's).

In this order: an explicit pin, then the session's pin (so a conversation stays on the version it began on), then
the flow's route (segments, then refs by weight, sticky per user). A canary that refuses an input its primary
accepts (its input contract broke) does not answer the refusal: the primary serves the request, and the refusal
counts against the canary. The flow's limits (guardrails.gate) are checked once the input passes and before a
session is pinned, so a request they refuse pins nothing either.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gitops_flow.delivery.attempts import Attempts
from gitops_flow.delivery.published import Resolver
from gitops_flow.delivery.routing_table import Choice
from gitops_flow.exceptions import BadInput, UnknownFlow
from gitops_flow.guardrails.gate import Gate
from gitops_flow.observability.telemetry.context import RequestContext
from gitops_flow.runtime.compiler import BuiltFlow
from gitops_flow.stores.base import PinStore

Inputs = Sequence[Any] | Callable[[BuiltFlow], Sequence[Any]]  # the request's inputs, or how a flow reads them


@dataclass(frozen=True, slots=True)
class Ask:
    """What a request says about its version: the flow, a pin, a session and a user (each from a header or the
    config's ``configurable``), with no HTTP in it; ``context`` is where the limits hold what they admit."""

    flow: str
    pin: str | None = None
    session: str | None = None
    user: str | None = None
    segment: str | None = None  # X-Flow-Segment, set by the gateway: a route's segments may match it
    context: RequestContext | None = field(default=None, compare=False)
    # LangFlow's tweaks of the request ({node id: {param: value}}): they change what its token budgets reserve
    tweaks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, compare=False)


def check(flow: BuiltFlow, inputs: Inputs) -> None:
    """Raise BadInput unless every input matches ``flow``'s input schema."""
    for value in inputs(flow) if callable(inputs) else inputs:
        flow.check_input(value)


def checked(choice: Choice, name: str, inputs: Inputs) -> BuiltFlow:
    """The chosen version's build of ``name`` once the inputs pass its check; UnknownFlow when it lacks the flow."""
    flow = choice.version.flows.get(name)
    if flow is None:
        raise UnknownFlow(f"no flow {name!r} at version {choice.version.sha[:12]}")
    check(flow, inputs)
    return flow


class Chooser:
    """Chooses versions from the published routing table (``resolver.table``); session pins live in ``store``."""

    def __init__(
        self,
        reconciler: Resolver,
        store: PinStore,
        attempts: Attempts,
        *,
        gate: Gate | None = None,
    ) -> None:
        self.reconciler = reconciler
        self.store = store
        self.attempts = attempts  # a canary's refusal answered by its primary, and counted (attempts.py)
        self.gate = gate  # the routing file's limits; None: none are enforced

    async def choose(self, ask: Ask, inputs: Inputs = ()) -> tuple[Choice, BuiltFlow]:
        """The version that serves ``ask`` and its build of the flow.

        ``inputs`` are checked against the chosen flow before a session is pinned, so a refused request pins
        nothing; given as a function, it makes them for the flow it is given (LangFlow's run API shapes its text by
        the flow). Raises BadInput, UnknownFlow, NotServable, UnknownVersion, PinsDisabled, NoReadyVersion, Busy,
        Limited.
        """
        flow = ask.flow
        if ask.pin:
            choice = await self.reconciler.pinned(flow, ask.pin)
            built = checked(choice, flow, inputs)
            await self._admit(ask, choice, built, inputs)
            return choice, built
        table = self.reconciler.table
        choice = table.default(flow, user=ask.user, segment=ask.segment)
        if not ask.session:
            choice, built = self._accepting(choice, flow, inputs)
            await self._admit(ask, choice, built, inputs)
            return choice, built
        current = choice.version.flows.get(flow)
        if current is not None:
            choice, current = self._accepting(choice, flow, inputs)
            await self._admit(ask, choice, current, inputs)  # before the pin: a refused request pins nothing
        key = f"{flow}:{ask.session}"
        sha = await self.store.claim_pin(key, choice.version.sha, table.session_ttl)
        if sha != choice.version.sha:
            pinned = table.session(sha, flow) or await self._revive(sha, flow)
            if pinned is not None and flow in pinned.version.flows:
                built = checked(pinned, flow, inputs)
                moved = current is not None and pinned.ref != choice.ref
                await self._admit(ask, pinned, built, inputs, moved=moved)
                return pinned, built
            if current is not None:
                await self.store.set_pin(key, choice.version.sha, table.session_ttl)  # its version is gone: move on
        if current is None:
            await self.store.drop_pin(key)
            raise UnknownFlow(f"no flow {flow!r} at version {choice.version.sha[:12]}")
        return choice, current

    async def _admit(
        self, ask: Ask, choice: Choice, built: BuiltFlow, inputs: Inputs, *, moved: bool | None = None
    ) -> None:
        """The flow's limits for a request ``choice`` serves (its build ``built`` run on ``inputs``: what its token
        budgets reserve); ``moved`` when it was admitted for another ref first (None: when it was not admitted yet)."""
        if self.gate is None or ask.context is None:
            return
        routing = self.reconciler.table.routing
        limits = routing.limits_of(ask.flow) if routing is not None else None
        if limits is None:
            return
        if moved is None or ask.context.guard is None:
            values = inputs(built) if callable(inputs) else inputs
            await self.gate.admit(
                ask.context, ask.flow, limits, choice.ref, ask.user, spec=built.spec, inputs=values, tweaks=ask.tweaks
            )
        elif moved:
            await self.gate.move(ask.context, ask.flow, limits, choice.ref)

    def _accepting(self, choice: Choice, flow: str, inputs: Inputs) -> tuple[Choice, BuiltFlow]:
        """``choice`` if its flow accepts the inputs; a canary's primary if only the primary does (counted against
        the canary); BadInput when neither does (the caller's fault, counted against nobody)."""
        try:
            return choice, checked(choice, flow, inputs)
        except BadInput as refused:
            primary = self.attempts.primary(choice, flow)
            if primary is None:
                raise
            try:
                check(primary[1], inputs)
            except BadInput:
                raise refused from None
            self.attempts.refused(choice)
            return primary

    async def _revive(self, sha: str, flow: str) -> Choice | None:
        """A session pinned to a version this process does not hold (a restart, another replica): rebuilt from Git
        (bounded). A version the table holds is not rebuilt (the guard may have stopped it), nor a yanked one."""
        table = self.reconciler.table
        known = table.versions.get(sha)
        if known is not None and known.ready or table.yanked(sha):
            return None
        version = await self.reconciler.revive(sha, flow)
        if version is None or table.yanked_for(flow, version):  # a later commit with a yanked commit's build
            return None
        return Choice(version, table.ref_of(sha))
