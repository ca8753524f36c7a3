"""metrics.py: one registry per server, series per flow, version and ref, and no series left for retired versions."""

from __future__ import annotations

from gitops_flow.observability.metrics import Metrics

OLD, NEW = "a" * 40, "b" * 40


def test_runs_are_counted_per_version_and_a_retired_versions_series_go() -> None:
    metrics = Metrics(live_versions=lambda: 2)
    metrics.observe("echo", OLD, "main", True, 0.01)
    metrics.observe("echo", OLD, "main", False, 0.2)
    metrics.observe("echo", NEW, "stable", True, 0.03)
    text = metrics.render().decode()
    assert f'gitops_flow_requests_total{{flow="echo",outcome="error",ref="main",version="{OLD[:12]}"}} 1.0' in text
    assert f'gitops_flow_request_duration_seconds_count{{flow="echo",ref="stable",version="{NEW[:12]}"}} 1.0' in text
    assert "gitops_flow_live_versions 2.0" in text
    metrics.prune({NEW})
    text = metrics.render().decode()
    assert OLD[:12] not in text
    assert f'version="{NEW[:12]}"' in text
    metrics.observe("echo", OLD, "main", True, 0.01)  # a retired version pinned again counts from zero
    assert f'gitops_flow_requests_total{{flow="echo",outcome="ok",ref="main",version="{OLD[:12]}"}} 1.0' in (
        metrics.render().decode()
    )


def test_two_servers_in_one_process_keep_their_own_counts() -> None:
    one, two = Metrics(), Metrics()
    one.observe("echo", OLD, "main", True, 0.01)
    assert "echo" in one.render().decode()
    assert "echo" not in two.render().decode()
