"""The bound on the runs that judge a canary against its primary (attempts.py), and the setting that sets it; what
they judge is tested against a real server in test_canary_verdicts.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gitops_flow.config import Settings
from gitops_flow.delivery import attempts
from gitops_flow.delivery.attempts import Attempts
from gitops_flow.delivery.guard import Guard, Window
from gitops_flow.delivery.routing_table import Choice, RoutingTable, Target
from gitops_flow.delivery.versions import Version
from gitops_flow.exceptions import ConfigError
from gitops_flow.flow.routing import Analysis
from gitops_flow.observability.metrics import Metrics
from gitops_flow.stores import MemoryStore

KEY = "echo:main:blob"


def version(sha: str) -> Version:
    return Version(sha=sha, author="", email="", time=0.0, message="", status="ready", flows={"echo": object()})  # type: ignore[dict-item]


def test_runs_on_the_primary_are_bounded_and_an_outcome_that_finds_no_room_is_not_counted() -> None:
    async def scenario() -> Window:
        store = MemoryStore()
        guard = Guard(store)
        attempts = Attempts(guard, Metrics(), lambda: Analysis(max_p99_ms=100), verifications=1)
        primary = Target("stable", "stable", "p" * 40, 50, "live", serving="p" * 40, version=version("p" * 40))
        canary = Choice(version("c" * 40), "main", KEY, primary)
        release, judged = asyncio.Event(), []

        async def again(choice: Choice, built: Any) -> None:
            judged.append((choice.version.sha[0], choice.verifying))
            await release.wait()

        attempts.ended("echo", canary, False, 0.01, again)  # cut off mid-stream: judged on the primary
        attempts.ended("echo", canary, False, 0.01, again)  # no room left: not counted
        attempts.ended("echo", canary, True, 0.5, again)  # slow, no room: counted without its latency
        attempts.ended("echo", canary, True, 0.05, again)  # within the budget: counted as it is, no run
        await asyncio.sleep(0.01)
        assert judged == [("p", True)]  # one run at once, marked as a judging run (no turn saved, nobody answered)
        release.set()
        await asyncio.sleep(0.01)
        await attempts.close()
        await guard.tick(RoutingTable("main"))
        return Window.of(await store.sum_samples(KEY, 0))

    window = asyncio.run(scenario())
    # the judged failure (its primary succeeded), the slow answer without its latency, the quick one with it
    assert (window.requests, window.errors) == (3, 1)
    assert window.p99_ms is not None and window.p99_ms <= 100


def test_a_primary_that_hangs_gives_its_room_back_at_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attempts, "MIN_DEADLINE", 0.05)

    async def scenario() -> tuple[Window, list[str]]:
        store = MemoryStore()
        guard = Guard(store)
        judge = Attempts(guard, Metrics(), lambda: Analysis(max_p99_ms=100), verifications=1)
        primary = Target("stable", "stable", "p" * 40, 50, "live", serving="p" * 40, version=version("p" * 40))
        canary = Choice(version("c" * 40), "main", KEY, primary)
        runs: list[str] = []

        async def hangs(choice: Choice, built: Any) -> None:
            runs.append("hangs")
            await asyncio.Event().wait()

        async def answers(choice: Choice, built: Any) -> None:
            runs.append("answers")

        judge.ended("echo", canary, False, 0.01, hangs)  # the primary never answers: no verdict, and no count
        for _ in range(400):  # its deadline is 0.05 s; a loaded machine may take longer to get to it
            await asyncio.sleep(0.05)
            if not judge._running:
                break
        judge.ended("echo", canary, False, 0.01, answers)  # the room is free again: judged, counted
        await asyncio.sleep(0.01)
        await judge.close()
        await guard.tick(RoutingTable("main"))
        return Window.of(await store.sum_samples(KEY, 0)), runs

    window, runs = asyncio.run(scenario())
    assert runs == ["hangs", "answers"]
    assert (window.requests, window.errors) == (1, 1)


@pytest.mark.parametrize("value", ["-1", "1001", "many"])
def test_the_bound_of_runs_on_the_primary_is_itself_bounded(value: str) -> None:
    with pytest.raises(ConfigError, match="canary_verifications"):
        Settings.from_env({"GITOPS_FLOW_CANARY_VERIFICATIONS": value})
    assert Settings.from_env({"GITOPS_FLOW_CANARY_VERIFICATIONS": "0"}).canary_verifications == 0
