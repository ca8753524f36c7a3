"""security/egress.py and components/http_fetch.py: the egress allowlist, judged on URLs and on resolved addresses,
and the client that holds it (pinned connections, redirects by hand, bounded time, size and count), against real
loopback sites; the HttpRequest and WebSearch nodes and the agent's tools over it; validation of literal URLs."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from langchain_core.documents import Document

from gitops_flow.cli.main import main
from gitops_flow.components.base import BuildContext
from gitops_flow.components.http_fetch import Allowance, Fetcher, Request
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.config import Settings
from gitops_flow.exceptions import EgressFailed, EgressRefused
from gitops_flow.flow.document import FlowSpec
from gitops_flow.runtime.compiler import build_flow, runnable_config
from gitops_flow.security.egress import EgressLimits, EgressPolicy, IPAddress
from gitops_flow.security.policy import SecretPolicy
from gitops_flow.validation.documents import validate_bytes
from tests.helpers import chain
from tests.sites import Site, https_site, tavily, web_site

KEY = "tvly-dev-0123456789abcdefSECRET"
PAGE_TEXT = "Opening hours\nOpening hours\nWe open at nine and close at five."  # the title, the heading, the text


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with web_site() as found:
        yield found


@pytest.fixture(scope="module")
def other() -> Iterator[Site]:
    """A second site: a host the allowlist does not name."""
    with web_site() as found:
        yield found


def policy(*entries: str, **limits: Any) -> EgressPolicy:
    return EgressPolicy.parse(entries, EgressLimits(**limits))


def refusal(egress: EgressPolicy, url: str) -> str | None:
    try:
        egress.check_url(url)
    except EgressRefused as exc:
        return str(exc)
    return None


# -- the policy, on URLs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entries, url, why",
    [
        ((), "https://example.com/", "outbound requests are off"),
        (("example.com",), "https://example.org/", "is not allowed here"),
        (("example.com",), "https://example.com:8443/", "is not allowed here"),  # a host entry: ports 80 and 443
        (("example.com:8443",), "https://example.com/", "is not allowed here"),
        (("https://api.example.com/v1",), "https://api.example.com/v2/x", "is not allowed here"),
        (("https://api.example.com/v1",), "https://api.example.com/v10", "is not allowed here"),  # not under /v1
        (("https://api.example.com/v1",), "http://api.example.com/v1/x", "is not allowed here"),  # the scheme
        (("*.example.com",), "https://example.com/", "is not allowed here"),  # the subdomains, not the domain
        (("*",), "ftp://example.com/", "only http and https"),
        (("*",), "https://user:pw@example.com/", "credentials"),
        (("*",), "file:///etc/passwd", "only http and https"),
        (("*",), "http://localhost/", "a loopback address"),
        (("*",), "http://api.localhost/", "a loopback address"),
        (("*",), "http://127.0.0.1/", "a loopback address"),
        (("*",), "http://[::1]/", "a loopback address"),
        (("*",), "http://[::ffff:127.0.0.1]/", "a loopback address"),
        (("*",), "http://169.254.169.254/latest/meta-data/", "a link-local address"),
        (("*",), "http://10.1.2.3/", "a private address"),
        (("*",), "http://192.168.0.1/", "a private address"),
        (("*",), "http://0.0.0.0/", "unspecified"),
        (("*",), "http://224.0.0.1/", "multicast"),
        (("10.0.0.0/8",), "http://10.1.2.3:8080/", "is not allowed here"),
    ],
)
def test_urls_the_policy_refuses(entries: tuple[str, ...], url: str, why: str) -> None:
    found = refusal(policy(*entries), url)

    assert found is not None and why in found


@pytest.mark.parametrize(
    "entries, url",
    [
        (("example.com",), "https://example.com/anything?q=1"),
        (("example.com",), "http://EXAMPLE.com./"),
        (("example.com:8443",), "https://example.com:8443/"),
        (("https://api.example.com/v1",), "https://api.example.com/v1"),
        (("https://api.example.com/v1",), "https://api.example.com/v1/items/3"),
        (("*.example.com",), "https://docs.example.com/faq"),
        (("*",), "https://example.org/"),
        (("*",), "https://93.184.216.34/"),  # a public address
        (("localhost",), "http://localhost/"),  # loopback, named explicitly
        (("http://127.0.0.1:8080",), "http://127.0.0.1:8080/x"),
        (("169.254.169.254",), "http://169.254.169.254/"),
        (("10.0.0.0/8",), "http://10.1.2.3/"),
        (("::1",), "http://[::1]/"),
    ],
)
def test_urls_the_policy_allows(entries: tuple[str, ...], url: str) -> None:
    assert refusal(policy(*entries), url) is None


@pytest.mark.parametrize(
    "entry", ["ftp://example.com", "https://u:p@example.com", "https://example.com/?q=1", "ex ample.com", "*.", "a:b"]
)
def test_a_wrong_entry_stops_the_server_at_start(entry: str) -> None:
    with pytest.raises(ValueError, match="ALLOWED_FETCH_URLS|allowed_fetch_urls"):
        Settings(allowed_fetch_urls=entry)


@pytest.mark.parametrize(
    "entries, address, allowed",
    [
        (("*.example.com",), "93.184.216.34", True),
        (("*.example.com",), "127.0.0.1", False),  # an allowed public name that resolves to loopback
        (("*.example.com",), "169.254.169.254", False),
        (("*.example.com",), "10.0.0.5", False),
        (("*.example.com",), "fd00::1", False),
        (("*.example.com",), "::ffff:10.0.0.5", False),
        (("*.example.com", "10.0.0.0/8"), "10.0.0.5", True),  # the network named
        (("intranet.example.com",), "10.0.0.5", True),  # the host named explicitly
        (("https://intranet.example.com",), "10.0.0.5", True),
    ],
)
def test_each_resolved_address_is_judged(entries: tuple[str, ...], address: str, allowed: bool) -> None:
    egress = policy(*entries)
    target = egress.check_url("https://intranet.example.com/")
    try:
        egress.check_address(target, ipaddress.ip_address(address))
    except EgressRefused as exc:
        assert not allowed and "intranet.example.com resolves to" in str(exc)
    else:
        assert allowed


# -- the client, against loopback sites ----------------------------------------------------------------------------


def fetch(egress: EgressPolicy, url: str, *, allowance: Allowance | None = None, **request: Any) -> Any:
    fetcher = Fetcher(egress)
    return fetcher.fetch(Request(url, **request), allowance or fetcher.allowance())


def test_an_allowed_page_is_fetched(site: Site) -> None:
    fetched = fetch(policy(site.url), f"{site.url}/page")

    assert (fetched.status, fetched.content_type, fetched.cut) == (200, "text/html", False)
    assert "We open at nine" in fetched.text()
    assert site.asked[-1].headers["host"] == f"127.0.0.1:{site.port}"


def test_the_connection_goes_to_the_address_that_was_judged(site: Site) -> None:
    """A name the system cannot resolve, answered by the resolver the policy judged: the request reaches that very
    address, and carries the name as its Host."""
    asked: list[tuple[str, int]] = []
    fetcher = Fetcher(policy(f"shop.invalid:{site.port}"), resolve=loopback_resolver(asked))
    fetched = fetcher.fetch(Request(f"http://shop.invalid:{site.port}/page"), fetcher.allowance())

    assert fetched.status == 200 and asked == [("shop.invalid", site.port)]
    assert site.asked[-1].headers["host"] == f"shop.invalid:{site.port}"


def loopback_resolver(asked: list[tuple[str, int]]) -> Any:
    async def resolve(host: str, port: int) -> list[IPAddress]:
        asked.append((host, port))
        return [ipaddress.ip_address("127.0.0.1")]

    return resolve


def test_tls_goes_to_the_judged_address_and_verifies_the_hosts_certificate() -> None:
    """Over HTTPS the request goes to the address judged, with the host as TLS's server name: the site's certificate
    is checked for the host (one for another name is refused), not for the address connected to."""
    ca = trustme.CA()
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    asked: list[tuple[str, int]] = []
    with https_site(ca, "shop.test") as shop, https_site(ca, "other.test") as impostor:
        good = Fetcher(policy(f"https://shop.test:{shop.port}"), resolve=loopback_resolver(asked), verify=trusted)
        fetched = good.fetch(Request(f"https://shop.test:{shop.port}/page"), good.allowance())
        bad = Fetcher(policy(f"https://shop.test:{impostor.port}"), resolve=loopback_resolver(asked), verify=trusted)
        with pytest.raises(EgressFailed, match="shop.test could not be reached"):
            bad.fetch(Request(f"https://shop.test:{impostor.port}/page"), bad.allowance())

    assert fetched.status == 200 and "We open at nine" in fetched.text()
    assert shop.asked[-1].headers["host"] == f"shop.test:{shop.port}"
    assert asked == [("shop.test", shop.port), ("shop.test", impostor.port)]
    assert impostor.asked == []  # the handshake failed: no request was sent


def test_a_name_that_resolves_to_a_private_address_is_refused_before_any_connection(site: Site) -> None:
    """DNS rebinding: the name is allowed (a wildcard), what it resolves to is loopback; nothing is asked."""
    seen = len(site.asked)

    async def resolve(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("127.0.0.1")]

    fetcher = Fetcher(policy(f"*.example.com:{site.port}"), resolve=resolve)
    with pytest.raises(EgressRefused, match="rebind.example.com resolves to 127.0.0.1, a loopback address"):
        fetcher.fetch(Request(f"http://rebind.example.com:{site.port}/page"), fetcher.allowance())
    assert len(site.asked) == seen


def test_a_redirect_off_the_allowlist_is_refused_before_it_is_asked(site: Site, other: Site) -> None:
    seen = len(other.asked)

    with pytest.raises(EgressRefused, match=f"127.0.0.1:{other.port} is not allowed"):
        fetch(policy(site.url), f"{site.url}/redirect?to={other.url}/page")

    assert len(other.asked) == seen


def test_a_redirect_to_metadata_is_refused(site: Site) -> None:
    with pytest.raises(EgressRefused, match="169.254.169.254"):
        fetch(policy(site.url, "*"), f"{site.url}/redirect?to=http://169.254.169.254/latest/meta-data/")


def test_a_redirect_on_the_allowlist_is_followed_and_a_secret_header_stays_behind(site: Site, other: Site) -> None:
    fetched = fetch(
        policy(site.url, other.url),
        f"{site.url}/redirect?to={other.url}/json",
        headers={"Authorization": "Bearer token-0123456789", "Accept": "application/json"},
        secret_headers=frozenset({"Authorization"}),
    )

    assert json.loads(fetched.body) == {"hours": "9-17", "authorized": False, "method": "GET"}
    assert site.asked[-1].headers["authorization"] == "Bearer token-0123456789"
    assert "authorization" not in other.asked[-1].headers and other.asked[-1].headers["accept"] == "application/json"


def test_a_post_redirected_by_303_becomes_a_get(site: Site) -> None:
    fetched = fetch(policy(site.url), f"{site.url}/redirect?status=303&to=/json", method="POST", json={"a": 1})

    assert json.loads(fetched.body)["method"] == "GET"


def test_redirects_are_bounded(site: Site) -> None:
    seen = len(site.asked)

    with pytest.raises(EgressFailed, match="redirected more than 3 times"):
        fetch(policy(site.url, max_redirects=3), f"{site.url}/loop")

    assert len(site.asked) - seen == 4  # the request and its 3 redirects


def test_a_large_answer_is_cut_and_says_so(site: Site) -> None:
    fetched = fetch(policy(site.url, max_bytes=4096), f"{site.url}/big?bytes=100000")

    assert (len(fetched.body), fetched.cut) == (4096, True)
    assert fetch(policy(site.url), f"{site.url}/big?bytes=100000", max_bytes=1000).body == b"x" * 1000


def test_a_compressed_answer_is_cut_once_inflated(site: Site) -> None:
    """10 MB of zeros in a 10 kB gzip body: the client inflates 4 kB and stops."""
    fetched = fetch(policy(site.url, max_bytes=4096), f"{site.url}/gzip-bomb?bytes=10000000")

    assert (fetched.body, fetched.cut) == (b"\0" * 4096, True)


def test_a_node_never_widens_the_operators_bounds(site: Site) -> None:
    fetched = fetch(policy(site.url, max_bytes=2048), f"{site.url}/big?bytes=10000", max_bytes=10_000_000)

    assert len(fetched.body) == 2048 and fetched.cut


@pytest.mark.parametrize("path", ["/slow?seconds=2", "/drip"], ids=["no-headers", "a-body-that-drips"])
def test_a_slow_answer_is_bounded_in_time(site: Site, path: str) -> None:
    started = time.monotonic()

    with pytest.raises(EgressFailed, match="127.0.0.1 did not answer within 0.4 s"):
        fetch(policy(site.url, timeout=0.4, max_bytes=10_000_000), f"{site.url}{path}")

    assert time.monotonic() - started < 1.5


def test_a_runs_requests_are_counted(site: Site) -> None:
    fetcher = Fetcher(policy(site.url, max_requests=3))
    allowance = fetcher.allowance()
    fetcher.fetch(Request(f"{site.url}/page"), allowance)
    fetcher.fetch(Request(f"{site.url}/redirect?to=/page"), allowance)  # two requests
    seen = len(site.asked)

    with pytest.raises(EgressRefused, match="made its 3 outbound requests"):
        fetcher.fetch(Request(f"{site.url}/page"), allowance)

    assert len(site.asked) == seen
    assert fetcher.fetch(Request(f"{site.url}/page"), fetcher.allowance()).status == 200  # a new run, a new count


def test_an_unreachable_host_names_the_host_only(site: Site) -> None:
    with pytest.raises(EgressFailed) as failed:
        fetch(policy("http://127.0.0.1:9"), "http://127.0.0.1:9/secret-path?token=abc")

    assert str(failed.value) == "127.0.0.1 could not be reached (ConnectError)"


# -- the nodes -----------------------------------------------------------------------------------------------------


def node(component: str, egress: EgressPolicy | None, **params: Any) -> Any:
    """A node built as the compiler builds it: its params checked and coerced, then its factory called."""
    return built(component, BuildContext(egress=egress), **params)


def built(component: str, ctx: BuildContext, **params: Any) -> Any:
    registry = ComponentRegistry.builtin()
    found = registry.get(component)
    coerced, issues = registry.coerce_params(found, params)
    assert not issues
    return registry.factory(found)(ctx, **coerced)


def test_http_request_answers_html_as_text(site: Site) -> None:
    answer = node("HttpRequest", policy(site.url), url=f"{site.url}/page").invoke("anything")

    assert answer == PAGE_TEXT  # the visible text: no script, no style


def test_http_request_formats(site: Site) -> None:
    html = node("HttpRequest", policy(site.url), url=f"{site.url}/page", format="html").invoke("")
    data = asyncio.run(node("HttpRequest", policy(site.url), url=f"{site.url}/json", format="json").ainvoke(""))
    cut = node("HttpRequest", policy(site.url, max_bytes=1024), url=f"{site.url}/big").invoke("")

    assert html.startswith("<!doctype html>") and "<script>" in html
    assert data == {"hours": "9-17", "authorized": False, "method": "GET"}
    assert cut == "x" * 1024 + "\n[cut: the response was longer than 1,024 bytes]"
    with pytest.raises(EgressFailed, match="larger than 1,024 bytes, so it was cut"):
        node("HttpRequest", policy(site.url, max_bytes=1024), url=f"{site.url}/big", format="json").invoke("")


def test_http_request_fills_its_template_from_the_input_encoded(site: Site) -> None:
    runnable = node("HttpRequest", policy(site.url), url=f"{site.url}/pages/{{name}}?q={{input}}")

    answer = runnable.invoke({"name": "../../admin@evil", "input": "a b&c"})

    assert answer == "page ..%2F..%2Fadmin%40evil (query q=a%20b%26c)"
    assert site.asked[-1].path == "/pages/..%2F..%2Fadmin%40evil?q=a%20b%26c"


def test_a_url_made_from_the_input_is_bounded(site: Site) -> None:
    runnable = node("HttpRequest", policy(site.url), url=f"{site.url}/pages/{{input}}")
    seen = len(site.asked)

    with pytest.raises(ValueError, match="longer than 8,192 characters"):
        runnable.invoke("x" * 9000)
    with pytest.raises(ValueError, match="names id, which its input does not have"):
        node("HttpRequest", policy(site.url), url=f"{site.url}/items/{{id}}").invoke({"name": "x"})

    assert len(site.asked) == seen


def test_http_request_takes_its_url_from_the_input(site: Site) -> None:
    runnable = node("HttpRequest", policy(site.url))

    assert runnable.invoke(f"{site.url}/pages/a") == "page a (query )"
    assert runnable.invoke({"url": f"{site.url}/pages/b"}) == "page b (query )"
    with pytest.raises(EgressRefused, match="169.254.169.254"):
        runnable.invoke("http://169.254.169.254/latest/meta-data/")


def test_http_request_sends_its_key_and_body(site: Site) -> None:
    runnable = node(
        "HttpRequest",
        policy(site.url),
        url=f"{site.url}/json",
        method="POST",
        api_key="token-0123456789",
        headers={"X-Team": "support"},
        format="json",
    )

    answer = runnable.invoke({"body": {"question": "hours?"}})

    assert answer == {"hours": "9-17", "authorized": True, "method": "POST", "received": {"question": "hours?"}}
    sent = site.asked[-1].headers
    assert (sent["authorization"], sent["x-team"], sent["content-type"]) == (
        "Bearer token-0123456789",
        "support",
        "application/json",
    )


def test_http_request_fails_on_an_error_status_naming_the_host(site: Site) -> None:
    with pytest.raises(EgressFailed, match="^127.0.0.1 answered HTTP 503$"):
        node("HttpRequest", policy(site.url), url=f"{site.url}/status/503").invoke("")


def test_without_an_allowlist_nothing_goes_out(site: Site) -> None:
    seen = len(site.asked)

    with pytest.raises(EgressRefused, match="outbound requests are off"):
        node("HttpRequest", None, url=f"{site.url}/page").invoke("")

    assert len(site.asked) == seen


def test_web_search_speaks_tavilys_api() -> None:
    with tavily(KEY) as api:
        egress = EgressPolicy.parse([api.url], search_url=api.url)
        runnable = node("WebSearch", egress, api_key=KEY, max_results=1, topic="news")
        found = runnable.invoke("when does the shop open?")
        with pytest.raises(EgressFailed, match=r"refused the key \(HTTP 401\)") as refused:
            node("WebSearch", egress, api_key="tvly-wrong-key-0000").invoke("when?")

    assert found == [
        Document(
            page_content="The shop opens at nine and closes at five.",
            metadata={
                "source": "https://shop.example.com/hours",
                "title": "Opening hours - Example Shop",
                "score": 0.93,
            },
        )
    ]
    asked = api.asked[0]
    assert (asked.method, asked.path, asked.headers["authorization"]) == ("POST", "/search", f"Bearer {KEY}")
    assert json.loads(asked.body) == {
        "query": "when does the shop open?",
        "max_results": 1,
        "search_depth": "basic",
        "topic": "news",
        "include_answer": False,
        "include_raw_content": False,
        "include_images": False,
    }
    assert "tvly-wrong" not in str(refused.value)


def test_the_agents_tools_answer_the_model_and_count_one_runs_requests(site: Site) -> None:
    with tavily(KEY) as api:
        egress = EgressPolicy.parse([site.url, api.url], EgressLimits(max_requests=2), search_url=api.url)
        calls = [
            {"name": "fetch_url", "args": {"url": f"{site.url}/page"}},
            {"name": "web_search", "args": {"query": "opening hours"}},
            {"name": "fetch_url", "args": {"url": f"{site.url}/pages/third"}},
            {"name": "fetch_url", "args": {"url": "http://169.254.169.254/latest/meta-data/"}},
        ]
        runnable = built(
            "Agent",
            BuildContext(egress=egress, fake_responses=[json.dumps({"tool_calls": calls}), "done"]),
            model="openai:gpt-4o-mini",
            tools=["fetch_url", {"name": "web_search", "max_results": 2}],
            search_api_key=KEY,
        )
        seen: list[str] = []
        original = runnable._acall

        async def recording(call: Any, config: Any) -> str:
            seen.append(await original(call, config))
            return seen[-1]

        runnable._acall = recording
        answer = asyncio.run(runnable.ainvoke("when do you open?"))
        again = asyncio.run(runnable.ainvoke("and tomorrow?"))

    assert answer.content == "done" and again.content == "done"
    page, results, third, metadata = seen[:4]
    assert page == PAGE_TEXT
    assert results.startswith("1. Opening hours - Example Shop\nhttps://shop.example.com/hours\nThe shop opens")
    assert third.startswith("Error: this run has made its 2 outbound requests")
    assert metadata.startswith("Error: ") and "169.254.169.254" in metadata
    assert seen[4] == page  # the next run has its own count
    assert KEY not in "".join(seen)


# -- validation ----------------------------------------------------------------------------------------------------


def problems(doc: dict[str, Any], egress: EgressPolicy) -> list[tuple[str, str, int | None]]:
    raw = json.dumps(doc, indent=2).encode()
    allowed = SecretPolicy(["OPENAI_API_KEY", "TAVILY_API_KEY"], egress=egress)
    report = validate_bytes(raw, ComponentRegistry.builtin(), file="f.json", stem=doc["name"], policy=allowed)
    return [(p.code, p.path, p.line) for p in report.problems if p.severity == "error"]


def messages(doc: dict[str, Any], egress: EgressPolicy) -> list[str]:
    raw = json.dumps(doc, indent=2).encode()
    report = validate_bytes(
        raw, ComponentRegistry.builtin(), file="f.json", stem=doc["name"], policy=SecretPolicy(egress=egress)
    )
    return [p.message for p in report.problems if p.severity == "error"]


def test_a_literal_url_the_allowlist_refuses_is_a_validation_problem() -> None:
    refused = chain(("fetch", "HttpRequest", {"url": "http://169.254.169.254/latest/meta-data/"}))
    allowed = chain(("fetch", "HttpRequest", {"url": "https://docs.example.com/faq"}))
    templated = chain(("fetch", "HttpRequest", {"url": "https://elsewhere.example.org/{input}"}))
    egress = policy("*.example.com")

    assert problems(refused, egress) == [("egress-refused", "$.nodes[0].params.url", 9)]  # the line of the url
    assert "(it allows *.example.com)" in messages(refused, egress)[0]  # the authors see the allowlist; clients never
    assert problems(allowed, egress) == []
    assert problems(templated, egress) == []  # judged when it is fetched
    assert problems(templated, EgressPolicy()) == [("egress-refused", "$.nodes[0].params.url", 9)]  # nothing allowed


def test_an_agent_that_fetches_on_a_server_that_allows_nothing_is_warned() -> None:
    doc = chain(("agent", "Agent", {"model": "openai:gpt-4o-mini", "tools": ["calculator", {"name": "fetch_url"}]}))
    raw = json.dumps(doc, indent=2).encode()

    def found(egress: EgressPolicy) -> list[tuple[str, str, str]]:
        report = validate_bytes(
            raw, ComponentRegistry.builtin(), file="f.json", stem=doc["name"], policy=SecretPolicy(egress=egress)
        )
        return [(p.code, p.path, p.severity) for p in report.problems if p.code.startswith("egress")]

    assert found(EgressPolicy()) == [("egress-off", "$.nodes[0].params.tools[1]", "warning")]
    assert found(policy("*")) == []


def test_a_web_search_whose_endpoint_is_refused_is_a_validation_problem() -> None:
    doc = chain(("search", "WebSearch", {"api_key": {"$env": "TAVILY_API_KEY"}}))
    agent = chain(
        (
            "agent",
            "Agent",
            {"model": "openai:gpt-4o-mini", "tools": ["web_search"], "search_api_key": {"$env": "TAVILY_API_KEY"}},
        )
    )

    assert [p[:2] for p in problems(doc, EgressPolicy())] == [("egress-refused", "$.nodes[0].params")]
    assert [p[:2] for p in problems(agent, EgressPolicy())] == [("egress-refused", "$.nodes[0].params.tools[0]")]
    assert problems(doc, policy("https://api.tavily.com")) == []


@pytest.mark.parametrize(
    "params, code, where",
    [
        ({"url": "ftp://x.example.com/"}, "bad-param", "$.nodes[0].params.url"),
        ({"url": "https://x.example.com/{a.b}"}, "bad-param", "$.nodes[0].params.url"),
        ({"headers": {"Host": "evil.example"}}, "bad-param", "$.nodes[0].params.headers.Host"),
        (
            {"headers": {"Authorization": "Basic dXNlcjpwdw=="}},
            "literal-secret",
            "$.nodes[0].params.headers.Authorization",
        ),
        ({"method": "GET", "body": {"a": 1}}, "bad-param", "$.nodes[0].params.body"),
        ({"api_key": "literal-token-value"}, "literal-secret", "$.nodes[0].params.api_key"),
        ({"api_key": {"$env": "OPENAI_API_KEY"}}, "env-wrong-provider", "$.nodes[0].params.api_key"),
        ({"max_bytes": 0}, "bad-param", "$.nodes[0].params.max_bytes"),
    ],
)
def test_http_request_params_are_checked(params: dict[str, Any], code: str, where: str) -> None:
    found = problems(chain(("fetch", "HttpRequest", params)), policy("*"))

    assert (code, where) in [p[:2] for p in found]


def test_the_agents_search_key_is_never_a_model_providers() -> None:
    doc = chain(
        (
            "agent",
            "Agent",
            {"model": "openai:gpt-4o-mini", "tools": ["web_search"], "search_api_key": {"$env": "OPENAI_API_KEY"}},
        )
    )
    missing = chain(("agent", "Agent", {"model": "openai:gpt-4o-mini", "tools": ["web_search"]}))

    assert ("env-wrong-provider", "$.nodes[0].params.search_api_key") in [p[:2] for p in problems(doc, policy("*"))]
    assert ("missing-param", "$.nodes[0].params.search_api_key") in [p[:2] for p in problems(missing, policy("*"))]


def test_gitops_flow_validate_judges_literal_urls_by_the_servers_allowlist(tmp_path: Path) -> None:
    """CI runs with the server's GITOPS_FLOW_ALLOWED_FETCH_URLS, as for secrets, and judges as the server will."""
    doc = chain(("fetch", "HttpRequest", {"url": "http://10.0.0.7/internal"}))
    (tmp_path / f"{doc['name']}.json").write_text(json.dumps(doc, indent=2))
    out = io.StringIO()

    refused = main(["validate", str(tmp_path)], environ={"GITOPS_FLOW_ALLOWED_FETCH_URLS": "*"}, out=out)
    allowed = main(
        ["validate", str(tmp_path)], environ={"GITOPS_FLOW_ALLOWED_FETCH_URLS": "10.0.0.7"}, out=io.StringIO()
    )

    assert (refused, allowed) == (1, 0)
    assert f"{doc['name']}.json:9" in out.getvalue() and "egress-refused" in out.getvalue()
    assert "10.0.0.7 resolves to 10.0.0.7, a private address" in out.getvalue()


def test_flow_tests_fake_the_tool_nodes_and_never_reach_a_site(tmp_path: Path, site: Site) -> None:
    """`gitops-flow test` answers a tool node from its fakes, as a model's; a case that leaves one unfaked fails
    unrun, and nothing is fetched either way."""
    doc = chain(
        ("fetch", "HttpRequest", {"url": f"{site.url}/json", "format": "json"}),
        ("hours", "Pick", {"key": "hours"}),
    )
    doc["tests"] = [
        {"name": "faked", "input": "x", "fakes": {"fetch": ['{"hours": "9-17"}']}, "expect": {"equals": "9-17"}},
        {"name": "unfaked", "input": "x", "expect": {"equals": "9-17"}},
    ]
    (tmp_path / f"{doc['name']}.json").write_text(json.dumps(doc, indent=2))
    out = io.StringIO()
    seen = len(site.asked)

    code = main(
        ["test", str(tmp_path), "--format", "json"], environ={"GITOPS_FLOW_ALLOWED_FETCH_URLS": site.url}, out=out
    )

    faked, unfaked = json.loads(out.getvalue())["results"]
    assert code == 1 and faked["passed"] and not unfaked["passed"]
    assert unfaked["message"] == (
        "model or tool node(s) fetch have no fakes; tests never call a real model nor reach a site"
    )
    assert len(site.asked) == seen


def test_a_caller_never_tweaks_where_a_request_goes() -> None:
    """A LangFlow tweak of url or headers could send the node's key to another allowed host: never tweakable."""
    doc = chain(("fetch", "HttpRequest", {"url": "https://api.example.com/items", "format": "json"}))
    doc["tweakable"] = {"fetch": ["format", "url", "headers", "api_key", "max_bytes"]}

    found = problems(doc, policy("*"))

    assert [p[:2] for p in found] == [
        ("tweak-not-allowed", "$.tweakable.fetch[1]"),
        ("tweak-not-allowed", "$.tweakable.fetch[2]"),
        ("tweak-not-allowed", "$.tweakable.fetch[3]"),
    ]


@pytest.mark.parametrize("path", ["lean", "langchain"])
def test_the_requests_of_a_flow_run_are_counted_together(site: Site, path: str) -> None:
    """Two HttpRequest nodes in one run share its count: with a limit of 1 the second is refused; a new run (a new
    config, as every request and test case gets) counts anew."""
    doc = chain(
        ("first", "HttpRequest", {"url": f"{site.url}/pages/first"}),
        ("second", "HttpRequest", {"url": f"{site.url}/pages/second"}),
    )
    built = build_flow(
        FlowSpec.model_validate(doc), ComponentRegistry.builtin(), egress=policy(site.url, max_requests=1)
    )
    runner = built.lean if path == "lean" else built.runnable
    assert runner is not None

    def run() -> Any:
        return asyncio.run(runner.ainvoke("x", runnable_config({}, doc["name"], uuid.uuid4(), {})))

    with pytest.raises(EgressRefused, match="this run has made its 1 outbound requests"):
        run()
    with pytest.raises(EgressRefused, match="this run has made its 1 outbound requests"):
        run()  # the next run had its own count, and spent it on the first node again
    assert site.paths()[-2:] == ["/pages/first", "/pages/first"]
