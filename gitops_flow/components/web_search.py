"""WebSearch: a node (and the agent's ``web_search`` tool) that asks Tavily's search API, through the egress client.

It speaks Tavily's documented HTTP API itself (``POST {GITOPS_FLOW_WEB_SEARCH_URL}/search``, the key as a bearer
token, the results as ``{"results": [{"title", "url", "content", "score"}, ...]}``) rather than through
``langchain-tavily``: that package's wrapper posts with ``requests`` and ``aiohttp`` on their own connections, so the
egress policy could not be held on them (the address checked after DNS, the body's size, the time), and it would
bring both libraries in for one POST. The endpoint is the operator's setting, never a flow's: a flow cannot choose
where its key goes. Its answer is a list of documents (``page_content`` the result's content, ``metadata.source``
its URL), which ``Text`` turns into prompt text as it does a Retriever's.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from langchain_core.documents import Document
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda

from gitops_flow.components.http_fetch import Allowance, Fetched, Fetcher, Request, blocking
from gitops_flow.components.textify import message_text
from gitops_flow.exceptions import EgressFailed, EgressRefused
from gitops_flow.problems import Problem, json_path
from gitops_flow.security.egress import EgressPolicy

Depth = Literal["basic", "advanced"]
Topic = Literal["general", "news", "finance"]
TimeRange = Literal["day", "week", "month", "year"]
MAX_QUERY_CHARS = 400  # Tavily's own limit on a query
MAX_RESULTS = 20  # Tavily's own limit on max_results
MAX_DOMAINS = 50


def search_url(policy: EgressPolicy) -> str:
    return policy.search_url.rstrip("/") + "/search"


def endpoint_problems(base: tuple[str | int, ...], policy: EgressPolicy, where: str) -> list[Problem]:
    """A web search the egress policy would refuse on every call: ``egress-refused`` naming the endpoint's host."""
    try:
        policy.check_url(search_url(policy))
    except EgressRefused as exc:
        allows = f" (it allows {policy.describe()})" if policy.entries else ""
        message = f"{where} asks the search API (GITOPS_FLOW_WEB_SEARCH_URL), and {exc}{allows}"
        return [Problem(code="egress-refused", message=message, path=json_path(list(base)))]
    return []


def payload(
    query: str,
    *,
    max_results: int,
    search_depth: Depth,
    topic: Topic,
    include_domains: Sequence[str] | None,
    exclude_domains: Sequence[str] | None,
    time_range: TimeRange | None,
) -> dict[str, Any]:
    """The JSON body of a Tavily search; ValueError for a query Tavily would refuse."""
    query = query.strip()
    if not query:
        raise ValueError("the search query is empty")
    if len(query) > MAX_QUERY_CHARS:
        raise ValueError(f"the search query is longer than {MAX_QUERY_CHARS} characters (Tavily's limit)")
    body: dict[str, Any] = {
        "query": query,
        "max_results": max_results,
        "search_depth": search_depth,
        "topic": topic,
        "include_answer": False,
        "include_raw_content": False,
        "include_images": False,
    }
    if include_domains:
        body["include_domains"] = list(include_domains)
    if exclude_domains:
        body["exclude_domains"] = list(exclude_domains)
    if time_range is not None:
        body["time_range"] = time_range
    return body


async def search(fetcher: Fetcher, allowance: Allowance, api_key: str, body: Mapping[str, Any]) -> list[Document]:
    """The results of one search, as documents; EgressRefused or EgressFailed (naming the host, never the key)."""
    request = Request(
        search_url(fetcher.policy),
        "POST",
        {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        dict(body),
        frozenset({"Authorization"}),
    )
    return documents(await fetcher.afetch(request, allowance))


def documents(fetched: Fetched) -> list[Document]:
    """Tavily's answer as documents; EgressFailed for an error status or an answer that is not Tavily's."""
    if fetched.status in (401, 403):
        raise EgressFailed(
            f"the search API ({fetched.host}) refused the key (HTTP {fetched.status})", host=fetched.host
        )
    if fetched.status == 429:
        raise EgressFailed(f"the search API ({fetched.host}) limited the rate (HTTP 429)", host=fetched.host)
    if not fetched.ok:
        raise EgressFailed(f"the search API ({fetched.host}) answered HTTP {fetched.status}", host=fetched.host)
    try:
        results = json.loads(fetched.body)["results"] if not fetched.cut else None
    except (ValueError, KeyError, TypeError):
        results = None
    if not isinstance(results, list):
        raise EgressFailed(f"the search API ({fetched.host}) gave no results list", host=fetched.host)
    found = []
    for result in results:
        if not isinstance(result, dict) or not isinstance(result.get("content"), str):
            continue
        metadata = {"source": str(result.get("url", "")), "title": str(result.get("title", ""))}
        if isinstance(result.get("score"), int | float):
            metadata["score"] = result["score"]
        found.append(Document(page_content=result["content"], metadata=metadata))
    return found


def as_text(found: Sequence[Document]) -> str:
    """Results as the agent's model reads them: a numbered block each (title, URL, content)."""
    if not found:
        return "No results."
    return "\n\n".join(
        f"{i}. {d.metadata.get('title') or '(untitled)'}\n{d.metadata.get('source', '')}\n{d.page_content}"
        for i, d in enumerate(found, 1)
    )


def faked(responses: Sequence[str], node: str) -> Runnable[Any, Any]:
    """A faked node (a flow test's ``fakes``, ``--fake-models``): each call answers the next response as the one
    result found (its source ``fake:<node>``), asking nothing."""
    answers = itertools.cycle(list(responses))

    def answer(value: Any) -> list[Document]:
        return [Document(page_content=next(answers), metadata={"source": f"fake:{node}", "title": "fake"})]

    return RunnableLambda(answer, name="WebSearch")


def build(fetcher: Fetcher, *, api_key: str, options: Mapping[str, Any]) -> Runnable[Any, Any]:
    """The node's runnable: its input is the query (text, or an object's ``query``); its requests count towards its
    run's (http_fetch.Tally)."""

    def body(value: Any) -> dict[str, Any]:
        query = value.get("query") if isinstance(value, Mapping) else message_text(value)
        if not isinstance(query, str):
            raise ValueError("WebSearch takes the query as text, or as an object's 'query'")
        return payload(query, **options)

    async def acall(value: Any, config: RunnableConfig) -> list[Document]:
        return await search(fetcher, fetcher.allowance(config), api_key, body(value))

    def call(value: Any, config: RunnableConfig) -> list[Document]:
        return blocking(acall(value, config))

    return RunnableLambda(call, afunc=acall, name="WebSearch")


async def search_for_tool(
    fetcher: Fetcher, allowance: Allowance | None, api_key: str | None, query: str, options: Mapping[str, Any]
) -> str:
    """What the agent's ``web_search`` tool answers the model: the results, or ``Error: ...`` saying why not."""
    if api_key is None:
        return "Error: web_search has no key on this agent (its search_api_key param)"
    try:
        found = await search(fetcher, allowance or fetcher.allowance(), api_key, payload(query, **options))
    except (EgressRefused, EgressFailed, ValueError) as exc:
        return f"Error: {exc}"
    return as_text(found)
