"""recent.py: each version's window of requests, errors and latency, in one-second slots that age out."""

from __future__ import annotations

import pytest

from gitops_flow.observability.metrics import Metrics
from gitops_flow.observability.recent import RecentTraffic, bucket, bucket_bound

OLD, NEW = "a" * 40, "b" * 40


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_requests_errors_and_percentiles_per_version_and_ref() -> None:
    clock = Clock()
    recent = RecentTraffic(clock=clock)
    clock.now += 100  # the process has run for a while
    for ms in range(1, 101):  # 1 ms .. 100 ms
        recent.add("echo", OLD, "stable", ms != 50, ms / 1000)
    recent.add("echo", NEW, "main", True, 0.5)
    recent.add("other", OLD, "stable", True, 0.01)
    clock.now += 10
    stable, main = recent.figures("echo")
    assert (stable.sha, stable.ref, stable.requests, stable.errors) == (OLD, "stable", 100, 1)
    assert stable.error_rate == pytest.approx(0.01)
    assert 50 <= stable.p50_ms <= 50 * 1.05 and 99 <= stable.p99_ms <= 99 * 1.05  # within a bucket: 5 %
    assert (main.requests, main.p50_ms) == (1, pytest.approx(500, rel=0.05))
    assert stable.rate == pytest.approx(100 / 10)  # over the 10 s since it began serving, not the whole window
    assert [f.flow for f in recent.figures()] == ["echo", "echo", "other"]


def test_old_slots_leave_the_window_and_retired_versions_are_forgotten() -> None:
    clock = Clock()
    recent = RecentTraffic(span=60, clock=clock)
    recent.add("echo", OLD, "stable", False, 0.01)
    clock.now += 30
    recent.add("echo", OLD, "stable", True, 0.01)
    assert recent.figures()[0].requests == 2
    clock.now += 40  # the first request is 70 s old now
    [figures] = recent.figures()
    assert (figures.requests, figures.errors) == (1, 0)
    clock.now += 60
    assert recent.figures() == []
    recent.add("echo", NEW, "main", True, 0.01)
    recent.prune({OLD})
    assert recent.figures() == []
    assert recent.total == 3


def test_the_number_of_series_is_bounded() -> None:
    clock = Clock()
    recent = RecentTraffic(clock=clock, max_series=3)
    for n in range(5):
        clock.now += 1
        recent.add("echo", f"{n:040d}", "main", True, 0.01)
    assert {f.sha[-1] for f in recent.figures()} == {"2", "3", "4"}  # the idlest went first


def test_buckets_bound_a_duration_within_five_percent() -> None:
    for ms in (0.2, 1.0, 1.01, 7.3, 250.0, 2999.0, 60_000.0):
        upper = bucket_bound(bucket(ms))
        assert ms <= upper + 1e-9 and (upper <= max(ms, 1.0) * 1.05 + 1e-9)


def test_metrics_feed_the_window_and_prune_it_with_their_series() -> None:
    metrics = Metrics()
    metrics.observe("echo", OLD, "stable", True, 0.02)
    assert metrics.recent.figures()[0].requests == 1
    metrics.prune({NEW})
    assert metrics.recent.figures() == []
