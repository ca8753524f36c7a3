"""Why a LangFlow component cannot be converted: the true reason for each type refused, and what could stand in.

A converted flow runs only registered components, calls only its model, and never runs the Python code an export
stores. A component that reaches the network (search, pages, APIs), a store the server does not have (vector stores,
knowledge bases, databases), files, or code is therefore refused, and its message says which of these it is. Where
an operator's component (docs/components.md) could do the same work in a native flow, the message says so; an agent's
tool has no stand-in, since a converted agent's tools are the built-in ones.
"""

from __future__ import annotations

from gitops_flow.langflow.export import Export, LfNode

_SEARCH = "it searches the web at run time, over the network; a converted flow calls only its model"
_PAGES = "it fetches web pages at run time, over the network; a converted flow calls only its model"
_KNOWLEDGE = "it searches a LangFlow knowledge base (a vector store, by embeddings), which the server does not have"
_CODE = "it runs Python code, which gitops-flow never does"
_STANDS_IN = frozenset({"store", "network"})  # what an operator's component can do that a flow cannot

# type -> (why, what it needs: "network", "store", "files", "code", "graph" or "data")
REASONS: dict[str, tuple[str, str]] = {
    "UnifiedWebSearch": (_SEARCH, "network"),
    "WebSearchComponent": (_SEARCH, "network"),
    "URLComponent": (_PAGES, "network"),
    "URL": (_PAGES, "network"),
    "APIRequest": (
        "it calls an HTTP API at run time, over the network; a converted flow calls only its model",
        "network",
    ),
    "ArXivComponent": (
        "it searches arXiv at run time, over the network; a converted flow calls only its model",
        "network",
    ),
    "AssemblyAITranscriber": (
        "it sends audio to AssemblyAI's API at run time, over the network; a converted flow calls only its model",
        "network",
    ),
    "Knowledge": (_KNOWLEDGE, "store"),
    "KnowledgeRetrieval": (_KNOWLEDGE, "store"),
    "KnowledgeIngestion": (
        "it fills a LangFlow knowledge base (a vector store), which the server does not have",
        "store",
    ),
    "MemoryBase": (
        "it searches a Memory Base, LangFlow's store of past conversations searched by embeddings, which the server "
        "does not have; a converted agent sees its session's recent messages, not a search of them, and a prompt "
        "that tells the agent to use its memory tool would go unanswered",
        "store",
    ),
    "SQLComponent": ("it queries a SQL database, which a converted flow never connects to", "store"),
    "SplitText": (
        "it splits documents into chunks for a vector store; a converted flow passes text, not tables",
        "data",
    ),
    "SaveToFile": ("it writes files, which a converted flow never does", "files"),
    "Directory": ("it reads files from a folder, which a converted flow never does", "files"),
    "CustomComponent": ("it runs custom Python code, which gitops-flow never does", "code"),
    "PythonREPLComponent": (_CODE, "code"),
    "PythonCodeStructuredTool": (_CODE, "code"),
    "(no type)": ("the node has no component type but is wired to others", "graph"),
    "note": ("a note cannot be wired to other nodes", "graph"),
}


def refusal(node: LfNode, export: Export) -> str:
    """Why ``node`` cannot be converted, and what could take its place."""
    if node.edited:
        return (
            "its code was edited in LangFlow; gitops-flow maps components by type and never runs stored code, "
            "so an edited component cannot be converted faithfully"
        )
    if node.type in _PER_ITEM:
        return _PER_ITEM[node.type](node, export)
    why, needs = REASONS.get(node.type) or _family(node.type)
    if any(wire.field == "tools" for wire in export.wires_from(node.id)):
        return (
            f"{why}; as an agent's tool it has no stand-in (a converted agent's tools are calculator and current_date)"
        )
    if needs in _STANDS_IN:
        return f"{why}; an operator's component could do this in a native flow (docs/components.md)"
    return why


def _loop(node: LfNode, export: Export) -> str:
    """A Loop: what it would iterate and its body (the nodes from its item output back into it)."""
    body = _body(node, export)
    shape = (
        f"it runs its body ({', '.join(body)}: the nodes from its item output back into it) once per item"
        if body
        else "nothing from its item output comes back into it, so it has no body to run per item"
    )
    return f"{shape} of {_items(node, export, 'data')}; {_NO_LIST}"


def _batch(node: LfNode, export: Export) -> str:
    """A Batch Run: a model call per row of the table wired into ``df``."""
    column = node.text("column_name").strip()
    rows = f"per row ({'its column ' + repr(column) if column else 'every column'})"
    return f"it calls its model once {rows} of {_items(node, export, 'df')}; {_NO_LIST}"


def _items(node: LfNode, export: Export, field_name: str) -> str:
    wires = export.wires_into(node.id, field_name)
    if not wires:
        return f"a table, and its {field_name} input is not wired"
    kinds = {n.id: n.type for n in export.nodes}
    return " and ".join(
        f"the table {w.source} ({kinds.get(w.source, '?')}) gives its {field_name} input from {w.output!r}"
        for w in wires
    )


def _body(node: LfNode, export: Export) -> list[str]:
    """The nodes on a path from the loop's item output to a wire back into the loop, in file order."""
    ends = {w.source for w in export.loops if w.target == node.id}
    ahead: set[str] = set()
    pending = [w.target for w in export.wires_from(node.id) if w.output == "item"]
    while pending:
        current = pending.pop()
        if current not in ahead and current != node.id:
            ahead.add(current)
            pending += [w.target for w in export.wires_from(current)]
    behind: set[str] = set()
    pending = list(ends)
    while pending:
        current = pending.pop()
        if current not in behind and current != node.id:
            behind.add(current)
            pending += [w.source for w in export.wires_into(current)]
    return [n.id for n in export.nodes if n.id in ahead & behind]


_NO_LIST = (
    "a native Map (docs/components.md) runs a body per item of a list, but converted components pass text, never a "
    "table or a list of items to run over (a converted web search gives its results joined as text)"
)
_PER_ITEM = {"LoopComponent": _loop, "BatchRunComponent": _batch}


def _family(kind: str) -> tuple[str, str]:
    """The reason for a type not listed, told by its name."""
    lowered = kind.lower()
    if "search" in lowered:
        return _SEARCH, "network"
    if any(word in lowered for word in ("vector", "store", "chroma", "pinecone", "qdrant", "faiss", "astra")):
        return "it is a vector store, which the server does not have", "store"
    if any(word in lowered for word in ("url", "api", "request", "http", "fetch", "scrape", "crawl")):
        return "it reaches the network at run time; a converted flow calls only its model", "network"
    if "loop" in lowered:
        return "flows are acyclic graphs; loops have no equivalent", "graph"
    if any(word in lowered for word in ("custom", "python", "code", "function")):
        return _CODE, "code"
    return (
        "no gitops-flow component does what it does; remove it or replace it with a supported one (docs/langflow.md)",
        "unknown",
    )
