"""What the memory store's answered runs take (issue 24: RSS grew by 340 MiB over 46,000 requests with memory
state): each record kept at its own size, and 100,000 kept by default with memory:// (docs/experiments.md)."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from gitops_flow.config import Settings
from gitops_flow.experiments.ledger import new_run_id
from gitops_flow.stores.memory import MemoryStore

RECORD = {"flow": "support-bot", "version": "3f9c2e1a7b2d" * 3, "ref": "canary", "user": "5f1c2a9e3b7d4e60", "at": 1.5}


@pytest.mark.anyio
async def test_an_answered_run_takes_about_half_a_kilobyte() -> None:
    store = MemoryStore()
    runs = [(str(new_run_id()), dict(RECORD)) for _ in range(20_000)]
    gc.collect()
    tracemalloc.start()
    try:
        await store.remember_runs(runs, ttl=3600, max_runs=1_000_000)
        del runs
        gc.collect()
        taken, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the run ids and records themselves were made before: what is counted is what the store keeps beside them
    # (orjson's own answer would hold its 4 KiB buffer: 4.3 KB a run)
    assert taken / 20_000 < 600


@pytest.mark.parametrize(
    ("state", "given", "kept"),
    [("memory://", None, 100_000), ("sqlite://", None, 1_000_000), ("memory://", 5, 5), ("redis://x", 7, 7)],
    ids=["memory-default", "sqlite-default", "memory-set", "redis-set"],
)
def test_memory_state_keeps_fewer_runs_unless_told(state: str, given: int | None, kept: int) -> None:
    assert Settings(state=state, feedback_max_runs=given).runs_kept() == kept
