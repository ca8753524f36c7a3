"""What LangFlow's URL, API request and web search components become: the requests behind the operator's egress
allowlist (docs/components.md, "Tools that go out").

Wired into an agent's ``tools``, a URL or API request component becomes the agent's ``fetch_url`` tool, and a web
search (Tavily, LangFlow's unified Web Search, SearchApi) its ``web_search`` tool, whose key is the agent's
``search_api_key``. In the data path, a URL component becomes one ``HttpRequest`` per URL it lists (their pages
joined, as LangFlow joins them), and a web search fed a query becomes ``WebSearch``, whose documents a ``Text``
makes prompt text of. Every request goes only where the operator's allowlist lets it, checked after DNS.
"""

from __future__ import annotations

from typing import Any

from gitops_flow.langflow.export import LfNode
from gitops_flow.langflow.models import key_reference
from gitops_flow.langflow.workbench import Builder, NodePort, Refused, ToolPort
from gitops_flow.problems import Problem

PAGES = frozenset({"URL", "URLComponent"})
REQUESTS = frozenset({"APIRequest"})
SEARCHES = frozenset({"TavilySearchComponent", "TavilyAISearch", "UnifiedWebSearch", "SearchComponent", "SearchAPI"})
TAVILY_KEY = "TAVILY_API_KEY"
MAX_URLS = 10  # the HttpRequests one URL component may become
_FORMATS = {"text": "text", "html": "html", "raw html": "html", "json": "json"}
_DEPTHS = frozenset({"basic", "advanced"})
_TOPICS = {"general": "general", "news": "news", "finance": "finance", "web": "general"}


def pages(b: Builder, node: LfNode) -> None:
    """URL: as a tool, ``fetch_url``; in the data path, an HttpRequest for each URL it lists, their pages joined."""
    fmt = _FORMATS.get(node.text("format").strip().lower(), "text")
    if _is_tool(b, node):
        b.ports[(node.id, "*")] = ToolPort({"name": "fetch_url", "format": fmt} if fmt != "text" else "fetch_url")
        return
    urls = _urls(node.value("urls"))
    if not urls:
        b.fail(
            node.field_path("urls"), "no URL to fetch: list them in the component, or wire it to an agent", node=node
        )
        b.ports[(node.id, "*")] = Refused(node)
        return
    if len(urls) > MAX_URLS:
        b.fail(
            node.field_path("urls"),
            f"{len(urls)} URLs; a converted URL component fetches {MAX_URLS} at most",
            node=node,
        )
        b.ports[(node.id, "*")] = Refused(node)
        return
    fetched = []
    for index, url in enumerate(urls):
        fetch = b.add(
            node, f"{node.id}.{index}" if len(urls) > 1 else node.id, "HttpRequest", {"url": url, "format": fmt}
        )
        b.queries.append(fetch)  # fed the flow's input, which a literal URL does not read
        fetched.append(fetch)
    if len(fetched) == 1:
        b.ports[(node.id, "*")] = NodePort(fetched[0])
        return
    template = "\n\n".join("{" + f"page{i}" + "}" for i in range(len(fetched)))
    joined = b.add(node, f"{node.id}.pages", "Text", {"template": template}, description=f"{node.label()}: pages")
    for index, fetch in enumerate(fetched):
        b.connect(NodePort(fetch), joined, f"page{index}", None)
    b.ports[(node.id, "*")] = NodePort(joined)


def requests(b: Builder, node: LfNode) -> None:
    """API Request: as an agent's tool, ``fetch_url`` (GET, the model names the URL); in the data path refused."""
    if not _is_tool(b, node):
        b.fail(node.path, "an API request in the data path is not converted; wire it to an agent as a tool", node=node)
        b.ports[(node.id, "*")] = Refused(node)
        return
    method = node.text("method").strip().upper() or "GET"
    if method != "GET":
        b.fail(node.field_path("method"), f"method {method}: an agent's fetch_url only GETs", node=node)
    b.ports[(node.id, "*")] = ToolPort({"name": "fetch_url", "format": "json"})


def search(b: Builder, node: LfNode) -> None:
    """A web search: as an agent's tool, ``web_search``; fed a query, a WebSearch node (its documents as text).
    Every search is Tavily's (the operator's GITOPS_FLOW_WEB_SEARCH_URL), its key a reference."""
    if node.text("search_mode").strip().lower() == "rss":  # reads the feeds it is given: no search stands in
        b.fail(
            node.field_path("search_mode"), "search_mode RSS reads feeds, which no built-in component does", node=node
        )
        b.ports[(node.id, "*")] = Refused(node)
        return
    options = _search_options(node)
    key, problems = key_reference(node, TAVILY_KEY)
    b.problems += problems
    if node.type in ("SearchComponent", "SearchAPI"):  # SearchApi.io: another provider, another key
        key = {"$env": TAVILY_KEY}
        b.problems.append(
            Problem(
                code="langflow-search-provider",
                message=f"{node.label()} searched with SearchApi; the converted flow searches with Tavily "
                f"(the operator's search API), with the key ${TAVILY_KEY}",
                path=node.path,
                severity="warning",
            )
        )
    if _is_tool(b, node):
        b.ports[(node.id, "*")] = ToolPort({"name": "web_search", **options}, key)
        return
    queries = b.inputs(node, "query") + b.inputs(node, "search_query") + b.inputs(node, "input_value")
    found = b.sole_input(node, queries, "a web search reads its query from")
    if found is None:
        b.ports.setdefault((node.id, "*"), Refused(node))
        return
    source, wire = found
    b.add(node, node.id, "WebSearch", {**options, **({"api_key": key} if key else {})})
    b.connect(source, node.id, None, wire)
    text = b.add(node, f"{node.id}.text", "Text", {"separator": "\n\n"}, description=f"{node.label()}: results")
    b.connect(NodePort(node.id), text, None, None)
    b.ports[(node.id, "*")] = NodePort(text)


def _is_tool(b: Builder, node: LfNode) -> bool:
    wires = b.export.wires_from(node.id)
    return bool(wires) and all(w.field == "tools" for w in wires)


def _urls(value: Any) -> list[str]:
    """The URLs a URL component lists (without a scheme, http, as LangFlow assumes)."""
    found = value if isinstance(value, list) else [value] if isinstance(value, str) else []
    urls = [u.strip() for u in found if isinstance(u, str) and u.strip()]
    return [u if "://" in u else f"http://{u}" for u in urls]


def _search_options(node: LfNode) -> dict[str, Any]:
    options: dict[str, Any] = {}
    results = node.number("max_results")
    if results is not None and results >= 1:
        options["max_results"] = min(20, int(results))
    depth = node.text("search_depth").strip().lower()
    if depth in _DEPTHS:
        options["search_depth"] = depth
    topic = _TOPICS.get((node.text("topic") or node.text("search_mode")).strip().lower())
    if topic and topic != "general":
        options["topic"] = topic
    return options
