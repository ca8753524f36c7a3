"""What LangFlow's files, text splitters, embeddings, vector stores and knowledge bases become: a ``Retriever`` over
documents committed in Git, under the flow's knowledge folder ``knowledge/<flow name>/``.

LangFlow loads documents into a store at run time (a File, split into chunks, ingested into Astra DB, Chroma, a
knowledge base) and searches the store with the user's question. A converted flow has no store and reads no file
from outside its repository: the documents are committed under ``knowledge/<flow name>/``, and each search becomes
a ``Retriever`` over them, versioned with the commit. The ingest side (the File feeding a splitter feeding a store's
``ingest_data``) becomes nothing: what it loaded is what the user commits. A File read by a prompt beside a chat
input (LangFlow put the whole file in the prompt) becomes a Retriever too, queried by the flow's input: the passages
nearest the question, not the whole file.
"""

from __future__ import annotations

from typing import Any

from gitops_flow.langflow.export import LfNode
from gitops_flow.langflow.models import PROVIDERS, key_reference
from gitops_flow.langflow.workbench import Builder, Constant, Corpus, EmbeddingsPort, NodePort, Refused
from gitops_flow.problems import Problem

KNOWLEDGE_ROOT = "knowledge"
DEFAULT_EMBEDDINGS = "hashing:256"  # no key, no network: LangFlow's store chose its own embeddings
MAX_K = 50  # the Retriever's bound on k

# LangFlow's vector stores (searched by ``search_query``/``search_input``, filled by ``ingest_data``)
VECTOR_STORES = frozenset(
    {
        "AstraDB",
        "AstraVectorStoreComponent",
        "AstraDBGraph",
        "Chroma",
        "FAISS",
        "Pinecone",
        "Qdrant",
        "Weaviate",
        "PGVector",
        "Milvus",
        "MongoDBAtlasVector",
        "Redis",
        "Elasticsearch",
        "OpenSearch",
        "Cassandra",
        "Couchbase",
        "SupabaseVectorStore",
        "Upstash",
    }
)
KNOWLEDGE_BASES = frozenset({"Knowledge", "KnowledgeRetrieval", "KnowledgeBase"})  # LangFlow 1.5 on: searched
INGESTS = frozenset({"KnowledgeIngestion"})  # a knowledge base filled: its documents are the committed ones
SPLITTERS = frozenset({"SplitText", "LanguageRecursiveTextSplitter", "RecursiveCharacterTextSplitter"})
EMBEDDINGS = frozenset({"OpenAIEmbeddings", "OllamaEmbeddings", "EmbeddingModel", "AzureOpenAIEmbeddings"})
_INGEST_FIELDS = frozenset({"ingest_data", "input_df", "data_inputs", "data_input"})
_QUERY_FIELDS = ("search_query", "search_input")


def folder(b: Builder) -> str:
    """Where the flow's documents are committed, from the repository's root."""
    return f"{KNOWLEDGE_ROOT}/{b.name}"


def feeds_only_ingest(b: Builder, node: LfNode) -> bool:
    """Whether every wire out of ``node`` goes into a splitter or a store's ingest (it loads documents, no more)."""
    by_id = {n.id: n for n in b.export.nodes}
    wires = b.export.wires_from(node.id)
    return bool(wires) and all(
        w.field in _INGEST_FIELDS and by_id[w.target].type in SPLITTERS | VECTOR_STORES | INGESTS for w in wires
    )


def file_documents(b: Builder, node: LfNode) -> None:
    """A File beside the flow's input: what it loads into a store is the committed corpus (nothing runs); what a
    prompt reads of it is a Retriever over the committed documents, queried by the flow's input."""
    if feeds_only_ingest(b, node) or not b.export.wires_from(node.id):
        b.ports[(node.id, "*")] = Corpus()
        _committed(b, node, "the documents it loads")
        return
    _retriever(b, node, DEFAULT_EMBEDDINGS, None, k=4, chunking=_chunking(b), query=None)
    _committed(b, node, "the file it reads")


def splitter(b: Builder, node: LfNode) -> None:
    """A splitter on the ingest side: its chunk size and overlap are the Retrievers'; nothing runs for it."""
    wires = [port for field in _INGEST_FIELDS for _, port in b.inputs(node, field)]
    if wires and all(isinstance(p, Corpus | Refused) for p in wires) and feeds_only_ingest(b, node):
        b.ports[(node.id, "*")] = Corpus()
        return
    b.fail(
        node.path,
        "it splits documents for a vector store; only a splitter between a File and a store's ingest is converted "
        "(its chunks are the Retriever's)",
        node=node,
    )
    b.ports[(node.id, "*")] = Refused(node)


def embeddings(b: Builder, node: LfNode) -> None:
    """An embedding model lent to a vector store: ``provider:model`` for the Retriever, its key a reference."""
    for wire in b.export.wires_from(node.id):
        target = next(n for n in b.export.nodes if n.id == wire.target)
        if target.type not in VECTOR_STORES:
            b.fail(wire.path, "an embedding model is converted only where a vector store reads it", node=node)
    model = node.text("model") or node.text("model_name")
    if node.type == "OpenAIEmbeddings":
        provider, env = "openai", "OPENAI_API_KEY"
    elif node.type == "AzureOpenAIEmbeddings":
        provider, env = "azure_openai", "AZURE_OPENAI_API_KEY"
    elif node.type == "OllamaEmbeddings":
        provider, env = "ollama", ""
    else:  # EmbeddingModel: a provider chosen in a dropdown
        provider, env = PROVIDERS.get(node.text("provider").strip().lower(), ("", ""))
    if not provider or not model:
        b.fail(node.path, f"no embeddings provider for {node.text('provider') or node.type!r} and {model!r}", node=node)
        b.ports[(node.id, "*")] = Refused(node)
        return
    key, problems = key_reference(node, env) if env else (None, [])
    b.problems += problems
    b.ports[(node.id, "*")] = EmbeddingsPort(f"{provider}:{model}", key)


def vector_store(b: Builder, node: LfNode) -> None:
    """A vector store: searched, a Retriever over the committed documents with the embeddings wired into it;
    only filled (no search wired), the committed corpus itself."""
    queries = [pair for field in _QUERY_FIELDS for pair in b.inputs(node, field)]
    if not queries:
        if b.used_outputs(node):
            b.fail(node.path, "a vector store read without a search query cannot be converted", node=node)
            b.ports[(node.id, "*")] = Refused(node)
            return
        b.ports[(node.id, "*")] = Corpus()
        _committed(b, node, "the documents ingested into it")
        return
    lent = [p for field in ("embedding_model", "embedding") for _, p in b.inputs(node, field)]
    spec, key = DEFAULT_EMBEDDINGS, None
    if lent and isinstance(lent[0], EmbeddingsPort):
        spec, key = lent[0].spec, lent[0].api_key
    elif lent and isinstance(lent[0], Refused):
        b.ports[(node.id, "*")] = lent[0]
        return
    k = int(node.number("number_of_results") or node.number("k") or 4)
    query = queries[0]
    terms = [(w, p) for w, p in b.inputs(node, "lexical_terms") if isinstance(p, NodePort)]
    if terms and isinstance(query[1], NodePort):  # a hybrid search's keywords: searched beside the question
        joined = b.add(node, f"{node.id}.query", "Text", {"template": "{query}\n{terms}"}, description="query")
        b.connect(query[1], joined, "query", query[0])
        b.connect(terms[0][1], joined, "terms", terms[0][0])
        query = (query[0], NodePort(joined))
    _retriever(b, node, spec, key, k=k, chunking=_chunking(b), query=query)
    _committed(b, node, "the documents ingested into it")


def knowledge_base(b: Builder, node: LfNode) -> None:
    """A LangFlow knowledge base searched: a Retriever over the committed documents (its embeddings were chosen
    when LangFlow filled it, so the Retriever uses the built-in ``hashing:256``; set another in the document)."""
    queries = [pair for field in _QUERY_FIELDS for pair in b.inputs(node, field)]
    if not queries:
        b.fail(node.path, "a knowledge base read without a search query cannot be converted", node=node)
        b.ports[(node.id, "*")] = Refused(node)
        return
    k = int(node.number("top_k") or node.number("number_of_results") or 4)
    _retriever(b, node, DEFAULT_EMBEDDINGS, None, k=k, chunking=_chunking(b), query=queries[0])
    kb = node.text("knowledge_base")
    _committed(b, node, f"the documents of knowledge base {kb!r}" if kb else "the documents of its knowledge base")


def ingest(b: Builder, node: LfNode) -> None:
    b.ports[(node.id, "*")] = Corpus()
    _committed(b, node, "the documents ingested into it")


def connect_queries(b: Builder) -> None:
    """The nodes the flow's input feeds though no wire says so (a File's Retriever, queried by the user's question;
    a literal URL's HttpRequest, which needs an input to run), known once every handler ran."""
    port = b.ports.get((b.entry, "*")) if b.entry is not None else None
    inputs_refused = any(n.id in b.refused for n in b.export.nodes if n.type in ("ChatInput", "TextInput", "File"))
    for retriever in b.queries:
        if isinstance(port, NodePort):
            b.connect(port, retriever, None, None)
        elif not inputs_refused:  # a refused input says why already
            origin = next(n for n in b.export.nodes if retriever.split(".")[0] == n.id)
            b.fail(origin.path, "it needs the flow's input (a Chat Input) to run from", node=origin)


def _retriever(
    b: Builder,
    node: LfNode,
    spec: str,
    key: dict[str, str] | None,
    *,
    k: int,
    chunking: tuple[int, int],
    query: Any,
) -> None:
    size, overlap = chunking
    params: dict[str, Any] = {
        "paths": [f"{folder(b)}/**"],
        "embeddings": spec,
        "k": max(1, min(MAX_K, k)),
        "chunk_size": size,
        "chunk_overlap": overlap,
        **({"api_key": key} if key else {}),
    }
    b.add(node, node.id, "Retriever", params)
    if query is None:
        b.queries.append(node.id)
    else:
        wire, port = query
        source = b.as_node(port, node, wire) if isinstance(port, NodePort | Constant) else None
        if source is None:
            b.ports[(node.id, "*")] = port if isinstance(port, Refused) else Refused(node)
            return
        b.connect(source, node.id, None, wire)
    label = node.display_name or node.id
    text = b.add(node, f"{node.id}.text", "Text", {"separator": "\n\n"}, description=f"{label}: the documents found")
    b.connect(NodePort(node.id), text, None, None)
    b.ports[(node.id, "*")] = NodePort(text)


def _chunking(b: Builder) -> tuple[int, int]:
    """The chunk size and overlap of the export's splitter (LangFlow's defaults, 1000 and 200, without one)."""
    for node in b.export.nodes:
        if node.type in SPLITTERS:
            size = int(node.number("chunk_size") or 1000)
            overlap = int(node.number("chunk_overlap") or 200)
            if size >= 1 and 0 <= overlap < size:
                return size, overlap
    return 1000, 200


def _committed(b: Builder, node: LfNode, what: str) -> None:
    """One warning per flow: where its documents are committed."""
    if any(p.code == "langflow-knowledge" for p in b.problems):
        return
    b.problems.append(
        Problem(
            code="langflow-knowledge",
            message=f"{node.label()}: commit {what or 'the documents'} under {folder(b)}/ (text, Markdown, HTML, "
            "JSON, CSV or PDF): the flow's Retrievers read them there, versioned with the commit, where LangFlow read "
            "its own storage or store",
            path=node.path,
            severity="warning",
        )
    )
