"""The gate: which limits a request meets, in which order, what it holds while it runs and what it lets go."""

from __future__ import annotations

from typing import Any

import pytest

from gitops_flow.exceptions import Limited, StoreError
from gitops_flow.guardrails.counters import Window
from gitops_flow.guardrails.gate import Gate
from gitops_flow.guardrails.memory import MemoryCounters
from gitops_flow.routing import FlowLimits
from gitops_flow.telemetry.context import RequestContext

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

    async def spent(self, key: str, budget: int, window: float) -> tuple[int, float]:
        self.calls.append(("spent", key))
        return await super().spent(key, budget, window)


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
    assert kinds == ["spent", "spent", "acquire", "acquire", "acquire", "hit", "hit", "hit"]
    keys = [key for _, key in counters.calls]
    assert keys[0] == "tokens:echo" and keys[1] == "tokens:echo@main"
    assert keys[2] == "runs:echo" and keys[4] == "runs:echo@main"
    assert keys[3].startswith("runs:echo~") and "alice" not in keys[3]  # a user is counted by a hash of its id
    assert ctx.charge is not None  # the budgets count this request's tokens


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
    assert first.charge is not None
    await first.charge(first, 60)  # a run's tokens
    second = context()
    await gate.admit(second, "echo", rule, None, None)  # 60 of 100: still under
    assert second.charge is not None
    await second.charge(second, 60)

    with pytest.raises(Limited) as refused:
        await gate.admit(context(), "echo", rule, None, None)

    assert refused.value.code == "token-budget-exhausted"
    assert 0 < refused.value.retry_after <= 3600
    assert "100 per 1h" in str(refused.value)


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
