"""Issue 23's LangFlow coverage: files, vector stores and knowledge bases become a Retriever over documents committed
in Git; URL, API request and web search components become the requests behind the egress allowlist; what no output
reads is left out. Real starter projects from the langflow-base wheels (tests/data/langflow/README.md), converted,
built and served by a real `gitops-flow serve`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from gitops_flow.components.knowledge import Library
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.langflow.convert import convert
from gitops_flow.runtime.compiler import build_flow
from gitops_flow.security.egress import EgressLimits, EgressPolicy
from gitops_flow.security.policy import SecretPolicy
from gitops_flow.security.providers import default_secret_names
from gitops_flow.validation.documents import validate_bytes
from tests.gitrepo import Remote
from tests.process import ServeProcess, serve_process
from tests.test_langflow import ECHO, echoing

DATA = Path(__file__).resolve().parent / "data" / "langflow"
REGISTRY = ComponentRegistry.builtin()
FAQ = "# Returns\n\nA parcel may be returned within 30 days; the refund reaches the card in 5 working days.\n"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return data


def nodes_of(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["id"]: n for n in document["nodes"]}


class Files:
    """A revision's files held in memory (RepoFiles)."""

    def __init__(self, files: Mapping[str, str]) -> None:
        self._files = {path: text.encode() for path, text in files.items()}

    def files(self) -> Mapping[str, str]:
        return {path: str(hash(raw)) for path, raw in self._files.items()}

    def read(self, path: str, *, max_bytes: int) -> bytes:
        return self._files[path][: max_bytes + 1]


# -- knowledge in Git -------------------------------------------------------------------------------------------


def test_a_vector_store_rag_becomes_a_retriever_over_documents_committed_in_git() -> None:
    conversion = convert(load("v1.5-vector-store-rag"), name="vector-store-rag")  # LangFlow 1.5.1's starter project

    assert conversion.ok and conversion.document is not None, [p.message for p in conversion.problems]
    found = nodes_of(conversion.document)
    assert found["AstraDB-JsRrT"]["component"] == "Retriever"  # the store the question searches
    assert found["AstraDB-JsRrT"]["params"] == {
        "paths": ["knowledge/vector-store-rag/**"],
        "embeddings": "openai:text-embedding-3-small",  # its OpenAIEmbeddings node
        "k": 4,
        "chunk_size": 1000,  # its Split Text's
        "chunk_overlap": 200,
        "api_key": {"$env": "OPENAI_API_KEY"},
    }
    # the ingest side (File -> Split Text -> the other Astra DB) is what the user commits: nothing runs for it
    assert not {"AstraDB-W6NB4", "SplitText-6H5cD", "File-vusZ2", "OpenAIEmbeddings-oFtHy"} & set(found)
    assert {"source": "ChatInput-et7o5", "target": "AstraDB-JsRrT"} in conversion.document["edges"]
    warnings = {p.code: p for p in conversion.problems if p.severity == "warning"}
    assert (
        "File-vusZ2 (File, 'File'): commit the documents it loads under knowledge/vector-store-rag/"
        in warnings["langflow-knowledge"].message
    )
    assert "AstraDB-W6NB4" in warnings["langflow-unused"].message


def test_the_retrieved_documents_reach_the_prompt_beside_the_question() -> None:
    report = validate_bytes(
        (DATA / "v1.5-vector-store-rag.json").read_bytes(),
        REGISTRY,
        file="vector-store-rag.json",
        stem="vector-store-rag",
    )
    assert report.ok and report.spec is not None
    knowledge = Library().at(Files({"knowledge/vector-store-rag/returns.md": FAQ, "flows/x.json": "{}"}))

    built = build_flow(echoing(report.spec), ECHO, knowledge=knowledge, fake_embeddings=True)
    answer = asyncio.run(built.runnable.ainvoke("How long do I have to return a parcel?"))

    assert "[knowledge/vector-store-rag/returns.md:1]" in answer and "within 30 days" in answer
    assert "How long do I have to return a parcel?" in answer


def test_fake_embeddings_stand_in_for_a_providers_without_its_key() -> None:
    report = validate_bytes(
        (DATA / "v1.5-vector-store-rag.json").read_bytes(),
        REGISTRY,
        file="vector-store-rag.json",
        stem="vector-store-rag",
    )
    assert report.spec is not None
    knowledge = Library().at(Files({"knowledge/vector-store-rag/returns.md": FAQ}))
    fakes = {n.id: ["ok"] for n in report.spec.nodes if n.component == "ChatModel"}

    with pytest.raises(Exception, match="OPENAI_API_KEY"):  # a real build reads the key: the server has none
        build_flow(report.spec, REGISTRY, fakes=fakes, knowledge=knowledge)
    built = build_flow(report.spec, REGISTRY, fakes=fakes, knowledge=knowledge, fake_embeddings=True)

    assert asyncio.run(built.runnable.ainvoke("returns?")) == "ok"


def test_a_file_beside_the_chat_input_is_a_retriever_the_question_queries() -> None:
    conversion = convert(load("v1.0-document-qa"), name="document-qa")  # LangFlow 1.0.19: File -> Parse Data -> Prompt

    assert conversion.ok and conversion.document is not None, [p.message for p in conversion.problems]
    found = nodes_of(conversion.document)
    assert found["File-0oa6O"]["component"] == "Retriever"
    assert found["File-0oa6O"]["params"]["paths"] == ["knowledge/document-qa/**"]
    assert found["File-0oa6O"]["params"]["embeddings"] == "hashing:256"
    assert {"source": "ChatInput-Emi4q", "target": "File-0oa6O"} in conversion.document["edges"]
    assert {"source": "File-0oa6O.text", "target": "ParseData-qYLes"} in conversion.document["edges"]


def test_a_branch_no_output_reads_is_left_out_with_a_warning() -> None:
    # LangFlow 1.5.1's Hybrid Search RAG ships its keyword extraction unwired: nothing it makes is shown
    conversion = convert(load("v1.5-hybrid-search-rag"), name="hybrid")

    assert conversion.ok and conversion.document is not None, [p.message for p in conversion.problems]
    [unused] = [p for p in conversion.problems if p.code == "langflow-unused"]
    assert unused.severity == "warning" and "StructuredOutput-n8Y3t" in unused.message
    assert "StructuredOutput-n8Y3t" not in nodes_of(conversion.document)
    assert nodes_of(conversion.document)["AstraDB-7gXip"]["component"] == "Retriever"


def test_a_refused_node_in_a_branch_no_output_reads_is_still_refused() -> None:
    data = load("v1.5-hybrid-search-rag")
    dead = next(n for n in data["data"]["nodes"] if n["id"] == "StructuredOutput-n8Y3t")
    dead["data"]["type"] = "SaveToFile"  # it may act (write a file): its refusal stands

    problems = convert(data, name="hybrid").problems

    assert "langflow-unsupported" in {p.code for p in problems}
    assert "langflow-unused" not in {p.code for p in problems}


def test_the_providers_own_endpoint_is_no_base_url() -> None:
    conversion = convert(load("v1.3-custom-component-maker"), name="maker")  # base_url https://api.anthropic.com

    assert conversion.document is not None
    model = next(n for n in conversion.document["nodes"] if n["component"] == "ChatModel")
    assert model["params"]["model"].startswith("anthropic:") and "base_url" not in model["params"]


# -- URL, API request and web search -------------------------------------------------------------------------------

SEARCH = "http://127.0.0.1:9"
POLICY = SecretPolicy(
    (*default_secret_names(), "TAVILY_API_KEY"), egress=EgressPolicy.parse(["*", SEARCH], EgressLimits(), SEARCH)
)


def test_an_agents_url_and_web_search_are_its_fetch_url_and_web_search_tools() -> None:
    conversion = convert(load("simple-agent"), name="simple-agent")  # LangFlow 1.13: URL and Web Search as tools

    assert conversion.ok and conversion.document is not None
    agent = nodes_of(conversion.document)["Agent-EXpSZ"]
    assert agent["params"]["tools"] == [
        "calculator",
        "current_date",
        "fetch_url",
        {"name": "web_search", "max_results": 5},
    ]
    assert agent["params"]["search_api_key"] == {"$env": "TAVILY_API_KEY"}


def test_an_agent_that_searches_validates_only_where_the_operator_allows_it() -> None:
    raw = (DATA / "simple-agent.json").read_bytes()

    refused = validate_bytes(raw, REGISTRY, file="simple-agent.json", stem="simple-agent")
    allowed = validate_bytes(raw, REGISTRY, file="simple-agent.json", stem="simple-agent", policy=POLICY)

    errors = {(p.code, p.path) for p in refused.problems if p.severity == "error"}
    assert errors == {
        ("env-not-allowed", "$.data.nodes[2]"),  # TAVILY_API_KEY, pointing at the agent in the export
        ("egress-refused", "$.data.nodes[2]"),  # the search API, where outbound requests are off
    }
    assert allowed.ok, [p.describe() for p in allowed.problems]


def test_a_url_component_in_the_data_path_fetches_each_url_it_lists() -> None:
    conversion = convert(load("v1.0-blog-writer"), name="blog-writer")  # LangFlow 1.0.19: two URLs, no scheme

    assert conversion.ok and conversion.document is not None, [p.message for p in conversion.problems]
    found = nodes_of(conversion.document)
    assert [found[f"URL-v3FkJ.{i}"]["params"] for i in (0, 1)] == [
        {"url": "http://langflow.org/", "format": "text"},  # LangFlow puts http:// before a URL without a scheme
        {"url": "http://docs.langflow.org/", "format": "text"},
    ]
    assert found["URL-v3FkJ.pages"]["params"] == {"template": "{page0}\n\n{page1}"}
    assert {"source": "URL-v3FkJ.pages", "target": "ParseData-qffHj"} in conversion.document["edges"]
    # a literal URL is judged when validated: refused where outbound requests are off
    refused = validate_bytes(
        (DATA / "v1.0-blog-writer.json").read_bytes(), REGISTRY, file="blog-writer.json", stem="blog-writer"
    )
    assert {p.code for p in refused.problems if p.severity == "error"} == {"egress-refused"}


# -- served: a real `gitops-flow serve --fake-models` ------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("knowledge")
    remote = Remote.create(tmp)
    remote.commit(
        {
            "flows/Vector Store RAG.json": (DATA / "v1.5-vector-store-rag.json").read_text(),
            "flows/Simple Agent.json": (DATA / "simple-agent.json").read_text(),
        },
        "two starter projects, without the documents the RAG reads",
    )
    remote.push()
    env = {
        "GITOPS_FLOW_SECRETS": ",".join((*default_secret_names(), "TAVILY_API_KEY")),
        "GITOPS_FLOW_ALLOWED_FETCH_URLS": f"*,{SEARCH}",
        "GITOPS_FLOW_WEB_SEARCH_URL": SEARCH,
    }
    with serve_process(remote, tmp, args=["--fake-models"], env=env, ready=False) as harness:
        yield harness


def run(server: ServeProcess, flow: str) -> Any:
    return server.client.post(f"/api/v1/run/{flow}", json={"input_value": "returns?", "session_id": "s"})


def test_a_rag_runs_once_its_documents_are_committed(served: ServeProcess) -> None:
    served.reconcile()
    before = run(served, "vector-store-rag")
    agent = run(served, "simple-agent")  # its tools go out only when the (fake) model calls them
    failed = served.client.get("/versions").json()["versions"][0]["failed"]["vector-store-rag"]

    served.remote.commit({"knowledge/vector-store-rag/returns.md": FAQ}, "the documents the RAG reads")
    served.remote.push()
    served.reconcile()
    after = run(served, "vector-store-rag")

    assert (before.status_code, before.json()["error"]["code"]) == (503, "nothing-servable")
    [missing] = [p for p in failed if p["code"] == "no-documents"]
    assert missing["file"] == "flows/Vector Store RAG.json" and missing["line"]
    assert "knowledge/vector-store-rag/**" in missing["message"]
    assert agent.status_code == 200, agent.text
    assert after.status_code == 200, after.text
    [result] = after.json()["outputs"][0]["outputs"]
    assert result["results"]["message"]["text"].startswith("This is a fake answer from")


def test_a_web_search_in_rss_mode_is_refused_saying_so() -> None:
    data = load("simple-agent")
    search = next(n for n in data["data"]["nodes"] if n["id"] == "UnifiedWebSearch-KZ8k6")
    search["data"]["node"]["template"]["search_mode"]["value"] = "RSS"

    [problem] = [p for p in convert(data, name="agent").problems if p.severity == "error"]

    assert problem.path == "$.data.nodes[4].data.node.template.search_mode.value"
    assert "search_mode RSS reads feeds" in problem.message
