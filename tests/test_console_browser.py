"""The operator console in a real browser: headless Chromium (Debian's, driven by Playwright) against a real
`gitops-flow serve` following a real Git remote. One server and one browser serve every test here.

Each test's page records the browser's console: an error, a failed script or a failed load fails the test. With
CONSOLE_SCREENSHOTS=DIR set, each state is also saved as a picture in DIR (docs/console/ holds the last such run:
`CONSOLE_SCREENSHOTS=docs/console .venv/bin/python -m pytest tests/test_console_browser.py`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, expect, sync_playwright

from gitops_flow.delivery.routing_table import sticky_point
from tests.gitrepo import Remote
from tests.process import ADMIN_TOKEN, ServeProcess, serve_process
from tests.served import echo_flow, needs_a_secret

CHROMIUM = "/usr/bin/chromium"  # Debian's package: .ci/run installs it when it is missing
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
WAIT_MS = 20_000  # how long a live update may take to reach the page before the test gives up (not a speed check)
Q = {"question": "hi"}
ROUTING = {
    "routes": {"default": [{"ref": "stable", "weight": 90}, {"ref": "main", "weight": 10}]},
    # guarded, but with thresholds no test here reaches: every abort in this module is an operator's
    "analysis": {"window": "60s", "min_requests": 10_000, "max_failures": 10_000},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """Three flows at ``stable`` (90 %); main (10 %, a canary) changes alpha and echo."""
    tmp = tmp_path_factory.mktemp("console")
    remote = Remote.create(tmp)
    flows = {f"flows/{n}.json": echo_flow(n, answer=f"{n} one") for n in ("alpha", "echo", "triage")}
    stable = remote.commit({**flows, "gitops-flow.yaml": yaml.safe_dump(ROUTING)}, "three flows")
    remote.push()
    remote.tag("stable", stable)
    remote.push_tags()
    remote.commit(
        {"flows/alpha.json": echo_flow("alpha", answer="alpha two"), "flows/echo.json": echo_flow(answer="echo two")},
        "alpha and echo say two",
    )
    remote.push()
    with serve_process(remote, tmp, env={"GITOPS_FLOW_ANALYSIS_INTERVAL": "0.2"}) as served:
        for user in range(60):  # some traffic, so the overview has figures to show
            for flow in ("alpha", "echo"):
                assert served.invoke(flow, Q, headers={"X-Flow-User": f"user-{user}"}).status_code == 200
        yield served


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    # a fresh profile in a new temporary folder, made and removed by Playwright
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in its own context (its own cookies); fails the test on any error in the browser's console."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    opened = context.new_page()
    problems: list[str] = []

    def heard(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            problems.append(f"{message.type}: {message.text} ({message.location})")

    opened.on("console", heard)
    opened.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    # a request the browser itself cancels when the page navigates away (the live feed's) is no failure
    opened.on(
        "requestfailed",
        lambda request: (
            None
            if request.failure == "net::ERR_ABORTED"
            else problems.append(f"failed: {request.url} {request.failure}")
        ),
    )
    yield opened
    context.close()
    assert problems == [], "the browser's console reported problems"


def shot(page: Page, name: str) -> None:
    """Save the page as DIR/name.png when CONSOLE_SCREENSHOTS=DIR is set."""
    folder = os.environ.get("CONSOLE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def live(page: Page, server: ServeProcess, path: str) -> None:
    """Open a console page and wait until it listens to the server's live feed."""
    page.goto(server.url + path)
    expect(page.locator("#live-status")).to_have_text("live", timeout=WAIT_MS)


def sign_in(page: Page, server: ServeProcess, name: str) -> None:
    page.goto(server.url + "/ui/login")
    shot(page, "login")
    page.fill("#token", ADMIN_TOKEN)
    page.fill("#name", name)
    page.click("button[type=submit]")
    expect(page.locator(".notice")).to_have_text("Signed in.")


def flows_view(server: ServeProcess) -> dict[str, Any]:
    return {f["name"]: f for f in server.client.get("/flows").json()["flows"]}


def test_a_commit_pushed_while_the_page_is_open_appears_without_a_reload(page: Page, server: ServeProcess) -> None:
    live(page, server, "/ui")
    shot(page, "overview")
    page.evaluate("window.stillTheSamePage = true")
    sha = server.remote.publish({"flows/echo.json": echo_flow(answer="echo three")}, "echo says three")
    server.reconcile()  # what a webhook delivery or the next poll does
    expect(page.locator("#head-sha")).to_have_text(sha[:12], timeout=WAIT_MS)
    main = page.locator("tbody#flow-echo tr.ref[data-ref=main]")
    expect(main).to_contain_text(sha[:12])
    expect(page.locator("#recent tr.event").first).to_contain_text("echo says three")
    assert page.evaluate("window.stillTheSamePage") is True  # updated in place: the page never reloaded
    assert int(page.evaluate("document.body.dataset.updates")) >= 1


def test_a_failing_flow_shows_its_problem_and_line(page: Page, server: ServeProcess) -> None:
    live(page, server, "/ui")
    broken = needs_a_secret("triage")
    lines = broken.splitlines()
    llm = next(n for n, text in enumerate(lines) if '"id": "llm"' in text)
    line = next(n for n, text in enumerate(lines[llm:], start=llm + 1) if '"params"' in text)  # the model's params
    sha = server.remote.publish({"flows/triage.json": broken}, "triage asks a real model")
    server.reconcile()
    where = f"flows/triage.json:{line} missing-secret"
    alert = page.locator(".alert.error", has_text="triage failed")
    expect(alert).to_contain_text(f"triage failed at {sha[:12]}", timeout=WAIT_MS)
    expect(alert).to_contain_text(where)
    expect(page.locator("tbody#flow-triage .problems li").first).to_contain_text(where)
    shot(page, "failing")

    page.goto(server.url + "/ui/flows/triage")
    expect(page.locator("#flow-state")).to_have_text("failed")
    expect(page.locator("#flow-summary .problems li").first).to_contain_text(where)
    failed_row = page.locator(f"#versions tr[data-sha='{sha}']")
    expect(failed_row).to_contain_text("failed")
    expect(failed_row.locator(".problems li")).to_contain_text(where)

    page.goto(server.url + "/ui/pending")
    expect(page.locator("#failed .failed-flow[data-flow=triage] .problems li")).to_contain_text(where)
    shot(page, "pending")
    assert flows_view(server)["triage"]["state"] == "failed"  # the page told what /flows tells


def test_an_abort_from_the_page_stops_that_flows_canary_and_appears_in_history(
    page: Page, server: ServeProcess
) -> None:
    sign_in(page, server, "alice")
    live(page, server, "/ui/flows/alpha")
    canary = page.locator("tbody#flow-alpha tr.ref[data-ref=main]")
    expect(canary).to_contain_text("live")
    shot(page, "flow")
    page.once("dialog", lambda dialog: dialog.accept())
    canary.locator("button", has_text="Abort canary").click()
    expect(page.locator(".notice")).to_contain_text("The canary is aborted")
    canary = page.locator("tbody#flow-alpha tr.ref[data-ref=main]")
    expect(canary).to_contain_text("aborted by an operator — by console: alice at 127.0.0.1")
    shot(page, "aborted")

    # the server stopped it: /flows says so, and the canary's users are answered by stable
    states = [(t["ref"], t["state"], t["weight"]) for t in flows_view(server)["alpha"]["versions"]]
    assert states == [("stable", "live", 100.0), ("main", "aborted", 0)]
    stable = server.remote.sha("stable")
    on_canary = [u for u in (f"user-{n}" for n in range(400)) if sticky_point("alpha", u) >= 0.9][:10]
    for user in on_canary:
        response = server.invoke("alpha", Q, headers={"X-Flow-User": user})
        assert response.headers["x-flow-version"] == stable
    assert flows_view(server)["echo"]["versions"][1]["state"] == "live"  # one flow's canary only

    page.goto(server.url + "/ui/history?flow=alpha&kind=aborted")
    row = page.locator("#history tr.event").first
    expect(row).to_contain_text("alpha on main: aborted by an operator")
    expect(row).to_contain_text("console: alice at 127.0.0.1")
    shot(page, "history-filtered")

    # and back: resumed from the page, audited too
    page.goto(server.url + "/ui/flows/alpha")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("tbody#flow-alpha tr.ref[data-ref=main] button", has_text="Resume canary").click()
    expect(page.locator(".notice")).to_contain_text("The canary is resumed")
    assert [t["state"] for t in flows_view(server)["alpha"]["versions"]] == ["live", "live"]
    events = server.client.get("/history").json()["events"]
    assert [(e["event"], e["trigger"]) for e in events[:2]] == [
        ("resumed", "console: alice at 127.0.0.1"),
        ("aborted", "console: alice at 127.0.0.1"),
    ]
    page.goto(server.url + "/ui/history")
    expect(page.locator("#history tr.event").first).to_contain_text("alpha on main")
    shot(page, "history")


def test_an_abort_another_operator_makes_reaches_an_open_page_live(page: Page, server: ServeProcess) -> None:
    live(page, server, "/ui")
    done = server.client.post("/admin/abort", json={"flow": "echo"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert done.status_code == 200
    echo_canary = page.locator("tbody#flow-echo tr.ref[data-ref=main]")
    expect(echo_canary).to_contain_text("aborted", timeout=WAIT_MS)
    expect(page.locator(".alert.warning", has_text="echo: the canary on main is aborted")).to_be_visible()
    server.client.post("/admin/resume", json={"flow": "echo"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    expect(echo_canary.locator(".badge.live")).to_be_visible(timeout=WAIT_MS)


def test_the_flow_page_draws_the_graph_and_the_difference_of_two_versions(page: Page, server: ServeProcess) -> None:
    page.goto(server.url + "/ui/flows/alpha")
    graph = page.locator("#graph svg.flow-graph")
    expect(graph.locator("g.node")).to_have_count(3)
    expect(graph.locator("g.node.entry")).to_have_attribute("data-node", "prompt")
    expect(graph.locator("g.node.exit")).to_have_attribute("data-node", "answer")
    expect(graph.locator("g.edge")).to_have_count(2)
    diff = page.locator("#diff")
    expect(diff.locator("li[data-node=llm]")).to_contain_text('params.responses: ["alpha one"] ["alpha two"]')
    # another pair, chosen in the form: the same version twice is the same document
    first = server.remote.sha("stable")
    page.select_option("#before", first)
    page.select_option("#after", first)
    page.click("text=Compare")
    expect(diff).to_contain_text("the same document")
    assert re.search(rf"before={first}", page.url)


def test_pages_work_without_javascript(browser: Browser, server: ServeProcess) -> None:
    context = browser.new_context(java_script_enabled=False)
    try:
        plain = context.new_page()
        for path in ("/ui", "/ui/pending", "/ui/history", "/ui/flows/echo", "/ui/login"):
            response = plain.goto(server.url + path)
            assert response is not None and response.status == 200, path
        plain.goto(server.url + "/ui")
        expect(plain.locator("tbody#flow-echo")).to_contain_text("echo")
        expect(plain.locator("#live-status")).to_have_text("not live")  # no script: a plain page, still complete
        plain.goto(server.url + "/ui/history")
        plain.select_option("#kind", "deployed")
        plain.click("text=Show")
        assert plain.url.endswith("kind=deployed")
        kinds = set(plain.locator("#history tr.event").evaluate_all("rows => rows.map(r => r.dataset.kind)"))
        assert kinds == {"deployed"}
    finally:
        context.close()
