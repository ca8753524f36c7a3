"""The tools behind the egress allowlist, as a real `gitops-flow serve` serves them from a real Git remote: an
HttpRequest node and a WebSearch node against a stand-in of Tavily's API; what the allowlist refuses at validation
and at run time; and, on a server with --fake-models, an Agent (its model scripted by the flow's tests) calling
fetch_url and web_search for real while the tool nodes answer fakes; no secret in any answer or log line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.gitrepo import Remote
from tests.process import ServeProcess, serve_process
from tests.sites import Site, tavily, web_site

KEY = "tvly-dev-served0123456789SECRET"  # the Tavily key the server reads
TOKEN = "site-token-served-0123456789"  # the site's key, HttpRequest's api_key


def flow(name: str, nodes: list[tuple[str, str, dict[str, Any]]], **extra: Any) -> str:
    made = [{"id": i, "component": c, "params": p} for i, c, p in nodes]
    edges = [{"source": a["id"], "target": b["id"]} for a, b in zip(made, made[1:], strict=False)]
    return json.dumps({"version": 1, "name": name, "nodes": made, "edges": edges, **extra}, indent=2)


def agent_flow(site: Site) -> str:
    calls = [
        {"name": "fetch_url", "args": {"url": f"{site.url}/page"}},
        {"name": "web_search", "args": {"query": "opening hours"}},
        {"name": "fetch_url", "args": {"url": f"{site.url}/pages/second"}},
        {"name": "fetch_url", "args": {"url": f"{site.url}/pages/past-the-count"}},
        {"name": "fetch_url", "args": {"url": "http://169.254.169.254/latest/meta-data/"}},
    ]
    agent = {
        "model": "openai:gpt-4o-mini",
        "tools": [{"name": "fetch_url", "format": "text"}, {"name": "web_search", "max_results": 2}],
        "search_api_key": {"$env": "TAVILY_API_KEY"},
    }
    script = [json.dumps({"tool_calls": calls}), "We open at nine."]
    tests = [
        {"name": "answers", "input": "when?", "fakes": {"agent": script}, "expect": {"equals": "We open at nine."}}
    ]
    return flow("agent", [("agent", "Agent", agent), ("answer", "StrOutputParser", {})], tests=tests)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServeProcess, Site, Site]]:
    """A server whose flows fetch and search for real, under an allowlist of the site, Tavily's stand-in and any
    public host."""
    tmp = tmp_path_factory.mktemp("egress")
    with web_site() as site, tavily(KEY) as api:
        remote = Remote.create(tmp)
        remote.publish(
            {
                "flows/page.json": flow(
                    "page",
                    [
                        (
                            "fetch",
                            "HttpRequest",
                            {"url": f"{site.url}/pages/{{input}}", "api_key": {"$env": "SITE_TOKEN"}},
                        )
                    ],
                ),
                "flows/proxy.json": flow("proxy", [("fetch", "HttpRequest", {"url": "{input}"})]),
                "flows/search.json": flow(
                    "search",
                    [
                        ("search", "WebSearch", {"api_key": {"$env": "TAVILY_API_KEY"}, "max_results": 2}),
                        ("text", "Text", {"separator": "\n\n"}),
                    ],
                ),
            }
        )
        env = {
            "GITOPS_FLOW_ALLOWED_FETCH_URLS": f"{site.url}/,{api.url}/search,*",
            "GITOPS_FLOW_WEB_SEARCH_URL": api.url,
            "GITOPS_FLOW_SECRETS": "TAVILY_API_KEY,SITE_TOKEN,OPENAI_API_KEY",
            "GITOPS_FLOW_EGRESS_MAX_REQUESTS": "3",
            "GITOPS_FLOW_EGRESS_MAX_BYTES": "2048",
            "GITOPS_FLOW_EGRESS_TIMEOUT": "0.5",
            "TAVILY_API_KEY": KEY,
            "SITE_TOKEN": TOKEN,
        }
        with serve_process(remote, tmp, env=env) as harness:
            yield harness, site, api


def environment(site: Site, api: Site) -> dict[str, str]:
    return {
        "GITOPS_FLOW_ALLOWED_FETCH_URLS": f"{site.url}/,{api.url}/search",
        "GITOPS_FLOW_WEB_SEARCH_URL": api.url,
        "GITOPS_FLOW_SECRETS": "TAVILY_API_KEY,SITE_TOKEN,OPENAI_API_KEY",
        "GITOPS_FLOW_EGRESS_MAX_REQUESTS": "3",
        "TAVILY_API_KEY": KEY,
        "SITE_TOKEN": TOKEN,
    }


@pytest.fixture(scope="module")
def faked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServeProcess, Site, Site]]:
    """A server with --fake-models: the agent's model answers its test's script and its tools go out for real; the
    tool nodes answer fakes, and go nowhere."""
    tmp = tmp_path_factory.mktemp("egress-faked")
    with web_site() as site, tavily(KEY) as api:
        remote = Remote.create(tmp)
        remote.publish(
            {
                "flows/agent.json": agent_flow(site),
                "flows/metadata.json": flow(
                    "metadata", [("fetch", "HttpRequest", {"url": "http://169.254.169.254/latest/meta-data/"})]
                ),
                "flows/search.json": flow("search", [("search", "WebSearch", {"api_key": {"$env": "TAVILY_API_KEY"}})]),
            }
        )
        with serve_process(remote, tmp, env=environment(site, api), args=["--fake-models"]) as harness:
            yield harness, site, api


def answered(harness: ServeProcess, flow_name: str, value: Any) -> Any:
    response = harness.invoke(flow_name, value)
    assert KEY not in response.text and TOKEN not in response.text
    return response


def test_an_allowed_fetch_answers_with_the_key_sent_to_the_site(world: tuple[ServeProcess, Site, Site]) -> None:
    harness, site, _ = world

    response = answered(harness, "page", "opening hours")

    assert response.status_code == 200, response.text
    assert response.json()["output"] == "page opening%20hours (query )"
    asked = next(a for a in site.asked if a.path == "/pages/opening%20hours")
    assert asked.headers["authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    "url, why",
    [
        ("http://169.254.169.254/latest/meta-data/iam/", "169.254.169.254 resolves to 169.254.169.254, a link-local"),
        ("http://localhost/admin", "localhost resolves to 127.0.0.1, a loopback address"),
        ("http://127.0.0.1/", "127.0.0.1 resolves to 127.0.0.1, a loopback address"),
        ("http://10.0.0.1/", "10.0.0.1 resolves to 10.0.0.1, a private address"),
        ("http://[::1]:80/", "::1 resolves to ::1, a loopback address"),
        ("https://example.com:8443/", "https://example.com:8443 is not allowed here"),
        ("file:///etc/passwd", "only http and https URLs are fetched"),
    ],
)
def test_a_url_from_the_input_to_a_refused_host_fails_the_run(
    world: tuple[ServeProcess, Site, Site], url: str, why: str
) -> None:
    harness, _, _ = world

    response = answered(harness, "proxy", url)

    assert response.status_code == 403, response.text + harness.log_text()[-5000:]
    error = response.json()["error"]
    assert error["code"] == "egress-refused" and why in error["message"]
    assert "/admin" not in error["message"] and "/iam" not in error["message"]  # the host, never the URL
    assert "127.0.0.1:" not in error["message"]  # nor the allowlist's entries (the site's): internal names stay in


def test_a_stream_answers_the_refusal_with_its_status_or_streams_the_page(
    world: tuple[ServeProcess, Site, Site],
) -> None:
    harness, site, _ = world

    refused = harness.client.post("/flows/proxy/stream", json={"input": "http://169.254.169.254/"})
    fetched = harness.client.post("/flows/proxy/stream", json={"input": f"{site.url}/pages/streamed"})

    assert refused.status_code == 403 and refused.json()["error"]["code"] == "egress-refused"
    assert fetched.status_code == 200
    data = [json.loads(line[len("data: ") :]) for line in fetched.text.splitlines() if line.startswith("data: ")]
    assert "page streamed (query )" in data


def test_a_redirect_off_the_allowlist_fails_the_run(world: tuple[ServeProcess, Site, Site]) -> None:
    harness, site, _ = world
    with web_site() as elsewhere:
        response = answered(harness, "proxy", f"{site.url}/redirect?to={elsewhere.url}/page")

    assert response.status_code == 403
    assert f"127.0.0.1:{elsewhere.port} is not allowed here" in response.json()["error"]["message"]
    assert elsewhere.asked == []


def test_the_size_and_time_bounds_hold_on_the_server(world: tuple[ServeProcess, Site, Site]) -> None:
    harness, site, _ = world

    cut = answered(harness, "proxy", f"{site.url}/big?bytes=100000")
    slow = answered(harness, "proxy", f"{site.url}/drip")

    assert cut.json()["output"] == "x" * 2048 + "\n[cut: the response was longer than 2,048 bytes]"
    assert slow.status_code == 502 and slow.headers["retry-after"] == "5"
    error = slow.json()["error"]
    assert error["code"] == "egress-failed"
    assert error["message"].startswith("127.0.0.1 did not answer within 0.5 s (run ")


def test_web_search_asks_tavily_with_the_key_and_answers_the_results(world: tuple[ServeProcess, Site, Site]) -> None:
    harness, _, api = world

    response = answered(harness, "search", "when does the shop open?")

    assert response.status_code == 200, response.text
    assert response.json()["output"] == (
        "[https://shop.example.com/hours] The shop opens at nine and closes at five.\n\n"
        "[https://shop.example.com/holidays] Closed on public holidays."
    )
    asked = [a for a in api.asked if json.loads(a.body)["query"] == "when does the shop open?"]
    assert len(asked) == 1 and asked[0].headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(asked[0].body)["max_results"] == 2


def test_the_agent_calls_its_tools_within_one_runs_count(faked: tuple[ServeProcess, Site, Site]) -> None:
    harness, site, api = faked
    searches = len(api.asked)

    response = answered(harness, "agent", "when do you open?")

    assert response.status_code == 200, response.text
    assert response.json()["output"] == "We open at nine."
    assert "/page" in site.paths() and "/pages/second" in site.paths()
    assert "/pages/past-the-count" not in site.paths()  # the run's fourth request: past its count of 3
    assert len(api.asked) == searches + 1 and api.asked[-1].headers["authorization"] == f"Bearer {KEY}"


def test_a_literal_url_the_allowlist_refuses_never_goes_live(world: tuple[ServeProcess, Site, Site]) -> None:
    harness, _, _ = world
    bad = flow("metadata", [("fetch", "HttpRequest", {"url": "http://169.254.169.254/latest/meta-data/"})])
    harness.remote.publish({"flows/metadata.json": bad}, "fetch the metadata")

    harness.reconcile()
    listed = {f["name"]: f for f in harness.client.get("/flows").json()["flows"]}
    response = harness.invoke("metadata", "x")

    assert listed["metadata"]["state"] == "failed"
    [problem] = listed["metadata"]["problems"]
    assert (problem["code"], problem["path"], problem["line"]) == ("egress-refused", "$.nodes[0].params.url", 9)
    assert "169.254.169.254" in problem["message"]
    assert response.status_code == 503
    assert response.json()["error"]["message"].endswith("(flows/metadata.json:9 egress-refused)")
    assert listed["page"]["state"] == "live"  # the others are served on


def test_no_secret_in_the_log(world: tuple[ServeProcess, Site, Site], faked: tuple[ServeProcess, Site, Site]) -> None:
    harness, _, _ = world
    answered(harness, "page", "logged")
    answered(harness, "proxy", "http://10.0.0.1/")
    answered(faked[0], "agent", "logged")

    log = harness.log_text()

    assert KEY not in log and TOKEN not in log
    assert KEY not in faked[0].log_text()
    assert "flow proxy run" in log and "EgressRefused" in log


def test_fake_models_answer_the_tool_nodes_with_fakes(faked: tuple[ServeProcess, Site, Site]) -> None:
    """A demo never reaches a site through a tool node: it answers a fake, so its URL is not judged either."""
    harness, _, api = faked
    searches = len(api.asked)

    page = answered(harness, "metadata", "x")
    search = answered(harness, "search", "anything")

    assert page.status_code == 200 and page.json()["output"] == "This is a fake answer from fetch."
    assert search.json()["output"][0]["page_content"] == "This is a fake answer from search."
    assert search.json()["output"][0]["metadata"]["source"] == "fake:search"
    assert len(api.asked) == searches
