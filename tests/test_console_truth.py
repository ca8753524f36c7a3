"""The console and `gitops-flow status` show the server's traffic, not the answering worker's: against a real
`serve --workers 2`, requests answered by each worker add up in the figures every worker reads (through the state
store), the page says over which window and from how many workers and replicas, and "Abort canary" is offered only
where a canary serves another build than its primary. The issue: the stable/main shares read 56.8/43.2 four times
and 0.0/100.0 twice in six reloads, and `hello`'s main row offered an abort of the very build stable serves."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gitops_flow.cli import main as cli
from tests.gitrepo import Remote
from tests.process import ADMIN_TOKEN, serve_process
from tests.redisenv import RedisSpace
from tests.served import echo_flow, wait_until
from tests.test_console_http import sign_in
from tests.test_per_flow import CANARY, canary_users, events, failing_at_run_time
from tests.test_replicas import Replica, routing
from tests.test_workers import Workers, workers


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workers, str, str]]:
    """stable (tagged) 50 / main 50 for echo, whose main is a new build; hello, whose main is stable's build."""
    tmp = tmp_path_factory.mktemp("truth")
    remote = Remote.create(tmp)
    config = routing(("stable", 50), ("main", 50), analysis={"min_requests": 1000})
    stable = remote.commit(
        {"flows/echo.json": echo_flow(answer="one"), "flows/hello.json": echo_flow("hello"), "gitops-flow.yaml": config}
    )
    remote.tag("stable", stable)
    canary = remote.publish({"flows/echo.json": echo_flow(answer="two")})
    remote.push_tags()
    with workers(remote, tmp) as w:
        yield w, stable, canary


def _overview(w: Workers, slot: int) -> dict[str, Any]:
    with w.only(slot) as http:
        body: dict[str, Any] = http.get("/ui/overview.json").json()
        return body


def _counts(body: dict[str, Any], flow: str) -> dict[str, int]:
    [row] = [f for f in body["flows"] if f["name"] == flow]
    return {r["ref"]: (r["figures"] or {}).get("requests", 0) for r in row["refs"]}


def test_every_worker_reads_the_whole_servers_figures(two: tuple[Workers, str, str]) -> None:
    w, stable, canary = two
    before = _counts(_overview(w, 0), "echo")
    sent = {"stable": 0, "main": 0}
    for n in range(20):
        response = w.answer(n % 2, **{"X-Flow-User": f"reader-{n}"})  # half answered by each worker
        assert response.status_code == 200
        sent[response.json()["metadata"]["ref"]] += 1
    expected = {ref: before.get(ref, 0) + sent[ref] for ref in sent}
    wait_until(lambda: _counts(_overview(w, 0), "echo") == expected, timeout=15, what="every count shared")
    reads = [_overview(w, slot % 2) for slot in range(6)]
    assert all(_counts(body, "echo") == expected for body in reads), [_counts(b, "echo") for b in reads]
    shares = {tuple(r["share"] for r in next(f for f in b["flows"] if f["name"] == "echo")["refs"]) for b in reads}
    assert len(shares) == 1  # six reloads, one answer
    for body in reads:
        assert body["traffic"]["processes"] == 2 and body["traffic"]["replicas"] == 1
        assert 0 < body["traffic"]["window_seconds"] <= 300


def test_the_page_and_status_say_the_window_and_the_workers(two: tuple[Workers, str, str]) -> None:
    w, _, _ = two
    wait_until(lambda: _overview(w, 1)["traffic"]["processes"] == 2, what="both workers reporting")
    page = w.http.get("/ui")
    assert page.status_code == 200
    assert "from 2 workers on 1 replica" in page.text
    out = io.StringIO()
    assert cli.main(["status", "--server", w.server.url], environ={}, out=out) == 0
    assert "traffic: the last" in out.getvalue() and "from 2 workers on 1 replica" in out.getvalue()


def test_abort_is_offered_only_where_the_canary_serves_another_build(two: tuple[Workers, str, str]) -> None:
    w, stable, canary = two
    body = _overview(w, 0)
    rows = {f["name"]: {r["ref"]: r for r in f["refs"]} for f in body["flows"]}
    assert rows["echo"]["main"]["serving"] == canary and rows["echo"]["main"]["abortable"] is True
    assert rows["hello"]["main"]["canary"] is True and rows["hello"]["main"]["abortable"] is False
    assert rows["hello"]["main"]["serving"] == canary and rows["hello"]["stable"]["serving"] == stable
    with httpx.Client(base_url=w.server.url, headers={"Origin": w.server.url}, timeout=30.0) as admin:
        sign_in(admin)
        hello = admin.get("/ui/flows/hello").text
        echo = admin.get("/ui/flows/echo").text
    assert "Abort canary" in echo and "Abort canary" not in hello


@pytest.mark.parametrize("body", [{"flow": "hello", "ref": "main"}, {"flow": "hello"}])
def test_the_api_refuses_to_abort_a_canary_that_serves_its_primarys_build(
    two: tuple[Workers, str, str], body: dict[str, str]
) -> None:
    """What the page does not offer, the API does not do: the abort would only move main's weight to the very build
    stable serves, and be recorded as if a canary had been stopped."""
    w, _, _ = two
    response = w.server.client.post("/admin/abort", json=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 409 and response.json()["error"]["code"] == "not-abortable"
    assert "serves its primary's build" in response.json()["error"]["message"]
    assert not [e for e in events(w.server, "aborted") if e.get("flow") == "hello"]
    rows = {r["ref"]: r for r in next(f for f in _overview(w, 0)["flows"] if f["name"] == "hello")["refs"]}
    assert rows["main"]["state"] == "live"


def test_the_flow_page_charts_the_last_hour_of_every_worker(two: tuple[Workers, str, str]) -> None:
    w, stable, canary = two
    for n in range(4):
        assert w.answer(n % 2, **{"X-Flow-User": f"charted-{n}"}).status_code == 200
    with w.only(1) as http:
        page = http.get("/ui/flows/echo").text
    assert page.count('<svg xmlns="http://www.w3.org/2000/svg" class="chart"') == 3
    for title in ("requests a minute", "errors a minute", "p99, ms"):
        assert f'aria-label="{title}, the last hour"' in page
    assert "<polyline" in page or "<circle" in page
    legend = page[page.index('id="charts"') :]
    assert f'<span class="sha">{stable[:12]}</span> stable' in legend
    assert f'<span class="sha">{canary[:12]}</span> main' in legend
    assert 'src="http' not in page and 'href="http' not in page.replace(w.server.url, "")  # no CDN


def test_a_guards_abort_names_the_error_class_that_caused_it(remote: Remote, tmp_path: Path) -> None:
    """With the primary fallback (the default), each failed canary request is answered by stable and counted against
    the canary with its error's class; the abort's reason, its event and the console's row name it."""
    stable = remote.publish({"flows/alpha.json": echo_flow("alpha"), "gitops-flow.yaml": yaml.safe_dump(CANARY)})
    remote.tag("stable", stable)
    remote.push_tags()
    remote.publish({"flows/alpha.json": failing_at_run_time("alpha")}, "alpha breaks")
    with serve_process(remote, tmp_path, env={"GITOPS_FLOW_ANALYSIS_INTERVAL": "0.1"}) as server:
        for user in canary_users("alpha", 6):
            assert server.invoke("alpha", {"question": "hi"}, headers={"X-Flow-User": user}).status_code == 200
        wait_until(lambda: len(events(server, "aborted")) == 1, what="the abort")
        [event] = events(server, "aborted")
        assert event["error_class"] == "OutputParserException"
        assert event["reason"].endswith("; mostly OutputParserException")
        [row] = [f for f in server.client.get("/ui/overview.json").json()["flows"] if f["name"] == "alpha"]
        main = next(r for r in row["refs"] if r["ref"] == "main")
        assert main["state"] == "aborted" and "mostly OutputParserException" in main["reason"]


@pytest.fixture
def two_replicas(remote: Remote, tmp_path: Path, redis_space: RedisSpace) -> Iterator[tuple[Replica, Replica]]:
    """Two `serve` processes of one worker each, sharing the test's Redis prefix, serving echo."""
    remote.publish({"flows/echo.json": echo_flow()})
    state = f"{redis_space.url}?prefix={redis_space.prefix}"
    started: list[Replica] = []
    try:
        for name in ("a", "b"):
            started.append(Replica(name, remote, state, tmp_path))
        yield started[0], started[1]
    finally:
        for replica in started:
            replica.stop()


def test_two_replicas_on_redis_read_the_same_figures_of_both(two_replicas: tuple[Replica, Replica]) -> None:
    """Behind a load balancer: each replica's page adds up what both served (through Redis), and says so."""
    a, b = two_replicas
    for n in range(6):
        assert (a if n % 2 else b).ask(**{"X-Flow-User": f"lb-{n}"}).status_code == 200

    def seen(replica: Replica) -> tuple[int, int, int]:
        body = replica.http.get("/ui/overview.json").json()
        [row] = [f for f in body["flows"] if f["name"] == "echo"]
        served = sum((r["figures"] or {}).get("requests", 0) for r in row["refs"])
        return served, body["traffic"]["processes"], body["traffic"]["replicas"]

    wait_until(lambda: seen(a) == seen(b) == (6, 2, 2), timeout=15, what="both replicas' counts on both")
