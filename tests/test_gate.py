"""The gate: which limits a request meets, in which order, what it holds while it runs and what it lets go."""

from __future__ import annotations

from typing import Any

import pytest

from gitops_flow.components.builtins import BUILTIN_COMPONENTS
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.exceptions import Limited, StoreError
from gitops_flow.flow.document import FlowSpec
from gitops_flow.flow.routing import FlowLimits
from gitops_flow.guardrails.counters import Reserved, Window
from gitops_flow.guardrails.estimate import TokenEstimate
from gitops_flow.guardrails.gate import Gate
from gitops_flow.guardrails.memory import MemoryCounters
from gitops_flow.observability.telemetry.context import RequestContext

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def limits(**values: Any) -> FlowLimits:
    return FlowLimits.model_validate(values)


class Recording(MemoryCounters):
    """Memory counters that remember what they were asked, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    async def hit(self, key: str, window: Window) -> float | None:
        self.calls.append(("hit", key))
        return await super().hit(key, window)

    async def acquire(self, key: str, limit: int, lease: str, ttl: float) -> bool:
        self.calls.append(("acquire", key))
        return await super().acquire(key, limit, lease, ttl)

    async def release(self, key: str, lease: str) -> None:
        self.calls.append(("release", key))
        await super().release(key, lease)

    async def reserve(self, key: str, budget: int, window: float, amount: int) -> Reserved | float:
        self.calls.append(("reserve", key))
        return await super().reserve(key, budget, window, amount)


class Broken(MemoryCounters):
    async def hit(self, key: str, window: Window) -> float | None:
        raise StoreError("Redis at redis://cache:6379/0 could not count a request: Connection refused")


def context() -> RequestContext:
    return RequestContext("POST", "/flows/echo/invoke")


async def finish(ctx: RequestContext) -> None:
    for finalizer in ctx.finalizers:
        await finalizer(ctx)


async def test_every_level_is_checked_budgets_first_then_runs_then_rates() -> None:
    counters = Recording()
    gate = Gate(counters)
    rule = limits(
        requests_per_second=10,
        concurrent=2,
        tokens={"budget": 1000, "window": "1h"},
        per_user={"requests_per_second": 1, "concurrent": 1},
        refs={"main": {"requests_per_second": 5, "concurrent": 1, "tokens": {"budget": 10}}},
    )
    ctx = context()

    await gate.admit(ctx, "echo", rule, "main", "alice")

    kinds = [kind for kind, _ in counters.calls]
    assert kinds == ["reserve", "reserve", "acquire", "acquire", "acquire", "hit", "hit", "hit"]
    keys = [key for _, key in counters.calls]
    assert keys[0] == "tokens:echo" and keys[1] == "tokens:echo@main"
    assert keys[2] == "runs:echo" and keys[4] == "runs:echo@main"
    assert keys[3].startswith("runs:echo~") and "alice" not in keys[3]  # a user is counted by a hash of its id
    assert ctx.meter is not None  # the budgets count this request's tokens


async def test_a_ref_without_its_own_limits_and_a_request_without_a_user_meet_only_the_flows() -> None:
    counters = Recording()
    rule = limits(concurrent=1, per_user={"concurrent": 1}, refs={"main": {"concurrent": 1}})

    await Gate(counters).admit(context(), "echo", rule, "stable", None)

    assert counters.calls == [("acquire", "runs:echo")]


async def test_a_flow_scoped_ref_meets_the_limits_of_its_short_name() -> None:
    counters = Recording()
    rule = limits(refs={"stable": {"concurrent": 1}})

    await Gate(counters).admit(context(), "echo", rule, "echo/stable", None)

    assert counters.calls == [("acquire", "runs:echo@echo/stable")]


async def test_a_refused_rate_lets_go_of_the_runs_it_took_and_names_its_wait() -> None:
    counters = Recording()
    gate = Gate(counters)
    rule = limits(requests_per_second=0.001, concurrent=5)
    first = context()
    await gate.admit(first, "echo", rule, None, None)

    second = context()
    with pytest.raises(Limited) as refused:
        await gate.admit(second, "echo", rule, None, None)

    assert refused.value.code == "rate-limited" and refused.value.retry_after > 0
    assert "1 request per 1000 s" in str(refused.value)
    assert counters.calls[-1][0] == "release"  # the second request's run was let go at once
    assert len(counters._leases["runs:echo"]) == 1  # the first request's run is still held


async def test_runs_at_once_are_let_go_when_the_request_ends() -> None:
    gate = Gate(MemoryCounters())
    rule = limits(concurrent=1)
    first = context()
    await gate.admit(first, "echo", rule, None, None)

    with pytest.raises(Limited) as refused:
        await gate.admit(context(), "echo", rule, None, None)
    assert refused.value.code == "too-many-runs"

    await finish(first)
    await gate.admit(context(), "echo", rule, None, None)


async def test_per_user_runs_are_each_users_own() -> None:
    gate = Gate(MemoryCounters())
    rule = limits(per_user={"concurrent": 1})
    await gate.admit(context(), "echo", rule, None, "alice")
    await gate.admit(context(), "echo", rule, None, "bob")

    with pytest.raises(Limited, match="per user"):
        await gate.admit(context(), "echo", rule, None, "alice")


async def test_a_spent_budget_refuses_until_its_window_ends() -> None:
    gate = Gate(MemoryCounters())
    rule = limits(tokens={"budget": 100, "window": "1h"})
    first = context()
    await gate.admit(first, "echo", rule, None, None)
    ran(first, 60)  # a run's tokens
    await finish(first)
    second = context()
    await gate.admit(second, "echo", rule, None, None)  # 60 of 100: still under
    ran(second, 60)
    await finish(second)

    with pytest.raises(Limited) as refused:
        await gate.admit(context(), "echo", rule, None, None)

    assert refused.value.code == "token-budget-exhausted"
    assert 0 < refused.value.retry_after <= 3600
    assert "100 per 1h" in str(refused.value)


def ran(ctx: RequestContext, tokens: int, *, complete: bool = True) -> None:
    """A run of the request, as telemetry tells its meter (telemetry.runs)."""
    assert ctx.meter is not None, "the request is under a budget"
    ctx.meter.run_started()
    ctx.meter.run_ended(tokens, complete)


ESTIMATE = TokenEstimate(ComponentRegistry(BUILTIN_COMPONENTS))
SPEC = FlowSpec.model_validate(
    {
        "version": 1,
        "name": "echo",
        "nodes": [
            {"id": "prompt", "component": "PromptTemplate", "params": {"template": "Q: {question}"}},
            {"id": "llm", "component": "ChatModel", "params": {"model": "openai:gpt-4o-mini", "max_tokens": 50}},
        ],
        "edges": [{"source": "prompt", "target": "llm"}],
    }
)
QUESTION = {"question": "hi"}
RESERVED = 8 + 16 + 50  # ceil((len('{"question":"hi"}') + len("Q: {question}")) / 4) + a call's 16 + max_tokens


def test_a_request_reserves_its_prompt_and_its_models_answers() -> None:
    assert ESTIMATE.of(SPEC, [QUESTION]) == RESERVED
    assert ESTIMATE.of(SPEC, [QUESTION, QUESTION]) == 2 * RESERVED  # a batch: each input's
    capless = SPEC.model_copy(update={"nodes": [SPEC.nodes[0], SPEC.nodes[1].model_copy(update={"params": {}})]})
    assert ESTIMATE.of(capless, [QUESTION]) == RESERVED - 50 + 4096  # no max_tokens: the default cap
    fake = SPEC.model_copy(
        update={"nodes": [SPEC.nodes[0], SPEC.nodes[1].model_copy(update={"component": "FakeChatModel"})]}
    )
    assert ESTIMATE.of(fake, [QUESTION]) == 0  # a fake calls no provider
    assert ESTIMATE.of(SPEC, [QUESTION], {"llm": {"max_tokens": 2000}}) == RESERVED - 50 + 2000  # LangFlow's tweaks


@pytest.mark.parametrize(
    ("runs", "spent"),
    [
        ([(25, True)], 25),  # it ran to its end: what it reported
        ([(25, False)], RESERVED),  # cut short (its client left mid-stream): its whole reservation
        ([(200, False)], 200),  # ... or what it reported, if more
        ([], 0),  # it never ran (a cached answer, a refused input): all given back
        (None, RESERVED),  # it started and never ended (a stream nobody closed): its whole reservation
    ],
    ids=["complete", "cut-short", "cut-short-reported-more", "never-ran", "never-ended"],
)
async def test_a_reservation_is_settled_with_what_the_request_is_charged(
    runs: list[tuple[int, bool]] | None, spent: int
) -> None:
    counters = MemoryCounters()
    gate = Gate(counters, estimate=ESTIMATE)
    rule = limits(tokens={"budget": 1000, "window": "1h"}, refs={"main": {"tokens": {"budget": 500}}})
    ctx = context()
    await gate.admit(ctx, "echo", rule, "main", None, spec=SPEC, inputs=[QUESTION])
    assert (await counters.spent("tokens:echo", 3600))[0] == RESERVED  # reserved before it runs
    assert ctx.meter is not None
    if runs is None:
        ctx.meter.run_started()
    for tokens, complete in runs or []:
        ran(ctx, tokens, complete=complete)

    await finish(ctx)

    assert (await counters.spent("tokens:echo", 3600))[0] == spent
    assert (await counters.spent("tokens:echo@main", 3600))[0] == spent


async def test_concurrent_requests_pass_a_budget_by_less_than_one_reservation() -> None:
    counters = MemoryCounters()
    gate = Gate(counters, estimate=ESTIMATE)
    rule = limits(tokens={"budget": 1000, "window": "1h"})
    admitted = 0
    for _ in range(40):  # all admitted before any ends
        try:
            await gate.admit(context(), "echo", rule, None, None, spec=SPEC, inputs=[QUESTION])
            admitted += 1
        except Limited as refused:
            assert refused.code == "token-budget-exhausted"

    assert admitted == -(-1000 // RESERVED)  # as many as it takes to reach the budget
    assert 1000 <= (await counters.spent("tokens:echo", 3600))[0] < 1000 + RESERVED


async def test_a_request_refused_by_another_limit_gives_its_reservation_back() -> None:
    counters = MemoryCounters()
    gate = Gate(counters, estimate=ESTIMATE)
    rule = limits(tokens={"budget": 1000, "window": "1h"}, concurrent=1)
    await gate.admit(context(), "echo", rule, None, None, spec=SPEC, inputs=[QUESTION])

    with pytest.raises(Limited, match="at once"):
        await gate.admit(context(), "echo", rule, None, None, spec=SPEC, inputs=[QUESTION])

    assert (await counters.spent("tokens:echo", 3600))[0] == RESERVED  # the first request's only


async def test_moving_to_another_ref_swaps_the_refs_runs_and_keeps_the_flows() -> None:
    counters = MemoryCounters()
    gate = Gate(counters)
    rule = limits(concurrent=5, refs={"main": {"concurrent": 1}, "stable": {"concurrent": 1}})
    ctx = context()
    await gate.admit(ctx, "echo", rule, "main", None)

    await gate.move(ctx, "echo", rule, "stable")

    assert set(counters._leases) == {"runs:echo", "runs:echo@stable"}
    await gate.admit(context(), "echo", rule, "main", None)  # main's place was let go


async def test_unreachable_counters_let_requests_through_or_refuse_them_as_the_operator_chose() -> None:
    rule = limits(requests_per_second=1, concurrent=1)
    ctx = context()
    await Gate(Broken(), fail="open").admit(ctx, "echo", rule, None, None)
    assert ctx.guard.leases == []  # the run it took before the failure was let go

    with pytest.raises(StoreError):
        await Gate(Broken(), fail="closed").admit(context(), "echo", rule, None, None)


async def test_refusals_are_reported_by_limit_and_scope() -> None:
    seen: list[tuple[str, str, str]] = []
    gate = Gate(MemoryCounters(), on_refused=lambda flow, limit, scope: seen.append((flow, limit, scope)))
    rule = limits(per_user={"requests_per_second": 0.001})
    await gate.admit(context(), "echo", rule, None, "alice")

    with pytest.raises(Limited):
        await gate.admit(context(), "echo", rule, None, "alice")

    assert seen == [("echo", "requests", "user")]
